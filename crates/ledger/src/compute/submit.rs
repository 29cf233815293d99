//! `SubmitJob`: a client escrows the price of a job (of each copy of a redundant one) and
//! queues it for assignment at the next block.

use super::lifecycle::{eligible_providers, push_queue};
use super::{escrow, invalid, providers_serving, state_key, Job, JobParams, JobStatus};
use super::{JOB_DEADLINE_BLOCKS_MAX, JOB_INPUT_BYTES_MAX, JOB_UNITS_MAX, REDUNDANCY_MAX};
use crate::bank;
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::models;
use crate::module::TxContext;
use crate::state::StateDelta;
use piazza_primitives::Amount;

pub(super) fn check_stateless(
    input: &[u8],
    max_units: &u64,
    params: &JobParams,
) -> Result<(), TxError> {
    if input.len() > JOB_INPUT_BYTES_MAX {
        return Err(TxError::new(
            ErrorCode::InputTooLarge,
            format!("inline input is at most {JOB_INPUT_BYTES_MAX} bytes"),
        ));
    }
    if input.is_empty() {
        return Err(invalid("the input is empty; no model runs on nothing"));
    }
    if *max_units == 0 || *max_units > JOB_UNITS_MAX {
        return Err(invalid(format!("max_units must be 1 to {JOB_UNITS_MAX}")));
    }
    if params.max_tokens as u64 > *max_units {
        return Err(invalid("max_tokens exceeds max_units"));
    }
    if params.deadline_blocks > JOB_DEADLINE_BLOCKS_MAX {
        return Err(invalid(format!(
            "a job deadline is at most {JOB_DEADLINE_BLOCKS_MAX} blocks"
        )));
    }
    if params.stop.iter().any(|s| s.is_empty()) {
        return Err(invalid("a stop sequence is empty"));
    }
    Ok(())
}

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    model: &str,
    input: &[u8],
    max_units: &u64,
    max_price: &Amount,
    job_params: &JobParams,
) -> Result<(), TxError> {
    let record = models::record(state, model).ok_or_else(|| models::unknown(model))?;
    if models::retired(state, model) {
        return Err(TxError::new(
            ErrorCode::UnknownModel,
            format!("`{model}` is retired; it takes no new jobs"),
        ));
    }
    let floor = record
        .price_floor
        .checked_mul(*max_units as u128)
        .ok_or_else(|| invalid("price overflows"))?;
    if *max_price < floor {
        return Err(TxError::new(ErrorCode::EscrowTooLow, format!("{max_units} units of `{model}` cost at least {floor} PZA; the escrow is {max_price} PZA")));
    }
    if job_params.redundancy > REDUNDANCY_MAX {
        return Err(invalid(format!(
            "redundancy is at most {REDUNDANCY_MAX} providers"
        )));
    }
    let escrowed = max_price
        .checked_mul(job_params.copies() as u128)
        .ok_or_else(|| invalid("escrow overflows"))?;
    let balance = bank::account(state, &ctx.sender).balance;
    if balance < escrowed {
        return Err(TxError::new(
            ErrorCode::InsufficientFunds,
            format!(
                "{} holds {balance} PZA, the escrow is {escrowed} PZA",
                ctx.sender
            ),
        ));
    }
    let probe = Job {
        id: 0,
        client: ctx.sender,
        model: model.to_owned(),
        input: input.to_vec(),
        params: JobParams {
            deadline_blocks: job_params.deadline_blocks,
            ..JobParams::default()
        },
        max_units: *max_units,
        max_price: *max_price,
        submitted_height: 0,
        group: 0,
        queued_height: 0,
        price_per_unit: Amount::ZERO,
        status: JobStatus::Pending,
        missed: Vec::new(),
        result: None,
        receipt: None,
    };
    // A single job for a model nobody serves yet waits in the queue (up to
    // `queue_timeout_blocks`) for a provider to register; otherwise the providers
    // that could take it (price, speed for the client's deadline, one per copy of a
    // redundant job) must exist now.
    let eligible = eligible_providers(state, &probe, false).len();
    let copies = job_params.copies() as usize;
    let waits_for_first = copies == 1 && providers_serving(state, model).is_empty();
    if copies > eligible && !waits_for_first {
        return Err(TxError::new(
                        ErrorCode::NoProvider,
                        format!("redundancy {copies} needs {copies} distinct providers of `{model}` within an escrow of {max_price} PZA; {eligible} serve it"),
                    ));
    }
    Ok(())
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    model: &str,
    input: &[u8],
    job_params: &JobParams,
    max_units: &u64,
    max_price: &Amount,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let copies = job_params.copies() as u64;
    let total = max_price
        .checked_mul(copies as u128)
        .ok_or_else(|| invalid("escrow overflows"))?;
    bank::transfer(state, &sender, &escrow(), total)?;
    let group: u64 = state.get(&state_key::next_job()).unwrap_or(0);
    state.put(state_key::next_job(), &(group + copies));
    for id in group..group + copies {
        let job = Job {
            id,
            group,
            client: sender,
            model: model.to_owned(),
            input: input.to_vec(),
            params: job_params.clone(),
            max_units: *max_units,
            max_price: *max_price,
            submitted_height: ctx.block.height,
            queued_height: ctx.block.height,
            price_per_unit: Amount::ZERO,
            status: JobStatus::Pending,
            missed: Vec::new(),
            result: None,
            receipt: None,
        };
        state.put(state_key::job(id), &job);
        push_queue(state, state_key::pending(), id)?;
        ctx.emit(Event::new(
            "compute.job_submitted",
            &[
                ("job", id.to_string()),
                ("model", model.to_owned()),
                ("client", sender.to_string()),
                ("escrow", max_price.base_units().to_string()),
                ("group", group.to_string()),
            ],
        ));
    }
    Ok(())
}

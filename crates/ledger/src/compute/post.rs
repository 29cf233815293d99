//! `PostResult`: the assigned provider posts its output, output hash, trace root, work and the
//! input tokens it read (recorded as stated, not billed); the result waits out the challenge
//! window (or its group) and is queued for review.

use super::lifecycle::{change_unsettled, hold, push_queue, release_provider};
use super::{invalid, job, output_hash, params, state_key, JobResult, JobStatus};
use super::{JOBS_PER_QUEUE_MAX, JOB_OUTPUT_BYTES_MAX};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::list;
use crate::module::TxContext;
use crate::state::StateDelta;
use piazza_primitives::Hash;

pub(super) fn check_stateless(output: &[u8], claimed: &Hash) -> Result<(), TxError> {
    if output.len() > JOB_OUTPUT_BYTES_MAX {
        return Err(invalid(format!(
            "inline output is at most {JOB_OUTPUT_BYTES_MAX} bytes"
        )));
    }
    if output_hash(output) != *claimed {
        return Err(TxError::new(
            ErrorCode::OutputHashMismatch,
            "the output hash is not the hash of the output",
        ));
    }
    Ok(())
}

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    id: &u64,
    work_units: &u64,
) -> Result<(), TxError> {
    let job = job(state, *id)
        .ok_or_else(|| TxError::new(ErrorCode::UnknownJob, format!("no job {id}")))?;
    match &job.status {
        JobStatus::Assigned { provider, .. } if *provider == ctx.sender => {}
        JobStatus::Posted { provider, .. } if *provider == ctx.sender => {
            return Err(TxError::new(
                ErrorCode::ResultAlreadyPosted,
                format!("job {id} already has a result from {provider}"),
            ))
        }
        JobStatus::Settled
            if job
                .receipt
                .as_ref()
                .is_some_and(|r| r.provider == ctx.sender) =>
        {
            return Err(TxError::new(
                ErrorCode::ResultAlreadyPosted,
                format!("job {id} is already settled with this provider's result"),
            ))
        }
        _ if job.missed.contains(&ctx.sender) => {
            return Err(TxError::new(
                ErrorCode::LateResult,
                format!(
                    "{} missed the deadline of job {id}; it was reassigned",
                    ctx.sender
                ),
            ))
        }
        _ => {
            return Err(TxError::new(
                ErrorCode::NotAssigned,
                format!("job {id} is not assigned to {}", ctx.sender),
            ))
        }
    }
    if *work_units > job.max_units {
        return Err(TxError::new(
            ErrorCode::WorkExceedsLimit,
            format!("{work_units} units exceed the job's {}", job.max_units),
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the message's fields, as the other handlers take theirs
pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
    output: &[u8],
    output_hash: &Hash,
    trace_root: &Hash,
    work_units: &u64,
    input_units: &u64,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let mut job = job(state, *id)
        .ok_or_else(|| TxError::new(ErrorCode::UnknownJob, format!("no job {id}")))?;
    let settle_height = ctx.block.height + params(state).challenge_window_blocks;
    release_provider(state, &sender, *id, true);
    change_unsettled(state, &sender, true);
    push_queue(state, state_key::settlements(settle_height), *id)?;
    job.status = JobStatus::Posted {
        provider: sender,
        settle_height,
    };
    job.result = Some(JobResult {
        output: output.to_vec(),
        output_hash: *output_hash,
        trace_root: *trace_root,
        work_units: *work_units,
        posted_height: ctx.block.height,
        input_units: *input_units,
    });
    state.put(state_key::job(*id), &job);
    // Redundant copies wait for their group; every posted result is reviewed by the
    // modules above in a later block (`take_reviews`).
    if job.is_redundant() {
        hold(state, *id);
    }
    list::schedule::<JOBS_PER_QUEUE_MAX>(state, state_key::reviews, ctx.block.height, *id)
        .map_err(|full| full.refusal("the result review queue"))?;
    ctx.emit(Event::new(
        "compute.result_posted",
        &[
            ("job", id.to_string()),
            ("provider", sender.to_string()),
            ("output_hash", output_hash.to_hex()),
            ("trace_root", trace_root.to_hex()),
            ("settle_height", settle_height.to_string()),
        ],
    ));
    Ok(())
}

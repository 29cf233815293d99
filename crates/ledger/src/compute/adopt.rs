//! Adoption: a request served off chain (a session's) becomes a job that already holds its
//! posted result, so the verify module above audits and disputes it as any other, and a proven
//! fraud refunds the client and slashes the provider by the job path.

use super::lifecycle::change_unsettled;
use super::{escrow, params, state_key, Job, JobParams, JobResult, JobStatus, JOBS_PER_QUEUE_MAX};
use crate::bank;
use crate::error::TxError;
use crate::list;
use crate::state::StateDelta;
use piazza_primitives::{Address, Amount, Hash};

/// A request served off chain and the result its provider signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRequest {
    pub client: Address,
    pub model: String,
    pub input: Vec<u8>,
    pub params: JobParams,
    pub max_units: u64,
    pub provider: Address,
    pub output_hash: Hash,
    pub trace_root: Hash,
    pub units: u64,
    /// The input's tokens the provider signed for (its receipt's prompt count).
    pub input_units: u64,
    /// The price the job settles at (and refunds on fraud); moved from `from` into escrow.
    pub price: Amount,
}

/// Makes `served` a posted job whose price `from` escrows now; it settles after the chain's
/// challenge window (from `height`) unless the verify module holds it. Returns the job's id. Nothing is
/// scheduled for review: the caller decides whether it is audited or disputed.
pub fn adopt_posted(
    state: &mut StateDelta<'_>,
    height: u64,
    from: &Address,
    served: ServedRequest,
) -> Result<u64, TxError> {
    let id: u64 = state.get(&state_key::next_job()).unwrap_or(0);
    let settle_height = list::schedule::<JOBS_PER_QUEUE_MAX>(
        state,
        state_key::settlements,
        height + params(state).challenge_window_blocks,
        id,
    )
    .map_err(|full| full.refusal("the settlement queue"))?;
    bank::transfer(state, from, &escrow(), served.price)?;
    state.put(state_key::next_job(), &(id + 1));
    change_unsettled(state, &served.provider, true);
    // The price per unit makes `price` exactly what `units` of work cost (capped by it).
    let price_per_unit = Amount::new(
        served
            .price
            .base_units()
            .div_ceil(u128::from(served.units.max(1))),
    );
    let job = Job {
        id,
        group: id,
        client: served.client,
        model: served.model,
        input: served.input,
        params: JobParams {
            redundancy: 0,
            ..served.params
        },
        max_units: served.max_units,
        max_price: served.price,
        submitted_height: height,
        queued_height: height,
        price_per_unit,
        status: JobStatus::Posted {
            provider: served.provider,
            settle_height,
        },
        missed: Vec::new(),
        result: Some(JobResult {
            output: Vec::new(),
            output_hash: served.output_hash,
            trace_root: served.trace_root,
            work_units: served.units,
            posted_height: height,
            input_units: served.input_units,
        }),
        receipt: None,
    };
    state.put(state_key::job(id), &job);
    Ok(id)
}

/// One more (`serving`) or one fewer obligation of `provider` outside compute's jobs (a
/// session it serves): while any remains its exit is refused, as for an unsettled result, so
/// its stake still answers for what it served.
pub fn hold_provider(state: &mut StateDelta<'_>, provider: &Address, serving: bool) {
    change_unsettled(state, provider, serving);
}

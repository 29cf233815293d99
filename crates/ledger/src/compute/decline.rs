//! `DeclineJob`: the assigned provider gives a job back without penalty or pay; it is assigned
//! again at the next block.

use super::lifecycle::{push_queue, set_assigned};
use super::{invalid, job, provider, state_key, JobStatus, DECLINE_REASON_BYTES_MAX};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::TxContext;
use crate::state::StateDelta;

pub(super) fn check_stateless(reason: &str) -> Result<(), TxError> {
    if reason.len() > DECLINE_REASON_BYTES_MAX {
        return Err(invalid(format!(
            "a decline reason is at most {DECLINE_REASON_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    id: &u64,
) -> Result<(), TxError> {
    let job = job(state, *id)
        .ok_or_else(|| TxError::new(ErrorCode::UnknownJob, format!("no job {id}")))?;
    match job.status {
        JobStatus::Assigned { provider, .. } if provider == ctx.sender => Ok(()),
        _ => Err(TxError::new(
            ErrorCode::NotAssigned,
            format!("job {id} is not assigned to {}", ctx.sender),
        )),
    }
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
    reason: &str,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let mut job = job(state, *id).expect("checked: the job exists");
    if let Some(mut p) = provider(state, &sender) {
        p.active_jobs = p.active_jobs.saturating_sub(1);
        state.put(state_key::provider(&sender), &p);
    }
    set_assigned(state, &sender, *id, false);
    // Assigned again at the next block, with that block's randomness, to a provider
    // that has neither missed nor declined it.
    push_queue(state, state_key::pending(), *id)?;
    job.missed.push(sender);
    job.queued_height = ctx.block.height;
    job.status = JobStatus::Pending;
    state.put(state_key::job(*id), &job);
    ctx.emit(Event::new(
        "compute.job_declined",
        &[
            ("job", id.to_string()),
            ("provider", sender.to_string()),
            ("reason", reason.to_owned()),
        ],
    ));
    Ok(())
}

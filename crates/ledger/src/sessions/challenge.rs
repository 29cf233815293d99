//! `Challenge`: the owner disputes a receipt of a commit still in its window. The request
//! becomes a compute job holding the receipt as its posted result, and the owner challenges
//! that job through the verify module (bond, bisection game, one-step arbitration): a fraud
//! refunds the request and slashes the provider by the job path. A receipt whose signed
//! prompt count no run reads needs no game: its job fails at once and the commit is slashed.

use super::reveal::{adopt, bad_receipt, check_adoptable, check_pair, request_event};
use super::*;
use crate::verify::{self, Verify};
use piazza_primitives::Hash;

/// The fields of a `Challenge` message.
pub(super) struct Challenge<'a> {
    pub session: &'a u64,
    pub commit: &'a u64,
    pub receipt: &'a SignedReceipt,
    pub request: &'a SignedRequest,
    pub trace_root: &'a Hash,
    pub step_count: &'a u64,
    pub ids: &'a Hash,
}

fn verify_msg(job: u64, challenge: &Challenge<'_>) -> verify::Msg {
    verify::Msg::Challenge {
        job,
        trace_root: *challenge.trace_root,
        step_count: *challenge.step_count,
        ids: *challenge.ids,
    }
}

pub(super) fn check_stateless(
    session: &u64,
    receipt: &SignedReceipt,
    request: &SignedRequest,
    step_count: &u64,
) -> Result<(), TxError> {
    check_pair(session, &receipt.receipt, request)?;
    receipt
        .verify()
        .map_err(|e| bad_receipt(format!("receipt: {e}")))?;
    Verify::check_stateless(&verify::Msg::Challenge {
        job: 0,
        trace_root: Hash::ZERO,
        step_count: *step_count,
        ids: Hash::ZERO,
    })
}

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    id: &u64,
    commit_id: &u64,
    receipt: &SignedReceipt,
    request: &SignedRequest,
) -> Result<(Session, CommitRecord), TxError> {
    let session = owned(state, *id, &ctx.sender)?;
    let record = commit_of(state, *id, *commit_id)?;
    if record.status != CommitStatus::Pending || ctx.block.height >= record.settle_height {
        return Err(error(
            ErrorCode::NotChallengeable,
            format!("commit {commit_id}'s challenge window is over"),
        ));
    }
    receipt
        .verify_for(*id, |key| key.address() == record.provider)
        .map_err(|e| bad_receipt(format!("receipt: {e}")))?;
    let seq = receipt.receipt.seq;
    if seq <= record.from_seq || seq > record.voucher_seq {
        return Err(bad_receipt(format!(
            "commit {commit_id} pays requests {} to {}, not {seq}",
            record.from_seq + 1,
            record.voucher_seq
        )));
    }
    check_adoptable(&session, &record, &receipt.receipt, request)?;
    Ok((session, record))
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    challenge: Challenge<'_>,
) -> Result<(), TxError> {
    let (mut session, mut record) = check_stateful(
        state,
        ctx,
        challenge.session,
        challenge.commit,
        challenge.receipt,
        challenge.request,
    )?;
    let receipt = &challenge.receipt.receipt;
    let (job, disproven) = adopt(
        state,
        ctx,
        &mut session,
        &mut record,
        receipt,
        &challenge.request.request,
    )?;
    put_session(state, &session);
    put_commit(state, &record);
    if !disproven {
        let msg = verify_msg(job, &challenge);
        Verify::check_stateful(state, ctx, &msg)?;
        Verify::execute(state, ctx, &msg)?;
    }
    ctx.emit(request_event(
        "sessions.challenged",
        [*challenge.session, *challenge.commit, receipt.seq, job],
        &[("challenger", ctx.sender.to_string())],
    ));
    Ok(())
}

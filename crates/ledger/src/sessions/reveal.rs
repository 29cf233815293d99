//! `Reveal`: the provider answers an audit with the receipt, its proof in the commit, and the
//! signed request it served. The request becomes a compute job holding the receipt as its
//! posted result (its price moved from the deposit into compute's escrow) and gets an auditor.
//! A receipt the owner challenged before its reveal is already that job (disputed): revealing
//! it answers the audit and makes no second job, so the provider is not penalized for it.

use super::*;
use crate::compute;
use crate::verify;

/// The stateless rules a receipt and its request share in a reveal and a challenge.
pub(super) fn check_pair(
    session: &u64,
    receipt: &Receipt,
    request: &SignedRequest,
) -> Result<(), TxError> {
    let asked = &request.request;
    if receipt.session != *session || asked.session != *session {
        return Err(bad_receipt(format!(
            "the receipt and the request must both be for session {session}"
        )));
    }
    if receipt.seq != asked.seq {
        return Err(bad_receipt(format!(
            "receipt seq {} is not request seq {}",
            receipt.seq, asked.seq
        )));
    }
    if receipt.input_hash != compute::input_hash(&asked.input) {
        return Err(bad_receipt("the receipt's input hash is not the request's"));
    }
    if receipt.units > asked.max_units {
        return Err(bad_receipt(format!(
            "the receipt's {} units exceed the request's {}",
            receipt.units, asked.max_units
        )));
    }
    request
        .verify()
        .map_err(|e| error(ErrorCode::BadVoucher, format!("request: {e}")))
}

pub(super) fn bad_receipt(message: impl Into<String>) -> TxError {
    error(ErrorCode::BadReceipt, message)
}

pub(super) fn check_stateless(
    session: &u64,
    index: &u64,
    receipt: &Receipt,
    request: &SignedRequest,
) -> Result<(), TxError> {
    if *index >= RECEIPTS_PER_COMMIT_MAX {
        return Err(bad_receipt(format!(
            "a commit has at most {RECEIPTS_PER_COMMIT_MAX} receipts"
        )));
    }
    check_pair(session, receipt, request)
}

/// The stateful rules a receipt and its request share: the request is the owner's (or its
/// authorised key's), the price within the session's maximum, the seq not yet adopted.
pub(super) fn check_adoptable(
    session: &Session,
    record: &CommitRecord,
    receipt: &Receipt,
    request: &SignedRequest,
) -> Result<(), TxError> {
    request
        .verify_session(session)
        .map_err(|e| error(ErrorCode::BadVoucher, format!("request: {e}")))?;
    let most = session
        .max_price_per_unit
        .checked_mul(u128::from(receipt.units));
    if most.is_none_or(|most| receipt.price > most) {
        return Err(bad_receipt(format!(
            "the receipt's price {} exceeds {} units at {} PZA",
            receipt.price, receipt.units, session.max_price_per_unit
        )));
    }
    if record.adopted_seqs.binary_search(&receipt.seq).is_ok() {
        return Err(bad_receipt(format!(
            "request {} of session {} is already a job",
            receipt.seq, session.id
        )));
    }
    Ok(())
}

/// The job `record` already made of this very receipt (the owner challenged it before the
/// provider revealed it): one of its jobs on the same input, output and trace.
fn adopted_job(state: &StateDelta<'_>, record: &CommitRecord, receipt: &Receipt) -> Option<u64> {
    if record.adopted_seqs.binary_search(&receipt.seq).is_err() {
        return None;
    }
    record.jobs.iter().copied().find(|&id| {
        compute::job(state, id).is_some_and(|job| {
            job.result.is_some_and(|r| {
                r.output_hash == receipt.output_hash && r.trace_root == receipt.trace_root
            }) && compute::input_hash(&job.input) == receipt.input_hash
        })
    })
}

/// Checks a reveal; returns the session, the commit, and the job the receipt already is (an
/// audited receipt the owner challenged first: revealing it answers the audit, as the job is
/// disputed already), if any.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    id: &u64,
    commit_id: &u64,
    index: &u64,
    receipt: &Receipt,
    proof: &ReceiptProof,
    request: &SignedRequest,
) -> Result<(Session, CommitRecord, Option<u64>), TxError> {
    let session = existing(state, *id)?;
    let record = commit_of(state, *id, *commit_id)?;
    if record.provider != ctx.sender {
        return Err(error(
            ErrorCode::NotSessionParty,
            format!("{} did not make commit {commit_id}", ctx.sender),
        ));
    }
    if record.audited.binary_search(index).is_err() {
        return Err(error(
            ErrorCode::NotAudited,
            format!("receipt {index} of commit {commit_id} was not drawn for audit"),
        ));
    }
    if record.revealed.binary_search(index).is_ok() {
        return Err(bad_receipt(format!(
            "receipt {index} of commit {commit_id} is already revealed"
        )));
    }
    if record.audits_closed || ctx.block.height > record.reveal_deadline {
        return Err(error(
            ErrorCode::NotAudited,
            format!(
                "the reveal deadline of commit {commit_id} was height {}",
                record.reveal_deadline
            ),
        ));
    }
    if !verify_receipt(&record.root, record.count, *index, receipt, proof) {
        return Err(bad_receipt(format!(
            "the receipt is not receipt {index} of commit {commit_id}"
        )));
    }
    if let Some(job) = adopted_job(state, &record, receipt) {
        request
            .verify_session(&session)
            .map_err(|e| error(ErrorCode::BadVoucher, format!("request: {e}")))?;
        return Ok((session, record, Some(job)));
    }
    check_adoptable(&session, &record, receipt, request)?;
    Ok((session, record, None))
}

/// Makes the request a compute job holding the receipt as its posted result; its price (at
/// most what the commit has left to pay) moves from the deposit into compute's escrow.
pub(super) fn adopt(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    session: &mut Session,
    record: &mut CommitRecord,
    receipt: &Receipt,
    request: &Request,
) -> Result<u64, TxError> {
    let left = record
        .amount
        .checked_sub(record.moved)
        .expect("no more moves than the commit's amount");
    let price = receipt.price.min(left);
    let job = compute::adopt_posted(
        state,
        ctx.block.height,
        &escrow(),
        compute::ServedRequest {
            client: session.owner,
            model: session.model.clone(),
            input: request.input.clone(),
            params: request.params.clone(),
            max_units: request.max_units,
            provider: record.provider,
            output_hash: receipt.output_hash,
            trace_root: receipt.trace_root,
            units: receipt.units,
            price,
        },
    )?;
    record.moved = record
        .moved
        .checked_add(price)
        .expect("bounded by the amount");
    session.deposit = session
        .deposit
        .checked_sub(price)
        .expect("a commit's amount is escrowed");
    session.paid = session
        .paid
        .checked_add(price)
        .expect("bounded by the deposit");
    let at = record
        .adopted_seqs
        .binary_search(&receipt.seq)
        .expect_err("checked: not adopted yet");
    record.adopted_seqs.insert(at, receipt.seq);
    record.jobs.push(job);
    fraud::watch(state, record, ctx.block.height)?;
    ctx.emit(Event::new(
        "sessions.request_adopted",
        &[
            ("session", session.id.to_string()),
            ("commit", record.id.to_string()),
            ("seq", receipt.seq.to_string()),
            ("job", job.to_string()),
            ("price", amount_text(price)),
        ],
    ));
    Ok(job)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
    commit_id: &u64,
    index: &u64,
    receipt: &Receipt,
    proof: &ReceiptProof,
    request: &SignedRequest,
) -> Result<(), TxError> {
    let (mut session, mut record, adopted) =
        check_stateful(state, ctx, id, commit_id, index, receipt, proof, request)?;
    let job = match adopted {
        Some(job) => job,
        None => adopt(
            state,
            ctx,
            &mut session,
            &mut record,
            receipt,
            &request.request,
        )?,
    };
    let at = record
        .revealed
        .binary_search(index)
        .expect_err("checked: not revealed yet");
    record.revealed.insert(at, *index);
    put_session(state, &session);
    put_commit(state, &record);
    let block = ctx.block.clone();
    if adopted.is_none() {
        verify::assign_auditor(state, job, &block, &mut ctx.events);
    }
    ctx.emit(Event::new(
        "sessions.revealed",
        &[
            ("session", id.to_string()),
            ("commit", commit_id.to_string()),
            ("index", index.to_string()),
            ("job", job.to_string()),
        ],
    ));
    if !record.audits_open() && record.settle_height <= block.height {
        lifecycle::pay(state, record, &block, &mut ctx.events);
    }
    Ok(())
}

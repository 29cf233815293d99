//! `Reveal`: the provider answers an audit with the receipt, its proof in the commit, and the
//! signed request it served. The request becomes a compute job holding the receipt as its
//! posted result (its price moved from the deposit into compute's escrow) and gets an auditor.
//! A receipt the owner challenged before its reveal is already that job (disputed): revealing
//! it answers the audit and makes no second job, so the provider is not penalized for it.
//! A receipt whose signed prompt count no run can have read is its own proof: its job fails
//! at once (the client refunded) and the commit's fraud slash is taken.

use super::*;
use crate::compute;
use crate::models::{self, ModelKind};
use crate::verify;
use piazza_primitives::Amount;

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
/// Returns the job and whether the receipt's prompt count disproved it at once (then it
/// needs no audit or dispute).
pub(super) fn adopt(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    session: &mut Session,
    record: &mut CommitRecord,
    receipt: &Receipt,
    request: &Request,
) -> Result<(u64, bool), TxError> {
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
            input_units: receipt.input_units,
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
    let ids = [session.id, record.id, receipt.seq, job];
    ctx.emit(request_event(
        "sessions.request_adopted",
        ids,
        &[("price", amount_text(price))],
    ));
    let disproven = disprove_input_units(state, ctx, session, record, receipt, job);
    Ok((job, disproven))
}

/// An event about request `seq` of `session`, in commit `commit`, made job `job` (`ids` in
/// that order), with `more` attributes.
pub(super) fn request_event(kind: &str, ids: [u64; 4], more: &[(&str, String)]) -> Event {
    let names = ["session", "commit", "seq", "job"];
    let attributes: Vec<(&str, String)> = names
        .into_iter()
        .zip(ids.map(|id| id.to_string()))
        .chain(more.iter().cloned())
        .collect();
    Event::new(kind, &attributes)
}

/// Whether `receipt`'s signed prompt count is one no run of `model` reads: none at all, or
/// for an embedding (whose units are its input's tokens) other than its units.
fn impossible_input_units(state: &StateDelta<'_>, model: &str, receipt: &Receipt) -> bool {
    match models::record(state, model).map(|record| record.kind) {
        Some(ModelKind::Embedding) => receipt.input_units != receipt.units,
        Some(ModelKind::Generation) | None => receipt.input_units == 0,
    }
}

/// Fails `job`, adopted from `receipt`, when the receipt's prompt count is provably wrong:
/// the client gets the request's price back and the provider pays the commit's fraud slash.
/// Returns whether it did.
fn disprove_input_units(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    session: &Session,
    record: &mut CommitRecord,
    receipt: &Receipt,
    job: u64,
) -> bool {
    if !impossible_input_units(state, &session.model, receipt) {
        return false;
    }
    compute::fail(state, job, &mut ctx.events);
    let penalty = fraud::slash_commit(state, record, Amount::ZERO);
    ctx.emit(request_event(
        "sessions.input_units_disproven",
        [session.id, record.id, receipt.seq, job],
        &[
            ("input_units", receipt.input_units.to_string()),
            ("units", receipt.units.to_string()),
            ("penalty", amount_text(penalty)),
        ],
    ));
    true
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
    let (job, disproven) = match adopted {
        Some(job) => (job, false),
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
    if adopted.is_none() && !disproven {
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

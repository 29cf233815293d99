//! `Commit`: the provider posts the root of its receipts since its last commit with the
//! latest voucher; the voucher's new money pays out after the commit's challenge window.

use super::*;
use crate::list;
use crate::staking::{self, Role};
use piazza_primitives::{Amount, Hash};

pub(super) fn check_stateless(
    session: &u64,
    count: &u64,
    voucher: &SignedVoucher,
) -> Result<(), TxError> {
    if *count == 0 || *count > RECEIPTS_PER_COMMIT_MAX {
        return Err(invalid(format!(
            "a commit covers 1 to {RECEIPTS_PER_COMMIT_MAX} receipts, not {count}"
        )));
    }
    if voucher.voucher.session != *session {
        return Err(bad_voucher(format!(
            "the voucher is for session {}, not {session}",
            voucher.voucher.session
        )));
    }
    voucher
        .verify()
        .map_err(|e| bad_voucher(format!("voucher: {e}")))
}

pub(super) fn bad_voucher(message: impl Into<String>) -> TxError {
    error(ErrorCode::BadVoucher, message)
}

/// Whether `session` still takes commits at `height`: open, or closing within its grace.
pub(super) fn takes_commits(session: &Session, window_blocks: u64, height: u64) -> bool {
    match session.status {
        SessionStatus::Open => true,
        SessionStatus::Closing => {
            session.provider.is_some()
                && height < session.closing_height.saturating_add(window_blocks)
        }
        SessionStatus::Pending | SessionStatus::Closed => false,
    }
}

/// Checks a commit; returns the session and the voucher's new money.
pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    id: &u64,
    count: &u64,
    units: &u64,
    voucher: &SignedVoucher,
) -> Result<(Session, Amount), TxError> {
    let session = existing(state, *id)?;
    if session.provider != Some(ctx.sender) {
        return Err(error(
            ErrorCode::NotSessionParty,
            format!("{} is not session {id}'s provider", ctx.sender),
        ));
    }
    let height = ctx.block.height;
    if !takes_commits(&session, params(state).challenge_window_blocks, height) {
        return Err(error(
            ErrorCode::SessionNotOpen,
            format!("session {id} takes no more commits"),
        ));
    }
    if session.commits > 0 && session.commit_height == height {
        return Err(invalid(format!(
            "session {id} already has a commit in block {height}"
        )));
    }
    voucher
        .verify_session(&session)
        .map_err(|e| bad_voucher(format!("voucher: {e}")))?;
    let v = &voucher.voucher;
    if v.seq < session.committed_seq || v.total < session.committed_total {
        return Err(bad_voucher(format!(
            "the voucher (seq {}, total {}) goes back from the committed one (seq {}, total {})",
            v.seq, v.total, session.committed_seq, session.committed_total
        )));
    }
    let escrowed = session
        .deposit
        .checked_add(session.paid)
        .ok_or_else(|| error(ErrorCode::Overflow, "the deposit overflows"))?;
    if v.total > escrowed {
        return Err(bad_voucher(format!(
            "the voucher's total {} exceeds the {escrowed} PZA the session escrowed",
            v.total
        )));
    }
    let units_total = session
        .committed_units
        .checked_add(*units)
        .ok_or_else(|| invalid("units overflow"))?;
    let allowed = session
        .max_price_per_unit
        .checked_mul(u128::from(units_total));
    if allowed.is_some_and(|allowed| v.total > allowed) {
        return Err(bad_voucher(format!(
            "the voucher's total {} exceeds {units_total} units at {} PZA a unit",
            v.total, session.max_price_per_unit
        )));
    }
    debug_assert!(*count <= RECEIPTS_PER_COMMIT_MAX);
    let new_money = v
        .total
        .checked_sub(session.committed_total)
        .expect("checked: the total never goes back");
    check_bond(state, &session, &ctx.sender, new_money, *count)?;
    Ok((session, new_money))
}

/// Refuses a commit whose worst-case fraud slash exceeds its provider's bond now: a slash the
/// bond could not pay would make cheating on this commit cheaper than the protocol promises.
fn check_bond(
    state: &StateDelta<'_>,
    session: &Session,
    provider: &Address,
    amount: Amount,
    count: u64,
) -> Result<(), TxError> {
    let slash = fraud::commit_slash(session, amount, count, params(state).audits_per_commit);
    let bond = staking::bonded(state, provider, Role::Provider);
    if slash > bond {
        return Err(error(
            ErrorCode::CommitExceedsBond,
            format!(
                "this commit's worst-case slash {} exceeds the provider's bond {}",
                amount_text(slash),
                amount_text(bond)
            ),
        ));
    }
    Ok(())
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
    root: &Hash,
    count: &u64,
    units: &u64,
    voucher: &SignedVoucher,
) -> Result<(), TxError> {
    let (mut session, amount) = check_stateful(state, ctx, id, count, units, voucher)?;
    let height = ctx.block.height;
    let commit_id: u64 = state.get(&state_key::next_commit()).unwrap_or(0);
    list::schedule::<SESSIONS_PER_QUEUE_MAX>(state, state_key::draws, height + 1, commit_id)
        .map_err(|full| full.refusal("the session audit draw queue"))?;
    let settle_height = list::schedule::<SESSIONS_PER_QUEUE_MAX>(
        state,
        state_key::payouts,
        height + params(state).challenge_window_blocks,
        commit_id,
    )
    .map_err(|full| full.refusal("the session payout queue"))?;
    state.put(state_key::next_commit(), &(commit_id + 1));
    state.put(state_key::session_commit(*id, session.commits), &commit_id);
    let record = CommitRecord {
        id: commit_id,
        session: *id,
        index: session.commits,
        provider: ctx.sender,
        root: *root,
        count: *count,
        units: *units,
        from_seq: session.committed_seq,
        voucher_seq: voucher.voucher.seq,
        total: voucher.voucher.total,
        amount,
        moved: Amount::ZERO,
        height,
        settle_height,
        audited: Vec::new(),
        revealed: Vec::new(),
        reveal_deadline: 0,
        audits_closed: false,
        adopted_seqs: Vec::new(),
        jobs: Vec::new(),
        status: CommitStatus::Pending,
        fraud_check_height: 0,
        fraud_slashed: false,
    };
    put_commit(state, &record);
    session.committed_total = voucher.voucher.total;
    session.committed_seq = voucher.voucher.seq;
    session.commit_height = height;
    session.committed_units += units;
    session.commits += 1;
    session.pending_commits += 1;
    put_session(state, &session);
    ctx.emit(Event::new(
        "sessions.committed",
        &[
            ("session", id.to_string()),
            ("commit", commit_id.to_string()),
            ("provider", ctx.sender.to_string()),
            ("root", root.to_hex()),
            ("count", count.to_string()),
            ("units", units.to_string()),
            ("voucher_seq", voucher.voucher.seq.to_string()),
            ("total", amount_text(voucher.voucher.total)),
            ("amount", amount_text(amount)),
            ("settle_height", settle_height.to_string()),
        ],
    ));
    Ok(())
}

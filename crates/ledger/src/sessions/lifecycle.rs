//! A session's life in the block hooks: assignment with a later block's randomness, audit
//! draws over committed receipts, missed reveals, payouts after each commit's window, and the
//! close that returns the unspent deposit.

use super::*;
use crate::bank;
use crate::compute;
use crate::job::JobParams;
use crate::list;
use crate::staking::{self, Role};
use crate::verify;
use piazza_primitives::Amount;

fn take(state: &mut StateDelta<'_>, key: Vec<u8>) -> Vec<u64> {
    list::take::<SESSIONS_PER_QUEUE_MAX>(state, key)
}

/// The session's shape as compute sees a job: one unit of work at the session's maximum
/// price, so compute's choice (stake-weighted, serving the model, with room, affordable)
/// applies unchanged. Providers already serving [`SESSIONS_PER_PROVIDER_MAX`] sessions are
/// left out as compute leaves out providers that missed a job.
fn as_job(state: &StateDelta<'_>, session: &Session) -> compute::Job {
    let full: Vec<Address> = compute::providers_serving(state, &session.model)
        .into_iter()
        .filter(|p| sessions_of_provider(state, p).len() >= SESSIONS_PER_PROVIDER_MAX)
        .collect();
    compute::Job {
        id: session.id,
        client: session.owner,
        model: session.model.clone(),
        input: Vec::new(),
        params: JobParams::default(),
        max_units: 1,
        max_price: session.max_price_per_unit,
        submitted_height: session.opened_height,
        group: session.id,
        queued_height: session.opened_height,
        price_per_unit: Amount::ZERO,
        status: compute::JobStatus::Pending,
        missed: full,
        result: None,
        receipt: None,
    }
}

/// Assigns every session opened before this block; one that nobody can serve is refunded.
pub(super) fn assign_pending(
    state: &mut StateDelta<'_>,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    for id in take(state, state_key::pending()) {
        let Some(mut session) = session(state, id) else {
            continue;
        };
        if session.status != SessionStatus::Pending {
            continue;
        }
        let chosen = compute::choose_provider(state, &as_job(state, &session), &block.randomness);
        let Some(provider) = chosen else {
            events.push(Event::new(
                "sessions.unassigned",
                &[("session", id.to_string())],
            ));
            finish(state, session, block, events);
            continue;
        };
        let mut serving: List<u64, SESSIONS_PER_PROVIDER_MAX> =
            List(sessions_of_provider(state, &provider));
        if serving.insert_sorted(id).is_err() {
            // Full providers are left out of the choice; a full list here is a broken invariant
            // handled openly: the session is refunded.
            events.push(Event::new(
                "sessions.unassigned",
                &[("session", id.to_string())],
            ));
            finish(state, session, block, events);
            continue;
        }
        state.put(state_key::of_provider(&provider), &serving);
        compute::hold_provider(state, &provider, true);
        session.provider = Some(provider);
        session.status = SessionStatus::Open;
        put_session(state, &session);
        events.push(Event::new(
            "sessions.assigned",
            &[
                ("session", id.to_string()),
                ("provider", provider.to_string()),
            ],
        ));
    }
}

/// Draws, with this block's randomness, which receipts of the commits made before it are
/// audited: `audits_per_commit` draws, uniform over the commit's receipts (every receipt of a
/// smaller commit; none for a model audited at rate 0), and sets their reveal deadline.
pub(super) fn draw_audits(
    state: &mut StateDelta<'_>,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let audits = params(state).audits_per_commit;
    for id in take(state, state_key::draws(block.height)) {
        let Some(mut record) = commit(state, id) else {
            continue;
        };
        let Some(session) = session(state, record.session) else {
            continue;
        };
        record.audited = if verify::audit_rate(state, &session.model) == 0 {
            Vec::new()
        } else if record.count <= audits {
            (0..record.count).collect()
        } else {
            let mut drawn: Vec<u64> = (0..audits)
                .map(|draw| {
                    let seed: [&[u8]; 3] =
                        [&block.randomness.0, &id.to_le_bytes(), &draw.to_le_bytes()];
                    let index = crate::draw::uniform_below(
                        "piazza/sessions/audit",
                        &seed,
                        u128::from(record.count),
                    );
                    u64::try_from(index).expect("below a u64 count")
                })
                .collect();
            drawn.sort_unstable();
            drawn.dedup();
            drawn
        };
        if record.audited.is_empty() {
            put_commit(state, &record);
            continue;
        }
        let wanted = block.height + params(state).reveal_blocks;
        match list::schedule::<SESSIONS_PER_QUEUE_MAX>(
            state,
            state_key::reveal_deadlines,
            wanted,
            id,
        ) {
            Ok(deadline) => {
                record.reveal_deadline = deadline;
                events.push(Event::new(
                    "sessions.audit_drawn",
                    &[
                        ("session", record.session.to_string()),
                        ("commit", id.to_string()),
                        ("provider", record.provider.to_string()),
                        ("audited", record.audited.len().to_string()),
                        ("deadline_height", deadline.to_string()),
                    ],
                ));
            }
            Err(full) => {
                // Nothing waits on a deadline that would never come.
                events.push(Event::new(
                    "sessions.audit_skipped",
                    &[
                        ("commit", id.to_string()),
                        ("reason", full.refusal("the reveal deadline queue").message),
                    ],
                ));
                record.audited.clear();
            }
        }
        put_commit(state, &record);
    }
}

/// Slashes the provider of every commit with an audited receipt not revealed by this block
/// (one event per commit): a missed-deadline penalty per receipt, and at least the commit's
/// fraud slash, as a receipt it cannot show counts as a wrong one. Then pays out the commits
/// whose window is already over.
pub(super) fn reveal_deadlines(
    state: &mut StateDelta<'_>,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let penalty = compute::params(state).missed_deadline_penalty;
    for id in take(state, state_key::reveal_deadlines(block.height)) {
        let Some(mut record) = commit(state, id) else {
            continue;
        };
        if record.audits_closed || record.reveal_deadline != block.height {
            continue;
        }
        let missed = record
            .audited
            .iter()
            .filter(|index| record.revealed.binary_search(index).is_err())
            .count();
        if missed > 0 {
            let per_receipt = penalty
                .checked_mul(missed as u128)
                .unwrap_or(Amount::new(u128::MAX));
            let slashed = if record.fraud_slashed {
                staking::slash(
                    state,
                    &record.provider,
                    Role::Provider,
                    per_receipt,
                    Some(&bank::treasury()),
                )
            } else {
                fraud::slash_commit(state, &mut record, per_receipt)
            };
            events.push(Event::new(
                "sessions.reveal_missed",
                &[
                    ("session", record.session.to_string()),
                    ("commit", id.to_string()),
                    ("missed", missed.to_string()),
                    ("provider", record.provider.to_string()),
                    ("penalty", amount_text(slashed)),
                ],
            ));
        }
        record.audits_closed = true;
        put_commit(state, &record);
        if record.settle_height <= block.height {
            pay(state, record, block, events);
        }
    }
}

/// Pays out the commits whose window ends at this block, unless audits still wait for a
/// reveal (the reveal, or its deadline, pays them then).
pub(super) fn payouts(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
    for id in take(state, state_key::payouts(block.height)) {
        let Some(record) = commit(state, id) else {
            continue;
        };
        if !record.audits_open() {
            pay(state, record, block, events);
        }
    }
}

/// Sessions reaching their expiry start closing; closing sessions whose grace ends here close
/// if nothing is left to pay out.
pub(super) fn expiries(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
    for id in take(state, state_key::expiries(block.height)) {
        let Some(session) = session(state, id) else {
            continue;
        };
        match session.status {
            SessionStatus::Pending | SessionStatus::Open => {
                start_closing(state, session, block, events)
            }
            SessionStatus::Closing => finish_if_settled(state, session, block, events),
            SessionStatus::Closed => {}
        }
    }
}

/// Pays a pending commit's new money (less what moved into jobs) by compute's fee split.
pub(super) fn pay(
    state: &mut StateDelta<'_>,
    mut record: CommitRecord,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    if record.status != CommitStatus::Pending {
        return;
    }
    let Some(mut session) = session(state, record.session) else {
        return;
    };
    let amount = record
        .amount
        .checked_sub(record.moved)
        .expect("no more moves into jobs than the commit's amount");
    let split = compute::pay_price(
        state,
        &escrow(),
        amount,
        &record.provider,
        &session.model,
        &compute::auditor_pool(),
    );
    session.deposit = session
        .deposit
        .checked_sub(amount)
        .expect("a commit pays at most what the session escrows");
    session.paid = session
        .paid
        .checked_add(amount)
        .expect("payouts are bounded by the deposit");
    session.pending_commits -= 1;
    put_session(state, &session);
    record.status = CommitStatus::Paid;
    put_commit(state, &record);
    events.push(Event::new(
        "sessions.paid",
        &[
            ("session", session.id.to_string()),
            ("commit", record.id.to_string()),
            ("provider", record.provider.to_string()),
            ("amount", amount_text(amount)),
            ("to_provider", amount_text(split.to_provider)),
            ("to_model_owner", amount_text(split.to_model_owner)),
            ("to_auditor_pool", amount_text(split.to_auditor_pool)),
            ("to_treasury", amount_text(split.to_treasury)),
        ],
    ));
    finish_if_settled(state, session, block, events);
}

/// Starts closing `session` (by its owner or at expiry): its provider may still commit for one
/// challenge window; then the unspent deposit returns.
pub(super) fn start_closing(
    state: &mut StateDelta<'_>,
    mut session: Session,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let grace_end = block.height + params(state).challenge_window_blocks;
    session.status = SessionStatus::Closing;
    session.closing_height = block.height;
    put_session(state, &session);
    events.push(Event::new(
        "sessions.closing",
        &[
            ("session", session.id.to_string()),
            ("grace_end_height", grace_end.to_string()),
        ],
    ));
    if list::schedule::<SESSIONS_PER_QUEUE_MAX>(state, state_key::expiries, grace_end, session.id)
        .is_err()
    {
        // No queue in reach has room: close as soon as nothing is left to pay, rather than
        // never (the provider loses the rest of its grace).
        session.closing_height = 0;
        put_session(state, &session);
        finish_if_settled(state, session, block, events);
    }
}

/// Closes a closing session once its grace is over and every commit has paid out.
fn finish_if_settled(
    state: &mut StateDelta<'_>,
    session: Session,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let grace_end = session
        .closing_height
        .saturating_add(params(state).challenge_window_blocks);
    if session.status == SessionStatus::Closing
        && session.pending_commits == 0
        && (session.closing_height == 0 || block.height >= grace_end)
    {
        finish(state, session, block, events);
    }
}

/// Returns the unspent deposit to the owner and closes the session.
fn finish(
    state: &mut StateDelta<'_>,
    mut session: Session,
    _block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let refund = session.deposit;
    if !refund.is_zero() {
        bank::transfer(state, &escrow(), &session.owner, refund)
            .expect("the escrow holds every session's deposit");
    }
    session.deposit = Amount::ZERO;
    session.status = SessionStatus::Closed;
    put_session(state, &session);
    let mut mine: List<u64, SESSIONS_PER_CLIENT_MAX> =
        List(sessions_of_client(state, &session.owner));
    mine.remove_sorted(&session.id);
    state.put(state_key::of_client(&session.owner), &mine);
    if let Some(provider) = session.provider {
        let mut serving: List<u64, SESSIONS_PER_PROVIDER_MAX> =
            List(sessions_of_provider(state, &provider));
        serving.remove_sorted(&session.id);
        state.put(state_key::of_provider(&provider), &serving);
        compute::hold_provider(state, &provider, false);
    }
    events.push(Event::new(
        "sessions.closed",
        &[
            ("session", session.id.to_string()),
            ("refund", amount_text(refund)),
            ("paid", amount_text(session.paid)),
        ],
    ));
}

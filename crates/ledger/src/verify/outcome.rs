//! How a dispute opens and ends: a winner and a loser (slash or forfeit, shares, burn), a
//! draw, or a deadline that passed.

use super::*;
use crate::module::BlockContext;

pub(super) fn open_dispute(
    state: &mut StateDelta<'_>,
    job: u64,
    defendant: Party,
    claimant: Party,
    block: &BlockContext,
    events: &mut Vec<Event>,
) -> Result<(), TxError> {
    for party in [&defendant, &claimant] {
        if !has_room_for_task(state, &party.address) {
            return Err(list::Full { max: TASKS_MAX }.refusal(&format!(
                "the open audits and disputes of {}",
                party.address
            )));
        }
    }
    let deadline = schedule_deadline(state, block.height + params(state).round_blocks, job)
        .map_err(|full| full.refusal("the verify deadline queue"))?;
    add_task(state, &defendant.address, job).expect("room checked above");
    add_task(state, &claimant.address, job).expect("room checked above");
    events.push(Event::new(
        "verify.dispute_opened",
        &[
            ("job", job.to_string()),
            ("defendant", defendant.address.to_string()),
            ("claimant", claimant.address.to_string()),
            ("deadline_height", deadline.to_string()),
        ],
    ));
    set_hold(state, job, &Hold::Dispute);
    if claimant.job != job {
        set_hold(state, claimant.job, &Hold::Group);
    }
    let dispute = Dispute::open(job, defendant, claimant, block.height, deadline);
    state.put(state_key::dispute(job), &dispute);
    Ok(())
}

/// Moves dispute `d` to its input phase (the ledger tokenizes the job's input: the parties ran
/// different ids, or only the signed prompt count is disputed) with the arbitration deadline
/// from `height`, and stores it.
pub(super) fn enter_input_phase(
    state: &mut StateDelta<'_>,
    mut d: Dispute,
    height: u64,
    events: &mut Vec<Event>,
) -> Result<(), TxError> {
    d.phase = Phase::Input;
    d.deadline = schedule_deadline(state, height + params(state).arbitration_blocks, d.job)
        .map_err(|full| full.refusal("the verify deadline queue"))?;
    events.push(Event::new(
        "verify.input_disputed",
        &[
            ("job", d.job.to_string()),
            ("deadline_height", d.deadline.to_string()),
        ],
    ));
    state.put(state_key::dispute(d.job), &d);
    Ok(())
}

/// Ends a dispute with `loser` losing: a provider's result fails (the client is refunded)
/// and its stake is slashed, a challenger forfeits its bond; the winner gets its share and
/// the rest is burned.
pub(super) fn resolve(
    state: &mut StateDelta<'_>,
    dispute: Dispute,
    loser: usize,
    reason: &str,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let p = params(state);
    let winner = 1 - loser;
    let (lost, won) = (&dispute.parties[loser], &dispute.parties[winner]);
    let share = |amount: Amount| {
        amount
            .checked_mul_div(p.winner_share_bps as u128, BPS)
            .expect("a share of an amount fits")
    };
    let (mut to_winner, mut burned) = (Amount::ZERO, Amount::ZERO);
    if lost.is_provider {
        clear_hold(state, lost.job);
        if compute::fail(state, lost.job, events).is_some() {
            let slash = p
                .fraud_slash
                .min(staking::bonded(state, &lost.address, Role::Provider));
            let reward = share(slash);
            to_winner = staking::slash(
                state,
                &lost.address,
                Role::Provider,
                reward,
                Some(&won.address),
            );
            burned = staking::slash(
                state,
                &lost.address,
                Role::Provider,
                slash
                    .checked_sub(reward)
                    .expect("a share is at most the whole"),
                None,
            );
            if let Some(attester) = attestation(state, lost.job) {
                disprove_attestation(state, lost.job, &attester, &won.address, events);
            }
        }
    } else if !lost.bond.is_zero() {
        let reward = share(lost.bond);
        to_winner = reward;
        burned = lost
            .bond
            .checked_sub(reward)
            .expect("a share is at most the whole");
        bank::transfer(state, &escrow(), &won.address, reward)
            .expect("the escrow holds every bond");
        bank::burn(state, &escrow(), burned).expect("the escrow holds every bond");
    }
    if !won.is_provider && !won.bond.is_zero() {
        bank::transfer(state, &escrow(), &won.address, won.bond)
            .expect("the escrow holds every bond");
    }
    let step = match dispute.phase {
        Phase::Step { step, .. } => step.to_string(),
        _ => String::new(),
    };
    events.push(Event::new(
        "verify.dispute_resolved",
        &[
            ("job", dispute.job.to_string()),
            ("winner", won.address.to_string()),
            ("loser", lost.address.to_string()),
            (
                "loser_side",
                if loser == DEFENDANT {
                    "defendant"
                } else {
                    "claimant"
                }
                .to_string(),
            ),
            ("reason", reason.to_string()),
            ("rounds", dispute.round.to_string()),
            ("step", step),
            ("to_winner", to_winner.base_units().to_string()),
            ("burned", burned.base_units().to_string()),
            ("blocks", (block.height - dispute.opened_height).to_string()),
        ],
    ));
    close(state, &dispute, block, events);
}

/// Ends a dispute: its record and tasks go; the surviving results' holds end (a failed job is
/// gone; a surviving result settles, or its group is reviewed again).
pub(super) fn close(
    state: &mut StateDelta<'_>,
    dispute: &Dispute,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    state.delete(state_key::dispute(dispute.job));
    for party in &dispute.parties {
        remove_task(state, &party.address, dispute.job);
    }
    for job in [
        dispute.parties[DEFENDANT].job,
        dispute.parties[CLAIMANT].job,
    ] {
        if hold(state, job).is_some() && dispute_for(state, job).is_none() {
            release(state, job, block, events);
        }
    }
    // Both parties' results may have failed: the group's surviving copies still wait.
    if let Some(record) = compute::job(state, dispute.job) {
        if record.is_redundant() {
            review_group(state, record.group, block, events);
        }
    }
}

/// Ends a dispute nobody lost: what the ledger can decide does not separate the parties (two
/// generations of the same ids stopping at different lengths). Bonds go back; the result stands.
pub(super) fn draw(
    state: &mut StateDelta<'_>,
    dispute: Dispute,
    reason: &str,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    for party in &dispute.parties {
        if !party.is_provider && !party.bond.is_zero() {
            bank::transfer(state, &escrow(), &party.address, party.bond)
                .expect("the escrow holds every bond");
        }
    }
    events.push(Event::new(
        "verify.dispute_drawn",
        &[
            ("job", dispute.job.to_string()),
            ("reason", reason.to_string()),
            ("rounds", dispute.round.to_string()),
            ("blocks", (block.height - dispute.opened_height).to_string()),
        ],
    ));
    close(state, &dispute, block, events);
}

/// An open dispute in which `job`'s result is either side.
pub(super) fn dispute_for(state: &StateDelta<'_>, job: u64) -> Option<Dispute> {
    if let Some(d) = dispute(state, job) {
        return Some(d);
    }
    let record = compute::job(state, job)?;
    record
        .group_ids()
        .filter_map(|id| dispute(state, id))
        .find(|d| d.parties[CLAIMANT].job == job)
}

/// A round's or the arbitration's deadline passed.
pub(super) fn timeout(
    state: &mut StateDelta<'_>,
    dispute: Dispute,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let loser = dispute.timeout_loser();
    let reason = match dispute.phase {
        Phase::Bisect => "silent in a round",
        _ => "no evidence by the arbitration deadline",
    };
    resolve(state, dispute, loser, reason, block, events);
}

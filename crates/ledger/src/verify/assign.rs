//! Auditor assignment: a job drawn for audit (by `audit`'s rate, or a session's own draw in
//! the module above) gets a stake-weighted auditor and a deadline, and is held meanwhile.

use super::*;
use crate::module::BlockContext;

/// The base audit rate of `model`, in basis points.
pub fn audit_rate(state: &StateDelta<'_>, model: &str) -> u16 {
    params(state).rate_for(model)
}

/// Assigns an auditor to posted job `id` with `block`'s randomness and holds the job until it
/// attests, challenges or misses its deadline. Without an eligible auditor (or deadline room)
/// nothing is held and the job settles after its window.
pub fn assign_auditor(
    state: &mut StateDelta<'_>,
    id: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let Some(job) = compute::job(state, id) else {
        return;
    };
    let Some(address) = job.provider() else {
        return;
    };
    let p = params(state);
    let seed: [&[u8]; 2] = [&block.randomness.0, &id.to_le_bytes()];
    let mut candidates: Vec<(Address, u128)> = Vec::new();
    for candidate in auditors_of(state, &job.model) {
        if candidate == address || candidate == job.client {
            continue;
        }
        let stake = staking::bonded(state, &candidate, Role::Auditor);
        if stake >= p.min_auditor_stake && has_room_for_task(state, &candidate) {
            candidates.push((candidate, stake.base_units()));
        }
    }
    let Some(chosen) = crate::draw::weighted_choice("piazza/verify/auditor", &seed, &candidates)
    else {
        return;
    };
    let deadline = match schedule_deadline(state, block.height + p.audit_blocks, id) {
        Ok(deadline) => deadline,
        Err(full) => {
            // Nothing is held, so nothing waits on a deadline that would never come.
            events.push(Event::new(
                "verify.audit_skipped",
                &[
                    ("job", id.to_string()),
                    ("reason", full.refusal("the verify deadline queue").message),
                ],
            ));
            return;
        }
    };
    set_hold(
        state,
        id,
        &Hold::Audit {
            auditor: chosen,
            deadline,
        },
    );
    add_task(state, &chosen, id).expect("candidates have room for a task");
    events.push(Event::new(
        "verify.audit_assigned",
        &[
            ("job", id.to_string()),
            ("auditor", chosen.to_string()),
            ("deadline_height", deadline.to_string()),
        ],
    ));
}

//! `Reveal`: a party opens the children of its node for this round of the game (in round 0 a
//! redundant copy's provider also states its step count and token ids). Different ids send the
//! dispute to the input phase; equal ids with different counts make it a length dispute, which
//! walks the common prefix (see [`super::game`]).

use super::*;

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    job: &u64,
    round: &u32,
) -> Result<(), TxError> {
    let d = dispute(state, *job).ok_or_else(|| no_dispute(*job))?;
    if !d.parties.iter().any(|p| p.address == ctx.sender) {
        return Err(error(
            ErrorCode::NotAParty,
            format!(
                "{} is not a party to the dispute over job {job}",
                ctx.sender
            ),
        ));
    }
    if *round != d.round {
        return Err(error(
            ErrorCode::WrongRound,
            format!("the dispute is at round {}, not {round}", d.round),
        ));
    }
    Ok(())
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    job: &u64,
    left: &Hash,
    right: &Hash,
    step_count: &u64,
    ids: &Hash,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let block = ctx.block.clone();
    let mut d = dispute(state, *job).ok_or_else(|| no_dispute(*job))?;
    let p = params(state);
    let sides: Vec<usize> = (0..2).filter(|s| d.parties[*s].address == sender).collect();
    // Both sides may be the same address only in a test; the defendant answers first.
    let side = *sides
        .iter()
        .find(|s| d.reveals[**s].is_none() && d.must_reveal(**s))
        .ok_or_else(|| error(ErrorCode::WrongRound, "this round is already revealed"))?;
    if d.round == 0 {
        // Providers of redundant copies state their count and ids now; the defendant's ids
        // must equal the claimant's, else the ledger tokenizes (different counts over the same
        // ids are a length dispute, played in the rounds).
        let party = &mut d.parties[side];
        if party.is_provider && party.step_count == 0 {
            if *step_count < 2 || *step_count > tree::LEAVES_MAX {
                return Err(error(ErrorCode::BadReveal, "a trace has at least 2 steps"));
            }
            party.step_count = *step_count;
            party.ids = *ids;
        }
        let [a, b] = &d.parties;
        let both_stated = a.step_count != 0 && b.step_count != 0;
        if both_stated && a.ids != b.ids {
            let top = tree::root_from_top(
                d.parties[side].step_count,
                &tree::node_hash(&left.0, &right.0),
            );
            if top != d.parties[side].root.0 {
                return Err(error(
                    ErrorCode::BadReveal,
                    "the children do not hash to the party's root",
                ));
            }
            return enter_input_phase(state, d, block.height, &mut ctx.events);
        }
        let count = d.parties[CLAIMANT].step_count;
        if let Some(top) = tree::top(count) {
            d.node = tree::settle(count, top);
        }
    }
    let before = d.round;
    d.reveal(side, *left, *right)?;
    ctx.emit(Event::new(
        "verify.revealed",
        &[
            ("job", job.to_string()),
            ("round", before.to_string()),
            ("party", sender.to_string()),
        ],
    ));
    if d.round != before {
        let blocks = match d.phase {
            Phase::Step { .. } | Phase::Input => p.arbitration_blocks,
            Phase::Bisect => p.round_blocks,
        };
        d.deadline = schedule_deadline(state, block.height + blocks, *job)
            .map_err(|full| full.refusal("the verify deadline queue"))?;
        if let Phase::Step { step, .. } = d.phase {
            ctx.emit(Event::new(
                "verify.step_found",
                &[
                    ("job", job.to_string()),
                    ("step", step.to_string()),
                    ("rounds", d.round.to_string()),
                    ("deadline_height", d.deadline.to_string()),
                ],
            ));
        }
        if d.phase == Phase::Input {
            // A length dispute whose common prefix is agreed: the ledger decides the length.
            ctx.emit(Event::new(
                "verify.length_disputed",
                &[
                    ("job", job.to_string()),
                    ("common_steps", d.common_steps().to_string()),
                    ("rounds", d.round.to_string()),
                    ("deadline_height", d.deadline.to_string()),
                ],
            ));
        }
    }
    state.put(state_key::dispute(*job), &d);
    Ok(())
}

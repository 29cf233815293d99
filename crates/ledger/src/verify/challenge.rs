//! `Challenge`: anyone inside the window (or the drawn auditor) bonds against a result with
//! its own trace root, opening a dispute. A challenge with the result's own trace root
//! disputes only the prompt count the provider signed (`input_units`): it goes straight to the
//! input phase, where the ledger tokenizes the input and the party whose count is wrong loses.

use super::*;

pub(super) fn check_stateless(step_count: &u64) -> Result<(), TxError> {
    if *step_count < 2 || *step_count > tree::LEAVES_MAX {
        return Err(error(
            ErrorCode::InvalidMessage,
            format!("a trace has 2 to {} steps", tree::LEAVES_MAX),
        ));
    }
    Ok(())
}

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    id: &u64,
    trace_root: &Hash,
) -> Result<(), TxError> {
    let job = compute::job(state, *id)
        .ok_or_else(|| error(ErrorCode::UnknownJob, format!("no job {id}")))?;
    let JobStatus::Posted {
        provider,
        settle_height,
    } = job.status
    else {
        return Err(error(
            ErrorCode::NotChallengeable,
            format!(
                "job {id} is {}, not waiting for settlement",
                job.status.name()
            ),
        ));
    };
    if job.is_redundant() {
        return Err(error(
            ErrorCode::NotChallengeable,
            format!("job {id} is redundant: its copies verify one another"),
        ));
    }
    if provider == ctx.sender {
        return Err(error(
            ErrorCode::NotChallengeable,
            "a provider cannot challenge itself",
        ));
    }
    let held_for_sender = match hold(state, *id) {
        Some(Hold::Audit { auditor, .. }) => auditor == ctx.sender,
        Some(Hold::Dispute) => {
            return Err(error(
                ErrorCode::DisputeExists,
                format!("job {id} is already disputed"),
            ))
        }
        _ => false,
    };
    if !held_for_sender && ctx.block.height >= settle_height {
        return Err(error(
            ErrorCode::NotChallengeable,
            format!("job {id}'s challenge window closed at height {settle_height}"),
        ));
    }
    if job
        .result
        .as_ref()
        .is_some_and(|r| r.trace_root == *trace_root && r.input_units == 0)
    {
        return Err(error(
            ErrorCode::NotChallengeable,
            "the challenge's trace root equals the result's, which states no prompt count",
        ));
    }
    let bond = params(state).challenge_bond;
    let balance = bank::account(state, &ctx.sender).balance;
    if balance < bond {
        return Err(error(
            ErrorCode::InsufficientFunds,
            format!(
                "the challenge bond is {bond} PZA; {} holds {balance} PZA",
                ctx.sender
            ),
        ));
    }
    Ok(())
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
    trace_root: &Hash,
    step_count: &u64,
    ids: &Hash,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let block = ctx.block.clone();
    let p = params(state);
    let job = compute::job(state, *id).ok_or_else(|| no_dispute(*id))?;
    let result = job.result.clone().expect("posted jobs have a result");
    bank::transfer(state, &sender, &escrow(), p.challenge_bond)?;
    if let Some(Hold::Audit { auditor: a, .. }) = hold(state, *id) {
        remove_task(state, &a, *id);
        if let Some(mut record) = auditor(state, &a) {
            record.challenged += u64::from(a == sender);
            state.put(state_key::auditor(&a), &record);
        }
    }
    let defendant = Party {
        address: job.provider().expect("posted jobs have a provider"),
        job: *id,
        root: result.trace_root,
        step_count: 0,
        ids: Hash::ZERO,
        bond: Amount::ZERO,
        is_provider: true,
    };
    let claimant = Party {
        address: sender,
        job: *id,
        root: *trace_root,
        step_count: *step_count,
        ids: *ids,
        bond: p.challenge_bond,
        is_provider: false,
    };
    let count_only = defendant.root == claimant.root;
    open_dispute(state, *id, defendant, claimant, &block, &mut ctx.events)?;
    if count_only {
        // The same run: no rounds to play, only the count to check against the tokenizer.
        let d = dispute(state, *id).ok_or_else(|| no_dispute(*id))?;
        enter_input_phase(state, d, block.height, &mut ctx.events)?;
    }
    Ok(())
}

//! `Attest`: the drawn auditor vouches for a result, takes the auditor-pool share and leaves
//! the result open to challenges for a full window more.

use super::*;

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    job: &u64,
) -> Result<(), TxError> {
    match hold(state, *job) {
        Some(Hold::Audit { auditor, .. }) if auditor == ctx.sender => Ok(()),
        _ => Err(error(
            ErrorCode::NotAParty,
            format!("job {job} has no audit assigned to {}", ctx.sender),
        )),
    }
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    job: &u64,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let block = ctx.block.clone();
    state.put(state_key::attestation(*job), &sender);
    compute::pay_auditor_share_to(state, *job, &sender);
    // Anyone may still prove the attested result wrong for a full window.
    compute::extend_window(state, *job, block.height)?;
    remove_task(state, &sender, *job);
    if let Some(mut a) = auditor(state, &sender) {
        a.attested += 1;
        state.put(state_key::auditor(&sender), &a);
    }
    ctx.emit(Event::new(
        "verify.attested",
        &[("job", job.to_string()), ("auditor", sender.to_string())],
    ));
    release(state, *job, &block, &mut ctx.events);
    Ok(())
}

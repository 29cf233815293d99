//! Auditor registration: `RegisterAuditor`, `ExitAuditor`.

use super::*;

pub(super) fn check_register_stateless(models: &[String]) -> Result<(), TxError> {
    let mut sorted = models.to_vec();
    sorted.sort();
    sorted.dedup();
    if models.is_empty() || sorted.len() != models.len() {
        return Err(error(
            ErrorCode::InvalidMessage,
            format!("an auditor audits 1 to {AUDITOR_MODELS_MAX} distinct models"),
        ));
    }
    Ok(())
}

pub(super) fn check_register(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    names: &[String],
) -> Result<(), TxError> {
    if auditor(state, &ctx.sender).is_some() {
        return Err(error(
            ErrorCode::AuditorExists,
            format!("{} is already an auditor", ctx.sender),
        ));
    }
    for name in names {
        models::record(state, name).ok_or_else(|| models::unknown(name))?;
        if auditors_of(state, name).len() >= AUDITORS_PER_MODEL_MAX {
            return Err(error(
                ErrorCode::InvalidMessage,
                format!("`{name}` already has {AUDITORS_PER_MODEL_MAX} auditors"),
            ));
        }
    }
    Ok(())
}

pub(super) fn check_exit(state: &StateDelta<'_>, ctx: &TxContext<'_>) -> Result<(), TxError> {
    auditor(state, &ctx.sender).ok_or_else(|| not_an_auditor(&ctx.sender))?;
    if !tasks(state, &ctx.sender).is_empty() {
        return Err(error(
            ErrorCode::InvalidMessage,
            "audits or disputes are still open; finish them first",
        ));
    }
    Ok(())
}

pub(super) fn execute_register(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    names: &[String],
    stake: &Amount,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let minimum = params(state).min_auditor_stake;
    let bonded = staking::bond_for_registration(
        state,
        &sender,
        Role::Auditor,
        *stake,
        minimum,
        "an auditor",
    )?;
    for name in names {
        let mut list = auditors_of(state, name);
        if let Err(at) = list.binary_search(&sender) {
            list.insert(at, sender);
        }
        state.put(
            state_key::auditing(name),
            &List::<Address, AUDITORS_PER_MODEL_MAX>(list),
        );
    }
    state.put(
        state_key::auditor(&sender),
        &Auditor {
            address: sender,
            models: names.to_vec(),
            attested: 0,
            challenged: 0,
            missed: 0,
            disproven: 0,
        },
    );
    ctx.emit(Event::new(
        "verify.auditor_registered",
        &[
            ("auditor", sender.to_string()),
            ("stake", bonded.base_units().to_string()),
        ],
    ));
    Ok(())
}

pub(super) fn execute_exit(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let block = ctx.block.clone();
    let a = auditor(state, &sender).ok_or_else(|| not_an_auditor(&sender))?;
    for name in &a.models {
        let mut list = auditors_of(state, name);
        if let Ok(at) = list.binary_search(&sender) {
            list.remove(at);
        }
        state.put(
            state_key::auditing(name),
            &List::<Address, AUDITORS_PER_MODEL_MAX>(list),
        );
    }
    state.delete(state_key::auditor(&sender));
    let bonded = staking::bonded(state, &sender, Role::Auditor);
    if !bonded.is_zero() {
        staking::unbond(state, &block, &sender, Role::Auditor, bonded)?;
    }
    ctx.emit(Event::new(
        "verify.auditor_exited",
        &[("auditor", sender.to_string())],
    ));
    Ok(())
}

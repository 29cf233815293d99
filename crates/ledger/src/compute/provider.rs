//! Provider registration: `RegisterProvider`, `UpdateProvider`, `ExitProvider`.

use super::{
    invalid, not_a_provider, params, provider, providers_serving, state_key, Offer, Provider,
};
use super::{
    PROVIDERS_PER_MODEL_MAX, PROVIDER_CAPACITY_MAX, PROVIDER_MODELS_MAX, UNITS_PER_BLOCK_MAX,
};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::list::List;
use crate::models;
use crate::module::TxContext;
use crate::staking::{self, Role};
use crate::state::StateDelta;
use piazza_primitives::{Address, Amount};

pub(super) fn check_offer(offer: &Offer) -> Result<(), TxError> {
    if offer.models.is_empty() || offer.models.len() > PROVIDER_MODELS_MAX {
        return Err(invalid(format!(
            "a provider serves 1 to {PROVIDER_MODELS_MAX} models"
        )));
    }
    if offer.capacity == 0 || offer.capacity > PROVIDER_CAPACITY_MAX {
        return Err(invalid(format!(
            "capacity must be 1 to {PROVIDER_CAPACITY_MAX}"
        )));
    }
    if offer.units_per_block == 0 || offer.units_per_block > UNITS_PER_BLOCK_MAX {
        return Err(invalid(format!(
            "units_per_block (the declared speed) must be 1 to {UNITS_PER_BLOCK_MAX}"
        )));
    }
    let mut sorted = offer.models.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != offer.models.len() {
        return Err(invalid("a model is listed twice"));
    }
    Ok(())
}

fn check_offer_stateful(state: &StateDelta<'_>, offer: &Offer) -> Result<(), TxError> {
    for name in &offer.models {
        let record = models::record(state, name).ok_or_else(|| models::unknown(name))?;
        if models::retired(state, name) {
            return Err(TxError::new(
                ErrorCode::UnknownModel,
                format!("`{name}` is retired; it takes no new providers"),
            ));
        }
        if offer.price_per_unit < record.price_floor {
            return Err(invalid(format!(
                "`{name}` has a price floor of {} PZA per unit",
                record.price_floor
            )));
        }
        if providers_serving(state, name).len() >= PROVIDERS_PER_MODEL_MAX {
            return Err(invalid(format!(
                "`{name}` already has {PROVIDERS_PER_MODEL_MAX} providers"
            )));
        }
    }
    Ok(())
}

fn set_serving(state: &mut StateDelta<'_>, address: &Address, models: &[String], serve: bool) {
    for model in models {
        let mut list = providers_serving(state, model);
        match (list.binary_search(address), serve) {
            (Err(at), true) => list.insert(at, *address),
            (Ok(at), false) => {
                list.remove(at);
            }
            _ => {}
        }
        state.put(
            state_key::serving(model),
            &List::<Address, PROVIDERS_PER_MODEL_MAX>(list),
        );
    }
}

pub(super) fn check_register(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    offer: &Offer,
) -> Result<(), TxError> {
    if provider(state, &ctx.sender).is_some() {
        return Err(TxError::new(
            ErrorCode::ProviderExists,
            format!("{} is already a provider; update it instead", ctx.sender),
        ));
    }
    check_offer_stateful(state, offer)
}

pub(super) fn check_update(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    offer: &Offer,
) -> Result<(), TxError> {
    provider(state, &ctx.sender).ok_or_else(|| not_a_provider(&ctx.sender))?;
    check_offer_stateful(state, offer)
}

pub(super) fn check_exit(state: &StateDelta<'_>, ctx: &TxContext<'_>) -> Result<(), TxError> {
    let p = provider(state, &ctx.sender).ok_or_else(|| not_a_provider(&ctx.sender))?;
    if p.active_jobs > 0 {
        return Err(invalid(format!(
            "{} jobs are still assigned; finish them first",
            p.active_jobs
        )));
    }
    if p.unsettled > 0 {
        return Err(invalid(format!(
            "{} results are still open to challenges or held; exit once they settle",
            p.unsettled
        )));
    }
    Ok(())
}

pub(super) fn execute_register(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    offer: &Offer,
    stake: &Amount,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let minimum = params(state).min_provider_stake;
    let bonded = staking::bond_for_registration(
        state,
        &sender,
        Role::Provider,
        *stake,
        minimum,
        "a provider",
    )?;
    set_serving(state, &sender, &offer.models, true);
    state.put(
        state_key::provider(&sender),
        &Provider {
            address: sender,
            offer: offer.clone(),
            active_jobs: 0,
            jobs_completed: 0,
            deadlines_missed: 0,
            frauds: 0,
            unsettled: 0,
        },
    );
    ctx.emit(Event::new(
        "compute.provider_registered",
        &[
            ("provider", sender.to_string()),
            ("stake", bonded.base_units().to_string()),
        ],
    ));
    Ok(())
}

pub(super) fn execute_update(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    offer: &Offer,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let mut p = provider(state, &sender).ok_or_else(|| not_a_provider(&sender))?;
    set_serving(state, &sender, &p.offer.models, false);
    set_serving(state, &sender, &offer.models, true);
    p.offer = offer.clone();
    state.put(state_key::provider(&sender), &p);
    ctx.emit(Event::new(
        "compute.provider_updated",
        &[("provider", sender.to_string())],
    ));
    Ok(())
}

pub(super) fn execute_exit(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let p = provider(state, &sender).ok_or_else(|| not_a_provider(&sender))?;
    set_serving(state, &sender, &p.offer.models, false);
    state.delete(state_key::provider(&sender));
    state.delete(state_key::assigned(&sender));
    let bonded = staking::bonded(state, &sender, Role::Provider);
    let release = if bonded.is_zero() {
        ctx.block.height
    } else {
        staking::unbond(state, ctx.block, &sender, Role::Provider, bonded)?
    };
    ctx.emit(Event::new(
        "compute.provider_exited",
        &[
            ("provider", sender.to_string()),
            ("unbonding", bonded.base_units().to_string()),
            ("release_height", release.to_string()),
        ],
    ));
    Ok(())
}

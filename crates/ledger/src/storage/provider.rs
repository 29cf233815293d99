//! Storage provider registration: `RegisterProvider`, `UpdateProvider`, `ExitProvider`.

use super::*;
use crate::staking::{self, Role};

pub(super) fn check_stateless(capacity_bytes: &u64, endpoint: &str) -> Result<(), TxError> {
    if *capacity_bytes == 0 {
        return Err(invalid("a storage provider offers a positive capacity"));
    }
    if endpoint.is_empty() || endpoint.len() > ENDPOINT_BYTES_MAX {
        return Err(invalid(format!(
            "a storage provider's endpoint is 1 to {ENDPOINT_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

pub(super) fn check_register(state: &StateDelta<'_>, ctx: &TxContext<'_>) -> Result<(), TxError> {
    if provider(state, &ctx.sender).is_some() {
        return Err(error(
            ErrorCode::StorageProviderExists,
            format!(
                "{} is already a storage provider; update it instead",
                ctx.sender
            ),
        ));
    }
    let registry: List<Address, STORAGE_PROVIDERS_MAX> = List(providers(state));
    if registry.is_full() {
        return Err(error(
            ErrorCode::QueueFull,
            format!("the storage registry holds {STORAGE_PROVIDERS_MAX} providers"),
        ));
    }
    Ok(())
}

pub(super) fn check_update(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    capacity_bytes: &u64,
) -> Result<(), TxError> {
    let p = provider(state, &ctx.sender).ok_or_else(|| not_a_provider(&ctx.sender))?;
    if *capacity_bytes < p.used_bytes {
        return Err(error(
            ErrorCode::StorageProviderBusy,
            format!(
                "{} holds {} shard bytes; its capacity cannot go below that",
                ctx.sender, p.used_bytes
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_exit(state: &StateDelta<'_>, ctx: &TxContext<'_>) -> Result<(), TxError> {
    provider(state, &ctx.sender).ok_or_else(|| not_a_provider(&ctx.sender))?;
    let held = provider_shards(state, &ctx.sender).len();
    if held > 0 {
        return Err(error(
            ErrorCode::StorageProviderBusy,
            format!(
                "{} still holds {held} shards; exit once their deals end",
                ctx.sender
            ),
        ));
    }
    Ok(())
}

pub(super) fn execute_register(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    stake: &Amount,
    capacity_bytes: &u64,
    endpoint: &str,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let minimum = params(state).min_provider_stake;
    let bonded = staking::bond_for_registration(
        state,
        &sender,
        Role::Storage,
        *stake,
        minimum,
        "a storage provider",
    )?;
    let mut registry: List<Address, STORAGE_PROVIDERS_MAX> = List(providers(state));
    registry
        .insert_sorted(sender)
        .map_err(|full| full.refusal("the storage registry"))?;
    state.put(state_key::providers(), &registry);
    put_provider(
        state,
        &StorageProvider {
            address: sender,
            capacity_bytes: *capacity_bytes,
            used_bytes: 0,
            endpoint: endpoint.to_owned(),
            proofs: 0,
            failures: 0,
        },
    );
    ctx.emit(Event::new(
        "storage.provider_registered",
        &[
            ("provider", sender.to_string()),
            ("stake", amount_text(bonded)),
            ("capacity_bytes", capacity_bytes.to_string()),
        ],
    ));
    Ok(())
}

pub(super) fn execute_update(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    capacity_bytes: &u64,
    endpoint: &str,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let mut p = provider(state, &sender).ok_or_else(|| not_a_provider(&sender))?;
    p.capacity_bytes = *capacity_bytes;
    p.endpoint = endpoint.to_owned();
    put_provider(state, &p);
    ctx.emit(Event::new(
        "storage.provider_updated",
        &[
            ("provider", sender.to_string()),
            ("capacity_bytes", capacity_bytes.to_string()),
        ],
    ));
    Ok(())
}

pub(super) fn execute_exit(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let mut registry: List<Address, STORAGE_PROVIDERS_MAX> = List(providers(state));
    registry.remove_sorted(&sender);
    state.put(state_key::providers(), &registry);
    state.delete(state_key::provider(&sender));
    state.delete(state_key::provider_shards(&sender));
    let bonded = staking::bonded(state, &sender, Role::Storage);
    let release = if bonded.is_zero() {
        ctx.block.height
    } else {
        staking::unbond(state, ctx.block, &sender, Role::Storage, bonded)?
    };
    ctx.emit(Event::new(
        "storage.provider_exited",
        &[
            ("provider", sender.to_string()),
            ("unbonding", amount_text(bonded)),
            ("release_height", release.to_string()),
        ],
    ));
    Ok(())
}

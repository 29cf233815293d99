//! Dataset records, access purchases and sealed content keys.

use super::types::{Access, Dataset};
use super::{next_id, state_key, SEALED_KEY_BYTES_MAX};
use crate::bank::assets::{self, AssetId};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::TxContext;
use crate::state::StateDelta;
use piazza_primitives::Address;

pub(super) fn unknown(id: u64) -> TxError {
    TxError::new(ErrorCode::UnknownDataset, format!("no dataset {id}"))
}

/// Stores a dataset under the next id and registers its share asset (forwarding to its pool's
/// weights when it has one).
pub(super) fn register(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    record: Dataset,
) -> Result<u64, TxError> {
    let id = next_id(state, state_key::next_dataset());
    let forward = record.pool.map(AssetId::Pool);
    assets::register(state, &AssetId::Dataset(id), record.owner, forward)?;
    state.put(state_key::dataset(id), &record);
    ctx.emit(Event::new(
        "data.dataset_registered",
        &[
            ("dataset", id.to_string()),
            ("owner", record.owner.to_string()),
            ("blob", record.blob.to_string()),
        ],
    ));
    Ok(id)
}

pub(super) fn buy(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: u64,
) -> Result<(), TxError> {
    let record = super::dataset(state, id).ok_or_else(|| unknown(id))?;
    if super::access(state, id, &ctx.sender).is_some() {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            format!("{} already has access to dataset {id}", ctx.sender),
        ));
    }
    let payee = assets::pay(
        state,
        &ctx.sender,
        &AssetId::Dataset(id),
        record.price,
        &record.owner,
    )?;
    state.put(
        state_key::access(id, &ctx.sender),
        &Access {
            paid: record.price,
            height: ctx.block.height,
            sealed_key: None,
        },
    );
    let to = match payee {
        assets::Payee::Holders(asset) => asset.to_string(),
        assets::Payee::Account(account) => account.to_string(),
    };
    ctx.emit(Event::new(
        "data.access_bought",
        &[
            ("dataset", id.to_string()),
            ("buyer", ctx.sender.to_string()),
            ("price", record.price.base_units().to_string()),
            ("paid_to", to),
        ],
    ));
    Ok(())
}

pub(super) fn seal(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: u64,
    buyer: &Address,
    sealed_key: &[u8],
) -> Result<(), TxError> {
    let record = super::dataset(state, id).ok_or_else(|| unknown(id))?;
    if record.owner != ctx.sender {
        return Err(TxError::new(
            ErrorCode::NotAssetOwner,
            format!("only its owner {} seals dataset {id}'s key", record.owner),
        ));
    }
    let mut access = super::access(state, id, buyer).ok_or_else(|| {
        TxError::new(
            ErrorCode::InvalidMessage,
            format!("{buyer} has not bought dataset {id}"),
        )
    })?;
    if !record.encrypted || sealed_key.is_empty() || sealed_key.len() > SEALED_KEY_BYTES_MAX {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            format!("a sealed key is 1-{SEALED_KEY_BYTES_MAX} bytes, for an encrypted dataset"),
        ));
    }
    access.sealed_key = Some(sealed_key.to_vec());
    state.put(state_key::access(id, buyer), &access);
    ctx.emit(Event::new(
        "data.key_sealed",
        &[("dataset", id.to_string()), ("buyer", buyer.to_string())],
    ));
    Ok(())
}

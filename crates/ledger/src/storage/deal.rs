//! `OpenDeal` and `EndDeal`: an owner escrows the price of keeping a blob for some epochs, and
//! may end the deal early (at its next epoch) to get back what was not paid.

use super::*;
use crate::bank;
use crate::list;
use piazza_primitives::blob;

fn bad_blob(message: impl Into<String>) -> TxError {
    error(ErrorCode::BadBlobRecord, message)
}

pub(super) fn check_stateless(record: &BlobRecord, epochs: &u64) -> Result<(), TxError> {
    if record.k == 0 || record.m == 0 {
        return Err(bad_blob(
            "a blob has at least one data and one parity shard",
        ));
    }
    let shards = record.shard_count();
    if shards > SHARDS_PER_DEAL_MAX {
        return Err(bad_blob(format!(
            "a blob has at most {SHARDS_PER_DEAL_MAX} shards, not {shards}"
        )));
    }
    if record.shard_roots.len() != shards {
        return Err(bad_blob(format!(
            "{} shard roots for k + m = {shards} shards",
            record.shard_roots.len()
        )));
    }
    if record.len_bytes == 0 || record.len_bytes > BLOB_BYTES_MAX {
        return Err(bad_blob(format!(
            "a kept blob is 1 to {BLOB_BYTES_MAX} bytes, not {}",
            record.len_bytes
        )));
    }
    let expected = blob::shard_len(record.len_bytes, record.k);
    if expected != Some(record.shard_len) {
        return Err(bad_blob(format!(
            "a {}-byte blob in {} data shards has shards of {} bytes, not {}",
            record.len_bytes,
            record.k,
            expected.unwrap_or(0),
            record.shard_len
        )));
    }
    if *epochs == 0 || *epochs > DEAL_EPOCHS_MAX {
        return Err(invalid(format!(
            "a deal lasts 1 to {DEAL_EPOCHS_MAX} epochs, not {epochs}"
        )));
    }
    Ok(())
}

/// What a deal for `record` over `epochs` escrows at `price_per_byte_epoch`.
pub fn deal_escrow(
    record: &BlobRecord,
    epochs: u64,
    price_per_byte_epoch: Amount,
) -> Option<Amount> {
    let byte_epochs = u128::from(record.stored_bytes()?).checked_mul(u128::from(epochs))?;
    price_per_byte_epoch.checked_mul(byte_epochs)
}

pub(super) fn check_open(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    record: &BlobRecord,
    epochs: &u64,
) -> Result<Amount, TxError> {
    if let Some(id) = deal_of_blob(state, &record.id) {
        return Err(error(
            ErrorCode::BlobKept,
            format!("blob {} is kept by deal {id}", record.id),
        ));
    }
    if deals_of_owner(state, &ctx.sender).len() >= DEALS_PER_OWNER_MAX {
        return Err(error(
            ErrorCode::QueueFull,
            format!(
                "{} already has {DEALS_PER_OWNER_MAX} deals; end one first",
                ctx.sender
            ),
        ));
    }
    let active: u64 = state.get(&state_key::active_count()).unwrap_or(0);
    if active >= ACTIVE_DEALS_MAX as u64 {
        return Err(error(
            ErrorCode::QueueFull,
            format!("the chain keeps {ACTIVE_DEALS_MAX} deals; try again later"),
        ));
    }
    let registered = providers(state).len();
    if registered < record.shard_count() {
        return Err(error(
            ErrorCode::NoProvider,
            format!(
                "{registered} storage providers for {} shards that need distinct ones",
                record.shard_count()
            ),
        ));
    }
    let escrow =
        deal_escrow(record, *epochs, params(state).price_per_byte_epoch).ok_or_else(overflow)?;
    let balance = bank::account(state, &ctx.sender).balance;
    if balance < escrow {
        return Err(error(
            ErrorCode::InsufficientFunds,
            format!(
                "{} holds {balance} PZA, the deal escrows {escrow} PZA",
                ctx.sender
            ),
        ));
    }
    Ok(escrow)
}

pub(super) fn execute_open(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    record: &BlobRecord,
    epochs: &u64,
) -> Result<(), TxError> {
    let escrow_amount = check_open(state, ctx, record, epochs)?;
    let sender = ctx.sender;
    let id: u64 = state.get(&state_key::next_deal()).unwrap_or(0);
    bank::transfer(state, &sender, &escrow(), escrow_amount)?;
    list::push::<ACTIVE_DEALS_MAX>(state, state_key::pending(), id)
        .map_err(|full| full.refusal("the storage assignment queue"))?;
    let mut mine: List<u64, DEALS_PER_OWNER_MAX> = List(deals_of_owner(state, &sender));
    mine.insert_sorted(id)
        .map_err(|full| full.refusal("the owner's deal list"))?;
    state.put(state_key::of_owner(&sender), &mine);
    let active: u64 = state.get(&state_key::active_count()).unwrap_or(0);
    state.put(state_key::active_count(), &(active + 1));
    state.put(state_key::blob(&record.id), &id);
    state.put(state_key::next_deal(), &(id + 1));
    let deal = Deal {
        id,
        owner: sender,
        blob: record.clone(),
        epochs: *epochs,
        price_per_byte_epoch: params(state).price_per_byte_epoch,
        escrow: escrow_amount,
        paid: Amount::ZERO,
        opened_height: ctx.block.height,
        epochs_done: 0,
        next_epoch_height: 0,
        end_requested: false,
        status: DealStatus::Pending,
        refunded: Amount::ZERO,
        shards: vec![Shard::default(); record.shard_count()],
    };
    put_deal(state, &deal);
    ctx.emit(Event::new(
        "storage.deal_opened",
        &[
            ("deal", id.to_string()),
            ("owner", sender.to_string()),
            ("blob", record.id.to_string()),
            ("len_bytes", record.len_bytes.to_string()),
            ("k", record.k.to_string()),
            ("m", record.m.to_string()),
            ("epochs", epochs.to_string()),
            ("escrow", amount_text(escrow_amount)),
        ],
    ));
    Ok(())
}

/// Deal `id`, refused unless the sender owns it.
fn owned(state: &StateDelta<'_>, ctx: &TxContext<'_>, id: &u64) -> Result<Deal, TxError> {
    let deal = existing(state, *id)?;
    if deal.owner != ctx.sender {
        return Err(error(
            ErrorCode::NotDealOwner,
            format!("{} does not own deal {id}", ctx.sender),
        ));
    }
    Ok(deal)
}

/// Deal `id`, refused unless the sender owns it and it is active and not ending.
fn active_owned(state: &StateDelta<'_>, ctx: &TxContext<'_>, id: &u64) -> Result<Deal, TxError> {
    let deal = owned(state, ctx, id)?;
    if deal.status != DealStatus::Active || deal.end_requested {
        return Err(error(
            ErrorCode::DealClosed,
            format!("deal {id} is not active, or already ending"),
        ));
    }
    Ok(deal)
}

pub(super) fn check_end(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    id: &u64,
) -> Result<Deal, TxError> {
    active_owned(state, ctx, id)
}

pub(super) fn execute_end(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
) -> Result<(), TxError> {
    let mut deal = check_end(state, ctx, id)?;
    deal.end_requested = true;
    put_deal(state, &deal);
    ctx.emit(Event::new(
        "storage.deal_ending",
        &[
            ("deal", id.to_string()),
            ("end_height", deal.next_epoch_height.to_string()),
        ],
    ));
    Ok(())
}

/// A confirmation is taken while the deal is active, has had no epoch, and its first epoch is
/// still later than the next block.
pub(super) fn check_confirm(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    id: &u64,
) -> Result<Deal, TxError> {
    let deal = active_owned(state, ctx, id)?;
    if deal.epochs_done > 0 || deal.next_epoch_height <= ctx.block.height.saturating_add(1) {
        return Err(error(
            ErrorCode::DealStarted,
            format!(
                "deal {id}'s epochs have started (first epoch at height {})",
                deal.next_epoch_height
            ),
        ));
    }
    Ok(deal)
}

pub(super) fn execute_confirm(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
) -> Result<(), TxError> {
    let mut deal = check_confirm(state, ctx, id)?;
    let first = super::lifecycle::reschedule_epoch(state, &mut deal, ctx.block.height + 1)
        .ok_or_else(|| {
            error(
                ErrorCode::QueueFull,
                format!("no room to schedule deal {id}'s first epoch"),
            )
        })?;
    put_deal(state, &deal);
    ctx.emit(Event::new(
        "storage.upload_confirmed",
        &[
            ("deal", id.to_string()),
            ("first_epoch_height", first.to_string()),
        ],
    ));
    Ok(())
}

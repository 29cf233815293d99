//! `storage`: blob storage deals (DESIGN.md §6). Storage providers register with a `storage`
//! bond and a capacity; an owner opens a deal for a blob record (its id, length and erasure
//! layout with one chunk Merkle root per shard, `piazza_primitives::blob`) and escrows
//! `shard_len × (k + m) × epochs × price_per_byte_epoch`; a later block's randomness assigns the
//! `k + m` shards to distinct providers, stake-weighted. Every epoch that block's randomness
//! picks one chunk of every held shard; the holder answers with the chunk and its Merkle path
//! before the deadline and is paid the shard's epoch price. A missed or wrong answer on a shard
//! its holder had proven slashes the holder (the slash becomes the shard's repair bounty),
//! stops its pay and queues the shard for another provider, which rebuilds it from any `k`
//! others and is paid the bounty when it proves it. The deal's end refunds what was not paid.
//!
//! Invariants:
//! - The escrow account holds exactly `escrow − paid` of every deal not ended plus every
//!   unpaid bounty; per deal, `paid + refunded = escrow` once it ends.
//! - Every correct epoch proof pays once; a deal pays at most `(k + m) × epochs` of them.
//! - Assignment and challenges use the randomness of a block after the message that caused
//!   them; the shards of one deal are held by distinct providers.
//! - A holder is slashed only for a shard it has proven once (before that it may never have
//!   received it: a client cannot make providers lose stake by committing roots it never
//!   uploads).
//! - A challenge proves possession of the sampled chunk at that moment, not that the holders
//!   keep distinct copies (DESIGN.md §6).
//! - Every list and queue is bounded; a full one refuses the transaction, and a hook that
//!   cannot queue leaves the work recorded on the deal for its next epoch.

mod answer;
mod deal;
mod lifecycle;
mod msg;
mod provider;
pub mod state_key;
pub mod types;

pub use deal::deal_escrow;
pub use msg::{Msg, ANSWERS_PER_TX_MAX, ANSWER_BYTES_MAX, TX_ENVELOPE_BYTES_MAX};
pub use types::*;

use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::list::List;
use crate::module::{BlockContext, GenesisError, Module, TxContext};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};

/// The storage module's tag in a transaction's message encoding.
pub const MODULE_TAG: u8 = 40;
/// Most shards (`k + m`) of one deal.
pub const SHARDS_PER_DEAL_MAX: usize = 32;
/// Longest blob a deal may keep (1 TiB).
pub const BLOB_BYTES_MAX: u64 = 1 << 40;
/// Longest deal, in epochs.
pub const DEAL_EPOCHS_MAX: u64 = 1_000_000;
/// Most deals one owner may have that have not ended.
pub const DEALS_PER_OWNER_MAX: usize = 64;
/// Most deals on the chain that have not ended; also the bound of each per-height list, so
/// scheduling an epoch or a deadline never finds its list full.
pub const ACTIVE_DEALS_MAX: usize = 1024;
/// Most shards one provider holds.
pub const SHARDS_PER_PROVIDER_MAX: usize = 1024;
/// Most registered storage providers.
pub const STORAGE_PROVIDERS_MAX: usize = 1024;
/// Most shards waiting for a new provider; a shard that finds the queue full waits for its
/// deal's next epoch.
pub const REPAIRS_QUEUE_MAX: usize = 1024;
/// Times one shard may be assigned; after that it stays unkept and its pay is refunded.
pub const ASSIGNMENTS_PER_SHARD_MAX: u8 = 16;
/// Longest provider endpoint, in bytes.
pub const ENDPOINT_BYTES_MAX: usize = 256;

/// The account that escrows every deal and holds repair bounties.
pub fn escrow() -> Address {
    Address::module("storage")
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// The least `storage` bond a provider needs to register and to be assigned shards.
    pub min_provider_stake: Amount,
    /// What one byte of one shard costs for one epoch.
    pub price_per_byte_epoch: Amount,
    /// Blocks per epoch: every held shard is challenged once an epoch.
    pub epoch_blocks: u64,
    /// Blocks a holder has to answer an epoch challenge (less than `epoch_blocks`).
    pub answer_blocks: u64,
    /// Blocks between assignment and a deal's first epoch, for the owner's upload; an owner
    /// that confirms its upload (`ConfirmUpload`) starts the first epoch at once.
    pub upload_blocks: u64,
    /// Blocks a new holder has to rebuild a shard and answer its repair challenge.
    pub repair_blocks: u64,
    /// Taken from a holder's bond when it misses or fails a challenge on a proven shard; it
    /// becomes the shard's repair bounty.
    pub missed_proof_slash: Amount,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_provider_stake: Amount::pza(100),
            price_per_byte_epoch: Amount::new(1),
            epoch_blocks: 10,
            answer_blocks: 5,
            upload_blocks: 600,
            repair_blocks: 30,
            missed_proof_slash: Amount::pza(10),
        }
    }
}

/// The block interval the default windows are counted for.
pub const DEFAULT_BLOCK_INTERVAL_MS: u64 = 1_000;

impl Params {
    /// The defaults with each window (epoch, answer, upload, repair) kept at least as long in
    /// time as at [`DEFAULT_BLOCK_INTERVAL_MS`]: faster blocks give more blocks, never less
    /// time to upload, answer or repair.
    pub fn for_block_interval_ms(block_interval_ms: u64) -> Params {
        let base = Params::default();
        let scale = |blocks: u64| -> u64 {
            let ms = blocks.saturating_mul(DEFAULT_BLOCK_INTERVAL_MS);
            ms.div_ceil(block_interval_ms.max(1)).max(blocks)
        };
        Params {
            epoch_blocks: scale(base.epoch_blocks),
            answer_blocks: scale(base.answer_blocks),
            upload_blocks: scale(base.upload_blocks),
            repair_blocks: scale(base.repair_blocks),
            ..base
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.epoch_blocks == 0
            || self.answer_blocks == 0
            || self.upload_blocks == 0
            || self.repair_blocks == 0
        {
            return Err("storage epoch, answer, upload and repair blocks must be positive".into());
        }
        if self.answer_blocks >= self.epoch_blocks {
            return Err("storage answer blocks must be fewer than the epoch's blocks".into());
        }
        if self.price_per_byte_epoch.is_zero() {
            return Err("storage price per byte and epoch must be positive".into());
        }
        Ok(())
    }
}

impl Encode for Params {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.min_provider_stake);
        w.value(&self.price_per_byte_epoch);
        w.u64(self.epoch_blocks);
        w.u64(self.answer_blocks);
        w.u64(self.upload_blocks);
        w.u64(self.repair_blocks);
        w.value(&self.missed_proof_slash);
    }
}

impl Decode for Params {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Params {
            min_provider_stake: r.value()?,
            price_per_byte_epoch: r.value()?,
            epoch_blocks: r.u64()?,
            answer_blocks: r.u64()?,
            upload_blocks: r.u64()?,
            repair_blocks: r.u64()?,
            missed_proof_slash: r.value()?,
        })
    }
}

pub fn params(state: &StateDelta<'_>) -> Params {
    state
        .get(&state_key::params())
        .expect("storage params are written at genesis")
}

pub fn provider(state: &StateDelta<'_>, address: &Address) -> Option<StorageProvider> {
    state.get(&state_key::provider(address))
}

/// Every registered storage provider, sorted by address.
pub fn providers(state: &StateDelta<'_>) -> Vec<Address> {
    state
        .get::<List<Address, STORAGE_PROVIDERS_MAX>>(&state_key::providers())
        .unwrap_or_default()
        .0
}

/// The shards `address` holds now.
pub fn provider_shards(state: &StateDelta<'_>, address: &Address) -> Vec<ShardRef> {
    state
        .get::<List<ShardRef, SHARDS_PER_PROVIDER_MAX>>(&state_key::provider_shards(address))
        .unwrap_or_default()
        .0
}

pub fn deal(state: &StateDelta<'_>, id: u64) -> Option<Deal> {
    state.get(&state_key::deal(id))
}

/// The deal keeping blob `id` now, if any.
pub fn deal_of_blob(state: &StateDelta<'_>, id: &Hash) -> Option<u64> {
    state.get(&state_key::blob(id))
}

/// The deals of `owner` that have not ended.
pub fn deals_of_owner(state: &StateDelta<'_>, owner: &Address) -> Vec<u64> {
    state
        .get::<List<u64, DEALS_PER_OWNER_MAX>>(&state_key::of_owner(owner))
        .unwrap_or_default()
        .0
}

/// An open challenge on a shard `provider` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenChallenge {
    pub deal: u64,
    pub shard: u16,
    pub blob: Hash,
    pub shard_root: Hash,
    pub shard_len: u64,
    pub challenge: Challenge,
}

/// The open challenges on the shards `provider` holds, in (deal, shard) order.
pub fn challenges_of(state: &StateDelta<'_>, provider: &Address) -> Vec<OpenChallenge> {
    let mut open = Vec::new();
    for shard_ref in provider_shards(state, provider) {
        let Some(d) = deal(state, shard_ref.deal) else {
            continue;
        };
        let index = usize::from(shard_ref.shard);
        let (Some(shard), Some(root)) = (d.shards.get(index), d.blob.shard_roots.get(index)) else {
            continue;
        };
        if shard.provider != Some(*provider) {
            continue;
        }
        if let Some(challenge) = &shard.challenge {
            open.push(OpenChallenge {
                deal: d.id,
                shard: shard_ref.shard,
                blob: d.blob.id,
                shard_root: *root,
                shard_len: d.blob.shard_len,
                challenge: challenge.clone(),
            });
        }
    }
    open
}

fn error(code: ErrorCode, message: impl Into<String>) -> TxError {
    TxError::new(code, message)
}

fn invalid(message: impl Into<String>) -> TxError {
    error(ErrorCode::InvalidMessage, message)
}

fn overflow() -> TxError {
    error(ErrorCode::Overflow, "storage amount arithmetic overflow")
}

fn not_a_provider(address: &Address) -> TxError {
    error(
        ErrorCode::NotAStorageProvider,
        format!("{address} is not a storage provider"),
    )
}

/// The deal `id`, or `unknown_deal`.
fn existing(state: &StateDelta<'_>, id: u64) -> Result<Deal, TxError> {
    deal(state, id).ok_or_else(|| error(ErrorCode::UnknownDeal, format!("no deal {id}")))
}

fn put_deal(state: &mut StateDelta<'_>, deal: &Deal) {
    state.put(state_key::deal(deal.id), deal);
}

fn put_provider(state: &mut StateDelta<'_>, provider: &StorageProvider) {
    state.put(state_key::provider(&provider.address), provider);
}

fn amount_text(amount: Amount) -> String {
    amount.base_units().to_string()
}

pub struct Storage;

impl Module for Storage {
    type Msg = Msg;
    type Genesis = Params;
    const NAME: &'static str = "storage";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::RegisterProvider { .. } => 100,
            Msg::UpdateProvider { .. }
            | Msg::ExitProvider
            | Msg::EndDeal { .. }
            | Msg::ConfirmUpload { .. } => 50,
            // A unit per shard: each is an assignment draw and a challenge every epoch.
            Msg::OpenDeal { blob, .. } => 200 + 10 * blob.shard_roots.len() as u64,
            Msg::AnswerChallenge { .. } => 50,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::RegisterProvider {
                capacity_bytes,
                endpoint,
                ..
            }
            | Msg::UpdateProvider {
                capacity_bytes,
                endpoint,
            } => provider::check_stateless(capacity_bytes, endpoint),
            Msg::ExitProvider | Msg::EndDeal { .. } | Msg::ConfirmUpload { .. } => Ok(()),
            Msg::OpenDeal { blob, epochs } => deal::check_stateless(blob, epochs),
            Msg::AnswerChallenge { chunk, .. } => answer::check_stateless(chunk),
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::RegisterProvider { .. } => provider::check_register(state, ctx),
            Msg::UpdateProvider { capacity_bytes, .. } => {
                provider::check_update(state, ctx, capacity_bytes)
            }
            Msg::ExitProvider => provider::check_exit(state, ctx),
            Msg::OpenDeal { blob, epochs } => {
                deal::check_open(state, ctx, blob, epochs).map(|_| ())
            }
            Msg::EndDeal { deal } => deal::check_end(state, ctx, deal).map(|_| ()),
            Msg::ConfirmUpload { deal } => deal::check_confirm(state, ctx, deal).map(|_| ()),
            Msg::AnswerChallenge {
                deal,
                shard,
                chunk_index,
                ..
            } => answer::check_stateful(state, ctx, deal, shard, chunk_index).map(|_| ()),
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::RegisterProvider {
                stake,
                capacity_bytes,
                endpoint,
            } => provider::execute_register(state, ctx, stake, capacity_bytes, endpoint),
            Msg::UpdateProvider {
                capacity_bytes,
                endpoint,
            } => provider::execute_update(state, ctx, capacity_bytes, endpoint),
            Msg::ExitProvider => provider::execute_exit(state, ctx),
            Msg::OpenDeal { blob, epochs } => deal::execute_open(state, ctx, blob, epochs),
            Msg::EndDeal { deal } => deal::execute_end(state, ctx, deal),
            Msg::ConfirmUpload { deal } => deal::execute_confirm(state, ctx, deal),
            Msg::AnswerChallenge {
                deal,
                shard,
                chunk_index,
                chunk,
                path,
            } => answer::execute(state, ctx, deal, shard, chunk_index, chunk, path),
        }
    }

    fn init_chain(state: &mut StateDelta<'_>, params: &Params) -> Result<(), GenesisError> {
        params.validate().map_err(GenesisError::Invalid)?;
        state.put(state_key::params(), params);
        Ok(())
    }

    /// Assigns the shards of deals opened in earlier blocks and the shards waiting for repair,
    /// then starts the epochs due here (challenges, or the deal's end), all with this block's
    /// randomness.
    fn begin_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        lifecycle::assign_pending(state, block, events);
        lifecycle::assign_repairs(state, block, events);
        lifecycle::epochs(state, block, events);
    }

    /// Fails the challenges whose deadline is this block and that were not answered.
    fn end_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        lifecycle::deadlines(state, block, events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faster_blocks_keep_the_windows_long_in_time() {
        let base = Params::default();
        let fast = Params::for_block_interval_ms(100);
        assert_eq!(fast.epoch_blocks, base.epoch_blocks * 10);
        assert_eq!(fast.answer_blocks, base.answer_blocks * 10);
        assert_eq!(fast.upload_blocks, base.upload_blocks * 10);
        assert_eq!(fast.repair_blocks, base.repair_blocks * 10);
        assert_eq!(fast.missed_proof_slash, base.missed_proof_slash);
        assert!(fast.validate().is_ok());
        // Slower blocks never shrink a window below its default block count.
        assert_eq!(Params::for_block_interval_ms(5_000), base);
        assert_eq!(
            Params::for_block_interval_ms(DEFAULT_BLOCK_INTERVAL_MS),
            base
        );
        // An odd interval rounds each window up.
        let odd = Params::for_block_interval_ms(300);
        assert_eq!(odd.answer_blocks, 17);
        assert!(odd.validate().is_ok());
    }
}

//! The storage module's records: providers, the blob a deal keeps, deals, their shards and the
//! challenges on them.

use super::{ENDPOINT_BYTES_MAX, SHARDS_PER_DEAL_MAX};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{blob, Address, Amount, Hash};

/// A registered storage provider. Its stake is its `storage` bond in `staking`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageProvider {
    pub address: Address,
    /// Most shard bytes it takes.
    pub capacity_bytes: u64,
    /// Shard bytes assigned to it now.
    pub used_bytes: u64,
    /// Where clients and repairers fetch its shards (the storage daemon's address).
    pub endpoint: String,
    /// Challenges answered correctly.
    pub proofs: u64,
    /// Challenges missed or answered wrongly on shards it had proven.
    pub failures: u64,
}

/// A blob as the ledger records it: its id, length and erasure layout (`k` data and `m` parity
/// shards of `shard_len` bytes, each committed by its chunk Merkle root). Its JSON (RPC) has the
/// same fields, hashes in hex.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobRecord {
    /// `blob::blob_id` of the original bytes.
    pub id: Hash,
    pub len_bytes: u64,
    pub k: u16,
    pub m: u16,
    /// `blob::shard_len(len_bytes, k)`.
    pub shard_len: u64,
    /// `blob::root_of` each shard, data shards first; `k + m` of them.
    pub shard_roots: Vec<Hash>,
}

impl BlobRecord {
    pub fn shard_count(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// Chunks per shard: the range a challenge's chunk index is drawn from.
    pub fn chunks_per_shard(&self) -> u64 {
        blob::chunk_count(self.shard_len)
    }

    /// Shard bytes the whole deal stores: `shard_len × (k + m)`.
    pub fn stored_bytes(&self) -> Option<u64> {
        self.shard_len.checked_mul(self.shard_count() as u64)
    }
}

/// Why a challenge was issued: an epoch's proof (paid the shard's epoch price) or the first
/// proof of a shard a new holder rebuilt (paid the shard's repair bounty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    Epoch = 0,
    Repair = 1,
}

/// An open challenge: the holder must send chunk `chunk_index` of the shard with its Merkle path
/// in a block at most `deadline_height`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub kind: ChallengeKind,
    pub chunk_index: u64,
    pub issued_height: u64,
    pub deadline_height: u64,
}

/// One shard of a deal and who keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shard {
    /// The holder; `None` while the shard waits for a (new) provider.
    pub provider: Option<Address>,
    /// Whether the holder has answered a challenge on it. A holder is slashed only for shards
    /// it has proven once: before that it may never have received the bytes.
    pub proven: bool,
    pub challenge: Option<Challenge>,
    /// Slashed stake waiting to pay whoever rebuilds and proves this shard (the repair fee).
    pub bounty: Amount,
    /// Times a provider was assigned this shard (bounded by `ASSIGNMENTS_PER_SHARD_MAX`).
    pub assignments: u8,
    /// Whether the shard is in the repair queue now.
    pub waiting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DealStatus {
    /// Opened; its shards are assigned with a later block's randomness.
    Pending = 0,
    /// Assigned; challenged every epoch until its epochs are done.
    Active = 1,
    /// Finished: the unused escrow is refunded and the shards are released.
    Ended = 2,
}

/// A storage deal: the owner escrows `shard_len × (k + m) × epochs × price_per_byte_epoch`;
/// each correct epoch proof pays its holder `shard_len × price_per_byte_epoch`; the rest
/// returns at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deal {
    pub id: u64,
    pub owner: Address,
    pub blob: BlobRecord,
    pub epochs: u64,
    pub price_per_byte_epoch: Amount,
    pub escrow: Amount,
    /// Paid to holders so far (never more than `escrow`).
    pub paid: Amount,
    pub opened_height: u64,
    /// Epochs whose challenges were issued.
    pub epochs_done: u64,
    /// Where the next epoch (or the end) is processed.
    pub next_epoch_height: u64,
    /// The owner asked to end the deal; it ends at its next epoch.
    pub end_requested: bool,
    pub status: DealStatus,
    /// What was refunded when the deal ended.
    pub refunded: Amount,
    pub shards: Vec<Shard>,
}

impl Deal {
    /// What one correct epoch proof pays: `shard_len × price_per_byte_epoch`.
    pub fn shard_epoch_price(&self) -> Option<Amount> {
        self.price_per_byte_epoch
            .checked_mul(u128::from(self.blob.shard_len))
    }
}

/// One shard of one deal, as providers' lists and the repair queue name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShardRef {
    pub deal: u64,
    pub shard: u16,
}

impl Encode for StorageProvider {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.address);
        w.u64(self.capacity_bytes);
        w.u64(self.used_bytes);
        w.str(&self.endpoint);
        w.u64(self.proofs);
        w.u64(self.failures);
    }
}

impl Decode for StorageProvider {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(StorageProvider {
            address: r.value()?,
            capacity_bytes: r.u64()?,
            used_bytes: r.u64()?,
            endpoint: r.string(ENDPOINT_BYTES_MAX)?,
            proofs: r.u64()?,
            failures: r.u64()?,
        })
    }
}

impl Encode for BlobRecord {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.id);
        w.u64(self.len_bytes);
        w.u16(self.k);
        w.u16(self.m);
        w.u64(self.shard_len);
        w.seq(&self.shard_roots);
    }
}

impl Decode for BlobRecord {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(BlobRecord {
            id: r.value()?,
            len_bytes: r.u64()?,
            k: r.u16()?,
            m: r.u16()?,
            shard_len: r.u64()?,
            shard_roots: r.seq(SHARDS_PER_DEAL_MAX)?,
        })
    }
}

impl Encode for ChallengeKind {
    fn encode(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
}

impl Decode for ChallengeKind {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(ChallengeKind::Epoch),
            1 => Ok(ChallengeKind::Repair),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "storage challenge kind",
            }),
        }
    }
}

impl Encode for Challenge {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.kind);
        w.u64(self.chunk_index);
        w.u64(self.issued_height);
        w.u64(self.deadline_height);
    }
}

impl Decode for Challenge {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Challenge {
            kind: r.value()?,
            chunk_index: r.u64()?,
            issued_height: r.u64()?,
            deadline_height: r.u64()?,
        })
    }
}

impl Encode for Shard {
    fn encode(&self, w: &mut Writer) {
        w.option(&self.provider);
        w.bool(self.proven);
        w.option(&self.challenge);
        w.value(&self.bounty);
        w.u8(self.assignments);
        w.bool(self.waiting);
    }
}

impl Decode for Shard {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Shard {
            provider: r.option()?,
            proven: r.bool()?,
            challenge: r.option()?,
            bounty: r.value()?,
            assignments: r.u8()?,
            waiting: r.bool()?,
        })
    }
}

impl Encode for DealStatus {
    fn encode(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
}

impl Decode for DealStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(DealStatus::Pending),
            1 => Ok(DealStatus::Active),
            2 => Ok(DealStatus::Ended),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "storage deal status",
            }),
        }
    }
}

impl Encode for Deal {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.id);
        w.value(&self.owner);
        w.value(&self.blob);
        w.u64(self.epochs);
        w.value(&self.price_per_byte_epoch);
        w.value(&self.escrow);
        w.value(&self.paid);
        w.u64(self.opened_height);
        w.u64(self.epochs_done);
        w.u64(self.next_epoch_height);
        w.bool(self.end_requested);
        w.value(&self.status);
        w.value(&self.refunded);
        w.seq(&self.shards);
    }
}

impl Decode for Deal {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Deal {
            id: r.u64()?,
            owner: r.value()?,
            blob: r.value()?,
            epochs: r.u64()?,
            price_per_byte_epoch: r.value()?,
            escrow: r.value()?,
            paid: r.value()?,
            opened_height: r.u64()?,
            epochs_done: r.u64()?,
            next_epoch_height: r.u64()?,
            end_requested: r.bool()?,
            status: r.value()?,
            refunded: r.value()?,
            shards: r.seq(SHARDS_PER_DEAL_MAX)?,
        })
    }
}

impl Encode for ShardRef {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.deal);
        w.u16(self.shard);
    }
}

impl Decode for ShardRef {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ShardRef {
            deal: r.u64()?,
            shard: r.u16()?,
        })
    }
}

//! The storage module's messages and their canonical encoding.

use super::types::BlobRecord;
use super::ENDPOINT_BYTES_MAX;
use crate::limits::{CHAIN_ID_BYTES_MAX, TX_BYTES_MAX};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::blob::{MerklePath, CHUNK_BYTES, MERKLE_PATH_SIBLINGS_MAX};
use piazza_primitives::Amount;

/// The largest encoding of one `AnswerChallenge` in a transaction: module and message tags,
/// deal, shard, chunk index, a full chunk and a path of `MERKLE_PATH_SIBLINGS_MAX` siblings,
/// each length prefixed.
pub const ANSWER_BYTES_MAX: usize =
    1 + 1 + 8 + 2 + 8 + 4 + CHUNK_BYTES + 4 + 32 * MERKLE_PATH_SIBLINGS_MAX;
/// The most a transaction's envelope takes besides its messages: the longest chain id, sender,
/// nonce, fee, the messages' count, the signature and a grantee's key.
pub const TX_ENVELOPE_BYTES_MAX: usize = 4 + CHAIN_ID_BYTES_MAX + 32 + 8 + 16 + 4 + 64 + 4 + 32;
/// Most challenge answers one transaction always has room for, whatever their chunks and
/// paths (more may fit when paths are short; the size bound decides).
pub const ANSWERS_PER_TX_MAX: usize = (TX_BYTES_MAX - TX_ENVELOPE_BYTES_MAX) / ANSWER_BYTES_MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Registers the sender as a storage provider: bonds `stake` (may be zero when the
    /// `storage` bond already covers the minimum), offers `capacity_bytes` of shard space and
    /// serves shards at `endpoint`.
    RegisterProvider {
        stake: Amount,
        capacity_bytes: u64,
        endpoint: String,
    },
    /// Changes a provider's capacity (not below what it holds) and endpoint.
    UpdateProvider {
        capacity_bytes: u64,
        endpoint: String,
    },
    /// Leaves the registry once it holds no shard; its bond starts unbonding.
    ExitProvider,
    /// Escrows `shard_len × (k + m) × epochs × price_per_byte_epoch` to keep `blob` for
    /// `epochs` epochs; its shards are assigned with a later block's randomness.
    OpenDeal { blob: BlobRecord, epochs: u64 },
    /// The owner ends a deal at its next epoch; the unused escrow returns then.
    EndDeal { deal: u64 },
    /// The owner has uploaded every shard: the deal's first epoch starts at the next block
    /// instead of at the end of the upload window.
    ConfirmUpload { deal: u64 },
    /// The holder's answer to the open challenge on shard `shard` of `deal`: chunk
    /// `chunk_index` of the shard and its Merkle path to the shard's root.
    AnswerChallenge {
        deal: u64,
        shard: u16,
        chunk_index: u64,
        chunk: Vec<u8>,
        path: MerklePath,
    },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::RegisterProvider {
                stake,
                capacity_bytes,
                endpoint,
            } => {
                w.u8(0);
                w.value(stake);
                w.u64(*capacity_bytes);
                w.str(endpoint);
            }
            Msg::UpdateProvider {
                capacity_bytes,
                endpoint,
            } => {
                w.u8(1);
                w.u64(*capacity_bytes);
                w.str(endpoint);
            }
            Msg::ExitProvider => w.u8(2),
            Msg::OpenDeal { blob, epochs } => {
                w.u8(3);
                w.value(blob);
                w.u64(*epochs);
            }
            Msg::EndDeal { deal } => {
                w.u8(4);
                w.u64(*deal);
            }
            Msg::AnswerChallenge {
                deal,
                shard,
                chunk_index,
                chunk,
                path,
            } => {
                w.u8(5);
                w.u64(*deal);
                w.u16(*shard);
                w.u64(*chunk_index);
                w.bytes(chunk);
                w.value(path);
            }
            Msg::ConfirmUpload { deal } => {
                w.u8(6);
                w.u64(*deal);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Msg::RegisterProvider {
                stake: r.value()?,
                capacity_bytes: r.u64()?,
                endpoint: r.string(ENDPOINT_BYTES_MAX)?,
            },
            1 => Msg::UpdateProvider {
                capacity_bytes: r.u64()?,
                endpoint: r.string(ENDPOINT_BYTES_MAX)?,
            },
            2 => Msg::ExitProvider,
            3 => Msg::OpenDeal {
                blob: r.value()?,
                epochs: r.u64()?,
            },
            4 => Msg::EndDeal { deal: r.u64()? },
            5 => Msg::AnswerChallenge {
                deal: r.u64()?,
                shard: r.u16()?,
                chunk_index: r.u64()?,
                chunk: r.bytes(CHUNK_BYTES)?,
                path: r.value()?,
            },
            6 => Msg::ConfirmUpload { deal: r.u64()? },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "storage message",
                })
            }
        })
    }
}

//! Blob storage on chain: sending every `storage` message (providers, deals, challenge
//! answers) and reading deals, blobs, challenges and providers (`piazza_getBlob`,
//! `piazza_getStorageChallenges`, …). The answer shapes are `docs/storage.md`'s; amounts are
//! decimal strings of base units, hashes hex, addresses `pz1…`.
//!
//! ```no_run
//! # async fn demo(key: piazza_primitives::SecretKey, shard: Vec<u8>) -> Result<(), piazza_client::ClientError> {
//! use piazza_client::Client;
//! let client = Client::new("http://127.0.0.1:8545");
//! let me = key.public_key().address();
//! for challenge in client.storage_challenges(&me).await? {
//!     // `shard` holds the bytes of shard `challenge.shard` of deal `challenge.deal`.
//!     if let Some(answer) = challenge.answer(&shard) {
//!         client.send_message(&key, answer).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

use crate::{Client, ClientError};
use piazza_ledger::storage::{self, BlobRecord};
use piazza_ledger::tx::Message;
use piazza_primitives::blob::{self, MerklePath};
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The storage methods' names (one table, in `piazza-api`).
pub use piazza_api::storage_method as method;

fn amount(text: &str) -> Result<Amount, ClientError> {
    text.parse::<u128>()
        .map(Amount::new)
        .map_err(|e| ClientError::Decode(format!("`{text}` is not an amount in base units: {e}")))
}

/// The chain's storage parameters (`piazza_getStorageParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageParamsInfo {
    pub min_provider_stake: String,
    pub price_per_byte_epoch: String,
    pub epoch_blocks: u64,
    pub answer_blocks: u64,
    pub upload_blocks: u64,
    pub repair_blocks: u64,
    pub missed_proof_slash: String,
}

impl StorageParamsInfo {
    /// What a deal for `record` over `epochs` escrows at these parameters.
    pub fn deal_escrow(&self, record: &BlobRecord, epochs: u64) -> Result<Amount, ClientError> {
        storage::deal_escrow(record, epochs, amount(&self.price_per_byte_epoch)?)
            .ok_or_else(|| ClientError::Decode("the deal's escrow overflows".into()))
    }
}

/// An open challenge: answer chunk `chunk_index` of the shard by `deadline_height`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeState {
    /// `"epoch"` (paid the shard's epoch price) or `"repair"` (paid the shard's bounty).
    pub kind: String,
    pub chunk_index: u64,
    pub issued_height: u64,
    pub deadline_height: u64,
}

/// One shard of a deal and who keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: u16,
    pub provider: Option<Address>,
    /// Where the holder serves its shards.
    pub endpoint: Option<String>,
    pub root: Option<Hash>,
    pub proven: bool,
    pub challenge: Option<ChallengeState>,
    pub bounty: String,
    pub assignments: u8,
    pub waiting: bool,
}

/// A storage deal (`piazza_getStorageDeal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealInfo {
    pub id: u64,
    pub owner: Address,
    pub blob: BlobRecord,
    pub epochs: u64,
    pub price_per_byte_epoch: String,
    pub escrow: String,
    pub paid: String,
    pub refunded: String,
    pub opened_height: u64,
    pub epochs_done: u64,
    pub next_epoch_height: u64,
    pub end_requested: bool,
    /// `"pending"`, `"active"` or `"ended"`.
    pub status: String,
    pub shards: Vec<ShardInfo>,
}

/// A blob and the deal keeping it (`piazza_getBlob`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobDeal {
    pub blob: BlobRecord,
    pub deal: DealInfo,
}

/// An open challenge on a shard a provider holds (`piazza_getStorageChallenges`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeInfo {
    pub deal: u64,
    pub shard: u16,
    pub blob: Hash,
    pub shard_root: Hash,
    pub shard_len: u64,
    pub kind: String,
    pub chunk_index: u64,
    pub issued_height: u64,
    pub deadline_height: u64,
}

impl ChallengeInfo {
    /// The answer from the shard's bytes: the challenged chunk and its Merkle path. `None` when
    /// the bytes are not this shard's (their root differs, or the chunk is missing), since such
    /// an answer would be slashed.
    pub fn answer(&self, shard: &[u8]) -> Option<Message> {
        if shard.len() as u64 != self.shard_len || blob::root_of(shard) != self.shard_root {
            return None;
        }
        answer_message(self.deal, self.shard, self.chunk_index, shard)
    }
}

/// The `AnswerChallenge` for chunk `chunk_index` of `shard` (no root check; see
/// [`ChallengeInfo::answer`]).
pub fn answer_message(deal: u64, shard: u16, chunk_index: u64, bytes: &[u8]) -> Option<Message> {
    Some(Message::Storage(storage::Msg::AnswerChallenge {
        deal,
        shard,
        chunk_index,
        chunk: blob::chunk(bytes, chunk_index)?.to_vec(),
        path: blob::prove(bytes, chunk_index)?,
    }))
}

/// A shard a provider holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRefInfo {
    pub deal: u64,
    pub shard: u16,
}

/// A storage provider (`piazza_getStorageProvider`; the list leaves `shards` out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageProviderInfo {
    pub address: Address,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub endpoint: String,
    pub proofs: u64,
    pub failures: u64,
    pub stake: String,
    pub shards: Option<Vec<ShardRefInfo>>,
}

/// Reading storage state.
impl Client {
    pub async fn storage_params(&self) -> Result<StorageParamsInfo, ClientError> {
        self.call(method::GET_STORAGE_PARAMS, json!([])).await
    }

    /// The blob `id` and the deal keeping it, if one does.
    pub async fn blob(&self, id: &Hash) -> Result<Option<BlobDeal>, ClientError> {
        self.call(method::GET_BLOB, json!([id.to_hex()])).await
    }

    pub async fn storage_deal(&self, id: u64) -> Result<Option<DealInfo>, ClientError> {
        self.call(method::GET_STORAGE_DEAL, json!([id])).await
    }

    /// The deals of `owner` that have not ended.
    pub async fn storage_deals(&self, owner: &Address) -> Result<Vec<u64>, ClientError> {
        self.call(method::GET_STORAGE_DEALS, json!([owner.to_string()]))
            .await
    }

    /// The open challenges on the shards `provider` holds.
    pub async fn storage_challenges(
        &self,
        provider: &Address,
    ) -> Result<Vec<ChallengeInfo>, ClientError> {
        self.call(
            method::GET_STORAGE_CHALLENGES,
            json!([provider.to_string()]),
        )
        .await
    }

    pub async fn storage_provider(
        &self,
        address: &Address,
    ) -> Result<Option<StorageProviderInfo>, ClientError> {
        self.call(method::GET_STORAGE_PROVIDER, json!([address.to_string()]))
            .await
    }

    pub async fn storage_providers(&self) -> Result<Vec<StorageProviderInfo>, ClientError> {
        self.call(method::GET_STORAGE_PROVIDERS, json!([])).await
    }
}

/// Sending storage messages; each returns the transaction's hash.
impl Client {
    /// Registers `key` as a storage provider: bonds `stake`, offers `capacity_bytes` and serves
    /// shards at `endpoint`.
    pub async fn register_storage_provider(
        &self,
        key: &SecretKey,
        stake: Amount,
        capacity_bytes: u64,
        endpoint: &str,
    ) -> Result<Hash, ClientError> {
        let message = storage::Msg::RegisterProvider {
            stake,
            capacity_bytes,
            endpoint: endpoint.to_owned(),
        };
        self.send_message(key, Message::Storage(message)).await
    }

    pub async fn update_storage_provider(
        &self,
        key: &SecretKey,
        capacity_bytes: u64,
        endpoint: &str,
    ) -> Result<Hash, ClientError> {
        let message = storage::Msg::UpdateProvider {
            capacity_bytes,
            endpoint: endpoint.to_owned(),
        };
        self.send_message(key, Message::Storage(message)).await
    }

    pub async fn exit_storage_provider(&self, key: &SecretKey) -> Result<Hash, ClientError> {
        self.send_message(key, Message::Storage(storage::Msg::ExitProvider))
            .await
    }

    /// Opens a deal keeping `record` for `epochs` (its escrow: see
    /// [`StorageParamsInfo::deal_escrow`]). The deal's id is in the receipt's
    /// `storage.deal_opened` event ([`deal_id`]).
    pub async fn open_deal(
        &self,
        key: &SecretKey,
        record: BlobRecord,
        epochs: u64,
    ) -> Result<Hash, ClientError> {
        let message = storage::Msg::OpenDeal {
            blob: record,
            epochs,
        };
        self.send_message(key, Message::Storage(message)).await
    }

    /// Ends a deal at its next epoch; the unused escrow returns then.
    pub async fn end_deal(&self, key: &SecretKey, deal: u64) -> Result<Hash, ClientError> {
        self.send_message(key, Message::Storage(storage::Msg::EndDeal { deal }))
            .await
    }

    /// Says every shard of `deal` is uploaded: its first epoch starts at the next block.
    pub async fn confirm_upload(&self, key: &SecretKey, deal: u64) -> Result<Hash, ClientError> {
        self.send_message(key, Message::Storage(storage::Msg::ConfirmUpload { deal }))
            .await
    }

    /// Answers a challenge with a chunk and its path (see [`ChallengeInfo::answer`] to build
    /// them from the shard's bytes).
    pub async fn answer_challenge(
        &self,
        key: &SecretKey,
        deal: u64,
        shard: u16,
        chunk_index: u64,
        chunk: Vec<u8>,
        path: MerklePath,
    ) -> Result<Hash, ClientError> {
        let message = storage::Msg::AnswerChallenge {
            deal,
            shard,
            chunk_index,
            chunk,
            path,
        };
        self.send_message(key, Message::Storage(message)).await
    }
}

/// The id of the deal a receipt's `OpenDeal` opened.
pub fn deal_id(receipt: &piazza_api::ReceiptInfo) -> Option<u64> {
    receipt
        .events
        .iter()
        .find(|e| e.kind == "storage.deal_opened")?
        .attributes
        .get("deal")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(shard: &[u8], chunk_index: u64) -> ChallengeInfo {
        ChallengeInfo {
            deal: 4,
            shard: 1,
            blob: Hash::ZERO,
            shard_root: blob::root_of(shard),
            shard_len: shard.len() as u64,
            kind: "epoch".into(),
            chunk_index,
            issued_height: 10,
            deadline_height: 15,
        }
    }

    #[test]
    fn an_answer_is_built_only_from_the_shard_the_challenge_names() {
        let shard: Vec<u8> = (0..3 * blob::CHUNK_BYTES + 64).map(|i| i as u8).collect();
        let c = challenge(&shard, 3);
        let Some(Message::Storage(storage::Msg::AnswerChallenge {
            deal,
            shard: index,
            chunk_index,
            chunk,
            path,
        })) = c.answer(&shard)
        else {
            panic!("no answer for the right shard");
        };
        assert_eq!((deal, index, chunk_index), (4, 1, 3));
        assert!(blob::verify(&c.shard_root, c.shard_len, 3, &chunk, &path));
        let mut other = shard.clone();
        other[5] ^= 1;
        assert_eq!(c.answer(&other), None, "a corrupted shard is not answered");
        assert_eq!(c.answer(&shard[..shard.len() - 64]), None);
        assert_eq!(challenge(&shard, 99).answer(&shard), None);
    }

    #[test]
    fn the_escrow_follows_the_chains_price() {
        let params = StorageParamsInfo {
            min_provider_stake: "100".into(),
            price_per_byte_epoch: "3".into(),
            epoch_blocks: 10,
            answer_blocks: 5,
            upload_blocks: 10,
            repair_blocks: 30,
            missed_proof_slash: "10".into(),
        };
        let record = BlobRecord {
            id: Hash::ZERO,
            len_bytes: 1000,
            k: 2,
            m: 1,
            shard_len: 512,
            shard_roots: vec![Hash::ZERO; 3],
        };
        assert_eq!(
            params.deal_escrow(&record, 7).unwrap(),
            Amount::new(512 * 3 * 7 * 3)
        );
        let bad = StorageParamsInfo {
            price_per_byte_epoch: "x".into(),
            ..params
        };
        assert!(bad.deal_escrow(&record, 7).is_err());
    }
}

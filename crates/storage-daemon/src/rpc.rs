//! [`StorageChain`] on a node over JSON-RPC (`piazza_client`'s storage methods), and the
//! conversions from the chain's blob records and deals to what the data plane uses.

use std::time::Duration;

use piazza_blob::erasure::{Layout, Manifest};
use piazza_client::storage::DealInfo;
use piazza_client::Client;
use piazza_ledger::storage;
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, SecretKey};

use crate::daemon::{Answer, Challenge, Duty, StorageChain, ANSWERS_PER_TX_MAX};
use crate::fetch::Holder;

/// Longest wait for an answer transaction's receipt.
pub const ANSWER_RECEIPT_WAIT_MS: u64 = 30_000;

/// What the chain records of a blob, as the data plane reads it.
pub fn manifest_of(blob: &storage::BlobRecord) -> Manifest {
    Manifest {
        id: blob.id,
        layout: Layout {
            len_bytes: blob.len_bytes,
            k: blob.k,
            m: blob.m,
            shard_len: blob.shard_len,
        },
        roots: blob.shard_roots.clone(),
    }
}

/// The holders of a deal's shards that name an endpoint.
pub fn holders_of(deal: &DealInfo) -> Vec<Holder> {
    deal.shards
        .iter()
        .filter_map(|s| {
            Some(Holder {
                index: s.index,
                endpoint: s.endpoint.clone()?,
            })
        })
        .collect()
}

/// The blob record of a manifest, as a deal carries it.
pub fn record_of(manifest: &Manifest) -> storage::BlobRecord {
    storage::BlobRecord {
        id: manifest.id,
        len_bytes: manifest.layout.len_bytes,
        k: manifest.layout.k,
        m: manifest.layout.m,
        shard_len: manifest.layout.shard_len,
        shard_roots: manifest.roots.clone(),
    }
}

/// The ledger's message for a challenge answer.
pub fn answer_message(answer: Answer) -> Message {
    Message::Storage(storage::Msg::AnswerChallenge {
        deal: answer.deal,
        shard: answer.shard,
        chunk_index: answer.chunk_index,
        chunk: answer.chunk,
        path: answer.path,
    })
}

/// A storage provider's chain: a node's JSON-RPC and the provider's key.
pub struct RpcChain {
    pub client: Client,
    pub key: SecretKey,
}

impl RpcChain {
    fn address(&self) -> Address {
        self.key.public_key().address()
    }

    /// Shard `shard` of `deal` as this provider's duty, when it holds it in an active deal.
    fn duty_in(&self, deal: &DealInfo, shard: u16) -> Option<Duty> {
        if deal.status != "active" {
            return None;
        }
        let held = deal.shards.iter().find(|s| s.index == shard)?;
        if held.provider != Some(self.address()) {
            return None;
        }
        Some(Duty {
            deal: deal.id,
            shard,
            manifest: manifest_of(&deal.blob),
            challenge: held.challenge.as_ref().map(|c| Challenge {
                chunk_index: c.chunk_index,
                issued_height: c.issued_height,
                deadline_height: c.deadline_height,
            }),
            holders: holders_of(deal),
        })
    }
}

#[async_trait::async_trait]
impl StorageChain for RpcChain {
    async fn duties(&self) -> Result<Vec<Duty>, String> {
        let Some(me) = self
            .client
            .storage_provider(&self.address())
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Vec::new());
        };
        let mut shards = me.shards.unwrap_or_default();
        shards.sort_by_key(|s| (s.deal, s.shard));
        let mut duties = Vec::new();
        let mut deal: Option<DealInfo> = None;
        for held in shards {
            if deal.as_ref().map(|d| d.id) != Some(held.deal) {
                deal = self
                    .client
                    .storage_deal(held.deal)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if let Some(duty) = deal.as_ref().and_then(|d| self.duty_in(d, held.shard)) {
                duties.push(duty);
            }
        }
        Ok(duties)
    }

    async fn duty(&self, deal: u64, shard: u16) -> Result<Option<Duty>, String> {
        let deal = self
            .client
            .storage_deal(deal)
            .await
            .map_err(|e| e.to_string())?;
        Ok(deal.and_then(|d| self.duty_in(&d, shard)))
    }

    /// Sends the answers in one transaction and waits for its receipt, so the next pass builds
    /// on the next nonce and a refused answer is reported (and sent again).
    async fn answer(&self, answers: Vec<Answer>) -> Result<(), String> {
        if answers.len() > ANSWERS_PER_TX_MAX {
            return Err(format!(
                "{} answers, at most {ANSWERS_PER_TX_MAX} to a transaction",
                answers.len()
            ));
        }
        let messages = answers.into_iter().map(answer_message).collect();
        let tx = self
            .client
            .build(&self.key, messages, piazza_client::DEFAULT_MAX_FEE)
            .await
            .map_err(|e| e.to_string())?;
        let hash = self.client.submit(&tx).await.map_err(|e| e.to_string())?;
        let receipt = self
            .client
            .wait_for_receipt(&hash, Duration::from_millis(ANSWER_RECEIPT_WAIT_MS))
            .await
            .map_err(|e| e.to_string())?;
        match receipt.error {
            None => Ok(()),
            Some(e) => Err(format!(
                "answer refused: {} ({}): {}",
                e.name, e.code, e.message
            )),
        }
    }
}

/// Blob `id` from the holders the chain names, checked against its id: what a daemon that
/// needs a blob it lacks (a model's weights) calls.
pub async fn get_blob(client: &Client, id: &piazza_primitives::Hash) -> Result<Vec<u8>, String> {
    let found = client
        .blob(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no deal keeps blob {id}"))?;
    let manifest = manifest_of(&found.blob);
    manifest.check().map_err(|e| e.to_string())?;
    crate::fetch::get_blob(
        &crate::fetch::http_client(),
        &manifest,
        &holders_of(&found.deal),
    )
    .await
    .map_err(|e| e.to_string())
}

//! The storage provider's duties, one pass at a time: answer every open challenge on the shards
//! it holds (chunk + Merkle path, read from the store and checked against the shard's root) and
//! rebuild every challenged shard it lacks or holds corrupted from any `k` other holders (a
//! repair, or an upload that never came), before its challenge's deadline.
//!
//! The chain is behind [`StorageChain`] (the node over JSON-RPC in the CLI; a fake in tests), so
//! a pass is the same code whatever answers it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use piazza_blob::erasure::Manifest;
use piazza_blob::store::{ShardKey, ShardStore, StoreError};
use piazza_primitives::blob::MerklePath;
use tokio::sync::watch;

use crate::fetch::{self, Holder};
use crate::service::{Assigned, Assignments};

/// Most answers sent in one transaction; more go in the next. Eleven full-chunk answers (a
/// 4 KiB chunk and up to 48 siblings each) always fit the ledger's 64 KiB transaction bound.
pub const ANSWERS_PER_TX_MAX: usize = 11;
/// Most shards rebuilt in one pass (each holds `k + 1` shards in memory).
pub const REBUILDS_PER_PASS_MAX: usize = 2;
/// Passes a failed rebuild waits before it is tried again.
pub const REBUILD_RETRY_PASSES: u64 = 3;

/// An open challenge on a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub chunk_index: u64,
    pub issued_height: u64,
    pub deadline_height: u64,
}

/// A shard the chain assigns to this provider, with what it needs to keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duty {
    pub deal: u64,
    pub shard: u16,
    pub manifest: Manifest,
    pub challenge: Option<Challenge>,
    /// The other shards' holders (their endpoints), for a rebuild.
    pub holders: Vec<Holder>,
}

/// A challenge's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub deal: u64,
    pub shard: u16,
    pub chunk_index: u64,
    pub chunk: Vec<u8>,
    pub path: MerklePath,
}

/// What a storage provider reads from and sends to the chain.
#[async_trait::async_trait]
pub trait StorageChain: Send + Sync + 'static {
    /// Every shard the chain assigns to this provider now.
    async fn duties(&self) -> Result<Vec<Duty>, String>;
    /// Shard `shard` of deal `deal`, when the chain assigns it to this provider now (by
    /// default: found among [`StorageChain::duties`]).
    async fn duty(&self, deal: u64, shard: u16) -> Result<Option<Duty>, String> {
        let duties = self.duties().await?;
        Ok(duties
            .into_iter()
            .find(|d| d.deal == deal && d.shard == shard))
    }
    /// Sends at most [`ANSWERS_PER_TX_MAX`] answers in one transaction.
    async fn answer(&self, answers: Vec<Answer>) -> Result<(), String>;
}

/// The shard service's view of assignments, read from the chain on each upload.
pub struct ChainAssignments<C>(pub Arc<C>);

#[async_trait::async_trait]
impl<C: StorageChain> Assignments for ChainAssignments<C> {
    async fn assigned(&self, deal: u64, shard: u16) -> Result<Option<Assigned>, String> {
        let Some(duty) = self.0.duty(deal, shard).await? else {
            return Ok(None);
        };
        let root = *duty.manifest.root(shard).map_err(|e| e.to_string())?;
        Ok(Some(Assigned {
            blob: duty.manifest.id,
            root,
            shard_len: duty.manifest.layout.shard_len,
        }))
    }
}

/// How the daemon behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Time between passes.
    pub poll_ms: u64,
    /// Whether a missing or corrupted shard is rebuilt from the other holders. Off only to
    /// show what the chain does to a provider that lost a shard.
    pub rebuild: bool,
}

impl Default for DaemonConfig {
    fn default() -> DaemonConfig {
        DaemonConfig {
            poll_ms: 500,
            rebuild: true,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub duties: usize,
    pub answered: usize,
    pub rebuilt: usize,
    /// One line per failure (a shard that could not be proven or rebuilt, an answer not sent).
    pub failures: Vec<String>,
}

/// The daemon's state between passes.
pub struct Daemon<C> {
    pub chain: Arc<C>,
    pub store: Arc<ShardStore>,
    pub config: DaemonConfig,
    http: reqwest::Client,
    /// The challenge (by issue height) last answered on each shard.
    answered: BTreeMap<(u64, u16), u64>,
    /// Pass before which a failed rebuild is not retried.
    rebuild_after: BTreeMap<(u64, u16), u64>,
    passes: u64,
}

impl<C: StorageChain> Daemon<C> {
    pub fn new(chain: Arc<C>, store: Arc<ShardStore>, config: DaemonConfig) -> Daemon<C> {
        Daemon {
            chain,
            store,
            config,
            http: fetch::http_client(),
            answered: BTreeMap::new(),
            rebuild_after: BTreeMap::new(),
            passes: 0,
        }
    }

    /// One pass over this provider's duties.
    pub async fn pass(&mut self) -> Result<PassReport, String> {
        self.passes += 1;
        let duties = self.chain.duties().await?;
        let mut report = PassReport {
            duties: duties.len(),
            ..PassReport::default()
        };
        let mut answers = Vec::new();
        for duty in &duties {
            let key = ShardKey {
                blob: duty.manifest.id,
                index: duty.shard,
            };
            let slot = (duty.deal, duty.shard);
            let held = matches!(
                self.store.stored_root(&key),
                Ok(Some(root)) if duty.manifest.root(duty.shard).ok() == Some(&root)
            );
            // A shard is rebuilt once it is challenged (a repair is challenged at once; a new
            // deal's first challenge comes after its upload window), not while its owner may
            // still be uploading it.
            let challenged = duty.challenge.is_some();
            if !held
                && challenged
                && self.rebuild_due(slot)
                && report.rebuilt < REBUILDS_PER_PASS_MAX
            {
                match self.rebuild(duty, &key).await {
                    Ok(()) => report.rebuilt += 1,
                    Err(e) => report.failures.push(e),
                }
            }
            let Some(challenge) = duty.challenge else {
                continue;
            };
            if self.answered.get(&slot) == Some(&challenge.issued_height) {
                continue;
            }
            match self.prove(&key, challenge.chunk_index).await {
                Ok((chunk, path)) => answers.push(Answer {
                    deal: duty.deal,
                    shard: duty.shard,
                    chunk_index: challenge.chunk_index,
                    chunk,
                    path,
                }),
                Err(StoreError::Corrupt { .. }) if self.config.rebuild => {
                    // Healed by a rebuild now, proven on the next pass.
                    match self.rebuild(duty, &key).await {
                        Ok(()) => report.rebuilt += 1,
                        Err(e) => report.failures.push(e),
                    }
                }
                Err(e) => report.failures.push(format!(
                    "deal {} shard {}: cannot prove: {e}",
                    duty.deal, duty.shard
                )),
            }
        }
        let live: std::collections::BTreeSet<(u64, u16)> =
            duties.iter().map(|d| (d.deal, d.shard)).collect();
        self.answered.retain(|slot, _| live.contains(slot));
        self.rebuild_after.retain(|slot, _| live.contains(slot));
        for batch in answers.chunks(ANSWERS_PER_TX_MAX) {
            let slots: Vec<(u64, u16, u64)> = batch
                .iter()
                .filter_map(|a| {
                    let issued = duties
                        .iter()
                        .find(|d| d.deal == a.deal && d.shard == a.shard)?
                        .challenge?
                        .issued_height;
                    Some((a.deal, a.shard, issued))
                })
                .collect();
            match self.chain.answer(batch.to_vec()).await {
                Ok(()) => {
                    report.answered += batch.len();
                    for (deal, shard, issued) in slots {
                        self.answered.insert((deal, shard), issued);
                    }
                }
                Err(e) => report.failures.push(format!("answers not sent: {e}")),
            }
        }
        Ok(report)
    }

    fn rebuild_due(&self, slot: (u64, u16)) -> bool {
        self.config.rebuild
            && self
                .rebuild_after
                .get(&slot)
                .is_none_or(|&p| self.passes >= p)
    }

    async fn rebuild(&mut self, duty: &Duty, key: &ShardKey) -> Result<(), String> {
        let slot = (duty.deal, duty.shard);
        let rebuilt =
            fetch::rebuild_shard(&self.http, &duty.manifest, duty.shard, &duty.holders).await;
        let stored = match rebuilt {
            Ok(bytes) => {
                let store = Arc::clone(&self.store);
                let (key, root) = (
                    *key,
                    *duty.manifest.root(duty.shard).map_err(|e| e.to_string())?,
                );
                tokio::task::spawn_blocking(move || store.put(&key, &root, &bytes))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Err(e) => Err(e.to_string()),
        };
        stored.map_err(|e| {
            self.rebuild_after
                .insert(slot, self.passes + REBUILD_RETRY_PASSES);
            format!(
                "deal {} shard {}: rebuild failed: {e}",
                duty.deal, duty.shard
            )
        })?;
        self.rebuild_after.remove(&slot);
        tracing::info!(
            deal = duty.deal,
            shard = duty.shard,
            "shard rebuilt and stored"
        );
        Ok(())
    }

    async fn prove(&self, key: &ShardKey, chunk: u64) -> Result<(Vec<u8>, MerklePath), StoreError> {
        let store = Arc::clone(&self.store);
        let key = *key;
        tokio::task::spawn_blocking(move || store.prove(&key, chunk))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
    }

    /// Runs passes every `poll_ms` until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            match self.pass().await {
                Ok(report) => {
                    for failure in &report.failures {
                        tracing::warn!("{failure}");
                    }
                    if report.answered > 0 || report.rebuilt > 0 {
                        tracing::info!(
                            answered = report.answered,
                            rebuilt = report.rebuilt,
                            "storage pass"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "storage pass: chain unreachable"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(self.config.poll_ms)) => {}
            }
        }
    }
}

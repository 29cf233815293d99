//! The application behind the consensus boundary: admits transactions, builds blocks, commits
//! decided blocks.
//!
//! # What a hash acknowledgement promises
//!
//! When [`App::submit`] (or an `Ok` of [`App::submit_many`]) returns a transaction's hash, the
//! transaction passed the admission checks (chain id, nonce window, fee, balance, signature),
//! is in the mempool, and is durably journaled in the node's database (the write is committed
//! with fsync before the hash is returned). It is **not** a promise of inclusion. From then on
//! [`App::transaction_status`] answers exactly one of:
//! - `Pending`: still in the mempool (also after a crash: on restart every journaled
//!   transaction is re-admitted, re-running the admission checks);
//! - `Included { height }`: committed in that block (its receipt says whether its messages
//!   succeeded; its fee and nonce apply either way);
//! - `Dropped { code, reason }`: it left the mempool without being included: it waited on a
//!   missing nonce for the pool's gapped lifetime, was evicted while gapped to make room for a
//!   transaction that can execute, failed its checks when its block was built, an earlier nonce
//!   of its sender was dropped, another transaction with its nonce was committed, or it failed
//!   re-admission after a restart. The most recent [`piazza_store::DROPPED_REMEMBERED_MAX`]
//!   drops are remembered, durably;
//! - `Unknown`: never acknowledged by this node, or dropped longer ago than that.
//!
//! A crash can lose a transaction only if it was never acknowledged. After a crash, a
//! transaction dropped in the last moments before it (before its drop was recorded at the next
//! block) is re-admitted and dropped again, or included if it has become valid.

use crate::metrics::Metrics;
use crate::verified::{VerifiedSignatures, VERIFIED_SIGNATURES_MAX};
use piazza_codec::Encode;
use piazza_consensus::{
    AppError, AppMsg, Committed, TxGossip, GOSSIP_LOCAL_CAPACITY, GOSSIP_REMOTE_CAPACITY,
};
use piazza_ledger::block::{
    prove_randomness, tx_root, Block, BlockHeader, Event, Receipt, BLOCK_BYTES_MAX, BLOCK_TXS_MAX,
};
use piazza_ledger::error::ErrorCode;
use piazza_ledger::error::TxError;
use piazza_ledger::executor::{self, Admission, BlockExecutor, BlockOutcome};
use piazza_ledger::genesis::{Genesis, NetworkGenesis};
use piazza_ledger::module::BlockContext;
use piazza_ledger::staking::validators::{self, ActiveValidator, VALIDATOR_SET_DELAY};
use piazza_ledger::state::{StateDelta, StateRead};
use piazza_ledger::tx::{Message, SignedTransaction};
use piazza_ledger::{compute, sessions, storage, verify};
use piazza_mempool::{Limits, Mempool, MempoolConfig, Priority, Removal, Removed};
use piazza_primitives::{Address, Hash, SecretKey};
use piazza_store::{DroppedTx, Head, PreparedState, Store, StoreError};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc};

/// Room left in a block for its header and framing.
const BLOCK_FRAMING_BYTES: usize = 4096;
/// Committed blocks buffered for subscribers before slow ones start missing blocks.
const COMMITTED_CHANNEL_CAPACITY: usize = 256;
/// Peers' gossiped transactions admitted together at most (the batches waiting in the queue
/// from consensus are joined up to this many).
const GOSSIP_ADMITTED_TXS_MAX: usize = 8192;
/// Drops held in memory before they are written to the store (they are written at every
/// commit, and as soon as this many are waiting).
const DROPS_BUFFERED_MAX: usize = 4096;

/// What became of a transaction this node acknowledged (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionStatus {
    Pending,
    Included { height: u64 },
    Dropped { code: ErrorCode, reason: String },
    Unknown,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("genesis: {0}")]
    Genesis(String),
    #[error("{0}")]
    Io(String),
    #[error("the data directory holds chain `{stored}`, the genesis is for `{given}`")]
    ChainMismatch { stored: String, given: String },
}

/// A block as it was committed, for subscribers.
#[derive(Debug, Clone)]
pub struct CommittedBlock {
    pub block: Block,
    pub receipts: Vec<Receipt>,
    pub events: Vec<Event>,
}

struct Pending {
    block_hash: Hash,
    outcome: BlockOutcome,
    prepared: PreparedState,
}

/// Where a transaction's signature check stands when its admission checks run: its result is
/// applied after the cheaper checks, so a transaction is refused for the same reason whether
/// its signature was verified alone or in a batch.
enum Signature {
    /// Verify it after the state checks (a transaction failing those costs no verification).
    Unchecked,
    /// Verified already (in parallel with others).
    Checked(Result<(), TxError>),
}

pub struct App {
    store: Store,
    chain_id: String,
    key: SecretKey,
    mempool: Mutex<Mempool>,
    /// Drops not yet written to the store; taken only while holding `mempool` or after it.
    drops: Mutex<Vec<DroppedTx>>,
    pending: Mutex<Option<Pending>>,
    committed: broadcast::Sender<Arc<CommittedBlock>>,
    /// Where transactions admitted from clients go to be gossiped (set by [`App::gossip`]).
    gossip_out: OnceLock<mpsc::Sender<Vec<u8>>>,
    /// The consensus store of a validator network's node (set by
    /// [`App::set_consensus_store`]), where the commit certificates are read; none on a devnet.
    consensus_store: OnceLock<Arc<piazza_bft::store::ConsensusStore>>,
    /// Admitted transactions not gossiped because the gossip queue was full.
    gossip_skipped: AtomicU64,
    /// Transaction signatures verified at admission.
    admission_signatures: AtomicU64,
    /// Hashes of transactions whose signatures were found valid here (by admission or in
    /// another validator's block), so that no path verifies them again. Taken after `mempool`
    /// when both are held.
    verified: Mutex<VerifiedSignatures>,
    pub metrics: Metrics,
}

impl App {
    /// Opens the chain in `store`, writing `genesis` first if the store is empty.
    pub fn open(
        store: Store,
        genesis: Option<&Genesis>,
        key: SecretKey,
        mempool: MempoolConfig,
    ) -> Result<App, NodeError> {
        let limits = Limits::for_config(mempool);
        Self::open_with_limits(store, genesis, key, mempool, limits)
    }

    /// [`App::open`] with the mempool's bounds given. Re-admits every journaled transaction.
    pub fn open_with_limits(
        store: Store,
        genesis: Option<&Genesis>,
        key: SecretKey,
        mempool: MempoolConfig,
        limits: Limits,
    ) -> Result<App, NodeError> {
        let genesis = genesis.map(|g| NetworkGenesis {
            genesis: g.clone(),
            validators: Vec::new(),
        });
        Self::open_network_with_limits(store, genesis.as_ref(), key, mempool, limits)
    }

    /// Opens the chain of a network of validators: like [`App::open`], with a genesis that
    /// names the validators' consensus keys (the set of each height then comes from the ledger).
    pub fn open_network(
        store: Store,
        genesis: Option<&NetworkGenesis>,
        key: SecretKey,
        mempool: MempoolConfig,
    ) -> Result<App, NodeError> {
        let limits = Limits::for_config(mempool);
        Self::open_network_with_limits(store, genesis, key, mempool, limits)
    }

    fn open_network_with_limits(
        store: Store,
        network: Option<&NetworkGenesis>,
        key: SecretKey,
        mempool: MempoolConfig,
        limits: Limits,
    ) -> Result<App, NodeError> {
        let genesis = network.map(|n| &n.genesis);
        let head = store.head()?;
        let chain_id = match (head, genesis) {
            (None, None) => {
                return Err(NodeError::Genesis(
                    "the data directory is empty and no genesis was given".into(),
                ))
            }
            (None, Some(genesis)) => {
                let network = network.expect("a genesis comes with its network section");
                let writes = executor::init_network(network)
                    .map_err(|e| NodeError::Genesis(e.to_string()))?;
                let prepared = store.prepare(0, &writes)?;
                let document = serde_json::to_vec_pretty(network)
                    .map_err(|e| NodeError::Genesis(e.to_string()))?;
                let head = store.commit_genesis(&document, &writes, prepared)?;
                tracing::info!(chain_id = %genesis.chain_id, state_root = %head.state_root, "genesis committed");
                genesis.chain_id.clone()
            }
            (Some(_), given) => {
                let stored = executor::chain_id(&store.snapshot()?)
                    .ok_or_else(|| NodeError::Genesis("stored state has no chain id".into()))?;
                if let Some(genesis) = given {
                    if genesis.chain_id != stored {
                        return Err(NodeError::ChainMismatch {
                            stored,
                            given: genesis.chain_id.clone(),
                        });
                    }
                }
                stored
            }
        };
        let (committed, _) = broadcast::channel(COMMITTED_CHANNEL_CAPACITY);
        let metrics = Metrics::default();
        let mut pool = Mempool::with_limits(mempool, limits);
        if let Some(head) = store.head()? {
            metrics.set_height(head.height);
            pool.advance(head.height);
        }
        let app = App {
            store,
            chain_id,
            key,
            mempool: Mutex::new(pool),
            drops: Mutex::new(Vec::new()),
            pending: Mutex::new(None),
            committed,
            gossip_out: OnceLock::new(),
            consensus_store: OnceLock::new(),
            gossip_skipped: AtomicU64::new(0),
            admission_signatures: AtomicU64::new(0),
            verified: Mutex::new(VerifiedSignatures::new(VERIFIED_SIGNATURES_MAX)),
            metrics,
        };
        app.replay_journal()?;
        Ok(app)
    }

    /// Re-admits the journaled transactions (those acknowledged and not committed before the
    /// node stopped), in nonce order; records the ones that no longer pass as dropped.
    fn replay_journal(&self) -> Result<(), NodeError> {
        let mut entries = Vec::new();
        let mut committed = Vec::new();
        let mut dropped = Vec::new();
        for (hash, bytes) in self.store.journal_entries()? {
            if self.store.tx(&hash)?.is_some() {
                committed.push(hash);
                continue;
            }
            match SignedTransaction::decode_bytes(&bytes) {
                Ok(tx) if tx.hash() == hash => entries.push(tx),
                Ok(_) => dropped.push(drop_record(
                    hash,
                    ErrorCode::MalformedBytes,
                    "journal entry does not match its hash".into(),
                )),
                Err(e) => dropped.push(drop_record(
                    hash,
                    e.code,
                    format!("journal entry: {}", e.message),
                )),
            }
        }
        entries.sort_by_key(|tx| (tx.tx.nonce, tx.hash().0));
        let (mut readmitted, total) = (0usize, entries.len());
        let refs: Vec<&SignedTransaction> = entries.iter().collect();
        let checks = piazza_ledger::tx::verify_signatures(&refs);
        for (tx, check) in entries.into_iter().zip(checks) {
            let hash = tx.hash();
            match self.admit(tx, Signature::Checked(check)) {
                Ok(_) => readmitted += 1,
                Err(e) => dropped.push(drop_record(
                    hash,
                    e.code,
                    format!("not re-admitted after a restart: {}", e.message),
                )),
            }
        }
        if total > 0 || !dropped.is_empty() {
            tracing::info!(
                readmitted,
                dropped = dropped.len(),
                committed = committed.len(),
                "journaled transactions replayed"
            );
        }
        self.record_drops(dropped);
        self.store.journal_forget(&committed, &[])?;
        self.flush_drops()?;
        Ok(())
    }

    /// What became of `hash`, as far as this node knows (see the module's documentation for
    /// what an acknowledgement promises).
    pub fn transaction_status(&self, hash: &Hash) -> Result<TransactionStatus, StoreError> {
        if let Some((location, _)) = self.store.tx(hash)? {
            return Ok(TransactionStatus::Included {
                height: location.height,
            });
        }
        if self.mempool.lock().expect("mempool lock").contains(hash) {
            return Ok(TransactionStatus::Pending);
        }
        let buffered = {
            let drops = self.drops.lock().expect("drops lock");
            drops.iter().rev().find(|d| d.hash == *hash).cloned()
        };
        let dropped = match buffered {
            Some(drop) => Some(drop),
            None => self.store.dropped(hash)?,
        };
        Ok(match dropped {
            Some(drop) => TransactionStatus::Dropped {
                code: u16::try_from(drop.code)
                    .ok()
                    .and_then(ErrorCode::from_code)
                    .unwrap_or(ErrorCode::Internal),
                reason: drop.reason,
            },
            // Committed between the first look and now.
            None => match self.store.tx(hash)? {
                Some((location, _)) => TransactionStatus::Included {
                    height: location.height,
                },
                None => TransactionStatus::Unknown,
            },
        })
    }

    fn record_drops(&self, dropped: Vec<DroppedTx>) {
        if dropped.is_empty() {
            return;
        }
        for drop in &dropped {
            tracing::debug!(tx = %drop.hash, code = drop.code, reason = %drop.reason, "transaction dropped");
        }
        let waiting = {
            let mut drops = self.drops.lock().expect("drops lock");
            drops.extend(dropped);
            drops.len()
        };
        if waiting >= DROPS_BUFFERED_MAX {
            if let Err(e) = self.flush_drops() {
                tracing::error!(error = %e, "recording dropped transactions failed");
            }
        }
    }

    /// Writes buffered drops to the store (and removes them from the journal). The buffer is
    /// cleared only after the write, so a status lookup always finds a drop in one of the two.
    fn flush_drops(&self) -> Result<(), StoreError> {
        let mut drops = self.drops.lock().expect("drops lock");
        if drops.is_empty() {
            return Ok(());
        }
        self.store.journal_forget(&[], &drops)?;
        drops.clear();
        Ok(())
    }

    /// Maps the pool's removals (other than those of `committed` transactions) to drops.
    fn removals_to_drops(
        removed: Vec<Removed>,
        committed: &HashSet<Hash>,
        refused: Option<&TxError>,
    ) -> Vec<DroppedTx> {
        removed
            .into_iter()
            .filter(|r| !committed.contains(&r.hash))
            .map(|r| {
                let (code, reason) = match r.reason {
                    Removal::Expired => (
                        ErrorCode::NonceGap,
                        format!("expired: nonce {} waited on a missing earlier nonce of {} for the gapped lifetime", r.nonce, r.sender),
                    ),
                    Removal::Evicted => (
                        ErrorCode::MempoolFull,
                        format!("evicted: nonce {} of {} waited on a missing earlier nonce while the mempool needed room for executable transactions", r.nonce, r.sender),
                    ),
                    Removal::NonceUsed => (
                        ErrorCode::NonceReplayed,
                        format!("another transaction with nonce {} of {} was committed", r.nonce, r.sender),
                    ),
                    Removal::PredecessorRemoved { nonce } => (
                        ErrorCode::NonceGap,
                        format!("nonce {nonce} of {} was dropped, so nonce {} can never execute", r.sender, r.nonce),
                    ),
                    _ => match refused {
                        Some(e) => (e.code, format!("refused when its block was built: {}", e.message)),
                        None => (ErrorCode::Internal, "removed by the node".to_string()),
                    },
                };
                drop_record(r.hash, code, reason)
            })
            .collect()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn validator(&self) -> Address {
        self.key.public_key().address()
    }

    pub fn head(&self) -> Result<Head, StoreError> {
        Ok(self
            .store
            .head()?
            .expect("an open app has committed genesis"))
    }

    pub fn mempool_size(&self) -> usize {
        self.mempool.lock().expect("mempool lock").len()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBlock>> {
        self.committed.subscribe()
    }

    /// Admits a transaction from untrusted bytes; on `Ok` it is durably journaled (see the
    /// module's documentation).
    pub fn submit(&self, bytes: &[u8]) -> Result<Hash, TxError> {
        let result = SignedTransaction::decode_bytes(bytes)
            .and_then(|tx| self.admit(tx, Signature::Unchecked))
            .and_then(|hash| self.journal(vec![(hash, bytes.to_vec())]).map(|()| hash));
        self.metrics.record_admission(&result);
        if result.is_ok() {
            self.gossip_local(bytes.to_vec());
        }
        result
    }

    /// Admits decoded transactions, verifying their signatures across all cores first; the
    /// admitted ones are journaled together, in one durable write.
    pub fn submit_many(&self, txs: Vec<SignedTransaction>) -> Vec<Result<Hash, TxError>> {
        let gossiped = self.gossip_out.get().is_some();
        let bytes: Vec<Vec<u8>> = match gossiped {
            true => txs.iter().map(|tx| tx.to_bytes()).collect(),
            false => Vec::new(),
        };
        let results = self.admit_many(txs.into_iter().map(Ok).collect());
        self.gossip_admitted(&results, bytes);
        results
    }

    /// Admits transactions from untrusted bytes, each decoded under its bound, as
    /// [`App::submit_many`] does: signatures verified across all cores, the admitted ones
    /// journaled in one durable write and then gossiped. One result per input, in order; on
    /// `Ok` the transaction is durably journaled (see the module's documentation).
    pub fn submit_batch(&self, batch: Vec<Vec<u8>>) -> Vec<Result<Hash, TxError>> {
        let decoded = batch
            .iter()
            .map(|bytes| SignedTransaction::decode_bytes(bytes))
            .collect();
        let results = self.admit_many(decoded);
        self.gossip_admitted(&results, batch);
        results
    }

    /// Admits transactions a peer gossiped (untrusted bytes, each decoded under its bound);
    /// they are not gossiped again. Returns how many were admitted.
    pub fn submit_from_peers(&self, batch: Vec<Vec<u8>>) -> usize {
        let decoded = batch
            .iter()
            .map(|bytes| SignedTransaction::decode_bytes(bytes))
            .filter(|tx| tx.is_ok())
            .collect();
        self.admit_many(decoded)
            .iter()
            .filter(|result| result.is_ok())
            .count()
    }

    /// Gives this application its node's consensus store, once consensus has started (a
    /// second call is ignored): [`App::commit_certificate`] reads from it.
    pub fn set_consensus_store(&self, store: Arc<piazza_bft::store::ConsensusStore>) {
        let _ = self.consensus_store.set(store);
    }

    /// The commit certificate that decided `height`: `None` on a solo devnet (no consensus
    /// store) or when the height is not decided.
    pub fn commit_certificate(
        &self,
        height: u64,
    ) -> Result<
        Option<piazza_consensus::certificate::CommitCertificate>,
        piazza_bft::store::StoreError,
    > {
        match self.consensus_store.get() {
            Some(store) => store.decided_certificate(height),
            None => Ok(None),
        }
    }

    /// The gossip ends of this application: call once, before consensus starts (a second
    /// call returns `None`). Spawns the task that admits peers' batches; needs a Tokio runtime.
    pub fn gossip(self: &Arc<Self>) -> Option<TxGossip> {
        let (local_tx, local) = mpsc::channel(GOSSIP_LOCAL_CAPACITY);
        self.gossip_out.set(local_tx).ok()?;
        let (remote, mut batches) = mpsc::channel::<Vec<Vec<u8>>>(GOSSIP_REMOTE_CAPACITY);
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(mut batch) = batches.recv().await {
                // The batches already waiting are admitted with it, in their order: one
                // snapshot and one journal write for all, so admission keeps up with a flood.
                while batch.len() < GOSSIP_ADMITTED_TXS_MAX {
                    let Ok(next) = batches.try_recv() else { break };
                    batch.extend(next);
                }
                let Some(app) = app.upgrade() else { return };
                let admitted =
                    tokio::task::spawn_blocking(move || app.submit_from_peers(batch)).await;
                if let Err(e) = admitted {
                    tracing::error!(error = %e, "admitting gossiped transactions failed");
                }
            }
        });
        Some(TxGossip { local, remote })
    }

    /// Transactions admitted from clients that were not gossiped (the queue was full); they
    /// stay in this node's mempool.
    pub fn gossip_skipped(&self) -> u64 {
        self.gossip_skipped.load(Ordering::Relaxed)
    }

    /// Transaction signatures verified at admission since the node started (a transaction
    /// refused by the state checks costs none).
    pub fn admission_signatures(&self) -> u64 {
        self.admission_signatures.load(Ordering::Relaxed)
    }

    fn gossip_local(&self, bytes: Vec<u8>) {
        let Some(out) = self.gossip_out.get() else {
            return;
        };
        if out.try_send(bytes).is_err() {
            let skipped = self.gossip_skipped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(skipped, "gossip queue full: a transaction stays local");
        }
    }

    /// Gossips the admitted ones of a batch (`bytes`: the batch's encodings, in order; empty
    /// when nothing is gossiped).
    fn gossip_admitted(&self, results: &[Result<Hash, TxError>], bytes: Vec<Vec<u8>>) {
        if self.gossip_out.get().is_none() {
            return;
        }
        for (result, bytes) in results.iter().zip(bytes) {
            if result.is_ok() {
                self.gossip_local(bytes);
            }
        }
    }

    /// Admits a batch (an `Err` input is answered as it is): each transaction checked on one
    /// snapshot of the state exactly as [`App::submit`] checks it (the same checks in the same
    /// order, so the same error), the signatures of those that pass the state checks verified
    /// together across all cores (one refused by them, such as a gossiped transaction whose
    /// block was committed first, costs no verification), then one durable journal write for
    /// all the admitted ones.
    fn admit_many(
        &self,
        txs: Vec<Result<SignedTransaction, TxError>>,
    ) -> Vec<Result<Hash, TxError>> {
        let snapshot = self.store.snapshot().map_err(internal);
        let prechecked: Vec<Result<(SignedTransaction, Admission), TxError>> = txs
            .into_iter()
            .map(|tx| {
                let tx = tx?;
                let snapshot = snapshot.as_ref().map_err(Clone::clone)?;
                let admission = self.precheck(snapshot, &tx)?;
                Ok((tx, admission))
            })
            .collect();
        let refs: Vec<&SignedTransaction> = prechecked
            .iter()
            .filter_map(|checked| checked.as_ref().ok().map(|(tx, _)| tx))
            .collect();
        let (checks, verified) = self.verify_unseen(&refs);
        self.admission_signatures
            .fetch_add(verified as u64, Ordering::Relaxed);
        let mut checks = checks.into_iter();
        let mut entries = Vec::new();
        let mut results: Vec<Result<Hash, TxError>> = prechecked
            .into_iter()
            .map(|checked| {
                let (tx, admission) = checked?;
                checks
                    .next()
                    .expect("one signature check per transaction past the state checks")?;
                let snapshot = snapshot.as_ref().map_err(Clone::clone)?;
                let bytes = tx.to_bytes();
                let hash = self.insert_admitted(snapshot, tx, admission)?;
                entries.push((hash, bytes));
                Ok(hash)
            })
            .collect();
        drop(snapshot);
        if let Err(e) = self.journal(entries) {
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(e.clone());
                }
            }
        }
        for result in &results {
            self.metrics.record_admission(result);
        }
        results
    }

    /// Journals admitted transactions durably; if that fails they leave the pool again and the
    /// caller is refused (nothing unjournaled is acknowledged).
    fn journal(&self, entries: Vec<(Hash, Vec<u8>)>) -> Result<(), TxError> {
        let hashes: Vec<Hash> = entries.iter().map(|(h, _)| *h).collect();
        let Err(e) = self.store.journal_append(entries) else {
            return Ok(());
        };
        tracing::error!(error = %e, "journaling admitted transactions failed");
        let mut mempool = self.mempool.lock().expect("mempool lock");
        let mut removed = Vec::new();
        for hash in &hashes {
            removed.extend(mempool.remove_with_successors(hash));
        }
        // Successors that were acknowledged earlier are dropped, and said so.
        let refused: HashSet<Hash> = hashes.iter().copied().collect();
        let error = internal(e);
        let drops = Self::removals_to_drops(removed, &refused, Some(&error));
        self.record_drops(drops);
        drop(mempool);
        Err(error)
    }

    /// Runs the admission checks and inserts into the pool (not yet journaled).
    fn admit(&self, tx: SignedTransaction, signature: Signature) -> Result<Hash, TxError> {
        let snapshot = self.store.snapshot().map_err(internal)?;
        self.admit_on(&snapshot, tx, signature)
    }

    /// [`App::admit`] on a snapshot of the committed state that the caller took.
    fn admit_on(
        &self,
        snapshot: &dyn StateRead,
        tx: SignedTransaction,
        signature: Signature,
    ) -> Result<Hash, TxError> {
        let admission = self.precheck(snapshot, &tx)?;
        match signature {
            Signature::Unchecked => {
                let (mut checks, verified) = self.verify_unseen(&[&tx]);
                self.admission_signatures
                    .fetch_add(verified as u64, Ordering::Relaxed);
                checks.pop().expect("one check for one transaction")?
            }
            Signature::Checked(result) => result?,
        }
        self.insert_admitted(snapshot, tx, admission)
    }

    /// The admission checks that come before the signature: not pending already, and
    /// `executor::check_admission` on the snapshot.
    fn precheck(
        &self,
        snapshot: &dyn StateRead,
        tx: &SignedTransaction,
    ) -> Result<Admission, TxError> {
        let hash = tx.hash();
        let mempool = self.mempool.lock().expect("mempool lock");
        if mempool.contains(&hash) {
            return Err(TxError::new(
                piazza_ledger::ErrorCode::DuplicateTx,
                format!("transaction {hash} is already pending"),
            ));
        }
        let window = mempool.config().nonce_window;
        drop(mempool);
        executor::check_admission(snapshot, tx, window)
    }

    /// Inserts a transaction that passed [`App::precheck`] and whose signature is verified.
    fn insert_admitted(
        &self,
        snapshot: &dyn StateRead,
        tx: SignedTransaction,
        admission: Admission,
    ) -> Result<Hash, TxError> {
        let hash = tx.hash();
        let priority = priority(snapshot, &tx);
        let sender = tx.sender();
        let mut mempool = self.mempool.lock().expect("mempool lock");
        let mut removed = mempool.set_committed_nonce(&sender, admission.committed_nonce);
        removed.extend(mempool.insert(Arc::new(tx), admission.committed_nonce, priority)?);
        if !removed.is_empty() {
            self.record_drops(Self::removals_to_drops(removed, &HashSet::new(), None));
        }
        Ok(hash)
    }

    /// Builds and signs the block for `height` from the mempool; remembers its execution so that
    /// committing it does not execute twice.
    pub fn propose(&self, height: u64, time_ms: u64) -> Result<Block, AppError> {
        let head = self.head().map_err(app_error)?;
        if height != head.height + 1 {
            return Err(AppError(format!(
                "asked to propose height {height}, the head is {}",
                head.height
            )));
        }
        let snapshot = self.store.snapshot().map_err(app_error)?;
        let parent = executor::chain_head(&snapshot)
            .ok_or_else(|| AppError("state has no chain head".into()))?;
        let time_ms = time_ms.max(parent.time_ms);
        let (randomness, randomness_proof) =
            prove_randomness(&self.key, &self.chain_id, height, &parent.randomness);
        let context = BlockContext {
            chain_id: self.chain_id.clone(),
            height,
            time_ms,
            randomness,
            proposer: self.key.public_key(),
        };
        let candidates = self
            .mempool
            .lock()
            .expect("mempool lock")
            .reap(BLOCK_TXS_MAX, BLOCK_BYTES_MAX - BLOCK_FRAMING_BYTES);
        let mut executor = BlockExecutor::begin(&snapshot, context)
            .with_arbiter(&crate::arbitration::EngineArbiter);
        let mut included = Vec::with_capacity(candidates.len());
        let mut refused = Vec::new();
        for tx in candidates {
            match executor.apply_tx(&tx, true) {
                Ok(_) => included.push(SignedTransaction::clone(&tx)),
                Err(error) => {
                    tracing::debug!(tx = %tx.hash(), %error, "dropping a transaction that cannot be included");
                    refused.push((tx.hash(), error));
                }
            }
        }
        if !refused.is_empty() {
            let mempool = &mut self.mempool.lock().expect("mempool lock");
            let mut drops = Vec::new();
            for (hash, error) in &refused {
                let removed = mempool.remove_with_successors(hash);
                drops.extend(Self::removals_to_drops(
                    removed,
                    &HashSet::new(),
                    Some(error),
                ));
            }
            self.record_drops(drops);
        }
        let outcome = executor.finish();
        let prepared = self
            .store
            .prepare(height, &outcome.writes)
            .map_err(app_error)?;
        let header = BlockHeader {
            chain_id: self.chain_id.clone(),
            height,
            parent_hash: head.block_hash,
            time_ms,
            proposer: self.key.public_key(),
            tx_root: tx_root(&included),
            state_root: prepared.root,
            randomness,
            randomness_proof,
        };
        let signature = self.key.sign(&header.hash().0);
        let block = Block {
            header,
            txs: included,
            signature,
        };
        *self.pending.lock().expect("pending lock") = Some(Pending {
            block_hash: block.hash(),
            outcome,
            prepared,
        });
        Ok(block)
    }

    /// Commits a decided block. A block this node proposed (or validated) is committed from its
    /// remembered execution; any other block is executed first, and refused unless it extends
    /// the head and executes to its header's state root.
    pub fn commit(&self, block: Block) -> Result<Committed, AppError> {
        let started = std::time::Instant::now();
        let pending = self.pending.lock().expect("pending lock").take();
        let (outcome, prepared) = match pending {
            Some(p) if p.block_hash == block.hash() => (p.outcome, p.prepared),
            _ => self.execute_foreign(&block)?,
        };
        let head = self
            .store
            .commit_block(&block, &outcome, prepared)
            .map_err(app_error)?;
        let mut next_nonces: BTreeMap<Address, u64> = BTreeMap::new();
        for tx in &block.txs {
            let next = next_nonces.entry(tx.sender()).or_default();
            *next = (*next).max(tx.tx.nonce + 1);
        }
        {
            let included: HashSet<Hash> = block.txs.iter().map(|tx| tx.hash()).collect();
            let mut mempool = self.mempool.lock().expect("mempool lock");
            let mut removed = Vec::new();
            for (sender, nonce) in &next_nonces {
                removed.extend(mempool.set_committed_nonce(sender, *nonce));
            }
            removed.extend(mempool.advance(head.height));
            self.record_drops(Self::removals_to_drops(removed, &included, None));
        }
        if let Err(e) = self.flush_drops() {
            tracing::error!(error = %e, "recording dropped transactions failed");
        }
        let txs = block.txs.len();
        self.metrics
            .record_commit(head.height, txs, started.elapsed());
        let committed = CommittedBlock {
            block,
            receipts: outcome.receipts,
            events: outcome.events,
        };
        // Nobody listening is fine.
        let _ = self.committed.send(Arc::new(committed));
        Ok(Committed {
            height: head.height,
            txs,
        })
    }

    /// Validates another validator's proposal for the next height by executing it on the head;
    /// remembers the execution so that committing the same block does not execute it again.
    pub fn validate(&self, block: Block) -> Result<(), AppError> {
        let (outcome, prepared) = self.execute_foreign(&block)?;
        *self.pending.lock().expect("pending lock") = Some(Pending {
            block_hash: block.hash(),
            outcome,
            prepared,
        });
        Ok(())
    }

    fn execute_foreign(&self, block: &Block) -> Result<(BlockOutcome, PreparedState), AppError> {
        let head = self.head().map_err(app_error)?;
        if block.header.parent_hash != head.block_hash {
            return Err(AppError(format!(
                "block {} does not extend the head {}",
                block.header.height, head.block_hash
            )));
        }
        let snapshot = self.store.snapshot().map_err(app_error)?;
        let signatures_checked = self.verify_block_signatures(block);
        let outcome = executor::execute_block(
            &snapshot,
            block,
            signatures_checked,
            &crate::arbitration::EngineArbiter,
        )
        .map_err(|e| AppError(e.to_string()))?;
        let prepared = self
            .store
            .prepare(block.header.height, &outcome.writes)
            .map_err(app_error)?;
        // Never commit a block whose header disagrees with its execution here: that is a
        // fork of state, not a block of this chain.
        if prepared.root != block.header.state_root {
            return Err(AppError(format!(
                "block {} executes to state root {}, its header says {}",
                block.header.height, prepared.root, block.header.state_root
            )));
        }
        Ok((outcome, prepared))
    }

    /// Verifies the signatures of another validator's block once here (see
    /// [`App::verify_unseen`]: only those not seen valid before). `true` when every signature
    /// is valid; `false` leaves every check to the executor, which then refuses the block
    /// exactly as it would have without this step.
    fn verify_block_signatures(&self, block: &Block) -> bool {
        let txs: Vec<&SignedTransaction> = block.txs.iter().collect();
        let (checks, verified) = self.verify_unseen(&txs);
        self.metrics
            .record_block_signatures(verified, txs.len() - verified);
        checks.iter().all(|check| check.is_ok())
    }

    /// The signature check of each of `txs`, in order, verifying (across all cores) only those
    /// not known valid already: a transaction in the mempool passed verification at admission,
    /// and `verified` remembers the others found valid (a hash covers every byte, signature
    /// included, so its validity never changes). Remembers the newly valid ones; also returns
    /// how many were verified here.
    fn verify_unseen(&self, txs: &[&SignedTransaction]) -> (Vec<Result<(), TxError>>, usize) {
        let known: Vec<bool> = {
            let mempool = self.mempool.lock().expect("mempool lock");
            let verified = self.verified.lock().expect("verified lock");
            txs.iter()
                .map(|tx| verified.contains(&tx.hash()) || mempool.contains(&tx.hash()))
                .collect()
        };
        let unseen: Vec<&SignedTransaction> = txs
            .iter()
            .zip(&known)
            .filter(|(_, known)| !**known)
            .map(|(tx, _)| *tx)
            .collect();
        let mut fresh = piazza_ledger::tx::verify_signatures(&unseen).into_iter();
        let checks: Vec<Result<(), TxError>> = known
            .iter()
            .map(|known| match known {
                true => Ok(()),
                false => fresh.next().expect("one check per unseen transaction"),
            })
            .collect();
        let mut verified = self.verified.lock().expect("verified lock");
        for ((tx, known), check) in txs.iter().zip(&known).zip(&checks) {
            if !known && check.is_ok() {
                verified.insert(tx.hash());
            }
        }
        (checks, unseen.len())
    }

    /// The validator set of `height` from committed state: `None` for a chain without
    /// validator records; an error for a height beyond the head plus `VALIDATOR_SET_DELAY`.
    /// A height at or below the head is read from the state committed before it.
    pub fn validator_set(&self, height: u64) -> Result<Option<Vec<ActiveValidator>>, AppError> {
        let head = self.head().map_err(app_error)?;
        if height > head.height.saturating_add(VALIDATOR_SET_DELAY) {
            return Err(AppError(format!(
                "the validator set of height {height} is not known at head {}",
                head.height
            )));
        }
        let set = if height > head.height {
            let snapshot = self.store.snapshot().map_err(app_error)?;
            validators::validator_set(&StateDelta::new(&snapshot), height)
        } else {
            let key = piazza_ledger::staking::state_key::validator_schedule();
            let (value, _) = self
                .store
                .get_with_proof(&key, height.saturating_sub(1))
                .map_err(app_error)?;
            let state: BTreeMap<Vec<u8>, Vec<u8>> = value.map(|v| (key, v)).into_iter().collect();
            validators::validator_set(&StateDelta::new(&state), height)
        };
        Ok(set.map(|s| s.validators))
    }

    /// Serves the consensus boundary until the channel closes.
    pub async fn serve(self: Arc<Self>, mut requests: mpsc::Receiver<AppMsg>) {
        while let Some(msg) = requests.recv().await {
            let app = self.clone();
            let handled = tokio::task::spawn_blocking(move || app.handle(msg)).await;
            if let Err(e) = handled {
                tracing::error!(error = %e, "application task failed");
                return;
            }
        }
    }

    /// Answers one consensus request.
    pub fn handle(&self, msg: AppMsg) {
        match msg {
            AppMsg::ConsensusReady { reply } => {
                let next = self.head().map(|h| h.height + 1).unwrap_or(1);
                let _ = reply.send(next);
            }
            AppMsg::GetValue {
                height,
                time_ms,
                reply,
            } => {
                let _ = reply.send(self.propose(height, time_ms));
            }
            AppMsg::Decided { block, reply } => {
                let result = self.commit(*block);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "commit failed");
                }
                let _ = reply.send(result);
            }
            AppMsg::ValidateValue { block, reply } => {
                let _ = reply.send(self.validate(*block));
            }
            AppMsg::GetDecidedValue { height, reply } => {
                let _ = reply.send(self.store.block(height).ok().flatten());
            }
            AppMsg::GetValidatorSet { height, reply } => {
                let _ = reply.send(self.validator_set(height));
            }
        }
    }
}

fn app_error(e: StoreError) -> AppError {
    AppError(e.to_string())
}

fn drop_record(hash: Hash, code: ErrorCode, reason: String) -> DroppedTx {
    DroppedTx {
        hash,
        code: u32::from(code.code()),
        reason,
    }
}

/// Whether a transaction is its sender's protocol duty: every message is one the sender is
/// obliged to send now (a result for, or the decline of, a job assigned to it, an attestation,
/// a challenge or a dispute move in an audit or dispute it is part of, the reveal of a session
/// receipt drawn for audit from its own commit, the answer to a storage challenge on a shard it
/// holds) or evidence a waiting dispute needs. Everything
/// else, including a duty message from someone not obliged to send it, is ordinary. This is the only place that maps messages to a mempool [`Priority`].
pub fn priority(state: &dyn StateRead, tx: &SignedTransaction) -> Priority {
    let view = StateDelta::new(state);
    let sender = tx.sender();
    let mut tasks: Option<Vec<u64>> = None;
    let mut in_tasks = |job: u64| {
        tasks
            .get_or_insert_with(|| verify::tasks(&view, &sender))
            .contains(&job)
    };
    let duty = |message: &Message, in_tasks: &mut dyn FnMut(u64) -> bool| {
        match message {
        Message::Compute(
            compute::Msg::PostResult { job, .. } | compute::Msg::DeclineJob { job, .. },
        ) => compute::job(&view, *job)
            .is_some_and(|j| {
                matches!(j.status, compute::JobStatus::Assigned { provider, .. } if provider == sender)
            }),
        Message::Verify(
            verify::Msg::Attest { job }
            | verify::Msg::Reveal { job, .. }
            | verify::Msg::Challenge { job, .. },
        ) => in_tasks(*job),
        // Admission already requires a dispute waiting for it.
        Message::Verify(verify::Msg::Arbitrate { .. }) => true,
        // A reveal the sender's own commit owes before its deadline.
        Message::Sessions(sessions::Msg::Reveal { commit, index, .. }) => {
            sessions::commit(&view, *commit).is_some_and(|c| {
                c.provider == sender && !c.audits_closed && c.audited.binary_search(index).is_ok()
            })
        }
        // The answer to an open challenge on a shard the sender holds.
        Message::Storage(storage::Msg::AnswerChallenge {
            deal,
            shard,
            chunk_index,
            ..
        }) => storage::deal(&view, *deal).is_some_and(|d| {
            d.status == storage::DealStatus::Active
                && d.shards.get(usize::from(*shard)).is_some_and(|s| {
                    s.provider == Some(sender)
                        && s.challenge
                            .as_ref()
                            .is_some_and(|c| c.chunk_index == *chunk_index)
                })
        }),
        _ => false,
    }
    };
    if !tx.tx.messages.is_empty() && tx.tx.messages.iter().all(|m| duty(m, &mut in_tasks)) {
        Priority::Duty
    } else {
        Priority::Ordinary
    }
}

fn internal(e: StoreError) -> TxError {
    TxError::new(
        piazza_ledger::ErrorCode::Internal,
        format!("node storage: {e}"),
    )
}

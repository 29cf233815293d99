//! The application behind the consensus boundary: admits transactions, builds blocks, commits
//! decided blocks.

use crate::metrics::Metrics;
use piazza_consensus::{AppError, AppMsg, Committed};
use piazza_ledger::block::{
    prove_randomness, tx_root, Block, BlockHeader, Event, Receipt, BLOCK_BYTES_MAX, BLOCK_TXS_MAX,
};
use piazza_ledger::error::TxError;
use piazza_ledger::executor::{self, BlockExecutor, BlockOutcome};
use piazza_ledger::genesis::Genesis;
use piazza_ledger::module::BlockContext;
use piazza_ledger::tx::SignedTransaction;
use piazza_mempool::{Mempool, MempoolConfig};
use piazza_primitives::{Address, Hash, SecretKey};
use piazza_store::{Head, PreparedState, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc};

/// Room left in a block for its header and framing.
const BLOCK_FRAMING_BYTES: usize = 4096;
/// Committed blocks buffered for subscribers before slow ones start missing blocks.
const COMMITTED_CHANNEL_CAPACITY: usize = 256;

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

pub struct App {
    store: Store,
    chain_id: String,
    key: SecretKey,
    mempool: Mutex<Mempool>,
    pending: Mutex<Option<Pending>>,
    committed: broadcast::Sender<Arc<CommittedBlock>>,
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
        let head = store.head()?;
        let chain_id = match (head, genesis) {
            (None, None) => {
                return Err(NodeError::Genesis(
                    "the data directory is empty and no genesis was given".into(),
                ))
            }
            (None, Some(genesis)) => {
                let writes =
                    executor::init_chain(genesis).map_err(|e| NodeError::Genesis(e.to_string()))?;
                let prepared = store.prepare(0, &writes)?;
                let document = serde_json::to_vec_pretty(genesis)
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
        if let Some(head) = store.head()? {
            metrics.set_height(head.height);
        }
        Ok(App {
            store,
            chain_id,
            key,
            mempool: Mutex::new(Mempool::new(mempool)),
            pending: Mutex::new(None),
            committed,
            metrics,
        })
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

    /// Admits a transaction from untrusted bytes.
    pub fn submit(&self, bytes: &[u8]) -> Result<Hash, TxError> {
        let result = SignedTransaction::decode_bytes(bytes).and_then(|tx| self.admit(tx, false));
        self.metrics.record_admission(&result);
        result
    }

    /// Admits decoded transactions, verifying their signatures across all cores first.
    pub fn submit_many(&self, txs: Vec<SignedTransaction>) -> Vec<Result<Hash, TxError>> {
        let refs: Vec<&SignedTransaction> = txs.iter().collect();
        let checks = piazza_ledger::tx::verify_signatures(&refs);
        txs.into_iter()
            .zip(checks)
            .map(|(tx, check)| {
                let result = check.and_then(|()| self.admit(tx, true));
                self.metrics.record_admission(&result);
                result
            })
            .collect()
    }

    fn admit(&self, tx: SignedTransaction, signature_checked: bool) -> Result<Hash, TxError> {
        let hash = tx.hash();
        if self.mempool.lock().expect("mempool lock").contains(&hash) {
            return Err(TxError::new(
                piazza_ledger::ErrorCode::DuplicateTx,
                format!("transaction {hash} is already pending"),
            ));
        }
        let snapshot = self.store.snapshot().map_err(internal)?;
        let window = self
            .mempool
            .lock()
            .expect("mempool lock")
            .config()
            .nonce_window;
        let admission = executor::check_admission(&snapshot, &tx, window)?;
        if !signature_checked {
            tx.verify_signature()?;
        }
        self.mempool.lock().expect("mempool lock").insert(
            Arc::new(tx),
            admission.committed_nonce,
            piazza_mempool::Priority::Ordinary,
        )?;
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
        let mut executor = BlockExecutor::begin(&snapshot, context);
        let mut included = Vec::with_capacity(candidates.len());
        let mut refused = Vec::new();
        for tx in candidates {
            match executor.apply_tx(&tx, true) {
                Ok(_) => included.push(SignedTransaction::clone(&tx)),
                Err(error) => {
                    tracing::debug!(tx = %tx.hash(), %error, "dropping a transaction that cannot be included");
                    refused.push(tx.hash());
                }
            }
        }
        if !refused.is_empty() {
            let mut mempool = self.mempool.lock().expect("mempool lock");
            for hash in &refused {
                mempool.remove_with_successors(hash);
            }
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

    /// Commits a decided block. A block this node proposed is committed from its remembered
    /// execution; any other block is validated and executed first.
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
            let mut mempool = self.mempool.lock().expect("mempool lock");
            for (sender, nonce) in &next_nonces {
                mempool.set_committed_nonce(sender, *nonce);
            }
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

    fn execute_foreign(&self, block: &Block) -> Result<(BlockOutcome, PreparedState), AppError> {
        let head = self.head().map_err(app_error)?;
        if block.header.parent_hash != head.block_hash {
            return Err(AppError(format!(
                "block {} does not extend the head {}",
                block.header.height, head.block_hash
            )));
        }
        let snapshot = self.store.snapshot().map_err(app_error)?;
        let outcome = executor::execute_block(&snapshot, block, false)
            .map_err(|e| AppError(e.to_string()))?;
        let prepared = self
            .store
            .prepare(block.header.height, &outcome.writes)
            .map_err(app_error)?;
        Ok((outcome, prepared))
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
            AppMsg::GetDecidedValue { height, reply } => {
                let _ = reply.send(self.store.block(height).ok().flatten());
            }
        }
    }
}

fn app_error(e: StoreError) -> AppError {
    AppError(e.to_string())
}

fn internal(e: StoreError) -> TxError {
    TxError::new(
        piazza_ledger::ErrorCode::Internal,
        format!("node storage: {e}"),
    )
}

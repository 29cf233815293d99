//! The node's disk: blocks, transactions, receipts, events and the versioned, authenticated state,
//! all in one redb database.
//!
//! Invariants:
//! - One block is one redb write transaction: its block, transactions, receipts, state writes,
//!   tree nodes and the new head become durable together or not at all. redb's copy-on-write
//!   commit with fsync means a process killed at any instant reopens at the last committed block.
//! - State version `h` is the state after block `h` (version 0 is genesis); its root is the
//!   header's `state_root`.
//! - There is one writer (the node's application task); readers see committed data only.
//! - The store interprets nothing: it knows blocks and key-value writes, not modules.
//! - Everything read back is bounded by the limit it was written under: a block's hook events
//!   by [`BLOCK_EVENTS_MAX`] (a block with more is refused at commit, never truncated).
//! - The transaction journal ([`Store::journal_append`]) holds transactions the node accepted
//!   but has not committed; a block's commit removes its transactions from it in the same
//!   write transaction. Drops are remembered for the most recent [`DROPPED_REMEMBERED_MAX`].
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! let store = piazza_store::Store::open(&dir.path().join("chain.redb")).unwrap();
//! assert!(store.head().unwrap().is_none());
//! ```

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Version};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_ledger::block::{Block, Event, Receipt};
use piazza_ledger::executor::{BlockOutcome, Writes};
use piazza_ledger::state::StateRead;
use piazza_ledger::tx::SignedTransaction;
use piazza_merkle::{key_hash, StateProof, Tree, TreeUpdateBatch};
use piazza_primitives::Hash;
use redb::{Database, ReadableTableMetadata, TableDefinition};
use std::path::Path;
use thiserror::Error;

mod journal;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const TREE_NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tree_nodes");
/// `key_hash ‖ version (big-endian)` → `0` (deleted) or `1 ‖ value`.
const TREE_VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tree_values");
const ROOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("state_roots");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const BLOCK_HEIGHTS: TableDefinition<&[u8], u64> = TableDefinition::new("block_heights");
const BLOCK_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("block_events");
/// tx hash → `height ‖ index ‖ signed transaction`.
const TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("txs");
const RECEIPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("receipts");
/// tx hash → signed transaction: accepted, not yet committed (the journal).
const PENDING_TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pending_txs");
/// tx hash → `sequence ‖ code (u32) ‖ reason`: recently dropped transactions.
const DROPPED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dropped_txs");
/// sequence → tx hash: the order drops were recorded in, oldest first.
const DROPPED_ORDER: TableDefinition<u64, &[u8]> = TableDefinition::new("dropped_order");

/// Most events a block's hooks may emit: a block with more is refused at commit, and stored
/// events are read back with this bound.
pub const BLOCK_EVENTS_MAX: usize = 1 << 20;
/// Most dropped transactions remembered; recording one more forgets the oldest.
pub const DROPPED_REMEMBERED_MAX: usize = 1 << 16;
/// Longest drop reason kept, in bytes (longer ones are cut at a character boundary).
pub const DROP_REASON_BYTES_MAX: usize = 512;

const HEAD: &str = "head";
const GENESIS: &str = "genesis";

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Boxed: redb's error is large and every store call returns this type.
    #[error("database: {0}")]
    Database(Box<redb::Error>),
    #[error("state tree: {0}")]
    Tree(String),
    #[error("stored bytes do not decode ({what}): {error}")]
    Corrupt {
        what: &'static str,
        error: DecodeError,
    },
    #[error("block {got} does not follow the head {head:?}")]
    NotNext { head: Option<u64>, got: u64 },
    #[error("state root of block {height} is {computed}, the header says {header}")]
    StateRootMismatch {
        height: u64,
        computed: Hash,
        header: Hash,
    },
    #[error("genesis is already committed")]
    GenesisExists,
    #[error("block {height} emits {events} hook events, more than the {max} a block may store")]
    TooManyEvents {
        height: u64,
        events: usize,
        max: usize,
    },
    #[error("journal write failed: {0}")]
    Journal(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Database(Box::new(e.into())) }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn corrupt(what: &'static str) -> impl FnOnce(DecodeError) -> StoreError {
    move |error| StoreError::Corrupt { what, error }
}

/// The last committed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub height: u64,
    pub block_hash: Hash,
    pub state_root: Hash,
}

impl Encode for Head {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.height);
        w.value(&self.block_hash);
        w.value(&self.state_root);
    }
}

impl Decode for Head {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Head {
            height: r.u64()?,
            block_hash: r.value()?,
            state_root: r.value()?,
        })
    }
}

/// Where a transaction was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
}

/// A state root computed for writes that are not yet committed.
pub struct PreparedState {
    pub version: Version,
    pub root: Hash,
    batch: TreeUpdateBatch,
}

/// A transaction the node dropped, as remembered: a stable error code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTx {
    pub hash: Hash,
    pub code: u32,
    pub reason: String,
}

pub struct Store {
    db: Database,
    journal: journal::GroupCommit,
}

impl Store {
    /// Opens (or creates) the database. After a crash redb recovers to its last commit.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(META)?;
            txn.open_table(STATE)?;
            txn.open_table(TREE_NODES)?;
            txn.open_table(TREE_VALUES)?;
            txn.open_table(ROOTS)?;
            txn.open_table(BLOCKS)?;
            txn.open_table(BLOCK_HEIGHTS)?;
            txn.open_table(BLOCK_EVENTS)?;
            txn.open_table(TXS)?;
            txn.open_table(RECEIPTS)?;
            txn.open_table(PENDING_TXS)?;
            txn.open_table(DROPPED)?;
            txn.open_table(DROPPED_ORDER)?;
        }
        txn.commit()?;
        Ok(Store {
            db,
            journal: journal::GroupCommit::default(),
        })
    }

    pub fn head(&self) -> Result<Option<Head>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let value = meta.get(HEAD)?;
        value
            .map(|v| Head::from_bytes(v.value()).map_err(corrupt("head")))
            .transpose()
    }

    /// The genesis document as committed.
    pub fn genesis(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let value = meta.get(GENESIS)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// A consistent view of the latest committed state.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read()?;
        let state = txn.open_table(STATE)?;
        Ok(Snapshot { state })
    }

    /// Computes the state root of `version` = the committed state plus `writes`, without
    /// writing anything.
    pub fn prepare(&self, version: Version, writes: &Writes) -> Result<PreparedState, StoreError> {
        let txn = self.db.begin_read()?;
        let reader = TreeTables {
            nodes: txn.open_table(TREE_NODES)?,
            values: txn.open_table(TREE_VALUES)?,
        };
        let value_set = writes.iter().map(|(k, v)| (key_hash(k), v.clone()));
        let (root, batch) = Tree::new(&reader)
            .put_value_set(value_set, version)
            .map_err(|e| StoreError::Tree(e.to_string()))?;
        Ok(PreparedState {
            version,
            root: Hash(root.0),
            batch,
        })
    }

    /// Commits the genesis state as version 0.
    pub fn commit_genesis(
        &self,
        genesis_document: &[u8],
        writes: &Writes,
        prepared: PreparedState,
    ) -> Result<Head, StoreError> {
        if self.head()?.is_some() {
            return Err(StoreError::GenesisExists);
        }
        let head = Head {
            height: 0,
            block_hash: Hash::ZERO,
            state_root: prepared.root,
        };
        let txn = self.db.begin_write()?;
        {
            write_state(&txn, writes, &prepared)?;
            let mut meta = txn.open_table(META)?;
            meta.insert(GENESIS, genesis_document)?;
            meta.insert(HEAD, head.to_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(head)
    }

    /// Commits a block with its execution outcome and prepared state, atomically and durably.
    pub fn commit_block(
        &self,
        block: &Block,
        outcome: &BlockOutcome,
        prepared: PreparedState,
    ) -> Result<Head, StoreError> {
        let height = block.header.height;
        if outcome.events.len() > BLOCK_EVENTS_MAX {
            return Err(StoreError::TooManyEvents {
                height,
                events: outcome.events.len(),
                max: BLOCK_EVENTS_MAX,
            });
        }
        let current = self.head()?;
        if current.map(|h| h.height + 1) != Some(height) || prepared.version != height {
            return Err(StoreError::NotNext {
                head: current.map(|h| h.height),
                got: height,
            });
        }
        if prepared.root != block.header.state_root {
            return Err(StoreError::StateRootMismatch {
                height,
                computed: prepared.root,
                header: block.header.state_root,
            });
        }
        let block_hash = block.hash();
        let head = Head {
            height,
            block_hash,
            state_root: prepared.root,
        };
        let txn = self.db.begin_write()?;
        {
            write_state(&txn, &outcome.writes, &prepared)?;
            txn.open_table(BLOCKS)?
                .insert(height, block.to_bytes().as_slice())?;
            txn.open_table(BLOCK_HEIGHTS)?
                .insert(block_hash.0.as_slice(), height)?;
            let mut events = Writer::new();
            events.seq(&outcome.events);
            txn.open_table(BLOCK_EVENTS)?
                .insert(height, events.into_bytes().as_slice())?;
            let mut txs = txn.open_table(TXS)?;
            let mut receipts = txn.open_table(RECEIPTS)?;
            let mut pending = txn.open_table(PENDING_TXS)?;
            for (index, (tx, receipt)) in block.txs.iter().zip(&outcome.receipts).enumerate() {
                pending.remove(tx.hash().0.as_slice())?;
                let mut w = Writer::new();
                w.u64(height);
                w.u32(index as u32);
                w.value(tx);
                txs.insert(tx.hash().0.as_slice(), w.into_bytes().as_slice())?;
                receipts.insert(tx.hash().0.as_slice(), receipt.to_bytes().as_slice())?;
            }
            txn.open_table(META)?
                .insert(HEAD, head.to_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(head)
    }

    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        let value = table.get(height)?;
        value
            .map(|v| Block::from_bytes(v.value()).map_err(corrupt("block")))
            .transpose()
    }

    pub fn block_height(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOCK_HEIGHTS)?;
        let value = table.get(hash.0.as_slice())?;
        Ok(value.map(|v| v.value()))
    }

    pub fn block_events(&self, height: u64) -> Result<Vec<Event>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOCK_EVENTS)?;
        let value = table.get(height)?;
        match value {
            None => Ok(Vec::new()),
            Some(v) => Reader::new(v.value())
                .seq(BLOCK_EVENTS_MAX)
                .map_err(corrupt("block events")),
        }
    }

    pub fn tx(&self, hash: &Hash) -> Result<Option<(TxLocation, SignedTransaction)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TXS)?;
        let Some(value) = table.get(hash.0.as_slice())? else {
            return Ok(None);
        };
        let mut r = Reader::new(value.value());
        let decode = |r: &mut Reader<'_>| -> Result<_, DecodeError> {
            let location = TxLocation {
                height: r.u64()?,
                index: r.u32()?,
            };
            let tx = r.value()?;
            r.finish()?;
            Ok((location, tx))
        };
        decode(&mut r).map(Some).map_err(corrupt("transaction"))
    }

    pub fn receipt(&self, hash: &Hash) -> Result<Option<Receipt>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECEIPTS)?;
        let value = table.get(hash.0.as_slice())?;
        value
            .map(|v| Receipt::from_bytes(v.value()).map_err(corrupt("receipt")))
            .transpose()
    }

    pub fn state_root(&self, version: Version) -> Result<Option<Hash>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ROOTS)?;
        let value = table.get(version)?;
        value
            .map(|v| Hash::from_bytes(v.value()).map_err(corrupt("state root")))
            .transpose()
    }

    /// The value of `key` at `version` with a proof against that version's state root.
    pub fn get_with_proof(
        &self,
        key: &[u8],
        version: Version,
    ) -> Result<(Option<Vec<u8>>, StateProof), StoreError> {
        let txn = self.db.begin_read()?;
        let reader = TreeTables {
            nodes: txn.open_table(TREE_NODES)?,
            values: txn.open_table(TREE_VALUES)?,
        };
        let (value, proof) = Tree::new(&reader)
            .get_with_proof(key_hash(key), version)
            .map_err(|e| StoreError::Tree(e.to_string()))?;
        Ok((value, StateProof::new(proof)))
    }

    /// Number of committed transactions (for metrics and tests).
    pub fn tx_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(TXS)?.len()?)
    }
}

fn write_state(
    txn: &redb::WriteTransaction,
    writes: &Writes,
    prepared: &PreparedState,
) -> Result<(), StoreError> {
    let mut state = txn.open_table(STATE)?;
    for (key, value) in writes {
        match value {
            Some(v) => state.insert(key.as_slice(), v.as_slice())?,
            None => state.remove(key.as_slice())?,
        };
    }
    let mut nodes = txn.open_table(TREE_NODES)?;
    for (key, node) in prepared.batch.node_batch.nodes() {
        let key = borsh::to_vec(key).expect("node keys serialize");
        let node = borsh::to_vec(node).expect("nodes serialize");
        nodes.insert(key.as_slice(), node.as_slice())?;
    }
    let mut values = txn.open_table(TREE_VALUES)?;
    for ((version, key_hash), value) in prepared.batch.node_batch.values() {
        let key = value_key(*key_hash, *version);
        let mut bytes = Vec::with_capacity(1 + value.as_ref().map_or(0, |v| v.len()));
        match value {
            None => bytes.push(0),
            Some(v) => {
                bytes.push(1);
                bytes.extend_from_slice(v);
            }
        }
        values.insert(key.as_slice(), bytes.as_slice())?;
    }
    txn.open_table(ROOTS)?
        .insert(prepared.version, prepared.root.to_bytes().as_slice())?;
    Ok(())
}

fn value_key(key_hash: KeyHash, version: Version) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&key_hash.0);
    key[32..].copy_from_slice(&version.to_be_bytes());
    key
}

/// The latest committed state, read through one redb read transaction.
pub struct Snapshot {
    state: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl StateRead for Snapshot {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        // A failing disk read of committed state is not recoverable here; the node restarts
        // from its last committed block.
        let value = self
            .state
            .get(key)
            .unwrap_or_else(|e| panic!("reading committed state failed: {e}"));
        value.map(|v| v.value().to_vec())
    }
}

struct TreeTables {
    nodes: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    values: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl TreeReader for TreeTables {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let key = borsh::to_vec(node_key)?;
        let Some(value) = self.nodes.get(key.as_slice())? else {
            return Ok(None);
        };
        Ok(Some(borsh::from_slice(value.value())?))
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        let start = value_key(key_hash, 0);
        let end = value_key(key_hash, max_version);
        let mut range = self.values.range(start.as_slice()..=end.as_slice())?;
        let Some(entry) = range.next_back() else {
            return Ok(None);
        };
        let (_, value) = entry?;
        let bytes = value.value();
        match bytes.first() {
            Some(1) => Ok(Some(bytes[1..].to_vec())),
            Some(0) => Ok(None),
            _ => anyhow::bail!("corrupt tree value"),
        }
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("rightmost-leaf lookups (tree restore) are not supported")
    }
}

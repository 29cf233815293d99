//! Authenticated state for Piazza: a Jellyfish Merkle Tree (the `jmt` crate) hashed with BLAKE3,
//! and state proofs a light client can check against a block's state root.
//!
//! Invariants:
//! - A state key is placed in the tree at `BLAKE3(key)`; the tree commits to `BLAKE3(value)`.
//! - Proof bytes from outside are decoded with a size limit and never trusted: only
//!   [`StateProof::verify`] against a root the caller already trusts says anything.
//! - This crate knows no storage engine: `piazza-store` implements the tree's reader over redb.
//!
//! ```
//! use piazza_merkle::{key_hash, Tree, MemoryTreeStore, StateProof};
//! let store = MemoryTreeStore::default();
//! let (root, batch) = Tree::new(&store).put_value_set([(key_hash(b"k"), Some(b"v".to_vec()))], 0).unwrap();
//! store.write(batch.node_batch);
//! let (value, proof) = Tree::new(&store).get_with_proof(key_hash(b"k"), 0).unwrap();
//! let proof = StateProof::from_bytes(&StateProof::new(proof).to_bytes()).unwrap();
//! assert!(proof.verify(piazza_primitives::Hash(root.0), b"k", value.as_deref()).is_ok());
//! assert!(proof.verify(piazza_primitives::Hash(root.0), b"k", Some(b"w")).is_err());
//! ```

use jmt::proof::SparseMerkleProof;
use jmt::storage::{LeafNode, Node, NodeBatch, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, SimpleHasher, Version};
use piazza_primitives::Hash;
use std::collections::BTreeMap;
use std::sync::RwLock;
use thiserror::Error;

pub use jmt::storage::TreeUpdateBatch;

/// Largest encoded state proof accepted from outside.
pub const PROOF_BYTES_MAX: usize = 64 * 1024;

/// BLAKE3 as the tree's hash function.
#[derive(Clone)]
pub struct Blake3Hasher(blake3::Hasher);

impl SimpleHasher for Blake3Hasher {
    fn new() -> Self {
        Blake3Hasher(blake3::Hasher::new())
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finalize(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

pub type Tree<'a, R> = jmt::JellyfishMerkleTree<'a, R, Blake3Hasher>;

/// Where a state key lives in the tree.
pub fn key_hash(key: &[u8]) -> KeyHash {
    KeyHash::with::<Blake3Hasher>(key)
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("proof is {0} bytes, the limit is {PROOF_BYTES_MAX}")]
    TooLarge(usize),
    #[error("proof does not decode: {0}")]
    Malformed(String),
    #[error("proof does not verify against the root: {0}")]
    Mismatch(String),
}

/// A proof that a key holds a value (or nothing) under a state root.
#[derive(Debug, Clone)]
pub struct StateProof(SparseMerkleProof<Blake3Hasher>);

impl StateProof {
    pub fn new(proof: SparseMerkleProof<Blake3Hasher>) -> Self {
        StateProof(proof)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        borsh::to_vec(&self.0).expect("a proof always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() > PROOF_BYTES_MAX {
            return Err(ProofError::TooLarge(bytes.len()));
        }
        borsh::from_slice(bytes)
            .map(StateProof)
            .map_err(|e| ProofError::Malformed(e.to_string()))
    }

    /// Checks that `key` holds `value` (`None`: is absent) in the tree with root `root`.
    pub fn verify(&self, root: Hash, key: &[u8], value: Option<&[u8]>) -> Result<(), ProofError> {
        self.0
            .verify(jmt::RootHash(root.0), key_hash(key), value)
            .map_err(|e| ProofError::Mismatch(e.to_string()))
    }
}

/// A tree store in memory: for tests, replays and tools.
#[derive(Default)]
pub struct MemoryTreeStore {
    nodes: RwLock<BTreeMap<NodeKey, Node>>,
    values: RwLock<BTreeMap<(KeyHash, Version), Option<OwnedValue>>>,
}

impl MemoryTreeStore {
    pub fn write(&self, batch: NodeBatch) {
        let mut nodes = self.nodes.write().expect("not poisoned");
        for (key, node) in batch.nodes() {
            nodes.insert(key.clone(), node.clone());
        }
        let mut values = self.values.write().expect("not poisoned");
        for ((version, key_hash), value) in batch.values() {
            values.insert((*key_hash, *version), value.clone());
        }
    }
}

impl TreeReader for MemoryTreeStore {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self
            .nodes
            .read()
            .expect("not poisoned")
            .get(node_key)
            .cloned())
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        let values = self.values.read().expect("not poisoned");
        Ok(values
            .range((key_hash, 0)..=(key_hash, max_version))
            .next_back()
            .and_then(|(_, v)| v.clone()))
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        Err(anyhow::anyhow!(
            "rightmost-leaf lookups (tree restore) are not supported"
        ))
    }
}

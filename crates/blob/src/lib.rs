//! Blob storage's data plane (DESIGN.md §6): Reed-Solomon coding of a blob into `k` data and
//! `m` parity shards ([`erasure`]), decoding from any `k` of them checked against the blob id,
//! and the on-disk shard store a storage provider keeps ([`store`]). The commitments (chunk
//! Merkle tree, proofs, blob id) are `piazza_primitives::blob`'s; the deals, assignments and
//! challenges are the ledger's `storage` module's.
//!
//! Invariants:
//! - Bytes leave this crate only checked: a decoded blob against its id, a rebuilt shard and a
//!   stored shard against their roots. A wrong or truncated shard is refused, never used.
//! - Nothing stored is lost by a crash: shards are written to a temporary name, synced and
//!   renamed.
//! - Every size is bounded ([`erasure::SHARD_BYTES_MAX`], [`erasure::SHARDS_MAX`], the store's
//!   `bytes_max`); untrusted bytes give errors, never panics.
//! - Knows no ledger, network or JSON.
//!
//! ```
//! use piazza_blob::erasure;
//! let blob = vec![42u8; 10_000];
//! let encoded = erasure::encode(&blob, 4, 2).unwrap();
//! // Any 4 of the 6 shards give the blob back: here shards 1, 2, 4 and 5.
//! let some: Vec<(u16, &[u8])> = [1u16, 2, 4, 5]
//!     .iter()
//!     .map(|&i| (i, encoded.shards[usize::from(i)].as_slice()))
//!     .collect();
//! assert_eq!(erasure::decode(&encoded.layout, &encoded.id, &some).unwrap(), blob);
//! ```

pub mod commit;
pub mod erasure;
pub mod store;

/// Why coding or decoding a blob was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error(
        "unsupported shard counts: {k} data + {m} parity (each at least 1, at most {} in all)",
        erasure::SHARDS_MAX
    )]
    ShardCount { k: u16, m: u16 },
    #[error("a blob of {len_bytes} bytes is too large for its shard count")]
    TooLarge { len_bytes: u64 },
    #[error("the layout does not follow from the blob's length and shard counts")]
    Layout,
    #[error("shard index {index} is past the blob's shards")]
    ShardIndex { index: u16 },
    #[error("shard {index} has {len_bytes} bytes, not the layout's shard length")]
    ShardLength { index: u16, len_bytes: u64 },
    #[error("{have} distinct shards, {need} needed")]
    TooFewShards { have: usize, need: usize },
    #[error("shard {index} does not match its root")]
    RootMismatch { index: u16 },
    #[error("the decoded bytes do not match the blob id")]
    IdMismatch,
    #[error("erasure coding: {0}")]
    Coding(String),
}

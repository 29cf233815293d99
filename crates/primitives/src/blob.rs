//! Blob commitments: the chunk Merkle tree over a blob or a shard, its proofs and the blob id.
//!
//! A byte string is split into chunks of [`CHUNK_BYTES`], the last one shorter (an empty string
//! has no chunk). Leaf `i` is `Hash::of("piazza/blob/leaf", [i as u64 LE, chunk])`, an inner node
//! `Hash::of("piazza/blob/node", [left, right])`; on a level with an odd count the last node is
//! promoted unchanged. The root of the empty string is `Hash::of("piazza/blob/empty", [])`.
//! A blob's id binds its length to its root ([`blob_id`]), so retrieval checks both.
//!
//! Erasure layout (coded by the blob crate, recorded by the ledger's storage deals): `k` data and
//! `m` parity shards of [`shard_len`] bytes each; a shard's root is [`root_of`] its bytes, and a
//! storage challenge is answered with one chunk of a shard and its [`MerklePath`], checked with
//! [`verify`]`(shard_root, shard_len, chunk_index, chunk, path)`.
//!
//! Invariants:
//! - [`verify`] never panics and accepts exactly the chunk [`prove`] was asked for: the index
//!   must exist, the chunk's length must be the one the length implies for that index, and the
//!   path must have exactly the siblings the tree's shape needs (no extra, none missing).
//! - [`MerklePath`] decodes at most [`MERKLE_PATH_SIBLINGS_MAX`] siblings and re-encodes to the
//!   same bytes.
//!
//! ```
//! use piazza_primitives::blob::{self, CHUNK_BYTES};
//! let data = vec![7u8; 3 * CHUNK_BYTES + 5];
//! let root = blob::root_of(&data);
//! let path = blob::prove(&data, 3).unwrap();
//! let last = &data[3 * CHUNK_BYTES..];
//! assert!(blob::verify(&root, data.len() as u64, 3, last, &path));
//! assert!(!blob::verify(&root, data.len() as u64, 2, last, &path));
//! ```

use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};

use crate::Hash;

/// Bytes per chunk of a blob or shard; the last chunk may be shorter.
pub const CHUNK_BYTES: usize = 4096;
/// Most siblings in a [`MerklePath`]: enough for 2^48 chunks (1 EiB at 4 KiB a chunk).
pub const MERKLE_PATH_SIBLINGS_MAX: usize = 48;
/// A shard's length is a multiple of this many bytes.
pub const SHARD_ALIGN_BYTES: u64 = 64;

const LEAF_DOMAIN: &str = "piazza/blob/leaf";
const NODE_DOMAIN: &str = "piazza/blob/node";
const EMPTY_DOMAIN: &str = "piazza/blob/empty";
const ID_DOMAIN: &str = "piazza/blob/id";

/// The Merkle proof of one chunk: its siblings from the leaf's level up, skipping levels where
/// its node was promoted without a sibling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerklePath {
    pub siblings: Vec<Hash>,
}

impl Encode for MerklePath {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.siblings);
    }
}

impl Decode for MerklePath {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MerklePath {
            siblings: r.seq(MERKLE_PATH_SIBLINGS_MAX)?,
        })
    }
}

/// The leaf hash of chunk `index`.
pub fn leaf(index: u64, chunk: &[u8]) -> Hash {
    Hash::of(LEAF_DOMAIN, &[&index.to_le_bytes(), chunk])
}

/// An inner node over its two children.
pub fn node(left: &Hash, right: &Hash) -> Hash {
    Hash::of(NODE_DOMAIN, &[left.as_bytes(), right.as_bytes()])
}

/// The root of the empty byte string (no chunk).
pub fn empty_root() -> Hash {
    Hash::of(EMPTY_DOMAIN, &[])
}

/// How many chunks a byte string of `len_bytes` has.
pub fn chunk_count(len_bytes: u64) -> u64 {
    len_bytes.div_ceil(CHUNK_BYTES as u64)
}

/// The length of chunk `index` of a byte string of `len_bytes`, or `None` past the last chunk.
pub fn chunk_len(len_bytes: u64, index: u64) -> Option<u64> {
    if index >= chunk_count(len_bytes) {
        return None;
    }
    let start = index * CHUNK_BYTES as u64;
    Some((len_bytes - start).min(CHUNK_BYTES as u64))
}

/// Chunk `index` of `data`, or `None` past the last chunk.
pub fn chunk(data: &[u8], index: u64) -> Option<&[u8]> {
    let index = usize::try_from(index).ok()?;
    data.chunks(CHUNK_BYTES).nth(index)
}

/// The length of each shard when a blob of `len_bytes` is cut into `k` data shards:
/// `ceil(len_bytes / k)` rounded up to a multiple of [`SHARD_ALIGN_BYTES`]. `None` when `k` is 0
/// or the result does not fit a `u64`.
pub fn shard_len(len_bytes: u64, k: u16) -> Option<u64> {
    if k == 0 {
        return None;
    }
    len_bytes
        .div_ceil(u64::from(k))
        .checked_next_multiple_of(SHARD_ALIGN_BYTES)
}

fn leaves(data: &[u8]) -> Vec<Hash> {
    data.chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, c)| leaf(i as u64, c))
        .collect()
}

fn parent_level(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [left, right] => node(left, right),
            [only] => *only,
            _ => unreachable!("chunks(2) yields one or two items"),
        })
        .collect()
}

/// The Merkle root over `data`'s chunks ([`empty_root`] when `data` is empty).
pub fn root_of(data: &[u8]) -> Hash {
    let mut level = leaves(data);
    if level.is_empty() {
        return empty_root();
    }
    while level.len() > 1 {
        level = parent_level(&level);
    }
    level[0]
}

/// The proof of chunk `index` of `data`, or `None` past the last chunk.
pub fn prove(data: &[u8], index: u64) -> Option<MerklePath> {
    chunk(data, index)?;
    let mut level = leaves(data);
    let mut position = usize::try_from(index).ok()?;
    let mut siblings = Vec::new();
    while level.len() > 1 {
        if let Some(sibling) = level.get(position ^ 1) {
            siblings.push(*sibling);
        }
        level = parent_level(&level);
        position /= 2;
    }
    Some(MerklePath { siblings })
}

/// Whether `chunk` is chunk `index` of a byte string of `len_bytes` whose root is `root`.
/// False for any chunk of the wrong length for `index`, an index past the end, or a path with a
/// sibling too many or too few. Never panics.
pub fn verify(root: &Hash, len_bytes: u64, index: u64, chunk: &[u8], path: &MerklePath) -> bool {
    if path.siblings.len() > MERKLE_PATH_SIBLINGS_MAX {
        return false;
    }
    match chunk_len(len_bytes, index) {
        Some(expected) if expected == chunk.len() as u64 => {}
        _ => return false,
    }
    let mut hash = leaf(index, chunk);
    let mut position = index;
    let mut size = chunk_count(len_bytes);
    let mut used = 0;
    while size > 1 {
        let sibling_position = position ^ 1;
        if sibling_position < size {
            let Some(sibling) = path.siblings.get(used) else {
                return false;
            };
            used += 1;
            hash = if position & 1 == 0 {
                node(&hash, sibling)
            } else {
                node(sibling, &hash)
            };
        }
        position /= 2;
        size = size.div_ceil(2);
    }
    used == path.siblings.len() && hash == *root
}

/// A blob's id from its length and root.
pub fn blob_id_of(len_bytes: u64, root: &Hash) -> Hash {
    Hash::of(ID_DOMAIN, &[&len_bytes.to_le_bytes(), root.as_bytes()])
}

/// A blob's id: its length and the root over its original bytes.
pub fn blob_id(data: &[u8]) -> Hash {
    blob_id_of(data.len() as u64, &root_of(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data_of(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn lengths() -> impl Strategy<Value = usize> {
        prop_oneof![
            0usize..3 * CHUNK_BYTES,
            Just(CHUNK_BYTES),
            Just(CHUNK_BYTES + 1),
            (1usize..40).prop_map(|n| n * CHUNK_BYTES),
            1usize..40 * CHUNK_BYTES,
        ]
    }

    #[test]
    fn empty_has_no_chunk_and_the_empty_root() {
        assert_eq!(root_of(&[]), Hash::of("piazza/blob/empty", &[]));
        assert_eq!(prove(&[], 0), None);
        let path = MerklePath::default();
        assert!(!verify(&root_of(&[]), 0, 0, &[], &path));
        assert_eq!(
            blob_id(&[]),
            Hash::of(
                "piazza/blob/id",
                &[&0u64.to_le_bytes(), root_of(&[]).as_bytes()]
            )
        );
    }

    #[test]
    fn the_tree_has_the_spec_shape() {
        // Three chunks: ((l0, l1), l2) with l2 promoted unchanged.
        let data = data_of(2 * CHUNK_BYTES + 10, 1);
        let l: Vec<Hash> = (0..3).map(|i| leaf(i, chunk(&data, i).unwrap())).collect();
        assert_eq!(
            l[0],
            Hash::of(
                "piazza/blob/leaf",
                &[&0u64.to_le_bytes(), &data[..CHUNK_BYTES]]
            )
        );
        let inner = Hash::of("piazza/blob/node", &[l[0].as_bytes(), l[1].as_bytes()]);
        let expected = Hash::of("piazza/blob/node", &[inner.as_bytes(), l[2].as_bytes()]);
        assert_eq!(root_of(&data), expected);
        // One chunk: the root is its leaf.
        assert_eq!(root_of(b"abc"), leaf(0, b"abc"));
        // The promoted chunk's path skips the level where it had no sibling.
        assert_eq!(prove(&data, 2).unwrap().siblings, vec![inner]);
    }

    #[test]
    fn shard_len_rounds_up_to_the_alignment() {
        assert_eq!(shard_len(0, 4), Some(0));
        assert_eq!(shard_len(1, 4), Some(64));
        assert_eq!(shard_len(256, 4), Some(64));
        assert_eq!(shard_len(257, 4), Some(128));
        assert_eq!(shard_len(100, 0), None);
        assert_eq!(shard_len(u64::MAX, 1), None);
    }

    #[test]
    fn hostile_paths_and_lengths_are_refused_without_panic() {
        let data = data_of(5 * CHUNK_BYTES, 3);
        let root = root_of(&data);
        let len = data.len() as u64;
        let c = chunk(&data, 1).unwrap();
        let too_long = MerklePath {
            siblings: vec![Hash::ZERO; MERKLE_PATH_SIBLINGS_MAX + 1],
        };
        assert!(!verify(&root, len, 1, c, &too_long));
        assert!(!verify(&root, u64::MAX, u64::MAX, c, &too_long));
        assert!(!verify(&root, u64::MAX, 1, c, &prove(&data, 1).unwrap()));
        assert!(!verify(&root, len, u64::MAX, &[], &MerklePath::default()));
        assert!(!verify(
            &root,
            u64::MAX,
            u64::MAX / CHUNK_BYTES as u64,
            &[0; 15],
            &MerklePath::default()
        ));
        // A path longer than the bound does not decode.
        let encoded = too_long.to_bytes();
        assert!(MerklePath::from_bytes(&encoded).is_err());
        // A length prefix far beyond the input fails without allocating it.
        assert!(MerklePath::from_bytes(&u32::MAX.to_le_bytes()).is_err());
        assert!(MerklePath::from_bytes(&[]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn every_index_proves_and_tampering_fails(len in lengths(), seed: u8, pick: u64, flip: usize) {
            let data = data_of(len, seed);
            let root = root_of(&data);
            let len_bytes = len as u64;
            let count = chunk_count(len_bytes);
            prop_assert_eq!(count as usize, data.chunks(CHUNK_BYTES).count());
            prop_assert!(prove(&data, count).is_none());
            for index in 0..count {
                let c = chunk(&data, index).unwrap();
                let path = prove(&data, index).unwrap();
                prop_assert!(verify(&root, len_bytes, index, c, &path));
                prop_assert_eq!(MerklePath::from_bytes(&path.to_bytes()).unwrap(), path.clone());
                prop_assert!(path.siblings.len() <= 64 - count.leading_zeros() as usize);
            }
            if count == 0 {
                return Ok(());
            }
            let index = pick % count;
            let c = chunk(&data, index).unwrap();
            let path = prove(&data, index).unwrap();
            // Any flipped byte of the chunk.
            let mut bad = c.to_vec();
            bad[flip % c.len()] ^= 1;
            prop_assert!(!verify(&root, len_bytes, index, &bad, &path));
            // Any flipped byte of any sibling.
            for s in 0..path.siblings.len() {
                let mut bad_path = path.clone();
                bad_path.siblings[s].0[flip % 32] ^= 0x80;
                prop_assert!(!verify(&root, len_bytes, index, c, &bad_path));
            }
            // Wrong index, wrong length, truncated and extended paths, wrong root.
            if count > 1 {
                let other = (index + 1) % count;
                prop_assert!(!verify(&root, len_bytes, other, c, &path));
            }
            // A length that changes the last chunk's length refuses it (the root does not bind
            // the length; the blob id and the ledger's record do).
            let last = count - 1;
            let last_chunk = chunk(&data, last).unwrap();
            let last_path = prove(&data, last).unwrap();
            prop_assert!(!verify(&root, len_bytes + 1, last, last_chunk, &last_path));
            prop_assert!(!verify(&root, len_bytes - 1, last, last_chunk, &last_path));
            prop_assert!(!verify(&root, len_bytes, index, &c[..c.len() - 1], &path));
            if !path.siblings.is_empty() {
                let mut short = path.clone();
                short.siblings.pop();
                prop_assert!(!verify(&root, len_bytes, index, c, &short));
            }
            let mut long = path.clone();
            long.siblings.push(root);
            prop_assert!(!verify(&root, len_bytes, index, c, &long));
            prop_assert!(!verify(&Hash::ZERO, len_bytes, index, c, &path));
            // The id binds the length.
            prop_assert_eq!(blob_id(&data), blob_id_of(len_bytes, &root));
            prop_assert_ne!(blob_id_of(len_bytes, &root), blob_id_of(len_bytes + 1, &root));
        }

        #[test]
        fn verify_never_panics(root: [u8; 32], len_bytes: u64, index: u64,
                               chunk in proptest::collection::vec(any::<u8>(), 0..64),
                               siblings in proptest::collection::vec(any::<[u8; 32]>(), 0..60)) {
            let path = MerklePath { siblings: siblings.into_iter().map(Hash).collect() };
            prop_assert!(!verify(&Hash(root), len_bytes, index, &chunk, &path));
        }

        #[test]
        fn path_decoding_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(path) = MerklePath::from_bytes(&bytes) {
                prop_assert_eq!(path.to_bytes(), bytes);
            }
        }
    }
}

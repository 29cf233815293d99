//! Binary BLAKE3 Merkle trees with domain separation, used for traces and weight commitments.
//!
//! - leaf    = BLAKE3(0x00 ‖ len(domain) as u8 ‖ domain ‖ index as u64 LE ‖ payload)
//! - node    = BLAKE3(0x01 ‖ left ‖ right)
//! - odd rule: a level with an odd count carries its last node up unchanged (no duplication).
//! - root    = BLAKE3(0x02 ‖ len(domain) as u8 ‖ domain ‖ leaf_count as u64 LE ‖ top),
//!   where `top` is the single node left (32 zero bytes for an empty tree).
//!
//! The root binds the domain and the leaf count, so a tree of one domain or size can never
//! pass for another.
//!
//! A node's message is 65 bytes: one whole BLAKE3 block and a 1-byte second block. [`root`] and
//! [`prove`] hash each level's first blocks many nodes at a time across BLAKE3's SIMD lanes
//! (`hash_many` through `blake3::platform`, up to 16 lanes with AVX-512), then the nodes' short
//! second blocks, each from its own chaining value, sixteen at a time
//! (`piazza_primitives::blake3_lanes`): the same bytes as [`node_hash`], which [`verify`] uses.

use blake3::platform::Platform;
use blake3::IncrementCounter;
use piazza_primitives::blake3_lanes::finish_roots;
use piazza_primitives::blake3_words::{CHUNK_START, IV};

/// A 32-byte BLAKE3 digest.
pub type Hash = [u8; 32];

const LEAF_TAG: u8 = 0x00;
const NODE_TAG: u8 = 0x01;
const ROOT_TAG: u8 = 0x02;

const HASH_BYTES: usize = blake3::OUT_LEN;
const BLOCK_BYTES: usize = blake3::BLOCK_LEN;
/// Bytes of a node's message past its first block (`1 + 2 · 32 - 64`).
const NODE_TAIL_BYTES: usize = 1 + 2 * HASH_BYTES - BLOCK_BYTES;
/// Nodes per `hash_many` call: every SIMD lane several times over, the batch's first blocks
/// (4 KiB) in the first-level cache.
const NODE_BATCH: usize = 64;

/// Starts the leaf hash of `index` in `domain`; the caller streams the payload in.
pub fn leaf_hasher(domain: &str, index: u64) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[LEAF_TAG, domain_len(domain)]);
    hasher.update(domain.as_bytes());
    hasher.update(&index.to_le_bytes());
    hasher
}

/// The leaf hash of `payload` at `index` in `domain`.
pub fn leaf_hash(domain: &str, index: u64, payload: &[u8]) -> Hash {
    let mut hasher = leaf_hasher(domain, index);
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

fn domain_len(domain: &str) -> u8 {
    u8::try_from(domain.len()).expect("domain tags are short constants")
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[NODE_TAG]);
    hasher.update(left);
    hasher.update(right);
    *hasher.finalize().as_bytes()
}

/// The root of a `leaf_count`-leaf tree whose top node is `top` (the count is bound in).
pub fn root_hash(domain: &str, leaf_count: u64, top: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[ROOT_TAG, domain_len(domain)]);
    hasher.update(domain.as_bytes());
    hasher.update(&leaf_count.to_le_bytes());
    hasher.update(top);
    *hasher.finalize().as_bytes()
}

/// One level up: pairs hashed ([`node_hash`]'s bytes, many at a time), an odd last node
/// carried unchanged.
pub(crate) fn parent_level(level: &[Hash]) -> Vec<Hash> {
    let platform = Platform::detect();
    let mut above = Vec::with_capacity(level.len().div_ceil(2));
    let mut first_blocks: Vec<[u8; BLOCK_BYTES]> = Vec::with_capacity(NODE_BATCH);
    let mut tails: Vec<[u8; BLOCK_BYTES]> = Vec::with_capacity(NODE_BATCH);
    let mut chaining = [0u8; NODE_BATCH * HASH_BYTES];
    for batch in level.chunks(2 * NODE_BATCH) {
        let pairs = batch.chunks_exact(2);
        first_blocks.clear();
        first_blocks.extend(
            pairs
                .clone()
                .map(|pair| node_first_block(&pair[0], &pair[1])),
        );
        let inputs: Vec<&[u8; BLOCK_BYTES]> = first_blocks.iter().collect();
        let out = &mut chaining[..inputs.len() * HASH_BYTES];
        platform.hash_many(
            &inputs,
            &IV,
            0,
            IncrementCounter::No,
            0,
            CHUNK_START,
            0,
            out,
        );
        // Each node's 1-byte last block, its own chaining value, sixteen lanes at a time.
        tails.clear();
        tails.extend(pairs.clone().map(|pair| node_tail_block(&pair[1])));
        above.extend(finish_roots(out, &tails, NODE_TAIL_BYTES as u8));
        above.extend(pairs.remainder());
    }
    above
}

/// A node message's first block: the tag, the left child and all but the right child's last
/// [`NODE_TAIL_BYTES`].
fn node_first_block(left: &Hash, right: &Hash) -> [u8; BLOCK_BYTES] {
    let mut block = [0u8; BLOCK_BYTES];
    block[0] = NODE_TAG;
    block[1..1 + HASH_BYTES].copy_from_slice(left);
    block[1 + HASH_BYTES..].copy_from_slice(&right[..HASH_BYTES - NODE_TAIL_BYTES]);
    block
}

/// A node message's second, final block: the right child's last [`NODE_TAIL_BYTES`],
/// zero-padded.
fn node_tail_block(right: &Hash) -> [u8; BLOCK_BYTES] {
    let mut tail = [0u8; BLOCK_BYTES];
    tail[..NODE_TAIL_BYTES].copy_from_slice(&right[HASH_BYTES - NODE_TAIL_BYTES..]);
    tail
}

/// The root over `leaves` (already leaf-hashed) in `domain`.
pub fn root(domain: &str, leaves: &[Hash]) -> Hash {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = parent_level(&level);
    }
    root_hash(
        domain,
        leaves.len() as u64,
        &level.first().copied().unwrap_or([0; 32]),
    )
}

/// Sibling hashes from leaf to top (levels where the node had no sibling are skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub siblings: Vec<Hash>,
}

/// The inclusion proof of leaf `index`; `None` when `index` is out of range.
pub fn prove(leaves: &[Hash], index: usize) -> Option<Proof> {
    if index >= leaves.len() {
        return None;
    }
    let mut siblings = Vec::new();
    let mut level = leaves.to_vec();
    let mut position = index;
    while level.len() > 1 {
        let sibling = position ^ 1;
        if sibling < level.len() {
            siblings.push(level[sibling]);
        }
        level = parent_level(&level);
        position /= 2;
    }
    Some(Proof { siblings })
}

/// Whether `leaf` is leaf `index` of a `leaf_count`-leaf tree in `domain` with root `root`.
pub fn verify(
    domain: &str,
    root: &Hash,
    leaf_count: u64,
    index: u64,
    leaf: &Hash,
    proof: &Proof,
) -> bool {
    if index >= leaf_count {
        return false;
    }
    let mut node = *leaf;
    let mut position = index;
    let mut width = leaf_count;
    let mut siblings = proof.siblings.iter();
    while width > 1 {
        let sibling = position ^ 1;
        if sibling < width {
            let Some(sibling_hash) = siblings.next() else {
                return false;
            };
            node = if position.is_multiple_of(2) {
                node_hash(&node, sibling_hash)
            } else {
                node_hash(sibling_hash, &node)
            };
        }
        position /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none() && root_hash(domain, leaf_count, &node) == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(count: usize) -> Vec<Hash> {
        (0..count)
            .map(|i| leaf_hash("test", i as u64, &[i as u8]))
            .collect()
    }

    #[test]
    fn every_proof_verifies_and_tampering_fails() {
        for count in 1..=19 {
            let leaves = leaves(count);
            let root = root("test", &leaves);
            for index in 0..count {
                let proof = prove(&leaves, index).unwrap();
                let i = index as u64;
                let n = count as u64;
                assert!(verify("test", &root, n, i, &leaves[index], &proof));
                assert!(!verify("other", &root, n, i, &leaves[index], &proof));
                assert!(!verify("test", &root, n + 1, i, &leaves[index], &proof));
                let wrong = leaves[(index + 1) % count];
                assert_eq!(
                    verify("test", &root, n, i, &wrong, &proof),
                    count == 1,
                    "count {count} index {index}"
                );
            }
            assert!(prove(&leaves, count).is_none());
        }
    }

    /// The root as specified: one [`node_hash`] at a time.
    fn root_one_at_a_time(domain: &str, leaves: &[Hash]) -> Hash {
        let mut level = leaves.to_vec();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    [single] => *single,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
        }
        let top = level.first().copied().unwrap_or([0; 32]);
        root_hash(domain, leaves.len() as u64, &top)
    }

    /// Levels hashed across SIMD lanes (batches of `NODE_BATCH` nodes, odd counts, batch
    /// edges) give the one-at-a-time root, and proofs checked with `node_hash` verify.
    #[test]
    fn lanes_give_the_one_at_a_time_root() {
        for count in [0usize, 1, 2, 3, 17, 127, 128, 129, 257, 1000, 65537] {
            let leaves = leaves(count);
            let root = root("test", &leaves);
            assert_eq!(root, root_one_at_a_time("test", &leaves), "count {count}");
            let n = count as u64;
            let probes = [
                0,
                1,
                2,
                count / 2,
                count.saturating_sub(2),
                count.wrapping_sub(1),
            ];
            for index in probes.into_iter().filter(|&index| index < count) {
                let proof = prove(&leaves, index).unwrap();
                let i = index as u64;
                assert!(verify("test", &root, n, i, &leaves[index], &proof));
            }
        }
    }

    #[test]
    fn root_binds_domain_and_count() {
        let three = leaves(3);
        assert_ne!(root("a", &three), root("b", &three));
        // Carrying the odd node up must not make [a, b, c] equal [a, b, c, c].
        let mut four = three.clone();
        four.push(three[2]);
        assert_ne!(root("a", &three), root("a", &four));
    }
}

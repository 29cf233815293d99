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

/// A 32-byte BLAKE3 digest.
pub type Hash = [u8; 32];

const LEAF_TAG: u8 = 0x00;
const NODE_TAG: u8 = 0x01;
const ROOT_TAG: u8 = 0x02;

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

/// One level up: pairs hashed, an odd last node carried unchanged.
fn parent_level(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [left, right] => node_hash(left, right),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two"),
        })
        .collect()
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

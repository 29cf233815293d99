//! A bounded memory of the transactions whose signatures this node has found valid, by hash.
//!
//! A transaction's hash covers every byte of it, signature included, and a signature's
//! validity is a pure function of those bytes, so a hash found valid once stays valid: the
//! node skips verifying it again when the same transaction comes back by another path (a
//! peer's gossip after the block that carried it was validated, a block after its gossip).
//! The memory is a cache, not a queue: when full it forgets its oldest hash, which only costs
//! that transaction one more verification should it be seen again.

use piazza_primitives::Hash;
use std::collections::{HashSet, VecDeque};

/// Hashes remembered at most (32 bytes each, twice, plus the set's overhead: ~3 MiB). Four
/// times the largest gossip admission, so a flood's transactions are still remembered when
/// their block or their gossip follows.
pub const VERIFIED_SIGNATURES_MAX: usize = 32_768;

/// The hashes of transactions with a valid signature, the oldest forgotten first.
pub struct VerifiedSignatures {
    order: VecDeque<Hash>,
    hashes: HashSet<Hash>,
    capacity: usize,
}

impl VerifiedSignatures {
    /// An empty memory of at most `capacity` hashes (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        VerifiedSignatures {
            order: VecDeque::with_capacity(capacity),
            hashes: HashSet::with_capacity(capacity),
            capacity,
        }
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.hashes.contains(hash)
    }

    /// Remembers `hash`, forgetting the oldest when full.
    pub fn insert(&mut self, hash: Hash) {
        if self.hashes.contains(&hash) {
            return;
        }
        if self.order.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.hashes.remove(&oldest);
            }
        }
        self.order.push_back(hash);
        self.hashes.insert(hash);
        debug_assert_eq!(self.order.len(), self.hashes.len());
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u32) -> Hash {
        Hash::of("test", &[&i.to_le_bytes()])
    }

    #[test]
    fn remembers_up_to_its_bound_and_forgets_the_oldest_first() {
        let mut verified = VerifiedSignatures::new(4);
        for i in 0..4 {
            verified.insert(hash(i));
        }
        verified.insert(hash(0));
        assert_eq!(verified.len(), 4);
        assert!((0..4).all(|i| verified.contains(&hash(i))));
        verified.insert(hash(4));
        verified.insert(hash(5));
        assert_eq!(verified.len(), 4);
        assert!(!verified.contains(&hash(0)) && !verified.contains(&hash(1)));
        assert!((2..6).all(|i| verified.contains(&hash(i))));
        for i in 6..1_000 {
            verified.insert(hash(i));
            assert!(verified.len() <= 4);
        }
        assert!(verified.contains(&hash(999)) && !verified.contains(&hash(995)));
    }
}

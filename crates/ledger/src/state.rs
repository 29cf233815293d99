//! The state the executor sees: a read-only base and a journaled overlay of writes.

use piazza_codec::{Decode, Encode};
use std::collections::BTreeMap;

/// Read access to committed state. Implementations treat an IO failure while reading committed
/// state as fatal: the node stops and restarts from its last committed block.
pub trait StateRead {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
}

impl StateRead for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }
}

/// An overlay entry: `Some(value)` written, `None` deleted.
type Entry = Option<Vec<u8>>;

/// Writes made by executing transactions on top of a base, with checkpoints so that a failed
/// transaction's messages leave nothing behind.
pub struct StateDelta<'a> {
    base: &'a dyn StateRead,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// (key, the overlay entry before the write) for every write since the first open checkpoint.
    journal: Vec<(Vec<u8>, Option<Entry>)>,
    checkpoints: usize,
}

/// A position in the journal to revert to.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    journal_len: usize,
}

impl<'a> StateDelta<'a> {
    pub fn new(base: &'a dyn StateRead) -> Self {
        StateDelta {
            base,
            writes: BTreeMap::new(),
            journal: Vec::new(),
            checkpoints: 0,
        }
    }

    pub fn get_raw(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(value) => value.clone(),
            None => self.base.get(key),
        }
    }

    /// Reads a typed value. State bytes were written by this code, so a value that does not
    /// decode is a broken invariant, not bad input.
    pub fn get<T: Decode>(&self, key: &[u8]) -> Option<T> {
        self.get_raw(key).map(|bytes| {
            T::from_bytes(&bytes).unwrap_or_else(|e| {
                panic!(
                    "state value at {:?} does not decode: {e}",
                    String::from_utf8_lossy(key)
                )
            })
        })
    }

    pub fn put<T: Encode>(&mut self, key: Vec<u8>, value: &T) {
        self.write(key, Some(value.to_bytes()));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.write(key, None);
    }

    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let previous = self.writes.insert(key.clone(), value);
        if self.checkpoints > 0 {
            self.journal.push((key, previous));
        }
    }

    pub fn checkpoint(&mut self) -> Checkpoint {
        self.checkpoints += 1;
        Checkpoint {
            journal_len: self.journal.len(),
        }
    }

    /// Undoes every write since `checkpoint`.
    pub fn revert(&mut self, checkpoint: Checkpoint) {
        while self.journal.len() > checkpoint.journal_len {
            let (key, previous) = self
                .journal
                .pop()
                .expect("journal is longer than the checkpoint");
            match previous {
                Some(value) => self.writes.insert(key, value),
                None => self.writes.remove(&key),
            };
        }
        self.release(checkpoint);
    }

    /// Keeps every write since `checkpoint`.
    pub fn release(&mut self, _checkpoint: Checkpoint) {
        self.checkpoints -= 1;
        if self.checkpoints == 0 {
            self.journal.clear();
        }
    }

    /// The writes, in key order.
    pub fn into_writes(self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.writes
    }

    pub fn writes(&self) -> &BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        &self.writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revert_restores_overlay_and_base() {
        let mut base = BTreeMap::new();
        base.insert(b"a".to_vec(), 1u64.to_bytes());
        let mut delta = StateDelta::new(&base);
        delta.put(b"b".to_vec(), &2u64);
        let cp = delta.checkpoint();
        delta.put(b"a".to_vec(), &10u64);
        delta.put(b"b".to_vec(), &20u64);
        delta.delete(b"a".to_vec());
        delta.put(b"c".to_vec(), &3u64);
        delta.revert(cp);
        assert_eq!(delta.get::<u64>(b"a"), Some(1));
        assert_eq!(delta.get::<u64>(b"b"), Some(2));
        assert_eq!(delta.get::<u64>(b"c"), None);
        let cp = delta.checkpoint();
        delta.delete(b"a".to_vec());
        delta.release(cp);
        assert_eq!(delta.get::<u64>(b"a"), None);
        assert_eq!(delta.into_writes().len(), 2);
    }
}

//! Bounded lists kept in state: queues of job ids per block height, sorted sets per address.
//!
//! A full list refuses the entry (an error the caller turns into a refused transaction, or a
//! decision it records) and never drops one silently. `schedule` puts an entry in the first
//! per-height queue with room, at most [`SCHEDULE_SLIP_BLOCKS_MAX`] blocks after the height asked
//! for, and returns the height it used, so a deadline recorded elsewhere stays equal to the
//! queue that holds it.

use crate::error::{ErrorCode, TxError};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};

/// How many blocks later than asked an entry may be scheduled when queues are full.
pub const SCHEDULE_SLIP_BLOCKS_MAX: u64 = 64;

/// A list of at most `MAX` entries, encoded as a bounded sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T, const MAX: usize>(pub Vec<T>);

impl<T, const MAX: usize> Default for List<T, MAX> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<T: Encode, const MAX: usize> Encode for List<T, MAX> {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.0)
    }
}

impl<T: Decode, const MAX: usize> Decode for List<T, MAX> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(List(r.seq(MAX)?))
    }
}

/// A list already holds its maximum number of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub max: usize,
}

impl Full {
    /// The refusal a transaction gets when its entry does not fit.
    pub fn refusal(self, what: &str) -> TxError {
        TxError::new(
            ErrorCode::QueueFull,
            format!("{what} is full ({} entries); try again later", self.max),
        )
    }
}

impl<T: Ord, const MAX: usize> List<T, MAX> {
    /// Appends `entry`, or refuses when the list is full.
    pub fn push(&mut self, entry: T) -> Result<(), Full> {
        if self.0.len() >= MAX {
            return Err(Full { max: MAX });
        }
        self.0.push(entry);
        Ok(())
    }

    /// Inserts `entry` keeping the list sorted and without duplicates (an entry already present
    /// is accepted), or refuses when the list is full.
    pub fn insert_sorted(&mut self, entry: T) -> Result<(), Full> {
        match self.0.binary_search(&entry) {
            Ok(_) => Ok(()),
            Err(_) if self.0.len() >= MAX => Err(Full { max: MAX }),
            Err(at) => {
                self.0.insert(at, entry);
                Ok(())
            }
        }
    }

    /// Removes `entry` from a sorted list; whether it was there.
    pub fn remove_sorted(&mut self, entry: &T) -> bool {
        match self.0.binary_search(entry) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn is_full(&self) -> bool {
        self.0.len() >= MAX
    }
}

/// Appends `entry` to the list under `key`.
pub fn push<const MAX: usize>(
    state: &mut StateDelta<'_>,
    key: Vec<u8>,
    entry: u64,
) -> Result<(), Full> {
    let mut list: List<u64, MAX> = state.get(&key).unwrap_or_default();
    list.push(entry)?;
    state.put(key, &list);
    Ok(())
}

/// Removes and returns the list under `key`.
pub fn take<const MAX: usize>(state: &mut StateDelta<'_>, key: Vec<u8>) -> Vec<u64> {
    let list: List<u64, MAX> = state.get(&key).unwrap_or_default();
    state.delete(key);
    list.0
}

/// Appends `entry` to the per-height queue `key(h)` of the first height `h` from `height` with
/// room, at most [`SCHEDULE_SLIP_BLOCKS_MAX`] later; returns `h`.
pub fn schedule<const MAX: usize>(
    state: &mut StateDelta<'_>,
    key: impl Fn(u64) -> Vec<u8>,
    height: u64,
    entry: u64,
) -> Result<u64, Full> {
    for slip in 0..=SCHEDULE_SLIP_BLOCKS_MAX {
        let Some(at) = height.checked_add(slip) else {
            break;
        };
        if push::<MAX>(state, key(at), entry).is_ok() {
            return Ok(at);
        }
    }
    Err(Full { max: MAX })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_full_list_refuses() {
        let mut list = List::<u64, 2>::default();
        list.push(1).unwrap();
        list.push(2).unwrap();
        assert_eq!(list.push(3), Err(Full { max: 2 }));
        assert_eq!(list.0, vec![1, 2]);
        let mut set = List::<u64, 2>::default();
        set.insert_sorted(5).unwrap();
        set.insert_sorted(1).unwrap();
        set.insert_sorted(5).unwrap();
        assert_eq!(set.insert_sorted(3), Err(Full { max: 2 }));
        assert_eq!(set.0, vec![1, 5]);
        assert!(set.remove_sorted(&1));
        assert!(!set.remove_sorted(&1));
    }

    #[test]
    fn schedule_slips_to_the_next_queue_with_room_then_refuses() {
        let base: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut state = StateDelta::new(&base);
        let key = |h: u64| h.to_be_bytes().to_vec();
        assert_eq!(schedule::<1>(&mut state, key, 10, 100), Ok(10));
        assert_eq!(schedule::<1>(&mut state, key, 10, 101), Ok(11));
        for i in 0..SCHEDULE_SLIP_BLOCKS_MAX - 1 {
            schedule::<1>(&mut state, key, 10, 200 + i).unwrap();
        }
        assert_eq!(
            schedule::<1>(&mut state, key, 10, 999),
            Err(Full { max: 1 })
        );
        // Nothing was lost: every entry is in exactly one queue.
        let held: usize = (10..=10 + SCHEDULE_SLIP_BLOCKS_MAX)
            .map(|h| take::<1>(&mut state, key(h)).len())
            .sum();
        assert_eq!(held as u64, SCHEDULE_SLIP_BLOCKS_MAX + 1);
    }
}

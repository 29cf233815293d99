//! Requests in flight, shared fairly among API keys.
//!
//! A request first takes one of its key's own slots (at most
//! [`Limits::requests_in_flight_per_key_max`](crate::Limits) per key), then one of the gateway's
//! (at most [`Limits::requests_in_flight_max`](crate::Limits)). A key that floods the gateway
//! queues behind its own share and never holds more than that share of the gateway's slots, so
//! other keys still get in. Both waits are bounded; a full share answers 429.
//!
//! **Invariant:** every slot is a semaphore permit owned by the request's work (moved into the
//! settlement task when jobs are running), so it is returned on every path, including a client
//! that hangs up.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The key's own share stayed full.
    Key { per_key_max: usize },
    /// The gateway's slots stayed full.
    Gateway { total_max: usize },
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::Key { per_key_max } => write!(
                f,
                "This API key already has {per_key_max} requests in flight (its share of the gateway); retry shortly"
            ),
            Busy::Gateway { total_max } => write!(
                f,
                "The gateway is at its limit of {total_max} requests in flight; retry shortly"
            ),
        }
    }
}

/// One of a key's own slots.
pub struct KeySlot(OwnedSemaphorePermit);

/// A request's place in flight: its key's slot and one of the gateway's.
pub struct Slot {
    _key: OwnedSemaphorePermit,
    _gateway: OwnedSemaphorePermit,
}

pub struct Slots {
    gateway: Arc<Semaphore>,
    total_max: usize,
    per_key_max: usize,
    /// One semaphore per API key hash that asked (bounded by the keys in the key file).
    keys: Mutex<BTreeMap<String, Arc<Semaphore>>>,
}

impl Slots {
    /// `per_key_max` is clamped to `total_max`.
    pub fn new(total_max: NonZeroUsize, per_key_max: NonZeroUsize) -> Slots {
        let total_max = total_max.get();
        Slots {
            gateway: Arc::new(Semaphore::new(total_max)),
            total_max,
            per_key_max: per_key_max.get().min(total_max),
            keys: Mutex::new(BTreeMap::new()),
        }
    }

    fn key_semaphore(&self, key: &str) -> Arc<Semaphore> {
        // Every change is one insertion, so a poisoned lock is still consistent.
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_key_max)))
            .clone()
    }

    /// Waits at most `wait` for one of `key`'s own slots.
    pub async fn key_slot(&self, key: &str, wait: Duration) -> Result<KeySlot, Busy> {
        let semaphore = self.key_semaphore(key);
        match tokio::time::timeout(wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(KeySlot(permit)),
            _ => Err(Busy::Key {
                per_key_max: self.per_key_max,
            }),
        }
    }

    /// Waits at most `wait` for one of the gateway's slots.
    pub async fn slot(&self, key_slot: KeySlot, wait: Duration) -> Result<Slot, Busy> {
        match tokio::time::timeout(wait, self.gateway.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot {
                _key: key_slot.0,
                _gateway: permit,
            }),
            _ => Err(Busy::Gateway {
                total_max: self.total_max,
            }),
        }
    }

    /// The gateway's free slots.
    pub fn available(&self) -> usize {
        self.gateway.available_permits()
    }

    /// The gateway's slots in use.
    pub fn in_flight(&self) -> usize {
        self.total_max - self.available()
    }

    /// `key`'s free slots.
    pub fn available_to(&self, key: &str) -> usize {
        self.key_semaphore(key).available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(20);

    fn slots(total: usize, per_key: usize) -> Slots {
        Slots::new(
            NonZeroUsize::new(total).unwrap(),
            NonZeroUsize::new(per_key).unwrap(),
        )
    }

    async fn take(slots: &Slots, key: &str) -> Result<Slot, Busy> {
        let key_slot = slots.key_slot(key, WAIT).await?;
        slots.slot(key_slot, WAIT).await
    }

    #[tokio::test]
    async fn one_key_cannot_take_every_slot() {
        let slots = slots(4, 2);
        let a1 = take(&slots, "a").await.unwrap();
        let _a2 = take(&slots, "a").await.unwrap();
        assert_eq!(
            take(&slots, "a").await.err(),
            Some(Busy::Key { per_key_max: 2 })
        );
        // Key b still gets in while a is at its share.
        let _b1 = take(&slots, "b").await.unwrap();
        let _b2 = take(&slots, "b").await.unwrap();
        assert_eq!(slots.available(), 0);
        // With the gateway full, c's turn is refused as the gateway's limit.
        assert_eq!(
            take(&slots, "c").await.err(),
            Some(Busy::Gateway { total_max: 4 })
        );
        // A refused request gives its key slot back; a finished one gives both back.
        assert_eq!(slots.available_to("c"), 2);
        drop(a1);
        assert_eq!((slots.available(), slots.available_to("a")), (1, 1));
        assert!(take(&slots, "c").await.is_ok());
    }

    #[tokio::test]
    async fn the_share_is_clamped_to_the_total() {
        let slots = slots(2, 5);
        let _a1 = take(&slots, "a").await.unwrap();
        let _a2 = take(&slots, "a").await.unwrap();
        assert_eq!(slots.available_to("a"), 0);
    }
}

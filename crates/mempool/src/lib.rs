//! A bounded pool of pending transactions, kept per sender in nonce order.
//!
//! Invariants:
//! - Bounded: at most `capacity` transactions in all and `nonce_window` per sender; a full pool
//!   refuses with `mempool_full`, it never grows.
//! - For every sender, entries hold nonces at or above the sender's committed next nonce, and
//!   [`Mempool::reap`] returns only gap-free runs starting at it, so every reaped transaction's
//!   nonce is the one the executor expects.
//! - Reaping is fair and deterministic: senders are served in the order they first arrived.
//! - The pool checks no signatures and reads no state: the node admits a transaction only after
//!   `check_admission` and signature verification, and tells the pool each sender's committed
//!   nonce.

use piazza_ledger::error::{ErrorCode, TxError};
use piazza_ledger::tx::SignedTransaction;
use piazza_primitives::{Address, Hash};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub capacity: usize,
    /// How far ahead of its committed nonce a sender may queue.
    pub nonce_window: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            capacity: 100_000,
            nonce_window: 64,
        }
    }
}

struct SenderQueue {
    /// The sender's committed next nonce, as last reported.
    next_nonce: u64,
    txs: BTreeMap<u64, Arc<SignedTransaction>>,
    /// When the sender's oldest pending transaction arrived: the reap order.
    arrival: u64,
}

pub struct Mempool {
    config: MempoolConfig,
    senders: HashMap<Address, SenderQueue>,
    /// Reap order: arrival sequence → sender.
    order: BTreeMap<u64, Address>,
    hashes: HashMap<Hash, (Address, u64)>,
    next_arrival: u64,
}

impl Mempool {
    pub fn new(config: MempoolConfig) -> Self {
        Mempool {
            config,
            senders: HashMap::new(),
            order: BTreeMap::new(),
            hashes: HashMap::new(),
            next_arrival: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.hashes.contains_key(hash)
    }

    pub fn config(&self) -> MempoolConfig {
        self.config
    }

    /// Adds a transaction whose sender's committed next nonce is `committed_nonce`.
    pub fn insert(
        &mut self,
        tx: Arc<SignedTransaction>,
        committed_nonce: u64,
    ) -> Result<(), TxError> {
        let hash = tx.hash();
        if self.hashes.contains_key(&hash) {
            return Err(TxError::new(
                ErrorCode::DuplicateTx,
                format!("transaction {hash} is already pending"),
            ));
        }
        let sender = tx.sender();
        let nonce = tx.tx.nonce;
        let floor = self
            .senders
            .get(&sender)
            .map_or(committed_nonce, |q| q.next_nonce.max(committed_nonce));
        if nonce < floor {
            return Err(TxError::new(
                ErrorCode::NonceReplayed,
                format!("nonce {nonce} is used; the account's next nonce is {floor}"),
            ));
        }
        if nonce - floor >= self.config.nonce_window {
            return Err(TxError::new(
                ErrorCode::NonceGap,
                format!(
                    "nonce {nonce} is more than {} ahead of the account's next nonce {floor}",
                    self.config.nonce_window
                ),
            ));
        }
        if let Some(existing) = self.senders.get(&sender).and_then(|q| q.txs.get(&nonce)) {
            return Err(TxError::new(
                ErrorCode::DuplicateTx,
                format!(
                    "nonce {nonce} of {sender} is already pending as {}",
                    existing.hash()
                ),
            ));
        }
        if self.hashes.len() >= self.config.capacity {
            return Err(TxError::new(
                ErrorCode::MempoolFull,
                format!(
                    "the mempool holds its maximum of {} transactions",
                    self.config.capacity
                ),
            ));
        }
        let arrival = self.next_arrival;
        let queue = self.senders.entry(sender).or_insert_with(|| {
            self.order.insert(arrival, sender);
            SenderQueue {
                next_nonce: floor,
                txs: BTreeMap::new(),
                arrival,
            }
        });
        if queue.arrival == arrival {
            self.next_arrival += 1;
        }
        queue.next_nonce = floor;
        queue.txs.insert(nonce, tx);
        self.hashes.insert(hash, (sender, nonce));
        Ok(())
    }

    /// Up to `max_txs` transactions (and `max_bytes` of them) in executable order: senders by
    /// arrival, each sender's gap-free run from its committed nonce. Nothing is removed.
    pub fn reap(&self, max_txs: usize, max_bytes: usize) -> Vec<Arc<SignedTransaction>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        'senders: for sender in self.order.values() {
            let queue = &self.senders[sender];
            let mut expected = queue.next_nonce;
            for (nonce, tx) in queue.txs.range(queue.next_nonce..) {
                if *nonce != expected {
                    break;
                }
                if out.len() == max_txs || bytes + tx.encoded_len() > max_bytes {
                    break 'senders;
                }
                bytes += tx.encoded_len();
                out.push(tx.clone());
                expected += 1;
            }
        }
        out
    }

    /// Records a sender's new committed nonce and drops its transactions below it.
    pub fn set_committed_nonce(&mut self, sender: &Address, next_nonce: u64) {
        let Some(queue) = self.senders.get_mut(sender) else {
            return;
        };
        queue.next_nonce = queue.next_nonce.max(next_nonce);
        let keep = queue.txs.split_off(&queue.next_nonce);
        for tx in std::mem::replace(&mut queue.txs, keep).into_values() {
            self.hashes.remove(&tx.hash());
        }
        self.drop_sender_if_empty(sender);
    }

    /// Removes a transaction that can no longer be included, and every later nonce of its
    /// sender (they could never execute without it).
    pub fn remove_with_successors(&mut self, hash: &Hash) {
        let Some((sender, nonce)) = self.hashes.get(hash).copied() else {
            return;
        };
        let queue = self
            .senders
            .get_mut(&sender)
            .expect("indexed senders have queues");
        for tx in queue.txs.split_off(&nonce).into_values() {
            self.hashes.remove(&tx.hash());
        }
        self.drop_sender_if_empty(&sender);
    }

    fn drop_sender_if_empty(&mut self, sender: &Address) {
        if self.senders.get(sender).is_some_and(|q| q.txs.is_empty()) {
            let queue = self.senders.remove(sender).expect("checked above");
            self.order.remove(&queue.arrival);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_ledger::bank;
    use piazza_ledger::tx::{Message, Transaction};
    use piazza_primitives::{Amount, SecretKey};

    fn tx(key: &SecretKey, nonce: u64) -> Arc<SignedTransaction> {
        let message = Message::Bank(bank::Msg::Send {
            to: Address([0; 20]),
            amount: Amount::new(1),
        });
        Arc::new(
            Transaction {
                chain_id: "t".into(),
                sender: key.public_key(),
                nonce,
                max_fee: Amount::new(1),
                messages: vec![message],
            }
            .sign(key),
        )
    }

    fn nonces(txs: &[Arc<SignedTransaction>]) -> Vec<u64> {
        txs.iter().map(|t| t.tx.nonce).collect()
    }

    #[test]
    fn reaps_gap_free_runs_in_arrival_order() {
        let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let mut pool = Mempool::new(MempoolConfig {
            capacity: 10,
            nonce_window: 4,
        });
        pool.insert(tx(&b, 0), 0).unwrap();
        pool.insert(tx(&a, 1), 0).unwrap();
        pool.insert(tx(&a, 0), 0).unwrap();
        pool.insert(tx(&a, 3), 0).unwrap();
        assert_eq!(nonces(&pool.reap(100, usize::MAX)), vec![0, 0, 1]);
        assert_eq!(pool.reap(2, usize::MAX).len(), 2);
        pool.set_committed_nonce(&a.public_key().address(), 2);
        assert_eq!(pool.len(), 2);
        assert_eq!(nonces(&pool.reap(100, usize::MAX)), vec![0]);
    }

    #[test]
    fn refusals_have_stable_codes() {
        let a = SecretKey::from_seed([1; 32]);
        let mut pool = Mempool::new(MempoolConfig {
            capacity: 2,
            nonce_window: 4,
        });
        let first = tx(&a, 5);
        pool.insert(first.clone(), 5).unwrap();
        let code = |r: Result<(), TxError>| r.unwrap_err().code;
        assert_eq!(code(pool.insert(first, 5)), ErrorCode::DuplicateTx);
        assert_eq!(code(pool.insert(tx(&a, 4), 5)), ErrorCode::NonceReplayed);
        assert_eq!(code(pool.insert(tx(&a, 9), 5)), ErrorCode::NonceGap);
        pool.insert(tx(&a, 6), 5).unwrap();
        assert_eq!(code(pool.insert(tx(&a, 7), 5)), ErrorCode::MempoolFull);
        pool.remove_with_successors(&tx(&a, 5).hash());
        assert!(pool.is_empty());
        assert!(pool.reap(10, usize::MAX).is_empty());
    }
}

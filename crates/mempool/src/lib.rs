//! A bounded pool of pending transactions, kept per sender in nonce order.
//!
//! A pending transaction is *ready* when it belongs to its sender's gap-free run starting at the
//! committed next nonce (it can execute in the next block), and *gapped* otherwise (it waits on
//! a nonce nobody has sent yet; it pays nothing until then). Each transaction also carries a
//! [`Priority`] chosen by the node: protocol duties (results, attestations, dispute moves) or
//! ordinary traffic. The pool knows nothing else about what a transaction does.
//!
//! Invariants:
//! - Bounded, by count and by bytes, in all ([`MempoolConfig::capacity`] and
//!   [`Limits::bytes_max`] for ordinary transactions, plus the room reserved for duties) and per
//!   sender ([`Limits::sender_txs_max`], [`Limits::sender_bytes_max`]), with nonces at
//!   most [`MempoolConfig::nonce_window`] ahead. A full pool refuses with `mempool_full`.
//! - Gapped transactions hold at most their own share ([`Limits::gapped_txs_max`],
//!   [`Limits::gapped_bytes_max`]), expire after [`Limits::gapped_lifetime_blocks`], and are
//!   evicted (oldest first) to make room for a ready transaction. So a pool full of gapped
//!   transactions never refuses a transaction that can execute now.
//! - Ordinary transactions may fill the pool only up to its capacity; duties may use that and
//!   the room reserved for them on top ([`Limits::duty_txs_reserved`],
//!   [`Limits::duty_bytes_reserved`]), and are reaped first.
//! - Every transaction that leaves the pool is returned as a [`Removed`] with its reason (a
//!   committed one as [`Removal::NonceUsed`]: the caller knows what it committed); nothing
//!   leaves silently.
//! - For every sender, entries hold nonces at or above the sender's committed next nonce, and
//!   [`Mempool::reap`] returns only gap-free runs starting at it, so every reaped transaction's
//!   nonce is the one the executor expects.
//! - Reaping is fair and deterministic: senders with a ready duty first, then the others, each
//!   group in the order senders first arrived.
//! - The pool checks no signatures and reads no state: the node admits a transaction only after
//!   `check_admission` and signature verification, tells the pool each sender's committed nonce
//!   and the transaction's priority, and reports each new height with [`Mempool::advance`].
//!
//! ```
//! use piazza_mempool::{Mempool, MempoolConfig};
//! let pool = Mempool::new(MempoolConfig::default());
//! assert!(pool.is_empty());
//! assert!(pool.reap(100, 1 << 20).is_empty());
//! ```

use piazza_ledger::error::{ErrorCode, TxError};
use piazza_ledger::tx::{SignedTransaction, EVIDENCE_TX_BYTES_MAX, TX_BYTES_MAX};
use piazza_primitives::{Address, Hash};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Most bytes held, by default: 256 MiB of encoded transactions.
pub const BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;
/// Most transactions one sender may hold, by default (or the nonce window, if wider).
pub const SENDER_TXS_MAX_DEFAULT: usize = 64;
/// Most bytes one sender may hold, by default: room for one evidence transaction and a window
/// of ordinary ones.
pub const SENDER_BYTES_MAX_DEFAULT: usize = EVIDENCE_TX_BYTES_MAX + 64 * TX_BYTES_MAX;
/// Most bytes of gapped transactions held, by default: 32 MiB.
pub const GAPPED_BYTES_MAX_DEFAULT: usize = 32 * 1024 * 1024;
/// How many blocks a gapped transaction may wait for its missing nonce, by default.
pub const GAPPED_LIFETIME_BLOCKS_DEFAULT: u64 = 16;
/// Bytes reserved for duties, by default: four evidence transactions and change.
pub const DUTY_BYTES_RESERVED_DEFAULT: usize = 4 * EVIDENCE_TX_BYTES_MAX + 1024 * TX_BYTES_MAX;

#[derive(Debug, Clone, Copy)]
pub struct MempoolConfig {
    /// Most ordinary transactions held (duties may use [`Limits::duty_txs_reserved`] more).
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

/// The pool's bounds beyond its capacity. [`Limits::for_config`] derives the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most encoded bytes of ordinary transactions held (duties may use
    /// [`Limits::duty_bytes_reserved`] more).
    pub bytes_max: usize,
    /// Most transactions one sender may hold.
    pub sender_txs_max: usize,
    /// Most encoded bytes one sender may hold.
    pub sender_bytes_max: usize,
    /// Most gapped transactions held in all.
    pub gapped_txs_max: usize,
    /// Most encoded bytes of gapped transactions held in all.
    pub gapped_bytes_max: usize,
    /// Blocks after which a transaction still gapped is removed (counted from the height at
    /// which it arrived).
    pub gapped_lifetime_blocks: u64,
    /// Transactions beyond the pool's capacity that only duties may use.
    pub duty_txs_reserved: usize,
    /// Bytes beyond [`Limits::bytes_max`] that only duties may use.
    pub duty_bytes_reserved: usize,
}

impl Limits {
    /// The default bounds for a pool configured as `config`: an eighth of its capacity for
    /// gapped transactions, a tenth more reserved for duties, and one nonce window per sender (at
    /// most [`SENDER_TXS_MAX_DEFAULT`] unless the window is wider).
    pub fn for_config(config: MempoolConfig) -> Limits {
        let capacity = config.capacity;
        let window = usize::try_from(config.nonce_window).unwrap_or(usize::MAX);
        Limits {
            bytes_max: BYTES_MAX_DEFAULT,
            sender_txs_max: window.max(SENDER_TXS_MAX_DEFAULT),
            sender_bytes_max: SENDER_BYTES_MAX_DEFAULT,
            gapped_txs_max: capacity / 8,
            gapped_bytes_max: GAPPED_BYTES_MAX_DEFAULT,
            gapped_lifetime_blocks: GAPPED_LIFETIME_BLOCKS_DEFAULT,
            duty_txs_reserved: capacity / 10,
            duty_bytes_reserved: DUTY_BYTES_RESERVED_DEFAULT,
        }
    }
}

/// What a transaction is for, as the node classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Ordinary,
    /// A protocol duty of its sender (a result, an attestation, a dispute move); it may use the
    /// room reserved for duties and is reaped first.
    Duty,
}

/// Why a transaction left the pool without being reaped into a committed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Removal {
    /// It waited on a missing nonce for [`Limits::gapped_lifetime_blocks`].
    Expired,
    /// It was gapped and evicted to make room for a transaction that can execute now.
    Evicted,
    /// Its sender's committed nonce passed it: either it was committed, or another transaction
    /// with its nonce was.
    NonceUsed,
    /// The node removed it ([`Mempool::remove_with_successors`]).
    Removed,
    /// An earlier nonce of its sender (`nonce`) was removed, so it can never execute.
    PredecessorRemoved { nonce: u64 },
}

/// A transaction that left the pool, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub hash: Hash,
    pub sender: Address,
    pub nonce: u64,
    pub reason: Removal,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    txs: usize,
    bytes: usize,
}

impl Usage {
    fn add(&mut self, bytes: usize) {
        self.txs += 1;
        self.bytes += bytes;
    }

    fn sub(&mut self, bytes: usize) {
        assert!(self.txs >= 1 && self.bytes >= bytes, "pool usage underflow");
        self.txs -= 1;
        self.bytes -= bytes;
    }

    /// Whether one more transaction of `bytes` stays within `(txs_max, bytes_max)`.
    fn fits(self, bytes: usize, txs_max: usize, bytes_max: usize) -> bool {
        self.txs < txs_max && self.bytes.saturating_add(bytes) <= bytes_max
    }

    fn minus(self, other: Usage) -> Usage {
        Usage {
            txs: self.txs - other.txs,
            bytes: self.bytes - other.bytes,
        }
    }
}

struct Entry {
    tx: Arc<SignedTransaction>,
    bytes: usize,
    priority: Priority,
    /// Arrival sequence (unique, increasing).
    seq: u64,
    /// The height the pool had reached when it arrived.
    height: u64,
}

struct SenderQueue {
    /// The sender's committed next nonce, as last reported.
    next_nonce: u64,
    /// End (exclusive) of the ready run `next_nonce..ready_end`; entries at or above it are
    /// gapped. Always `>= next_nonce`.
    ready_end: u64,
    txs: BTreeMap<u64, Entry>,
    /// When the sender's oldest pending transaction arrived: the reap order.
    arrival: u64,
    usage: Usage,
}

pub struct Mempool {
    config: MempoolConfig,
    limits: Limits,
    /// The latest height reported by [`Mempool::advance`].
    height: u64,
    senders: HashMap<Address, SenderQueue>,
    /// Reap order: arrival sequence → sender.
    order: BTreeMap<u64, Address>,
    hashes: HashMap<Hash, (Address, u64)>,
    next_seq: u64,
    total: Usage,
    duty: Usage,
    gapped: Usage,
    gapped_duty_usage: Usage,
    /// Gapped transactions by arrival sequence, per priority: eviction and expiry order.
    gapped_ordinary: BTreeMap<u64, (Address, u64)>,
    gapped_duty: BTreeMap<u64, (Address, u64)>,
    /// Removals made by an `insert` that then refused; `advance` reports them.
    unreported: Vec<Removed>,
}

fn full(message: String) -> TxError {
    TxError::new(ErrorCode::MempoolFull, message)
}

impl Mempool {
    /// A pool with the default [`Limits`] for its capacity.
    pub fn new(config: MempoolConfig) -> Self {
        Self::with_limits(config, Limits::for_config(config))
    }

    pub fn with_limits(config: MempoolConfig, limits: Limits) -> Self {
        Mempool {
            config,
            limits,
            height: 0,
            senders: HashMap::new(),
            order: BTreeMap::new(),
            hashes: HashMap::new(),
            next_seq: 0,
            total: Usage::default(),
            duty: Usage::default(),
            gapped: Usage::default(),
            gapped_duty_usage: Usage::default(),
            gapped_ordinary: BTreeMap::new(),
            gapped_duty: BTreeMap::new(),
            unreported: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Encoded bytes held.
    pub fn bytes(&self) -> usize {
        self.total.bytes
    }

    /// Gapped transactions held.
    pub fn gapped_len(&self) -> usize {
        self.gapped.txs
    }

    /// Encoded bytes of gapped transactions held.
    pub fn gapped_bytes(&self) -> usize {
        self.gapped.bytes
    }

    /// A sender's ready transactions, their bytes, and the nonce its ready run ends at (`None`
    /// when it holds nothing).
    pub fn sender_ready(&self, sender: &Address) -> (usize, usize, Option<u64>) {
        match self.senders.get(sender) {
            None => (0, 0, None),
            Some(queue) => {
                let ready = queue.usage.minus(self.sender_gapped(sender));
                (ready.txs, ready.bytes, Some(queue.ready_end))
            }
        }
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.hashes.contains_key(hash)
    }

    pub fn config(&self) -> MempoolConfig {
        self.config
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Adds a transaction whose sender's committed next nonce is `committed_nonce`. On success
    /// returns the transactions that left to make room (gapped ones, evicted) or because the
    /// committed nonce passed them.
    pub fn insert(
        &mut self,
        tx: Arc<SignedTransaction>,
        committed_nonce: u64,
        priority: Priority,
    ) -> Result<Vec<Removed>, TxError> {
        let hash = tx.hash();
        if self.hashes.contains_key(&hash) {
            return Err(TxError::new(
                ErrorCode::DuplicateTx,
                format!("transaction {hash} is already pending"),
            ));
        }
        let sender = tx.sender();
        let nonce = tx.tx.nonce;
        let bytes = tx.encoded_len();
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
                    existing.tx.hash()
                ),
            ));
        }
        let mut removed = self.set_committed_nonce(&sender, floor);
        let (sender_usage, ready_end) = self
            .senders
            .get(&sender)
            .map_or((Usage::default(), floor), |q| (q.usage, q.ready_end));
        let gapped = nonce > ready_end;
        let room = self
            .check_sender_room(&sender, sender_usage, bytes, gapped)
            .and_then(|()| self.check_room(bytes, priority, gapped));
        if let Err(refusal) = room {
            // Reported by the next `advance`.
            self.unreported.extend(removed);
            return Err(refusal);
        }
        // Both checks passed: the evictions below free enough room.
        removed.extend(self.evict_sender_gapped(&sender, bytes));
        removed.extend(self.evict_gapped(bytes, priority));
        self.add(tx, sender, nonce, bytes, priority, floor);
        Ok(removed)
    }

    /// Whether the sender may hold one more transaction of `bytes`, counting its gapped ones
    /// as evictable when the new one is ready.
    fn check_sender_room(
        &self,
        sender: &Address,
        usage: Usage,
        bytes: usize,
        gapped: bool,
    ) -> Result<(), TxError> {
        let (txs_max, bytes_max) = (self.limits.sender_txs_max, self.limits.sender_bytes_max);
        let evictable = if gapped {
            Usage::default()
        } else {
            self.sender_gapped(sender)
        };
        if usage.minus(evictable).fits(bytes, txs_max, bytes_max) {
            return Ok(());
        }
        Err(full(format!(
            "{sender} holds {} pending transactions of {} bytes; one sender may hold at most \
             {txs_max} and {bytes_max} bytes",
            usage.txs, usage.bytes
        )))
    }

    /// Whether the pool has room for one more transaction, counting gapped transactions as
    /// evictable when the new one is ready.
    fn check_room(&self, bytes: usize, priority: Priority, gapped: bool) -> Result<(), TxError> {
        let limits = self.limits;
        if gapped
            && !self
                .gapped
                .fits(bytes, limits.gapped_txs_max, limits.gapped_bytes_max)
        {
            return Err(full(format!(
                "gapped transactions (waiting on a missing nonce) hold their maximum share of \
                 {} transactions and {} bytes; send the missing nonce first",
                limits.gapped_txs_max, limits.gapped_bytes_max
            )));
        }
        let (total, ordinary) = if gapped {
            (self.total, self.ordinary())
        } else {
            let gapped_ordinary = self.gapped_usage(Priority::Ordinary);
            (
                self.total.minus(self.gapped),
                self.ordinary().minus(gapped_ordinary),
            )
        };
        let (total_txs_max, total_bytes_max) = self.total_max();
        if !total.fits(bytes, total_txs_max, total_bytes_max) {
            return Err(full(format!(
                "the mempool holds its maximum of {total_txs_max} transactions and \
                 {total_bytes_max} bytes"
            )));
        }
        let (ordinary_txs_max, ordinary_bytes_max) = self.ordinary_max();
        if priority == Priority::Ordinary
            && !ordinary.fits(bytes, ordinary_txs_max, ordinary_bytes_max)
        {
            return Err(full(format!(
                "the mempool holds its maximum of {ordinary_txs_max} ordinary transactions \
                 and {ordinary_bytes_max} bytes (the rest is reserved for protocol duties)"
            )));
        }
        Ok(())
    }

    fn ordinary(&self) -> Usage {
        self.total.minus(self.duty)
    }

    fn ordinary_max(&self) -> (usize, usize) {
        (self.config.capacity, self.limits.bytes_max)
    }

    fn total_max(&self) -> (usize, usize) {
        (
            self.config
                .capacity
                .saturating_add(self.limits.duty_txs_reserved),
            self.limits
                .bytes_max
                .saturating_add(self.limits.duty_bytes_reserved),
        )
    }

    fn gapped_usage(&self, priority: Priority) -> Usage {
        match priority {
            Priority::Ordinary => self.gapped.minus(self.gapped_duty_usage),
            Priority::Duty => self.gapped_duty_usage,
        }
    }

    fn count_gapped(&mut self, seq: u64, sender: Address, nonce: u64, entry: (usize, Priority)) {
        let (bytes, priority) = entry;
        self.gapped.add(bytes);
        if priority == Priority::Duty {
            self.gapped_duty_usage.add(bytes);
        }
        self.gapped_index(priority).insert(seq, (sender, nonce));
    }

    fn uncount_gapped(&mut self, seq: u64, entry: (usize, Priority)) {
        let (bytes, priority) = entry;
        self.gapped.sub(bytes);
        if priority == Priority::Duty {
            self.gapped_duty_usage.sub(bytes);
        }
        self.gapped_index(priority).remove(&seq);
    }

    fn sender_gapped(&self, sender: &Address) -> Usage {
        let mut usage = Usage::default();
        if let Some(queue) = self.senders.get(sender) {
            for entry in queue.txs.range(queue.ready_end..).map(|(_, e)| e) {
                usage.add(entry.bytes);
            }
        }
        usage
    }

    fn fits(&self, bytes: usize, priority: Priority) -> bool {
        let (ordinary_txs_max, ordinary_bytes_max) = self.ordinary_max();
        let (total_txs_max, total_bytes_max) = self.total_max();
        self.total.fits(bytes, total_txs_max, total_bytes_max)
            && (priority == Priority::Duty
                || self
                    .ordinary()
                    .fits(bytes, ordinary_txs_max, ordinary_bytes_max))
    }

    /// Evicts the sender's gapped transactions, highest nonce first, until one more of `bytes`
    /// fits its bounds.
    fn evict_sender_gapped(&mut self, sender: &Address, bytes: usize) -> Vec<Removed> {
        let mut removed = Vec::new();
        loop {
            let Some(queue) = self.senders.get(sender) else {
                return removed;
            };
            let fits = queue.usage.fits(
                bytes,
                self.limits.sender_txs_max,
                self.limits.sender_bytes_max,
            );
            let last = queue.txs.keys().next_back().copied();
            match last {
                Some(nonce) if !fits && nonce >= queue.ready_end => {
                    removed.push(self.take(sender, nonce, Removal::Evicted));
                }
                _ => return removed,
            }
        }
    }

    /// Evicts gapped transactions, oldest first (ordinary before duties), until one more of
    /// `bytes` and `priority` fits the pool.
    fn evict_gapped(&mut self, bytes: usize, priority: Priority) -> Vec<Removed> {
        let mut removed = Vec::new();
        while !self.fits(bytes, priority) {
            let (ordinary_txs_max, ordinary_bytes_max) = self.ordinary_max();
            let lane_full = priority == Priority::Ordinary
                && !self
                    .ordinary()
                    .fits(bytes, ordinary_txs_max, ordinary_bytes_max);
            let victim = match self.gapped_ordinary.values().next() {
                Some(victim) => Some(*victim),
                None if lane_full => None,
                None => self.gapped_duty.values().next().copied(),
            };
            let Some((sender, nonce)) = victim else {
                break;
            };
            removed.push(self.take(&sender, nonce, Removal::Evicted));
        }
        removed
    }

    fn add(
        &mut self,
        tx: Arc<SignedTransaction>,
        sender: Address,
        nonce: u64,
        bytes: usize,
        priority: Priority,
        floor: u64,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let queue = self.senders.entry(sender).or_insert_with(|| {
            self.order.insert(seq, sender);
            SenderQueue {
                next_nonce: floor,
                ready_end: floor,
                txs: BTreeMap::new(),
                arrival: seq,
                usage: Usage::default(),
            }
        });
        let gapped = nonce > queue.ready_end;
        queue.usage.add(bytes);
        self.hashes.insert(tx.hash(), (sender, nonce));
        queue.txs.insert(
            nonce,
            Entry {
                tx,
                bytes,
                priority,
                seq,
                height: self.height,
            },
        );
        self.total.add(bytes);
        if priority == Priority::Duty {
            self.duty.add(bytes);
        }
        if gapped {
            self.count_gapped(seq, sender, nonce, (bytes, priority));
        } else {
            self.senders.get_mut(&sender).expect("just added").ready_end = nonce + 1;
            self.promote(&sender);
        }
    }

    fn gapped_index(&mut self, priority: Priority) -> &mut BTreeMap<u64, (Address, u64)> {
        match priority {
            Priority::Ordinary => &mut self.gapped_ordinary,
            Priority::Duty => &mut self.gapped_duty,
        }
    }

    /// Moves the sender's gapped transactions that now continue its ready run into it.
    fn promote(&mut self, sender: &Address) {
        loop {
            let queue = self
                .senders
                .get_mut(sender)
                .expect("promoting a known sender");
            let Some(entry) = queue.txs.get(&queue.ready_end) else {
                return;
            };
            queue.ready_end += 1;
            let (seq, bytes, priority) = (entry.seq, entry.bytes, entry.priority);
            self.uncount_gapped(seq, (bytes, priority));
        }
    }

    /// Removes one entry, keeping every count and index; the caller keeps `ready_end` true.
    fn take(&mut self, sender: &Address, nonce: u64, reason: Removal) -> Removed {
        let queue = self
            .senders
            .get_mut(sender)
            .expect("taking from a known sender");
        let gapped = nonce >= queue.ready_end;
        let entry = queue.txs.remove(&nonce).expect("taking a held nonce");
        queue.usage.sub(entry.bytes);
        let hash = entry.tx.hash();
        self.hashes.remove(&hash);
        self.total.sub(entry.bytes);
        if entry.priority == Priority::Duty {
            self.duty.sub(entry.bytes);
        }
        if gapped {
            self.uncount_gapped(entry.seq, (entry.bytes, entry.priority));
        }
        self.drop_sender_if_empty(sender);
        Removed {
            hash,
            sender: *sender,
            nonce,
            reason,
        }
    }

    /// Up to `max_txs` transactions (and `max_bytes` of them) in executable order: first the
    /// senders whose ready run holds a duty, then the others, each group by arrival; each
    /// sender's gap-free run from its committed nonce. Nothing is removed.
    pub fn reap(&self, max_txs: usize, max_bytes: usize) -> Vec<Arc<SignedTransaction>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut served = HashSet::new();
        for duties_first in [true, false] {
            for sender in self.order.values() {
                let queue = &self.senders[sender];
                let run = queue.txs.range(queue.next_nonce..queue.ready_end);
                if duties_first {
                    if !run.clone().any(|(_, e)| e.priority == Priority::Duty) {
                        continue;
                    }
                    served.insert(*sender);
                } else if served.contains(sender) {
                    continue;
                }
                for (_, entry) in run {
                    if out.len() == max_txs || bytes + entry.bytes > max_bytes {
                        return out;
                    }
                    bytes += entry.bytes;
                    out.push(entry.tx.clone());
                }
            }
        }
        out
    }

    /// Records a sender's new committed nonce and removes its transactions below it (reported
    /// as [`Removal::NonceUsed`]: the caller knows which of them it committed).
    pub fn set_committed_nonce(&mut self, sender: &Address, next_nonce: u64) -> Vec<Removed> {
        let Some(queue) = self.senders.get(sender) else {
            return Vec::new();
        };
        if next_nonce <= queue.next_nonce {
            return Vec::new();
        }
        let used: Vec<u64> = queue.txs.range(..next_nonce).map(|(n, _)| *n).collect();
        let mut removed = Vec::with_capacity(used.len());
        for nonce in used {
            removed.push(self.take(sender, nonce, Removal::NonceUsed));
        }
        if let Some(queue) = self.senders.get_mut(sender) {
            queue.next_nonce = next_nonce;
            if queue.ready_end < next_nonce {
                // The run restarts at the new nonce: entries at it (if any) leave the gapped
                // share as `promote` moves them.
                queue.ready_end = next_nonce;
                self.promote(sender);
            }
        }
        removed
    }

    /// Removes a transaction that can no longer be included, and every later nonce of its
    /// sender (they could never execute without it). The first entry is `hash` itself.
    pub fn remove_with_successors(&mut self, hash: &Hash) -> Vec<Removed> {
        let Some((sender, first)) = self.hashes.get(hash).copied() else {
            return Vec::new();
        };
        let nonces: Vec<u64> = self.senders[&sender]
            .txs
            .range(first..)
            .map(|(n, _)| *n)
            .collect();
        let mut removed = Vec::with_capacity(nonces.len());
        // Highest first, so no removal leaves a ready entry above a hole.
        for &nonce in nonces.iter().rev() {
            let reason = if nonce == first {
                Removal::Removed
            } else {
                Removal::PredecessorRemoved { nonce: first }
            };
            removed.push(self.take(&sender, nonce, reason));
            if let Some(queue) = self.senders.get_mut(&sender) {
                queue.ready_end = queue.ready_end.min(nonce).max(queue.next_nonce);
            }
        }
        removed.reverse();
        removed
    }

    /// Records that the chain reached `height` and removes the gapped transactions that have
    /// waited [`Limits::gapped_lifetime_blocks`] since they arrived (and any removal an
    /// `insert` made before refusing; callers that [`Mempool::set_committed_nonce`] first never
    /// have those).
    pub fn advance(&mut self, height: u64) -> Vec<Removed> {
        self.height = self.height.max(height);
        let mut removed = std::mem::take(&mut self.unreported);
        for priority in [Priority::Ordinary, Priority::Duty] {
            loop {
                let oldest = self.gapped_index(priority).values().next().copied();
                let Some((sender, nonce)) = oldest else {
                    break;
                };
                let arrived = self.senders[&sender].txs[&nonce].height;
                if arrived.saturating_add(self.limits.gapped_lifetime_blocks) > self.height {
                    break;
                }
                removed.push(self.take(&sender, nonce, Removal::Expired));
            }
        }
        removed
    }

    fn drop_sender_if_empty(&mut self, sender: &Address) {
        if self.senders.get(sender).is_some_and(|q| q.txs.is_empty()) {
            let queue = self.senders.remove(sender).expect("checked above");
            self.order.remove(&queue.arrival);
        }
    }

    /// Checks every count and index against the entries (for tests; linear time).
    #[doc(hidden)]
    pub fn assert_consistent(&self) {
        let (mut total, mut duty) = (Usage::default(), Usage::default());
        let (mut gapped, mut gapped_duty) = (Usage::default(), Usage::default());
        let mut gapped_seqs = 0;
        for (sender, queue) in &self.senders {
            assert!(queue.ready_end >= queue.next_nonce);
            assert!(!queue.txs.is_empty());
            assert_eq!(self.order.get(&queue.arrival), Some(sender));
            let mut usage = Usage::default();
            for (nonce, entry) in &queue.txs {
                assert!(*nonce >= queue.next_nonce);
                assert_eq!(self.hashes.get(&entry.tx.hash()), Some(&(*sender, *nonce)));
                usage.add(entry.bytes);
                total.add(entry.bytes);
                if entry.priority == Priority::Duty {
                    duty.add(entry.bytes);
                }
                let index = match entry.priority {
                    Priority::Ordinary => &self.gapped_ordinary,
                    Priority::Duty => &self.gapped_duty,
                };
                if *nonce < queue.ready_end {
                    assert!(!index.contains_key(&entry.seq));
                } else {
                    gapped.add(entry.bytes);
                    if entry.priority == Priority::Duty {
                        gapped_duty.add(entry.bytes);
                    }
                    gapped_seqs += 1;
                    assert_eq!(index.get(&entry.seq), Some(&(*sender, *nonce)));
                }
            }
            assert!(!queue.txs.contains_key(&queue.ready_end));
            assert_eq!(usage, queue.usage);
            assert!(usage.txs <= self.limits.sender_txs_max);
            assert!(usage.bytes <= self.limits.sender_bytes_max);
        }
        assert_eq!(self.order.len(), self.senders.len());
        assert_eq!(self.hashes.len(), total.txs);
        assert_eq!((total, duty, gapped), (self.total, self.duty, self.gapped));
        assert_eq!(gapped_duty, self.gapped_duty_usage);
        assert_eq!(
            gapped_seqs,
            self.gapped_ordinary.len() + self.gapped_duty.len()
        );
        let (total_txs_max, total_bytes_max) = self.total_max();
        assert!(total.txs <= total_txs_max && total.bytes <= total_bytes_max);
        assert!(gapped.txs <= self.limits.gapped_txs_max);
        assert!(gapped.bytes <= self.limits.gapped_bytes_max);
        let (ordinary_txs_max, ordinary_bytes_max) = self.ordinary_max();
        let ordinary = total.minus(duty);
        assert!(ordinary.txs <= ordinary_txs_max && ordinary.bytes <= ordinary_bytes_max);
    }
}

#[cfg(test)]
mod tests;

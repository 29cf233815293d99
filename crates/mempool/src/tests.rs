use super::*;
use piazza_ledger::bank;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Amount, SecretKey};
use proptest::prelude::*;

/// A transfer transaction with `messages` messages (its size grows with them).
fn tx_with(key: &SecretKey, nonce: u64, messages: usize) -> Arc<SignedTransaction> {
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
            messages: vec![message; messages],
        }
        .sign(key),
    )
}

fn tx(key: &SecretKey, nonce: u64) -> Arc<SignedTransaction> {
    tx_with(key, nonce, 1)
}

fn key(i: u16) -> SecretKey {
    let mut seed = [7u8; 32];
    seed[..2].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_seed(seed)
}

fn tx_bytes() -> usize {
    tx(&key(0), 0).encoded_len()
}

fn nonces(txs: &[Arc<SignedTransaction>]) -> Vec<u64> {
    txs.iter().map(|t| t.tx.nonce).collect()
}

/// Limits that bind nothing but what a test sets.
fn open_limits(capacity: usize) -> Limits {
    Limits {
        bytes_max: usize::MAX / 4,
        sender_txs_max: usize::MAX / 4,
        sender_bytes_max: usize::MAX / 4,
        gapped_txs_max: capacity,
        gapped_bytes_max: usize::MAX / 4,
        gapped_lifetime_blocks: 1_000,
        duty_txs_reserved: 0,
        duty_bytes_reserved: 0,
    }
}

fn pool(capacity: usize, limits: Limits) -> Mempool {
    Mempool::with_limits(
        MempoolConfig {
            capacity,
            nonce_window: 64,
        },
        limits,
    )
}

fn code(result: Result<Vec<Removed>, TxError>) -> ErrorCode {
    result.unwrap_err().code
}

fn ordinary(pool: &mut Mempool, t: Arc<SignedTransaction>) -> Result<Vec<Removed>, TxError> {
    let r = pool.insert(t, 0, Priority::Ordinary);
    pool.assert_consistent();
    r
}

fn reasons(removed: &[Removed]) -> Vec<(u64, Removal)> {
    removed.iter().map(|r| (r.nonce, r.reason)).collect()
}

#[test]
fn reaps_gap_free_runs_in_arrival_order() {
    let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let mut pool = Mempool::new(MempoolConfig {
        capacity: 10,
        nonce_window: 4,
    });
    pool.insert(tx(&b, 0), 0, Priority::Ordinary).unwrap();
    pool.insert(tx(&a, 1), 0, Priority::Ordinary).unwrap();
    pool.insert(tx(&a, 0), 0, Priority::Ordinary).unwrap();
    pool.insert(tx(&a, 3), 0, Priority::Ordinary).unwrap();
    assert_eq!(nonces(&pool.reap(100, usize::MAX)), vec![0, 0, 1]);
    assert_eq!(pool.reap(2, usize::MAX).len(), 2);
    let removed = pool.set_committed_nonce(&a.public_key().address(), 2);
    assert_eq!(
        reasons(&removed),
        vec![(0, Removal::NonceUsed), (1, Removal::NonceUsed)]
    );
    assert_eq!(pool.len(), 2);
    assert_eq!(nonces(&pool.reap(100, usize::MAX)), vec![0]);
    pool.assert_consistent();
}

#[test]
fn refusals_have_stable_codes() {
    let a = SecretKey::from_seed([1; 32]);
    let mut pool = Mempool::new(MempoolConfig {
        capacity: 2,
        nonce_window: 4,
    });
    let first = tx(&a, 5);
    pool.insert(first.clone(), 5, Priority::Ordinary).unwrap();
    let mut insert = |t, committed| pool.insert(t, committed, Priority::Ordinary);
    assert_eq!(code(insert(first, 5)), ErrorCode::DuplicateTx);
    assert_eq!(code(insert(tx(&a, 4), 5)), ErrorCode::NonceReplayed);
    assert_eq!(code(insert(tx(&a, 9), 5)), ErrorCode::NonceGap);
    insert(tx(&a, 6), 5).unwrap();
    assert_eq!(code(insert(tx(&a, 7), 5)), ErrorCode::MempoolFull);
    let removed = pool.remove_with_successors(&tx(&a, 5).hash());
    assert_eq!(
        reasons(&removed),
        vec![
            (5, Removal::Removed),
            (6, Removal::PredecessorRemoved { nonce: 5 })
        ]
    );
    assert!(pool.is_empty());
    assert!(pool.reap(10, usize::MAX).is_empty());
    pool.assert_consistent();
}

#[test]
fn the_byte_bound_refuses_what_the_count_would_admit() {
    let size = tx_bytes();
    let mut pool = pool(
        100,
        Limits {
            bytes_max: 3 * size,
            ..open_limits(100)
        },
    );
    for i in 0..3 {
        ordinary(&mut pool, tx(&key(i), 0)).unwrap();
    }
    assert_eq!(pool.bytes(), 3 * size);
    assert_eq!(
        code(ordinary(&mut pool, tx(&key(3), 0))),
        ErrorCode::MempoolFull
    );
    // A smaller one still does not fit: not a byte is left.
    assert_eq!(pool.len(), 3);
}

#[test]
fn one_sender_is_bounded_by_count_and_by_bytes() {
    let size = tx_bytes();
    let mut by_count = pool(
        100,
        Limits {
            sender_txs_max: 3,
            ..open_limits(100)
        },
    );
    for n in 0..3 {
        ordinary(&mut by_count, tx(&key(1), n)).unwrap();
    }
    assert_eq!(
        code(ordinary(&mut by_count, tx(&key(1), 3))),
        ErrorCode::MempoolFull
    );
    ordinary(&mut by_count, tx(&key(2), 0)).unwrap();

    let big = tx_with(&key(1), 1, 8);
    let mut by_bytes = pool(
        100,
        Limits {
            sender_bytes_max: size + big.encoded_len() - 1,
            ..open_limits(100)
        },
    );
    ordinary(&mut by_bytes, tx(&key(1), 0)).unwrap();
    assert_eq!(code(ordinary(&mut by_bytes, big)), ErrorCode::MempoolFull);
    ordinary(&mut by_bytes, tx(&key(1), 1)).unwrap();
}

#[test]
fn a_senders_next_nonce_evicts_its_own_gapped_transactions() {
    let mut pool = pool(
        100,
        Limits {
            sender_txs_max: 3,
            ..open_limits(100)
        },
    );
    let a = key(1);
    for n in [5, 6, 7] {
        ordinary(&mut pool, tx(&a, n)).unwrap();
    }
    // Gapped cannot push out gapped.
    assert_eq!(code(ordinary(&mut pool, tx(&a, 2))), ErrorCode::MempoolFull);
    // The next nonce can: the highest gapped nonce goes first.
    let removed = ordinary(&mut pool, tx(&a, 0)).unwrap();
    assert_eq!(reasons(&removed), vec![(7, Removal::Evicted)]);
    assert_eq!(nonces(&pool.reap(10, usize::MAX)), vec![0]);
}

#[test]
fn gapped_transactions_hold_only_their_share() {
    let size = tx_bytes();
    let mut by_count = pool(
        100,
        Limits {
            gapped_txs_max: 2,
            ..open_limits(100)
        },
    );
    ordinary(&mut by_count, tx(&key(1), 1)).unwrap();
    ordinary(&mut by_count, tx(&key(2), 1)).unwrap();
    assert_eq!(
        code(ordinary(&mut by_count, tx(&key(3), 1))),
        ErrorCode::MempoolFull
    );
    assert_eq!(by_count.gapped_len(), 2);
    // Filling a gap moves its successor out of the share, making room.
    ordinary(&mut by_count, tx(&key(1), 0)).unwrap();
    assert_eq!(by_count.gapped_len(), 1);
    ordinary(&mut by_count, tx(&key(3), 1)).unwrap();

    let mut by_bytes = pool(
        100,
        Limits {
            gapped_bytes_max: 2 * size,
            ..open_limits(100)
        },
    );
    ordinary(&mut by_bytes, tx(&key(1), 1)).unwrap();
    ordinary(&mut by_bytes, tx(&key(2), 1)).unwrap();
    assert_eq!(
        code(ordinary(&mut by_bytes, tx(&key(3), 1))),
        ErrorCode::MempoolFull
    );
    ordinary(&mut by_bytes, tx(&key(3), 0)).unwrap();
}

#[test]
fn gapped_transactions_expire_after_their_lifetime() {
    let mut pool = pool(
        100,
        Limits {
            gapped_lifetime_blocks: 3,
            ..open_limits(100)
        },
    );
    assert!(pool.advance(10).is_empty());
    ordinary(&mut pool, tx(&key(1), 0)).unwrap();
    ordinary(&mut pool, tx(&key(1), 2)).unwrap();
    ordinary(&mut pool, tx(&key(2), 4)).unwrap();
    assert!(pool.advance(11).is_empty());
    // One arrives later and lives longer.
    ordinary(&mut pool, tx(&key(3), 1)).unwrap();
    // A gap that fills in time stops the clock.
    ordinary(&mut pool, tx(&key(2), 0)).unwrap();
    assert!(pool.advance(12).is_empty());
    let removed = pool.advance(13);
    assert_eq!(
        removed
            .iter()
            .map(|r| (r.sender, r.nonce, r.reason))
            .collect::<Vec<_>>(),
        vec![
            (key(1).public_key().address(), 2, Removal::Expired),
            (key(2).public_key().address(), 4, Removal::Expired),
        ]
    );
    pool.assert_consistent();
    assert_eq!(pool.len(), 3);
    let removed = pool.advance(14);
    assert_eq!(reasons(&removed), vec![(1, Removal::Expired)]);
    // Ready transactions never expire.
    assert!(pool.advance(1_000).is_empty());
    assert_eq!(nonces(&pool.reap(10, usize::MAX)), vec![0, 0]);
}

#[test]
fn a_pool_full_of_gapped_transactions_evicts_the_oldest_for_a_ready_one() {
    let mut pool = pool(4, open_limits(4));
    for i in 1..=4 {
        ordinary(&mut pool, tx(&key(i), 9)).unwrap();
    }
    // A gapped one is refused: the pool is full.
    assert_eq!(
        code(ordinary(&mut pool, tx(&key(5), 9))),
        ErrorCode::MempoolFull
    );
    // Ready ones push the gapped out, oldest first.
    for i in 5..=8 {
        let removed = ordinary(&mut pool, tx(&key(i), 0)).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].sender, key(i - 4).public_key().address());
        assert_eq!(removed[0].reason, Removal::Evicted);
    }
    assert_eq!(pool.gapped_len(), 0);
    // Full of ready transactions: refused, nothing evicted.
    assert_eq!(
        code(ordinary(&mut pool, tx(&key(9), 0))),
        ErrorCode::MempoolFull
    );
    assert_eq!(pool.len(), 4);
}

#[test]
fn duties_have_reserved_room_and_are_reaped_first() {
    let size = tx_bytes();
    let mut pool = pool(
        4,
        Limits {
            duty_txs_reserved: 1,
            ..open_limits(4)
        },
    );
    for i in 1..=4 {
        ordinary(&mut pool, tx(&key(i), 0)).unwrap();
    }
    assert_eq!(
        code(ordinary(&mut pool, tx(&key(5), 0))),
        ErrorCode::MempoolFull
    );
    pool.insert(tx(&key(5), 0), 0, Priority::Duty).unwrap();
    assert_eq!(
        code(pool.insert(tx(&key(6), 0), 0, Priority::Duty)),
        ErrorCode::MempoolFull
    );
    let reaped = pool.reap(10, usize::MAX);
    assert_eq!(reaped[0].sender(), key(5).public_key().address());
    assert_eq!(reaped.len(), 5);
    pool.assert_consistent();

    // The same by bytes.
    let mut pool = Mempool::with_limits(
        MempoolConfig {
            capacity: 100,
            nonce_window: 64,
        },
        Limits {
            bytes_max: 2 * size,
            duty_bytes_reserved: size,
            ..open_limits(100)
        },
    );
    ordinary(&mut pool, tx(&key(1), 0)).unwrap();
    ordinary(&mut pool, tx(&key(2), 0)).unwrap();
    assert_eq!(
        code(ordinary(&mut pool, tx(&key(3), 0))),
        ErrorCode::MempoolFull
    );
    pool.insert(tx(&key(3), 0), 0, Priority::Duty).unwrap();
    assert_eq!(
        code(pool.insert(tx(&key(4), 0), 0, Priority::Duty)),
        ErrorCode::MempoolFull
    );
    pool.assert_consistent();
}

#[test]
fn a_duty_evicts_gapped_ordinary_transactions_before_gapped_duties() {
    let mut pool = pool(3, open_limits(3));
    pool.insert(tx(&key(1), 5), 0, Priority::Duty).unwrap();
    ordinary(&mut pool, tx(&key(2), 5)).unwrap();
    ordinary(&mut pool, tx(&key(3), 5)).unwrap();
    let removed = pool.insert(tx(&key(4), 0), 0, Priority::Duty).unwrap();
    assert_eq!(removed[0].sender, key(2).public_key().address());
    let removed = pool.insert(tx(&key(5), 0), 0, Priority::Duty).unwrap();
    assert_eq!(removed[0].sender, key(3).public_key().address());
    let removed = pool.insert(tx(&key(6), 0), 0, Priority::Duty).unwrap();
    assert_eq!(removed[0].sender, key(1).public_key().address());
    pool.assert_consistent();
}

#[test]
fn a_committed_nonce_past_the_gap_makes_gapped_transactions_ready() {
    let mut pool = pool(10, open_limits(10));
    let a = key(1);
    ordinary(&mut pool, tx(&a, 0)).unwrap();
    ordinary(&mut pool, tx(&a, 3)).unwrap();
    ordinary(&mut pool, tx(&a, 4)).unwrap();
    assert_eq!(pool.gapped_len(), 2);
    // Nonces 0..3 were committed (1 and 2 came from elsewhere).
    let removed = pool.set_committed_nonce(&a.public_key().address(), 3);
    assert_eq!(reasons(&removed), vec![(0, Removal::NonceUsed)]);
    pool.assert_consistent();
    assert_eq!(pool.gapped_len(), 0);
    assert_eq!(nonces(&pool.reap(10, usize::MAX)), vec![3, 4]);
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        sender: u16,
        ahead: u64,
        messages: usize,
        duty: bool,
    },
    Commit {
        sender: u16,
        count: u64,
    },
    Refuse {
        sender: u16,
    },
    Advance,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u16..6, 0u64..6, 1usize..6, any::<bool>()).prop_map(|(sender, ahead, messages, duty)| Op::Insert { sender, ahead, messages, duty }),
        2 => (0u16..6, 1u64..4).prop_map(|(sender, count)| Op::Commit { sender, count }),
        1 => (0u16..6).prop_map(|sender| Op::Refuse { sender }),
        1 => Just(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Under any sequence of operations every count matches the entries and stays within its
    /// bound, reaping yields gap-free runs from the committed nonces, and a ready transaction
    /// is refused only when ready transactions alone leave no room for it.
    #[test]
    fn bounds_and_order_hold(ops in proptest::collection::vec(op(), 1..120)) {
        let size = tx_bytes();
        let limits = Limits {
            bytes_max: 30 * size,
            sender_txs_max: 5,
            sender_bytes_max: 12 * size,
            gapped_txs_max: 6,
            gapped_bytes_max: 10 * size,
            gapped_lifetime_blocks: 3,
            duty_txs_reserved: 3,
            duty_bytes_reserved: 6 * size,
        };
        let mut pool = pool(14, limits);
        let mut committed = [0u64; 6];
        let mut height = 0;
        for op in ops {
            match op {
                Op::Insert { sender, ahead, messages, duty } => {
                    let k = key(sender);
                    let t = tx_with(&k, committed[sender as usize] + ahead, messages);
                    let priority = if duty { Priority::Duty } else { Priority::Ordinary };
                    let bytes = t.encoded_len();
                    let ready_before = (pool.len() - pool.gapped_len(), pool.bytes() - pool.gapped_bytes());
                    let (own_txs, own_bytes, ready_end) = pool.sender_ready(&k.public_key().address());
                    let is_next = t.tx.nonce == ready_end.unwrap_or(committed[sender as usize]);
                    let result = pool.insert(t.clone(), committed[sender as usize], priority);
                    if let Err(e) = &result {
                        if e.code == ErrorCode::MempoolFull && duty && is_next {
                            // A ready duty is refused only if ready transactions fill the pool
                            // or its sender's bounds.
                            prop_assert!(
                                ready_before.0 + 1 > 14 + limits.duty_txs_reserved
                                    || ready_before.1 + bytes
                                        > limits.bytes_max + limits.duty_bytes_reserved
                                    || own_txs + 1 > limits.sender_txs_max
                                    || own_bytes + bytes > limits.sender_bytes_max
                            );
                        }
                    }
                }
                Op::Commit { sender, count } => {
                    let address = key(sender).public_key().address();
                    committed[sender as usize] += count;
                    pool.set_committed_nonce(&address, committed[sender as usize]);
                }
                Op::Refuse { sender } => {
                    let address = key(sender).public_key().address();
                    let first = pool.reap(100, usize::MAX).into_iter().find(|t| t.sender() == address);
                    if let Some(t) = first {
                        let removed = pool.remove_with_successors(&t.hash());
                        prop_assert_eq!(removed[0].hash, t.hash());
                    }
                }
                Op::Advance => {
                    height += 1;
                    pool.advance(height);
                }
            }
            pool.assert_consistent();
            let reaped = pool.reap(100, usize::MAX);
            let mut expected: HashMap<Address, u64> = HashMap::new();
            for t in &reaped {
                let i = (0..6).find(|i| key(*i).public_key().address() == t.sender()).unwrap();
                let next = expected.entry(t.sender()).or_insert(committed[i as usize]);
                prop_assert_eq!(t.tx.nonce, *next);
                *next += 1;
            }
        }
    }
}

//! The store's bounds and its transaction journal, through its public API.

use piazza_ledger::block::{prove_randomness, tx_root, Block, BlockHeader, Event, BLOCK_TXS_MAX};
use piazza_ledger::executor::{BlockOutcome, Writes};
use piazza_primitives::{Hash, SecretKey};
use piazza_store::{
    DroppedTx, Store, StoreError, BLOCK_EVENTS_MAX, DROPPED_REMEMBERED_MAX, DROP_REASON_BYTES_MAX,
};

fn open(dir: &tempfile::TempDir) -> Store {
    let store = Store::open(&dir.path().join("chain.redb")).unwrap();
    let mut writes = Writes::new();
    writes.insert(b"k".to_vec(), Some(b"v".to_vec()));
    let prepared = store.prepare(0, &writes).unwrap();
    store.commit_genesis(b"{}", &writes, prepared).unwrap();
    store
}

/// Commits the next block with no transactions and `events` hook events.
fn commit_with_events(store: &Store, events: usize) -> Result<(), StoreError> {
    let key = SecretKey::from_seed([3; 32]);
    let head = store.head().unwrap().unwrap();
    let height = head.height + 1;
    let mut writes = Writes::new();
    writes.insert(height.to_le_bytes().to_vec(), Some(vec![1]));
    let prepared = store.prepare(height, &writes).unwrap();
    let (randomness, randomness_proof) = prove_randomness(&key, "t", height, &Hash::ZERO);
    let header = BlockHeader {
        chain_id: "t".into(),
        height,
        parent_hash: head.block_hash,
        time_ms: height,
        proposer: key.public_key(),
        tx_root: tx_root(&[]),
        state_root: prepared.root,
        randomness,
        randomness_proof,
    };
    let signature = key.sign(&header.hash().0);
    let block = Block {
        header,
        txs: vec![],
        signature,
    };
    let outcome = BlockOutcome {
        writes,
        receipts: vec![],
        events: vec![Event::new("settled", &[]); events],
    };
    store.commit_block(&block, &outcome, prepared).map(|_| ())
}

#[test]
fn a_block_with_more_hook_events_than_transactions_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Hook events (settlements, expiries) are not bounded by the block's transaction count.
    commit_with_events(&store, BLOCK_TXS_MAX + 1).unwrap();
    assert_eq!(store.block_events(1).unwrap().len(), BLOCK_TXS_MAX + 1);
}

#[test]
fn a_block_over_the_event_bound_is_refused_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let refused = commit_with_events(&store, BLOCK_EVENTS_MAX + 1).unwrap_err();
    assert!(
        matches!(refused, StoreError::TooManyEvents { height: 1, events, max } if events == BLOCK_EVENTS_MAX + 1 && max == BLOCK_EVENTS_MAX),
        "{refused}"
    );
    assert_eq!(store.head().unwrap().unwrap().height, 0);
    assert!(store.block(1).unwrap().is_none());
    // Exactly at the bound is stored and read back.
    commit_with_events(&store, BLOCK_EVENTS_MAX).unwrap();
    assert_eq!(store.block_events(1).unwrap().len(), BLOCK_EVENTS_MAX);
}

fn hash(i: u32) -> Hash {
    Hash::of("test", &[&i.to_le_bytes()])
}

#[test]
fn journal_entries_survive_reopening_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    {
        let store = Store::open(&path).unwrap();
        // Concurrent appenders are grouped; every one returns only once durable.
        std::thread::scope(|scope| {
            for t in 0..8u32 {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..50u32 {
                        let n = t * 1000 + i;
                        store
                            .journal_append(vec![(hash(n), n.to_le_bytes().to_vec())])
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(store.journal_len().unwrap(), 400);
    }
    let store = Store::open(&path).unwrap();
    let entries = store.journal_entries().unwrap();
    assert_eq!(entries.len(), 400);
    for (h, bytes) in &entries {
        let n = u32::from_le_bytes(bytes.as_slice().try_into().unwrap());
        assert_eq!(*h, hash(n));
    }
    let long_reason = "é".repeat(DROP_REASON_BYTES_MAX);
    store
        .journal_forget(
            &[hash(0), hash(1)],
            &[DroppedTx {
                hash: hash(2),
                code: 6,
                reason: long_reason.clone(),
            }],
        )
        .unwrap();
    assert_eq!(store.journal_len().unwrap(), 397);
    let dropped = store.dropped(&hash(2)).unwrap().unwrap();
    assert_eq!(dropped.code, 6);
    assert!(dropped.reason.len() <= DROP_REASON_BYTES_MAX);
    assert!(long_reason.starts_with(&dropped.reason));
    assert!(store.dropped(&hash(0)).unwrap().is_none());
}

#[test]
fn only_the_most_recent_drops_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let drop = |i: u32| DroppedTx {
        hash: hash(i),
        code: 11,
        reason: format!("evicted {i}"),
    };
    let first: Vec<DroppedTx> = (0..DROPPED_REMEMBERED_MAX as u32).map(drop).collect();
    store.journal_forget(&[], &first).unwrap();
    assert!(store.dropped(&hash(0)).unwrap().is_some());
    // Dropping one already remembered again does not take a second place.
    store.journal_forget(&[], &[drop(0)]).unwrap();
    store
        .journal_forget(&[], &[drop(DROPPED_REMEMBERED_MAX as u32)])
        .unwrap();
    // The oldest (now hash 1) is forgotten; the re-dropped one and the newest are kept.
    assert!(store.dropped(&hash(1)).unwrap().is_none());
    assert!(store.dropped(&hash(0)).unwrap().is_some());
    assert_eq!(
        store
            .dropped(&hash(DROPPED_REMEMBERED_MAX as u32))
            .unwrap()
            .unwrap()
            .reason,
        format!("evicted {DROPPED_REMEMBERED_MAX}")
    );
}

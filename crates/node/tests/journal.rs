//! Acknowledged means journaled: every transaction the node returned a hash for is, after a
//! crash and a restart, either included or reported dropped (with its reason) by
//! `App::transaction_status`; none is silently lost.

mod common;

use piazza_codec::Encode;
use piazza_ledger::bank;
use piazza_ledger::error::ErrorCode;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_mempool::{Limits, MempoolConfig};
use piazza_node::app::TransactionStatus;
use piazza_node::App;
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use piazza_store::Store;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USERS: u8 = 60;
const CHILD_DIR_VAR: &str = "PIAZZA_JOURNAL_TEST_CHILD_DIR";
/// Acknowledgements the parent waits for before it kills the child.
const KILL_AFTER_ACKS: usize = 400;
const CHILD_WAIT: Duration = Duration::from_secs(120);

fn users() -> Vec<SecretKey> {
    (1..=USERS).map(common::user_key).collect()
}

fn send(key: &SecretKey, nonce: u64) -> SignedTransaction {
    Transaction {
        chain_id: "piazza-test".into(),
        sender: key.public_key(),
        nonce,
        max_fee: Amount::pza(1),
        messages: vec![Message::Bank(bank::Msg::Send {
            to: Address([9; 20]),
            amount: Amount::new(1),
        })],
    }
    .sign(key)
}

fn open(path: &Path, capacity: usize) -> App {
    let store = Store::open(path).unwrap();
    let config = MempoolConfig {
        capacity,
        nonce_window: 64,
    };
    let limits = Limits {
        gapped_lifetime_blocks: 4,
        gapped_txs_max: 100,
        duty_txs_reserved: 0,
        ..Limits::for_config(config)
    };
    App::open_with_limits(
        store,
        Some(&common::genesis(&users())),
        common::validator_key(),
        config,
        limits,
    )
    .unwrap()
}

fn block(app: &App) {
    let height = app.head().unwrap().height + 1;
    let block = app
        .propose(height, 1_700_000_000_000 + height * 1000)
        .unwrap();
    app.commit(block).unwrap();
}

/// Runs blocks until nothing is pending and every gapped transaction has expired.
fn drain(app: &App) {
    for _ in 0..20 {
        block(app);
    }
    assert_eq!(app.mempool_size(), 0);
}

/// Every acknowledged hash is included or dropped; returns how many were dropped, by code.
fn settled(app: &App, acked: &[Hash]) -> Vec<(Hash, ErrorCode)> {
    let mut dropped = Vec::new();
    for hash in acked {
        match app.transaction_status(hash).unwrap() {
            TransactionStatus::Included { .. } => {}
            TransactionStatus::Dropped { code, reason } => {
                assert!(!reason.is_empty());
                dropped.push((*hash, code));
            }
            other => panic!("acknowledged {hash} is {other:?} after the restart"),
        }
    }
    dropped
}

#[test]
fn acknowledged_transactions_are_included_or_reported_dropped_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let users = users();
    let mut acked = Vec::new();
    let mut gapped = Vec::new();
    {
        let app = open(&path, 10_000);
        // Some are included before the crash…
        for key in &users[..10] {
            acked.push(app.submit(&send(key, 0).to_bytes()).unwrap());
        }
        block(&app);
        // …the rest are acknowledged and never included: ready runs, one at a time and in
        // batches, and gapped ones that wait on a nonce never sent.
        for (i, key) in users.iter().enumerate() {
            let first = if i < 10 { 1 } else { 0 };
            for nonce in first..first + 3 {
                acked.push(app.submit(&send(key, nonce).to_bytes()).unwrap());
            }
            let batch = (first + 3..first + 6).map(|n| send(key, n)).collect();
            for result in app.submit_many(batch) {
                acked.push(result.unwrap());
            }
            let hash = app.submit(&send(key, 40).to_bytes()).unwrap();
            acked.push(hash);
            gapped.push(hash);
        }
        assert_eq!(
            app.transaction_status(&gapped[0]).unwrap(),
            TransactionStatus::Pending
        );
        // The node stops here: no block includes them.
    }
    // Restarted with a smaller pool: not everything fits again. Replay goes in nonce order, so
    // the 360 ready transfers fit and 40 of the 60 gapped ones.
    let capacity = 400;
    let app = open(&path, capacity);
    assert_eq!(app.mempool_size(), capacity);
    let full_at_restart = acked
        .iter()
        .filter(|h| {
            matches!(
                app.transaction_status(h).unwrap(),
                TransactionStatus::Dropped {
                    code: ErrorCode::MempoolFull,
                    ..
                }
            )
        })
        .count();
    assert!(full_at_restart > 0);
    assert_eq!(full_at_restart, 20);
    drain(&app);
    let dropped = settled(&app, &acked);
    let dropped_hashes: HashSet<Hash> = dropped.iter().map(|(h, _)| *h).collect();
    assert_eq!(
        dropped_hashes,
        gapped.iter().copied().collect::<HashSet<_>>()
    );
    let expired = dropped
        .iter()
        .filter(|(_, code)| *code == ErrorCode::NonceGap)
        .count();
    assert_eq!(
        expired, 40,
        "gapped transactions expire after their lifetime"
    );
    assert_eq!(
        app.store().journal_len().unwrap(),
        0,
        "nothing is left journaled"
    );
    // Drops are remembered across another restart.
    drop(app);
    let app = open(&path, capacity);
    assert_eq!(settled(&app, &acked), dropped);
}

/// The child process: opens a node on the directory and acknowledges transfers forever (one
/// line per acknowledged hash on stdout) until the parent kills it.
fn child(dir: &str) {
    let app = open(&Path::new(dir).join("chain.redb"), 100_000);
    let users = users();
    let mut out = std::io::stdout().lock();
    for nonce in 0..60 {
        for key in &users {
            let hash = app.submit(&send(key, nonce).to_bytes()).unwrap();
            writeln!(out, "acked {}", hash.to_hex()).unwrap();
            out.flush().unwrap();
        }
        if nonce % 7 == 6 {
            block(&app);
        }
    }
    // Never reached in the test: the parent kills the process long before.
    std::thread::sleep(CHILD_WAIT);
}

#[test]
fn a_killed_process_loses_no_acknowledged_transaction() {
    if let Ok(dir) = std::env::var(CHILD_DIR_VAR) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_process_loses_no_acknowledged_transaction",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Lines arrive through a channel so that a child that hangs cannot hang the test.
    let stdout = process.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + CHILD_WAIT;
    let mut acked = Vec::new();
    while acked.len() < KILL_AFTER_ACKS {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = received.recv_timeout(left) else {
            break;
        };
        if let Some(hex) = line.strip_prefix("acked ") {
            acked.push(hex.parse::<Hash>().unwrap());
        }
    }
    // SIGKILL: no destructor, no flush.
    process.kill().unwrap();
    process.wait().unwrap();
    assert_eq!(
        acked.len(),
        KILL_AFTER_ACKS,
        "the child acknowledged transactions"
    );

    let app = open(&dir.path().join("chain.redb"), 100_000);
    for hash in &acked {
        let status = app.transaction_status(hash).unwrap();
        assert!(
            matches!(
                status,
                TransactionStatus::Pending | TransactionStatus::Included { .. }
            ),
            "acknowledged {hash} is {status:?} after SIGKILL"
        );
    }
    drain(&app);
    assert!(settled(&app, &acked).is_empty(), "every transfer was valid");
}

//! Submission in bulk: a run of `piazza_submitTransaction` calls in one JSON-RPC batch is
//! admitted together (one durable journal write) and every call is answered exactly as it would
//! be alone; `Client::submit_batch` gets one result per transaction; another validator's block
//! has only the signatures this node has not verified at admission checked again, and a block
//! with a bad signature is still refused; gossip behind its block costs no signature check.

mod common;

use piazza_client::BATCH_CALLS_MAX;
use piazza_codec::Encode;
use piazza_ledger::block::{tx_root, Block};
use piazza_ledger::tx::{SignedTransaction, Transaction};
use piazza_mempool::MempoolConfig;
use piazza_node::{App, NodeConfig};
use piazza_primitives::{Address, Amount, SecretKey};
use piazza_store::Store;
use serde_json::{json, Value};
use std::time::Duration;

/// Long enough that no block is made while a test runs (the first is made at start).
const IDLE_BLOCK_INTERVAL: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(30);

/// A node that makes its first block and then none while the test runs, so that two nodes
/// given the same calls hold the same state.
async fn idle_node(users: &[SecretKey]) -> (piazza_node::NodeHandle, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.block_interval = IDLE_BLOCK_INTERVAL;
    let node = piazza_node::start(
        config,
        Some(common::genesis(users)),
        common::validator_key(),
    )
    .await
    .unwrap();
    let url = format!("http://{}", node.rpc_addr);
    let client = piazza_client::Client::new(&url);
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.status().await.unwrap().height < 1 {
        assert!(tokio::time::Instant::now() < deadline, "no first block");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (node, url, dir)
}

fn to() -> Address {
    Address([7; 20])
}

fn call(id: Option<u64>, method: &str, params: Value) -> Value {
    let mut call = json!({"jsonrpc": "2.0", "method": method, "params": params});
    if let Some(id) = id {
        call["id"] = json!(id);
    }
    call
}

fn submit(id: Option<u64>, tx: &SignedTransaction) -> Value {
    call(
        id,
        piazza_api::method::SUBMIT_TRANSACTION,
        json!([hex::encode(tx.to_bytes())]),
    )
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Option<Value> {
    let answer = http
        .post(format!("{url}/"))
        .json(body)
        .send()
        .await
        .unwrap();
    let text = answer.text().await.unwrap();
    (!text.is_empty()).then(|| serde_json::from_str(&text).unwrap())
}

/// The ledger error name of an answer, or `ok`.
fn outcome(answer: &Value) -> String {
    match answer.get("error") {
        None => "ok".into(),
        Some(error) => error["data"]["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("rpc {}", error["code"])),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_submissions_is_answered_call_by_call_as_single_calls_are() {
    let users: Vec<SecretKey> = (1..=3).map(common::user_key).collect();
    let (alone, alone_url, _a) = idle_node(&users).await;
    let (batched, batched_url, _b) = idle_node(&users).await;
    let transfer = |user: usize, nonce: u64| common::transfer(&users[user], nonce, to(), 5);
    let forged = {
        let real = transfer(1, 0);
        SignedTransaction::new(real.tx.clone(), users[2].sign(&real.tx.sign_bytes()))
    };
    let other_chain = Transaction {
        chain_id: "another-chain".into(),
        ..transfer(1, 0).tx
    }
    .sign(&users[1]);
    let no_fee = Transaction {
        max_fee: Amount::ZERO,
        ..transfer(2, 1).tx
    }
    .sign(&users[2]);
    let calls = vec![
        submit(Some(1), &transfer(0, 0)),
        submit(Some(2), &transfer(0, 1)),
        submit(Some(3), &transfer(0, 0)),
        submit(Some(4), &forged),
        submit(Some(5), &other_chain),
        submit(Some(6), &transfer(1, 1_000)),
        call(
            Some(7),
            piazza_api::method::SUBMIT_TRANSACTION,
            json!(["zz"]),
        ),
        call(Some(8), piazza_api::method::SUBMIT_TRANSACTION, json!([7])),
        call(
            Some(9),
            piazza_api::method::SUBMIT_TRANSACTION,
            json!(["00ff"]),
        ),
        call(
            Some(10),
            piazza_api::method::GET_TRANSACTION_STATUS,
            json!([transfer(0, 1).hash().to_hex()]),
        ),
        submit(None, &transfer(2, 0)),
        submit(Some(12), &no_fee),
        submit(Some(13), &transfer(1, 0)),
        json!({"jsonrpc": "1.0", "id": 14, "method": piazza_api::method::SUBMIT_TRANSACTION, "params": []}),
        submit(Some(15), &transfer(1, 1)),
    ];
    let http = reqwest::Client::new();
    let mut one_by_one = Vec::new();
    for call in &calls {
        one_by_one.extend(post(&http, &alone_url, call).await);
    }
    let batch = post(&http, &batched_url, &Value::Array(calls.clone()))
        .await
        .unwrap();
    assert_eq!(batch, Value::Array(one_by_one.clone()));
    let outcomes: Vec<String> = one_by_one.iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [
            "ok",
            "ok",
            "duplicate_tx",
            "bad_signature",
            "wrong_chain_id",
            "nonce_gap",
            "malformed_bytes",
            "rpc -32602",
            "malformed_bytes",
            "ok",
            "fee_too_low",
            "ok",
            "rpc -32600",
            "ok",
        ]
    );
    assert_eq!(one_by_one[9]["result"]["status"], "pending");
    // The notification (user 2's nonce 0) was admitted too, silently.
    assert_eq!(alone.app.mempool_size(), 5);
    assert_eq!(batched.app.mempool_size(), 5);
    alone.shutdown().await;
    batched.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_submits_in_batches_with_one_result_per_transaction() {
    let users: Vec<SecretKey> = (1..=4).map(common::user_key).collect();
    let (node, url, _dir) = idle_node(&users).await;
    let client = piazza_client::Client::new(&url);
    // More than two requests' worth, each sender within its nonce window.
    let txs: Vec<SignedTransaction> = (0..(2 * BATCH_CALLS_MAX as u64 + 40) / 4)
        .flat_map(|nonce| {
            users
                .iter()
                .map(move |u| common::transfer(u, nonce, to(), 1))
        })
        .collect();
    assert!(txs.len() > 2 * BATCH_CALLS_MAX);
    let results = client.submit_batch(&txs).await.unwrap();
    assert_eq!(results.len(), txs.len());
    for (result, tx) in results.iter().zip(&txs) {
        assert_eq!(result.as_ref().unwrap(), &tx.hash());
    }
    assert_eq!(node.app.mempool_size(), txs.len());
    // Sent again: each refused on its own, in order.
    let again = client.submit_batch(&txs[..3]).await.unwrap();
    assert_eq!(again.len(), 3);
    for result in again {
        assert_eq!(
            result.unwrap_err().ledger_error_name(),
            Some("duplicate_tx")
        );
    }
    node.shutdown().await;
}

/// Two chains on the same genesis and validator key, each in its own database.
fn proposer_and_validator(users: &[SecretKey]) -> (tempfile::TempDir, App, App) {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        let store = Store::open(&dir.path().join(name)).unwrap();
        let genesis = common::genesis(users);
        App::open(
            store,
            Some(&genesis),
            common::validator_key(),
            MempoolConfig::default(),
        )
    };
    let (proposer, validator) = (open("proposer.redb"), open("validator.redb"));
    (dir, proposer.unwrap(), validator.unwrap())
}

/// `count` transfers taking turns over `users`, each user's nonces in order from 0.
fn round_robin_transfers(users: &[SecretKey], count: u64) -> Vec<SignedTransaction> {
    let n = users.len() as u64;
    (0..count)
        .map(|i| common::transfer(&users[(i % n) as usize], i / n, to(), 1))
        .collect()
}

/// Admits `txs` into `app`, every one of them.
fn admit(app: &App, txs: &[SignedTransaction]) {
    for result in app.submit_many(txs.to_vec()) {
        result.unwrap();
    }
}

/// `block` with its transactions replaced, its header re-rooted and signed again by the
/// proposer (so only the transactions can be wrong).
fn with_txs(block: &Block, txs: Vec<SignedTransaction>) -> Block {
    let mut header = block.header.clone();
    header.tx_root = tx_root(&txs);
    let signature = common::validator_key().sign(&header.hash().0);
    Block {
        header,
        txs,
        signature,
    }
}

/// Three users, a proposer and a validator on their genesis, and the proposer's block of
/// `count` round-robin transfers (admitted into the proposer only).
fn proposed_block(
    count: u64,
) -> (
    Vec<SecretKey>,
    tempfile::TempDir,
    App,
    Vec<SignedTransaction>,
    Block,
) {
    let users: Vec<SecretKey> = (1..=3).map(common::user_key).collect();
    let (dir, proposer, validator) = proposer_and_validator(&users);
    let txs = round_robin_transfers(&users, count);
    admit(&proposer, &txs);
    let block = proposer.propose(1, 1_700_000_001_000).unwrap();
    (users, dir, validator, txs, block)
}

#[test]
fn another_validators_block_has_only_unseen_signatures_verified() {
    // 70 transfers: enough for the parallel path of the verification.
    let (_users, _dir, validator, txs, block) = proposed_block(70);
    assert_eq!(block.txs.len(), txs.len());

    // Nothing seen before: every signature is verified.
    validator.validate(block.clone()).unwrap();
    assert_eq!(validator.metrics.block_signatures(), (70, 0));

    // Seen valid in that block: admitting 50 of them (gossip) and validating the block again
    // verifies none of them again.
    admit(&validator, &txs[..50]);
    assert_eq!(validator.admission_signatures(), 0);
    validator.validate(block.clone()).unwrap();
    assert_eq!(validator.metrics.block_signatures(), (70, 70));
    validator.commit(block.clone()).unwrap();
    assert_eq!(
        validator.head().unwrap().state_root,
        block.header.state_root
    );
}

#[test]
fn a_block_with_a_bad_signature_is_refused_even_when_its_transaction_was_admitted() {
    let users: Vec<SecretKey> = (1..=3).map(common::user_key).collect();
    let (_dir, proposer, validator) = proposer_and_validator(&users);
    let txs: Vec<SignedTransaction> = (0..3u64)
        .map(|i| common::transfer(&users[i as usize], 0, to(), 1))
        .collect();
    admit(&proposer, &txs);
    admit(&validator, &txs);
    let block = proposer.propose(1, 1_700_000_001_000).unwrap();
    // The validator holds the real transaction; the block carries its message under another
    // key's signature (another hash, so nothing of the admission is reused).
    let mut forged = block.txs.clone();
    let tx = forged[1].tx.clone();
    forged[1] = SignedTransaction::new(tx.clone(), users[0].sign(&tx.sign_bytes()));
    let refused = validator.validate(with_txs(&block, forged)).unwrap_err();
    assert!(refused.0.contains("signature"), "{refused}");
    // The same block with the real transactions passes.
    validator
        .validate(with_txs(&block, block.txs.clone()))
        .unwrap();
    assert_eq!(validator.metrics.block_signatures(), (1, 5));
}

/// A transaction is verified once per node whichever path brings it first: one admitted from a
/// client or a peer is not verified again in another validator's block (it is in the
/// mempool), and one verified in a block is not verified again when its gossip follows before
/// the block is committed (the node remembers it, bounded by `VERIFIED_SIGNATURES_MAX`).
#[test]
fn a_signature_is_verified_once_whether_its_block_or_its_gossip_comes_first() {
    let (users, _dir, validator, txs, block) = proposed_block(69);
    // Gossip first for 9 of them, then the block: only the other 60 verified in the block.
    let early: Vec<Vec<u8>> = txs[..9].iter().map(|tx| tx.to_bytes()).collect();
    assert_eq!(validator.submit_from_peers(early), 9);
    assert_eq!(validator.admission_signatures(), 9);
    validator.validate(block.clone()).unwrap();
    assert_eq!(validator.metrics.block_signatures(), (60, 9));
    // The block first for the rest, then their gossip: admitted with no verification.
    let late: Vec<Vec<u8>> = txs[9..].iter().map(|tx| tx.to_bytes()).collect();
    assert_eq!(validator.submit_from_peers(late), 60);
    assert_eq!(validator.admission_signatures(), 9);
    // A single submission of a block-verified transaction is not verified again either.
    let (_users, _dir, validator, _, block) = proposed_block(3);
    validator.validate(block).unwrap();
    assert_eq!(validator.metrics.block_signatures(), (3, 0));
    validator.submit(&txs[0].to_bytes()).unwrap();
    assert_eq!(validator.admission_signatures(), 0);
    // A forged signature is never remembered: refused in the block, refused at admission.
    let mut forged = txs[3].clone();
    forged.signature = users[0].sign(b"another message");
    let forged = SignedTransaction::new(forged.tx, forged.signature);
    assert!(validator.submit(&forged.to_bytes()).is_err());
    assert_eq!(validator.admission_signatures(), 1);
    assert!(validator.submit(&forged.to_bytes()).is_err());
    assert_eq!(validator.admission_signatures(), 2);
}

/// A peer's gossip that arrives after its block was committed (a lagging node's queue) is
/// refused by the state checks, before any signature is verified; a fresh one is verified once.
#[test]
fn gossip_behind_its_block_costs_no_signature_check() {
    let (users, _dir, validator, txs, block) = proposed_block(69);
    validator.validate(block.clone()).unwrap();
    validator.commit(block).unwrap();
    let gossiped: Vec<Vec<u8>> = txs.iter().map(|tx| tx.to_bytes()).collect();
    assert_eq!(validator.submit_from_peers(gossiped), 0);
    assert_eq!(validator.admission_signatures(), 0);
    // The next nonces, not yet seen: each verified once.
    let fresh: Vec<Vec<u8>> = (0..3u64)
        .map(|i| common::transfer(&users[i as usize], 23, to(), 1).to_bytes())
        .collect();
    assert_eq!(validator.submit_from_peers(fresh), 3);
    assert_eq!(validator.admission_signatures(), 3);
}

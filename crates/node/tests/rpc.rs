//! A real node in this process, driven over JSON-RPC.

mod common;

use piazza_codec::Encode;
use piazza_ledger::bank;
use piazza_ledger::staking::Role;
use piazza_ledger::tx::{Message, Transaction, TX_BYTES_MAX};
use piazza_primitives::{Address, Amount, SecretKey};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn send(
    key: &SecretKey,
    nonce: u64,
    to: Address,
    amount: Amount,
    chain_id: &str,
) -> piazza_ledger::tx::SignedTransaction {
    Transaction {
        chain_id: chain_id.into(),
        sender: key.public_key(),
        nonce,
        max_fee: Amount::pza(1),
        messages: vec![Message::Bank(bank::Msg::Send { to, amount })],
    }
    .sign(key)
}

async fn raw_call(url: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Submits `bytes` and expects the ledger error `name`; returns the JSON-RPC error.
async fn expect_refusal(t: &common::TestNode, bytes: &[u8], name: &str) {
    let err = t.client.submit_raw(bytes).await.unwrap_err();
    assert_eq!(err.ledger_error_name(), Some(name), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transactions_are_refused_with_stable_codes_and_the_node_stays_healthy() {
    let alice = common::user_key(1);
    let bob = common::user_key(2).public_key().address();
    let t = common::start(std::slice::from_ref(&alice)).await;

    // A good transfer first, so the nonce moves.
    let first = send(&alice, 0, bob, Amount::pza(1), "piazza-test");
    let hash = t.client.submit(&first).await.unwrap();
    assert_eq!(
        t.client.wait_for_receipt(&hash, WAIT).await.unwrap().status,
        "ok"
    );

    let mut tampered = send(&alice, 1, bob, Amount::pza(1), "piazza-test");
    tampered.tx.messages = vec![Message::Bank(bank::Msg::Send {
        to: bob,
        amount: Amount::pza(2),
    })];
    expect_refusal(&t, &tampered.to_bytes(), "bad_signature").await;
    expect_refusal(
        &t,
        &send(&alice, 1, bob, Amount::pza(1), "other-chain").to_bytes(),
        "wrong_chain_id",
    )
    .await;
    expect_refusal(&t, &first.to_bytes(), "nonce_replayed").await;
    expect_refusal(
        &t,
        &send(&alice, 1_000, bob, Amount::pza(1), "piazza-test").to_bytes(),
        "nonce_gap",
    )
    .await;
    expect_refusal(
        &t,
        &send(&alice, 1, bob, Amount::pza(5_000), "piazza-test").to_bytes(),
        "insufficient_funds",
    )
    .await;
    expect_refusal(&t, &vec![7u8; TX_BYTES_MAX + 1], "oversized_tx").await;
    // Evidence has its own size class, but only while a dispute waits for it; past the class
    // it is oversized like anything else.
    let evidence = |bytes: usize| {
        Transaction {
            chain_id: "piazza-test".into(),
            sender: alice.public_key(),
            nonce: 1,
            max_fee: Amount::pza(50),
            messages: vec![Message::Verify(piazza_ledger::verify::Msg::Arbitrate {
                job: 0,
                evidence: vec![0; bytes],
            })],
        }
        .sign(&alice)
        .to_bytes()
    };
    expect_refusal(&t, &evidence(200_000), "no_dispute").await;
    expect_refusal(
        &t,
        &evidence(piazza_ledger::tx::EVIDENCE_TX_BYTES_MAX),
        "oversized_tx",
    )
    .await;
    expect_refusal(&t, &[1, 2, 3, 4], "malformed_bytes").await;
    let mut truncated = send(&alice, 1, bob, Amount::pza(1), "piazza-test").to_bytes();
    truncated.truncate(truncated.len() - 1);
    expect_refusal(&t, &truncated, "malformed_bytes").await;

    // Malformed JSON-RPC: each a clear JSON-RPC error.
    let (status, answer) = raw_call(&t.url, b"{not json".to_vec()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_i64()),
        (200, Some(-32700))
    );
    let (_, answer) = raw_call(
        &t.url,
        br#"{"jsonrpc":"2.0","id":1,"method":"piazza_nope","params":[]}"#.to_vec(),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32601);
    let (_, answer) = raw_call(
        &t.url,
        br#"{"jsonrpc":"1.0","id":1,"method":"piazza_status"}"#.to_vec(),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32600);
    let (_, answer) = raw_call(
        &t.url,
        br#"{"jsonrpc":"2.0","id":1,"method":"piazza_getReceipt","params":["zz"]}"#.to_vec(),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32602);
    let (_, answer) = raw_call(
        &t.url,
        br#"{"jsonrpc":"2.0","id":1,"method":"piazza_getAccount","params":{"a":1}}"#.to_vec(),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32602);
    let (status, answer) =
        raw_call(&t.url, vec![b' '; piazza_node::rpc::RPC_BODY_BYTES_MAX + 1]).await;
    assert_eq!(
        (status, answer["error"]["code"].as_i64()),
        (413, Some(-32001))
    );
    let (_, answer) = raw_call(&t.url, br#"[{"jsonrpc":"2.0","id":1,"method":"piazza_status"},{"jsonrpc":"2.0","id":2,"method":"x"}]"#.to_vec()).await;
    assert_eq!(answer[0]["result"]["chain_id"], "piazza-test");
    assert_eq!(answer[1]["error"]["code"], -32601);

    // Still healthy: the mempool holds nothing bad and the next transfer commits.
    assert_eq!(t.client.status().await.unwrap().mempool_size, 0);
    let hash = t
        .client
        .submit(&send(&alice, 1, bob, Amount::pza(1), "piazza-test"))
        .await
        .unwrap();
    assert_eq!(
        t.client.wait_for_receipt(&hash, WAIT).await.unwrap().status,
        "ok"
    );
    let metrics = reqwest::get(format!("{}/metrics", t.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("piazza_txs_refused_total{code=\"bad_signature\"} 1"),
        "{metrics}"
    );
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_blocks_proofs_and_subscriptions() {
    let alice = common::user_key(1);
    let bob = common::user_key(2).public_key().address();
    let t = common::start(std::slice::from_ref(&alice)).await;
    let mut blocks = t.client.subscribe("newBlocks").await.unwrap();
    let mut events = t.client.subscribe("events").await.unwrap();

    let hash = t
        .client
        .transfer(&alice, bob, Amount::pza(7))
        .await
        .unwrap();
    let receipt = t.client.wait_for_receipt(&hash, WAIT).await.unwrap();
    assert_eq!(receipt.status, "ok");
    assert_eq!(receipt.events[0].kind, "bank.transfer");
    assert_eq!(
        receipt.events[0].attributes["amount"],
        Amount::pza(7).base_units().to_string()
    );

    let tx = t.client.transaction(&hash).await.unwrap().unwrap();
    assert_eq!(
        (tx.height, tx.sender.clone()),
        (receipt.height, alice.public_key().address().to_string())
    );
    let block = t.client.block(receipt.height).await.unwrap().unwrap();
    assert!(block.tx_hashes.contains(&hash.to_hex()));
    assert_eq!(
        t.client
            .block_by_hash(&block.hash.parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .height,
        receipt.height
    );
    assert!(t.client.block(1_000_000).await.unwrap().is_none());

    let (account, proven_block) = t.client.verified_account(&bob).await.unwrap();
    assert_eq!(account.balance, Amount::pza(7).base_units().to_string());
    assert_eq!(
        proven_block.header.proposer,
        common::validator_key().public_key()
    );
    // A tampered answer does not verify.
    let mut forged = account.clone();
    forged.balance = Amount::pza(8).base_units().to_string();
    assert!(piazza_client::verify_account_proof(&forged, &bob).is_err());
    // An empty account is proven absent.
    let nobody = Address([9; 20]);
    let info = t.client.account(&nobody).await.unwrap();
    assert_eq!(
        (info.balance.as_str(), info.proof.value.is_none()),
        ("0", true)
    );
    piazza_client::verify_account_proof(&info, &nobody).unwrap();

    let block_note = tokio::time::timeout(WAIT, blocks.next())
        .await
        .unwrap()
        .unwrap();
    assert!(block_note["height"].as_u64().unwrap() >= 1);
    let event = loop {
        let e = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap();
        if e["kind"] == "bank.transfer" {
            break e;
        }
    };
    assert_eq!(event["tx_hash"], json!(hash.to_hex()));
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_unbonds_after_the_delay() {
    let alice = common::user_key(1);
    let address = alice.public_key().address();
    let t = common::start(std::slice::from_ref(&alice)).await;
    let hash = t
        .client
        .bond(&alice, Role::Provider, Amount::pza(50))
        .await
        .unwrap();
    let receipt = t.client.wait_for_receipt(&hash, WAIT).await.unwrap();
    assert_eq!(receipt.error.unwrap().name, "stake_below_minimum");
    let hash = t
        .client
        .bond(&alice, Role::Provider, Amount::pza(300))
        .await
        .unwrap();
    assert_eq!(
        t.client.wait_for_receipt(&hash, WAIT).await.unwrap().status,
        "ok"
    );
    assert_eq!(
        t.client.stake(&address).await.unwrap().bonds["provider"],
        Amount::pza(300).base_units().to_string()
    );
    let before = t
        .client
        .account(&address)
        .await
        .unwrap()
        .balance
        .parse::<u128>()
        .unwrap();

    let hash = t
        .client
        .unbond(&alice, Role::Provider, Amount::pza(300))
        .await
        .unwrap();
    let receipt = t.client.wait_for_receipt(&hash, WAIT).await.unwrap();
    let release: u64 = receipt.events[0].attributes["release_height"]
        .parse()
        .unwrap();
    assert_eq!(release, receipt.height + 3);
    let stake = t.client.stake(&address).await.unwrap();
    assert!(stake.bonds.is_empty());
    assert_eq!(stake.unbonding, Amount::pza(300).base_units().to_string());
    tokio::time::timeout(WAIT, async {
        while t.client.status().await.unwrap().height < release {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the chain did not reach the release height");
    let after = t
        .client
        .account(&address)
        .await
        .unwrap()
        .balance
        .parse::<u128>()
        .unwrap();
    let fee = receipt.fee_paid.parse::<u128>().unwrap();
    assert_eq!(after, before - fee + Amount::pza(300).base_units());
    assert_eq!(t.client.stake(&address).await.unwrap().unbonding, "0");
    t.node.shutdown().await;
}

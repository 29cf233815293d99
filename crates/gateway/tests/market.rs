//! The gateway against a mock node (no chain, no models): fees by size, fairness between API
//! keys, and settlement that survives a client hanging up. Fast; the real chain is in
//! `openai.rs`.

#[path = "support/mock_node.rs"]
mod mock_node;

use mock_node::{mock_node, MockNode, MOCK_MODEL, MOCK_WORK_UNITS};
use piazza_gateway::fees::JobFees;
use piazza_gateway::{start, GatewayConfig, GatewayHandle, Limits};
use piazza_keystore::Keystore;
use piazza_ledger::genesis::FeeParams;
use piazza_primitives::Amount;
use serde_json::{json, Value};
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const PRICE_PER_UNIT: u128 = 1_000;
/// How long a test waits for something that should happen at once before failing.
const PATIENCE: Duration = Duration::from_secs(30);

struct Setup {
    _dir: tempfile::TempDir,
    node: MockNode,
    gw: GatewayHandle,
}

async fn setup(fees: FeeParams, limits: Limits) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let keystore_dir = dir.path().join("keys");
    let dev = Keystore::open(&keystore_dir)
        .unwrap()
        .create("dev", "")
        .unwrap()
        .address;
    let node = mock_node(fees, dev, Amount::new(PRICE_PER_UNIT)).await;
    let mut config = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &node.url,
        dir.path().join("gateway"),
        keystore_dir,
    );
    config.limits = limits;
    let gw = start(config).await.expect("the gateway starts");
    Setup {
        _dir: dir,
        node,
        gw,
    }
}

async fn embed(gw: &GatewayHandle, key: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", gw.url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn record(gw: &GatewayHandle, index: usize) -> piazza_gateway::keys::KeyRecord {
    let mut keys = gw.keys();
    keys.sort_by_key(|k| k.id.clone());
    keys.swap_remove(index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fees_come_from_the_chain_and_inputs_up_to_the_ledger_limit_pass() {
    let fees = FeeParams {
        unit_price: Amount::new(3_000),
        tx_base_units: 50,
        byte_units: 2,
    };
    let s = setup(fees.clone(), Limits::default()).await;
    assert_eq!(
        s.gw.job_fees(),
        JobFees::from_params(&fees).unwrap(),
        "measured through the node's admission"
    );
    let key = s.gw.create_key("dev", Amount::pza(10)).unwrap();
    // 16 KiB, the ledger's largest input: a fee of about 0.1 PZA at these parameters.
    let input = "y".repeat(piazza_ledger::compute::JOB_INPUT_BYTES_MAX);
    let (status, body) = embed(&s.gw, &key, json!({"model": MOCK_MODEL, "input": input})).await;
    assert_eq!(status, 200, "{body}");
    let fee: u128 = body["piazza"][0]["fee"].as_str().unwrap().parse().unwrap();
    let price: u128 = body["piazza"][0]["price"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(fee > 16 * 1024 * 2 * 3_000, "fee {fee}");
    let spent = s.gw.keys()[0].spent;
    assert_eq!(
        spent,
        Amount::new(fee + price),
        "charged the price and the fee"
    );
    assert_eq!(s.gw.reserved(&s.gw.keys()[0].key_hash), Amount::ZERO);
    assert_eq!(body["usage"]["prompt_tokens"], MOCK_WORK_UNITS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_below_one_request_says_what_the_request_needs() {
    let s = setup(FeeParams::default(), Limits::default()).await;
    let key = s.gw.create_key("dev", Amount::new(1_000)).unwrap();
    let worst = s.gw.embedding_worst_case(MOCK_MODEL, &["x"]).await.unwrap();
    let (status, body) = embed(&s.gw, &key, json!({"model": MOCK_MODEL, "input": "x"})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("worst-case cost is {worst} PZA"))
            && message.contains("more than the 0.000001 PZA left"),
        "{message}"
    );
    assert_eq!(s.node.state.submitted.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_parameters_are_refused_before_anything_is_paid() {
    let s = setup(FeeParams::default(), Limits::default()).await;
    let key = s.gw.create_key("dev", Amount::pza(1)).unwrap();
    let (status, body) = embed(
        &s.gw,
        &key,
        json!({"model": MOCK_MODEL, "input": "x", "stream": true}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &json!("stream")),
        "{body}"
    );
    let (status, body) = embed(
        &s.gw,
        &key,
        json!({"model": MOCK_MODEL, "input": "x", "user": "someone"}),
    )
    .await;
    assert_eq!(status, 200, "harmless `user`: {body}");
    let (status, body) = embed(
        &s.gw,
        &key,
        json!({"model": MOCK_MODEL, "input": ["x", ""]}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &json!("input")),
        "{body}"
    );
    assert_eq!(s.node.state.submitted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_floods_the_gateway_does_not_starve_another() {
    let in_flight = 8;
    let s = setup(
        FeeParams::default(),
        Limits {
            requests_in_flight_max: NonZeroUsize::new(in_flight).unwrap(),
            requests_in_flight_per_key_max: NonZeroUsize::new(2).unwrap(),
            queue_wait: Duration::from_secs(2),
            ..Limits::default()
        },
    )
    .await;
    let flood = s.gw.create_key("dev", Amount::pza(1)).unwrap();
    let other = s.gw.create_key("dev", Amount::pza(1)).unwrap();
    // Key A: as many requests as the gateway has slots, each sending its body slowly (the
    // headers, then a few bytes of a 1000-byte body, then nothing).
    let mut trickles = Vec::new();
    for _ in 0..in_flight * 2 {
        let mut socket = tokio::net::TcpStream::connect(s.gw.addr).await.unwrap();
        let head = format!(
            "POST /v1/embeddings HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {flood}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\""
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        trickles.push(socket);
    }
    // Key B gets in and is answered (by the mock chain's model list: an unknown model).
    let (status, body) = embed(
        &s.gw,
        &other,
        json!({"model": "no-such-model", "input": "x"}),
    )
    .await;
    assert_eq!(
        status, 404,
        "key B was refused while key A trickled: {body}"
    );
    // And B's real request is served.
    let (status, body) = embed(&s.gw, &other, json!({"model": MOCK_MODEL, "input": "x"})).await;
    assert_eq!(status, 200, "{body}");
    drop(trickles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_is_still_charged_and_nothing_stays_reserved() {
    let s = setup(FeeParams::default(), Limits::default()).await;
    let key = s.gw.create_key("dev", Amount::pza(1)).unwrap();
    let hash = record(&s.gw, 0).key_hash;
    s.node.state.hold.store(true, Ordering::SeqCst);
    let request = {
        let url = format!("{}/v1/embeddings", s.gw.url());
        let key = key.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": MOCK_MODEL, "input": ["a", "b"]}))
                .send()
                .await
        })
    };
    // Both jobs are signed and on chain, then the client hangs up.
    let started = Instant::now();
    while s.node.state.submitted.load(Ordering::SeqCst) < 2 {
        assert!(started.elapsed() < PATIENCE, "the jobs were not submitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(s.gw.reserved(&hash) > Amount::ZERO);
    request.abort();
    let _ = request.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        s.gw.requests_in_flight(),
        1,
        "the settling jobs hold their slot"
    );
    // The chain settles the jobs after the client left.
    s.node.state.hold.store(false, Ordering::SeqCst);
    let started = Instant::now();
    while s.gw.reserved(&hash) > Amount::ZERO || s.gw.requests_in_flight() > 0 {
        assert!(
            started.elapsed() < PATIENCE,
            "the reservation or the slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fees = s.gw.job_fees();
    let spent = record(&s.gw, 0).spent;
    let price = PRICE_PER_UNIT * u128::from(MOCK_WORK_UNITS);
    assert!(
        spent.base_units() > 2 * (price + fees.fixed.base_units()),
        "the two jobs were charged: {spent:?}"
    );
    // The same request, with the client staying, is charged the same.
    let (status, body) = embed(
        &s.gw,
        &key,
        json!({"model": MOCK_MODEL, "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let receipts = body["piazza"].as_array().unwrap();
    let charged: u128 = receipts
        .iter()
        .map(|r| {
            r["price"].as_str().unwrap().parse::<u128>().unwrap()
                + r["fee"].as_str().unwrap().parse::<u128>().unwrap()
        })
        .sum();
    assert_eq!(record(&s.gw, 0).spent, Amount::new(2 * spent.base_units()));
    assert_eq!(spent, Amount::new(charged));
    assert_eq!(s.gw.reserved(&hash), Amount::ZERO);
}

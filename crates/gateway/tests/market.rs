//! The gateway's market rules on a real in-process devnet (a validator with 100 ms blocks and a
//! provider serving MiniLM): fees measured from the node and charged as the chain charged them,
//! the quota message, parameters refused by name, fairness between API keys, and settlement that
//! survives a client hanging up.

mod support;

use piazza_gateway::fees::JobFees;
use piazza_gateway::{start, GatewayConfig, GatewayHandle, Limits};
use piazza_ledger::compute;
use piazza_ledger::genesis::FeeParams;
use piazza_primitives::{Amount, Hash};
use piazza_provider::models::MINILM;
use serde_json::{json, Value};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};
use support::{devnet_on, ChainOptions, Devnet, DevnetOptions, DEV_KEY};
use tokio::io::AsyncWriteExt;

/// How long a test waits for something that should happen soon before failing.
const PATIENCE: Duration = Duration::from_secs(30);
/// How often a test looks again while it waits.
const POLL: Duration = Duration::from_millis(10);

fn options() -> DevnetOptions {
    DevnetOptions {
        block_interval: Duration::from_millis(100),
        generation: false,
        provider_concurrency: 2,
    }
}

async fn gateway(net: &Devnet, limits: Limits) -> GatewayHandle {
    let mut config = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &net.url,
        net.dir.path().join("gateway"),
        net.keystore_dir.clone(),
    );
    config.limits = limits;
    start(config).await.expect("the gateway starts")
}

/// One embeddings request: its status, the `x-should-retry` header and the JSON body.
async fn embed_with_headers(
    gw: &GatewayHandle,
    key: &str,
    body: Value,
) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", gw.url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

async fn embed(gw: &GatewayHandle, key: &str, body: Value) -> (u16, Value) {
    let (status, _, body) = embed_with_headers(gw, key, body).await;
    (status, body)
}

fn record(gw: &GatewayHandle, index: usize) -> piazza_gateway::keys::KeyRecord {
    let mut keys = gw.keys();
    keys.sort_by_key(|k| k.id.clone());
    keys.swap_remove(index)
}

fn base_units(value: &Value) -> u128 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("an amount in base units: {value}"))
        .parse()
        .unwrap_or_else(|e| panic!("an amount in base units: {value}: {e}"))
}

/// The price the chain settled the job at.
async fn settled_price(net: &Devnet, id: u64) -> u128 {
    let job = net
        .client
        .job(id)
        .await
        .unwrap()
        .expect("the job is on chain");
    let receipt = job.receipt.expect("the job is settled");
    receipt.price.parse().expect("a price in base units")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fees_come_from_the_chain_and_inputs_up_to_the_ledger_limit_pass() {
    let fees = FeeParams {
        unit_price: Amount::new(3_000),
        tx_base_units: 50,
        byte_units: 2,
    };
    let net = devnet_on(
        options(),
        ChainOptions {
            fees: fees.clone(),
            ..ChainOptions::default()
        },
    )
    .await;
    let gw = gateway(&net, Limits::default()).await;
    assert_eq!(
        gw.job_fees(),
        JobFees::from_params(&fees).unwrap(),
        "measured through the node's admission"
    );
    let key = gw.create_key(DEV_KEY, Amount::pza(10)).unwrap();
    let balance_before = net.balance(&net.dev).await;
    // 16 KiB, the ledger's largest input: a fee of about 0.1 PZA at these parameters.
    let input = "y".repeat(compute::JOB_INPUT_BYTES_MAX);
    let (status, body) = embed(&gw, &key, json!({"model": MINILM, "input": input})).await;
    assert_eq!(status, 200, "{body}");
    let shown = &body["piazza"][0];
    let id = shown["job"].as_u64().expect("a job id");
    let tx: Hash = shown["tx"].as_str().unwrap().parse().expect("a tx hash");
    // What the chain charged: the fee from the transaction's receipt, the price from the job's.
    let fee: u128 = net
        .client
        .receipt(&tx)
        .await
        .unwrap()
        .expect("the submission's receipt")
        .fee_paid
        .parse()
        .unwrap();
    let price = settled_price(&net, id).await;
    assert_eq!(
        (base_units(&shown["fee"]), base_units(&shown["price"])),
        (fee, price),
        "the response shows what the chain charged"
    );
    assert!(fee > 16 * 1024 * 2 * 3_000, "fee {fee}");
    let spent = gw.keys()[0].spent;
    assert_eq!(
        spent,
        Amount::new(fee + price),
        "charged the price and the fee"
    );
    assert_eq!(
        balance_before - net.balance(&net.dev).await,
        fee + price,
        "the paying account lost exactly what the key was charged"
    );
    assert_eq!(gw.reserved(&gw.keys()[0].key_hash), Amount::ZERO);
    let job = net.client.job(id).await.unwrap().unwrap();
    assert_eq!(
        body["usage"]["prompt_tokens"],
        job.result.expect("a posted result").work_units
    );
    gw.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_below_one_request_says_what_the_request_needs() {
    // No job runs: the provider is registered (its price sets the worst case) but not running.
    let net = devnet_on(
        options(),
        ChainOptions {
            provider_runs: false,
            ..ChainOptions::default()
        },
    )
    .await;
    let gw = gateway(&net, Limits::default()).await;
    let key = gw.create_key(DEV_KEY, Amount::new(1_000)).unwrap();
    let worst = gw.embedding_worst_case(MINILM, &["x"]).await.unwrap();
    let (status, retry, body) =
        embed_with_headers(&gw, &key, json!({"model": MINILM, "input": "x"})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(retry.as_deref(), Some("false"), "a client must not retry");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("worst-case cost is {worst} PZA"))
            && message.contains("more than the 0.000001 PZA left"),
        "{message}"
    );
    assert_eq!(record(&gw, 0).spent, Amount::ZERO);
    assert_eq!(gw.reserved(&record(&gw, 0).key_hash), Amount::ZERO);
    assert_eq!(
        net.nonce(&net.dev).await,
        0,
        "nothing was signed for the chain"
    );
    gw.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_parameters_are_refused_before_anything_is_paid() {
    let net = devnet_on(options(), ChainOptions::default()).await;
    let gw = gateway(&net, Limits::default()).await;
    let key = gw.create_key(DEV_KEY, Amount::pza(1)).unwrap();
    let (status, body) = embed(
        &gw,
        &key,
        json!({"model": MINILM, "input": "x", "stream": true}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &json!("stream")),
        "{body}"
    );
    let (status, body) = embed(&gw, &key, json!({"model": MINILM, "input": ["x", ""]})).await;
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &json!("input")),
        "{body}"
    );
    assert_eq!(record(&gw, 0).spent, Amount::ZERO);
    assert_eq!(net.nonce(&net.dev).await, 0, "nothing was paid");
    let (status, body) = embed(
        &gw,
        &key,
        json!({"model": MINILM, "input": "x", "user": "someone"}),
    )
    .await;
    assert_eq!(status, 200, "harmless `user`: {body}");
    assert_eq!(net.nonce(&net.dev).await, 1, "one job, the served one");
    gw.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_floods_the_gateway_does_not_starve_another() {
    let in_flight = 8;
    let net = devnet_on(options(), ChainOptions::default()).await;
    let gw = gateway(
        &net,
        Limits {
            requests_in_flight_max: NonZeroUsize::new(in_flight).unwrap(),
            requests_in_flight_per_key_max: NonZeroUsize::new(2).unwrap(),
            queue_wait: Duration::from_secs(2),
            ..Limits::default()
        },
    )
    .await;
    let flood = gw.create_key(DEV_KEY, Amount::pza(1)).unwrap();
    let other = gw.create_key(DEV_KEY, Amount::pza(1)).unwrap();
    // Key A: twice as many requests as the gateway has slots, each sending its body slowly (the
    // headers, then a few bytes of a 1000-byte body, then nothing).
    let mut trickles = Vec::new();
    for _ in 0..in_flight * 2 {
        let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "POST /v1/embeddings HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {flood}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\""
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        trickles.push(socket);
    }
    // Key B gets in and is answered (by the chain's model list: an unknown model).
    let (status, body) = embed(&gw, &other, json!({"model": "no-such-model", "input": "x"})).await;
    assert_eq!(
        status, 404,
        "key B was refused while key A trickled: {body}"
    );
    // And B's real request is served by the provider.
    let (status, body) = embed(&gw, &other, json!({"model": MINILM, "input": "x"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["data"][0]["embedding"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{body}"
    );
    drop(trickles);
    gw.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_is_still_charged_and_nothing_stays_reserved() {
    // The provider is registered but stopped, so the jobs wait on chain (far from their deadline)
    // until the client has gone.
    let mut net = devnet_on(
        options(),
        ChainOptions {
            provider_runs: false,
            compute: compute::Params {
                job_deadline_blocks: 1_000,
                ..compute::Params::default()
            },
            ..ChainOptions::default()
        },
    )
    .await;
    let gw = gateway(&net, Limits::default()).await;
    let key = gw.create_key(DEV_KEY, Amount::pza(1)).unwrap();
    let hash = record(&gw, 0).key_hash;
    let balance_before = net.balance(&net.dev).await;
    let request = {
        let url = format!("{}/v1/embeddings", gw.url());
        let key = key.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": MINILM, "input": ["a", "b"]}))
                .send()
                .await
        })
    };
    // Both jobs are signed, on chain and assigned to the provider; then the client hangs up.
    let started = Instant::now();
    let jobs = loop {
        let jobs = net.client.provider_jobs(&net.provider).await.unwrap();
        if jobs.len() >= 2 {
            break jobs;
        }
        assert!(started.elapsed() < PATIENCE, "the jobs were not submitted");
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(gw.reserved(&hash) > Amount::ZERO);
    request.abort();
    assert!(
        request.await.is_err(),
        "the client hung up before any answer"
    );
    for &id in &jobs {
        let job = net.client.job(id).await.unwrap().unwrap();
        assert!(job.receipt.is_none(), "job {id} settled before the hang-up");
    }
    assert_eq!(
        gw.requests_in_flight(),
        1,
        "the settling jobs hold their slot"
    );
    assert_eq!(record(&gw, 0).spent, Amount::ZERO, "nothing charged yet");

    // The provider runs the jobs and the chain settles them after the client left.
    net.start_provider();
    let started = Instant::now();
    while gw.reserved(&hash) > Amount::ZERO || gw.requests_in_flight() > 0 {
        assert!(
            started.elapsed() < PATIENCE,
            "the reservation or the slot was never released"
        );
        tokio::time::sleep(POLL).await;
    }
    let spent = record(&gw, 0).spent.base_units();
    let mut prices = 0;
    for &id in &jobs {
        prices += settled_price(&net, id).await;
    }
    let paid = balance_before - net.balance(&net.dev).await;
    assert_eq!(
        spent, paid,
        "the key was charged what the chain took from its account"
    );
    let fixed = gw.job_fees().fixed.base_units();
    assert!(
        spent > prices + 2 * fixed,
        "two fees were charged besides the prices: {spent} vs {prices} + 2 × {fixed}"
    );

    // The same request, with the client staying, is charged what its receipts show.
    let (status, body) = embed(&gw, &key, json!({"model": MINILM, "input": ["a", "b"]})).await;
    assert_eq!(status, 200, "{body}");
    let charged: u128 = body["piazza"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| base_units(&r["price"]) + base_units(&r["fee"]))
        .sum();
    assert_eq!(record(&gw, 0).spent.base_units(), spent + charged);
    assert_eq!(
        balance_before - net.balance(&net.dev).await,
        spent + charged
    );
    assert_eq!(gw.reserved(&hash), Amount::ZERO);
    gw.shutdown().await;
    net.shutdown().await;
}

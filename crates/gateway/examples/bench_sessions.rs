//! The gateway over sessions beside the engine called directly, in one run on an in-process
//! devnet (node, provider serving sessions on 127.0.0.1, gateway):
//!
//! - embeddings (MiniLM) at concurrency 1, 8 and 32: p50 and p99 latency and requests/s, through
//!   the gateway's OpenAI endpoint and straight on the engine (the provider's own execution,
//!   trace included);
//! - chat (SmolLM2): time to the first streamed token through the gateway against the engine's
//!   own time to its first token (the prompt's prefill and one step);
//! - chain load: the transactions the paying account and the provider sent for a run of
//!   requests, at two request counts spread over the same seconds (commits follow time, audits
//!   a fixed number per commit): side by side, the count does not grow with the requests.
//!
//! `cargo run -p piazza-gateway --example bench_sessions [-- --requests 1000]`

#[path = "../tests/support/mod.rs"]
mod support;

use piazza_api::JobParamsInfo;
use piazza_client::session::{terms, OpenSession, SessionClient};
use piazza_gateway::Limits;
use piazza_ledger::job::JobParams;
use piazza_primitives::Amount;
use piazza_provider::models::{self, LoadedModel};
use piazza_session::ClientChannel;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{gateway, session_devnet, DevnetOptions, DEV_KEY};

const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";
const SENTENCE: &str = "Piazza serves verifiable inference at engine speed over sessions.";
/// Requests per concurrency level.
const REQUESTS_PER_LEVEL: usize = 256;
const CONCURRENCY: [usize; 3] = [1, 8, 32];
const CHAT_PROMPT: &str = "Write one sentence about the sea.";
const CHAT_RUNS: usize = 5;
/// The chain-load runs' span: both request counts spread evenly over it (1,000 requests at 25
/// a second, well under the engine's rate), so they cross the same commit intervals (60
/// blocks of 100 ms).
const CHAIN_WINDOW: Duration = Duration::from_secs(40);
/// How long the chain-load measurement waits after a run for its commits and reveals.
const CHAIN_SETTLE: Duration = Duration::from_secs(35);

/// p50, p99 (ms) and requests/s of `latencies` measured over `wall`.
fn summary(mut latencies: Vec<Duration>, wall: Duration) -> (f64, f64, f64) {
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    (
        at(0.5),
        at(0.99),
        latencies.len() as f64 / wall.as_secs_f64(),
    )
}

/// Runs `requests` calls of `one`, `concurrency` at a time; the latency of each and the wall.
async fn load<F, Fut>(requests: usize, concurrency: usize, one: F) -> (Vec<Duration>, Duration)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let one = one.clone();
            let count = requests / concurrency + usize::from(w < requests % concurrency);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(count);
                for _ in 0..count {
                    let t = Instant::now();
                    one().await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(requests);
    for w in workers {
        all.extend(w.await.expect("a load worker"));
    }
    (all, started.elapsed())
}

/// Runs `requests` calls of `one` spread evenly over `window`, at most `concurrency` at a time
/// (a call that falls behind starts as soon as its worker is free).
async fn paced<F, Fut>(requests: usize, window: Duration, concurrency: usize, one: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let start = tokio::time::Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let one = one.clone();
            tokio::spawn(async move {
                for i in (w..requests).step_by(concurrency) {
                    let at = window.mul_f64(i as f64 / requests as f64);
                    tokio::time::sleep_until(start + at).await;
                    one().await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("a paced worker");
    }
}

fn loaded(models: &[piazza_api::ModelInfo], name: &str) -> LoadedModel {
    let info = models
        .iter()
        .find(|m| m.name == name)
        .expect("the model is on chain");
    models::load(&piazza_engine::models_dir(), info).expect("the model loads")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let chain_requests: usize = std::env::args()
        .skip_while(|a| a != "--requests")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let devnet = session_devnet(DevnetOptions {
        block_interval: Duration::from_millis(100),
        generation: true,
        provider_concurrency: 8,
    })
    .await;
    let gw = gateway(&devnet, Limits::default()).await;
    let key = gw.create_key(DEV_KEY, Amount::pza(100_000)).unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/v1", gw.url());
    let on_chain = devnet.client.models().await.expect("models");
    let minilm = loaded(&on_chain, EMBEDDING_MODEL);
    // The provider runs each request on one thread, and so does the engine here.
    let threads = 1;

    let embed = {
        let (http, url, key) = (http.clone(), url.clone(), key.clone());
        move || {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            async move {
                let response = http
                    .post(format!("{url}/embeddings"))
                    .bearer_auth(&key)
                    .json(&serde_json::json!({"model": EMBEDDING_MODEL, "input": SENTENCE}))
                    .send()
                    .await
                    .expect("the gateway answers");
                assert!(
                    response.headers().contains_key("x-piazza-receipt"),
                    "{:?}",
                    response.text().await
                );
                response.bytes().await.expect("the answer");
            }
        }
    };
    let direct = {
        let model = minilm.clone();
        move || {
            let model = model.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    models::execute(
                        &model,
                        SENTENCE.as_bytes(),
                        &JobParamsInfo::default(),
                        threads,
                    )
                    .expect("the engine runs")
                })
                .await
                .expect("an engine thread");
            }
        }
    };
    // The provider's endpoint through `client::session` alone (no gateway), on sessions of
    // a key of its own: what the provider adds, apart from what the gateway adds.
    let own = piazza_primitives::SecretKey::from_seed(support::VALIDATOR_SEED);
    let mut clients = Vec::new();
    for _ in 0..CONCURRENCY[1] {
        let id = devnet
            .client
            .open_session(
                &own,
                OpenSession {
                    model: EMBEDDING_MODEL.into(),
                    deposit: Amount::pza(100),
                    max_price_per_unit: Amount::new(support::PRICE_PER_UNIT),
                    expiry_blocks: 10_000,
                    authorised: None,
                },
            )
            .await
            .expect("a session opens");
        let info = devnet
            .client
            .wait_for_session(id, Duration::from_secs(30))
            .await
            .expect("the session is assigned");
        let terms = terms(&info).expect("its terms").expect("a provider");
        let channel = ClientChannel::new(terms, own.clone()).expect("a channel");
        let endpoint = info.endpoint.expect("the provider's endpoint");
        clients.push(tokio::sync::Mutex::new(SessionClient::new(
            &endpoint, channel,
        )));
    }
    let clients = Arc::new(clients);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let session = move || {
        let (clients, next) = (clients.clone(), next.clone());
        async move {
            // Round robin over the sessions; at 32 requests at a time, four wait per session.
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % clients.len();
            let mut client = clients[i].lock().await;
            client
                .request(
                    SENTENCE.as_bytes().to_vec(),
                    JobParams::default(),
                    256,
                    |_| {},
                )
                .await
                .expect("a session answer");
        }
    };
    // Warm up: the engine's caches fill. The direct sessions run first and are dropped
    // before the gateway opens its own: the provider takes at most 16 connections from one
    // address.
    load(16, 8, direct.clone()).await;
    load(16, 8, session.clone()).await;
    let mut rows = Vec::new();
    for c in CONCURRENCY {
        let (l, w) = load(REQUESTS_PER_LEVEL, c, direct.clone()).await;
        let engine = summary(l, w);
        let (l, w) = load(REQUESTS_PER_LEVEL, c, session.clone()).await;
        rows.push((c, engine, summary(l, w)));
    }
    drop(session);
    // The gateway's sessions open (one transaction each).
    load(64, 8, embed.clone()).await;

    println!("embeddings ({EMBEDDING_MODEL}, {REQUESTS_PER_LEVEL} requests per level, {threads} engine thread per request)");
    println!(
        "{:<5} {:>26}  {:>26}  {:>26}  {:>6}",
        "c",
        "engine p50/p99 ms, req/s",
        "session p50/p99 ms, req/s",
        "gateway p50/p99 ms, req/s",
        "ratio"
    );
    for (c, (e50, e99, erps), (s50, s99, srps)) in rows {
        let (l, w) = load(REQUESTS_PER_LEVEL, c, embed.clone()).await;
        let (g50, g99, grps) = summary(l, w);
        println!(
            "c={c:<3} {e50:>7.2} / {e99:>7.2}, {erps:>6.1}  {s50:>7.2} / {s99:>7.2}, {srps:>6.1}  {g50:>7.2} / {g99:>7.2}, {grps:>6.1}  {:>5.2}x  (p50 over the engine: provider {:+.2} ms, gateway {:+.2} ms more)",
            grps / erps,
            s50 - e50,
            g50 - s50
        );
    }

    if devnet.generation {
        let smollm2 = loaded(&on_chain, models::SMOLLM2);
        let chat = piazza_primitives::chat::ChatInput::user(CHAT_PROMPT)
            .expect("a chat input")
            .encode();
        let params = JobParamsInfo {
            max_tokens: 16,
            chat: true,
            ..JobParamsInfo::default()
        };
        let mut engine_first = Vec::new();
        for _ in 0..CHAT_RUNS {
            let (model, chat, params) = (smollm2.clone(), chat.clone(), params.clone());
            let first = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let mut first = None;
                models::execute_streaming(
                    &model,
                    &chat,
                    &params,
                    threads,
                    &std::sync::atomic::AtomicBool::new(false),
                    |_| {
                        first.get_or_insert(started.elapsed());
                    },
                )
                .expect("the engine generates");
                first.expect("a first token")
            })
            .await
            .expect("an engine thread");
            engine_first.push(first);
        }
        let mut gateway_first = Vec::new();
        for _ in 0..=CHAT_RUNS {
            let started = Instant::now();
            let mut response = http
                .post(format!("{url}/chat/completions"))
                .bearer_auth(&key)
                .json(&serde_json::json!({"model": models::SMOLLM2, "max_tokens": 16, "temperature": 0, "stream": true,
                                          "messages": [{"role": "user", "content": CHAT_PROMPT}]}))
                .send()
                .await
                .expect("the gateway answers");
            let mut first = None;
            while let Some(bytes) = response.chunk().await.expect("the stream") {
                if first.is_none() && String::from_utf8_lossy(&bytes).contains("\"content\":\"") {
                    let text = String::from_utf8_lossy(&bytes);
                    // The opening chunk carries an empty content; the first token does not.
                    if text
                        .split("\"content\":\"")
                        .skip(1)
                        .any(|t| !t.starts_with('"'))
                    {
                        first = Some(started.elapsed());
                    }
                }
            }
            gateway_first.push(first.expect("a first token"));
        }
        // The first request opened the chat session.
        gateway_first.remove(0);
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1000.0
        };
        let (engine, gateway) = (median(engine_first), median(gateway_first));
        println!(
            "chat ({}, median of {CHAT_RUNS}): engine's first token (prefill + one step) {engine:.1} ms, gateway's first streamed token {gateway:.1} ms ({:+.1} ms)",
            models::SMOLLM2,
            gateway - engine
        );
    }

    // Chain load: every transaction of the paying account and of the provider during a run
    // of each request count, spread over the same window.
    let mut loads = Vec::new();
    for requests in [chain_requests / 10, chain_requests] {
        let before = (
            devnet.nonce(&devnet.dev).await,
            devnet.nonce(&devnet.provider).await,
        );
        let sent_before = gw.session_transactions();
        paced(requests, CHAIN_WINDOW, 8, embed.clone()).await;
        // The provider commits what is paid within its commit interval, then reveals.
        tokio::time::sleep(CHAIN_SETTLE).await;
        let after = (
            devnet.nonce(&devnet.dev).await,
            devnet.nonce(&devnet.provider).await,
        );
        loads.push((
            requests,
            after.0 - before.0,
            gw.session_transactions() - sent_before,
            after.1 - before.1,
        ));
    }
    println!(
        "chain load (requests spread over {} s, then {} s for commits and reveals):",
        CHAIN_WINDOW.as_secs(),
        CHAIN_SETTLE.as_secs()
    );
    println!(
        "{:>9}  {:>12}  {:>16}  {:>26}  {:>24}",
        "requests",
        "transactions",
        "gateway account",
        "of which session opens/ups",
        "provider (commits, reveals)"
    );
    for (requests, gateway, sessions, provider) in &loads {
        println!(
            "{requests:>9}  {:>12}  {gateway:>16}  {sessions:>26}  {provider:>24}",
            gateway + provider
        );
    }
    gw.shutdown().await;
    devnet.shutdown().await;
}

//! `cargo run --release -p piazza-gateway --example bench_gateway [-- --requests N --block-interval-ms MS]`
//!
//! Embedding requests per second and p50/p99 latency at concurrency 1, 8 and 32, three ways on
//! one in-process devnet (default compute parameters: a 2-block challenge window):
//! the engine called directly (inference alone), the market through `piazza-client` (submit,
//! wait for settlement), and the OpenAI-compatible gateway over HTTP. The differences are what
//! the ledger and the gateway add. Then one batch of 8 inputs, submitted concurrently and
//! sequentially.

#[path = "../tests/support/mod.rs"]
mod support;

use piazza_gateway::{start, BatchSubmission, GatewayConfig, GatewayHandle, Limits};
use piazza_primitives::Amount;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{devnet, DevnetOptions, DEV_KEY};

const CONCURRENCY: [usize; 3] = [1, 8, 32];

fn text(i: usize) -> String {
    format!("Request {i}: an OpenAI client asks an open network for a verifiable embedding.")
}

struct Run {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarize(mut latencies_ms: Vec<f64>, elapsed: Duration) -> Run {
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        latencies_ms
            [((latencies_ms.len() as f64 * q).ceil() as usize).clamp(1, latencies_ms.len()) - 1]
    };
    Run {
        requests_per_s: latencies_ms.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// `requests` calls of `one(i)` from `concurrency` workers; each call's latency.
async fn drive<F, Fut>(requests: usize, concurrency: usize, one: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (one, next) = (one.clone(), next.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    return latencies;
                }
                let t = Instant::now();
                one(i).await;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done.expect("worker"));
    }
    summarize(all, started.elapsed())
}

async fn embed(http: &reqwest::Client, gw: &str, key: &str, input: serde_json::Value) {
    let response = http
        .post(format!("{gw}/v1/embeddings"))
        .bearer_auth(key)
        .json(&serde_json::json!({"model": "all-minilm-l6-v2", "input": input, "encoding_format": "base64"}))
        .send()
        .await
        .expect("gateway reachable");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{status}: {body}");
}

async fn gateway(
    devnet: &support::Devnet,
    batch: BatchSubmission,
    dir: &str,
) -> (GatewayHandle, String) {
    let mut config = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &devnet.url,
        devnet.dir.path().join(dir),
        devnet.keystore_dir.clone(),
    );
    config.limits = Limits {
        batch_submission: batch,
        // One key drives every concurrency level: give it the whole gateway.
        requests_in_flight_per_key_max: Limits::default().requests_in_flight_max,
        ..Limits::default()
    };
    let gw = start(config).await.expect("gateway");
    let key = gw.create_key(DEV_KEY, Amount::pza(1_000)).expect("api key");
    (gw, key)
}

fn print(name: &str, concurrency: usize, run: &Run) {
    println!(
        "  {name:<28} c={concurrency:<3} {:>8.1} req/s   p50 {:>8.1} ms   p99 {:>8.1} ms",
        run.requests_per_s, run.p50_ms, run.p99_ms
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut requests, mut block_interval_ms, mut provider_concurrency) = (64usize, 100u64, 2usize);
    while let Some(flag) = args.next() {
        let value: u64 = args
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number after each flag");
        match flag.as_str() {
            "--requests" => requests = value as usize,
            "--block-interval-ms" => block_interval_ms = value,
            "--provider-concurrency" => provider_concurrency = value as usize,
            other => panic!("unknown flag {other}"),
        }
    }
    let devnet = devnet(DevnetOptions {
        block_interval: Duration::from_millis(block_interval_ms),
        generation: false,
        provider_concurrency,
    })
    .await;
    let (gw, key) = gateway(&devnet, BatchSubmission::Concurrent, "gateway").await;
    let embedder = Arc::new(
        piazza_engine::Embedder::load(piazza_engine::models_dir().join("minilm")).expect("MiniLM"),
    );
    println!(
        "bench_gateway: MiniLM embeddings, {requests} requests per row, {block_interval_ms} ms blocks, challenge window 2 blocks, provider concurrency {provider_concurrency} x 1 thread, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for concurrency in CONCURRENCY {
        let engine = embedder.clone();
        let direct = drive(requests, concurrency, move |i| {
            let engine = engine.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    engine.embed(&[&text(i)], 1).expect("embedding")
                })
                .await
                .expect("engine task");
            }
        })
        .await;
        print("engine, direct", concurrency, &direct);

        if concurrency == 1 {
            // The market without the gateway: one client, one job at a time.
            let url = devnet.url.clone();
            let signer = piazza_keystore::Keystore::open(&devnet.keystore_dir)
                .unwrap()
                .unlock(DEV_KEY, "")
                .unwrap();
            let market = drive(requests.min(32), 1, move |i| {
                let (client, signer) = (piazza_client::Client::new(&url), signer.clone());
                async move {
                    let job = piazza_ledger::compute::Msg::SubmitJob {
                        model: "all-minilm-l6-v2".into(),
                        input: text(i).into_bytes(),
                        params: Default::default(),
                        max_units: 256,
                        max_price: Amount::new(1_000 * 256),
                    };
                    let (id, _) = client
                        .submit_job(&signer, job, Duration::from_secs(120))
                        .await
                        .expect("submitted");
                    let settled = client
                        .wait_for_job(id, Duration::from_secs(120))
                        .await
                        .expect("settled");
                    assert_eq!(settled.status, piazza_api::JobState::Settled);
                }
            })
            .await;
            print("market via piazza-client", concurrency, &market);
        }

        let (http, url, key) = (reqwest::Client::new(), gw.url(), key.clone());
        let through = drive(requests, concurrency, move |i| {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            async move { embed(&http, &url, &key, serde_json::json!(text(i))).await }
        })
        .await;
        print("gateway (HTTP, OpenAI API)", concurrency, &through);
    }

    // One request of 8 inputs: jobs submitted at once (consecutive nonces) or one by one.
    let (sequential_gw, sequential_key) =
        gateway(&devnet, BatchSubmission::Sequential, "gateway-sequential").await;
    let batch: Vec<String> = (0..8).map(text).collect();
    for (name, gw, key) in [
        ("batch of 8, concurrent jobs", &gw, &key),
        (
            "batch of 8, sequential jobs",
            &sequential_gw,
            &sequential_key,
        ),
    ] {
        let (http, url, key, batch) =
            (reqwest::Client::new(), gw.url(), key.clone(), batch.clone());
        let run = drive(4, 1, move |_| {
            let (http, url, key, batch) = (http.clone(), url.clone(), key.clone(), batch.clone());
            async move { embed(&http, &url, &key, serde_json::json!(batch)).await }
        })
        .await;
        print(name, 1, &run);
    }
    sequential_gw.shutdown().await;
    gw.shutdown().await;
    devnet.shutdown().await;
}

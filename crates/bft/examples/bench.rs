//! Blocks per second, transfers finalized per second and submission-to-finality latency of four
//! Malachite validators (transactions sent to all four, gossiped) and of one, beside the
//! devnet's solo producer, in the same run, with the same application, genesis and load.
//!
//! `cargo run -p piazza-bft --example bench -- [seconds] [tx_per_second]` (`--release` for
//! production numbers; the dev profile already optimises dependencies). Transfers are
//! submitted in batches every `SUBMIT_INTERVAL_MS`, each sender through one node.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use piazza_consensus::{SoloProducer, APP_CHANNEL_CAPACITY};
use piazza_mempool::MempoolConfig;
use piazza_node::App;
use piazza_primitives::Hash;
use piazza_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USERS: usize = 64;
/// How often the load generator submits a batch.
const SUBMIT_INTERVAL_MS: u64 = 10;

enum Producer {
    /// The devnet's producer at this block interval.
    Solo(Duration),
    /// Malachite validators on 127.0.0.1, each height paced to this target time (`None`: blocks
    /// as fast as consensus goes).
    Malachite(usize, Option<Duration>),
}

struct Report {
    blocks: u64,
    txs: usize,
    latencies_ms: Vec<f64>,
    seconds: f64,
}

async fn run(producer: &Producer, seconds: u64, tx_per_second: u64) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let validators = match producer {
        Producer::Malachite(n, _) => *n,
        Producer::Solo(_) => 1,
    };
    let keys: Vec<_> = (0..validators).map(validator_key).collect();
    let users: Vec<_> = (0..USERS).map(user_key).collect();
    let genesis = network_genesis(&keys, &users);
    type Stop = Box<dyn FnOnce() -> tokio::task::JoinHandle<()>>;
    let (apps, stop): (Vec<Arc<App>>, Stop) = match producer {
        Producer::Malachite(n, interval) => {
            let ports: Vec<u16> = (0..*n).map(|_| free_port()).collect();
            let mut nodes = Vec::new();
            for i in 0..*n {
                let options = Options {
                    block_interval: *interval,
                    ..Options::default()
                };
                let node = start_validator_with(dir.path(), &keys, i, &genesis, &ports, options);
                nodes.push(node.await);
            }
            let apps = nodes.iter().map(|v| v.app.clone()).collect();
            (
                apps,
                Box::new(move || {
                    tokio::spawn(async move {
                        for v in &mut nodes {
                            v.stop().await;
                        }
                    })
                }),
            )
        }
        Producer::Solo(interval) => {
            let store = Store::open(&dir.path().join("chain.redb")).unwrap();
            let app = Arc::new(
                App::open(
                    store,
                    Some(&genesis.genesis),
                    keys[0].clone(),
                    MempoolConfig::default(),
                )
                .unwrap(),
            );
            let (app_tx, app_rx) = tokio::sync::mpsc::channel(APP_CHANNEL_CAPACITY);
            tokio::spawn(app.clone().serve(app_rx));
            let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
            let solo = SoloProducer {
                app: app_tx,
                block_interval: *interval,
            };
            let task = tokio::spawn(async move {
                let _ = solo.run(shutdown_rx).await;
            });
            (
                vec![app],
                Box::new(move || {
                    let _ = shutdown.send(true);
                    task
                }),
            )
        }
    };
    let app = apps[0].clone();

    let submitted: Arc<Mutex<HashMap<Hash, Instant>>> = Arc::default();
    let mut blocks_rx = app.subscribe();
    let start_height = app.head().unwrap().height;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);

    let submitter = {
        let submitted = submitted.clone();
        tokio::spawn(async move {
            let per_batch = (tx_per_second * SUBMIT_INTERVAL_MS / 1_000).max(1);
            let mut ticker = tokio::time::interval(Duration::from_millis(SUBMIT_INTERVAL_MS));
            let mut i = 0u64;
            while Instant::now() < deadline {
                ticker.tick().await;
                // Each sender's transactions go through one node, the senders spread over all.
                let mut batches = vec![Vec::new(); apps.len()];
                for _ in 0..per_batch {
                    let user = (i % USERS as u64) as usize;
                    batches[user % apps.len()].push(transfer(&users[user], i / USERS as u64));
                    i += 1;
                }
                for (node, batch) in batches.into_iter().enumerate() {
                    if batch.is_empty() {
                        continue;
                    }
                    let app = apps[node].clone();
                    let at = Instant::now();
                    let results = tokio::task::spawn_blocking(move || app.submit_many(batch))
                        .await
                        .unwrap();
                    let mut submitted = submitted.lock().unwrap();
                    for hash in results.into_iter().flatten() {
                        submitted.insert(hash, at);
                    }
                }
            }
        })
    };

    let mut latencies_ms = Vec::new();
    let settle = deadline + Duration::from_secs(2);
    while Instant::now() < settle {
        let remaining = settle.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, blocks_rx.recv()).await {
            Ok(Ok(committed)) => {
                let now = Instant::now();
                let submitted = submitted.lock().unwrap();
                for tx in &committed.block.txs {
                    if let Some(at) = submitted.get(&tx.hash()) {
                        latencies_ms.push(now.duration_since(*at).as_secs_f64() * 1e3);
                    }
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                eprintln!("bench: missed {n} block notifications");
            }
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let _ = submitter.await;
    let seconds = started.elapsed().as_secs_f64();
    let blocks = app.head().unwrap().height - start_height;
    let txs = submitted.lock().unwrap().len();
    let _ = stop().await;
    Report {
        blocks,
        txs,
        latencies_ms,
        seconds,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn print(name: &str, mut r: Report) {
    r.latencies_ms.sort_by(f64::total_cmp);
    println!(
        "{name:<28} blocks {:>6}  blocks/s {:>8.1}  txs submitted {:>7}  finalized {:>7}  finalized/s {:>8.1}  latency ms p50 {:>7.1}  p99 {:>7.1}",
        r.blocks,
        r.blocks as f64 / r.seconds,
        r.txs,
        r.latencies_ms.len(),
        r.latencies_ms.len() as f64 / r.seconds,
        percentile(&r.latencies_ms, 0.5),
        percentile(&r.latencies_ms, 0.99),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let tx_per_second: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    println!("{seconds} s per producer, {tx_per_second} transfers/s offered, {USERS} senders");
    for (name, producer) in [
        (
            "solo, 1000 ms interval",
            Producer::Solo(Duration::from_millis(1000)),
        ),
        (
            "solo, 1 ms interval",
            Producer::Solo(Duration::from_millis(1)),
        ),
        ("malachite, 1 validator", Producer::Malachite(1, None)),
        ("malachite, 4 validators", Producer::Malachite(4, None)),
        (
            "malachite, 1, paced 1000 ms",
            Producer::Malachite(1, Some(Duration::from_millis(1000))),
        ),
        (
            "malachite, 4, paced 1000 ms",
            Producer::Malachite(4, Some(Duration::from_millis(1000))),
        ),
        (
            "malachite, 1, paced 100 ms",
            Producer::Malachite(1, Some(Duration::from_millis(100))),
        ),
        (
            "malachite, 4, paced 100 ms",
            Producer::Malachite(4, Some(Duration::from_millis(100))),
        ),
    ] {
        print(name, run(&producer, seconds, tx_per_second).await);
    }
}

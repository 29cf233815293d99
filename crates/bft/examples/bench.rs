//! Blocks per second and submission-to-finality latency of one Malachite validator beside the
//! devnet's solo producer, in the same run, with the same application, genesis and load.
//!
//! `cargo run -p piazza-bft --example bench -- [seconds] [tx_per_second]` (`--release` for
//! production numbers; the dev profile already optimises dependencies).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use piazza_codec::Encode;
use piazza_consensus::{SoloProducer, APP_CHANNEL_CAPACITY};
use piazza_mempool::MempoolConfig;
use piazza_node::App;
use piazza_primitives::Hash;
use piazza_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USERS: usize = 64;

enum Producer {
    /// The devnet's producer at this block interval.
    Solo(Duration),
    /// One Malachite validator (blocks as fast as consensus goes).
    Malachite,
}

struct Report {
    blocks: u64,
    txs: usize,
    latencies_ms: Vec<f64>,
    seconds: f64,
}

async fn run(producer: &Producer, seconds: u64, tx_per_second: u64) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let keys = vec![validator_key(0)];
    let users: Vec<_> = (0..USERS).map(user_key).collect();
    let genesis = genesis(&keys, &users);
    let (app, stop): (Arc<App>, Box<dyn FnOnce() -> tokio::task::JoinHandle<()>>) = match producer {
        Producer::Malachite => {
            let mut v = start_validator(dir.path(), &keys, 0, &genesis, &[free_port()]).await;
            let app = v.app.clone();
            (
                app,
                Box::new(move || tokio::spawn(async move { v.stop().await })),
            )
        }
        Producer::Solo(interval) => {
            let store = Store::open(&dir.path().join("chain.redb")).unwrap();
            let app = Arc::new(
                App::open(
                    store,
                    Some(&genesis),
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
                app,
                Box::new(move || {
                    let _ = shutdown.send(true);
                    task
                }),
            )
        }
    };

    let submitted: Arc<Mutex<HashMap<Hash, Instant>>> = Arc::default();
    let mut blocks_rx = app.subscribe();
    let start_height = app.head().unwrap().height;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);

    let submitter = {
        let app = app.clone();
        let submitted = submitted.clone();
        tokio::spawn(async move {
            let period = Duration::from_micros(1_000_000 / tx_per_second.max(1));
            let mut ticker = tokio::time::interval(period);
            let mut i = 0u64;
            while Instant::now() < deadline {
                ticker.tick().await;
                let user = &users[(i % USERS as u64) as usize];
                let tx = transfer(user, i / USERS as u64).to_bytes();
                let at = Instant::now();
                if let Ok(hash) = app.submit(&tx) {
                    submitted.lock().unwrap().insert(hash, at);
                }
                i += 1;
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
        "{name:<28} blocks {:>6}  blocks/s {:>8.1}  txs submitted {:>6}  finalized {:>6}  latency ms p50 {:>7.1}  p99 {:>7.1}",
        r.blocks,
        r.blocks as f64 / r.seconds,
        r.txs,
        r.latencies_ms.len(),
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
        ("malachite, 1 validator", Producer::Malachite),
    ] {
        print(name, run(&producer, seconds, tx_per_second).await);
    }
}

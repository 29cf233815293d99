//! Page load of the explorer on a devnet with many blocks and jobs: a node in process makes
//! `blocks` blocks (default 10,000) holding `jobs` submitted jobs (default 5,000) and a
//! transfer per sender, then each main page is fetched `SAMPLES` times over HTTP and its
//! p50, p95 and worst time printed (the target is p95 ≤ 200 ms per page).
//!
//! `cargo run --release -p piazza-explorer --example page_load -- [blocks] [jobs]`

#[path = "../tests/devnet/mod.rs"]
mod devnet;

use piazza_client::Client;
use piazza_ledger::compute::{self, JobParams};
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Amount, SecretKey};
use std::time::{Duration, Instant};

/// Block interval while the chain is built: short, so 10,000 blocks take minutes, not hours.
const BLOCK_INTERVAL_MS: u64 = 2;
/// Jobs each sender submits (under the mempool's nonce window of 64).
const JOBS_PER_SENDER: usize = 50;
/// Fetches per page, after `WARMUP` unmeasured ones.
const SAMPLES: usize = 200;
const WARMUP: usize = 5;
/// The first key seed of the senders (1–3 are the test devnet's users).
const FIRST_SENDER_SEED: u8 = 100;
/// The most senders: key seeds are bytes.
const SENDERS_MAX: usize = (u8::MAX - FIRST_SENDER_SEED) as usize;

fn argument(index: usize, default: u64) -> u64 {
    std::env::args()
        .nth(index)
        .map(|a| a.parse().expect("blocks and jobs are integers"))
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let blocks = argument(1, 10_000);
    let jobs = argument(2, 5_000) as usize;
    let senders = jobs.div_ceil(JOBS_PER_SENDER).clamp(1, SENDERS_MAX);
    let keys: Vec<SecretKey> = (0..senders)
        .map(|i| devnet::key(FIRST_SENDER_SEED + i as u8))
        .collect();
    let key_refs: Vec<&SecretKey> = keys.iter().collect();
    let (node, url, _dir) = devnet::node(BLOCK_INTERVAL_MS, &key_refs).await;
    let client = Client::new(&url);
    let started = Instant::now();

    let chain_id = client.status().await.unwrap().chain_id;
    let mut last = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let count = JOBS_PER_SENDER.min(jobs.saturating_sub(i * JOBS_PER_SENDER));
        let mut messages: Vec<Message> = (0..count)
            .map(|n| {
                Message::Compute(compute::Msg::SubmitJob {
                    model: devnet::MODEL.into(),
                    input: format!("job {n} of sender {i}").into_bytes(),
                    params: JobParams::default(),
                    max_units: 64,
                    max_price: Amount::pza(1),
                })
            })
            .collect();
        messages.push(Message::Bank(piazza_ledger::bank::Msg::Send {
            to: devnet::RECIPIENT,
            amount: Amount::new(devnet::TRANSFER_AMOUNT),
        }));
        for (nonce, message) in messages.into_iter().enumerate() {
            let tx = Transaction {
                chain_id: chain_id.clone(),
                sender: key.public_key(),
                nonce: nonce as u64,
                max_fee: Amount::pza(1),
                messages: vec![message],
            }
            .sign(key);
            let hash = loop {
                match client.submit(&tx).await {
                    Ok(hash) => break hash,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            if nonce == count {
                last.push(hash);
            }
        }
    }
    for hash in &last {
        let receipt = client
            .wait_for_receipt(hash, Duration::from_secs(600))
            .await
            .unwrap();
        assert!(receipt.error.is_none(), "{:?}", receipt.error);
    }
    println!(
        "{jobs} jobs and {senders} transfers included in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut height = 0;
    while height < blocks {
        tokio::time::sleep(Duration::from_millis(500)).await;
        height = client.status().await.unwrap().height;
    }
    println!(
        "height {height} after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let transfer = client.receipt(&last[0]).await.unwrap().unwrap();
    let middle_job = (jobs / 2) as u64;
    let account = keys[0].public_key().address();
    let pages = [
        ("status", "/explorer".to_string()),
        ("block", format!("/explorer/block/{}", transfer.height)),
        ("tx", format!("/explorer/tx/{}", transfer.tx_hash)),
        ("account", format!("/explorer/account/{account}")),
        ("models", "/explorer/models".to_string()),
        ("model", format!("/explorer/model/{}", devnet::MODEL)),
        ("job", format!("/explorer/job/{middle_job}")),
        ("dispute", format!("/explorer/dispute/{middle_job}")),
        ("search", format!("/explorer/search?q={}", transfer.tx_hash)),
        ("storage", "/explorer/storage".to_string()),
    ];
    let http = reqwest::Client::new();
    println!("page      p50 ms  p95 ms  max ms  ({SAMPLES} loads each, height {height})");
    for (name, path) in pages {
        let mut times = Vec::with_capacity(SAMPLES);
        for i in 0..WARMUP + SAMPLES {
            let begun = Instant::now();
            let response = http.get(format!("{url}{path}")).send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(status.is_success(), "{path}: {status}: {body}");
            if i >= WARMUP {
                times.push(begun.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "{name:<9} {:>6.2}  {:>6.2}  {:>6.2}",
            at(0.5),
            at(0.95),
            at(1.0)
        );
    }
    node.shutdown().await;
}

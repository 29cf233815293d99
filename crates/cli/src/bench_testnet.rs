//! `piazza testnet bench`: the same load on three local networks of `piazza node` processes,
//! one after the other in one run: the devnet's single producer (solo, at the devnet's block
//! interval), one Malachite validator, four Malachite validators. For each it prints finalized
//! blocks per second with no load, transfers per second finalized under a flood of signed
//! transfers, and submission → finality latency (p50/p99) under a light paced load.
//!
//! Finality is observed on the first node: the time its JSON-RPC first reports the block holding
//! a transfer (polled every [`POLL_MS`]). Transfers are spread over the nodes (each to one; the
//! nodes gossip them); the flood goes in JSON-RPC batches of [`FLOOD_BATCH_TXS`], which a node
//! admits together, the latency phase one transfer a request. `--networks` picks the networks,
//! `--block-interval-ms` the validators' block interval. A network that fails keeps its logs.

use crate::testnet::{self, InitOptions, GENESIS_FILE, KEYS_DIR};
use anyhow::{Context, Result};
use clap::Args;
use piazza_client::Client;
use piazza_ledger::bank;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the observer polls the first node for new blocks.
pub const POLL_MS: u64 = 5;
/// The devnet's block interval (the solo producer's default).
pub const DEVNET_BLOCK_INTERVAL_MS: u64 = 1_000;
/// Transfers one sender signs at most (the mempool's nonce window).
const PER_SENDER_MAX: usize = 64;
/// Submission requests in flight at once (spread over the nodes).
const SUBMITTERS: usize = 16;
/// Transfers in one submission request of the flood (a JSON-RPC batch, which a node admits
/// together: one durable journal write); at most the node's `RPC_BATCH_MAX`.
const FLOOD_BATCH_TXS: usize = piazza_client::BATCH_CALLS_MAX;
/// How long a network may take to start or to finalize a load.
const WAIT: Duration = Duration::from_secs(180);

#[derive(Args)]
pub struct BenchArgs {
    /// Transfers in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub transfers: usize,
    /// Transfers in the latency phase (paced, one every --pace-ms).
    #[arg(long, default_value_t = 100)]
    pub latency_transfers: usize,
    /// Time between two transfers of the latency phase.
    #[arg(long, default_value_t = 50)]
    pub pace_ms: u64,
    /// Seconds of no load over which idle blocks per second are counted.
    #[arg(long, default_value_t = 5)]
    pub idle_s: u64,
    /// The networks to run, in order: `solo` (the devnet's producer) or a validator count.
    #[arg(long, value_delimiter = ',', default_value = "solo,1,4")]
    pub networks: Vec<String>,
    /// Block interval of the Malachite validators (`block_interval_ms`: each height's target
    /// time); the solo producer keeps the devnet's.
    #[arg(long, default_value_t = 1_000)]
    pub block_interval_ms: u64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// One network the benchmark runs.
#[derive(Clone, Copy)]
enum Setup {
    Solo,
    Malachite(usize),
}

impl Setup {
    fn name(self) -> String {
        match self {
            Setup::Solo => format!("devnet (solo producer, {DEVNET_BLOCK_INTERVAL_MS} ms)"),
            Setup::Malachite(1) => "Malachite, 1 validator".into(),
            Setup::Malachite(n) => format!("Malachite, {n} validators"),
        }
    }
    fn parse(text: &str) -> Result<Setup> {
        match text {
            "solo" => Ok(Setup::Solo),
            n => match n.parse::<usize>() {
                Ok(n) if (1..=testnet::VALIDATORS_MAX).contains(&n) => Ok(Setup::Malachite(n)),
                _ => anyhow::bail!(
                    "--networks takes `solo` or a validator count (1 to {}), not `{n}`",
                    testnet::VALIDATORS_MAX
                ),
            },
        }
    }

    fn validators(self) -> usize {
        match self {
            Setup::Solo => 1,
            Setup::Malachite(n) => n,
        }
    }
}

/// What one network measured.
struct Measured {
    setup: String,
    idle_blocks_per_second: f64,
    transfers_per_second: f64,
    load_blocks_per_second: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    anyhow::ensure!(args.transfers > 0, "--transfers must be positive");
    let senders = (args.transfers + args.latency_transfers).div_ceil(PER_SENDER_MAX);
    let keys: Vec<SecretKey> = (0..senders)
        .map(|i| {
            let mut seed = [0x42u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            SecretKey::from_seed(seed)
        })
        .collect();
    let setups = args
        .networks
        .iter()
        .map(|n| Setup::parse(n))
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(
        args.block_interval_ms > 0,
        "--block-interval-ms must be positive"
    );
    let mut results = Vec::new();
    for setup in setups {
        if !args.json {
            outln!("piazza testnet bench: {} ...", setup.name());
        }
        results.push(measure(setup, &keys, &args).await?);
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|m| {
                serde_json::json!({
                    "setup": m.setup,
                    "idle_blocks_per_second": m.idle_blocks_per_second,
                    "transfers_per_second_finalized": m.transfers_per_second,
                    "blocks_per_second_under_load": m.load_blocks_per_second,
                    "submission_to_finality_p50_ms": m.latency_p50_ms,
                    "submission_to_finality_p99_ms": m.latency_p99_ms,
                })
            })
            .collect();
        let report = serde_json::json!({
            "benchmark": "testnet",
            "cores": cores,
            "transfers": args.transfers,
            "latency_transfers": args.latency_transfers,
            "pace_ms": args.pace_ms,
            "block_interval_ms": args.block_interval_ms,
            "flood_batch_txs": FLOOD_BATCH_TXS,
            "results": rows,
        });
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    outln!(
        "piazza testnet bench: {} transfers (throughput, {FLOOD_BATCH_TXS} a request), {} paced every {} ms (latency), validators at {} ms blocks, {cores} cores, each network its own processes",
        args.transfers,
        args.latency_transfers,
        args.pace_ms,
        args.block_interval_ms
    );
    outln!(
        "  {:<34} {:>12} {:>14} {:>12} {:>10} {:>10}",
        "network",
        "idle blk/s",
        "transfers/s",
        "load blk/s",
        "p50 ms",
        "p99 ms"
    );
    for m in &results {
        outln!(
            "  {:<34} {:>12.1} {:>14.0} {:>12.1} {:>10.0} {:>10.0}",
            m.setup,
            m.idle_blocks_per_second,
            m.transfers_per_second,
            m.load_blocks_per_second,
            m.latency_p50_ms,
            m.latency_p99_ms
        );
    }
    Ok(())
}

/// A node process of the benchmark, killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_node(args: &[String], log: &Path) -> Result<Process> {
    let out = std::fs::File::create(log)?;
    let child = Command::new(std::env::current_exe()?)
        .args(args)
        .env_remove("PIAZZA_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    Ok(Process(child))
}

/// A free port run: `count` consecutive ports on 127.0.0.1 bindable now.
fn free_ports(count: u16) -> Result<u16> {
    for _ in 0..50 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if base.checked_add(count).is_none() {
            continue;
        }
        let held: Vec<_> = (base..base + count)
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return Ok(base);
        }
    }
    anyhow::bail!("no run of {count} free ports on 127.0.0.1")
}

/// Runs one network in a directory of its own, removed afterwards unless the run failed (its
/// logs stay for a look).
async fn measure(setup: Setup, keys: &[SecretKey], args: &BenchArgs) -> Result<Measured> {
    let dir = tempfile::tempdir()?;
    match measure_in(&dir, setup, keys, args).await {
        Ok(measured) => Ok(measured),
        Err(error) => {
            let kept = dir.keep();
            Err(error.context(format!("{}: logs kept in {}", setup.name(), kept.display())))
        }
    }
}

async fn measure_in(
    dir: &tempfile::TempDir,
    setup: Setup,
    keys: &[SecretKey],
    args: &BenchArgs,
) -> Result<Measured> {
    let validators = setup.validators();
    let base_port = free_ports(2 * validators as u16)?;
    let testnet = testnet::init(
        dir.path(),
        &InitOptions {
            validators,
            base_port,
            models: Vec::new(),
            funded: keys.iter().map(|k| k.public_key().address()).collect(),
        },
    )?;
    let mut processes = Vec::new();
    for (i, v) in testnet.validators.iter().enumerate() {
        let log = dir.path().join(format!("node-{i}.log"));
        let node_args: Vec<String> = match setup {
            Setup::Malachite(_) => vec![
                "node".into(),
                "--config".into(),
                path(&v.config),
                "--block-interval-ms".into(),
                args.block_interval_ms.to_string(),
            ],
            Setup::Solo => {
                let home = v.config.parent().context("a config has a directory")?;
                vec![
                    "node".into(),
                    "--data-dir".into(),
                    path(&home.join("data")),
                    "--rpc-addr".into(),
                    v.rpc_url.trim_start_matches("http://").into(),
                    "--genesis".into(),
                    path(&dir.path().join(GENESIS_FILE)),
                    "--keystore".into(),
                    path(&dir.path().join(KEYS_DIR)),
                    "--validator-key".into(),
                    v.name.clone(),
                    "--block-interval-ms".into(),
                    DEVNET_BLOCK_INTERVAL_MS.to_string(),
                ]
            }
        };
        processes.push(spawn_node(&node_args, &log)?);
    }
    let clients: Vec<Client> = testnet
        .validators
        .iter()
        .map(|v| Client::new(&v.rpc_url))
        .collect();
    let started = Instant::now();
    loop {
        let mut ready = 0;
        for client in &clients {
            if matches!(client.status().await, Ok(s) if s.height >= 1) {
                ready += 1;
            }
        }
        if ready == clients.len() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "{} did not start; logs in {}",
            setup.name(),
            dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chain_id = clients[0].status().await?.chain_id;

    // Idle: blocks finalized with nothing to do.
    let idle_from = clients[0].status().await?.height;
    let idle = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_s)).await;
    let idle_blocks = clients[0].status().await?.height - idle_from;
    let idle_blocks_per_second = idle_blocks as f64 / idle.elapsed().as_secs_f64();

    // Sign everything up front (the clients' work, not measured).
    let per_sender = PER_SENDER_MAX;
    let mut transfers: Vec<SignedTransaction> =
        Vec::with_capacity(args.transfers + args.latency_transfers);
    for nonce in 0..per_sender as u64 {
        for key in keys {
            transfers.push(
                Transaction {
                    chain_id: chain_id.clone(),
                    sender: key.public_key(),
                    nonce,
                    max_fee: Amount::pza(1),
                    messages: vec![Message::Bank(bank::Msg::Send {
                        to: Address([3; 20]),
                        amount: Amount::new(1),
                    })],
                }
                .sign(key),
            );
        }
    }
    // The latency phase takes the first nonces of some senders; the flood the rest, in nonce
    // order, so no transfer waits on a gap.
    transfers.truncate(args.transfers + args.latency_transfers);
    let flood = transfers.split_off(args.latency_transfers);
    let paced = transfers;

    let observer = Observer::start(clients[0].clone());

    // Latency: paced transfers, each timed from its submission to its block on the first node.
    let mut submitted_at = HashMap::new();
    for tx in &paced {
        let sent = Instant::now();
        let hash = submit(&clients, tx).await?;
        submitted_at.insert(hash, sent);
        tokio::time::sleep(Duration::from_millis(args.pace_ms)).await;
    }
    let finalized = observer
        .wait_for(submitted_at.keys().copied().collect())
        .await?;
    let mut latencies: Vec<f64> = submitted_at
        .iter()
        .map(|(hash, sent)| {
            finalized[hash]
                .saturating_duration_since(*sent)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    latencies.sort_by(f64::total_cmp);

    // Throughput: the flood in batches of FLOOD_BATCH_TXS, SUBMITTERS requests in flight,
    // until the last is finalized.
    let height_before = clients[0].status().await?.height;
    let flood_started = Instant::now();
    let hashes: Vec<Hash> = flood.iter().map(|tx| tx.hash()).collect();
    let transfers = flood.len();
    let batches = Arc::new(std::sync::Mutex::new(flood_batches(flood, clients.len())));
    let mut tasks = Vec::new();
    for _ in 0..SUBMITTERS {
        let batches = batches.clone();
        let clients = clients.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let next = batches.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((node, batch)) = next else {
                    return anyhow::Ok(());
                };
                for admitted in clients[node].submit_batch(&batch).await? {
                    admitted.context("submitting a transfer")?;
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    observer.wait_for(hashes).await?;
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let load_blocks = clients[0].status().await?.height - height_before;
    observer.stop();
    drop(processes);
    Ok(Measured {
        setup: setup.name(),
        idle_blocks_per_second,
        transfers_per_second: transfers as f64 / flood_secs,
        load_blocks_per_second: load_blocks as f64 / flood_secs,
        latency_p50_ms: percentile(&latencies, 50),
        latency_p99_ms: percentile(&latencies, 99),
    })
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The `pct`-th percentile of sorted samples (nearest rank).
fn percentile(sorted: &[f64], pct: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (sorted.len() * pct).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The node a sender's transfers go to, the same for all of them (so a node sees a sender's
/// nonces in order); gossip carries them to the others.
fn node_of(tx: &SignedTransaction, nodes: usize) -> usize {
    usize::from(tx.sender().0[0]) % nodes
}

/// Sends `tx` to its sender's node.
async fn submit(clients: &[Client], tx: &SignedTransaction) -> Result<Hash> {
    let client = &clients[node_of(tx, clients.len())];
    client.submit(tx).await.context("submitting a transfer")
}

/// The flood as (node, batch of at most [`FLOOD_BATCH_TXS`]) in the order to pop them: each
/// node's transfers in their order, the nodes' batches interleaved, the first batch last.
fn flood_batches(
    flood: Vec<SignedTransaction>,
    nodes: usize,
) -> Vec<(usize, Vec<SignedTransaction>)> {
    let mut per_node: Vec<Vec<SignedTransaction>> = vec![Vec::new(); nodes];
    for tx in flood {
        per_node[node_of(&tx, nodes)].push(tx);
    }
    let mut chunks: Vec<std::vec::IntoIter<Vec<SignedTransaction>>> = per_node
        .into_iter()
        .map(|txs| {
            txs.chunks(FLOOD_BATCH_TXS)
                .map(<[SignedTransaction]>::to_vec)
                .collect::<Vec<_>>()
                .into_iter()
        })
        .collect();
    let mut batches = Vec::new();
    loop {
        let before = batches.len();
        for (node, chunks) in chunks.iter_mut().enumerate() {
            batches.extend(chunks.next().map(|batch| (node, batch)));
        }
        if batches.len() == before {
            break;
        }
    }
    batches.reverse();
    batches
}

/// The index of the first of `hashes` from `cursor` on that `seen` does not hold. A hash once
/// seen stays seen, so a poll resumes where the last stopped: waiting on n transfers costs about
/// n lookups in all, not n a poll (every 5 ms, the benchmark's client would otherwise take CPU
/// from the nodes it measures).
fn first_unseen(hashes: &[Hash], mut cursor: usize, mut seen: impl FnMut(&Hash) -> bool) -> usize {
    while cursor < hashes.len() && seen(&hashes[cursor]) {
        cursor += 1;
    }
    cursor
}

/// Polls the first node for new blocks and records when each transaction's block appeared.
struct Observer {
    seen: Arc<std::sync::Mutex<HashMap<Hash, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    fn start(client: Client) -> Observer {
        let seen = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut next = match client.status().await {
                Ok(s) => s.height + 1,
                Err(_) => 1,
            };
            loop {
                let head = client.status().await.map(|s| s.height).unwrap_or(0);
                let now = Instant::now();
                while next <= head {
                    if let Ok(Some(block)) = client.block(next).await {
                        let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
                        for hash in block.tx_hashes.iter().filter_map(|h| h.parse().ok()) {
                            seen.insert(hash, now);
                        }
                    }
                    next += 1;
                }
                tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            }
        });
        Observer { seen, task }
    }

    /// Waits until every hash was seen in a block; when each was.
    async fn wait_for(&self, hashes: Vec<Hash>) -> Result<HashMap<Hash, Instant>> {
        let started = Instant::now();
        let mut cursor = 0;
        loop {
            {
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                cursor = first_unseen(&hashes, cursor, |h| seen.contains_key(h));
                if cursor == hashes.len() {
                    return Ok(hashes.iter().map(|h| (*h, seen[h])).collect());
                }
            }
            anyhow::ensure!(
                started.elapsed() < WAIT,
                "transfers not finalized within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    fn stop(self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_batches_keep_each_nodes_transfers_in_order() {
        let keys: Vec<SecretKey> = (0..7u8).map(|i| SecretKey::from_seed([i; 32])).collect();
        let flood: Vec<SignedTransaction> = (0..40u64)
            .flat_map(|nonce| {
                keys.iter().map(move |key| {
                    Transaction {
                        chain_id: "bench".into(),
                        sender: key.public_key(),
                        nonce,
                        max_fee: Amount::pza(1),
                        messages: Vec::new(),
                    }
                    .sign(key)
                })
            })
            .collect();
        let mut batches = flood_batches(flood.clone(), 3);
        let mut sent: Vec<Vec<Hash>> = vec![Vec::new(); 3];
        while let Some((node, batch)) = batches.pop() {
            assert!(!batch.is_empty() && batch.len() <= FLOOD_BATCH_TXS);
            for tx in batch {
                assert_eq!(node_of(&tx, 3), node);
                sent[node].push(tx.hash());
            }
        }
        for (node, hashes) in sent.iter().enumerate() {
            let expected: Vec<Hash> = flood
                .iter()
                .filter(|tx| node_of(tx, 3) == node)
                .map(|tx| tx.hash())
                .collect();
            assert_eq!(hashes, &expected);
        }
        assert_eq!(sent.iter().map(Vec::len).sum::<usize>(), flood.len());
    }

    #[test]
    fn waiting_resumes_where_the_last_poll_stopped() {
        let hashes: Vec<Hash> = (0..1_000u32)
            .map(|i| Hash::of("test", &[&i.to_le_bytes()]))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let (mut cursor, mut lookups, mut polls) = (0, 0, 0);
        // Blocks finalize the transfers out of order: each poll sees 100 more, odd ones first.
        let order: Vec<usize> = (1..1_000).step_by(2).chain((0..1_000).step_by(2)).collect();
        for arrived in order.chunks(100) {
            seen.extend(arrived.iter().map(|&i| hashes[i]));
            polls += 1;
            cursor = first_unseen(&hashes, cursor, |h| {
                lookups += 1;
                seen.contains(h)
            });
            let expected = (0..hashes.len())
                .find(|&i| !seen.contains(&hashes[i]))
                .unwrap_or(hashes.len());
            assert_eq!(cursor, expected);
        }
        assert_eq!(cursor, hashes.len());
        assert!(lookups <= hashes.len() + polls, "{lookups} lookups");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50), 50.0);
        assert_eq!(percentile(&samples, 99), 99.0);
        assert_eq!(percentile(&[7.0], 99), 7.0);
        assert!(percentile(&[], 50).is_nan());
    }
}

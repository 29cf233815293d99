//! `piazza bench`: benchmarks that print comparable numbers.

use anyhow::Result;
use clap::Subcommand;
use piazza_codec::Encode;
use piazza_ledger::bank;
use piazza_ledger::genesis::GenesisAccount;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_mempool::MempoolConfig;
use piazza_node::App;
use piazza_primitives::{Address, Amount, SecretKey};
use piazza_store::Store;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Signed transfers per second through admission (decode, signature, state checks) →
    /// mempool → block building → execution → state tree → durable commit on disk.
    Transfers {
        /// Transfers to push through.
        #[arg(long, default_value_t = 40_000)]
        txs: usize,
        /// Distinct senders (each sends txs/senders transfers, at most 64).
        #[arg(long, default_value_t = 2_000)]
        senders: usize,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Embedding jobs through the compute market on an in-process devnet: jobs per second next
    /// to the engine alone, and the latency the ledger adds (submit → settled, minus inference).
    Jobs {
        /// Jobs in the throughput phase.
        #[arg(long, default_value_t = 60)]
        jobs: usize,
        /// The devnet's block interval.
        #[arg(long, default_value_t = 200)]
        block_interval_ms: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One long SmolLM2 generation through the compute market on an in-process devnet: the
    /// job takes far more blocks than the base deadline, settles, and the provider is not
    /// slashed (deadlines follow the work at the provider's declared speed).
    LongGeneration {
        /// Tokens to generate (a counting prompt keeps the model going).
        #[arg(long, default_value_t = 2048)]
        tokens: u32,
        /// The devnet's block interval.
        #[arg(long, default_value_t = 1000)]
        block_interval_ms: u64,
        /// Prompt length in bytes at least (a longer count): a long context.
        #[arg(long, default_value_t = 0)]
        prompt_bytes: usize,
        /// Jobs the provider holds at once (its declared speed is shared among them).
        #[arg(long, default_value_t = 16)]
        capacity: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: BenchCommand) -> Result<()> {
    // The market benchmarks run their own runtime: this is called from outside one.
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match command {
        BenchCommand::Transfers { txs, senders, json } => transfers(txs, senders, json),
        BenchCommand::Jobs {
            jobs,
            block_interval_ms,
            json,
        } => runtime()?.block_on(crate::bench_jobs::run(jobs, block_interval_ms, json)),
        BenchCommand::LongGeneration {
            tokens,
            block_interval_ms,
            prompt_bytes,
            capacity,
            json,
        } => runtime()?.block_on(crate::bench_long::run(crate::bench_long::LongGeneration {
            tokens,
            block_interval_ms,
            prompt_bytes,
            capacity,
            json,
        })),
    }
}

fn transfers(txs: usize, senders: usize, json: bool) -> Result<()> {
    anyhow::ensure!(
        senders > 0 && txs >= senders,
        "need at least one transfer per sender"
    );
    let per_sender = txs.div_ceil(senders);
    anyhow::ensure!(
        per_sender <= 64,
        "at most 64 transfers per sender (the mempool's nonce window); raise --senders"
    );
    let dir = tempfile::tempdir()?;
    let validator = SecretKey::from_seed([200; 32]);
    let keys: Vec<SecretKey> = (0..senders)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            SecretKey::from_seed(seed)
        })
        .collect();
    let mut accounts: Vec<GenesisAccount> = keys
        .iter()
        .map(|k| GenesisAccount {
            address: k.public_key().address(),
            balance: Amount::pza(1_000_000),
        })
        .collect();
    accounts.push(GenesisAccount {
        address: validator.public_key().address(),
        balance: Amount::pza(100_000),
    });
    let genesis = crate::bench_devnet::genesis(
        "piazza-bench",
        0,
        accounts,
        validator.public_key().address(),
        vec![],
        Default::default(),
    );
    let store = Store::open(&dir.path().join("chain.redb"))?;
    let app = App::open(
        store,
        Some(&genesis),
        validator,
        MempoolConfig {
            capacity: txs + 1,
            nonce_window: 64,
        },
    )?;

    // The clients' work, not timed: build, sign and encode.
    let signing = Instant::now();
    let encoded: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let chunk = keys.len().div_ceil(threads);
        let handles: Vec<_> = keys
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for round in 0..per_sender {
                        for (i, key) in part.iter().enumerate() {
                            let to = Address([((c * chunk + i + round) % 251) as u8; 20]);
                            let message = Message::Bank(bank::Msg::Send {
                                to,
                                amount: Amount::new(1_000 + round as u128),
                            });
                            let tx = Transaction {
                                chain_id: "piazza-bench".into(),
                                sender: key.public_key(),
                                nonce: round as u64,
                                max_fee: Amount::pza(1),
                                messages: vec![message],
                            };
                            out.push((round, tx.sign(key).to_bytes()));
                        }
                    }
                    out
                })
            })
            .collect();
        let mut all: Vec<(usize, Vec<u8>)> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing threads do not panic"))
            .collect();
        all.sort_by_key(|(round, _)| *round);
        all.into_iter().map(|(_, bytes)| bytes).take(txs).collect()
    });
    let signing = signing.elapsed();

    let started = Instant::now();
    let decoded: Vec<SignedTransaction> = encoded
        .iter()
        .map(|b| SignedTransaction::decode_bytes(b))
        .collect::<Result<_, _>>()?;
    let admitted = app.submit_many(decoded);
    let refused = admitted.iter().filter(|r| r.is_err()).count();
    anyhow::ensure!(
        refused == 0,
        "{refused} transfers refused at admission: {:?}",
        admitted.iter().find(|r| r.is_err())
    );
    let admission = started.elapsed();

    let mut blocks = 0u64;
    let mut committed = 0usize;
    let mut build_secs = 0f64;
    let mut commit_secs = 0f64;
    while app.mempool_size() > 0 {
        let height = app.head()?.height + 1;
        let t = Instant::now();
        let block = app
            .propose(height, height * 1000)
            .map_err(|e| anyhow::anyhow!(e.0))?;
        build_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        committed += app.commit(block).map_err(|e| anyhow::anyhow!(e.0))?.txs;
        commit_secs += t.elapsed().as_secs_f64();
        blocks += 1;
        anyhow::ensure!(blocks < 10_000, "the mempool does not drain");
    }
    let total = started.elapsed();
    anyhow::ensure!(committed == txs, "committed {committed} of {txs}");
    anyhow::ensure!(
        app.store().tx_count()? as usize == txs,
        "the store holds a different count"
    );
    let tps = txs as f64 / total.as_secs_f64();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let result = serde_json::json!({
        "benchmark": "transfers",
        "transfers": txs,
        "senders": senders,
        "blocks": blocks,
        "cores": cores,
        "seconds": total.as_secs_f64(),
        "transfers_per_second": tps,
        "admission_seconds": admission.as_secs_f64(),
        "build_seconds": build_secs,
        "commit_seconds": commit_secs,
        "client_signing_seconds_untimed": signing.as_secs_f64(),
    });
    if json {
        outln!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        outln!("piazza bench transfers: {txs} signed transfers from {senders} senders, {blocks} blocks, {cores} cores");
        outln!(
            "  admission (decode + signature + state checks + mempool): {:>8.3} s  {:>10.0} tx/s",
            admission.as_secs_f64(),
            txs as f64 / admission.as_secs_f64()
        );
        outln!(
            "  block building (execution + state tree root):            {:>8.3} s  {:>10.0} tx/s",
            build_secs,
            txs as f64 / build_secs
        );
        outln!(
            "  commit (one durable redb transaction per block):          {:>8.3} s  {:>10.0} tx/s",
            commit_secs,
            txs as f64 / commit_secs
        );
        outln!(
            "  end to end:                                              {:>8.3} s  {:>10.0} tx/s",
            total.as_secs_f64(),
            tps
        );
    }
    Ok(())
}

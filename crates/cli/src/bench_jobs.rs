//! `piazza bench jobs`: the compute market's overhead on top of inference.

use crate::bench_devnet::{now_ms, BenchNet, BenchNetConfig, PRICE_PER_UNIT};
use anyhow::{Context, Result};
use piazza_client::Client;
use piazza_ledger::compute::{self, JobParams};
use piazza_primitives::{Amount, SecretKey};
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const LATENCY_SAMPLES: usize = 12;

fn text(i: usize) -> String {
    format!("Job number {i}: verifiable inference on an open network, settled on chain.")
}

pub async fn run(jobs: usize, block_interval_ms: u64, json: bool) -> Result<()> {
    let models_dir = piazza_engine::models_dir();
    let record =
        piazza_provider::models::minilm_record(&models_dir, crate::bench_devnet::model_owner())?;
    let concurrency = 2;
    let net = BenchNet::start(BenchNetConfig {
        chain_id: "piazza-bench-jobs",
        model: record.clone(),
        block_interval_ms,
        // No challenge window: this measures what the ledger adds, not the audit delay.
        compute: compute::Params {
            challenge_window_blocks: 0,
            ..compute::Params::default()
        },
        clients: CLIENTS,
        provider_capacity: 64,
        provider_concurrency: concurrency,
    })
    .await?;
    let (url, clients) = (net.url.clone(), net.clients.clone());
    let client = Client::new(&url);

    // Inference alone: the same texts on the same engine, same concurrency and threads.
    let embedder = std::sync::Arc::new(piazza_engine::Embedder::load(models_dir.join("minilm"))?);
    let mut single_ms = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        embedder.embed(&[&text(i)], 1)?;
        single_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let t = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|w| {
            let embedder = embedder.clone();
            std::thread::spawn(move || {
                (w..jobs)
                    .step_by(concurrency)
                    .try_for_each(|i| embedder.embed(&[&text(i)], 1).map(|_| ()))
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("engine thread panicked"))??;
    }
    let engine_jobs_per_s = jobs as f64 / t.elapsed().as_secs_f64();

    let (url_for_jobs, model) = (url.clone(), record.name.clone());
    let submit_one = move |key: &SecretKey, i: usize| {
        let msg = compute::Msg::SubmitJob {
            model: model.clone(),
            input: text(i).into_bytes(),
            params: JobParams::default(),
            max_units: 256,
            max_price: Amount::new(PRICE_PER_UNIT * 256),
        };
        let (client, key) = (Client::new(&url_for_jobs), key.clone());
        async move { client.submit_job(&key, msg, Duration::from_secs(120)).await }
    };

    // Latency, one job at a time: submit → the settling block's time, minus inference.
    let mut added_ms = Vec::new();
    for (i, inference_ms) in single_ms.iter().enumerate().take(LATENCY_SAMPLES) {
        let t0 = now_ms();
        let (id, _) = submit_one(&clients[0], i).await?;
        let job = client.wait_for_job(id, Duration::from_secs(120)).await?;
        let height = job.receipt.context("settled jobs have receipts")?.height;
        let block = client
            .block(height)
            .await?
            .context("the settling block exists")?;
        added_ms.push(block.time_ms.saturating_sub(t0) as f64 - inference_ms);
    }
    added_ms.sort_by(|a, b| a.total_cmp(b));
    let median_added = added_ms[added_ms.len() / 2];

    // Throughput: CLIENTS clients each send all their jobs at once (consecutive nonces), then
    // wait for them to settle.
    let chain_id = client.status().await?.chain_id;
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, key) in clients.iter().enumerate() {
        let ids: Vec<usize> = (c..jobs).step_by(CLIENTS).collect();
        let (key, client, chain_id, model) = (
            key.clone(),
            Client::new(&url),
            chain_id.clone(),
            record.name.clone(),
        );
        tasks.spawn(async move {
            let mut nonce = client.account(&key.public_key().address()).await?.nonce;
            let mut hashes = Vec::new();
            for i in ids {
                let msg = compute::Msg::SubmitJob {
                    model: model.clone(),
                    input: text(i).into_bytes(),
                    params: JobParams::default(),
                    max_units: 256,
                    max_price: Amount::new(PRICE_PER_UNIT * 256),
                };
                let tx = piazza_ledger::tx::Transaction {
                    chain_id: chain_id.clone(),
                    sender: key.public_key(),
                    nonce,
                    max_fee: piazza_client::DEFAULT_MAX_FEE,
                    messages: vec![piazza_ledger::tx::Message::Compute(msg)],
                }
                .sign(&key);
                hashes.push(client.submit(&tx).await?);
                nonce += 1;
            }
            for hash in hashes {
                let receipt = client
                    .wait_for_receipt(&hash, Duration::from_secs(300))
                    .await?;
                let id: u64 = *receipt.job_ids().first().context("job id")?;
                let job = client.wait_for_job(id, Duration::from_secs(300)).await?;
                anyhow::ensure!(
                    job.status == piazza_api::JobState::Settled,
                    "job {id} {}",
                    job.status
                );
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let market_jobs_per_s = jobs as f64 / t.elapsed().as_secs_f64();
    net.stop().await;

    let median_inference = {
        let mut s = single_ms.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        s[s.len() / 2]
    };
    let result = serde_json::json!({
        "benchmark": "jobs",
        "block_interval_ms": block_interval_ms,
        "jobs": jobs,
        "provider_concurrency": concurrency,
        "inference_ms_median": median_inference,
        "ledger_added_latency_ms_median": median_added,
        "ledger_added_latency_block_intervals": median_added / block_interval_ms as f64,
        "engine_jobs_per_second": engine_jobs_per_s,
        "market_jobs_per_second": market_jobs_per_s,
        "market_over_engine": market_jobs_per_s / engine_jobs_per_s,
    });
    if json {
        outln!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        outln!("piazza bench jobs: MiniLM embedding jobs, {block_interval_ms} ms blocks, challenge window 0, provider concurrency {concurrency}");
        outln!("  inference alone (median):          {median_inference:>8.1} ms");
        outln!("  ledger-added latency (median):     {median_added:>8.1} ms = {:.2} block intervals  (submit → settled block, minus inference)", median_added / block_interval_ms as f64);
        outln!("  throughput, engine alone:          {engine_jobs_per_s:>8.1} jobs/s");
        outln!("  throughput, through the market:    {market_jobs_per_s:>8.1} jobs/s  ({:.2} of the engine)", market_jobs_per_s / engine_jobs_per_s);
    }
    Ok(())
}

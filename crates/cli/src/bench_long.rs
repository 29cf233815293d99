//! `piazza bench long-generation`: one long generation job through the compute market on an
//! in-process devnet. Result deadlines follow the work at the provider's declared speed, so a
//! job that takes far more blocks than the chain's base deadline still settles, and the honest
//! provider that ran it is paid and not slashed.

use crate::bench_devnet::{BenchNet, BenchNetConfig, PRICE_PER_UNIT};
use anyhow::{Context, Result};
use piazza_client::Client;
use piazza_ledger::compute::{self, JobParams};
use piazza_primitives::Amount;
use std::time::{Duration, Instant};

/// What `piazza bench long-generation` takes.
pub struct LongGeneration {
    pub tokens: u32,
    pub block_interval_ms: u64,
    /// Bytes of prompt at least (a longer count), to measure a long context.
    pub prompt_bytes: usize,
    /// Jobs the provider holds at once (the devnet's provider holds 16).
    pub capacity: u32,
    pub json: bool,
}

/// How often the job is read while it runs.
const POLL_MS: u64 = 100;
/// Blocks waited beyond the job's worst case (every attempt to its deadline, then the
/// challenge window) before the benchmark gives up.
const SLACK_BLOCKS: u64 = 100;

/// A prompt the model continues for as long as it is let: "1, 2, 3, …, n," of at least
/// `bytes` bytes (and at least ten numbers), at most a job's input bound.
pub fn counting_prompt(bytes: usize) -> String {
    let mut prompt = String::new();
    let mut n = 1u32;
    while (n <= 10 || prompt.len() < bytes) && prompt.len() < compute::JOB_INPUT_BYTES_MAX - 16 {
        if n > 1 {
            prompt.push(' ');
        }
        prompt.push_str(&format!("{n},"));
        n += 1;
    }
    prompt
}

pub async fn run(args: LongGeneration) -> Result<()> {
    anyhow::ensure!(args.tokens > 0, "--tokens must be at least 1");
    anyhow::ensure!(args.capacity > 0, "--capacity must be at least 1");
    let model_record = piazza_provider::models::smollm2_record(
        &piazza_engine::models_dir(),
        crate::bench_devnet::model_owner(),
    )?;
    let compute_params = compute::Params::default();
    let net = BenchNet::start(BenchNetConfig {
        chain_id: "piazza-bench-long",
        model: model_record.clone(),
        block_interval_ms: args.block_interval_ms,
        compute: compute_params.clone(),
        clients: 1,
        provider_capacity: args.capacity,
        provider_concurrency: 2.min(args.capacity as usize),
    })
    .await?;
    let outcome = measure(&net, &args, &model_record.name, &compute_params).await;
    net.stop().await;
    let report = outcome?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    anyhow::ensure!(
        report["slashed"] == false,
        "the honest provider was slashed"
    );
    Ok(())
}

async fn measure(
    net: &BenchNet,
    args: &LongGeneration,
    model: &str,
    compute_params: &compute::Params,
) -> Result<serde_json::Value> {
    let client = Client::new(&net.url);
    let key = &net.clients[0];
    let before = client
        .provider(&net.provider)
        .await?
        .context("the provider is registered")?;
    let units_per_block = net.declared_units_per_block()?;
    let prompt = counting_prompt(args.prompt_bytes);
    let max_price = Amount::new(PRICE_PER_UNIT * u128::from(args.tokens));
    let message = compute::Msg::SubmitJob {
        model: model.to_string(),
        input: prompt.clone().into_bytes(),
        params: JobParams {
            max_tokens: args.tokens,
            ..JobParams::default()
        },
        max_units: u64::from(args.tokens),
        max_price,
    };
    let started = Instant::now();
    let (id, receipt) = client
        .submit_job(key, message, Duration::from_secs(60))
        .await?;
    let worst_blocks = (compute_params.job_deadline_blocks
        + u64::from(args.tokens)
        + prompt.len() as u64 / compute::INPUT_BYTES_PER_DEADLINE_UNIT
        + compute_params.challenge_window_blocks)
        * u64::from(compute_params.max_attempts)
        + SLACK_BLOCKS;
    let limit = Duration::from_millis(worst_blocks * args.block_interval_ms);
    let (mut deadline_height, mut posted_after) = (None, None);
    let job = loop {
        let job = client.job(id).await?.context("the job exists")?;
        if job.deadline_height.is_some() {
            deadline_height = job.deadline_height;
        }
        if posted_after.is_none() && job.result.is_some() {
            posted_after = Some(started.elapsed());
        }
        if job.status.is_final() {
            break job;
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "job {id} is still {} after {limit:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    };
    let settled_after = started.elapsed();
    let after = client
        .provider(&net.provider)
        .await?
        .context("the provider is registered")?;
    let result = job.result.as_ref();
    let tokens = result.map_or(0, |r| r.work_units);
    let posted_height = result.map(|r| r.posted_height);
    let posted_after = posted_after.unwrap_or(settled_after);
    let submitted_height = receipt.height;
    let measured_interval_ms = match posted_height {
        Some(posted) if posted > submitted_height => {
            (block_time_ms(&client, posted).await?
                - block_time_ms(&client, submitted_height).await?) as f64
                / (posted - submitted_height) as f64
        }
        _ => 0.0,
    };
    let price: u128 = job
        .receipt
        .as_ref()
        .map_or(Ok(0), |r| r.price.parse())
        .context("the receipt's price")?;
    let stake_before: u128 = before.stake.parse()?;
    let stake_after: u128 = after.stake.parse()?;
    let slashed = stake_after < stake_before
        || after.deadlines_missed > before.deadlines_missed
        || !job.missed.is_empty();
    Ok(serde_json::json!({
        "benchmark": "long-generation",
        "job": id,
        "status": job.status.name(),
        "tokens_asked": args.tokens,
        "tokens_generated": tokens,
        "prompt_bytes": prompt.len(),
        "provider_capacity": args.capacity,
        "declared_units_per_block": units_per_block,
        "job_deadline_blocks": compute_params.job_deadline_blocks,
        "submitted_height": submitted_height,
        "posted_height": posted_height,
        "deadline_height": deadline_height,
        "blocks_taken": posted_height.map(|p| p.saturating_sub(submitted_height)),
        "block_interval_ms": args.block_interval_ms,
        "measured_block_interval_ms": measured_interval_ms,
        "seconds_to_posted": posted_after.as_secs_f64(),
        "seconds_to_settled": settled_after.as_secs_f64(),
        "tokens_per_second": tokens as f64 / posted_after.as_secs_f64().max(1e-9),
        "price": price.to_string(),
        "escrow": max_price.base_units().to_string(),
        "provider_stake_before": before.stake,
        "provider_stake_after": after.stake,
        "deadlines_missed": after.deadlines_missed,
        "slashed": slashed,
    }))
}

async fn block_time_ms(client: &Client, height: u64) -> Result<u64> {
    Ok(client
        .block(height)
        .await?
        .context("the block exists")?
        .time_ms)
}

fn print_text(r: &serde_json::Value) {
    let number = |key: &str| r[key].as_f64().unwrap_or(0.0);
    outln!(
        "piazza bench long-generation: job {} {}, SmolLM2, {} ms blocks (measured {:.0} ms), provider capacity {}, declared {} units/block",
        r["job"], r["status"].as_str().unwrap_or("?"), r["block_interval_ms"], number("measured_block_interval_ms"),
        r["provider_capacity"], r["declared_units_per_block"]
    );
    outln!(
        "  tokens generated:  {} of {} (prompt {} bytes)",
        r["tokens_generated"],
        r["tokens_asked"],
        r["prompt_bytes"]
    );
    outln!(
        "  heights:           submitted {}, posted {}, deadline {} ({} blocks taken; the base deadline is {})",
        r["submitted_height"], r["posted_height"], r["deadline_height"], r["blocks_taken"],
        r["job_deadline_blocks"]
    );
    outln!(
        "  wall time:         {:.1} s to the result, {:.1} s to settlement; {:.2} tokens/s",
        number("seconds_to_posted"),
        number("seconds_to_settled"),
        number("tokens_per_second")
    );
    outln!(
        "  client paid:       {} of an escrow of {} base units",
        r["price"].as_str().unwrap_or("?"),
        r["escrow"].as_str().unwrap_or("?")
    );
    outln!(
        "  provider stake:    {} before, {} after; deadlines missed {}; slashed: {}",
        r["provider_stake_before"].as_str().unwrap_or("?"),
        r["provider_stake_after"].as_str().unwrap_or("?"),
        r["deadlines_missed"],
        if r["slashed"] == true { "yes" } else { "no" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counting_prompt_has_ten_numbers_at_least_and_fits_a_job() {
        assert_eq!(counting_prompt(0), "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,");
        let long = counting_prompt(4_000);
        assert!(long.len() >= 4_000 && long.ends_with(','));
        assert!(counting_prompt(usize::MAX).len() <= compute::JOB_INPUT_BYTES_MAX);
    }
}

//! The speed a provider declares on chain: work units per block for one job.
//!
//! A job's result deadline grows with the work it asks for at the assigned provider's declared
//! speed, so a provider must not declare more than it can keep. It measures itself on the path
//! it serves with (one probe job per loaded model), takes the slowest model, shares the speed
//! among the jobs it may hold at once (`capacity` jobs, `concurrency` of them running), and
//! keeps a safety factor for a busy machine.

use crate::ProviderError;
use piazza_arbiter::{JobSpec, LoadedModel};
use piazza_client::Client;
use std::collections::BTreeMap;
use std::time::Instant;

/// The declared speed is this fraction of the measured one.
pub const SPEED_SAFETY_FACTOR: f64 = 2.0;
/// Tokens the probe generates on a generation model.
const PROBE_TOKENS: u32 = 8;
/// Blocks looked back to estimate the chain's block interval.
const INTERVAL_BLOCKS: u64 = 10;
/// The interval assumed until the chain has two blocks.
const DEFAULT_BLOCK_INTERVAL_MS: u64 = 1_000;
const PROBE_TEXT: &str = "Piazza measures how fast this provider serves one request.";

/// Work units per second of the slowest served model, measured with one probe job each.
pub fn measure_units_per_second(
    models: &BTreeMap<String, LoadedModel>,
    threads: usize,
) -> Result<f64, ProviderError> {
    let mut slowest = f64::INFINITY;
    for (name, model) in models {
        let job = JobSpec {
            input: PROBE_TEXT.as_bytes().to_vec(),
            max_tokens: PROBE_TOKENS,
            ..JobSpec::default()
        };
        let started = Instant::now();
        let run = piazza_arbiter::execute(model, &job, threads)
            .map_err(|e| ProviderError::Model(format!("speed probe on `{name}`: {e}")))?;
        let seconds = started.elapsed().as_secs_f64().max(1e-6);
        let speed = run.work_units.max(1) as f64 / seconds;
        tracing::info!(model = %name, units = run.work_units, seconds, speed, "speed probe");
        slowest = slowest.min(speed);
    }
    Ok(if slowest.is_finite() { slowest } else { 1.0 })
}

/// The chain's recent block interval in milliseconds.
pub async fn block_interval_ms(client: &Client) -> Result<u64, ProviderError> {
    let head = client.status().await?.height;
    let back = head.min(INTERVAL_BLOCKS);
    if back < 2 {
        return Ok(DEFAULT_BLOCK_INTERVAL_MS);
    }
    let (Some(newest), Some(oldest)) =
        (client.block(head).await?, client.block(head - back).await?)
    else {
        return Ok(DEFAULT_BLOCK_INTERVAL_MS);
    };
    Ok((newest.time_ms.saturating_sub(oldest.time_ms) / back).max(1))
}

/// The speed to declare: units per block for one job among `capacity` held, `concurrency` run
/// at once, at a fraction [`SPEED_SAFETY_FACTOR`] of the measured speed; at least one.
pub fn units_per_block(
    units_per_second: f64,
    block_interval_ms: u64,
    concurrency: usize,
    capacity: u32,
) -> u32 {
    let running = concurrency.max(1).min(capacity.max(1) as usize) as f64;
    let per_job = units_per_second * running / capacity.max(1) as f64;
    let per_block = per_job * block_interval_ms as f64 / 1_000.0 / SPEED_SAFETY_FACTOR;
    per_block
        .floor()
        .clamp(1.0, piazza_ledger::compute::UNITS_PER_BLOCK_MAX as f64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_speed_shares_the_machine_and_keeps_a_margin() {
        // 100 tokens/s, 1 s blocks, one job at a time: 50 per block.
        assert_eq!(units_per_block(100.0, 1_000, 1, 1), 50);
        // Sixteen jobs held, two running: each gets 1/8 of the machine.
        assert_eq!(units_per_block(100.0, 1_000, 2, 16), 6);
        // Faster blocks, fewer units per block; never below one.
        assert_eq!(units_per_block(100.0, 100, 1, 1), 5);
        assert_eq!(units_per_block(8.7, 100, 2, 16), 1);
        // Never above the chain's bound.
        assert_eq!(
            units_per_block(1e12, 1_000, 1, 1),
            piazza_ledger::compute::UNITS_PER_BLOCK_MAX
        );
    }
}

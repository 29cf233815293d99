//! The speed a provider declares on chain: work units per block for one job.
//!
//! A job's result deadline grows with the work it asks for at the assigned provider's declared
//! speed, so a provider must not declare more than it can keep. It measures itself on the path
//! it serves with, in the units the chain sets deadlines in (work units plus one per
//! [`INPUT_BYTES_PER_DEADLINE_UNIT`] bytes of input), on the slowest of a few probe jobs per
//! loaded model: a short generation, and for a generation model also a long prompt, which costs
//! more per deadline unit than generating (measured with SmolLM2 on one thread: 19 tokens/s
//! generated after 100 tokens of context; a prompt of 500 digits, one token per byte, read in
//! 4.6 s = 3.5 deadline units/s; 4,000 digits in 111 s = 1.1 units/s; 5.5 tokens/s generated
//! after 3,189 tokens of context). It takes the slowest model, shares the speed among the jobs
//! it may hold at once (`capacity` jobs, `concurrency` of them running), and keeps a safety
//! factor for a busy machine.

use crate::ProviderError;
use piazza_arbiter::{JobSpec, LoadedModel};
use piazza_client::Client;
use piazza_ledger::compute::INPUT_BYTES_PER_DEADLINE_UNIT;
use std::collections::BTreeMap;
use std::time::Instant;

/// The declared speed is this fraction of the measured one.
pub const SPEED_SAFETY_FACTOR: f64 = 2.0;
/// Tokens the short probe generates on a generation model.
const PROBE_TOKENS: u32 = 8;
/// Bytes of the long-prompt probe's input: digits, one token per byte, the costliest prompt
/// per deadline unit. About 2 s on one thread with SmolLM2; longer prompts cost more still per
/// unit (attention grows with the context), which the safety factor and the chain's base
/// deadline cover for blocks of a second or more.
pub const LONG_PROMPT_PROBE_BYTES: usize = 256;
/// Blocks looked back to estimate the chain's block interval.
const INTERVAL_BLOCKS: u64 = 10;
/// The interval assumed until the chain has two blocks.
const DEFAULT_BLOCK_INTERVAL_MS: u64 = 1_000;
const PROBE_TEXT: &str = "Piazza measures how fast this provider serves one request.";

/// The probe jobs for `model`: a short one, and for a generation model a long prompt of
/// one-token bytes with one token to generate.
pub fn probe_jobs(model: &LoadedModel) -> Vec<JobSpec> {
    let short = JobSpec {
        input: PROBE_TEXT.as_bytes().to_vec(),
        max_tokens: PROBE_TOKENS,
        ..JobSpec::default()
    };
    match model {
        LoadedModel::Embedding(_) => vec![short],
        LoadedModel::Generation(_) => vec![
            short,
            JobSpec {
                input: (0..LONG_PROMPT_PROBE_BYTES)
                    .map(|i| b'0' + (i % 10) as u8)
                    .collect(),
                max_tokens: 1,
                ..JobSpec::default()
            },
        ],
    }
}

/// Deadline units per second of a run that did `work_units` on `input_bytes` of input in
/// `seconds`: the work a deadline allows for, as the chain counts it.
pub fn deadline_units_per_second(work_units: u64, input_bytes: usize, seconds: f64) -> f64 {
    let units = work_units.saturating_add(input_bytes as u64 / INPUT_BYTES_PER_DEADLINE_UNIT);
    units.max(1) as f64 / seconds.max(1e-6)
}

/// Deadline units per second of the slowest probe on the slowest served model.
pub fn measure_units_per_second(
    models: &BTreeMap<String, LoadedModel>,
    threads: usize,
) -> Result<f64, ProviderError> {
    let mut slowest = f64::INFINITY;
    for (name, model) in models {
        for job in probe_jobs(model) {
            let started = Instant::now();
            let run = piazza_arbiter::execute(model, &job, threads)
                .map_err(|e| ProviderError::Model(format!("speed probe on `{name}`: {e}")))?;
            let seconds = started.elapsed().as_secs_f64();
            let speed = deadline_units_per_second(run.work_units, job.input.len(), seconds);
            tracing::info!(model = %name, input_bytes = job.input.len(), units = run.work_units, seconds, speed, "speed probe");
            slowest = slowest.min(speed);
        }
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

    #[test]
    fn a_long_prompt_is_measured_in_the_units_deadlines_are_set_in() {
        // One token after 256 bytes of prompt in 2 s: 1 + 256 / 32 = 9 units, 4.5 per second.
        assert_eq!(deadline_units_per_second(1, 256, 2.0), 4.5);
        assert_eq!(deadline_units_per_second(0, 0, 0.0), 1e6);
        let generator = std::sync::Arc::new(
            piazza_llm::Generator::load(piazza_llm::default_model_path()).unwrap(),
        );
        let jobs = probe_jobs(&LoadedModel::Generation(generator.clone()));
        let long = jobs.iter().max_by_key(|j| j.input.len()).unwrap();
        assert_eq!(long.input.len(), LONG_PROMPT_PROBE_BYTES);
        // One token per byte: the prompt is as long in tokens as in bytes.
        assert_eq!(
            generator
                .tokenize(std::str::from_utf8(&long.input).unwrap())
                .unwrap()
                .len(),
            LONG_PROMPT_PROBE_BYTES
        );
    }
}

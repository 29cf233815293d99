//! Peak memory (VmHWM) of a process serving SmolLM2 as the provider does: the record resolved
//! to the bundled file in its numeric profile (`models::load`), then one chat job of 32 tokens
//! run on the job path. One profile per process, since the peak is the process's:
//!
//! ```text
//! cargo run --release -p piazza-provider --example serving_memory -- quantized
//! cargo run --release -p piazza-provider --example serving_memory -- f32
//! ```

use piazza_api::{JobParamsInfo, ModelInfo};
use piazza_primitives::Address;
use piazza_provider::models;

/// The process's peak resident memory in KiB, from `/proc/self/status`.
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let profile = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quantized".into());
    let dir = piazza_engine::models_dir();
    let started = std::time::Instant::now();
    let record = match profile.as_str() {
        "quantized" => models::smollm2_quantized_record(&dir, Address([1; 20]))?,
        "f32" => models::smollm2_record(&dir, Address([1; 20]))?,
        other => return Err(format!("profile `{other}`: f32 or quantized").into()),
    };
    let info: ModelInfo = serde_json::from_value(serde_json::json!({
        "name": record.name, "kind": record.kind.name(), "architecture": record.architecture,
        "config_hash": record.config_hash.to_hex(),
        "weights_commitment": record.weights_commitment.to_hex(),
        "tokenizer_hash": record.tokenizer_hash.to_hex(), "owner": record.owner.to_string(),
        "license": record.license, "price_floor": "1000", "providers": [], "numeric": profile,
    }))?;
    let model = models::load(&dir, &info)?;
    let loaded_ms = started.elapsed().as_millis();
    let params = JobParamsInfo {
        max_tokens: 32,
        chat: true,
        ..JobParamsInfo::default()
    };
    let started = std::time::Instant::now();
    let run = models::execute(&model, b"Write a haiku about the sea.", &params, 1)?;
    println!(
        "profile {profile}: load + commitments {loaded_ms} ms, {} tokens in {} ms, peak memory (VmHWM) {:.0} MiB",
        run.work_units,
        started.elapsed().as_millis(),
        peak_kib().unwrap_or(0) as f64 / 1024.0
    );
    Ok(())
}

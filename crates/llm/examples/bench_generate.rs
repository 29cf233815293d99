//! Prompt and generation speed of the traced decoder, and peak memory.
//!
//! `cargo run --release -p piazza-llm --example bench_generate [-- TOKENS]`

use std::time::Instant;

use piazza_llm::{GenerateParams, Generator};

const PROMPT: &str = "Decentralized compute networks let anyone rent out spare machines to run \
    models for others. The hard part is trust: how does the client know the provider really ran \
    the model it paid for, and did not return something cheaper? One answer is to make every \
    operator deterministic, so that any result can be checked by re-running it.";

fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let new_tokens: usize = std::env::args().nth(1).map_or(Ok(64), |s| s.parse())?;
    let path = piazza_llm::default_model_path();
    let start = Instant::now();
    let generator = Generator::load(&path)?;
    println!(
        "load {:.2} s ({})",
        start.elapsed().as_secs_f64(),
        path.display()
    );
    let prompt = generator.tokenize(PROMPT)?;
    println!(
        "prompt {} tokens, {new_tokens} new tokens, greedy",
        prompt.len()
    );
    for threads in [1, 2] {
        // Prefill alone: one new token.
        let start = Instant::now();
        generator.generate(&prompt, &GenerateParams::greedy(1), threads, |_| {})?;
        let prefill_s = start.elapsed().as_secs_f64();
        let mut params = GenerateParams::greedy(new_tokens);
        params.stop_at_eos = false;
        let start = Instant::now();
        let generation = generator.generate(&prompt, &params, threads, |_| {})?;
        let total_s = start.elapsed().as_secs_f64();
        let decode_s = total_s - prefill_s;
        println!(
            "threads {threads}: prompt {:.1} tokens/s, generation {:.1} tokens/s, {} trace steps, root {}",
            prompt.len() as f64 / prefill_s,
            (generation.ids.len() - 1) as f64 / decode_s,
            generation.step_count(),
            generation.trace_root().iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
    }
    let start = Instant::now();
    let commitment = generator.weights_commitment();
    println!(
        "weights commitment {} ({:.2} s)",
        commitment
            .root
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        start.elapsed().as_secs_f64()
    );
    if let Some(peak) = peak_memory_mib() {
        println!("peak memory (VmHWM) {peak:.0} MiB");
    }
    Ok(())
}

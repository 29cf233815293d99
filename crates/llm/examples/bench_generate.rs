//! Prompt and generation speed of the traced decoder, time per token along a generation, and
//! peak memory.
//!
//! `cargo run --release -p piazza-llm --example bench_generate [-- TOKENS [THREADS...]]`
//! (`PIAZZA_PROFILE=quantized` for the quantized numeric profile; f32 by default)
//!
//! Prints, per thread count: prefill tokens/s, decode tokens/s, and the mean time per token
//! over windows of the generation (tokens 1–16, 17–128, 129–256, …) so a cost that grows with
//! the generation shows.

use std::time::Instant;

use piazza_llm::{GenerateParams, Generator, NumericProfile};
use piazza_trace::merkle;
use piazza_trace::trace::TRACE_DOMAIN;
use piazza_trace::Hash;

const PROMPT: &str = "Decentralized compute networks let anyone rent out spare machines to run \
    models for others. The hard part is trust: how does the client know the provider really ran \
    the model it paid for, and did not return something cheaper? One answer is to make every \
    operator deterministic, so that any result can be checked by re-running it.";

/// Ends of the windows over which the mean time per token is printed.
const WINDOW_ENDS: [usize; 5] = [16, 128, 256, 512, 1024];

fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU time of this process so far (user + system, every thread, ended ones included), from
/// `/proc/self/stat` in clock ticks of 10 ms: on a shared machine it shows the work done, which
/// wall time hides under other processes' load.
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends at the last ')'): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mean milliseconds per token over each window `(previous end, end]` of decode tokens: wall
/// time, then process CPU time.
fn window_means(token_times_s: &[(f64, f64)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for end in WINDOW_ENDS {
        let end = end.min(token_times_s.len());
        if start >= end {
            break;
        }
        let span = &token_times_s[start..end];
        let mean_ms =
            |f: fn(&(f64, f64)) -> f64| span.iter().map(f).sum::<f64>() / span.len() as f64 * 1e3;
        out.push(format!(
            "{}–{}: {:.1} ms (cpu {:.1} ms)",
            start + 1,
            end,
            mean_ms(|t| t.0),
            mean_ms(|t| t.1)
        ));
        start = end;
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let new_tokens: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let thread_counts: Vec<usize> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    let thread_counts = if thread_counts.is_empty() {
        vec![1, 2]
    } else {
        thread_counts
    };
    let path = piazza_llm::default_model_path();
    let start = Instant::now();
    let profile = match std::env::var("PIAZZA_PROFILE").as_deref() {
        Ok("quantized") => NumericProfile::Quantized,
        _ => NumericProfile::F32,
    };
    let generator = Generator::load_with(&path, profile)?;
    println!(
        "load {:.2} s ({}), profile {profile:?}, weights {:.0} MiB in memory",
        start.elapsed().as_secs_f64(),
        path.display(),
        generator.weight_bytes() as f64 / (1 << 20) as f64
    );
    if let Some(peak) = peak_memory_mib() {
        println!("peak memory after load (VmHWM) {peak:.0} MiB");
    }
    let prompt = generator.tokenize(PROMPT)?;
    println!(
        "prompt {} tokens, {new_tokens} new tokens, greedy",
        prompt.len()
    );
    for threads in thread_counts {
        // Prefill alone: one new token.
        let start = Instant::now();
        generator.generate(&prompt, &GenerateParams::greedy(1), threads, |_| {})?;
        let prefill_s = start.elapsed().as_secs_f64();
        let mut params = GenerateParams::greedy(new_tokens);
        params.stop_at_eos = false;
        let mut token_times_s = Vec::with_capacity(new_tokens);
        let start = Instant::now();
        let generation_cpu_start = process_cpu_s();
        let mut last = (start, generation_cpu_start);
        let generation = generator.generate(&prompt, &params, threads, |event| {
            let now = (Instant::now(), process_cpu_s());
            if event.index > 0 {
                token_times_s.push(((now.0 - last.0).as_secs_f64(), now.1 - last.1));
            }
            last = now;
        })?;
        let total_s = start.elapsed().as_secs_f64();
        let total_cpu_s = process_cpu_s() - generation_cpu_start;
        let decode_s = total_s - prefill_s;
        println!(
            "threads {threads}: prompt {:.1} tokens/s, generation {:.1} tokens/s, {} trace steps, root {}",
            prompt.len() as f64 / prefill_s,
            (generation.ids.len() - 1) as f64 / decode_s,
            generation.step_count(),
            hex(&generation.trace_root())
        );
        println!("  per token: {}", window_means(&token_times_s).join(", "));
        if let Some(peak) = peak_memory_mib() {
            println!("  peak memory so far, a provider's (VmHWM) {peak:.0} MiB");
        }
        // An auditor's check of the same generation: one pass over prompt and tokens.
        let (start, cpu_start) = (Instant::now(), process_cpu_s());
        let mismatch = generator.audit(&prompt, &generation.ids, &params, threads)?;
        let (audit_s, audit_cpu_s) = (start.elapsed().as_secs_f64(), process_cpu_s() - cpu_start);
        println!(
            "  audit logits (one pass): {audit_s:.2} s = {:.2} x the generation ({total_s:.2} s); cpu {audit_cpu_s:.2} s = {:.2} x ({total_cpu_s:.2} s); first mismatch {mismatch:?}",
            audit_s / total_s,
            audit_cpu_s / total_cpu_s
        );
        // What the auditor runs: the generation and its trace root from one pass.
        // `PIAZZA_AUDIT_REPEATS=N` runs it N times (the mean is printed), so a profile of the
        // process is mostly the auditor's pass.
        let repeats: usize = std::env::var("PIAZZA_AUDIT_REPEATS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1)
            .max(1);
        let (start, cpu_start) = (Instant::now(), process_cpu_s());
        let mut rebuilt = None;
        for _ in 0..repeats {
            rebuilt = generator.generate_from_draft(
                &prompt,
                &generation.ids,
                &params,
                piazza_llm::Compute::new(threads),
                None,
            )?;
        }
        let (audit_s, audit_cpu_s) = (
            start.elapsed().as_secs_f64() / repeats as f64,
            (process_cpu_s() - cpu_start) / repeats as f64,
        );
        let same_root = rebuilt.map(|g| g.trace_root()) == Some(generation.trace_root());
        println!(
            "  audit with trace root (one pass): {audit_s:.3} s = {:.2} x the generation ({total_s:.3} s); cpu {audit_cpu_s:.2} s = {:.2} x; same root {same_root}",
            audit_s / total_s,
            audit_cpu_s / total_cpu_s
        );
        // The share of the trace's Merkle tree (a node hash per pair of leaves) in both: the
        // root over as many leaves, timed alone.
        let leaves: Vec<Hash> = (0..generation.step_count())
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        let start = Instant::now();
        std::hint::black_box(merkle::root(TRACE_DOMAIN, &leaves));
        println!(
            "  the Merkle root over {} leaves alone: {:.1} ms",
            leaves.len(),
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    let start = Instant::now();
    let commitment = generator.weights_commitment();
    println!(
        "weights commitment {} ({:.2} s)",
        hex(&commitment.root),
        start.elapsed().as_secs_f64()
    );
    if let Some(peak) = peak_memory_mib() {
        println!("peak memory (VmHWM) {peak:.0} MiB");
    }
    Ok(())
}

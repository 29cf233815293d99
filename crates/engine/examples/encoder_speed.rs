//! MiniLM sentences per second at ~18 and 256 tokens, threads 1 and 2, printed as one table;
//! with `PIAZZA_BENCH_PYTHON` set (a Python with torch, transformers, onnx and onnxruntime),
//! PyTorch and ONNX Runtime run the same token ids, padded to each batch's longest as
//! sentence-transformers does, in the same process tree, threads pinned, and their columns fill
//! in (`bench/anchors/encoder_anchors.py`). Piazza runs each batch packed (no padding rows).
//!
//! `cargo run --release -p piazza-engine --example encoder_speed [rounds]`
//! Timings are best of `rounds` (default 5), model loading untimed; the numbers are printed,
//! never asserted.

use std::collections::BTreeMap;
use std::time::Instant;

use piazza_engine::{Batch, Compute, Embedder};

const THREADS: [usize; 2] = [1, 2];
const WORDS: [&str; 12] = [
    "open",
    "networks",
    "verify",
    "every",
    "inference",
    "result",
    "with",
    "bitwise",
    "reproducible",
    "kernels",
    "on",
    "ordinary",
];

/// One timed workload: its name and its padded batches of token ids.
struct Workload {
    name: &'static str,
    batches: Vec<Vec<Vec<u32>>>,
}

impl Workload {
    fn sentences(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
    }

    /// Rows padded with 0 to the batch's longest (what the anchors run; [`Batch::pack`] packs
    /// instead).
    fn padded(&self) -> Vec<Vec<Vec<u32>>> {
        self.batches
            .iter()
            .map(|batch| {
                let seq = batch.iter().map(Vec::len).max().unwrap_or(0);
                batch
                    .iter()
                    .map(|ids| {
                        let mut row = ids.clone();
                        row.resize(seq, 0);
                        row
                    })
                    .collect()
            })
            .collect()
    }
}

fn text(words: usize, offset: usize) -> String {
    (0..words)
        .map(|i| WORDS[(i * 7 + offset) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn workloads(embedder: &Embedder) -> Result<Vec<Workload>, Box<dyn std::error::Error>> {
    // 32 sentences of 12–20 words (~14–22 tokens with [CLS] and [SEP]), one batch.
    let short: Vec<String> = (0..32).map(|s| text(12 + s % 9, s)).collect();
    let short: Vec<&str> = short.iter().map(String::as_str).collect();
    // 8 texts the tokenizer truncates to 256 tokens, one batch.
    let long: Vec<String> = (0..8).map(|s| text(400, s)).collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    Ok(vec![
        Workload {
            name: "batch 32 x ~18 tokens",
            batches: vec![embedder.tokenize(&short)?],
        },
        Workload {
            name: "batch 8 x 256 tokens",
            batches: vec![embedder.tokenize(&long)?],
        },
    ])
}

/// Seconds this thread has run on a CPU (Linux `/proc/thread-self/schedstat`), if readable.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanoseconds: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(nanoseconds as f64 / 1e9)
}

/// Best wall-clock seconds of `rounds` runs (after one warm-up), and the best CPU seconds of
/// the calling thread (the whole run when it uses one thread; not timed by other processes
/// taking the core, so before/after builds compare on a loaded machine).
fn best_seconds(rounds: usize, mut run: impl FnMut()) -> (f64, f64) {
    run();
    (0..rounds)
        .map(|_| {
            let (start, cpu_start) = (Instant::now(), thread_cpu_seconds());
            run();
            let cpu = thread_cpu_seconds()
                .zip(cpu_start)
                .map_or(f64::NAN, |(end, start)| end - start);
            (start.elapsed().as_secs_f64(), cpu)
        })
        .fold((f64::INFINITY, f64::INFINITY), |(wall, cpu), (w, c)| {
            (wall.min(w), cpu.min(c))
        })
}

/// `{tool: {"<workload>/<threads>": seconds}}` from the Python anchors, or empty without them.
fn anchors(
    workloads: &[Workload],
    rounds: usize,
    model_dir: &std::path::Path,
) -> Result<BTreeMap<String, BTreeMap<String, f64>>, Box<dyn std::error::Error>> {
    let Ok(python) = std::env::var("PIAZZA_BENCH_PYTHON") else {
        return Ok(BTreeMap::new());
    };
    let spec = serde_json::json!({
        "threads": THREADS,
        "rounds": rounds,
        "workloads": workloads
            .iter()
            .map(|w| serde_json::json!({"name": w.name, "batches": w.padded()}))
            .collect::<Vec<_>>(),
    });
    let spec_path = std::env::temp_dir().join(format!("encoder_speed_{}.json", std::process::id()));
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/anchors/encoder_anchors.py"
    );
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(model_dir)
        .arg(&spec_path)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    std::fs::remove_file(&spec_path)?;
    if !output.status.success() {
        return Err(format!("{script} failed: {}", output.status).into());
    }
    let last_line = String::from_utf8(output.stdout)?
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    Ok(serde_json::from_str(&last_line)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(5), |r| r.parse())?;
    let model_dir = piazza_engine::models_dir().join("minilm");
    let embedder = Embedder::load(&model_dir)?;
    let workloads = workloads(&embedder)?;
    for workload in &workloads {
        let real: usize = workload.batches.iter().flatten().map(Vec::len).sum();
        let padded: usize = workload.padded().iter().flatten().map(Vec::len).sum();
        eprintln!(
            "{}: {real} rows computed by piazza (packed), {padded} by the anchors (padded)",
            workload.name
        );
    }
    let mut piazza = BTreeMap::new();
    // `PIAZZA_BENCH_THREADS=1` runs only that thread count (quick before/after comparisons).
    let only: Option<usize> = std::env::var("PIAZZA_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok());
    for threads in THREADS.into_iter().filter(|t| only.is_none_or(|o| o == *t)) {
        let compute = Compute::new(threads);
        for workload in &workloads {
            let batches: Vec<Batch> = workload
                .batches
                .iter()
                .map(|ids| Batch::pack(ids))
                .collect::<Result<_, _>>()?;
            let (seconds, cpu_seconds) = best_seconds(rounds, || {
                for batch in &batches {
                    std::hint::black_box(embedder.run(batch, compute).expect("run"));
                }
            });
            piazza.insert(format!("{}/{threads}", workload.name), seconds);
            if threads == 1 {
                let per_cpu_second = workload.sentences() as f64 / cpu_seconds;
                eprintln!(
                    "{} / 1 thread: {per_cpu_second:.1} sent per CPU second",
                    workload.name
                );
            }
        }
    }
    let anchors = anchors(&workloads, rounds, &model_dir)?;
    let rate = |tool: Option<&BTreeMap<String, f64>>, key: &str, sentences: usize| {
        tool.and_then(|t| t.get(key)).map(|s| sentences as f64 / s)
    };
    let show = |rate: Option<f64>| rate.map_or("-".to_owned(), |r| format!("{r:.1}"));
    println!("| workload | threads | piazza sent/s | PyTorch sent/s | ONNX Runtime sent/s | piazza ÷ faster |");
    println!("|---|---|---|---|---|---|");
    for workload in &workloads {
        for threads in THREADS {
            let key = format!("{}/{threads}", workload.name);
            let sentences = workload.sentences();
            let ours = rate(Some(&piazza), &key, sentences).unwrap_or(0.0);
            let torch = rate(anchors.get("torch"), &key, sentences);
            let onnx = rate(anchors.get("onnxruntime"), &key, sentences);
            let faster = torch
                .into_iter()
                .chain(onnx)
                .fold(None, |best: Option<f64>, r| {
                    Some(best.map_or(r, |b| b.max(r)))
                });
            let ratio = faster.map_or("-".to_owned(), |f| format!("{:.2}", ours / f));
            println!(
                "| {} | {threads} | {ours:.1} | {} | {} | {ratio} |",
                workload.name,
                show(torch),
                show(onnx)
            );
        }
    }
    Ok(())
}

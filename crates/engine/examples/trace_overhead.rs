//! Where the time of a traced run goes: plain run, traced run, and hashing alone.
//! `cargo run --release -p piazza-engine --example trace_overhead [threads] [batch] [words]`

use std::time::Instant;

use piazza_engine::{trace, Batch, Compute, Embedder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: usize = std::env::args().nth(1).map_or(Ok(1), |t| t.parse())?;
    let embedder = Embedder::load(piazza_engine::models_dir().join("minilm"))?;
    let batch_size: usize = std::env::args().nth(2).map_or(Ok(16), |t| t.parse())?;
    let words: usize = std::env::args().nth(3).map_or(Ok(16), |t| t.parse())?;
    let vocabulary = [
        "open",
        "networks",
        "verify",
        "every",
        "inference",
        "result",
        "with",
        "bitwise",
    ];
    let text: String = (0..words)
        .map(|i| vocabulary[i % vocabulary.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let texts = vec![text.as_str(); batch_size];
    let batch = Batch::pack(&embedder.tokenize(&texts)?)?;
    let compute = Compute::new(threads);
    let recording = embedder.run_recorded(&batch, compute)?;
    let bytes: usize = recording
        .outputs
        .iter()
        .map(|t| t.element_count() * 4)
        .sum();
    let mut best = [f64::INFINITY; 3];
    for _ in 0..10 {
        let start = Instant::now();
        embedder.run(&batch, compute)?;
        best[0] = best[0].min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        embedder.run_traced(&batch, compute)?;
        best[1] = best[1].min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        for (index, step) in recording.graph.steps.iter().enumerate() {
            let output = &recording.outputs[step.op];
            let width = output.shape()[1];
            let values =
                &output.as_slice().unwrap()[step.rows.start * width..step.rows.end * width];
            std::hint::black_box(trace::step_hash(index, values, step.rows.len(), width));
        }
        best[2] = best[2].min(start.elapsed().as_secs_f64());
    }
    println!(
        "rows {} threads {threads}: run {:.1} ms, traced {:.1} ms (x{:.3}), hashing alone {:.1} ms for {:.1} MB ({:.2} GB/s)",
        batch.rows(),
        best[0] * 1e3,
        best[1] * 1e3,
        best[1] / best[0],
        best[2] * 1e3,
        bytes as f64 / 1e6,
        bytes as f64 / best[2] / 1e9
    );
    Ok(())
}

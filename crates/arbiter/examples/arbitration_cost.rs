//! What one-step arbitration costs: for a typical MiniLM embedding and a typical SmolLM2 chat
//! generation, the evidence size and the `arbitrate` time over every step of the run.
//!
//! `cargo run --release -p piazza-arbiter --example arbitration_cost`

use std::sync::Arc;
use std::time::Instant;

use piazza_arbiter::{arbitrate, run_job, JobRun, JobSpec, LoadedModel, TraceClaim};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let minilm = piazza_engine::Embedder::load(piazza_engine::models_dir().join("minilm"))?;
    let text = "Piazza is an open network for verifiable AI inference: providers run models, \
        anyone can check one step of their work, and the ledger settles disputes by running \
        that one step itself.";
    measure(
        "MiniLM (embedding)",
        &LoadedModel::Embedding(Arc::new(minilm)),
        &JobSpec::embedding(text.as_bytes().to_vec()),
    )?;
    let smollm2 = piazza_llm::Generator::load(piazza_llm::default_model_path())?;
    let job = JobSpec {
        input: b"What is the capital of France? Answer in one sentence.".to_vec(),
        max_tokens: 16,
        chat: true,
        ..JobSpec::default()
    };
    measure(
        "SmolLM2 (chat, 16 new tokens max)",
        &LoadedModel::Generation(Arc::new(smollm2)),
        &job,
    )?;
    Ok(())
}

fn measure(
    label: &str,
    model: &LoadedModel,
    job: &JobSpec,
) -> Result<(), Box<dyn std::error::Error>> {
    let commitments = model.commitments();
    let run: JobRun = run_job(model, job, 4, None)?;
    let claim = TraceClaim {
        root: run.trace_root,
        step_count: run.step_count(),
        ids_commitment: run.ids_commitment(),
    };
    let mut sizes = Vec::new();
    let mut times_ms = Vec::new();
    for step in 0..run.step_count() {
        let evidence = run.evidence(model, step)?;
        sizes.push(evidence.encoded_len());
        let started = Instant::now();
        let leaf = arbitrate(&commitments, job, &claim, &evidence)?;
        times_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(leaf, run.leaves[step as usize], "step {step}");
    }
    let (size_max_at, size_max) = max_of(&sizes);
    let (time_max_at, time_max) = max_of(&times_ms);
    sizes.sort_unstable();
    times_ms.sort_by(f64::total_cmp);
    println!(
        "{label}: {} token ids, {} work units, {} steps",
        run.ids.len(),
        run.work_units,
        run.step_count()
    );
    println!(
        "  evidence bytes: median {}, max {} (step {size_max_at}), total {}",
        sizes[sizes.len() / 2],
        size_max,
        sizes.iter().sum::<usize>()
    );
    println!(
        "  arbitrate ms:   median {:.3}, max {:.3} (step {time_max_at}), total {:.1}",
        times_ms[times_ms.len() / 2],
        time_max,
        times_ms.iter().sum::<f64>()
    );
    Ok(())
}

fn max_of<T: PartialOrd + Copy>(values: &[T]) -> (usize, T) {
    let mut best = (0, values[0]);
    for (index, &value) in values.iter().enumerate() {
        if value > best.1 {
            best = (index, value);
        }
    }
    best
}

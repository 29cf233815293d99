//! Shared helpers: the bundled models (loaded once per test binary) and the check that honest
//! evidence arbitrates to the run's own leaf.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use piazza_arbiter::{
    arbitrate, Evidence, JobRun, JobSpec, LoadedModel, ModelCommitments, TraceClaim,
};

pub struct Model {
    pub loaded: LoadedModel,
    pub commitments: ModelCommitments,
}

fn load(loaded: LoadedModel) -> Model {
    let commitments = loaded.commitments();
    Model {
        loaded,
        commitments,
    }
}

pub fn minilm() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = piazza_engine::models_dir().join("minilm");
        let embedder = piazza_engine::Embedder::load(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-models.sh)", dir.display()));
        load(LoadedModel::Embedding(Arc::new(embedder)))
    })
}

pub fn smollm2() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = piazza_llm::default_model_path();
        let generator = piazza_llm::Generator::load(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-models.sh)", path.display()));
        load(LoadedModel::Generation(Arc::new(generator)))
    })
}

/// SmolLM2 in the quantized numeric profile (integer block dots; docs/llm.md §2.1).
pub fn smollm2_quantized() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = piazza_llm::default_model_path();
        let generator =
            piazza_llm::Generator::load_with(&path, piazza_llm::NumericProfile::Quantized)
                .unwrap_or_else(|e| {
                    panic!("{}: {e} (run scripts/fetch-models.sh)", path.display())
                });
        load(LoadedModel::Generation(Arc::new(generator)))
    })
}

pub fn claim(run: &JobRun) -> TraceClaim {
    TraceClaim {
        root: run.trace_root,
        step_count: run.step_count(),
        ids_commitment: run.ids_commitment(),
    }
}

/// A chat generation job.
pub fn chat_job(prompt: &str, max_tokens: u32, temperature_milli: u32, seed: u64) -> JobSpec {
    JobSpec {
        input: prompt.as_bytes().to_vec(),
        max_tokens,
        temperature_milli,
        seed,
        chat: true,
        ..JobSpec::default()
    }
}

/// Evidence for `step` survives encoding, and arbitrates to the run's leaf; returns the
/// evidence.
pub fn check_step(model: &Model, job: &JobSpec, run: &JobRun, step: u64, label: &str) -> Evidence {
    let evidence = run.evidence(&model.loaded, step).expect("evidence");
    let bytes = evidence.encode();
    assert_eq!(bytes.len(), evidence.encoded_len());
    let decoded = Evidence::decode(&bytes).expect("decode");
    assert_eq!(decoded, evidence, "roundtrip of step {step}");
    let started = Instant::now();
    let leaf = arbitrate(&model.commitments, job, &claim(run), &decoded)
        .unwrap_or_else(|e| panic!("{label} step {step}: {e}"));
    let elapsed = started.elapsed();
    eprintln!(
        "{label} step {step}/{}: {} leaves, {} chunks, {} evidence bytes, arbitrate {:.2} ms",
        run.step_count(),
        evidence.leaves.len(),
        evidence.chunks.len(),
        bytes.len(),
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(leaf, run.leaves[step as usize], "{label} step {step}");
    evidence
}

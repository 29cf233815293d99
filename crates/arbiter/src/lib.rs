//! One-step arbitration for the verification game (DESIGN.md §4): the evidence for one step of
//! a disputed run, and its checked re-execution with the deterministic engines.
//!
//! After the bisection game ([`tree`]) has found the first step `i` where the provider's and
//! the challenger's trace leaves differ, anyone submits an [`Evidence`] for step `i`;
//! [`arbitrate`] checks it against the model's commitments (config hash, weights
//! commitment), the job and the provider's trace root, re-executes step `i` on one thread and
//! returns the leaf hash that step must have. The ledger compares it with both parties' leaves.
//! Daemons build the evidence from their own run: [`run_job`] runs a job with recording and
//! [`JobRun::evidence`] cuts out what one step reads.
//!
//! # Invariants
//! - [`arbitrate`] is a pure function: no IO, no clock, no threads, no randomness. Its result
//!   depends only on its arguments, bit for bit, on every machine.
//! - Hostile evidence gives an [`ArbiterError`], never a panic: [`Evidence::decode`] is bounded
//!   by [`EVIDENCE_BYTES_MAX`], and every size is checked against the graph rebuilt from the
//!   committed configuration before anything is allocated from it.
//! - Re-execution goes through the engines' own arithmetic (`piazza_engine::graph::apply` /
//!   `embed`, `piazza_llm::compute_block`); partial weights (linear rows, gathered table rows)
//!   give the same bits as whole ones.
//! - Evidence for step `i` opens only leaves `< i`, which both parties agreed on; so an honest
//!   evidence makes [`arbitrate`] return the honest leaf whichever party built it.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use piazza_arbiter::{arbitrate, run_job, JobSpec, LoadedModel, ModelCommitments, TraceClaim};
//!
//! let embedder = piazza_engine::Embedder::load(piazza_engine::models_dir().join("minilm"))?;
//! let model = LoadedModel::Embedding(Arc::new(embedder));
//! let job = JobSpec::embedding(b"Hello world".to_vec());
//! let run = run_job(&model, &job, 2, None)?;
//! let claim = TraceClaim { root: run.trace_root, step_count: run.step_count(), ids_commitment: run.ids_commitment() };
//! let evidence = run.evidence(&model, 5)?;
//! let leaf = arbitrate(&model.commitments(), &job, &claim, &evidence)?;
//! assert_eq!(leaf, run.leaves[5]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod arbitrate;
pub mod constraint;
mod evidence;
mod input;
mod plan;
mod run;
pub mod tokens;
/// The trace tree's shape, as the bisection game walks it (lives in piazza-trace, which the
/// ledger can link without the ML stack).
pub use piazza_trace::tree;

pub use arbitrate::{arbitrate, arbitrate_with, step_count_fits, LeafCheck};
pub use evidence::{ChunkOpening, Evidence, LeafOpening, EVIDENCE_BYTES_MAX, SIBLINGS_MAX};
pub use input::{arbitrate_ids, input_evidence, InputVerdict};
pub use run::{
    execute, execute_streaming, execute_until, prompt_ids, run_job, JobOutput, JobRun, LoadedModel,
};

pub type Hash = [u8; 32];

/// Domain of [`config_hash`] (the model record's config hash).
pub const CONFIG_HASH_DOMAIN: &str = "piazza/model-config";
/// Domain of [`ids_commitment`].
pub const IDS_DOMAIN: &str = "piazza/job-ids";

/// The model family, which fixes the graph and the config encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// BERT sentence embeddings (piazza-engine); config: `config.json` bytes.
    Bert,
    /// Llama-family generation (piazza-llm); config: `LlamaConfig::canonical_bytes`.
    Llama,
}

impl Family {
    /// From a model record's architecture: `"bert"` or `"llama"`.
    pub fn from_architecture(architecture: &str) -> Option<Family> {
        match architecture {
            "bert" => Some(Family::Bert),
            "llama" => Some(Family::Llama),
            _ => None,
        }
    }
}

/// What the chain's model record commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelCommitments {
    pub family: Family,
    pub config_hash: Hash,
    pub weights_commitment: Hash,
    pub tokenizer_hash: Hash,
}

/// A job as the chain holds it (the ledger converts its compute job parameters into this).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobSpec {
    pub input: Vec<u8>,
    pub max_tokens: u32,
    pub temperature_milli: u32,
    pub top_k: u32,
    pub top_p_milli: u32,
    pub repetition_penalty_milli: u32,
    pub seed: u64,
    pub chat: bool,
    pub stop: Vec<String>,
}

impl JobSpec {
    /// An embedding job over `input` (the generation fields are unused).
    pub fn embedding(input: Vec<u8>) -> JobSpec {
        JobSpec {
            input,
            ..JobSpec::default()
        }
    }
}

/// The engine's generation parameters from a job's integer parameters (thousandths → f32 by
/// one correctly rounded division, the same on every machine; 0 means the default for top-p
/// and the repetition penalty).
pub fn generate_params(job: &JobSpec) -> piazza_llm::GenerateParams {
    let milli = |v: u32, default: f32| if v == 0 { default } else { v as f32 / 1000.0 };
    piazza_llm::GenerateParams {
        max_tokens: job.max_tokens.max(1) as usize,
        sampling: piazza_llm::SamplingParams {
            temperature: job.temperature_milli as f32 / 1000.0,
            top_k: job.top_k,
            top_p: milli(job.top_p_milli, 1.0),
            repetition_penalty: milli(job.repetition_penalty_milli, 1.0),
            seed: job.seed,
        },
        stop: job.stop.clone(),
        stop_at_eos: true,
    }
}

/// BLAKE3 over `(domain length u32 LE ‖ domain ‖ parts…)`: the chain's domain-tagged hash.
fn tagged_hash(domain: &str, parts: &[&[u8]]) -> Hash {
    piazza_primitives::Hash::of(domain, parts).0
}

/// The commitment to the token ids a run used (embedding: the text's ids; generation: the
/// prompt ids after the chat template): [`IDS_DOMAIN`]-tagged BLAKE3 over the count (u64 LE)
/// and each id (u32 LE).
pub fn ids_commitment(ids: &[u32]) -> Hash {
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    tagged_hash(IDS_DOMAIN, &[&(ids.len() as u64).to_le_bytes(), &bytes])
}

/// A model record's config hash: [`CONFIG_HASH_DOMAIN`]-tagged BLAKE3 over the config bytes
/// (bert: `config.json`; llama: `LlamaConfig::canonical_bytes`).
pub fn config_hash(config_bytes: &[u8]) -> Hash {
    tagged_hash(CONFIG_HASH_DOMAIN, &[config_bytes])
}

/// The trace a dispute is about: the provider's committed root, and the step count and ids
/// commitment both parties agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceClaim {
    pub root: Hash,
    pub step_count: u64,
    pub ids_commitment: Hash,
}

/// Why evidence was rejected or a job could not run. The messages appear in ledger errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArbiterError {
    #[error("evidence encoding: {0}")]
    Encoding(String),
    #[error("config bytes do not hash to the model's config hash")]
    ConfigHash,
    #[error("config: {0}")]
    Config(String),
    #[error("manifest and chunk root do not hash to the model's weights commitment")]
    WeightsCommitment,
    #[error("weight manifest: {0}")]
    Manifest(String),
    #[error("token ids do not match the trace's ids commitment")]
    IdsCommitment,
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("job: {0}")]
    Job(String),
    #[error("no graph of this job has the claimed {claim} steps ({detail})")]
    StepCount { claim: u64, detail: String },
    #[error("step {step} is not below the step count {count}")]
    StepOutOfRange { step: u64, count: u64 },
    #[error("leaf openings: {0}")]
    Leaves(String),
    #[error("leaf opening {index}: {detail}")]
    LeafOpening { index: u64, detail: String },
    #[error("weight chunks: {0}")]
    Chunks(String),
    #[error("weight chunk {index}: {detail}")]
    ChunkOpening { index: u64, detail: String },
    #[error("re-execution: {0}")]
    Execution(String),
    #[error("model: {0}")]
    Model(String),
}

//! Loading the models a provider serves, checked against their on-chain records, and running
//! one job on them.

use crate::ProviderError;
use piazza_api::{JobParamsInfo, ModelInfo};
use piazza_arbiter::JobSpec;
use piazza_engine::Embedder;
use piazza_primitives::Hash;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use piazza_arbiter::{generate_params, LoadedModel};

/// What a provider posts for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub output: Vec<u8>,
    pub trace_root: Hash,
    pub work_units: u64,
}

/// Where a model's files live under the models directory, by architecture.
pub fn local_path(
    models_dir: &Path,
    record: &ModelInfo,
) -> Result<std::path::PathBuf, ProviderError> {
    match record.architecture.as_str() {
        "bert" => Ok(models_dir.join("minilm")),
        "llama" => Ok(models_dir.join("smollm2").join(SMOLLM2_FILE)),
        other => Err(ProviderError::Model(format!(
            "`{}`: no local engine for architecture `{other}`",
            record.name
        ))),
    }
}

/// Models this process has loaded, by file: the devnet's genesis, its provider and its auditor
/// share one copy of each (models are immutable once loaded).
static LOADED: std::sync::OnceLock<std::sync::Mutex<BTreeMap<PathBuf, LoadedModel>>> =
    std::sync::OnceLock::new();

fn loaded() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, LoadedModel>> {
    LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The model in `path`, loaded once per process.
fn load_file(path: &Path, generation: bool) -> Result<LoadedModel, ProviderError> {
    if let Some(model) = loaded().get(path) {
        return Ok(model.clone());
    }
    let loading = |e: String| ProviderError::Model(format!("loading {}: {e}", path.display()));
    let model = if generation {
        LoadedModel::Generation(Arc::new(
            piazza_llm::Generator::load(path).map_err(|e| loading(e.to_string()))?,
        ))
    } else {
        LoadedModel::Embedding(Arc::new(
            Embedder::load(path).map_err(|e| loading(e.to_string()))?,
        ))
    };
    Ok(loaded().entry(path.to_path_buf()).or_insert(model).clone())
}

/// Loads `record`'s model and checks its weights commitment and tokenizer hash against the
/// chain's record: a provider never serves weights the chain did not name.
pub fn load(models_dir: &Path, record: &ModelInfo) -> Result<LoadedModel, ProviderError> {
    let path = local_path(models_dir, record)?;
    let model = load_file(&path, record.architecture == "llama")?;
    let (weights, tokenizer) = match &model {
        LoadedModel::Generation(generator) => (
            hex(&generator.weights_commitment().root),
            hex(&generator.tokenizer_hash()),
        ),
        LoadedModel::Embedding(embedder) => (
            hex(&embedder.weights_commitment()),
            hex(&embedder.tokenizer_hash()),
        ),
    };
    if weights != record.weights_commitment || tokenizer != record.tokenizer_hash {
        return Err(ProviderError::Model(format!(
            "`{}`: local weights {weights} / tokenizer {tokenizer} differ from the chain's {} / {}",
            record.name, record.weights_commitment, record.tokenizer_hash
        )));
    }
    Ok(model)
}

fn hex(bytes: &[u8; 32]) -> String {
    Hash(*bytes).to_hex()
}

/// Runs one job (through [`piazza_arbiter::run_job`], which keeps the recording a dispute
/// needs). Inputs that are not UTF-8 are read lossily, so every input has exactly one output.
pub fn execute(
    model: &LoadedModel,
    input: &[u8],
    params: &JobParamsInfo,
    threads: usize,
) -> Result<Execution, ProviderError> {
    execute_until(
        model,
        input,
        params,
        threads,
        &std::sync::atomic::AtomicBool::new(false),
    )
}

/// [`execute`] that a generation abandons once `cancel` is set.
pub fn execute_until(
    model: &LoadedModel,
    input: &[u8],
    params: &JobParamsInfo,
    threads: usize,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Execution, ProviderError> {
    let result = piazza_arbiter::execute_until(model, &job_spec(input, params), threads, cancel)
        .map_err(|e| ProviderError::Model(e.to_string()))?;
    Ok(Execution {
        output: result.output,
        trace_root: Hash(result.trace_root),
        work_units: result.work_units,
    })
}

/// A job as the arbiter reads it.
pub fn job_spec(input: &[u8], params: &JobParamsInfo) -> JobSpec {
    JobSpec {
        input: input.to_vec(),
        max_tokens: params.max_tokens,
        temperature_milli: params.temperature_milli,
        top_k: params.top_k,
        top_p_milli: params.top_p_milli,
        repetition_penalty_milli: params.repetition_penalty_milli,
        seed: params.seed,
        chat: params.chat,
        stop: params.stop.clone(),
    }
}

/// A chat job's input: a JSON array of `{role, content}` messages, or plain text for one user
/// message.
pub fn chat_messages(input: &str) -> Vec<piazza_llm::Message> {
    piazza_llm::tokenizer::chat_messages_from_input(input)
}

/// The bundled generation model's file under the models directory.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The on-chain name of the bundled generation model.
pub const SMOLLM2: &str = "smollm2-135m-instruct";

/// The chain record of the bundled SmolLM2 (config hash: of the canonical `LlamaConfig`
/// bytes, which the arbiter reads).
pub fn smollm2_record(
    models_dir: &Path,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    let path = models_dir.join("smollm2").join(SMOLLM2_FILE);
    let LoadedModel::Generation(generator) = load_file(&path, true)
        .map_err(|e| ProviderError::Model(format!("{e} (run scripts/fetch-models.sh)")))?
    else {
        return Err(ProviderError::Model(format!(
            "{} is not a generation model",
            path.display()
        )));
    };
    let config = generator.config().canonical_bytes();
    Ok(piazza_ledger::models::ModelRecord {
        name: SMOLLM2.into(),
        kind: piazza_ledger::models::ModelKind::Generation,
        architecture: "llama".into(),
        config_hash: Hash(piazza_arbiter::config_hash(&config)),
        weights_commitment: Hash(generator.weights_commitment().root),
        tokenizer_hash: Hash(generator.tokenizer_hash()),
        owner,
        license: "apache-2.0".into(),
        price_floor: piazza_primitives::Amount::new(1_000),
    })
}

/// An embedding as a job output: little-endian f32s.
pub fn embedding_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The inverse of [`embedding_bytes`]; `None` unless the length is a multiple of 4.
pub fn embedding_from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes.len().is_multiple_of(4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// The chain record of the bundled MiniLM, computed from its files (the devnet's genesis uses
/// it). The config hash is BLAKE3 of `config.json`'s bytes.
pub fn minilm_record(
    models_dir: &Path,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    let dir = models_dir.join("minilm");
    let LoadedModel::Embedding(embedder) = load_file(&dir, false)
        .map_err(|e| ProviderError::Model(format!("{e} (run scripts/fetch-models.sh)")))?
    else {
        return Err(ProviderError::Model(format!(
            "{} is not an embedding model",
            dir.display()
        )));
    };
    let config = std::fs::read(dir.join("config.json"))?;
    Ok(piazza_ledger::models::ModelRecord {
        name: MINILM.into(),
        kind: piazza_ledger::models::ModelKind::Embedding,
        architecture: "bert".into(),
        config_hash: Hash::of("piazza/model-config", &[&config]),
        weights_commitment: Hash(embedder.weights_commitment()),
        tokenizer_hash: Hash(embedder.tokenizer_hash()),
        owner,
        license: "apache-2.0".into(),
        price_floor: piazza_primitives::Amount::new(1_000),
    })
}

/// The on-chain name of the bundled sentence-embedding model.
pub const MINILM: &str = "all-minilm-l6-v2";

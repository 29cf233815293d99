//! Loading the models a provider serves, checked against their on-chain records, and running
//! one job on them.

use crate::ProviderError;
use piazza_api::{JobParamsInfo, ModelInfo};
use piazza_arbiter::JobSpec;
use piazza_engine::Embedder;
use piazza_primitives::Hash;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
    execute_until(model, input, params, threads, &AtomicBool::new(false))
}

/// [`execute`] that a generation abandons once `cancel` is set.
pub fn execute_until(
    model: &LoadedModel,
    input: &[u8],
    params: &JobParamsInfo,
    threads: usize,
    cancel: &AtomicBool,
) -> Result<Execution, ProviderError> {
    execute_streaming(model, input, params, threads, cancel, |_| {})
}

/// [`execute_until`] that hands each piece of a generation's text to `on_delta` as soon as it
/// is final (an embedding has no pieces). The pieces concatenate to the output; output, trace
/// root and work units are those of the job path (one code path: the job path is this with an
/// empty `on_delta`).
pub fn execute_streaming(
    model: &LoadedModel,
    input: &[u8],
    params: &JobParamsInfo,
    threads: usize,
    cancel: &AtomicBool,
    mut on_delta: impl FnMut(&str),
) -> Result<Execution, ProviderError> {
    let spec = job_spec(input, params);
    let model_error = |e: String| ProviderError::Model(e);
    let LoadedModel::Generation(generator) = model else {
        let result = piazza_arbiter::execute_until(model, &spec, threads, cancel)
            .map_err(|e| model_error(e.to_string()))?;
        return Ok(Execution {
            output: result.output,
            trace_root: Hash(result.trace_root),
            work_units: result.work_units,
        });
    };
    let text = String::from_utf8_lossy(input);
    let prompt = if spec.chat {
        piazza_llm::chat_prompt_ids(generator, &chat_messages(&text))
    } else {
        generator.tokenize(&text)
    }
    .map_err(|e| model_error(e.to_string()))?;
    let generation = generator
        .generate_until(
            &prompt,
            &generate_params(&spec),
            threads,
            |event| {
                if !event.text.is_empty() {
                    on_delta(&event.text)
                }
            },
            cancel,
        )
        .map_err(|e| model_error(e.to_string()))?;
    Ok(Execution {
        output: generation.text.into_bytes(),
        trace_root: Hash(generation.trace.root),
        work_units: generation.ids.len() as u64,
    })
}

/// Most text pieces waiting for a reader of [`stream`]; past it, pieces are joined into one
/// (nothing is lost, and the engine never waits on a slow reader).
pub const DELTAS_QUEUED_MAX: usize = 64;

/// A generation running on its own thread: text pieces as they are produced, then the result.
pub struct Streaming {
    /// Pieces of text in order, at most [`DELTAS_QUEUED_MAX`] queued; closed when the run ends.
    /// What they leave out at the end (the channel was full) is [`Streaming::tail`].
    pub deltas: tokio::sync::mpsc::Receiver<String>,
    /// The run's result (cancelled runs end with an error).
    pub done: tokio::task::JoinHandle<Result<Execution, ProviderError>>,
    /// Set to stop the generation at its next token.
    pub cancel: Arc<AtomicBool>,
}

impl Streaming {
    /// The part of `output` after the `received_bytes` already read from `deltas`: the pieces
    /// always form a prefix of the output, so a reader that was slow still gets all of it.
    pub fn tail(output: &[u8], received_bytes: usize) -> String {
        String::from_utf8_lossy(output.get(received_bytes..).unwrap_or_default()).into_owned()
    }
}

/// Starts [`execute_streaming`] on a blocking thread, its pieces sent into a bounded channel.
/// A full channel never blocks the engine: the pieces it could not take are joined and sent
/// with the next one; a reader that hangs up cancels the run at its next token.
pub fn stream(
    model: LoadedModel,
    input: Vec<u8>,
    params: JobParamsInfo,
    threads: usize,
) -> Streaming {
    let (sender, deltas) = tokio::sync::mpsc::channel(DELTAS_QUEUED_MAX);
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut pending = String::new();
        execute_streaming(&model, &input, &params, threads, &flag, |piece| {
            pending.push_str(piece);
            match sender.try_send(std::mem::take(&mut pending)) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(text)) => pending = text,
                // Nobody reads the text any more: stop at the next token.
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    flag.store(true, Ordering::Relaxed)
                }
            }
        })
    });
    Streaming {
        deltas,
        done,
        cancel,
    }
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

/// A chat job's input: the canonical chat encoding (`piazza_primitives::chat::ChatInput`), or
/// anything else as one user message.
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
    generation_record(&path, SMOLLM2, owner)
}

/// The chain record of the generation model in the GGUF file `path` (which carries its
/// tokenizer and config).
fn generation_record(
    path: &Path,
    name: &str,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    let LoadedModel::Generation(generator) = load_file(path, true)
        .map_err(|e| ProviderError::Model(format!("{e} (run scripts/fetch-models.sh)")))?
    else {
        return Err(ProviderError::Model(format!(
            "{} is not a generation model",
            path.display()
        )));
    };
    let config = generator.config().canonical_bytes();
    Ok(piazza_ledger::models::ModelRecord {
        name: name.into(),
        kind: piazza_ledger::models::ModelKind::Generation,
        architecture: "llama".into(),
        config_hash: Hash(piazza_arbiter::config_hash(&config)),
        weights_commitment: Hash(generator.weights_commitment().root),
        tokenizer_hash: Hash(generator.tokenizer_hash()),
        owner,
        license: "apache-2.0".into(),
        price_floor: piazza_primitives::Amount::new(1_000),
        numeric: Default::default(),
        files: None,
        lineage: Default::default(),
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
    embedding_record(&models_dir.join("minilm"), MINILM, owner)
}

/// The chain record of the embedding model in `dir` (`model.safetensors`, `tokenizer.json`,
/// `config.json`).
fn embedding_record(
    dir: &Path,
    name: &str,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    let LoadedModel::Embedding(embedder) = load_file(dir, false)
        .map_err(|e| ProviderError::Model(format!("{e} (run scripts/fetch-models.sh)")))?
    else {
        return Err(ProviderError::Model(format!(
            "{} is not an embedding model",
            dir.display()
        )));
    };
    let config = std::fs::read(dir.join(EMBEDDING_CONFIG_FILE))?;
    Ok(piazza_ledger::models::ModelRecord {
        name: name.into(),
        kind: piazza_ledger::models::ModelKind::Embedding,
        architecture: "bert".into(),
        config_hash: Hash::of("piazza/model-config", &[&config]),
        weights_commitment: Hash(embedder.weights_commitment()),
        tokenizer_hash: Hash(embedder.tokenizer_hash()),
        owner,
        license: "apache-2.0".into(),
        price_floor: piazza_primitives::Amount::new(1_000),
        numeric: Default::default(),
        files: None,
        lineage: Default::default(),
    })
}

/// An embedding model's file names in its directory: weights, tokenizer, config.
pub const EMBEDDING_WEIGHTS_FILE: &str = "model.safetensors";
pub const EMBEDDING_TOKENIZER_FILE: &str = "tokenizer.json";
pub const EMBEDDING_CONFIG_FILE: &str = "config.json";

/// Where a model's three files lie before publishing. A GGUF generation model carries its
/// tokenizer and config: its three paths are the one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
    pub config: PathBuf,
}

/// The chain record (name, kind, architecture, config hash, weights commitment, tokenizer
/// hash; `files` unset) of the model in `paths`, computed exactly as a provider computes it
/// when it loads the model: the record a provider serving these files will accept.
pub fn record_of_files(
    name: &str,
    kind: piazza_ledger::models::ModelKind,
    paths: &ModelPaths,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    match kind {
        piazza_ledger::models::ModelKind::Generation => {
            if paths.tokenizer != paths.weights || paths.config != paths.weights {
                return Err(ProviderError::Model(
                    "a generation model is one GGUF file carrying its tokenizer and config: \
                     give no separate tokenizer or config"
                        .into(),
                ));
            }
            generation_record(&paths.weights, name, owner)
        }
        piazza_ledger::models::ModelKind::Embedding => {
            // The engine reads a directory with fixed names: the files are linked (or copied)
            // into a fresh one.
            let dir = tempfile::tempdir()?;
            for (from, to) in [
                (&paths.weights, EMBEDDING_WEIGHTS_FILE),
                (&paths.tokenizer, EMBEDDING_TOKENIZER_FILE),
                (&paths.config, EMBEDDING_CONFIG_FILE),
            ] {
                let to = dir.path().join(to);
                if std::fs::hard_link(from, &to).is_err() {
                    std::fs::copy(from, &to).map_err(|e| {
                        ProviderError::Model(format!("reading {}: {e}", from.display()))
                    })?;
                }
            }
            let record = embedding_record(dir.path(), name, owner);
            // The loaded copy is keyed by a path that is about to disappear.
            loaded().remove(dir.path());
            record
        }
    }
}

/// The on-chain name of the bundled sentence-embedding model.
pub const MINILM: &str = "all-minilm-l6-v2";

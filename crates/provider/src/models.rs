//! Loading the models a provider serves, checked against their on-chain records, and running
//! one job on them.

use crate::ProviderError;
use piazza_api::{JobParamsInfo, ModelInfo};
use piazza_arbiter::{Family, JobSpec};
use piazza_client::Client;
use piazza_llm::NumericProfile;
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

/// Where fetched model files are kept under the models directory: one file per blob, named by
/// its blob id (hex), and for an embedding model a directory of links to its three blobs.
pub const BLOB_CACHE_DIR: &str = "blobs";
/// Most local files or directories tried for one record before the search gives up.
pub const LOCAL_CANDIDATES_MAX: usize = 64;
/// Deepest directory level under the models directory searched for local files.
const LOCAL_SEARCH_DEPTH_MAX: usize = 3;

/// The numeric profile a record names (`f32`, or `quantized`: integer block dots over the
/// quantized weights). An empty name is f32, the profile of records made before profiles.
pub fn numeric_profile(record: &ModelInfo) -> Result<NumericProfile, ProviderError> {
    match record.numeric.as_str() {
        "" | "f32" => Ok(NumericProfile::F32),
        "quantized" => Ok(NumericProfile::Quantized),
        other => Err(ProviderError::Model(format!(
            "`{}`: unknown numeric profile `{other}`",
            record.name
        ))),
    }
}

fn family(record: &ModelInfo) -> Result<Family, ProviderError> {
    Family::from_architecture(&record.architecture).ok_or_else(|| {
        ProviderError::Model(format!(
            "`{}`: no local engine for architecture `{}`",
            record.name, record.architecture
        ))
    })
}

/// A loaded model's key: its file and its profile (one file loads as f32 and as quantized).
type LoadedKey = (PathBuf, bool);

fn loaded_key(path: &Path, profile: NumericProfile) -> LoadedKey {
    (path.to_path_buf(), profile == NumericProfile::Quantized)
}

/// Models this process has loaded, by file and profile: the devnet's genesis, its provider and
/// its auditor share one copy of each (models are immutable once loaded).
static LOADED: std::sync::OnceLock<std::sync::Mutex<BTreeMap<LoadedKey, LoadedModel>>> =
    std::sync::OnceLock::new();

fn loaded() -> std::sync::MutexGuard<'static, BTreeMap<LoadedKey, LoadedModel>> {
    LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The model in `path`, loaded once per process and profile.
fn load_file(
    path: &Path,
    family: Family,
    profile: NumericProfile,
) -> Result<LoadedModel, ProviderError> {
    let key = loaded_key(path, profile);
    if let Some(model) = loaded().get(&key) {
        return Ok(model.clone());
    }
    let model = LoadedModel::load(family, path, profile)
        .map_err(|e| ProviderError::Model(e.to_string()))?;
    Ok(loaded().entry(key).or_insert(model).clone())
}

/// Where the blob `id` is cached under `models_dir`.
pub fn cached_blob_path(models_dir: &Path, id: &str) -> PathBuf {
    models_dir.join(BLOB_CACHE_DIR).join(id)
}

/// The cached copy of `record`'s files, when its blobs are all cached: the GGUF blob (llama),
/// or a directory of links to the three blobs under the names the engine reads (bert).
fn cached_candidate(models_dir: &Path, record: &ModelInfo, family: Family) -> Option<PathBuf> {
    let files = record.files.as_ref()?;
    let blob = |id: &str| Some(cached_blob_path(models_dir, id)).filter(|p| p.is_file());
    let weights = blob(&files.weights)?;
    if family == Family::Llama {
        return Some(weights);
    }
    let (tokenizer, config) = (blob(&files.tokenizer)?, blob(&files.config)?);
    let name = Hash::of(
        "piazza/model-blobs",
        &[
            files.weights.as_bytes(),
            files.tokenizer.as_bytes(),
            files.config.as_bytes(),
        ],
    );
    let dir = models_dir
        .join(BLOB_CACHE_DIR)
        .join(format!("embedding-{}", name.to_hex()));
    if dir.is_dir() {
        return Some(dir);
    }
    link_embedding_dir(&dir, &weights, &tokenizer, &config)
        .map_err(|e| tracing::warn!(dir = %dir.display(), error = %e, "cannot link cached blobs"))
        .ok()
        .map(|()| dir)
}

/// Makes `dir` hold links to an embedding model's three files under the engine's names: built
/// beside it under a temporary name, then renamed into place whole.
fn link_embedding_dir(
    dir: &Path,
    weights: &Path,
    tokenizer: &Path,
    config: &Path,
) -> std::io::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let building = tempfile::tempdir_in(parent)?;
    for (from, to) in [
        (weights, EMBEDDING_WEIGHTS_FILE),
        (tokenizer, EMBEDDING_TOKENIZER_FILE),
        (config, EMBEDDING_CONFIG_FILE),
    ] {
        let to = building.path().join(to);
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to)?;
        }
    }
    let building = building.keep();
    std::fs::rename(&building, dir).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&building);
    })
}

/// The local files that may hold `record`'s model: its cached blobs first, then every GGUF
/// file (llama) or directory holding `model.safetensors` (bert) under `models_dir`, at most
/// [`LOCAL_CANDIDATES_MAX`], in name order.
fn local_candidates(models_dir: &Path, record: &ModelInfo, family: Family) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = cached_candidate(models_dir, record, family)
        .into_iter()
        .collect();
    let mut level = vec![models_dir.to_path_buf()];
    for _ in 0..LOCAL_SEARCH_DEPTH_MAX {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for path in entries {
                if path == models_dir.join(BLOB_CACHE_DIR) {
                    continue;
                }
                let candidate = match family {
                    Family::Llama => {
                        path.is_file() && path.extension().is_some_and(|e| e == "gguf")
                    }
                    Family::Bert => path.join(EMBEDDING_WEIGHTS_FILE).is_file(),
                };
                if candidate && !found.contains(&path) {
                    found.push(path.clone());
                }
                if path.is_dir() {
                    next.push(path);
                }
            }
        }
        level = next;
    }
    found.truncate(LOCAL_CANDIDATES_MAX);
    found
}

/// Whether `model` is what `record` names: weights commitment, tokenizer hash and config hash
/// equal. `Err` says how they differ.
fn check_against(model: &LoadedModel, record: &ModelInfo) -> Result<(), String> {
    let commitments = model.commitments();
    let (weights, tokenizer, config) = (
        hex(&commitments.weights_commitment),
        hex(&commitments.tokenizer_hash),
        hex(&commitments.config_hash),
    );
    if weights == record.weights_commitment
        && tokenizer == record.tokenizer_hash
        && config == record.config_hash
    {
        return Ok(());
    }
    Err(format!(
        "weights {weights} / tokenizer {tokenizer} / config {config} differ from the chain's {} / {} / {}",
        record.weights_commitment, record.tokenizer_hash, record.config_hash
    ))
}

/// Loads `record`'s model from a local file whose weights commitment, tokenizer hash and
/// config hash equal the record's (whatever the file's name or the record's: a fine-tune
/// registered under its own name with the same weights is served from the same file), in the
/// numeric profile the record names. A provider never serves weights the chain did not name.
/// [`resolve`] also fetches the files from storage when none matches.
pub fn load(models_dir: &Path, record: &ModelInfo) -> Result<LoadedModel, ProviderError> {
    let (family, profile) = (family(record)?, numeric_profile(record)?);
    let candidates = local_candidates(models_dir, record, family);
    let mut refused = Vec::new();
    for path in &candidates {
        let checked = load_file(path, family, profile).and_then(|model| {
            check_against(&model, record).map(|()| model).map_err(|e| {
                // Not this record's: a cached copy that was tampered with is never kept.
                loaded().remove(&loaded_key(path, profile));
                ProviderError::Model(e)
            })
        });
        match checked {
            Ok(model) => return Ok(model),
            Err(e) => refused.push(format!("{}: {e}", path.display())),
        }
    }
    Err(ProviderError::Model(format!(
        "`{}`: no local file under {} holds the chain's model ({} tried{}{})",
        record.name,
        models_dir.display(),
        candidates.len(),
        if refused.is_empty() { "" } else { ": " },
        refused.join("; ")
    )))
}

/// Most bytes of one model file fetched from storage.
pub const MODEL_FILE_BYTES_MAX: u64 = 8 << 30;

/// Loads `record`'s model as [`load`] does and, when no local file holds it and the record
/// names its blobs, fetches each missing blob from any `k` storage providers (checked against
/// its blob id), keeps it in the content-addressed cache under `models_dir` (written under a
/// temporary name, synced, then renamed: a partial download is never seen), and loads it,
/// checked against the record's commitments before use. A cached blob that no longer matches
/// its id is fetched again.
pub async fn resolve(
    client: &Client,
    models_dir: &Path,
    record: &ModelInfo,
) -> Result<LoadedModel, ProviderError> {
    let local = {
        let (dir, record) = (models_dir.to_path_buf(), record.clone());
        tokio::task::spawn_blocking(move || load(&dir, &record))
            .await
            .map_err(|e| ProviderError::Model(e.to_string()))?
    };
    let not_local = match local {
        Ok(model) => return Ok(model),
        Err(e) => e,
    };
    let Some(files) = &record.files else {
        return Err(not_local);
    };
    tracing::info!(model = %record.name, "no local file holds the model; fetching it from storage");
    let mut ids = vec![&files.weights, &files.tokenizer, &files.config];
    ids.dedup();
    for id in ids {
        fetch_blob(client, models_dir, id).await?;
    }
    let (dir, record) = (models_dir.to_path_buf(), record.clone());
    tokio::task::spawn_blocking(move || load(&dir, &record))
        .await
        .map_err(|e| ProviderError::Model(e.to_string()))?
}

/// Blob `id` in the cache under `models_dir`, fetched from storage unless a cached copy
/// matches the id.
async fn fetch_blob(
    client: &Client,
    models_dir: &Path,
    id: &str,
) -> Result<PathBuf, ProviderError> {
    let blob_id: Hash = id
        .parse()
        .map_err(|_| ProviderError::Model(format!("`{id}` is not a blob id")))?;
    let path = cached_blob_path(models_dir, &blob_id.to_hex());
    let cached = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || cached_matches(&path, &blob_id))
            .await
            .map_err(|e| ProviderError::Model(e.to_string()))?
    };
    if cached {
        return Ok(path);
    }
    let started = std::time::Instant::now();
    let bytes = piazza_storage_daemon::rpc::get_blob(client, &blob_id)
        .await
        .map_err(|e| ProviderError::Model(format!("fetching blob {blob_id}: {e}")))?;
    if bytes.len() as u64 > MODEL_FILE_BYTES_MAX {
        return Err(ProviderError::Model(format!(
            "blob {blob_id} is {} bytes, over {MODEL_FILE_BYTES_MAX}",
            bytes.len()
        )));
    }
    let len_bytes = bytes.len();
    let target = path.clone();
    tokio::task::spawn_blocking(move || write_atomically(&target, &bytes))
        .await
        .map_err(|e| ProviderError::Model(e.to_string()))??;
    tracing::info!(
        blob = %blob_id,
        len_bytes,
        ms = started.elapsed().as_millis() as u64,
        "model file fetched from storage and checked against its blob id"
    );
    Ok(path)
}

/// Whether the file at `path` exists and its bytes hash to blob `id` (a copy that does not is
/// removed).
fn cached_matches(path: &Path, id: &Hash) -> bool {
    let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
        return false;
    };
    let matches = len <= MODEL_FILE_BYTES_MAX
        && std::fs::read(path).is_ok_and(|bytes| piazza_primitives::blob::blob_id(&bytes) == *id);
    if !matches {
        tracing::warn!(path = %path.display(), "cached blob does not match its id; fetching it again");
        let _ = std::fs::remove_file(path);
    }
    matches
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it into place and syncs
/// the directory: the file is whole under its name or absent.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
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
/// root and work units are those of the job path (one code path:
/// [`piazza_arbiter::execute_streaming`], which the job path runs with an empty `on_delta`).
pub fn execute_streaming(
    model: &LoadedModel,
    input: &[u8],
    params: &JobParamsInfo,
    threads: usize,
    cancel: &AtomicBool,
    on_delta: impl FnMut(&str),
) -> Result<Execution, ProviderError> {
    let result = piazza_arbiter::execute_streaming(
        model,
        &job_spec(input, params),
        threads,
        cancel,
        on_delta,
    )
    .map_err(|e| ProviderError::Model(e.to_string()))?;
    Ok(Execution {
        output: result.output,
        trace_root: Hash(result.trace_root),
        work_units: result.work_units,
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

/// The on-chain name of the bundled SmolLM2 in the quantized numeric profile (integer block
/// dots over the Q4_1 weights as stored: the same file, its own record and commitment).
pub const SMOLLM2_QUANTIZED: &str = "smollm2-135m-instruct-q";

/// The chain record of the bundled SmolLM2 (config hash: of the canonical `LlamaConfig`
/// bytes, which the arbiter reads).
pub fn smollm2_record(
    models_dir: &Path,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    let path = models_dir.join("smollm2").join(SMOLLM2_FILE);
    record_of_model(&path, Family::Llama, NumericProfile::F32, SMOLLM2, owner)
}

/// The chain record of the bundled SmolLM2 in the quantized numeric profile.
pub fn smollm2_quantized_record(
    models_dir: &Path,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    let path = models_dir.join("smollm2").join(SMOLLM2_FILE);
    record_of_model(
        &path,
        Family::Llama,
        NumericProfile::Quantized,
        SMOLLM2_QUANTIZED,
        owner,
    )
}

/// The files of the bundled model `name` under `models_dir`, if it is one.
pub fn bundled_paths(models_dir: &Path, name: &str) -> Option<ModelPaths> {
    match name {
        MINILM => {
            let dir = models_dir.join("minilm");
            Some(ModelPaths {
                weights: dir.join(EMBEDDING_WEIGHTS_FILE),
                tokenizer: dir.join(EMBEDDING_TOKENIZER_FILE),
                config: dir.join(EMBEDDING_CONFIG_FILE),
            })
        }
        SMOLLM2 | SMOLLM2_QUANTIZED => {
            let file = models_dir.join("smollm2").join(SMOLLM2_FILE);
            Some(ModelPaths {
                weights: file.clone(),
                tokenizer: file.clone(),
                config: file,
            })
        }
        _ => None,
    }
}

/// The chain record of the bundled model `name` (see [`bundled_paths`]).
pub fn bundled_record(
    models_dir: &Path,
    name: &str,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    match name {
        MINILM => minilm_record(models_dir, owner),
        SMOLLM2 => smollm2_record(models_dir, owner),
        SMOLLM2_QUANTIZED => smollm2_quantized_record(models_dir, owner),
        other => Err(ProviderError::Config(format!(
            "no bundled model `{other}` (bundled: {MINILM}, {SMOLLM2}, {SMOLLM2_QUANTIZED})"
        ))),
    }
}

/// The chain record named `name` of the model at `path` (a GGUF file carrying its tokenizer
/// and config, or an embedding model's directory) in numeric profile `profile`: its
/// commitments as a provider computes them when it loads the same file.
fn record_of_model(
    path: &Path,
    family: Family,
    profile: NumericProfile,
    name: &str,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    use piazza_ledger::models::{ModelKind, NumericProfile as Numeric};
    let model = load_file(path, family, profile)
        .map_err(|e| ProviderError::Model(format!("{e} (run scripts/fetch-models.sh)")))?;
    let commitments = model.commitments();
    let (kind, architecture) = match family {
        Family::Bert => (ModelKind::Embedding, "bert"),
        Family::Llama => (ModelKind::Generation, "llama"),
    };
    Ok(piazza_ledger::models::ModelRecord {
        name: name.into(),
        kind,
        architecture: architecture.into(),
        config_hash: Hash(commitments.config_hash),
        weights_commitment: Hash(commitments.weights_commitment),
        tokenizer_hash: Hash(commitments.tokenizer_hash),
        owner,
        license: "apache-2.0".into(),
        price_floor: piazza_primitives::Amount::new(1_000),
        numeric: match profile {
            NumericProfile::F32 => Numeric::F32,
            NumericProfile::Quantized => Numeric::Quantized,
        },
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
    let dir = models_dir.join("minilm");
    record_of_model(&dir, Family::Bert, NumericProfile::F32, MINILM, owner)
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

/// The chain record (name, kind, architecture, numeric profile, config hash, weights
/// commitment, tokenizer hash; `files` unset) of the model in `paths` in profile `numeric`,
/// computed exactly as a provider computes it when it loads the model: the record a provider
/// serving these files will accept. The weights commitment depends on the profile (the
/// quantized profile commits to the weights as stored); an embedding model has only `F32`.
pub fn record_of_files(
    name: &str,
    kind: piazza_ledger::models::ModelKind,
    numeric: piazza_ledger::models::NumericProfile,
    paths: &ModelPaths,
    owner: piazza_primitives::Address,
) -> Result<piazza_ledger::models::ModelRecord, ProviderError> {
    let profile = match numeric {
        piazza_ledger::models::NumericProfile::F32 => NumericProfile::F32,
        piazza_ledger::models::NumericProfile::Quantized => NumericProfile::Quantized,
    };
    match kind {
        piazza_ledger::models::ModelKind::Generation => {
            if paths.tokenizer != paths.weights || paths.config != paths.weights {
                return Err(ProviderError::Model(
                    "a generation model is one GGUF file carrying its tokenizer and config: \
                     give no separate tokenizer or config"
                        .into(),
                ));
            }
            record_of_model(&paths.weights, Family::Llama, profile, name, owner)
        }
        piazza_ledger::models::ModelKind::Embedding => {
            if profile != NumericProfile::F32 {
                return Err(ProviderError::Model(
                    "an embedding model has only the f32 numeric profile".into(),
                ));
            }
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
            let record =
                record_of_model(dir.path(), Family::Bert, NumericProfile::F32, name, owner);
            // The loaded copy is keyed by a path that is about to disappear.
            loaded().remove(&loaded_key(dir.path(), NumericProfile::F32));
            record
        }
    }
}

/// The on-chain name of the bundled sentence-embedding model.
pub const MINILM: &str = "all-minilm-l6-v2";

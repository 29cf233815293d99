//! Loading the models a provider serves, checked against their on-chain records, and running
//! one job on them.

use crate::ProviderError;
use piazza_api::{JobParamsInfo, ModelInfo};
use piazza_engine::{Batch, Compute, Embedder};
use piazza_primitives::Hash;
use std::path::Path;
use std::sync::Arc;

/// A model ready to run.
#[derive(Clone)]
pub enum LoadedModel {
    Embedding(Arc<Embedder>),
}

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
        other => Err(ProviderError::Model(format!(
            "`{}`: no local engine for architecture `{other}`",
            record.name
        ))),
    }
}

/// Loads `record`'s model and checks its weights commitment and tokenizer hash against the
/// chain's record: a provider never serves weights the chain did not name.
pub fn load(models_dir: &Path, record: &ModelInfo) -> Result<LoadedModel, ProviderError> {
    let path = local_path(models_dir, record)?;
    let embedder = Embedder::load(&path)
        .map_err(|e| ProviderError::Model(format!("loading {}: {e}", path.display())))?;
    let (weights, tokenizer) = (
        hex(&embedder.weights_commitment()),
        hex(&embedder.tokenizer_hash()),
    );
    if weights != record.weights_commitment || tokenizer != record.tokenizer_hash {
        return Err(ProviderError::Model(format!(
            "`{}`: local weights {weights} / tokenizer {tokenizer} differ from the chain's {} / {}",
            record.name, record.weights_commitment, record.tokenizer_hash
        )));
    }
    Ok(LoadedModel::Embedding(Arc::new(embedder)))
}

fn hex(bytes: &[u8; 32]) -> String {
    Hash(*bytes).to_hex()
}

/// Runs one job. Inputs that are not UTF-8 are read lossily, so every input has exactly one
/// output.
pub fn execute(
    model: &LoadedModel,
    input: &[u8],
    _params: &JobParamsInfo,
    threads: usize,
) -> Result<Execution, ProviderError> {
    let engine = |e: piazza_engine::Error| ProviderError::Model(e.to_string());
    match model {
        LoadedModel::Embedding(embedder) => {
            let text = String::from_utf8_lossy(input);
            let tokens = embedder.tokenize(&[text.as_ref()]).map_err(engine)?;
            let work_units = tokens[0].len() as u64;
            let batch = Batch::pad(&tokens).map_err(engine)?;
            let (output, trace) = embedder
                .run_traced(&batch, Compute::new(threads))
                .map_err(engine)?;
            Ok(Execution {
                output: embedding_bytes(&output.to_vec()),
                trace_root: Hash(trace.root),
                work_units,
            })
        }
    }
}

/// An embedding as a job output: little-endian f32s.
pub fn embedding_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The inverse of [`embedding_bytes`]; `None` unless the length is a multiple of 4.
pub fn embedding_from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    (bytes.len() % 4 == 0).then(|| {
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
    let embedder = Embedder::load(&dir).map_err(|e| {
        ProviderError::Model(format!(
            "loading {}: {e} (run scripts/fetch-models.sh)",
            dir.display()
        ))
    })?;
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

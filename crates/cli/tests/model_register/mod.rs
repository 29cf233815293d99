//! `piazza model register` arguments naming a record's kind, architecture, profile and hashes.

use piazza_ledger::models::{ModelKind, ModelRecord, NumericProfile};

/// `model register --name NAME` with `record`'s kind, architecture, numeric profile and hashes
/// (its name, lineage and files are the caller's to give).
pub fn register_args(name: &str, record: &ModelRecord) -> Vec<String> {
    let kind = match record.kind {
        ModelKind::Embedding => "embedding",
        ModelKind::Generation => "generation",
    };
    let numeric = match record.numeric {
        NumericProfile::F32 => "f32",
        NumericProfile::Quantized => "quantized",
    };
    [
        "model",
        "register",
        "--name",
        name,
        "--kind",
        kind,
        "--architecture",
        &record.architecture,
        "--config-hash",
        &record.config_hash.to_hex(),
        "--weights-commitment",
        &record.weights_commitment.to_hex(),
        "--tokenizer-hash",
        &record.tokenizer_hash.to_hex(),
        "--numeric",
        numeric,
    ]
    .map(str::to_string)
    .to_vec()
}

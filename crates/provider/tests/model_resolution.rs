//! A provider finds a model by its chain record, not by its name or architecture: a local file
//! whose commitments equal the record's (a fine-tune under its own name with the same weights
//! is served from the bundled file), loaded in the numeric profile the record names; a cached
//! blob is used only while it matches, and a tampered one is refused and removed.

use piazza_api::{JobParamsInfo, ModelFilesInfo, ModelInfo};
use piazza_arbiter::LoadedModel;
use piazza_ledger::models::{ModelRecord, NumericProfile};
use piazza_primitives::Address;
use piazza_provider::models;
use std::path::Path;

/// `record` as the node lists it (the node's `convert::model_info` shape).
fn info_of(record: &ModelRecord, files: Option<ModelFilesInfo>) -> ModelInfo {
    serde_json::from_value(serde_json::json!({
        "name": record.name,
        "kind": record.kind.name(),
        "architecture": record.architecture,
        "config_hash": record.config_hash.to_hex(),
        "weights_commitment": record.weights_commitment.to_hex(),
        "tokenizer_hash": record.tokenizer_hash.to_hex(),
        "owner": record.owner.to_string(),
        "license": record.license,
        "price_floor": "1000",
        "providers": [],
        "numeric": match record.numeric {
            NumericProfile::F32 => "f32",
            NumericProfile::Quantized => "quantized",
        },
        "files": files,
    }))
    .unwrap()
}

fn quantized_record() -> ModelRecord {
    models::smollm2_quantized_record(&piazza_engine::models_dir(), Address([1; 20])).unwrap()
}

/// The trace root of a short greedy generation on `model`.
fn trace_root(model: &LoadedModel) -> piazza_primitives::Hash {
    let params = JobParamsInfo {
        max_tokens: 4,
        ..JobParamsInfo::default()
    };
    models::execute(model, b"The capital of France is", &params, 1)
        .unwrap()
        .trace_root
}

/// The bundled SmolLM2 file copied into `models_dir`'s blob cache under its blob id, with
/// `tamper` applied to its bytes first; the record's files naming that blob.
fn cache_copy(models_dir: &Path, tamper: impl FnOnce(&mut Vec<u8>)) -> ModelFilesInfo {
    let mut bytes = std::fs::read(piazza_llm::default_model_path()).unwrap();
    let id = piazza_primitives::blob::blob_id(&bytes).to_hex();
    tamper(&mut bytes);
    let path = models::cached_blob_path(models_dir, &id);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    ModelFilesInfo {
        weights: id.clone(),
        tokenizer: id.clone(),
        config: id,
    }
}

#[test]
fn a_fine_tune_with_the_same_weights_is_served_from_the_bundled_file_in_its_profile() {
    let record = quantized_record();
    let mut fine_tune = info_of(&record, None);
    fine_tune.name = "smollm2-135m-instruct-q-my-fine-tune".into();
    let model = models::load(&piazza_engine::models_dir(), &fine_tune).unwrap();
    assert_eq!(model.profile(), piazza_llm::NumericProfile::Quantized);
    assert_eq!(
        model.commitments().weights_commitment,
        record.weights_commitment.0
    );
    // The f32 record of the same file commits to other weights: the profile is the record's.
    let f32_record = info_of(&record, None);
    let mut other = f32_record.clone();
    other.numeric = "f32".into();
    other.weights_commitment = piazza_primitives::Hash([7; 32]).to_hex();
    let refused = models::load(&piazza_engine::models_dir(), &other).unwrap_err();
    assert!(
        refused.to_string().contains("differ from the chain's"),
        "{refused}"
    );
    let mut unknown = f32_record;
    unknown.numeric = "f16".into();
    assert!(models::load(&piazza_engine::models_dir(), &unknown)
        .unwrap_err()
        .to_string()
        .contains("unknown numeric profile"));
}

#[test]
fn a_cached_blob_is_served_with_the_bundled_trace_and_a_tampered_one_is_refused() {
    let record = quantized_record();
    let bundled = models::load(&piazza_engine::models_dir(), &info_of(&record, None)).unwrap();

    // A models directory holding only the cached blob: found by the record's blob id.
    let cache = tempfile::tempdir().unwrap();
    let files = cache_copy(cache.path(), |_| {});
    let cached = models::load(cache.path(), &info_of(&record, Some(files))).unwrap();
    assert_eq!(trace_root(&cached), trace_root(&bundled));

    // One byte changed in the tensor data: the weights commitment differs, nothing is served.
    let tampered_dir = tempfile::tempdir().unwrap();
    let files = cache_copy(tampered_dir.path(), |bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
    });
    let path = models::cached_blob_path(tampered_dir.path(), &files.weights);
    let info = info_of(&record, Some(files));
    let refused = models::load(tampered_dir.path(), &info).unwrap_err();
    assert!(
        refused.to_string().contains("differ from the chain's"),
        "{refused}"
    );
    // Resolving checks the cached copy against its blob id, removes it, and fetches again:
    // with no node to fetch from, it fails rather than serve the tampered bytes.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = piazza_client::Client::new("http://127.0.0.1:1");
    let error = runtime
        .block_on(models::resolve(&client, tampered_dir.path(), &info))
        .unwrap_err();
    assert!(error.to_string().contains("fetching blob"), "{error}");
    assert!(!path.exists(), "the tampered copy is removed");
}

#[test]
fn a_record_without_a_local_file_or_blobs_is_refused_naming_what_was_tried() {
    let empty = tempfile::tempdir().unwrap();
    let info = info_of(&quantized_record(), None);
    let error = models::load(empty.path(), &info).unwrap_err().to_string();
    assert!(error.contains("0 tried"), "{error}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = piazza_client::Client::new("http://127.0.0.1:1");
    // No blobs named: nothing to fetch, the local error stands.
    let error = runtime
        .block_on(models::resolve(&client, empty.path(), &info))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no local file"), "{error}");
}

//! `piazza model publish` end to end: a devnet with its in-process storage providers, MiniLM's
//! three files stored as blobs, and a model record naming those blobs with the same weights
//! commitment, tokenizer hash and config hash as the record the devnet computed from the same
//! files at genesis.

use piazza_blob::erasure::{self, DATA_SHARDS_DEFAULT, PARITY_SHARDS_DEFAULT};
use piazza_client::Client;
use piazza_ledger::models::{self, ModelFiles};
use piazza_ledger::state::StateDelta;
use piazza_primitives::Hash;
use std::path::Path;

mod common;
use common::*;

/// The blob id `blob put` gives `file` at the default layout.
fn blob_id(file: &Path) -> Hash {
    let data = std::fs::read(file).unwrap();
    erasure::encode(&data, DATA_SHARDS_DEFAULT, PARITY_SHARDS_DEFAULT)
        .unwrap()
        .manifest()
        .id
}

#[test]
fn publish_stores_the_files_and_registers_their_blob_ids() {
    let dir = tempfile::tempdir().unwrap();
    let models_dir = piazza_engine::models_dir().join("minilm");
    let weights = models_dir.join("model.safetensors");
    let tokenizer = models_dir.join("tokenizer.json");
    let config = models_dir.join("config.json");
    let devnet = start_devnet_with(
        dir.path(),
        &[
            "--no-provider",
            "--no-auditor",
            "--storage-providers",
            "6",
            "--models",
            "all-minilm-l6-v2",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);

    let receipt = cli(
        &devnet,
        dir.path(),
        &[
            "model",
            "publish",
            "--name",
            "minilm-published",
            "--kind",
            "embedding",
            "--weights",
            weights.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--epochs",
            "20",
            "--from",
            "dev",
            "--wait",
        ],
    );
    assert!(receipt["error"].is_null(), "{receipt}");

    // Each file is kept under a deal, and comes back equal to the file.
    let files = ModelFiles {
        weights: blob_id(&weights),
        tokenizer: blob_id(&tokenizer),
        config: blob_id(&config),
    };
    for (id, file) in [
        (files.weights, &weights),
        (files.tokenizer, &tokenizer),
        (files.config, &config),
    ] {
        let found = runtime.block_on(client.blob(&id)).unwrap();
        assert!(found.is_some(), "no deal keeps {}", file.display());
    }
    // A shard moved by a repair is rebuilt by its new holder: a get may wait for that.
    let out = dir.path().join("tokenizer.back");
    wait_until("the tokenizer blob comes back", WAIT, || {
        std::process::Command::new(PIAZZA)
            .args(["blob", "get", &files.tokenizer.to_hex(), "--out"])
            .arg(&out)
            .args(["--node", &devnet.url])
            .output()
            .unwrap()
            .status
            .success()
    });
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&tokenizer).unwrap()
    );

    // The record: the files' blob ids and the hashes a provider computes from them.
    drop(devnet);
    let store = piazza_store::Store::open(&dir.path().join(piazza_node::CHAIN_DB_FILE)).unwrap();
    let snapshot = store.snapshot().unwrap();
    let state = StateDelta::new(&snapshot);
    let published = models::record(&state, "minilm-published").expect("the record");
    let genesis = models::record(&state, "all-minilm-l6-v2").expect("the genesis record");
    assert_eq!(published.files, Some(files));
    assert_eq!(published.weights_commitment, genesis.weights_commitment);
    assert_eq!(published.tokenizer_hash, genesis.tokenizer_hash);
    assert_eq!(published.config_hash, genesis.config_hash);
    assert_eq!(published.kind, genesis.kind);
}

/// Runs `piazza model publish ARGS` against a node that is not there and returns its error:
/// a refusal before any request (a request would fail differently).
fn publish_refusal(args: &[&std::ffi::OsStr]) -> String {
    let output = std::process::Command::new(PIAZZA)
        .args(["model", "publish", "--name", "x"])
        .args(args)
        .args(["--node", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn publish_refuses_a_generation_model_with_separate_files_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.gguf");
    std::fs::write(&file, b"not a model").unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, b"{}").unwrap();
    let stderr = publish_refusal(&[
        "--weights".as_ref(),
        file.as_ref(),
        "--config".as_ref(),
        config.as_ref(),
    ]);
    assert!(stderr.contains("one GGUF file"), "{stderr}");
}

#[test]
fn publish_refuses_a_quantized_embedding_model_before_any_request() {
    let dir = piazza_engine::models_dir().join("minilm");
    let (weights, tokenizer, config) = (
        dir.join("model.safetensors"),
        dir.join("tokenizer.json"),
        dir.join("config.json"),
    );
    let stderr = publish_refusal(&[
        "--kind".as_ref(),
        "embedding".as_ref(),
        "--numeric".as_ref(),
        "quantized".as_ref(),
        "--weights".as_ref(),
        weights.as_ref(),
        "--tokenizer".as_ref(),
        tokenizer.as_ref(),
        "--config".as_ref(),
        config.as_ref(),
    ]);
    assert!(stderr.contains("only the f32 numeric profile"), "{stderr}");
}

#[test]
fn an_unknown_numeric_profile_is_refused() {
    let stderr = publish_refusal(&[
        "--weights".as_ref(),
        "w.gguf".as_ref(),
        "--numeric".as_ref(),
        "f16".as_ref(),
    ]);
    assert!(stderr.contains("`f32` or `quantized`"), "{stderr}");
}

/// `publish --numeric quantized` computes the record a provider loading the file in the
/// quantized profile accepts: the bundled quantized record's commitments, not the f32 ones.
#[test]
fn a_quantized_publish_commits_to_the_quantized_profile() {
    use piazza_ledger::models::{ModelKind, NumericProfile};
    let models_dir = piazza_engine::models_dir();
    let paths = piazza_provider::models::bundled_paths(
        &models_dir,
        piazza_provider::models::SMOLLM2_QUANTIZED,
    )
    .unwrap();
    let owner = piazza_primitives::Address([0; 20]);
    let record_in = |numeric| {
        piazza_provider::models::record_of_files("x", ModelKind::Generation, numeric, &paths, owner)
            .unwrap()
    };
    let quantized = record_in(NumericProfile::Quantized);
    let bundled = piazza_provider::models::smollm2_quantized_record(&models_dir, owner).unwrap();
    assert_eq!(quantized.numeric, NumericProfile::Quantized);
    assert_eq!(quantized.weights_commitment, bundled.weights_commitment);
    assert_eq!(quantized.config_hash, bundled.config_hash);
    assert_eq!(quantized.tokenizer_hash, bundled.tokenizer_hash);
    let f32 = record_in(NumericProfile::F32);
    assert_eq!(f32.numeric, NumericProfile::F32);
    assert_ne!(f32.weights_commitment, quantized.weights_commitment);
}

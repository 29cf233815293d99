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

#[test]
fn publish_refuses_a_generation_model_with_separate_files_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.gguf");
    std::fs::write(&file, b"not a model").unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, b"{}").unwrap();
    let output = std::process::Command::new(PIAZZA)
        .args(["model", "publish", "--name", "x", "--weights"])
        .arg(&file)
        .arg("--config")
        .arg(&config)
        // Nothing listens here: a request would fail differently.
        .args(["--node", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("one GGUF file"), "{stderr}");
}

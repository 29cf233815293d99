//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use piazza_engine::Embedder;

/// The MiniLM directory, or a panic naming the script that fetches it.
pub fn minilm_dir() -> PathBuf {
    let dir = piazza_engine::models_dir().join("minilm");
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        assert!(
            dir.join(file).is_file(),
            "{} is missing: run scripts/fetch-models.sh (models go to ${} or ~/.cache/piazza/models)",
            dir.join(file).display(),
            piazza_engine::MODELS_DIR_ENV,
        );
    }
    dir
}

/// One MiniLM per test binary.
pub fn minilm() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| Embedder::load(minilm_dir()).expect("MiniLM loads"))
}

/// The reference outputs of sentence-transformers (see /work/shared/fixtures/README.md).
#[derive(serde::Deserialize)]
pub struct Reference {
    pub sentences: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    pub embeddings: Vec<Vec<f32>>,
}

pub fn reference() -> Reference {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json");
    serde_json::from_slice(&std::fs::read(path).expect("fixture present")).expect("fixture parses")
}

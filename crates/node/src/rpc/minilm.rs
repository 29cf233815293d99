//! The explorer's semantic search over the network's MiniLM from the models directory
//! (`piazza_engine::models_dir()/minilm`), loaded on the first search, not at start.

use piazza_explorer::{Embed, Embedding};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Threads one search's embedding uses.
const EMBED_THREADS: usize = 1;
/// The files a MiniLM directory holds.
const MODEL_FILES: [&str; 3] = ["model.safetensors", "config.json", "tokenizer.json"];

struct MiniLm {
    dir: PathBuf,
    loaded: OnceLock<Result<piazza_engine::Embedder, String>>,
}

impl MiniLm {
    fn embedder(&self) -> Result<&piazza_engine::Embedder, String> {
        self.loaded
            .get_or_init(|| piazza_engine::Embedder::load(&self.dir).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Embed for MiniLm {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        self.embedder()?
            .embed(&texts, EMBED_THREADS)
            .map_err(|e| e.to_string())
    }

    fn weights_commitment(&self) -> Option<String> {
        Some(hex::encode(self.embedder().ok()?.weights_commitment()))
    }
}

/// Semantic search over the MiniLM in `dir`, or why there is none (a file is missing).
pub fn embedding_from(dir: &Path) -> Embedding {
    if let Some(missing) = MODEL_FILES.iter().find(|f| !dir.join(f).is_file()) {
        return Embedding::Unavailable(format!(
            "no MiniLM at {} ({missing} is missing; scripts/fetch-models.sh fetches it)",
            dir.display()
        ));
    }
    Embedding::Available(Arc::new(MiniLm {
        dir: dir.to_path_buf(),
        loaded: OnceLock::new(),
    }))
}

/// Semantic search over the MiniLM in the models directory.
pub fn embedding() -> Embedding {
    embedding_from(&piazza_engine::models_dir().join("minilm"))
}

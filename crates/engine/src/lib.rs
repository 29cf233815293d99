//! Deterministic, traced inference: BERT sentence embeddings whose every operator output is
//! hashed into a Merkle trace that anyone can re-check one operator at a time.
//!
//! # Invariants
//! - A run is a fixed [`Graph`] of operators, each split into row-block [`graph::Step`]s; the
//!   trace root is the Merkle root over one leaf per step (formats in docs/engine.md).
//! - The same model and input give the same embeddings and trace root for every thread count,
//!   instruction set and batch grouping: all arithmetic goes through `piazza-tensor`, whose
//!   kernels equal their scalar reference bit for bit.
//! - [`Embedder::execute_step`] recomputes any step from its inputs alone and the weights,
//!   and reproduces its leaf hash.
//! - Model files are untrusted: the safetensors header, `config.json` and `tokenizer.json` are
//!   read with size limits and validated; bad bytes give an [`Error`], never a panic.
//!
//! The engine knows nothing of the ledger, the network or JSON output: it returns tensors and
//! hashes.
//!
//! # Example
//! ```no_run
//! use piazza_engine::{Batch, Compute, Embedder};
//!
//! let embedder = Embedder::load(piazza_engine::models_dir().join("minilm"))?;
//! let vectors = embedder.embed(&["Hello world", "Bonjour"], 2)?;
//! assert_eq!(vectors[0].len(), 384);
//!
//! let tokens = embedder.tokenize(&["Hello world"])?;
//! let (output, trace) = embedder.run_traced(&Batch::pack(&tokens)?, Compute::new(2))?;
//! println!("root {:02x?}, {} steps", trace.root, trace.step_hashes.len());
//! # let _ = output;
//! # Ok::<(), piazza_engine::Error>(())
//! ```

pub mod config;
mod embedder;
pub mod graph;
pub mod merkle;
pub mod safetensors;
pub mod trace;
pub mod weights;

use std::path::PathBuf;

pub use embedder::{
    parse_tokenizer, tokenize_with, tokenizer_hash, Batch, Embedder, Recording, BATCH_SIZE,
    MAX_TOKENS,
};
pub use graph::{Graph, Op, OpKind, Source, Step};
pub use piazza_tensor::{Compute, Tensor};
pub use safetensors::SafeTensorsError;
pub use trace::Trace;
pub use weights::WeightCommitment;

/// Environment variable naming the models directory.
pub const MODELS_DIR_ENV: &str = "PIAZZA_MODELS_DIR";

/// `$PIAZZA_MODELS_DIR`, or `$HOME/.cache/piazza/models` (where `scripts/fetch-models.sh` puts them).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(MODELS_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("piazza").join("models")
}

/// What went wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    SafeTensors(#[from] SafeTensorsError),
    #[error("config.json: {detail}")]
    Config { detail: String },
    #[error("tokenizer: {detail}")]
    Tokenizer { detail: String },
    #[error("weight {name:?} missing")]
    MissingWeight { name: String },
    #[error("weight {name:?}: expected shape {expected:?}, got {got:?}")]
    WeightShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("op {op}: {source}")]
    Tensor {
        op: String,
        source: piazza_tensor::Error,
    },
    #[error("op {op}: {detail}")]
    Step { op: String, detail: String },
    #[error("input: {detail}")]
    Input { detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Deterministic, traced text generation: a Llama-family decoder (SmolLM2) read from a GGUF
//! file, run on `piazza-tensor`'s kernels, with every operator output hashed into a Merkle trace.
//!
//! # Invariants
//! - A generation is a fixed [`Graph`]: one pass for the prompt, one per new token, each a
//!   fixed op sequence cut into [`graph::Step`]s (row blocks × weight-column blocks, ≤ 2 MiB of
//!   weights each). The trace root is piazza-trace's Merkle root over one leaf per step
//!   (`piazza_trace::trace::step_hash`); the layout is in docs/llm.md.
//! - The same file, prompt and [`GenerateParams`] (seed included) give the same tokens, text
//!   and trace root for every thread count and instruction set: all float arithmetic is
//!   `piazza-tensor`'s (causal attention over the KV cache and the column-threaded matmul
//!   included), whose fast paths equal their scalar reference bit for bit; token choice uses a
//!   counter-based RNG and a total order.
//! - [`Generator::execute_step`] recomputes any step, prefill or decode (whose inputs include
//!   the KV cache), from its inputs alone and reproduces its leaf hash.
//! - The GGUF file is untrusted: counts, lengths, dims, offsets and alignment are checked
//!   against limits and the file size; bad bytes give an [`Error`], never a panic.
//!
//! Knows nothing of the ledger, the network or JSON; a chat job's input is read from its
//! canonical encoding ([`chat_messages_from_input`]), so providers and the ledger read it alike.
//!
//! # Example
//! ```no_run
//! use piazza_llm::{GenerateParams, Generator, Message};
//!
//! let generator = Generator::load(piazza_llm::default_model_path())?;
//! let text = generator.apply_chat_template(&[Message::new("user", "Hi!")])?;
//! let prompt = generator.tokenize(&text)?;
//! let generation = generator.generate(&prompt, &GenerateParams::greedy(32), 2, |event| {
//!     print!("{}", event.text);
//! })?;
//! println!("\nroot {:02x?} over {} steps", generation.trace_root(), generation.step_count());
//! # Ok::<(), piazza_llm::Error>(())
//! ```

mod generator;
pub mod gguf;
pub mod graph;
#[cfg_attr(not(target_endian = "little"), allow(dead_code))]
mod leaves;
pub mod model;
pub mod sampling;
pub mod text;
pub mod tokenizer;

use std::path::PathBuf;

pub use generator::{
    chat_prompt_ids, compute_block, FinishReason, GenerateParams, Generation, Generator, Recording,
    RunOptions, TokenEvent, TokenFilter, SEQUENCE_TOKENS_MAX,
};
pub use gguf::{Gguf, GgufError};
pub use graph::{Graph, Op, OpKind, Source, Step};
pub use model::{LlamaConfig, NumericProfile};
pub use piazza_tensor::{Compute, Tensor};
pub use sampling::SamplingParams;
pub use tokenizer::{chat_messages_from_input, Message, Tokenizer};

/// The SmolLM2 file `scripts/fetch-models.sh` downloads, under `piazza_engine::models_dir()`.
pub fn default_model_path() -> PathBuf {
    piazza_engine::models_dir()
        .join("smollm2")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// What went wrong loading a model or generating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
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
    /// The caller asked the generation to stop (its job expired); no result.
    #[error("generation cancelled after {tokens} tokens")]
    Cancelled { tokens: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

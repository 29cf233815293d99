//! Tokenization disputes: the ledger re-derives a job's token ids from its input and the
//! model's tokenizer (checked against the record's tokenizer hash).
//!
//! When a provider and a challenger disagree about the ids a job's input turns into, the
//! tokenizer is supplied as evidence and the ids are recomputed here, on the same code path the
//! provider runs (`crates/provider/src/models.rs` `execute`):
//! - BERT ([`bert_ids`]): the evidence is the `tokenizer.json` bytes, whose BLAKE3 is the
//!   record's tokenizer hash; ids are `piazza_engine::tokenize_with` (what
//!   `Embedder::tokenize` runs) of the input read as lossy UTF-8.
//! - Llama ([`llama_ids`]): the evidence is the tokenizer's metadata preimage
//!   (`piazza_llm::Tokenizer::metadata_preimage`), whose BLAKE3 is the record's tokenizer hash;
//!   ids are `Tokenizer::encode` of the lossy-UTF-8 input, or for a chat job
//!   `Tokenizer::chat_prompt_ids` of `piazza_llm::chat_messages_from_input`.
//!
//! # Invariants
//! - Pure: no IO, clock, threads or randomness; the ids depend only on the arguments.
//! - The evidence is hashed before it is parsed; a hash mismatch is refused without parsing.
//! - Hostile bytes (evidence or input) give a [`TokensError`], never a panic: the parsers are
//!   bounded (`piazza_engine::embedder` `TOKENIZER_BYTES_MAX`,
//!   `piazza_llm::tokenizer::PREIMAGE_BYTES_MAX`, the GGUF reader's limits) and contain panics
//!   of the third-party tokenizer.

use std::fmt;

/// A 32-byte BLAKE3 hash.
pub type Hash = [u8; 32];

/// Why a job's token ids could not be derived.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokensError {
    /// The tokenizer evidence does not hash to the model record's tokenizer hash.
    TokenizerHash { expected: Hash, computed: Hash },
    /// The tokenizer evidence hashes correctly but is not a tokenizer this engine can build.
    Tokenizer { detail: String },
    /// The tokenizer refuses the input (the provider's would refuse it alike).
    Input { detail: String },
}

fn hex(hash: &Hash) -> String {
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl fmt::Display for TokensError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokensError::TokenizerHash { expected, computed } => write!(
                f,
                "tokenizer evidence hashes to {}, the model's tokenizer hash is {}",
                hex(computed),
                hex(expected)
            ),
            TokensError::Tokenizer { detail } => write!(f, "tokenizer evidence: {detail}"),
            TokensError::Input { detail } => write!(f, "tokenizing the input: {detail}"),
        }
    }
}

impl std::error::Error for TokensError {}

fn check_hash(expected: &Hash, computed: Hash) -> Result<(), TokensError> {
    if computed == *expected {
        Ok(())
    } else {
        Err(TokensError::TokenizerHash {
            expected: *expected,
            computed,
        })
    }
}

/// The ids a provider computes for an embedding job (BERT, e.g. all-MiniLM-L6-v2): `[CLS] …
/// [SEP]`, truncated to `piazza_engine::MAX_TOKENS`. `tokenizer_json` must hash (BLAKE3) to
/// `tokenizer_hash`.
pub fn bert_ids(
    tokenizer_json: &[u8],
    tokenizer_hash: &Hash,
    input: &[u8],
) -> Result<Vec<u32>, TokensError> {
    check_hash(
        tokenizer_hash,
        piazza_engine::tokenizer_hash(tokenizer_json),
    )?;
    let tokenizer =
        piazza_engine::parse_tokenizer(tokenizer_json).map_err(|e| TokensError::Tokenizer {
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(input);
    let input_error = |detail: String| TokensError::Input { detail };
    piazza_engine::tokenize_with(&tokenizer, &[text.as_ref()])
        .map_err(|e| input_error(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| input_error("no ids for the one text".into()))
}

/// The prompt ids a provider computes for a generation job (Llama GGUF, e.g. SmolLM2):
/// `tokenizer_preimage` must hash (BLAKE3) to `tokenizer_hash`; `vocab` is the model's
/// embedding rows; `chat` is the job's chat flag.
pub fn llama_ids(
    tokenizer_preimage: &[u8],
    tokenizer_hash: &Hash,
    vocab: usize,
    input: &[u8],
    chat: bool,
) -> Result<Vec<u32>, TokensError> {
    check_hash(
        tokenizer_hash,
        piazza_llm::tokenizer::preimage_hash(tokenizer_preimage),
    )?;
    let tokenizer = piazza_llm::Tokenizer::from_metadata_preimage(tokenizer_preimage, vocab)
        .map_err(|e| TokensError::Tokenizer {
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(input);
    let ids = if chat {
        tokenizer.chat_prompt_ids(&piazza_llm::chat_messages_from_input(&text))
    } else {
        tokenizer.encode(&text)
    };
    ids.map_err(|e| TokensError::Input {
        detail: e.to_string(),
    })
}

/// The BERT tokenizer evidence for [`bert_ids`]: the `tokenizer.json` bytes.
pub fn bert_tokenizer_bytes(embedder: &piazza_engine::Embedder) -> Vec<u8> {
    embedder.tokenizer_json().to_vec()
}

/// The Llama tokenizer evidence for [`llama_ids`]: the tokenizer's metadata preimage.
pub fn llama_tokenizer_bytes(generator: &piazza_llm::Generator) -> Vec<u8> {
    generator.tokenizer().metadata_preimage().to_vec()
}

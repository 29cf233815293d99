//! Input disputes: when the parties ran different token ids, the ledger tokenizes the job's
//! input itself with the model's tokenizer from the evidence (checked against the record).
//!
//! Input evidence: `config length (u32 LE) ‖ config bytes ‖ tokenizer bytes` — the config
//! (checked against the record's config hash) gives the vocabulary size a Llama tokenizer needs;
//! the tokenizer bytes are `tokenizer.json` (BERT) or the GGUF tokenizer metadata preimage
//! (Llama), see [`crate::tokens`].

use crate::run::LoadedModel;
use crate::{
    config_hash, ids_commitment, tokens, ArbiterError, Family, Hash, JobSpec, ModelCommitments,
};

/// The input evidence for `model` (what a party sends in an input dispute).
pub fn input_evidence(model: &LoadedModel) -> Vec<u8> {
    let config = model.config_bytes();
    let tokenizer = match model {
        LoadedModel::Embedding(embedder) => tokens::bert_tokenizer_bytes(embedder),
        LoadedModel::Generation(generator) => tokens::llama_tokenizer_bytes(generator),
    };
    let mut bytes = Vec::with_capacity(4 + config.len() + tokenizer.len());
    bytes.extend_from_slice(&(config.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&config);
    bytes.extend_from_slice(&tokenizer);
    bytes
}

/// What the ledger learns from input evidence: the token ids `job`'s input turns into under
/// the model, and the config bytes (both checked against the record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputVerdict {
    pub ids: Vec<u32>,
    pub config: Vec<u8>,
}

impl InputVerdict {
    pub fn ids_commitment(&self) -> Hash {
        ids_commitment(&self.ids)
    }
}

/// Tokenizes `job`'s input with the tokenizer from input evidence, checked against the
/// model's config and tokenizer hashes.
pub fn arbitrate_ids(
    model: &ModelCommitments,
    job: &JobSpec,
    evidence: &[u8],
) -> Result<InputVerdict, ArbiterError> {
    let encoding = |detail: &str| ArbiterError::Encoding(format!("input evidence: {detail}"));
    let len_bytes: [u8; 4] = evidence
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| encoding("shorter than its config length"))?;
    let config_len = u32::from_le_bytes(len_bytes) as usize;
    let config = evidence
        .get(4..4usize.saturating_add(config_len))
        .ok_or_else(|| encoding("shorter than its config"))?;
    let tokenizer = &evidence[4 + config_len..];
    if config_hash(config) != model.config_hash {
        return Err(ArbiterError::ConfigHash);
    }
    let tokens_error = |e: tokens::TokensError| ArbiterError::Job(e.to_string());
    let ids = match model.family {
        Family::Bert => tokens::bert_ids(tokenizer, &model.tokenizer_hash, &job.input),
        Family::Llama => {
            let parsed = piazza_llm::LlamaConfig::from_canonical_bytes(config)
                .map_err(|e| ArbiterError::Config(e.to_string()))?;
            tokens::llama_ids(
                tokenizer,
                &model.tokenizer_hash,
                parsed.vocab,
                &job.input,
                job.chat,
            )
        }
    }
    .map_err(tokens_error)?;
    Ok(InputVerdict {
        ids,
        config: config.to_vec(),
    })
}

//! Constrained jobs: a job whose input starts with a [`Constraint`] header (piazza-grammar)
//! generates under that constraint's token mask. The provider's run, an auditor's run and
//! re-execution all read the header from the same input bytes, so they apply the same mask
//! and reach the same trace root (docs/grammar.md).

use std::sync::Arc;

use piazza_grammar::{Constraint, TokenMask, Vocabulary};
use piazza_llm::{Generator, TokenFilter};

use crate::{ArbiterError, JobSpec};

/// A job's token mask, as the generator's sample op applies it.
#[derive(Debug)]
pub struct GrammarFilter {
    mask: TokenMask,
}

impl TokenFilter for GrammarFilter {
    fn allowed(&self, generated: &[u32], allowed: &mut [bool]) -> Result<(), String> {
        self.mask
            .allowed(generated, allowed)
            .map_err(|e| e.to_string())
    }
}

/// The constraint in front of a job's input, and the input behind it (the whole input when it
/// has none).
pub fn split_input(input: &[u8]) -> Result<(Option<Constraint>, &[u8]), ArbiterError> {
    match Constraint::split(input) {
        Ok(Some((constraint, inner))) => Ok((Some(constraint), inner)),
        Ok(None) => Ok((None, input)),
        Err(e) => Err(ArbiterError::Job(e.to_string())),
    }
}

/// The token byte strings of `tokenizer`'s first `vocab` ids (control tokens empty) and its
/// end of sequence.
pub fn vocabulary(
    tokenizer: &piazza_llm::Tokenizer,
    vocab: usize,
) -> Result<Vocabulary, ArbiterError> {
    let tokens = (0..vocab as u32)
        .map(|id| tokenizer.token_bytes(id).to_vec())
        .collect();
    Vocabulary::new(tokens, tokenizer.eos).map_err(|e| ArbiterError::Job(e.to_string()))
}

/// The token filter `job` generates under on `generator`: `None` for an unconstrained job; an
/// error for a header that does not parse, a schema that does not compile, or a token budget
/// that cannot hold the shortest valid value.
pub fn token_filter(
    generator: &Generator,
    job: &JobSpec,
) -> Result<Option<GrammarFilter>, ArbiterError> {
    filter_with(generator.tokenizer(), generator.config().vocab, job)
}

/// [`token_filter`] from a tokenizer and the model's vocabulary size (what the arbiter has: the
/// tokenizer rebuilt from the evidence's preimage, the size from the committed config).
pub fn filter_with(
    tokenizer: &piazza_llm::Tokenizer,
    vocab: usize,
    job: &JobSpec,
) -> Result<Option<GrammarFilter>, ArbiterError> {
    let (Some(constraint), _) = split_input(&job.input)? else {
        return Ok(None);
    };
    let grammar = constraint
        .grammar()
        .map_err(|e| ArbiterError::Job(e.to_string()))?;
    let max_tokens = crate::generate_params(job).max_tokens;
    let mask = TokenMask::new(grammar, Arc::new(vocabulary(tokenizer, vocab)?), max_tokens)
        .map_err(|e| ArbiterError::Job(e.to_string()))?;
    Ok(Some(GrammarFilter { mask }))
}

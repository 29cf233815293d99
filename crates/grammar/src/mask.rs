//! The token mask: which ids of a vocabulary may come next, from the automaton's state after
//! the tokens generated so far and the tokens left.
//!
//! A token is allowed when its bytes continue a valid value and the value can still be
//! completed in the tokens left after it, counting one token per byte (every single byte is a
//! token of the vocabulary, which [`Vocabulary::new`] checks). End of sequence is allowed only
//! when the value is complete. Empty tokens (control tokens) are never allowed. So a masked
//! generation always ends with a complete value, by end of sequence or at `max_tokens`.

use std::sync::{Arc, Mutex};

use crate::{Grammar, State};

/// Why a mask could not be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaskError {
    #[error("vocabulary: {0}")]
    Vocabulary(String),
    #[error("{max_tokens} tokens cannot hold the shortest valid value ({needed} bytes)")]
    Budget { max_tokens: usize, needed: u64 },
    #[error("token {index} (id {id}) does not continue the constrained value")]
    Token { index: usize, id: u32 },
    #[error("token {index} is past the constraint's {max_tokens} tokens")]
    PastEnd { index: usize, max_tokens: usize },
}

/// A model's token byte strings, indexed by id and grouped by first byte (computed once per
/// model).
#[derive(Debug)]
pub struct Vocabulary {
    tokens: Vec<Vec<u8>>,
    by_first: Vec<Vec<u32>>,
    /// Whether each byte is a token by itself.
    single: [bool; 256],
    eos: u32,
}

/// Printable ASCII: JSON's structure, numbers and ASCII text. A vocabulary must hold each as a
/// token of its own, so a completion of `n` bytes takes at most `n` tokens.
const COMPLETING_BYTES: std::ops::RangeInclusive<u8> = 0x20..=0x7E;
/// UTF-8 continuation bytes (to finish a character a token began), required likewise.
const CONTINUATION_BYTES: std::ops::RangeInclusive<u8> = 0x80..=0xBF;

impl Vocabulary {
    /// `tokens[id]`: the bytes token `id` adds to the text (empty for control tokens, which
    /// are never allowed); `eos`: the end-of-sequence id.
    pub fn new(tokens: Vec<Vec<u8>>, eos: Option<u32>) -> Result<Vocabulary, MaskError> {
        let eos = eos
            .filter(|&id| (id as usize) < tokens.len())
            .ok_or_else(|| MaskError::Vocabulary("no end-of-sequence token".into()))?;
        let mut by_first = vec![Vec::new(); 256];
        let mut single = [false; 256];
        for (id, bytes) in tokens.iter().enumerate() {
            if id as u32 == eos {
                continue;
            }
            if let Some(&first) = bytes.first() {
                by_first[first as usize].push(id as u32);
                if bytes.len() == 1 {
                    single[first as usize] = true;
                }
            }
        }
        let missing: Vec<String> = COMPLETING_BYTES
            .clone()
            .chain(CONTINUATION_BYTES)
            .map(usize::from)
            .filter(|&b| !single[b])
            .map(|b| format!("{b:#04x}"))
            .collect();
        if !missing.is_empty() {
            return Err(MaskError::Vocabulary(format!(
                "no single-byte token for bytes {}",
                missing.join(" ")
            )));
        }
        Ok(Vocabulary {
            tokens,
            by_first,
            single,
            eos,
        })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }
}

/// A grammar applied to one generation of at most `max_tokens` new tokens.
#[derive(Debug)]
pub struct TokenMask {
    grammar: Grammar,
    vocabulary: Arc<Vocabulary>,
    max_tokens: usize,
    /// The state after the last prefix asked about (a generation asks about each prefix in
    /// turn, so each step feeds only the newest token).
    last: Mutex<Option<(Vec<u32>, State)>>,
}

impl TokenMask {
    pub fn new(
        grammar: Grammar,
        vocabulary: Arc<Vocabulary>,
        max_tokens: usize,
    ) -> Result<TokenMask, MaskError> {
        if let Some(byte) = grammar
            .literal_bytes()
            .find(|&b| !vocabulary.single[b as usize])
        {
            return Err(MaskError::Vocabulary(format!(
                "the schema's literal byte {byte:#04x} is not a token by itself"
            )));
        }
        let needed = grammar.min_bytes_to_complete(&grammar.start());
        if needed > max_tokens as u64 {
            return Err(MaskError::Budget { max_tokens, needed });
        }
        Ok(TokenMask {
            grammar,
            vocabulary,
            max_tokens,
            last: Mutex::new(None),
        })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The automaton's state after the new tokens `generated`.
    pub fn state_after(&self, generated: &[u32]) -> Result<State, MaskError> {
        let cached = match self.last.lock() {
            Ok(last) => last
                .as_ref()
                .filter(|(ids, _)| generated.starts_with(ids))
                .map(|(ids, state)| (ids.len(), state.clone())),
            Err(_) => None,
        };
        let (from, mut state) = cached.unwrap_or_else(|| (0, self.grammar.start()));
        for (index, &id) in generated.iter().enumerate().skip(from) {
            let bytes = self
                .vocabulary
                .tokens
                .get(id as usize)
                .filter(|b| !b.is_empty() && id != self.vocabulary.eos)
                .ok_or(MaskError::Token { index, id })?;
            state = self
                .grammar
                .allowed(&state, bytes)
                .ok_or(MaskError::Token { index, id })?;
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some((generated.to_vec(), state.clone()));
        }
        Ok(state)
    }

    /// Set `allowed[id]` for every id that may be new token number `generated.len()` after the
    /// new tokens `generated` (`allowed` has one entry per vocabulary id).
    pub fn allowed(&self, generated: &[u32], allowed: &mut [bool]) -> Result<(), MaskError> {
        let index = generated.len();
        let left_after = self
            .max_tokens
            .checked_sub(index + 1)
            .ok_or(MaskError::PastEnd {
                index,
                max_tokens: self.max_tokens,
            })? as u64;
        if allowed.len() != self.vocabulary.len() {
            return Err(MaskError::Vocabulary(format!(
                "mask of {} entries for {} tokens",
                allowed.len(),
                self.vocabulary.len()
            )));
        }
        let state = self.state_after(generated)?;
        allowed.fill(false);
        for (first, ids) in self.vocabulary.by_first.iter().enumerate() {
            let Some(after_first) = self.grammar.allowed(&state, &[first as u8]) else {
                continue;
            };
            for &id in ids {
                let rest = &self.vocabulary.tokens[id as usize][1..];
                let fits = |s: &State| self.grammar.min_bytes_to_complete(s) <= left_after;
                let ok = if rest.is_empty() {
                    fits(&after_first)
                } else {
                    self.grammar
                        .allowed(&after_first, rest)
                        .is_some_and(|s| fits(&s))
                };
                allowed[id as usize] = ok;
            }
        }
        if self.grammar.is_complete(&state) {
            allowed[self.vocabulary.eos as usize] = true;
        }
        Ok(())
    }
}

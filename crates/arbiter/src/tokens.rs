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

use piazza_llm::text::StopText;
use piazza_llm::{LlamaConfig, SEQUENCE_TOKENS_MAX};

use crate::arbitrate::{generation_layout, step_count_fits, LeafCheck};
pub use crate::evidence::LengthEvidence;
use crate::{config_hash, generate_params, ArbiterError, Family, JobSpec, ModelCommitments};

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
    let tokenizer = llama_tokenizer(tokenizer_preimage, tokenizer_hash, vocab)?;
    // A constraint header is not prompt text (as in `crate::prompt_ids`).
    let input = match piazza_grammar::Constraint::split(input) {
        Ok(Some((_, inner))) => inner,
        Ok(None) => input,
        Err(e) => {
            return Err(TokensError::Input {
                detail: e.to_string(),
            })
        }
    };
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

/// The Llama tokenizer from its metadata preimage, which must hash to `tokenizer_hash`
/// (checked before anything is parsed).
pub(crate) fn llama_tokenizer(
    preimage: &[u8],
    tokenizer_hash: &Hash,
    vocab: usize,
) -> Result<piazza_llm::Tokenizer, TokensError> {
    check_hash(
        tokenizer_hash,
        piazza_llm::tokenizer::preimage_hash(preimage),
    )?;
    piazza_llm::Tokenizer::from_metadata_preimage(preimage, vocab).map_err(|e| {
        TokensError::Tokenizer {
            detail: e.to_string(),
        }
    })
}

/// What a length dispute's evidence shows (the ledger's `arbitration::LengthFinding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthFinding {
    /// Whether each step count is a possible generation of the ids under the job.
    pub fits: [bool; 2],
    /// The step count of the generation that stops at the first agreed sample that ends it;
    /// `None` when none of them does.
    pub stop_steps: Option<u64>,
}

/// Decides a length dispute: two runs of the ids committed to by `ids_commitment` agree on
/// every step below the smaller of `step_counts` and stop at different lengths. Checks the
/// config and tokenizer against the model's commitments and the prompt ids against the
/// commitment, then reads the token id of every sample step below the smaller count (each
/// must pass `leaf_ok`, the ledger's check against the subtrees both parties agreed on) and
/// stops where the generator stops: end of sequence, a stop sequence completed, `max_tokens`
/// new tokens, or the context full. Pure, like [`crate::arbitrate`].
pub fn arbitrate_length(
    model: &ModelCommitments,
    job: &JobSpec,
    ids_commitment: &Hash,
    step_counts: [u64; 2],
    evidence: &LengthEvidence,
    leaf_ok: &LeafCheck<'_>,
) -> Result<LengthFinding, ArbiterError> {
    if model.family != Family::Llama {
        return Err(ArbiterError::Job(
            "only a generation has a length to dispute".into(),
        ));
    }
    if config_hash(&evidence.config) != model.config_hash {
        return Err(ArbiterError::ConfigHash);
    }
    if crate::ids_commitment(&evidence.ids) != *ids_commitment {
        return Err(ArbiterError::IdsCommitment);
    }
    let mut fits = [false; 2];
    for (fit, &count) in fits.iter_mut().zip(&step_counts) {
        *fit = step_count_fits(model, job, &evidence.config, &evidence.ids, count)?;
    }
    let common = step_counts[0].min(step_counts[1]);
    let shorter = usize::from(step_counts[1] < step_counts[0]);
    if !fits[shorter] {
        // No layout to read the samples by: the shorter count is no run at all.
        return Ok(LengthFinding {
            fits,
            stop_steps: None,
        });
    }
    let config = LlamaConfig::from_canonical_bytes(&evidence.config)
        .map_err(|e| ArbiterError::Config(e.to_string()))?;
    let params = generate_params(job);
    let prompt = evidence.ids.len();
    // Only the shape of the graph matters here, which the output weight's name does not change.
    let (first, per_pass) =
        generation_layout(&config, "token_embd.weight", prompt, &params.sampling);
    let tokens = 1 + common.saturating_sub(first) / per_pass.max(1);
    if evidence.samples.len() as u64 != tokens {
        return Err(ArbiterError::Leaves(format!(
            "{common} steps hold {tokens} samples, the evidence opens {}",
            evidence.samples.len()
        )));
    }
    let tokenizer = llama_tokenizer(&evidence.tokenizer, &model.tokenizer_hash, config.vocab)
        .map_err(|e| ArbiterError::Job(e.to_string()))?;
    let limit = SEQUENCE_TOKENS_MAX.min(config.context);
    let mut text = StopText::new(&params.stop);
    // Every sample is checked; the first that ends the generation decides.
    let mut stop_steps = None;
    for (k, sample) in evidence.samples.iter().enumerate() {
        let index = first - 1 + k as u64 * per_pass;
        let fail = |detail: &str| ArbiterError::LeafOpening {
            index,
            detail: detail.into(),
        };
        if sample.index != index {
            return Err(fail("not the sample step of its pass"));
        }
        let [value] = sample.values[..] else {
            return Err(fail("a sample is one value"));
        };
        if (sample.rows, sample.columns) != (1, 1) {
            return Err(fail("a sample is a 1 × 1 block"));
        }
        let leaf = piazza_trace::trace::step_hash(index as usize, &sample.values, 1, 1);
        if !leaf_ok(index, &leaf, &sample.siblings) {
            return Err(fail("not in the agreed steps"));
        }
        if !(value >= 0.0 && value.fract() == 0.0 && (value as usize) < config.vocab) {
            return Err(fail("not a token id"));
        }
        if stop_steps.is_some() {
            continue;
        }
        let id = value as u32;
        let generated = k + 1;
        let eos = params.stop_at_eos && Some(id) == tokenizer.eos;
        let stopped = !eos && text.push(tokenizer.token_bytes(id));
        if stopped || eos || generated >= params.max_tokens || prompt + generated > limit {
            stop_steps = Some(first + k as u64 * per_pass);
        }
    }
    Ok(LengthFinding { fits, stop_steps })
}

/// The BERT tokenizer evidence for [`bert_ids`]: the `tokenizer.json` bytes.
pub fn bert_tokenizer_bytes(embedder: &piazza_engine::Embedder) -> Vec<u8> {
    embedder.tokenizer_json().to_vec()
}

/// The Llama tokenizer evidence for [`llama_ids`]: the tokenizer's metadata preimage.
pub fn llama_tokenizer_bytes(generator: &piazza_llm::Generator) -> Vec<u8> {
    generator.tokenizer().metadata_preimage().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{run_job, JobRun, LoadedModel};
    use piazza_trace::merkle::Proof;
    use piazza_trace::Trace;
    use std::sync::Arc;

    fn smollm2() -> LoadedModel {
        let path = piazza_llm::default_model_path();
        let generator = piazza_llm::Generator::load(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-models.sh)", path.display()));
        LoadedModel::Generation(Arc::new(generator))
    }

    fn job(max_tokens: u32, stop: &[&str]) -> JobSpec {
        JobSpec {
            input: b"Write a long story about a lighthouse keeper.".to_vec(),
            max_tokens,
            chat: true,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ..JobSpec::default()
        }
    }

    /// Decides `job`'s length between `runs` (defendant, claimant) from `evidence_run`'s
    /// samples, each checked against that run's root (as the ledger checks them against the
    /// agreed subtrees).
    fn decide(
        model: &LoadedModel,
        job: &JobSpec,
        runs: [&JobRun; 2],
        evidence: &LengthEvidence,
        evidence_run: &JobRun,
    ) -> Result<LengthFinding, ArbiterError> {
        let in_trace = |index: u64, leaf: &Hash, siblings: &[Hash]| {
            let proof = Proof {
                siblings: siblings.to_vec(),
            };
            Trace::verify(
                &evidence_run.trace_root,
                evidence_run.step_count(),
                index,
                leaf,
                &proof,
            )
        };
        let decoded = LengthEvidence::decode(&evidence.encode())?;
        assert_eq!(&decoded, evidence);
        arbitrate_length(
            &model.commitments(),
            job,
            &runs[0].ids_commitment(),
            runs.map(JobRun::step_count),
            &decoded,
            &in_trace,
        )
    }

    /// With SmolLM2: a run that stops one token early (`stop-early`) and a run that goes on
    /// past a stop sequence share their common steps with the honest run, and the agreed
    /// samples say which length is right; a forged sample is refused.
    #[test]
    fn the_agreed_samples_decide_a_generation_length() {
        let model = smollm2();
        let full = job(6, &[]);
        let honest = run_job(&model, &full, 2, None).unwrap();
        assert_eq!(
            honest.work_units, 6,
            "the prompt must not end before max_tokens"
        );
        let early = run_job(&model, &job(5, &[]), 2, None).unwrap();
        assert!(early.step_count() < honest.step_count());
        let common = early.step_count();
        let evidence = honest.length_evidence(&model, common).unwrap();
        assert_eq!(evidence.samples.len(), 5);
        // No sample of the 5 common tokens ends the generation: the shorter run stopped early.
        let finding = decide(&model, &full, [&early, &honest], &evidence, &honest).unwrap();
        assert_eq!(
            finding,
            LengthFinding {
                fits: [true, true],
                stop_steps: None
            }
        );
        // A stop sequence (a character a third into the text) ends the honest run where it is
        // completed; a run that ignores it and goes on to 6 tokens is too long.
        let text = String::from_utf8(honest.output.clone()).unwrap();
        let chars: Vec<char> = text.chars().collect();
        let stop = chars[chars.len() / 3].to_string();
        let stopping = job(6, &[&stop]);
        let stopped = run_job(&model, &stopping, 2, None).unwrap();
        assert!(stopped.step_count() < honest.step_count());
        let evidence = honest
            .length_evidence(&model, stopped.step_count())
            .unwrap();
        eprintln!(
            "length evidence: {} common steps of {}, {} samples, {} bytes (tokenizer {} bytes)",
            stopped.step_count(),
            honest.step_count(),
            evidence.samples.len(),
            evidence.encode().len(),
            evidence.tokenizer.len()
        );
        let finding = decide(&model, &stopping, [&honest, &stopped], &evidence, &honest).unwrap();
        assert_eq!(finding.stop_steps, Some(stopped.step_count()));
        assert_eq!(finding.fits, [true, true]);
        // A sample changed to another token no longer opens in the trace.
        let mut forged = evidence.clone();
        forged.samples[1].values[0] += 1.0;
        assert!(matches!(
            decide(&model, &stopping, [&honest, &stopped], &forged, &honest),
            Err(ArbiterError::LeafOpening { .. })
        ));
        // Evidence of another prompt is refused.
        let mut other = evidence.clone();
        other.ids.push(1);
        assert!(matches!(
            decide(&model, &stopping, [&honest, &stopped], &other, &honest),
            Err(ArbiterError::IdsCommitment)
        ));
    }

    /// Hostile length evidence: every truncation and a trailing byte are refused.
    #[test]
    fn hostile_length_evidence_is_refused() {
        let evidence = LengthEvidence {
            config: b"cfg".to_vec(),
            tokenizer: vec![1, 2, 3],
            ids: vec![4, 5],
            samples: vec![crate::LeafOpening {
                index: 9,
                rows: 1,
                columns: 1,
                values: vec![42.0],
                siblings: vec![[7; 32]],
            }],
        };
        let bytes = evidence.encode();
        assert_eq!(LengthEvidence::decode(&bytes).unwrap(), evidence);
        for len in 0..bytes.len() {
            assert!(
                LengthEvidence::decode(&bytes[..len]).is_err(),
                "prefix {len}"
            );
        }
        let mut trailing = bytes;
        trailing.push(0);
        assert!(LengthEvidence::decode(&trailing).is_err());
    }
}

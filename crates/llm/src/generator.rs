//! The generation loop: passes of the graph, trace leaves, token choice, streaming text.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use piazza_engine::trace::tensor_step_hash;
use piazza_engine::weights::Weights;
use std::borrow::Cow;
use std::collections::BTreeMap;

use piazza_tensor::kernels::{self, CausalShape};
use piazza_tensor::quant::{self, QuantMatrix};
use piazza_tensor::{ops, Activation, Compute, Tensor};
use piazza_trace::trace::Trace;
use piazza_trace::weights::{self as commitment, ChunkHasher, WeightCommitment};
use piazza_trace::Hash;

use crate::gguf::Gguf;
use crate::graph::{Cache, GenerationLayout, Graph, JobInput, Op, OpKind, Parts, Source, Step};
use crate::leaves;
use crate::model::{self, LlamaConfig, NumericProfile};
use crate::sampling::{self, SamplingParams};
use crate::text::StopText;
use crate::tokenizer::{Message, Tokenizer};
use crate::{Error, Result};

/// Most tokens in one sequence (prompt + generated), whatever the model's context length:
/// bounds the KV cache and the largest attention step (`4096 × 192 × 2` floats = 6 MiB).
pub const SEQUENCE_TOKENS_MAX: usize = 4096;

/// Rows of logits an auditor's single pass computes at a time (12 MiB of SmolLM2's 49 152-wide
/// rows): the output weight is read once per block, and the `[tokens, vocab]` logits of a long
/// generation are never held at once.
const LOGIT_ROWS: usize = 64;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    /// Most new tokens (≥ 1).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop when the text contains one of these; the text ends before it.
    pub stop: Vec<String>,
    /// Stop at the end-of-sequence token (not part of the text).
    pub stop_at_eos: bool,
}

impl GenerateParams {
    pub fn greedy(max_tokens: usize) -> GenerateParams {
        GenerateParams {
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop: Vec::new(),
            stop_at_eos: true,
        }
    }
}

/// One new token, as it is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEvent {
    /// 0 for the first new token.
    pub index: usize,
    pub id: u32,
    /// Text that became final with this token (may be empty: an incomplete UTF-8 character,
    /// a control token, or text that may begin a stop sequence is held back).
    pub text: String,
}

/// A deterministic restriction of token choice (constrained decoding, docs/grammar.md): the
/// ids that may be new token number `generated.len()` after the new tokens `generated`. The
/// sample op excludes every other id before sampling, in a generation and when a step is
/// re-executed, so a filtered run's trace is reproduced only with the same filter.
pub trait TokenFilter: Send + Sync {
    /// Set `allowed[id]` (one entry per vocabulary id) for each allowed id; at least one.
    fn allowed(&self, generated: &[u32], allowed: &mut [bool]) -> std::result::Result<(), String>;
}

/// How [`Generator::generate_with`] runs.
#[derive(Clone, Copy, Default)]
pub struct RunOptions<'a> {
    /// Stop with [`Error::Cancelled`] at the next token once set.
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
    /// Restrict each token choice.
    pub filter: Option<&'a dyn TokenFilter>,
    /// Keep every op output (a [`Recording`]; memory grows with the run).
    pub record: bool,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    MaxTokens,
    Eos,
    Stop,
    /// The sequence reached [`SEQUENCE_TOKENS_MAX`] or the model's context.
    Context,
}

/// A finished generation.
#[derive(Clone, Debug)]
pub struct Generation {
    /// New token ids (including the end-of-sequence token when it ended the generation).
    pub ids: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub trace: Trace,
    pub prompt_tokens: usize,
}

impl Generation {
    pub fn trace_root(&self) -> Hash {
        self.trace.root
    }

    pub fn step_count(&self) -> usize {
        self.trace.step_hashes.len()
    }
}

/// Everything a generation computed: the graph and every op output (for re-execution tests
/// and for answering a challenge).
#[derive(Clone, Debug)]
pub struct Recording {
    pub graph: Graph,
    pub prompt: Vec<u32>,
    pub outputs: Vec<Tensor>,
}

impl Recording {
    /// The logits `[1, vocab]` computed by pass `pass` (0: after the prompt).
    pub fn logits(&self, pass: usize) -> Option<&Tensor> {
        let end = match self.graph.pass_starts.get(pass + 1) {
            Some(&next) => next,
            None if pass < self.graph.pass_starts.len() => self.graph.ops.len(),
            None => return None,
        };
        // Each pass ends with `logits`, then `sample`.
        self.outputs.get(end.checked_sub(2)?)
    }

    /// The activation inputs of step `index`, restricted to the rows it reads.
    pub fn step_inputs(&self, index: usize) -> Result<Vec<Tensor>> {
        let step = self.graph.steps.get(index).ok_or_else(|| Error::Input {
            detail: format!("step {index} of {}", self.graph.steps.len()),
        })?;
        let op = self.graph.ops.get(step.op).ok_or_else(|| Error::Input {
            detail: format!(
                "step {index} names op {} of {}",
                step.op,
                self.graph.ops.len()
            ),
        })?;
        let prompt = prompt_tensor(&self.prompt)?;
        let output = |i: usize| self.outputs.get(i);
        op.activations()
            .enumerate()
            .map(|(i, source)| {
                let full = resolve(source, &prompt, &output)?;
                restrict(op, i, &full, &step.rows, &step.columns)
            })
            .collect()
    }
}

/// A loaded model: configuration, weights (as its numeric profile holds them), tokenizer.
pub struct Generator {
    config: LlamaConfig,
    profile: NumericProfile,
    /// f32 weights: all of them (F32 profile), or those not held in blocks (Quantized).
    weights: Weights,
    /// Matrices held in quantized blocks (Quantized profile only).
    quantized: BTreeMap<String, QuantMatrix>,
    /// Quantized profile: the committed weights (f32 block encoding) for evidence, built on
    /// first use.
    committed: OnceLock<Weights>,
    tokenizer: Tokenizer,
    output_weight: &'static str,
    commitment: OnceLock<WeightCommitment>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn prompt_tensor(ids: &[u32]) -> Result<Tensor> {
    let values = ids.iter().map(|&id| id as f32).collect();
    Tensor::from_vec(values, &[ids.len(), 1]).map_err(|source| Error::Tensor {
        op: "prompt".into(),
        source,
    })
}

fn tensor_error(op: &Op) -> impl Fn(piazza_tensor::Error) -> Error + '_ {
    move |source| Error::Tensor {
        op: op.name.clone(),
        source,
    }
}

impl piazza_trace::graph::StepExecutor for Generator {
    type Graph = Graph;
    type Block = Tensor;
    type Error = Error;

    fn execute_step(&self, graph: &Graph, index: usize, inputs: &[Tensor]) -> Result<Tensor> {
        Generator::execute_step(self, graph, index, inputs)
    }

    fn step_leaf(&self, index: usize, output: &Tensor) -> Hash {
        Generator::step_leaf(index, output)
    }
}

/// Resolve an activation source to a tensor (stacks are concatenated by rows).
/// An activation from the op outputs kept so far (`output(i)`: op `i`'s, when kept). A lookup
/// rather than a slice so the generator never copies its list of outputs per op (that copy made
/// a long generation quadratic in its op count).
fn resolve<'t>(
    source: &Source,
    prompt: &Tensor,
    output: &dyn Fn(usize) -> Option<&'t Tensor>,
) -> Result<Tensor> {
    let missing = |detail: String| Error::Input { detail };
    match source {
        Source::Input(JobInput::TokenIds) => Ok(prompt.clone()),
        Source::Op(i) => output(*i)
            .cloned()
            .ok_or_else(|| missing(format!("output of op {i} is not available"))),
        Source::Weight(name) => Err(missing(format!("weight {name} is not an activation"))),
        Source::Rows(_) | Source::Series { .. } => {
            let parts: Vec<Tensor> = source
                .parts()
                .into_iter()
                .flatten()
                .map(|p| resolve(&p, prompt, output))
                .collect::<Result<_>>()?;
            // One part (a single pass's KV cache) is that part, not a copy of it.
            if let [part] = parts.as_slice() {
                if part.rank() == 2 && part.as_slice().is_some() {
                    return Ok(part.clone());
                }
            }
            let width = parts
                .first()
                .map_or(1, |t| t.shape().get(1).copied().unwrap_or(0));
            let mut values = Vec::new();
            let mut rows = 0;
            for part in &parts {
                if part.rank() != 2 || part.shape()[1] != width {
                    return Err(missing(
                        "stacked inputs must be matrices of one width".into(),
                    ));
                }
                rows += part.shape()[0];
                values.extend_from_slice(&part.contiguous().to_vec());
            }
            Tensor::from_vec(values, &[rows, width]).map_err(|source| Error::Tensor {
                op: "stack".into(),
                source,
            })
        }
    }
}

/// Rows of activation input `input` that output rows `rows` of `op` read.
fn restrict(
    op: &Op,
    input: usize,
    full: &Tensor,
    rows: &Range<usize>,
    columns: &Range<usize>,
) -> Result<Tensor> {
    let lacks = |what: String| Error::Step {
        op: op.name.clone(),
        detail: format!("input {input} {:?} lacks {what}", full.shape()),
    };
    let mut tensor = full.clone();
    if let Some(range) = op.input_rows(input, rows) {
        if tensor.rank() != 2 || range.end > tensor.shape()[0] {
            return Err(lacks(format!("rows {range:?}")));
        }
        tensor = tensor
            .rows(range.start, range.len())
            .map_err(tensor_error(op))?;
    }
    if let Some(range) = op.input_columns(input, columns) {
        if tensor.rank() != 2 || range.end > tensor.shape()[1] {
            return Err(lacks(format!("columns {range:?}")));
        }
        if range != (0..tensor.shape()[1]) {
            tensor = tensor
                .narrow(1, range.start, range.len())
                .map_err(tensor_error(op))?
                .contiguous();
        }
    }
    Ok(tensor)
}

/// Hash a `[rows, columns]` block of `output` (width `width`) as trace leaf `index`.
fn block_hash(index: usize, output: &[f32], width: usize, step: &Step) -> Hash {
    leaves::block_leaf(
        index,
        output,
        width,
        step.rows.clone(),
        step.columns.clone(),
    )
}

fn token_id(value: f32, vocab: usize, op: &Op) -> Result<u32> {
    if value >= 0.0 && value.fract() == 0.0 && (value as usize) < vocab {
        Ok(value as u32)
    } else {
        Err(Error::Step {
            op: op.name.clone(),
            detail: format!("{value} is not a token id below {vocab}"),
        })
    }
}

impl Generator {
    /// Load a GGUF file (validated; see docs/llm.md §1).
    pub fn load(path: impl AsRef<Path>) -> Result<Generator> {
        let file = Gguf::open(path.as_ref())?;
        Generator::from_gguf(&file)
    }

    pub fn from_gguf(file: &Gguf) -> Result<Generator> {
        Generator::from_gguf_with(file, NumericProfile::F32)
    }

    /// Load a GGUF file for numeric profile `profile` (docs/llm.md §2.1).
    pub fn load_with(path: impl AsRef<Path>, profile: NumericProfile) -> Result<Generator> {
        let file = Gguf::open(path.as_ref())?;
        if profile == NumericProfile::F32 {
            return Generator::from_gguf_with(&file, profile);
        }
        // The quantized weights are read while the file is released behind them.
        let config = LlamaConfig::from_gguf(&file)?;
        let tokenizer = Tokenizer::from_gguf(&file, config.vocab)?;
        let output_weight = model::output_weight_name(&file);
        let (weights, quantized) = model::drain_quantized_weights(file, &config)?;
        Ok(Generator::assemble(
            config,
            profile,
            tokenizer,
            output_weight,
            (weights, quantized),
        ))
    }

    pub fn from_gguf_with(file: &Gguf, profile: NumericProfile) -> Result<Generator> {
        let config = LlamaConfig::from_gguf(file)?;
        let tokenizer = Tokenizer::from_gguf(file, config.vocab)?;
        let loaded = match profile {
            NumericProfile::F32 => (model::load_weights(file, &config)?, BTreeMap::new()),
            NumericProfile::Quantized => model::load_quantized_weights(file, &config)?,
        };
        let output_weight = model::output_weight_name(file);
        Ok(Generator::assemble(
            config,
            profile,
            tokenizer,
            output_weight,
            loaded,
        ))
    }

    fn assemble(
        config: LlamaConfig,
        profile: NumericProfile,
        tokenizer: Tokenizer,
        output_weight: &'static str,
        (weights, quantized): (Weights, BTreeMap<String, QuantMatrix>),
    ) -> Generator {
        Generator {
            output_weight,
            commitment: OnceLock::new(),
            committed: OnceLock::new(),
            config,
            profile,
            weights,
            quantized,
            tokenizer,
        }
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn profile(&self) -> NumericProfile {
        self.profile
    }

    /// The quantized matrix `name` (Quantized profile; `None` for f32 weights).
    pub fn quantized_matrix(&self, name: &str) -> Option<&QuantMatrix> {
        self.quantized.get(name)
    }

    /// Bytes the weights take in memory (f32 tensors and quantized blocks).
    pub fn weight_bytes(&self) -> usize {
        let f32_bytes: usize = self
            .weights
            .manifest()
            .iter()
            .map(|e| e.shape.iter().product::<usize>() * 4)
            .sum();
        f32_bytes
            + self
                .quantized
                .values()
                .map(QuantMatrix::memory_bytes)
                .sum::<usize>()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The committed weights: the f32 tensors, and (Quantized profile) every quantized matrix
    /// in its f32 block encoding, built on first use (for evidence; ~4.1 bytes per weight).
    pub fn weights(&self) -> &Weights {
        if self.quantized.is_empty() {
            return &self.weights;
        }
        self.committed.get_or_init(|| {
            let mut tensors = BTreeMap::new();
            for (name, shape) in self.committed_shapes() {
                let tensor = match self.quantized.get(&name) {
                    Some(matrix) => {
                        let mut values = Vec::with_capacity(shape.iter().product());
                        for row in 0..matrix.rows() {
                            matrix.encode_row(row, &mut values);
                        }
                        Tensor::from_vec(values, &shape).ok()
                    }
                    None => self.weights.tensor(&name).cloned(),
                };
                if let Some(tensor) = tensor {
                    tensors.insert(name, tensor);
                }
            }
            Weights::from_tensors(tensors)
        })
    }

    /// Name and shape of every committed tensor, in name order: f32 tensors as they are,
    /// quantized matrices as `[rows, encoded columns]`.
    fn committed_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut shapes: BTreeMap<String, Vec<usize>> = self
            .weights
            .manifest()
            .into_iter()
            .map(|e| (e.name, e.shape))
            .collect();
        for (name, matrix) in &self.quantized {
            shapes.insert(name.clone(), vec![matrix.rows(), matrix.encoded_cols()]);
        }
        shapes.into_iter().collect()
    }

    /// Token ids of `text` (no BOS; control tokens such as `<|im_start|>` matched whole).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// The model's chat template applied to `messages`, with the assistant generation prompt.
    pub fn apply_chat_template(&self, messages: &[Message]) -> Result<String> {
        self.tokenizer.apply_chat_template(messages)
    }

    /// The commitment to the f32 weights the decoder computes with (after dequantization and
    /// the Q/K un-permutation), in piazza-engine's chunked scheme. Hashes ~540 MB on first use,
    /// then kept.
    pub fn weights_commitment(&self) -> WeightCommitment {
        self.weight_commitment().clone()
    }

    /// [`Generator::weights_commitment`], borrowed (computed on first use).
    pub fn weight_commitment(&self) -> &WeightCommitment {
        self.commitment.get_or_init(|| {
            if self.quantized.is_empty() {
                return self.weights.commit();
            }
            // Streamed row by row: the encoded blob is never held.
            let shapes = self.committed_shapes();
            let mut hasher = ChunkHasher::new();
            let mut row = Vec::new();
            for (name, _) in &shapes {
                if let Some(matrix) = self.quantized.get(name) {
                    for r in 0..matrix.rows() {
                        row.clear();
                        matrix.encode_row(r, &mut row);
                        hasher.push_f32s(&row);
                    }
                } else if let Some(tensor) = self.weights.tensor(name) {
                    hasher.push_f32s(&tensor.to_vec());
                }
            }
            let manifest =
                commitment::manifest(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())));
            WeightCommitment::new(manifest, hasher.finish())
        })
    }

    /// Name of the output projection's weight (`output.weight`, or the tied
    /// `token_embd.weight`).
    pub fn output_weight(&self) -> &'static str {
        self.output_weight
    }

    /// BLAKE3 over the tokenizer metadata (docs/llm.md §6).
    /// The text a generation of new tokens `ids` with `params` returns (the end token, when it
    /// stops generation, is not text; the text ends before the first stop sequence): what the
    /// arbiter and the daemons recompute from the ids, by the generator's own
    /// [`crate::text::StopText`].
    pub fn generation_text(&self, ids: &[u32], params: &GenerateParams) -> String {
        let eos = self.tokenizer.eos.filter(|_| params.stop_at_eos);
        crate::text::generation_text(ids, |id| self.tokenizer.token_bytes(id), eos, &params.stop)
    }

    pub fn tokenizer_hash(&self) -> Hash {
        self.tokenizer.hash()
    }

    /// Generate from `prompt_ids`, calling `on_token` for each new token.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        params: &GenerateParams,
        threads: usize,
        on_token: impl FnMut(TokenEvent),
    ) -> Result<Generation> {
        Ok(self
            .run(
                prompt_ids,
                params,
                Compute::new(threads),
                on_token,
                false,
                None,
            )?
            .0)
    }

    /// [`Generator::generate`] that stops with [`Error::Cancelled`] at the next token once
    /// `cancel` is set (a provider's job expired or went to another provider).
    pub fn generate_until(
        &self,
        prompt_ids: &[u32],
        params: &GenerateParams,
        threads: usize,
        on_token: impl FnMut(TokenEvent),
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<Generation> {
        Ok(self
            .run(
                prompt_ids,
                params,
                Compute::new(threads),
                on_token,
                false,
                Some(cancel),
            )?
            .0)
    }

    /// Generate with `options` (cancellation, a token filter, a recording).
    pub fn generate_with(
        &self,
        prompt_ids: &[u32],
        params: &GenerateParams,
        compute: Compute,
        options: RunOptions<'_>,
        on_token: impl FnMut(TokenEvent),
    ) -> Result<(Generation, Option<Recording>)> {
        self.run_filtered(prompt_ids, params, compute, on_token, options)
    }

    /// [`Generator::execute_step`] for a generation whose token choices `filter` restricted
    /// (only the sample steps differ).
    pub fn execute_step_filtered(
        &self,
        graph: &Graph,
        index: usize,
        inputs: &[Tensor],
        filter: &dyn TokenFilter,
    ) -> Result<Tensor> {
        let op = graph
            .steps
            .get(index)
            .and_then(|step| graph.ops.get(step.op));
        match op {
            Some(op) if matches!(op.kind, OpKind::Sample { .. }) => {
                let inputs: Vec<Input> = inputs.iter().map(Input::Tensor).collect();
                filtered_sample(&self.config, op, &inputs, filter)
            }
            _ => self.execute_step(graph, index, inputs),
        }
    }

    /// [`Generator::generate`] that also keeps every op output (memory grows with the run).
    pub fn generate_recorded(
        &self,
        prompt_ids: &[u32],
        params: &GenerateParams,
        compute: Compute,
    ) -> Result<(Generation, Recording)> {
        let (generation, recording) = self.run(prompt_ids, params, compute, |_| {}, true, None)?;
        let recording = recording.ok_or_else(|| Error::Input {
            detail: "no recording".into(),
        })?;
        Ok((generation, recording))
    }

    /// Logits after `prompt_ids` (one prefill pass; no sampling trace is returned).
    pub fn next_token_logits(&self, prompt_ids: &[u32], threads: usize) -> Result<Vec<f32>> {
        let params = GenerateParams::greedy(1);
        let (_, recording) = self.run(
            prompt_ids,
            &params,
            Compute::new(threads),
            |_| {},
            true,
            None,
        )?;
        let recording = recording.ok_or_else(|| Error::Input {
            detail: "no recording".into(),
        })?;
        recording
            .logits(0)
            .map(Tensor::to_vec)
            .ok_or_else(|| Error::Input {
                detail: "no logits".into(),
            })
    }

    /// The logits that chose each of `ids` after `prompt_ids` (row `i`: the logits after the
    /// prompt and `ids[..i]`), from one prefill-shaped pass over the prompt and the tokens
    /// ([`Graph::audit_pass`]). Every operator is row-independent, so each row equals, bit for
    /// bit, the logits the generation's own pass computed.
    pub fn audit_logits(
        &self,
        prompt_ids: &[u32],
        ids: &[u32],
        threads: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let logits = self.audit_pass_logits(prompt_ids, ids, threads)?;
        Ok(logits
            .as_slice()
            .unwrap_or_default()
            .chunks_exact(self.config.vocab)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// [`Generator::audit_logits`] as one `[ids, vocab]` tensor.
    fn audit_pass_logits(&self, prompt_ids: &[u32], ids: &[u32], threads: usize) -> Result<Tensor> {
        let Some((_, fed)) = ids.split_last() else {
            return Err(Error::Input {
                detail: "no generated tokens to audit".into(),
            });
        };
        let all: Vec<u32> = prompt_ids.iter().chain(fed).copied().collect();
        let limit = SEQUENCE_TOKENS_MAX.min(self.config.context);
        if prompt_ids.is_empty() || all.len() > limit {
            return Err(Error::Input {
                detail: format!("{} tokens to audit (1..={limit})", all.len()),
            });
        }
        if let Some(&id) = all.iter().find(|&&id| id as usize >= self.config.vocab) {
            return Err(Error::Input {
                detail: format!("token id {id} is outside the vocabulary"),
            });
        }
        let graph = Graph::audit_pass(
            &self.config,
            self.output_weight,
            all.len(),
            prompt_ids.len() - 1,
        );
        self.run_audit_pass(
            &graph,
            &all,
            graph.ops.len(),
            Compute::new(threads),
            |_, _| Ok(()),
        )
    }

    /// Runs the first `until` ops of the single pass `graph` ([`Graph::audit_pass`]) over the
    /// token ids `all`, handing each op's whole output to `on_output` (op index, output) as it
    /// is computed; an output is dropped after its last reader. Returns the last op's output
    /// (with every op, the logits).
    fn run_audit_pass(
        &self,
        graph: &Graph,
        all: &[u32],
        until: usize,
        compute: Compute,
        mut on_output: impl FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let all_values = prompt_tensor(all)?;
        let last_reader = pass_last_readers(&graph.ops, 0);
        let mut quantized_input = QuantizedInput::default();
        let mut outputs: Vec<Option<Tensor>> = Vec::with_capacity(graph.ops.len());
        for (op_index, op) in graph.ops.iter().enumerate().take(until) {
            let [op_rows, width] = op.output_shape;
            let view = |i: usize| outputs.get(i).and_then(Option::as_ref);
            let tensors = op
                .activations()
                .enumerate()
                .map(|(i, s)| {
                    let full = resolve(s, &all_values, &view)?;
                    restrict(op, i, &full, &(0..op_rows), &(0..width))
                })
                .collect::<Result<Vec<_>>>()?;
            let inputs: Vec<Input> = tensors.iter().map(Input::Tensor).collect();
            let output = self.compute_op(op, &inputs, compute, Some(&mut quantized_input))?;
            on_output(op_index, &output)?;
            outputs.push(Some(output));
            for i in op.activations().flat_map(|s| source_ops(s, 0)) {
                if last_reader.get(i) == Some(&op_index) {
                    outputs[i] = None;
                }
            }
        }
        outputs.pop().flatten().ok_or_else(|| Error::Input {
            detail: "an audit pass without ops".into(),
        })
    }

    /// Check a generation with one pass ([`Generator::audit_logits`]): the index of the first
    /// of `ids` that the sampling rule (§5, with `params` and the token's index) does not choose
    /// from its logits, or `None` when every token is reproduced. Where the generation stops
    /// (end of sequence, stop text, length) is checked from the ids as for any result.
    pub fn audit(
        &self,
        prompt_ids: &[u32],
        ids: &[u32],
        params: &GenerateParams,
        threads: usize,
    ) -> Result<Option<usize>> {
        params
            .sampling
            .validate()
            .map_err(|detail| Error::Input { detail })?;
        let logits = self.audit_pass_logits(prompt_ids, ids, threads)?;
        let rows = logits
            .as_slice()
            .unwrap_or_default()
            .chunks_exact(self.config.vocab);
        let mut history = prompt_ids.to_vec();
        for (index, (row, &id)) in rows.zip(ids).enumerate() {
            if sampling::sample(row, &history, &params.sampling, index as u64) != id {
                return Ok(Some(index));
            }
            history.push(id);
        }
        Ok(None)
    }

    /// The generation of `params` after `prompt`, trace included, from one prefill-shaped pass
    /// over the prompt and `draft` (the new tokens as a verifier expects them, e.g. a posted
    /// text tokenized) instead of one pass per token. Every operator is row-independent, so
    /// each decode pass's op outputs are rows of the single pass's outputs, bit for bit; they
    /// are hashed as that pass's trace leaves (docs/llm.md §4). Tokens are chosen from each
    /// row's logits by the sample op (with `filter`, as [`Generator::generate_with`]), so the
    /// draft only decides which rows are computed. `None` when the draft does not carry the
    /// generation to its end: a chosen token differs from the draft's, or the generation goes
    /// on past the draft (only a step-by-step run gives its trace then).
    pub fn generate_from_draft(
        &self,
        prompt: &[u32],
        draft: &[u32],
        params: &GenerateParams,
        compute: Compute,
        filter: Option<&dyn TokenFilter>,
    ) -> Result<Option<Generation>> {
        let limit = self.check_request(prompt, params)?;
        let vocab = self.config.vocab;
        if let Some(&id) = draft.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::Input {
                detail: format!("draft token id {id} is outside the vocabulary"),
            });
        }
        // Draft tokens fed to later passes: one fewer than the tokens asked, within the limit.
        let fed = draft
            .len()
            .min(params.max_tokens - 1)
            .min(limit - prompt.len());
        let draft = &draft[..fed];
        let all: Vec<u32> = prompt.iter().chain(draft).copied().collect();
        let (prompt_rows, passes) = (prompt.len(), fed + 1);
        let single =
            Graph::audit_pass(&self.config, self.output_weight, all.len(), prompt_rows - 1);
        // Of the generation's graph only the steps are read, and the sample ops run: its
        // layout gives them without listing every pass.
        let layout = GenerationLayout::new(
            &self.config,
            self.output_weight,
            prompt_rows,
            passes,
            &params.sampling,
        );
        // A pass is its layer ops, then output norm, logits and sample; the single pass has
        // the same layer ops, then output norm and logits over rows `prompt_rows - 1..`.
        let layer_ops = single.ops.len().saturating_sub(2);
        let mut leaves: Vec<Option<Hash>> = vec![None; layout.step_count()];
        // The steps of generation op `gen_op` and where their blocks are, once its block
        // (from row `first_row` of a single-pass output `width` wide) is checked to lie in
        // that output.
        let op_blocks = |gen_op: usize, width: usize, first_row: usize, values: &[f32]| {
            let op = layout.op(gen_op).filter(|op| {
                let [rows, op_width] = op.output_shape;
                op_width == width && (first_row + rows) * width <= values.len()
            });
            op.map(|op| (op.steps, op.first_block)).ok_or_else(|| Error::Step {
                op: layout
                    .op_listed(gen_op)
                    .map_or_else(|| format!("op {gen_op}"), |op| op.name),
                detail: format!(
                    "rows {first_row}.. of a single-pass output of width {width} do not hold its output"
                ),
            })
        };
        // Holds the leaves of op `op_index` of the single pass in every pass of `passes`,
        // `row_of(pass)` the first row of that pass's block in `output`; they are hashed with
        // other ops' once `HELD_BYTES` are held.
        let mut held = HeldLeaves::default();
        let hold_op = |held: &mut HeldLeaves,
                       leaves: &mut [Option<Hash>],
                       op_index: usize,
                       output: &Tensor,
                       passes: Range<usize>,
                       row_of: &dyn Fn(usize) -> usize|
         -> Result<()> {
            let width = output.shape().get(1).copied().unwrap_or(0);
            let values = output.as_slice().unwrap_or_default();
            let mut blocks = Vec::with_capacity(passes.len());
            for pass in passes {
                let gen_op = layout.pass_start(pass) + op_index;
                let first_row = row_of(pass);
                let (steps, first_block) = op_blocks(gen_op, width, first_row, values)?;
                blocks.push((steps, first_block, first_row));
            }
            held.hold(output, &blocks, width);
            if held.full() {
                held.hash(layout.steps(), compute, |index, hash| {
                    leaves[index] = Some(hash)
                });
            }
            Ok(())
        };
        // Every op but the logits in one pass; the logits op (`[passes, vocab]`: 201 MB at
        // 1024 tokens) in blocks of `LOGIT_ROWS` rows, each hashed and sampled before the next.
        let logits_op = single.ops.len() - 1;
        let normed =
            self.run_audit_pass(&single, &all, logits_op, compute, |op_index, output| {
                let row_of = |pass: usize| match (op_index < layer_ops, pass) {
                    (true, 0) => 0,
                    (true, _) => prompt_rows + pass - 1,
                    (false, _) => pass,
                };
                hold_op(&mut held, &mut leaves, op_index, output, 0..passes, &row_of)
            })?;
        let head = &single.ops[logits_op];
        let mut ids = Vec::new();
        let mut history: Vec<f32> = prompt.iter().map(|&id| id as f32).collect();
        let mut text = StopText::new(&params.stop);
        let mut finish = None;
        'blocks: for first in (0..passes).step_by(LOGIT_ROWS) {
            let count = LOGIT_ROWS.min(passes - first);
            let rows = normed.rows(first, count).map_err(tensor_error(head))?;
            let block_op = Op {
                output_shape: [count, vocab],
                ..head.clone()
            };
            let inputs = [Input::Tensor(&rows)];
            let mut quantized = QuantizedInput::default();
            let logits = self.compute_op(&block_op, &inputs, compute, Some(&mut quantized))?;
            let block_rows = |pass: usize| pass - first;
            hold_op(
                &mut held,
                &mut leaves,
                logits_op,
                &logits,
                first..first + count,
                &block_rows,
            )?;
            let logits = logits.as_slice().unwrap_or_default();
            for (offset, row) in logits.chunks_exact(vocab).enumerate() {
                let index = first + offset;
                let sample_op = layout.pass_start(index) + layer_ops + 2;
                let op = &layout.op_listed(sample_op).ok_or_else(|| Error::Input {
                    detail: format!("pass {index} has no sample op"),
                })?;
                let inputs = [
                    Input::Matrix {
                        values: row,
                        shape: [1, vocab],
                    },
                    Input::Matrix {
                        values: &history,
                        shape: [history.len(), 1],
                    },
                ];
                let chosen = match filter {
                    Some(filter) => filtered_sample(&self.config, op, &inputs, filter)?,
                    None => self.compute_op(op, &inputs, compute, None)?,
                };
                let value = chosen.as_slice().unwrap_or_default();
                let (steps, first_block) = op_blocks(sample_op, 1, 0, value)?;
                for (index, step) in
                    steps.zip(layout.steps().get(first_block..).unwrap_or_default())
                {
                    leaves[index] = Some(block_hash(index, value, 1, step));
                }
                let id = token_id(value.first().copied().unwrap_or(-1.0), vocab, op)?;
                ids.push(id);
                history.push(id as f32);
                finish = self.finish_after(id, ids.len(), prompt_rows + index, params, &mut text);
                if finish.is_some() {
                    break 'blocks;
                }
                if draft.get(index) != Some(&id) {
                    return Ok(None);
                }
            }
        }
        let Some(finish) = finish else {
            return Ok(None);
        };
        held.hash(layout.steps(), compute, |index, hash| {
            leaves[index] = Some(hash)
        });
        // The steps of the passes that ran: a prefix of the graph's.
        let step_count = layout.pass_first_step(ids.len().min(passes));
        let leaves = leaves
            .into_iter()
            .take(step_count)
            .enumerate()
            .map(|(index, leaf)| {
                leaf.ok_or_else(|| Error::Input {
                    detail: format!("step {index} has no output in the single pass"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Generation {
            ids,
            text: text.into_text(),
            finish,
            trace: Trace::from_leaves(leaves),
            prompt_tokens: prompt_rows,
        }))
    }

    /// The graph of a generation of `new_tokens` tokens after `prompt_tokens` prompt tokens
    /// with `sampling` (equal to [`Recording::graph`] of that run).
    pub fn generation_graph(
        &self,
        prompt_tokens: usize,
        new_tokens: usize,
        sampling: &SamplingParams,
    ) -> Graph {
        Graph::for_generation(
            &self.config,
            self.output_weight,
            prompt_tokens,
            new_tokens,
            sampling,
        )
    }

    /// Recompute step `index` of `graph` from its activation `inputs` (as
    /// [`Recording::step_inputs`] gives them) and the weights, on one thread. The result's
    /// [`piazza_trace::trace::step_hash`] equals the trace leaf.
    pub fn execute_step(&self, graph: &Graph, index: usize, inputs: &[Tensor]) -> Result<Tensor> {
        let step = graph.steps.get(index).ok_or_else(|| Error::Input {
            detail: format!("step {index} of {}", graph.steps.len()),
        })?;
        let op = graph.ops.get(step.op).ok_or_else(|| Error::Input {
            detail: format!("step {index} names op {} of {}", step.op, graph.ops.len()),
        })?;
        let weights = self.weight_refs(op)?;
        let inputs: Vec<Input> = inputs.iter().map(Input::Tensor).collect();
        compute_block_inputs(
            &self.config,
            op,
            (&step.rows, &step.columns),
            &inputs,
            &weights,
            Compute::new(1),
            None,
        )
    }

    /// The whole output of `op` from its whole activation inputs; a quantized matmul takes
    /// its quantized input from `quantized_input` when the op before it read the same tensor.
    fn compute_op(
        &self,
        op: &Op,
        inputs: &[Input],
        compute: Compute,
        quantized_input: Option<&mut QuantizedInput>,
    ) -> Result<Tensor> {
        let [rows, width] = op.output_shape;
        let weights = self.weight_refs(op)?;
        compute_block_inputs(
            &self.config,
            op,
            (&(0..rows), &(0..width)),
            inputs,
            &weights,
            compute,
            quantized_input,
        )
    }

    /// The weights `op` reads, whole, in its input order.
    fn weight_refs(&self, op: &Op) -> Result<Vec<Weight<'_>>> {
        op.weights()
            .map(|name| match self.quantized.get(name) {
                Some(matrix) => Ok(Weight::Quant(Cow::Borrowed(matrix))),
                None => self
                    .weights
                    .tensor(name)
                    .map(Weight::F32)
                    .ok_or_else(|| Error::MissingWeight { name: name.into() }),
            })
            .collect()
    }

    /// The leaf hash of step `index` whose output is `output`.
    pub fn step_leaf(index: usize, output: &Tensor) -> Hash {
        // For a [rows, columns] block this is `step_hash` (the same canonical bytes).
        tensor_step_hash(index, output)
    }

    /// Checks a generation request (valid sampling, a non-empty prompt of vocabulary ids that
    /// fits, at least one token asked); returns the sequence limit.
    fn check_request(&self, prompt: &[u32], params: &GenerateParams) -> Result<usize> {
        params
            .sampling
            .validate()
            .map_err(|detail| Error::Input { detail })?;
        if prompt.is_empty() {
            return Err(Error::Input {
                detail: "empty prompt".into(),
            });
        }
        if params.max_tokens == 0 {
            return Err(Error::Input {
                detail: "max_tokens must be at least 1".into(),
            });
        }
        let limit = SEQUENCE_TOKENS_MAX.min(self.config.context);
        if prompt.len() > limit {
            return Err(Error::Input {
                detail: format!("prompt of {} tokens exceeds {limit}", prompt.len()),
            });
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= self.config.vocab) {
            return Err(Error::Input {
                detail: format!("token id {id} is outside the vocabulary"),
            });
        }
        Ok(limit)
    }

    /// Whether the generation ends after its new token `id` (the `count`-th), the sequence
    /// having reached `position + 1` tokens; `text` takes the token's bytes (and is finished
    /// when the generation ends other than at a stop sequence).
    fn finish_after(
        &self,
        id: u32,
        count: usize,
        position: usize,
        params: &GenerateParams,
        text: &mut StopText,
    ) -> Option<FinishReason> {
        let limit = SEQUENCE_TOKENS_MAX.min(self.config.context);
        let eos = params.stop_at_eos && Some(id) == self.tokenizer.eos;
        let stopped = !eos && text.push(self.tokenizer.token_bytes(id));
        let finish = if stopped {
            Some(FinishReason::Stop)
        } else if eos {
            Some(FinishReason::Eos)
        } else if count >= params.max_tokens {
            Some(FinishReason::MaxTokens)
        } else if position + 1 > limit {
            Some(FinishReason::Context)
        } else {
            None
        };
        if finish.is_some() && finish != Some(FinishReason::Stop) {
            text.finish();
        }
        finish
    }

    fn run(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        compute: Compute,
        on_token: impl FnMut(TokenEvent),
        record: bool,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<(Generation, Option<Recording>)> {
        let options = RunOptions {
            cancel,
            filter: None,
            record,
        };
        self.run_filtered(prompt, params, compute, on_token, options)
    }

    fn run_filtered(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        compute: Compute,
        mut on_token: impl FnMut(TokenEvent),
        options: RunOptions<'_>,
    ) -> Result<(Generation, Option<Recording>)> {
        let RunOptions {
            cancel,
            filter,
            record,
        } = options;
        self.check_request(prompt, params)?;
        let prompt_values = prompt_tensor(prompt)?;
        let mut graph = Graph::default();
        let mut cache = Cache::default();
        let mut outputs: Vec<Option<Tensor>> = Vec::new();
        let mut kv_stacks = KvStacks::default();
        let mut quantized_input = QuantizedInput::default();
        let mut leaves = Vec::new();
        // Op outputs whose leaves are not hashed yet: a decode pass's, hashed together when the
        // pass ends (its leaves are single rows of a few KiB, one BLAKE3 chunk or three: one at
        // a time each is mostly single compressions, together they fill the SIMD lanes).
        let mut held = HeldLeaves::default();
        let mut ids = Vec::new();
        let mut text = StopText::new(&params.stop);
        let mut emitted = 0usize;
        let (mut rows, mut position) = (prompt.len(), 0usize);
        let finish = loop {
            if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
                return Err(Error::Cancelled { tokens: ids.len() });
            }
            let pass_start = graph.ops.len();
            let sample = graph.push_pass(
                &self.config,
                self.output_weight,
                &mut cache,
                rows,
                position,
                &params.sampling,
            );
            let first_step = leaves.len();
            // Without a recording, an output is dropped after its last reader in the pass (a
            // prefill's activations are never all held at once).
            let last_reader = if record {
                Vec::new()
            } else {
                pass_last_readers(&graph.ops, pass_start)
            };
            for op_index in pass_start..graph.ops.len() {
                let op = &graph.ops[op_index];
                let [op_rows, width] = op.output_shape;
                let view = |i: usize| outputs.get(i).and_then(Option::as_ref);
                let is_attention = matches!(op.kind, OpKind::Attention { .. });
                if is_attention {
                    for source in op.activations() {
                        kv_stacks.extend(source, &view)?;
                    }
                }
                let tensors = op
                    .activations()
                    .enumerate()
                    .map(|(i, s)| match s {
                        // The KV cache: read from its stack, not re-concatenated.
                        Source::Rows(_) | Source::Series { .. } if is_attention => Ok(None),
                        _ => restrict(
                            op,
                            i,
                            &resolve(s, &prompt_values, &view)?,
                            &(0..op_rows),
                            &(0..width),
                        )
                        .map(Some),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let inputs = op
                    .activations()
                    .zip(&tensors)
                    .map(|(source, tensor)| match tensor {
                        Some(tensor) => Ok(Input::Tensor(tensor)),
                        None => kv_stacks.input(source),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let output = match filter {
                    Some(filter) if matches!(op.kind, OpKind::Sample { .. }) => {
                        filtered_sample(&self.config, op, &inputs, filter)?
                    }
                    _ => self.compute_op(op, &inputs, compute, Some(&mut quantized_input))?,
                };
                held.add(&graph, op_index, &output, width, &mut leaves);
                if held.full() {
                    // A prefill's outputs are large: hashed `HELD_BYTES` at a time, never all held.
                    held.hash(&graph.steps, compute, |i, hash| leaves[i] = hash);
                }
                outputs.push(Some(output));
                if !record {
                    let op = &graph.ops[op_index];
                    for i in op.activations().flat_map(|s| source_ops(s, pass_start)) {
                        let last = i.checked_sub(pass_start).and_then(|at| last_reader.get(at));
                        if last == Some(&op_index) && i != sample {
                            if let Some(slot) = outputs.get_mut(i) {
                                *slot = None;
                            }
                        }
                    }
                }
            }
            held.hash(&graph.steps, compute, |i, hash| leaves[i] = hash);
            debug_assert!(first_step <= leaves.len());
            if !record {
                // Keep only what later passes read: the samples (the KV cache is in its
                // stacks, which the next pass extends by this pass's rows).
                for (i, slot) in outputs.iter_mut().enumerate().skip(pass_start) {
                    if i != sample {
                        *slot = None;
                    }
                }
                // Later passes read this pass's outputs, never its ops' names or inputs:
                // dropped, a long generation holds a few bytes per op instead of hundreds.
                for op in &mut graph.ops[pass_start..] {
                    op.name = String::new();
                    op.inputs = Vec::new();
                }
            }
            let chosen = outputs[sample].as_ref().map_or(0.0, |t| t.to_vec()[0]);
            let id = token_id(chosen, self.config.vocab, &graph.ops[sample])?;
            ids.push(id);
            position += rows;
            rows = 1;
            let finish = self.finish_after(id, ids.len(), position, params, &mut text);
            let safe_end = match finish {
                Some(_) => text.text().len(),
                None => text.safe_end(),
            };
            let piece = text
                .text()
                .get(emitted.min(safe_end)..safe_end)
                .unwrap_or("")
                .to_string();
            emitted = emitted.max(safe_end);
            on_token(TokenEvent {
                index: ids.len() - 1,
                id,
                text: piece,
            });
            if let Some(finish) = finish {
                break finish;
            }
        };
        let trace = Trace::from_leaves(leaves);
        let recording = record.then(|| Recording {
            graph,
            prompt: prompt.to_vec(),
            // Recording keeps every output, so indices are unchanged.
            outputs: outputs.into_iter().flatten().collect(),
        });
        Ok((
            Generation {
                ids,
                text: text.into_text(),
                finish,
                trace,
                prompt_tokens: prompt.len(),
            },
            recording,
        ))
    }
}

/// Output rows `rows`, columns `columns` of `op` from its (restricted) activation inputs and
/// its weights, in the op's input order: the one arithmetic path of generation and of
/// re-execution. A weight may be given in part, with the same result bits:
/// - a linear op's weight holds either every row or exactly rows `columns` (the rows that the
///   block's output columns read);
/// - an embedding table may be compact: only the rows the ids name, with the ids in `inputs`
///   renumbered to index it (a gather copies rows).
pub fn compute_block(
    config: &LlamaConfig,
    op: &Op,
    rows: &Range<usize>,
    columns: &Range<usize>,
    inputs: &[Tensor],
    weights: &[&Tensor],
    compute: Compute,
) -> Result<Tensor> {
    let inputs: Vec<Input> = inputs.iter().map(Input::Tensor).collect();
    let weights = weights
        .iter()
        .enumerate()
        .map(|(i, w)| committed_weight(config, op, i, w, &inputs))
        .collect::<Result<Vec<_>>>()?;
    compute_block_inputs(
        config,
        op,
        (rows, columns),
        &inputs,
        &weights,
        compute,
        None,
    )
}

/// The error of step work on `op`.
fn step_error(op: &Op, detail: String) -> Error {
    Error::Step {
        op: op.name.clone(),
        detail,
    }
}

/// `act(x · w[held]ᵀ)` in the Quantized profile (docs/llm.md §2.1), `x` already quantized.
fn quantized_linear(
    op: &Op,
    x: &quant::QuantActivations,
    w: &QuantMatrix,
    held: Range<usize>,
    activation: Activation,
    compute: Compute,
) -> Result<Tensor> {
    let shape = [x.rows(), held.len()];
    let out = quant::linear_vec(x, w, held, activation, compute)
        .map_err(|e| step_error(op, e.to_string()))?;
    Tensor::from_vec(out, &shape).map_err(tensor_error(op))
}

/// The quantized activations of the last quantized matmul's input in a pass, for the next op
/// that reads the same tensor normalised the same way: q, k and v read one input (normalised
/// with `attn_norm`), and would each normalise and quantize it again. Normalising and
/// quantizing are functions of the values, so the bits are the same.
#[derive(Default)]
struct QuantizedInput {
    cached: Option<(InputKey, quant::QuantActivations)>,
    /// Inputs quantized so far (the others were kept ones).
    quantized: usize,
}

/// What a matmul's activations are made from: an activation tensor, RMS-normalised first
/// with a gamma and epsilon when the op says so. Both tensors are held, so their storage is
/// neither freed nor reused while they are the key.
#[derive(Clone)]
struct InputKey {
    input: Tensor,
    norm: Option<(Tensor, f32)>,
}

impl InputKey {
    fn same(&self, other: &InputKey) -> bool {
        let storage = |t: &Tensor| t.as_slice().map(|v| (v.as_ptr(), v.len()));
        let input = storage(&self.input);
        input.is_some_and(|(_, len)| len > 0)
            && input == storage(&other.input)
            && match (&self.norm, &other.norm) {
                (None, None) => true,
                (Some((gamma, eps)), Some((other, other_eps))) => {
                    storage(gamma) == storage(other) && eps.to_bits() == other_eps.to_bits()
                }
                _ => false,
            }
    }
}

impl QuantizedInput {
    /// `key`'s activations as `[n, k]`, quantized: the kept ones when they are `key`'s, else
    /// `values()` (made from `key`) quantized now and kept, into the storage of the ones kept
    /// so far.
    fn get<E>(
        &mut self,
        key: InputKey,
        (n, k): (usize, usize),
        compute: Compute,
        values: impl FnOnce() -> std::result::Result<Tensor, E>,
        quant_error: impl Fn(quant::QuantError) -> E,
    ) -> std::result::Result<&quant::QuantActivations, E> {
        let shape_error = |detail: &str| {
            quant_error(quant::QuantError::Shape {
                what: "quantized input",
                detail: detail.into(),
            })
        };
        let hit = matches!(&self.cached,
            Some((kept, x)) if kept.same(&key) && x.rows() == n && x.cols() == k);
        if !hit {
            let x = values()?;
            let values = x.as_slice().ok_or_else(|| shape_error("not contiguous"))?;
            let x = match self.cached.take() {
                Some((_, mut x)) => x.requantize(values, n, k, compute).map(|()| x),
                None => quant::quantize_activations_on(values, n, k, compute),
            }
            .map_err(&quant_error)?;
            self.cached = Some((key, x));
            self.quantized += 1;
        }
        self.cached
            .as_ref()
            .map(|(_, x)| x)
            .ok_or_else(|| shape_error("none kept"))
    }
}

/// A weight as [`compute_block_inputs`] reads it: f32, or a quantized matrix.
#[derive(Clone, Debug)]
enum Weight<'a> {
    F32(&'a Tensor),
    Quant(Cow<'a, QuantMatrix>),
}

/// Weight `index` of `op` as committed (docs/llm.md §3): a matrix whose width is not the
/// width it multiplies (a linear op's input width, the embedding's hidden size) is a quantized
/// matrix in its f32 block encoding (Quantized profile), decoded here.
fn committed_weight<'a>(
    config: &LlamaConfig,
    op: &Op,
    index: usize,
    weight: &'a Tensor,
    inputs: &[Input],
) -> Result<Weight<'a>> {
    let cols = match op.kind {
        ref kind if kind.reads_weight_rows(index) => inputs.first().and_then(|x| x.shape().get(1)),
        OpKind::Embed if index == 0 => Some(&config.hidden),
        _ => None,
    };
    match (cols, weight.shape()) {
        (Some(&cols), &[rows, width]) if width != cols => {
            let values = weight.as_slice().ok_or_else(|| Error::Step {
                op: op.name.clone(),
                detail: "weight not contiguous".into(),
            })?;
            let matrix =
                QuantMatrix::from_encoded(rows, cols, values).map_err(|e| Error::Step {
                    op: op.name.clone(),
                    detail: e.to_string(),
                })?;
            Ok(Weight::Quant(Cow::Owned(matrix)))
        }
        _ => Ok(Weight::F32(weight)),
    }
}

/// An activation input of [`compute_block_inputs`]: a tensor, or a row-major matrix held
/// elsewhere (the generator's KV stacks).
#[derive(Clone, Copy, Debug)]
enum Input<'a> {
    Tensor(&'a Tensor),
    Matrix {
        values: &'a [f32],
        shape: [usize; 2],
    },
}

impl Input<'_> {
    fn shape(&self) -> &[usize] {
        match self {
            Input::Tensor(t) => t.shape(),
            Input::Matrix { shape, .. } => shape,
        }
    }

    fn values(&self) -> Option<&[f32]> {
        match self {
            Input::Tensor(t) => t.as_slice(),
            Input::Matrix { values, .. } => Some(values),
        }
    }

    /// The tensor, for the operators that take one (the generator passes only stacks of the
    /// KV cache as matrices).
    fn tensor(&self) -> Option<&Tensor> {
        match self {
            Input::Tensor(t) => Some(t),
            Input::Matrix { .. } => None,
        }
    }
}

/// The KV cache of a generation as one growing row-major matrix per stacked source (keyed by
/// its first op): each pass appends its new rows once, so a decode step copies one row per
/// layer instead of re-concatenating the whole cache.
#[derive(Default)]
struct KvStacks {
    /// First op of the stack → (parts stacked so far, width, values).
    stacks: std::collections::BTreeMap<usize, (usize, usize, Vec<f32>)>,
}

impl KvStacks {
    /// Append to the stack of `source` (op outputs stacked by rows) the parts it does not
    /// hold yet; any other source is left alone.
    fn extend<'t>(
        &mut self,
        source: &Source,
        output: &dyn Fn(usize) -> Option<&'t Tensor>,
    ) -> Result<()> {
        let Some((first, parts)) = stack_parts(source) else {
            return Ok(());
        };
        let (held, width, values) = self.stacks.entry(first).or_default();
        // `skip` on a series computes where to start: a pass costs its new parts only.
        for part in parts.skip(*held) {
            let Source::Op(i) = *part else {
                return Err(Error::Input {
                    detail: "a KV stack holds only op outputs".into(),
                });
            };
            let tensor = output(i).ok_or_else(|| Error::Input {
                detail: format!("output of op {i} is not available"),
            })?;
            match tensor.shape() {
                [_, w] if *held == 0 || *w == *width => *width = *w,
                shape => {
                    return Err(Error::Input {
                        detail: format!("KV part {shape:?} in a stack of width {width}"),
                    })
                }
            }
            values.extend_from_slice(&tensor.contiguous().to_vec());
            *held += 1;
        }
        Ok(())
    }

    /// The whole stack of `source`, as extended.
    fn input(&self, source: &Source) -> Result<Input<'_>> {
        let missing = || Error::Input {
            detail: "KV stack not built".into(),
        };
        let (first, parts) = stack_parts(source).ok_or_else(missing)?;
        match self.stacks.get(&first) {
            Some((held, width, values)) if *held == parts.len() && *width > 0 => {
                Ok(Input::Matrix {
                    values,
                    shape: [values.len() / width, *width],
                })
            }
            _ => Err(missing()),
        }
    }
}

/// Op outputs whose trace leaves are not hashed yet, hashed together ([`leaves::ShapeGroups`]):
/// [`Generator::generate`] holds a decode pass's until the pass ends, a prefill's and an audit
/// pass's up to [`HELD_BYTES`] (one dispatch to the threads for many ops, not one each).
#[derive(Default)]
struct HeldLeaves {
    outputs: Vec<Tensor>,
    blocks: Vec<HeldBlock>,
    /// The held outputs' bytes.
    bytes: usize,
}

/// Steps whose leaves are held: of held output `output` (`width` wide), their blocks read
/// from row `first_row` on.
struct HeldBlock {
    output: usize,
    width: usize,
    /// The steps' indices (their leaves).
    steps: Range<usize>,
    /// Where the first step's block is in the step list handed to [`HeldLeaves::hash`].
    first_block: usize,
    first_row: usize,
}

/// Bytes of op outputs [`HeldLeaves`] gathers before hashing a prefill's or an audit pass's
/// leaves: a few ops (a few hundred KiB each at 64 tokens) per dispatch to the threads, still
/// in the caches when hashed (16 MiB measured slower: 0.150 s against 0.12 s for an audit of
/// 64 tokens on 2 threads).
const HELD_BYTES: usize = 1 << 20;

impl HeldLeaves {
    /// Hold `output` (of op `op_index`, `width` wide) and reserve the leaves of its steps,
    /// which follow those in `leaves` so far.
    fn add(
        &mut self,
        graph: &Graph,
        op_index: usize,
        output: &Tensor,
        width: usize,
        leaves: &mut Vec<Hash>,
    ) {
        let first = leaves.len();
        let steps = graph.steps[first..]
            .iter()
            .take_while(|step| step.op == op_index)
            .count();
        leaves.resize(first + steps, [0; 32]);
        self.hold(output, &[(first..first + steps, first, 0)], width);
    }

    /// Hold `output` (`width` wide) for the leaves of `blocks`: steps, where the first one's
    /// block is in the step list handed to [`HeldLeaves::hash`], and the row of the output
    /// where their rows start.
    fn hold(&mut self, output: &Tensor, blocks: &[(Range<usize>, usize, usize)], width: usize) {
        let held = self.outputs.len();
        self.bytes += 4 * output.element_count();
        self.outputs.push(output.clone());
        self.blocks.extend(
            blocks
                .iter()
                .map(|(steps, first_block, first_row)| HeldBlock {
                    output: held,
                    width,
                    steps: steps.clone(),
                    first_block: *first_block,
                    first_row: *first_row,
                }),
        );
    }

    /// Whether [`HELD_BYTES`] or more are held.
    fn full(&self) -> bool {
        self.bytes >= HELD_BYTES
    }

    /// Hash every held step on `compute`'s threads, each handed to `set` with its index, and
    /// let the outputs go.
    fn hash(&mut self, steps: &[Step], compute: Compute, set: impl FnMut(usize, Hash)) {
        let mut groups = leaves::ShapeGroups::default();
        for block in &self.blocks {
            let values = self.outputs[block.output].as_slice().unwrap_or_default();
            let values = values
                .get(block.first_row * block.width..)
                .unwrap_or_default();
            for (index, step) in block
                .steps
                .clone()
                .zip(steps.get(block.first_block..).unwrap_or_default())
            {
                groups.add(index, values, block.width, &step.rows, &step.columns);
            }
        }
        groups.hash(compute.threads.get(), set);
        self.outputs.clear();
        self.blocks.clear();
        self.bytes = 0;
    }
}

/// The ops from `from` on whose outputs `source` reads (through stacks); the parts of a
/// series before `from` are skipped without listing them (a KV stack spans every pass so far).
fn source_ops(source: &Source, from: usize) -> Vec<usize> {
    match *source {
        Source::Op(i) => (i >= from).then_some(i).into_iter().collect(),
        Source::Rows(_) | Source::Series { .. } => {
            let skip = match *source {
                Source::Series { first, step, .. } => {
                    from.saturating_sub(first).div_ceil(step.max(1))
                }
                _ => 0,
            };
            source
                .parts()
                .into_iter()
                .flat_map(|parts| parts.skip(skip))
                .flat_map(|part| source_ops(&part, from))
                .collect()
        }
        Source::Input(_) | Source::Weight(_) => Vec::new(),
    }
}

/// For each op from `pass_start` on, the last op of the pass that reads its output (`usize::MAX`
/// when none does).
fn pass_last_readers(ops: &[Op], pass_start: usize) -> Vec<usize> {
    let mut last = vec![usize::MAX; ops.len().saturating_sub(pass_start)];
    for (reader, op) in ops.iter().enumerate().skip(pass_start) {
        for i in op.activations().flat_map(|s| source_ops(s, pass_start)) {
            if let Some(slot) = i.checked_sub(pass_start).and_then(|at| last.get_mut(at)) {
                *slot = reader;
            }
        }
    }
    last
}

/// The first op and the parts of a stacked source whose first part is an op output.
fn stack_parts(source: &Source) -> Option<(usize, Parts<'_>)> {
    let parts = source.parts()?;
    match parts.clone().next().as_deref() {
        Some(Source::Op(first)) => Some((*first, parts)),
        _ => None,
    }
}

/// [`compute_block`] on activation inputs that may live outside tensors.
fn compute_block_inputs(
    config: &LlamaConfig,
    op: &Op,
    (rows, columns): (&Range<usize>, &Range<usize>),
    inputs: &[Input],
    weights: &[Weight],
    compute: Compute,
    quantized_input: Option<&mut QuantizedInput>,
) -> Result<Tensor> {
    let [op_rows, width] = op.output_shape;
    let fail = |detail: String| Error::Step {
        op: op.name.clone(),
        detail,
    };
    if rows.end > op_rows || columns.end > width || rows.is_empty() || columns.is_empty() {
        return Err(fail(format!(
            "block {rows:?} × {columns:?} of {op_rows} × {width}"
        )));
    }
    let activation_count = op.activations().count();
    if inputs.len() != activation_count {
        return Err(fail(format!(
            "{} inputs, expected {activation_count}",
            inputs.len()
        )));
    }
    let n = rows.len();
    let expect = |i: usize, shape: [usize; 2]| -> Result<&[f32]> {
        let t = &inputs[i];
        if t.shape() != shape {
            return Err(fail(format!(
                "input {i} has shape {:?}, expected {shape:?}",
                t.shape()
            )));
        }
        t.values()
            .ok_or_else(|| fail(format!("input {i} is not contiguous")))
    };
    let tensor = |i: usize| -> Result<&Tensor> {
        inputs[i]
            .tensor()
            .ok_or_else(|| fail(format!("input {i} is not a tensor")))
    };
    if weights.len() != op.weights().count() {
        return Err(fail(format!(
            "{} weights, expected {}",
            weights.len(),
            op.weights().count()
        )));
    }
    let weight = |i: usize| -> Result<&Tensor> {
        match weights.get(i) {
            Some(Weight::F32(tensor)) => Ok(tensor),
            Some(Weight::Quant(_)) => Err(fail(format!("weight {i} is quantized"))),
            None => Err(fail("missing weight".into())),
        }
    };
    let quantized = |i: usize| match weights.get(i) {
        Some(Weight::Quant(matrix)) => Some(matrix.as_ref()),
        _ => None,
    };
    let quant_error = |e: quant::QuantError| fail(e.to_string());
    // Weight `i` of a linear op holds every row, or exactly the block's columns: the first row
    // it holds.
    let first_row = |held: usize| match held {
        held if held == columns.len() => Ok(columns.start),
        held if held >= columns.end => Ok(0),
        held => Err(fail(format!("{held} weight rows lack columns {columns:?}"))),
    };
    // A linear op's matrices follow its norm's gamma, when it has one.
    let norm = op.kind.norm();
    let first_matrix = usize::from(norm.is_some());
    let mut local_input = QuantizedInput::default();
    let quantized_input = quantized_input.unwrap_or(&mut local_input);
    // Activation 0 as the matmuls read it (normalised first when the op says so), made at most
    // once per op.
    let mut matmul_input: Option<Tensor> = None;
    let mut matmul_values = |k: usize| -> Result<Tensor> {
        expect(0, [n, k])?;
        if let Some(x) = &matmul_input {
            return Ok(x.clone());
        }
        let x = match norm {
            Some(eps) => {
                ops::rmsnorm(tensor(0)?, weight(0)?, eps, compute).map_err(tensor_error(op))?
            }
            None => tensor(0)?.clone(),
        };
        Ok(matmul_input.insert(x).clone())
    };
    // `act(x · w[columns]ᵀ)` of matrix `i` on the block's rows of activation 0, in the profile
    // the matrix is held in; quantized, `x` is quantized once for all the op's matrices (or
    // kept from the op before it, `quantized_input`).
    let mut linear = |i: usize, activation: Activation| -> Result<Tensor> {
        match weights.get(first_matrix + i) {
            Some(Weight::Quant(w)) => {
                let first_row = first_row(w.rows())?;
                let held = columns.start - first_row..columns.end - first_row;
                let k = w.cols();
                let key = InputKey {
                    input: tensor(0)?.clone(),
                    norm: match norm {
                        Some(eps) => Some((weight(0)?.clone(), eps)),
                        None => None,
                    },
                };
                let values = || matmul_values(k);
                let x = quantized_input.get(key, (n, k), compute, values, quant_error)?;
                quantized_linear(op, x, w, held, activation, compute)
            }
            Some(Weight::F32(w)) => {
                let [held, k] = *w.shape() else {
                    return Err(fail(format!("weight {i} has shape {:?}", w.shape())));
                };
                let first_row = first_row(held)?;
                let x = matmul_values(k)?;
                let x = x
                    .as_slice()
                    .ok_or_else(|| fail("input 0 is not contiguous".into()))?;
                let w = w
                    .as_slice()
                    .ok_or_else(|| fail("weight not contiguous".into()))?;
                let w = &w[(columns.start - first_row) * k..(columns.end - first_row) * k];
                let mut out = vec![0.0f32; n * columns.len()];
                kernels::linear_by_columns(
                    x,
                    w,
                    n,
                    columns.len(),
                    k,
                    activation,
                    &mut out,
                    compute,
                );
                Tensor::from_vec(out, &[n, columns.len()]).map_err(tensor_error(op))
            }
            None => Err(fail("missing weight".into())),
        }
    };
    let column_split = op.kind.is_linear() || matches!(op.kind, OpKind::Attention { .. });
    if !column_split && *columns != (0..width) {
        return Err(fail(
            "only linear and attention ops are split by columns".into(),
        ));
    }
    let output = match &op.kind {
        OpKind::Embed if quantized(0).is_some() => {
            let table = quantized(0).ok_or_else(|| fail("missing weight".into()))?;
            let ids = expect(0, [n, 1])?
                .iter()
                .map(|&v| token_id(v, table.rows().min(config.vocab), op))
                .collect::<Result<Vec<_>>>()?;
            let mut out = vec![0.0f32; n * table.cols()];
            for (&id, row) in ids.iter().zip(out.chunks_exact_mut(table.cols())) {
                table.dequantize_row(id as usize, row);
            }
            Tensor::from_vec(out, &[n, table.cols()]).map_err(tensor_error(op))?
        }
        OpKind::Embed => {
            let table = weight(0)?;
            let table_rows = table.shape().first().copied().unwrap_or(0);
            let ids = expect(0, [n, 1])?
                .iter()
                .map(|&v| token_id(v, table_rows.min(config.vocab), op))
                .collect::<Result<Vec<_>>>()?;
            ops::embedding(table, &ids).map_err(tensor_error(op))?
        }
        OpKind::RmsNorm { eps, .. } => {
            let in_width = weight(0)?.element_count();
            expect(0, [n, in_width])?;
            ops::rmsnorm(tensor(0)?, weight(0)?, *eps, compute).map_err(tensor_error(op))?
        }
        OpKind::Linear { activation, .. } => linear(0, *activation)?,
        OpKind::LinearRope {
            heads,
            base,
            first_position,
            ..
        } => {
            let head_dim = width.checked_div(*heads).unwrap_or(0);
            if head_dim == 0
                || width % heads != 0
                || !columns.start.is_multiple_of(head_dim)
                || !columns.len().is_multiple_of(head_dim)
            {
                return Err(fail(format!(
                    "columns {columns:?} are not whole heads of {heads} in {width}"
                )));
            }
            let product = linear(0, Activation::Identity)?;
            let positions: Vec<u32> = (0..n)
                .map(|i| (first_position + rows.start + i) as u32)
                .collect();
            ops::rope(&product, &positions, columns.len() / head_dim, *base)
                .map_err(tensor_error(op))?
        }
        OpKind::LinearAdd => {
            let product = linear(0, Activation::Identity)?;
            expect(1, [n, columns.len()])?;
            ops::add(tensor(1)?, &product, compute).map_err(tensor_error(op))?
        }
        OpKind::GatedLinear { .. } => {
            let gate = linear(0, Activation::Silu)?;
            let up = linear(1, Activation::Identity)?;
            ops::mul(&gate, &up, compute).map_err(tensor_error(op))?
        }
        OpKind::Attention {
            heads,
            kv_heads,
            first_position,
        } => {
            if *heads == 0 || *kv_heads == 0 || heads % kv_heads != 0 || width % heads != 0 {
                return Err(fail(format!(
                    "{heads} heads, {kv_heads} KV heads, width {width}"
                )));
            }
            // The block covers whole KV-head groups: their query heads and KV heads.
            let head_dim = width / heads;
            let group_width = heads / kv_heads * head_dim;
            if group_width == 0
                || !columns.start.is_multiple_of(group_width)
                || !columns.end.is_multiple_of(group_width)
            {
                return Err(fail(format!("columns {columns:?} split a KV-head group")));
            }
            let groups = columns.len() / group_width;
            let shape = CausalShape {
                rows: n,
                first_position: first_position + rows.start,
                heads: groups * (heads / kv_heads),
                kv_heads: groups,
                head_dim,
            };
            let (q_width, kv_width) = (columns.len(), groups * head_dim);
            let q = expect(0, [n, q_width])?;
            let k = expect(1, [shape.keys(), kv_width])?;
            let v = expect(2, [shape.keys(), kv_width])?;
            let mut out = vec![0.0f32; n * q_width];
            kernels::causal_attention(q, k, v, shape, &mut out, compute);
            Tensor::from_vec(out, &[n, q_width]).map_err(tensor_error(op))?
        }
        OpKind::Sample { index, params } => {
            let logits = expect(0, [1, config.vocab])?;
            let history_rows = inputs[1].shape().first().copied().unwrap_or(0);
            let history = expect(1, [history_rows, 1])?
                .iter()
                .map(|&v| token_id(v, config.vocab, op))
                .collect::<Result<Vec<_>>>()?;
            params.validate().map_err(fail)?;
            let id = sampling::sample(logits, &history, params, *index);
            Tensor::from_vec(vec![id as f32], &[1, 1]).map_err(tensor_error(op))?
        }
    };
    Ok(output)
}

/// The sample op's output with `filter` applied: the logits of the ids it does not allow are
/// set to −∞ before the sampling rule (docs/llm.md §5), and the choice must be allowed. The
/// new tokens so far are the last `index` rows of the op's history (prompt, then samples).
fn filtered_sample(
    config: &LlamaConfig,
    op: &Op,
    inputs: &[Input],
    filter: &dyn TokenFilter,
) -> Result<Tensor> {
    let fail = |detail: String| Error::Step {
        op: op.name.clone(),
        detail,
    };
    let OpKind::Sample { index, params } = &op.kind else {
        return Err(fail("not a sample op".into()));
    };
    let logits = match inputs.first() {
        Some(t) if t.shape() == [1, config.vocab] => t.values(),
        _ => None,
    }
    .ok_or_else(|| fail("logits are not one contiguous row of the vocabulary".into()))?;
    let history = match inputs.get(1) {
        Some(t) if t.shape().get(1) == Some(&1) => t.values(),
        _ => None,
    }
    .ok_or_else(|| fail("history is not one contiguous column".into()))?
    .iter()
    .map(|&v| token_id(v, config.vocab, op))
    .collect::<Result<Vec<_>>>()?;
    params.validate().map_err(fail)?;
    let generated = usize::try_from(*index)
        .ok()
        .and_then(|n| history.len().checked_sub(n))
        .and_then(|start| history.get(start..))
        .ok_or_else(|| fail(format!("sample {index} after {} ids", history.len())))?;
    let mut allowed = vec![false; config.vocab];
    filter.allowed(generated, &mut allowed).map_err(fail)?;
    let masked: Vec<f32> = logits
        .iter()
        .zip(&allowed)
        .map(|(&l, &ok)| if ok { l } else { f32::NEG_INFINITY })
        .collect();
    let id = sampling::sample(&masked, &history, params, *index);
    if !allowed.get(id as usize).copied().unwrap_or(false) {
        return Err(fail(format!("sample {index}: the filter allows no token")));
    }
    Tensor::from_vec(vec![id as f32], &[1, 1]).map_err(tensor_error(op))
}

/// Render `messages` with the model's chat template and tokenize
/// ([`Tokenizer::chat_prompt_ids`], which the ledger's tokenization arbiter also calls).
pub fn chat_prompt_ids(generator: &Generator, messages: &[Message]) -> Result<Vec<u32>> {
    generator.tokenizer.chat_prompt_ids(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_tensor::reference;

    fn matrix(values: &[f32], width: usize) -> Tensor {
        Tensor::from_vec(values.to_vec(), &[values.len() / width, width]).unwrap()
    }

    #[test]
    fn a_quantized_input_is_reused_only_for_the_same_storage() {
        let values: Vec<f32> = (0..128).map(|i| (i as f32 - 60.0) * 0.37).collect();
        let a = matrix(&values, 64);
        let mut kept = QuantizedInput::default();
        // `input`, normalised by `norm`, as `[n, k]`.
        let mut get =
            |input: &Tensor, norm: Option<(&Tensor, f32)>, n: usize, k: usize| {
                let key = InputKey {
                    input: input.clone(),
                    norm: norm.map(|(gamma, eps)| (gamma.clone(), eps)),
                };
                let values =
                    || match norm {
                        Some((gamma, eps)) => ops::rmsnorm(input, gamma, eps, Compute::new(1))
                            .map_err(|e| quant::QuantError::Shape {
                                what: "norm",
                                detail: e.to_string(),
                            }),
                        None => Ok(input.clone()),
                    };
                let x = kept.get(key, (n, k), Compute::new(1), values, |e| e);
                (x.cloned(), kept.quantized)
            };
        let expected = quant::quantize_activations(&values, 2, 64).unwrap();
        // q, k and v read one tensor (clones share its storage): quantized once.
        for input in [&a, &a.clone(), &a] {
            assert_eq!(get(input, None, 2, 64), (Ok(expected.clone()), 1));
        }
        // Equal values in other storage, and other values: quantized again.
        let b = matrix(&values, 64);
        assert_eq!(get(&b, None, 2, 64), (Ok(expected.clone()), 2));
        let other: Vec<f32> = values.iter().map(|v| v * 2.0 + 1.0).collect();
        let c = matrix(&other, 64);
        let expected_c = quant::quantize_activations(&other, 2, 64).unwrap();
        assert_eq!(get(&c, None, 2, 64), (Ok(expected_c), 3));
        // The same storage read as another shape is quantized again.
        assert!(get(&c, None, 4, 32).0.is_ok());
        assert_eq!(get(&c, None, 4, 32).1, 4);
        // Normalised: by one gamma and epsilon once, again by another gamma or epsilon.
        let gamma = || Tensor::from_vec(vec![0.5; 64], &[64]).unwrap();
        let (gamma, other_gamma) = (gamma(), gamma());
        let normed = ops::rmsnorm(&a, &gamma, 1e-5, Compute::new(1)).unwrap();
        let expected_n = quant::quantize_activations(&normed.to_vec(), 2, 64).unwrap();
        for _ in 0..2 {
            assert_eq!(
                get(&a, Some((&gamma, 1e-5)), 2, 64),
                (Ok(expected_n.clone()), 5)
            );
        }
        assert_eq!(get(&a, Some((&other_gamma, 1e-5)), 2, 64).1, 6);
        assert_eq!(get(&a, Some((&other_gamma, 1e-6)), 2, 64).1, 7);
        assert_eq!(get(&a, None, 2, 64), (Ok(expected), 8));
    }

    /// LinearRope, LinearAdd and GatedLinear give the bits of a Linear op followed by the
    /// reference `rope`, `add` or `mul`, and a linear op with a norm those of the RmsNorm op
    /// before it (docs/llm.md §4), on a block of rows and of columns that starts inside the op,
    /// in both profiles.
    #[test]
    fn linear_compositions_equal_their_separate_ops() {
        let config = LlamaConfig {
            layers: 1,
            hidden: 64,
            ffn: 96,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            vocab: 32,
            context: 256,
            rope_base: 10_000.0,
            rms_eps: 1e-5,
        };
        let (n, k, width) = (5, 64, 96);
        let value =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.0 - 1.0;
        let x = matrix(&(0..n * k).map(|i| value(i, 1)).collect::<Vec<_>>(), k);
        let residual: Vec<f32> = (0..n * 32).map(|i| value(i, 2) * 3.0).collect();
        let residual = matrix(&residual, 32);
        let f32_weight = |salt| {
            matrix(
                &(0..width * k)
                    .map(|i| value(i, salt) * 0.2)
                    .collect::<Vec<_>>(),
                k,
            )
        };
        let (w, u) = (f32_weight(3), f32_weight(4));
        // Q4_1 in its committed f32 block encoding: per block `d`, `m`, 32 values in 0..=15.
        let quantized = |salt: usize| {
            let encoded: Vec<f32> = (0..width * 2)
                .flat_map(|b| {
                    let (d, m) = (
                        value(b, salt).abs() * 0.02 + 0.001,
                        value(b, salt + 1) * 0.1,
                    );
                    [d, m]
                        .into_iter()
                        .chain((0..32).map(move |e| ((b * 7 + e * salt) % 16) as f32))
                })
                .collect();
            matrix(&encoded, 68)
        };
        let op = |kind: OpKind, activations: usize, weights: usize| Op {
            name: "op".into(),
            kind,
            inputs: (0..activations)
                .map(Source::Op)
                .chain((0..weights).map(|i| Source::Weight(format!("w{i}"))))
                .collect(),
            output_shape: [8, width],
        };
        let (rows, columns) = (3..8, 32..64);
        let block = |op: &Op, inputs: &[Tensor], weights: &[&Tensor]| {
            compute_block(
                &config,
                op,
                &rows,
                &columns,
                inputs,
                weights,
                Compute::new(1),
            )
            .unwrap()
            .to_vec()
        };
        let gamma: Vec<f32> = (0..k).map(|i| 0.5 + value(i, 9).abs()).collect();
        let gamma = Tensor::from_vec(gamma, &[k]).unwrap();
        let eps = config.rms_eps;
        // The RmsNorm op's output on the block's rows.
        let rms = Op {
            name: "norm".into(),
            kind: OpKind::RmsNorm {
                eps,
                input_row_offset: 0,
            },
            inputs: vec![Source::Op(0), Source::Weight("gamma".into())],
            output_shape: [8, k],
        };
        let normed = compute_block(
            &config,
            &rms,
            &rows,
            &(0..k),
            std::slice::from_ref(&x),
            &[&gamma],
            Compute::new(1),
        )
        .unwrap();
        for (weights, norm) in [
            ([w.clone(), u.clone()], None),
            ([w.clone(), u.clone()], Some(eps)),
            ([quantized(5), quantized(6)], None),
            ([quantized(5), quantized(6)], Some(eps)),
        ] {
            let [w, u] = &weights;
            // The separate ops: a Linear op on the RmsNorm op's output, or on x.
            let input = if norm.is_some() { &normed } else { &x };
            let linear = |w: &Tensor, activation| {
                let linear = OpKind::Linear {
                    activation,
                    norm: None,
                };
                block(&op(linear, 1, 1), std::slice::from_ref(input), &[w])
            };
            // The composed op reads x, and gamma before its matrices when it normalises.
            let fused = |kind: OpKind, activations: &[Tensor], matrices: &[&Tensor]| {
                let weights: Vec<&Tensor> = norm
                    .map(|_| &gamma)
                    .into_iter()
                    .chain(matrices.iter().copied())
                    .collect();
                block(
                    &op(kind, activations.len(), weights.len()),
                    activations,
                    &weights,
                )
            };
            let product = linear(w, Activation::Identity);
            let mut expected = vec![0.0f32; product.len()];
            let linear_op = OpKind::Linear {
                activation: Activation::Identity,
                norm,
            };
            assert_eq!(fused(linear_op, std::slice::from_ref(&x), &[w]), product);

            let positions: Vec<u32> = (0..n).map(|i| (100 + rows.start + i) as u32).collect();
            reference::rope(&product, &positions, 2, 16, config.rope_base, &mut expected);
            let roped = OpKind::LinearRope {
                heads: 6,
                base: config.rope_base,
                first_position: 100,
                norm,
            };
            assert_eq!(fused(roped, std::slice::from_ref(&x), &[w]), expected);

            reference::mul(
                &linear(w, Activation::Silu),
                &linear(u, Activation::Identity),
                &mut expected,
            );
            let gated = OpKind::GatedLinear { norm };
            assert_eq!(fused(gated, std::slice::from_ref(&x), &[w, u]), expected);

            if norm.is_none() {
                reference::add(residual.as_slice().unwrap(), &product, &mut expected);
                let inputs = [x.clone(), residual.clone()];
                assert_eq!(fused(OpKind::LinearAdd, &inputs, &[w]), expected);
            }
        }
        // RoPE needs whole heads (16 columns here).
        let roped = op(
            OpKind::LinearRope {
                heads: 6,
                base: config.rope_base,
                first_position: 0,
                norm: None,
            },
            1,
            1,
        );
        let split = compute_block(
            &config,
            &roped,
            &rows,
            &(8..40),
            &[x],
            &[&w],
            Compute::new(1),
        );
        assert!(split.is_err());
    }

    #[test]
    fn kv_stacks_append_each_part_once_and_refuse_other_widths() {
        let outputs = [matrix(&[1.0, 2.0], 2), matrix(&[3.0, 4.0, 5.0, 6.0], 2)];
        let output = |i: usize| outputs.get(i);
        let stack = |n: usize| Source::Rows((0..n).map(Source::Op).collect());
        let mut stacks = KvStacks::default();
        stacks.extend(&stack(1), &output).unwrap();
        assert!(stacks.input(&stack(2)).is_err(), "not extended yet");
        stacks.extend(&stack(2), &output).unwrap();
        // Extending again with the same parts adds nothing.
        stacks.extend(&stack(2), &output).unwrap();
        match stacks.input(&stack(2)).unwrap() {
            Input::Matrix { values, shape } => {
                assert_eq!(values, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
                assert_eq!(shape, [3, 2]);
            }
            Input::Tensor(_) => panic!("a stack is a matrix"),
        }
        let wide = [matrix(&[1.0, 2.0], 2), matrix(&[3.0, 4.0, 5.0], 3)];
        let output = |i: usize| wide.get(i);
        assert!(KvStacks::default().extend(&stack(2), &output).is_err());
        assert!(KvStacks::default().extend(&stack(3), &output).is_err());
    }
}

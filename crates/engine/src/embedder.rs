//! Sentence embeddings with a BERT encoder (all-MiniLM-L6-v2 and its kin).
//!
//! Pipeline: tokenize (with [CLS]/[SEP]), truncate at [`MAX_TOKENS`], pack a batch (the tokens
//! of every sequence one after the other, no padding), BERT encoder (attention within each
//! sequence), mean-pool per sequence, L2-normalise.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;

use piazza_tensor::{Activation, Compute, Isa, PackedB, Tensor};
use tokenizers::{PostProcessor, Tokenizer, TruncationParams};

use crate::config::BertConfig;
use crate::graph::{self, Graph, JobInput, Op, OpKind, Source, Step};
use crate::merkle::Hash;
use crate::safetensors::SafeTensors;
use crate::trace::{self, Trace};
use crate::weights::{WeightCommitment, Weights};
use crate::{Error, Result};

/// Tokens per text after truncation, [CLS] and [SEP] included (sentence-transformers'
/// `max_seq_length` for all-MiniLM-L6-v2).
pub const MAX_TOKENS: usize = 256;
/// Texts per batch in [`Embedder::embed`]. Results do not depend on it (see the tests).
pub const BATCH_SIZE: usize = 16;
/// Largest files accepted.
pub const MODEL_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
pub const TOKENIZER_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Largest text accepted, in bytes (longer inputs are truncated to 256 tokens anyway).
pub const TEXT_BYTES_MAX: usize = 1024 * 1024;
/// Most texts in one call.
pub const TEXTS_MAX: usize = 65_536;

/// A packed batch of token ids: the job input of a run. The tokens of every sequence, one
/// after the other, without padding: row-wise ops run over real tokens only, attention and
/// mean pooling per sequence ([`graph::Sequences`]).
#[derive(Clone, Debug)]
pub struct Batch {
    /// The token count of each sequence, in order (each at least 1).
    pub lengths: Vec<usize>,
    /// `[sum of lengths, 1]`: the token ids of every sequence, one after the other.
    pub token_ids: Tensor,
}

impl Batch {
    /// Pack `sequences` (each non-empty, ids below 2²⁴ so exact in f32) into one batch, one
    /// after the other: nothing is padded.
    pub fn pack(sequences: &[Vec<u32>]) -> Result<Batch> {
        let input_error = |detail: String| Err(Error::Input { detail });
        if sequences.is_empty() || sequences.len() > TEXTS_MAX {
            return input_error(format!(
                "a batch needs 1..={TEXTS_MAX} token sequences, got {}",
                sequences.len()
            ));
        }
        if let Some(b) = sequences.iter().position(|sequence| sequence.is_empty()) {
            return input_error(format!("token sequence {b} is empty"));
        }
        let rows: usize = sequences.iter().map(Vec::len).sum();
        let mut ids = Vec::with_capacity(rows);
        for &id in sequences.iter().flatten() {
            if id >= 1 << 24 {
                return input_error(format!("token id {id} is not exact in f32"));
            }
            ids.push(id as f32);
        }
        Ok(Batch {
            lengths: sequences.iter().map(Vec::len).collect(),
            token_ids: Tensor::from_vec(ids, &[rows, 1]).map_err(|source| Error::Tensor {
                op: "batch".into(),
                source,
            })?,
        })
    }

    /// Number of sequences.
    pub fn count(&self) -> usize {
        self.lengths.len()
    }

    /// Rows of the batch: the sum of the sequence lengths (no padding).
    pub fn rows(&self) -> usize {
        self.lengths.iter().sum()
    }

    fn input(&self, input: JobInput) -> Result<&Tensor> {
        match input {
            JobInput::TokenIds => Ok(&self.token_ids),
        }
    }
}

/// Every op output of a run, kept for re-execution and audits.
#[derive(Clone, Debug)]
pub struct Recording {
    pub graph: Graph,
    pub outputs: Vec<Tensor>,
    pub trace: Trace,
}

impl Recording {
    /// The activation inputs of step `index`, restricted to its rows: what a verifier needs
    /// (with the weights) to re-execute it.
    pub fn step_inputs(&self, batch: &Batch, index: usize) -> Result<Vec<Tensor>> {
        let step = self.graph.steps.get(index).ok_or_else(|| Error::Input {
            detail: format!("no step {index}"),
        })?;
        let op = &self.graph.ops[step.op];
        op.activations()
            .map(|source| {
                let full = match source {
                    Source::Input(input) => batch.input(*input)?,
                    Source::Op(earlier) => &self.outputs[*earlier],
                    Source::Weight(_) | Source::Rows(_) | Source::Series { .. } => {
                        unreachable!("activations() skips weights; BERT graphs stack no rows")
                    }
                };
                let rows = graph::input_rows(op, step);
                full.rows(rows.start, rows.len())
                    .map_err(|source| Error::Tensor {
                        op: op.name.clone(),
                        source,
                    })
            })
            .collect()
    }
}

/// A loaded sentence-embedding model. Immutable after load; share it across threads.
pub struct Embedder {
    config: BertConfig,
    /// The `config.json` bytes this model was loaded from (their hash is the model's config
    /// hash on chain).
    config_bytes: Vec<u8>,
    weights: Weights,
    tokenizer: Tokenizer,
    tokenizer_hash: Hash,
    /// The `tokenizer.json` bytes (the tokenizer evidence of a tokenization dispute).
    tokenizer_json: Vec<u8>,
    commitment: OnceLock<WeightCommitment>,
    /// The matrix of every linear op packed once for this CPU's matmul kernel, by weight name
    /// (a second copy of those weights, ~42 MB for MiniLM): runs skip packing them per call.
    packed: BTreeMap<String, PackedB>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io_error)?.len();
    if len > max {
        return Err(Error::Input {
            detail: format!("{} is {len} bytes, more than {max}", path.display()),
        });
    }
    std::fs::read(path).map_err(io_error)
}

/// Parse `tokenizer.json` bytes and set truncation at [`MAX_TOKENS`], no padding.
pub fn parse_tokenizer(bytes: &[u8]) -> Result<Tokenizer> {
    if bytes.len() as u64 > TOKENIZER_BYTES_MAX {
        return Err(Error::Tokenizer {
            detail: format!("{} bytes, more than {TOKENIZER_BYTES_MAX}", bytes.len()),
        });
    }
    // The tokenizers crate is third-party code reading untrusted bytes: a panic inside it is
    // turned into an error here rather than taking the process down.
    let parsed = catch_unwind(AssertUnwindSafe(|| -> Result<Tokenizer> {
        let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|error| Error::Tokenizer {
            detail: error.to_string(),
        })?;
        let added = tokenizer
            .get_post_processor()
            .map_or(0, |processor| processor.added_tokens(false));
        if added >= MAX_TOKENS {
            return Err(Error::Tokenizer {
                detail: format!("post-processor adds {added} tokens"),
            });
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|error| Error::Tokenizer {
                detail: error.to_string(),
            })?;
        tokenizer.with_padding(None);
        Ok(tokenizer)
    }));
    parsed.unwrap_or_else(|_| {
        Err(Error::Tokenizer {
            detail: "tokenizer panicked while loading".into(),
        })
    })
}

/// A model's tokenizer hash: BLAKE3 of its `tokenizer.json` bytes ([`Embedder::tokenizer_hash`]).
pub fn tokenizer_hash(tokenizer_json: &[u8]) -> Hash {
    *blake3::hash(tokenizer_json).as_bytes()
}

/// Token ids of each text under `tokenizer` (from [`parse_tokenizer`]): [CLS] … [SEP], truncated
/// to [`MAX_TOKENS`]. [`Embedder::tokenize`] is this function, so anyone holding the
/// `tokenizer.json` bytes derives the ids a provider computes.
pub fn tokenize_with(tokenizer: &Tokenizer, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
    if texts.len() > TEXTS_MAX {
        return Err(Error::Input {
            detail: format!("{} texts, more than {TEXTS_MAX}", texts.len()),
        });
    }
    texts
        .iter()
        .map(|&text| {
            if text.len() > TEXT_BYTES_MAX {
                return Err(Error::Input {
                    detail: format!("text of {} bytes, more than {TEXT_BYTES_MAX}", text.len()),
                });
            }
            let encoded = catch_unwind(AssertUnwindSafe(|| tokenizer.encode(text, true)))
                .map_err(|_| Error::Tokenizer {
                    detail: "tokenizer panicked while encoding".into(),
                })?
                .map_err(|error| Error::Tokenizer {
                    detail: error.to_string(),
                })?;
            let ids = encoded.get_ids().to_vec();
            if ids.is_empty() || ids.len() > MAX_TOKENS {
                return Err(Error::Tokenizer {
                    detail: format!("text encoded to {} tokens", ids.len()),
                });
            }
            Ok(ids)
        })
        .collect()
}

impl Embedder {
    /// Load `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Embedder> {
        let dir = dir.as_ref();
        let config_bytes = read_bounded(
            &dir.join("config.json"),
            crate::config::CONFIG_BYTES_MAX as u64,
        )?;
        let config = BertConfig::parse(&config_bytes)?;
        let model = SafeTensors::parse(read_bounded(
            &dir.join("model.safetensors"),
            MODEL_BYTES_MAX,
        )?)?;
        let weights = Weights::from_safetensors(&model)?;
        let tokenizer_bytes = read_bounded(&dir.join("tokenizer.json"), TOKENIZER_BYTES_MAX)?;
        let mut embedder = Embedder::from_parts(config, weights, &tokenizer_bytes)?;
        embedder.config_bytes = config_bytes;
        Ok(embedder)
    }

    /// Build from parsed parts; checks every weight the graph needs is present with its shape.
    /// Its [`Embedder::config_bytes`] are the configuration serialized as compact JSON.
    pub fn from_parts(
        config: BertConfig,
        weights: Weights,
        tokenizer_json: &[u8],
    ) -> Result<Embedder> {
        let tokenizer = parse_tokenizer(tokenizer_json)?;
        let config_bytes = serde_json::to_vec(&config).map_err(|error| Error::Config {
            detail: error.to_string(),
        })?;
        let mut embedder = Embedder {
            weights: strip_prefix(weights),
            config,
            config_bytes,
            tokenizer,
            tokenizer_hash: tokenizer_hash(tokenizer_json),
            tokenizer_json: tokenizer_json.to_vec(),
            commitment: OnceLock::new(),
            packed: BTreeMap::new(),
        };
        for (name, shape) in embedder.weight_shapes() {
            embedder.weights.get(&name, &shape)?;
        }
        embedder.packed = pack_linear_weights(&embedder.config, &embedder.weights);
        Ok(embedder)
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The configuration bytes the model was loaded from (`config.json`).
    pub fn config_bytes(&self) -> &[u8] {
        &self.config_bytes
    }

    /// Embedding width (384 for MiniLM).
    pub fn dimension(&self) -> usize {
        self.config.hidden_size
    }

    /// BLAKE3 of the `tokenizer.json` bytes.
    pub fn tokenizer_hash(&self) -> Hash {
        self.tokenizer_hash
    }

    /// The `tokenizer.json` bytes the model was loaded from (their BLAKE3 is
    /// [`Embedder::tokenizer_hash`]).
    pub fn tokenizer_json(&self) -> &[u8] {
        &self.tokenizer_json
    }

    /// The weight commitment (computed on first use: hashes every weight byte once).
    pub fn weight_commitment(&self) -> &WeightCommitment {
        self.commitment.get_or_init(|| self.weights.commit())
    }

    /// The 32-byte weight commitment root.
    pub fn weights_commitment(&self) -> Hash {
        self.weight_commitment().root
    }

    /// Token ids of each text: [CLS] … [SEP], truncated to [`MAX_TOKENS`].
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        tokenize_with(&self.tokenizer, texts)
    }

    /// Unit-length embeddings of `texts`, in order, computed `BATCH_SIZE` at a time.
    ///
    /// Texts are batched longest first (as sentence-transformers does); batches are packed (no
    /// padding) and no sequence reads another's rows, so the grouping cannot change results.
    pub fn embed(&self, texts: &[&str], threads: usize) -> Result<Vec<Vec<f32>>> {
        let compute = Compute::new(threads);
        let sequences = self.tokenize(texts)?;
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
        let mut embeddings = vec![Vec::new(); texts.len()];
        for group in order.chunks(BATCH_SIZE) {
            let members: Vec<Vec<u32>> = group.iter().map(|&i| sequences[i].clone()).collect();
            let output = self.run(&Batch::pack(&members)?, compute)?.to_vec();
            for (&i, vector) in group.iter().zip(output.chunks_exact(self.dimension())) {
                embeddings[i] = vector.to_vec();
            }
        }
        Ok(embeddings)
    }

    /// The graph of a run over a packed batch of sequences of `lengths` tokens (each at least
    /// 1; [`BertConfig::graph`]).
    pub fn graph(&self, lengths: &[usize]) -> Result<Graph> {
        self.config.graph(lengths)
    }

    /// Every weight the graph reads, with its expected shape.
    fn weight_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.config.weight_shapes()
    }

    fn check_batch(&self, batch: &Batch) -> Result<()> {
        let longest = self.config.max_position_embeddings.min(MAX_TOKENS);
        if batch.lengths.is_empty() || batch.lengths.len() > TEXTS_MAX {
            return Err(Error::Input {
                detail: format!(
                    "a batch needs 1..={TEXTS_MAX} sequences, got {}",
                    batch.lengths.len()
                ),
            });
        }
        if let Some(length) = batch.lengths.iter().find(|&&n| n == 0 || n > longest) {
            return Err(Error::Input {
                detail: format!("a sequence of {length} tokens, expected 1..={longest}"),
            });
        }
        // At most TEXTS_MAX × MAX_TOKENS rows: no overflow.
        if batch.token_ids.shape() != [batch.rows(), 1] {
            return Err(Error::Input {
                detail: format!(
                    "token_ids must be [{}, 1] (the sum of the lengths), got {:?}",
                    batch.rows(),
                    batch.token_ids.shape()
                ),
            });
        }
        Ok(())
    }

    /// The packed matrix of a linear op, if it has one.
    fn packed_for(&self, op: &Op) -> Option<&PackedB> {
        op.weights().next().and_then(|name| self.packed.get(name))
    }

    fn weight_refs(&self, op: &Op) -> Result<Vec<&Tensor>> {
        op.weights()
            .map(|name| {
                self.weights
                    .tensor(name)
                    .ok_or_else(|| Error::MissingWeight {
                        name: name.to_string(),
                    })
            })
            .collect()
    }

    /// Execute the graph; `on_output(op_index, output)` sees each op's output as it is made.
    fn execute(
        &self,
        batch: &Batch,
        compute: Compute,
        keep_outputs: bool,
        mut on_output: impl FnMut(&Graph, usize, &Tensor),
    ) -> Result<(Graph, Vec<Option<Tensor>>)> {
        self.check_batch(batch)?;
        let graph = self.graph(&batch.lengths)?;
        let last_uses = graph.last_uses();
        let mut outputs: Vec<Option<Tensor>> = Vec::with_capacity(graph.ops.len());
        for (index, op) in graph.ops.iter().enumerate() {
            let activations: Vec<&Tensor> = op
                .activations()
                .map(|source| match source {
                    Source::Input(input) => batch.input(*input),
                    Source::Op(earlier) => outputs[*earlier].as_ref().ok_or_else(|| Error::Step {
                        op: op.name.clone(),
                        detail: format!("output of op {earlier} was released"),
                    }),
                    Source::Weight(_) | Source::Rows(_) | Source::Series { .. } => {
                        unreachable!("activations() skips weights; BERT graphs stack no rows")
                    }
                })
                .collect::<Result<_>>()?;
            let weights = self.weight_refs(op)?;
            let packed = self.packed_for(op);
            let output = graph::apply_packed(op, &activations, &weights, packed, 0, compute)?;
            on_output(&graph, index, &output);
            outputs.push(Some(output));
            if !keep_outputs {
                for (earlier, &last) in last_uses.iter().enumerate().take(index) {
                    if last == index {
                        outputs[earlier] = None;
                    }
                }
            }
        }
        Ok((graph, outputs))
    }

    /// The `[sequences, hidden]` embeddings of a packed batch, without a trace.
    pub fn run(&self, batch: &Batch, compute: Compute) -> Result<Tensor> {
        let (_, mut outputs) = self.execute(batch, compute, false, |_, _, _| {})?;
        outputs.pop().flatten().ok_or_else(|| Error::Input {
            detail: "empty graph".into(),
        })
    }

    /// The embeddings and the trace of a run.
    pub fn run_traced(&self, batch: &Batch, compute: Compute) -> Result<(Tensor, Trace)> {
        let recording = self.run_with(batch, compute, false)?;
        let output = recording
            .outputs
            .last()
            .cloned()
            .ok_or_else(|| Error::Input {
                detail: "empty graph".into(),
            })?;
        Ok((output, recording.trace))
    }

    /// A traced run that keeps every op's output (for audits and re-execution).
    pub fn run_recorded(&self, batch: &Batch, compute: Compute) -> Result<Recording> {
        self.run_with(batch, compute, true)
    }

    fn run_with(&self, batch: &Batch, compute: Compute, keep_outputs: bool) -> Result<Recording> {
        let mut step_hashes = Vec::new();
        let (graph, outputs) =
            self.execute(batch, compute, keep_outputs, |graph, index, output| {
                let steps: Vec<(usize, &Step)> = graph
                    .steps
                    .iter()
                    .enumerate()
                    .filter(|(_, step)| step.op == index)
                    .collect();
                step_hashes.extend(hash_steps(&steps, output, compute));
            })?;
        let outputs: Vec<Tensor> = if keep_outputs {
            outputs.into_iter().flatten().collect()
        } else {
            outputs.into_iter().last().flatten().into_iter().collect()
        };
        Ok(Recording {
            graph,
            outputs,
            trace: Trace::from_leaves(step_hashes),
        })
    }

    /// Recompute step `index` of `graph` from its activation inputs alone (each restricted to
    /// the step's input rows, as [`Recording::step_inputs`] gives them) and this model's
    /// weights. The result's [`trace::tensor_step_hash`] is the step's trace leaf.
    pub fn execute_step(&self, graph: &Graph, index: usize, inputs: &[Tensor]) -> Result<Tensor> {
        let step = graph.steps.get(index).ok_or_else(|| Error::Input {
            detail: format!("no step {index} (graph has {})", graph.steps.len()),
        })?;
        let op = graph.ops.get(step.op).ok_or_else(|| Error::Input {
            detail: format!("step {index} names missing op {}", step.op),
        })?;
        let expected = op.activations().count();
        let input_rows = graph::input_rows(op, step);
        let rows = input_rows.len();
        if inputs.len() != expected || inputs.iter().any(|t| t.rank() != 2 || t.shape()[0] != rows)
        {
            return Err(Error::Step {
                op: op.name.clone(),
                detail: format!("expected {expected} inputs of {rows} rows"),
            });
        }
        let activations: Vec<&Tensor> = inputs.iter().collect();
        graph::apply_packed(
            op,
            &activations,
            &self.weight_refs(op)?,
            self.packed_for(op),
            input_rows.start,
            Compute::new(1),
        )
    }
}

impl piazza_trace::graph::StepExecutor for Embedder {
    type Graph = Graph;
    type Block = Tensor;
    type Error = Error;

    fn execute_step(&self, graph: &Graph, index: usize, inputs: &[Tensor]) -> Result<Tensor> {
        Embedder::execute_step(self, graph, index, inputs)
    }

    fn step_leaf(&self, index: usize, output: &Tensor) -> Hash {
        trace::tensor_step_hash(index, output)
    }
}

impl BertConfig {
    /// The graph of a run over a packed batch of sequences of `lengths` tokens (built from
    /// the configuration alone: what a verifier rebuilds without loading the weights). Row-wise
    /// ops run over the sum of `lengths` rows; one sequence of `n` tokens gives the graph of an
    /// unbatched run. An error if `lengths` is empty, a length is 0, or their sum overflows.
    pub fn graph(&self, lengths: &[usize]) -> Result<Graph> {
        let c = self;
        let sequences = graph::Sequences::new(lengths)
            .filter(|sequences| sequences.count() > 0)
            .ok_or_else(|| Error::Input {
                detail: format!(
                    "{} sequence lengths: need at least one, each at least 1",
                    lengths.len()
                ),
            })?;
        let (rows, batch) = (sequences.rows(), sequences.count());
        let (hidden, eps) = (c.hidden_size, c.layer_norm_eps);
        let weight = |name: String| Source::Weight(name);
        let mut ops = vec![Op {
            name: "embeddings".into(),
            kind: OpKind::Embed {
                sequences: sequences.clone(),
                eps,
            },
            inputs: vec![
                Source::Input(JobInput::TokenIds),
                weight("embeddings.word_embeddings.weight".into()),
                weight("embeddings.position_embeddings.weight".into()),
                weight("embeddings.token_type_embeddings.weight".into()),
                weight("embeddings.LayerNorm.weight".into()),
                weight("embeddings.LayerNorm.bias".into()),
            ],
            output_shape: [rows, hidden],
        }];
        let mut hidden_state = 0;
        for layer in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{layer}");
            let push = |ops: &mut Vec<Op>, name: String, kind, inputs, width| {
                ops.push(Op {
                    name,
                    kind,
                    inputs,
                    output_shape: [rows, width],
                });
                ops.len() - 1
            };
            let linear = |input: usize, name: &str, activation| {
                (
                    OpKind::Linear { activation },
                    vec![
                        Source::Op(input),
                        weight(format!("{p}.{name}.weight")),
                        weight(format!("{p}.{name}.bias")),
                    ],
                )
            };
            let mut qkv = [0; 3];
            for (slot, name) in ["query", "key", "value"].into_iter().enumerate() {
                let (kind, inputs) = linear(
                    hidden_state,
                    &format!("attention.self.{name}"),
                    Activation::Identity,
                );
                qkv[slot] = push(
                    &mut ops,
                    format!("{p}.attention.self.{name}"),
                    kind,
                    inputs,
                    hidden,
                );
            }
            let attention = push(
                &mut ops,
                format!("{p}.attention.self"),
                OpKind::Attention {
                    sequences: sequences.clone(),
                    heads: c.num_attention_heads,
                },
                vec![Source::Op(qkv[0]), Source::Op(qkv[1]), Source::Op(qkv[2])],
                hidden,
            );
            let fused = |input: usize, residual: usize, dense: &str, norm: &str| {
                (
                    OpKind::LinearAddLayerNorm { eps },
                    vec![
                        Source::Op(input),
                        Source::Op(residual),
                        weight(format!("{p}.{dense}.weight")),
                        weight(format!("{p}.{dense}.bias")),
                        weight(format!("{p}.{norm}.weight")),
                        weight(format!("{p}.{norm}.bias")),
                    ],
                )
            };
            let (kind, inputs) = fused(
                attention,
                hidden_state,
                "attention.output.dense",
                "attention.output.LayerNorm",
            );
            let attention_out = push(
                &mut ops,
                format!("{p}.attention.output"),
                kind,
                inputs,
                hidden,
            );
            let (kind, inputs) = linear(attention_out, "intermediate.dense", Activation::GeluErf);
            let intermediate = push(
                &mut ops,
                format!("{p}.intermediate.dense"),
                kind,
                inputs,
                c.intermediate_size,
            );
            let (kind, inputs) = fused(
                intermediate,
                attention_out,
                "output.dense",
                "output.LayerNorm",
            );
            hidden_state = push(&mut ops, format!("{p}.output"), kind, inputs, hidden);
        }
        ops.push(Op {
            name: "pooling.mean".into(),
            kind: OpKind::MeanPool {
                sequences: sequences.clone(),
            },
            inputs: vec![Source::Op(hidden_state)],
            output_shape: [batch, hidden],
        });
        let pooled = ops.len() - 1;
        ops.push(Op {
            name: "normalize.l2".into(),
            kind: OpKind::L2Normalize,
            inputs: vec![Source::Op(pooled)],
            output_shape: [batch, hidden],
        });
        Ok(Graph::new(sequences, ops))
    }

    /// Every weight the graph reads, with its expected shape.
    pub fn weight_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        let c = self;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let mut shapes = BTreeMap::new();
        let mut add = |name: String, shape: Vec<usize>| {
            shapes.insert(name, shape);
        };
        add(
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, h],
        );
        add(
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
        );
        add(
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
        );
        add("embeddings.LayerNorm.weight".into(), vec![h]);
        add("embeddings.LayerNorm.bias".into(), vec![h]);
        for layer in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{layer}");
            for name in ["query", "key", "value"] {
                add(format!("{p}.attention.self.{name}.weight"), vec![h, h]);
                add(format!("{p}.attention.self.{name}.bias"), vec![h]);
            }
            add(format!("{p}.attention.output.dense.weight"), vec![h, h]);
            add(format!("{p}.attention.output.dense.bias"), vec![h]);
            add(format!("{p}.intermediate.dense.weight"), vec![i, h]);
            add(format!("{p}.intermediate.dense.bias"), vec![i]);
            add(format!("{p}.output.dense.weight"), vec![h, i]);
            add(format!("{p}.output.dense.bias"), vec![h]);
            for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
                add(format!("{p}.{norm}.weight"), vec![h]);
                add(format!("{p}.{norm}.bias"), vec![h]);
            }
        }
        shapes
    }
}

/// Leaf hashes of `steps` (global index, step) of one op's `output`, hashed on up to
/// `compute.threads` threads; returned in step order.
fn hash_steps(steps: &[(usize, &Step)], output: &Tensor, compute: Compute) -> Vec<Hash> {
    let width = output.shape()[1];
    let values = output.as_slice().expect("op outputs are contiguous");
    let hash_one = |(index, step): &(usize, &Step)| {
        let rows = &values[step.rows.start * width..step.rows.end * width];
        trace::step_hash(*index, rows, step.rows.len(), width)
    };
    let threads = compute.threads.get().min(steps.len()).max(1);
    if threads == 1 || values.len() < 1 << 16 {
        return steps.iter().map(hash_one).collect();
    }
    let hashes: Vec<std::sync::OnceLock<Hash>> =
        steps.iter().map(|_| std::sync::OnceLock::new()).collect();
    piazza_tensor::pool::Pool::global().for_each(threads, steps.len(), |i| {
        // Each index runs once, so the cell is always empty here.
        let _ = hashes[i].set(hash_one(&steps[i]));
    });
    hashes
        .into_iter()
        .map(|hash| hash.into_inner().expect("the pool runs every index"))
        .collect()
}

/// Accept weights named with a `bert.` prefix (as `BertModel` checkpoints inside larger models).
/// The matrix (first weight) of every linear op of `config`'s graph, packed for the kernel this
/// CPU runs ([`Isa::detect`]); a run on another instruction set packs per call instead.
fn pack_linear_weights(config: &BertConfig, weights: &Weights) -> BTreeMap<String, PackedB> {
    let isa = Isa::detect();
    let mut packed = BTreeMap::new();
    let Ok(graph) = config.graph(&[1]) else {
        return packed;
    };
    for op in graph.ops {
        let linear = matches!(
            op.kind,
            OpKind::Linear { .. } | OpKind::LinearAddLayerNorm { .. }
        );
        let Some(name) = op.weights().next().filter(|_| linear) else {
            continue;
        };
        let Some(tensor) = weights.tensor(name) else {
            continue;
        };
        if let (Some(values), &[n, k]) = (tensor.as_slice(), tensor.shape()) {
            if let Some(matrix) = PackedB::new(values, n, k, isa) {
                packed.insert(name.to_string(), matrix);
            }
        }
    }
    packed
}

fn strip_prefix(weights: Weights) -> Weights {
    if weights
        .tensor("embeddings.word_embeddings.weight")
        .is_some()
    {
        return weights;
    }
    let manifest = weights.manifest();
    let renamed = manifest
        .iter()
        .filter_map(|entry| {
            let tensor = weights.tensor(&entry.name)?.clone();
            let name = entry.name.strip_prefix("bert.").unwrap_or(&entry.name);
            Some((name.to_string(), tensor))
        })
        .collect();
    Weights::from_tensors(renamed)
}

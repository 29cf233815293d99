//! The operator graph of a generation: one *pass* per forward call (the prefill of the prompt,
//! then one pass per generated token), each a fixed sequence of [`Op`]s, each cut into
//! [`Step`]s (the trace leaves). The layout is specified in docs/llm.md §4.
//!
//! Every op's output is a matrix `[rows, width]`. Inputs are job inputs (the prompt ids),
//! weights (by GGUF name) or earlier outputs, possibly several stacked by rows (the KV cache
//! of a layer is the stack of that layer's `attn_k` / `attn_v` outputs of every pass so far, a
//! [`Source::Series`] as every pass has the same ops; the token history is the prompt and
//! every sampled token).

use std::ops::Range;

use piazza_tensor::Activation;
use piazza_trace::graph::OpReads;

use crate::model::LlamaConfig;
use crate::sampling::SamplingParams;

/// Rows per step of a row-wise op.
pub const ROW_BLOCK: usize = 64;
/// Most weight floats one step of a linear op reads (2 MiB): the output columns are cut so
/// that `columns × in_features ≤ WEIGHT_BLOCK_FLOATS`.
pub const WEIGHT_BLOCK_FLOATS: usize = 1 << 19;

pub use piazza_trace::graph::{JobInput, Parts, Source, Step};

/// What an op computes. Activation inputs come first in [`Op::inputs`], then weights.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// Row gather of the token table. Activations: ids `[rows, 1]`. Weights: table.
    Embed,
    /// `rmsnorm(x[row + input_row_offset])`. Activations: x. Weights: gamma.
    RmsNorm { eps: f32, input_row_offset: usize },
    /// `act(x · wᵀ)`. Activations: x. Weights: w `[n, k]`. With `norm: Some(eps)`, `x` is
    /// first `rmsnorm(x)` with gamma, weight 0, before the matrices (the RmsNorm op's bits):
    /// the normalised rows are not committed on their own. So for every linear op here.
    Linear {
        activation: Activation,
        norm: Option<f32>,
    },
    /// `rope(x · wᵀ)`: the linear output (rounded), rotated (rotate-half RoPE) at position
    /// `first_position + row` in heads of `width / heads` columns. Activations: x. Weights:
    /// (gamma,) w.
    LinearRope {
        heads: usize,
        base: f32,
        first_position: usize,
        norm: Option<f32>,
    },
    /// `r + x · wᵀ`: the linear output (rounded), then the sum. A linear op with its residual
    /// connection. Activations: x, r. Weights: w `[n, k]`.
    LinearAdd,
    /// `silu(x · gᵀ) ⊙ (x · uᵀ)` (SwiGLU): each factor rounded, then the product.
    /// Activations: x. Weights: (gamma,) g, u `[n, k]`.
    GatedLinear { norm: Option<f32> },
    /// Causal grouped-query attention; query row `i` is at `first_position + i`.
    /// Activations: q `[rows, heads·d]`, keys and values `[first_position + rows, kv_heads·d]`.
    Attention {
        heads: usize,
        kv_heads: usize,
        first_position: usize,
    },
    /// Choose token number `index` of the generation. Activations: logits `[1, vocab]`, token
    /// history `[history, 1]` (prompt, then every earlier sample). Output `[1, 1]`: the id.
    Sample { index: u64, params: SamplingParams },
}

impl OpKind {
    /// A matrix product over weights `[n, k]` read by rows: a step of output columns `c`
    /// reads rows `c` of each weight (and is cut by columns, [`Graph`]'s steps).
    pub fn is_linear(&self) -> bool {
        matches!(
            self,
            OpKind::Linear { .. }
                | OpKind::LinearRope { .. }
                | OpKind::LinearAdd
                | OpKind::GatedLinear { .. }
        )
    }

    /// The RMSNorm epsilon of a linear op that normalises its input first (its weight 0 is
    /// then gamma).
    pub fn norm(&self) -> Option<f32> {
        match *self {
            OpKind::Linear { norm, .. }
            | OpKind::LinearRope { norm, .. }
            | OpKind::GatedLinear { norm } => norm,
            _ => None,
        }
    }

    /// Whether weight `index` is a matrix whose rows a step reads by its output columns
    /// (every weight of a linear op but a norm's gamma).
    pub fn reads_weight_rows(&self, index: usize) -> bool {
        self.is_linear() && index >= usize::from(self.norm().is_some())
    }
}

/// One operator; its name is `pass{p}.{name}`, e.g. `pass0.blk.3.attn_q`.
pub type Op = piazza_trace::graph::Op<OpKind>;

/// The prompt token ids, `[prompt_len, 1]` f32 (ids below 2^24 are exact).
pub const PROMPT: Source = Source::Input(JobInput::TokenIds);

impl OpReads for OpKind {
    fn input_rows(&self, input: usize, rows: &Range<usize>) -> Option<Range<usize>> {
        match self {
            OpKind::RmsNorm {
                input_row_offset, ..
            } => Some(rows.start + input_row_offset..rows.end + input_row_offset),
            OpKind::Attention { first_position, .. } if input > 0 => {
                Some(0..first_position + rows.end)
            }
            // Sampling reads its whole inputs (one row of logits, the whole history).
            OpKind::Sample { .. } => None,
            _ => Some(rows.clone()),
        }
    }

    /// An attention step over the query heads of KV heads `g0..g1` reads those query columns
    /// and KV columns `g0·d..g1·d`; every other op reads whole rows.
    fn input_columns(
        &self,
        width: usize,
        input: usize,
        columns: &Range<usize>,
    ) -> Option<Range<usize>> {
        match *self {
            OpKind::Attention {
                heads, kv_heads, ..
            } if heads > 0 && kv_heads > 0 && heads.is_multiple_of(kv_heads) => {
                let head_dim = width / heads;
                let group_width = heads / kv_heads * head_dim;
                if input == 0 || group_width == 0 {
                    Some(columns.clone())
                } else {
                    let (g0, g1) = (columns.start / group_width, columns.end / group_width);
                    Some(g0 * head_dim..g1 * head_dim)
                }
            }
            // The residual's columns are the block's own.
            OpKind::LinearAdd if input == 1 => Some(columns.clone()),
            _ => None,
        }
    }
}

/// The ops and steps of a generation so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub ops: Vec<Op>,
    pub steps: Vec<Step>,
    /// First op index of each pass.
    pub pass_starts: Vec<usize>,
}

/// Op indices a pass leaves for later passes.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    /// Per layer: the `attn_k` (roped) and `attn_v` ops of every pass, in order.
    pub keys: Vec<OpStack>,
    pub values: Vec<OpStack>,
    /// The sample op of every pass.
    pub samples: OpStack,
}

/// Ops stacked by rows, one more each pass (a layer's keys or values, the samples), with
/// their stack source ([`Source::stack`]) kept as each op is pushed: a pass's stacks cost
/// constant time and space while the ops stay evenly spaced (as every pass has the same ops).
#[derive(Clone, Debug, Default)]
pub struct OpStack {
    ops: Vec<usize>,
    /// `Source::stack(&ops)` while it is a series.
    series: Option<Source>,
}

impl OpStack {
    pub fn push(&mut self, op: usize) {
        self.series = match (self.ops.as_slice(), self.series.take()) {
            ([], _) => Some(Source::stack(&[op])),
            ([first], Some(_)) if op > *first => Some(Source::stack(&[*first, op])),
            (_, Some(Source::Series { first, step, count }))
                if step.checked_mul(count).and_then(|d| first.checked_add(d)) == Some(op) =>
            {
                Some(Source::Series {
                    first,
                    step,
                    count: count + 1,
                })
            }
            _ => None,
        };
        self.ops.push(op);
    }

    /// The ops pushed so far, in order.
    pub fn ops(&self) -> &[usize] {
        &self.ops
    }

    /// The ops stacked by rows: `Source::stack(self.ops())`.
    pub fn source(&self) -> Source {
        match &self.series {
            Some(series) => series.clone(),
            None => Source::stack(&self.ops),
        }
    }
}

impl Graph {
    fn push(
        &mut self,
        name: String,
        kind: OpKind,
        inputs: Vec<Source>,
        shape: [usize; 2],
    ) -> usize {
        let index = self.ops.len();
        let [rows, width] = shape;
        let matrices = inputs
            .iter()
            .filter(|s| matches!(s, Source::Weight(_)))
            .count()
            .saturating_sub(usize::from(kind.norm().is_some()));
        let column_block = match &kind {
            linear if linear.is_linear() && matrices > 0 => {
                self.linear_k(&inputs).map_or(width, |k| {
                    let columns = WEIGHT_BLOCK_FLOATS / (k * matrices).max(1);
                    match linear {
                        // Whole heads: RoPE pairs columns within a head.
                        OpKind::LinearRope { heads, .. } => {
                            let head = (width / heads.max(&1)).max(1);
                            (columns / head * head).clamp(head, width.max(head))
                        }
                        _ => columns.clamp(1, width.max(1)),
                    }
                })
            }
            // One step per KV head: its query heads, its keys and values (≤ 2 MiB of cache
            // per step at the sequence limit).
            OpKind::Attention { kv_heads, .. } => (width / kv_heads.max(&1)).max(1),
            _ => width.max(1),
        };
        let row_block = match kind {
            OpKind::Sample { .. } => rows.max(1),
            _ => ROW_BLOCK,
        };
        for r0 in (0..rows).step_by(row_block) {
            for c0 in (0..width).step_by(column_block) {
                self.steps.push(Step {
                    op: index,
                    rows: r0..(r0 + row_block).min(rows),
                    columns: c0..(c0 + column_block).min(width),
                });
            }
        }
        self.ops.push(Op {
            name,
            kind,
            inputs,
            output_shape: shape,
        });
        index
    }

    /// Input width of a linear op = width of its activation input.
    fn linear_k(&self, inputs: &[Source]) -> Option<usize> {
        match inputs.first()? {
            Source::Op(i) => Some(self.ops[*i].output_shape[1]),
            _ => None,
        }
    }

    /// The graph of a generation of `new_tokens` tokens after a `prompt_tokens`-token prompt
    /// (what a verifier rebuilds from a job's parameters, without running it).
    pub fn for_generation(
        config: &LlamaConfig,
        output_weight: &str,
        prompt_tokens: usize,
        new_tokens: usize,
        params: &SamplingParams,
    ) -> Graph {
        let mut graph = Graph::default();
        let mut cache = Cache::default();
        let (mut rows, mut position) = (prompt_tokens, 0);
        for _ in 0..new_tokens {
            graph.push_pass(config, output_weight, &mut cache, rows, position, params);
            position += rows;
            rows = 1;
        }
        graph
    }

    /// The embedding of `ids` and every decoder layer of pass `pass` over `rows` tokens from
    /// `first_position` (keys and values joining `cache`); returns the last layer's op.
    fn push_layers(
        &mut self,
        config: &LlamaConfig,
        cache: &mut Cache,
        rows: usize,
        first_position: usize,
        pass: usize,
        ids: Source,
    ) -> usize {
        if cache.keys.is_empty() {
            cache.keys = vec![OpStack::default(); config.layers];
            cache.values = vec![OpStack::default(); config.layers];
        }
        let (h, f, kv) = (config.hidden, config.ffn, config.kv_width());
        let name = |part: &str| format!("pass{pass}.{part}");
        let weight = |name: String| Source::Weight(name);
        let mut x = self.push(
            name("token_embd"),
            OpKind::Embed,
            vec![ids, weight("token_embd.weight".into())],
            [rows, h],
        );
        let norm = Some(config.rms_eps);
        for layer in 0..config.layers {
            // Names joined from prefixes formatted once per layer (a generation has hundreds
            // of ops per pass, and `format!` per name was a few percent of building it).
            let (op_prefix, weight_prefix) =
                (name(&format!("blk.{layer}.")), format!("blk.{layer}."));
            let w = |part: &str| weight([weight_prefix.as_str(), part, ".weight"].concat());
            let n = |part: &str| [op_prefix.as_str(), part].concat();
            // q, k and v each normalise x with `attn_norm` first.
            let rope = |heads| OpKind::LinearRope {
                heads,
                base: config.rope_base,
                first_position,
                norm,
            };
            let q = self.push(
                n("attn_q"),
                rope(config.heads),
                vec![Source::Op(x), w("attn_norm"), w("attn_q")],
                [rows, h],
            );
            let k = self.push(
                n("attn_k"),
                rope(config.kv_heads),
                vec![Source::Op(x), w("attn_norm"), w("attn_k")],
                [rows, kv],
            );
            let v = self.push(
                n("attn_v"),
                OpKind::Linear {
                    activation: Activation::Identity,
                    norm,
                },
                vec![Source::Op(x), w("attn_norm"), w("attn_v")],
                [rows, kv],
            );
            cache.keys[layer].push(k);
            cache.values[layer].push(v);
            let attention = self.push(
                n("attention"),
                OpKind::Attention {
                    heads: config.heads,
                    kv_heads: config.kv_heads,
                    first_position,
                },
                vec![
                    Source::Op(q),
                    cache.keys[layer].source(),
                    cache.values[layer].source(),
                ],
                [rows, h],
            );
            let residual = self.push(
                n("attn_residual"),
                OpKind::LinearAdd,
                vec![Source::Op(attention), Source::Op(x), w("attn_output")],
                [rows, h],
            );
            let gated = self.push(
                n("ffn_gated"),
                OpKind::GatedLinear { norm },
                vec![
                    Source::Op(residual),
                    w("ffn_norm"),
                    w("ffn_gate"),
                    w("ffn_up"),
                ],
                [rows, f],
            );
            x = self.push(
                n("ffn_residual"),
                OpKind::LinearAdd,
                vec![Source::Op(gated), Source::Op(residual), w("ffn_down")],
                [rows, h],
            );
        }
        x
    }

    /// An auditor's single pass over `rows` tokens read from the job input (prompt and
    /// generated tokens, positions `0..rows`), with the LM head on every row from `head_first_row`
    /// on: the logits that chose each generated token, computed as in the decode passes
    /// (every operator is row-independent), without the per-token passes.
    pub fn audit_pass(
        config: &LlamaConfig,
        output_weight: &str,
        rows: usize,
        head_first_row: usize,
    ) -> Graph {
        let mut graph = Graph::default();
        graph.pass_starts.push(0);
        let x = graph.push_layers(config, &mut Cache::default(), rows, 0, 0, PROMPT);
        let head_rows = rows.saturating_sub(head_first_row).max(1);
        let normed = graph.push(
            "audit.output_norm".into(),
            OpKind::RmsNorm {
                eps: config.rms_eps,
                input_row_offset: rows - head_rows,
            },
            vec![Source::Op(x), Source::Weight("output_norm.weight".into())],
            [head_rows, config.hidden],
        );
        graph.push(
            "audit.logits".into(),
            OpKind::Linear {
                activation: Activation::Identity,
                norm: None,
            },
            vec![
                Source::Op(normed),
                Source::Weight(output_weight.to_string()),
            ],
            [head_rows, config.vocab],
        );
        graph
    }

    /// Append one pass over `rows` new tokens starting at `first_position`; returns the index
    /// of its sample op. Pass 0 reads the prompt; pass `p > 0` reads the sample of pass `p - 1`.
    pub fn push_pass(
        &mut self,
        config: &LlamaConfig,
        output_weight: &str,
        cache: &mut Cache,
        rows: usize,
        first_position: usize,
        params: &SamplingParams,
    ) -> usize {
        let pass = self.pass_starts.len();
        self.pass_starts.push(self.ops.len());
        let ids = match cache.samples.ops().last() {
            Some(&sample) => Source::Op(sample),
            None => PROMPT,
        };
        let x = self.push_layers(config, cache, rows, first_position, pass, ids);
        let name = |part: &str| format!("pass{pass}.{part}");
        let weight = |name: String| Source::Weight(name);
        let linear = OpKind::Linear {
            activation: Activation::Identity,
            norm: None,
        };
        let last = self.push(
            name("output_norm"),
            OpKind::RmsNorm {
                eps: config.rms_eps,
                input_row_offset: rows - 1,
            },
            vec![Source::Op(x), weight("output_norm.weight".into())],
            [1, config.hidden],
        );
        let logits = self.push(
            name("logits"),
            linear,
            vec![Source::Op(last), weight(output_weight.to_string())],
            [1, config.vocab],
        );
        let mut history = vec![PROMPT];
        if !cache.samples.ops().is_empty() {
            history.push(cache.samples.source());
        }
        let sample = self.push(
            name("sample"),
            OpKind::Sample {
                index: pass as u64,
                params: params.clone(),
            },
            vec![Source::Op(logits), Source::Rows(history)],
            [1, 1],
        );
        cache.samples.push(sample);
        sample
    }
}

/// The ops and steps of [`Graph::for_generation`] without listing every pass: its first two
/// passes, each later pass being the second one shifted by whole passes. A decode pass has the
/// ops, shapes and steps of the one before; only op names, attention positions, stacked
/// sources and the sample index move on, and no step's block depends on them. An auditor's
/// one-pass check ([`crate::Generator::generate_from_draft`]) reads a generation's steps from
/// it: listed, the graph of 64 tokens (29 thousand ops, 43 thousand steps) took 6–8 ms to
/// build and drop, 4 % of the check on 1 thread and more on 2.
#[derive(Clone, Debug)]
pub struct GenerationLayout {
    /// Passes 0 and 1 (pass 0 alone for a one-pass generation).
    head: Graph,
    passes: usize,
    /// Per op of `head`, the range of its steps (steps are in op order).
    op_steps: Vec<Range<usize>>,
    /// Ops and steps of a decode pass (0 with one pass).
    pass_ops: usize,
    pass_steps: usize,
}

/// Where the steps of a generation's op lie ([`GenerationLayout::op`]).
#[derive(Clone, Debug, PartialEq)]
pub struct OpSteps {
    /// `[rows, width]` of the op's output.
    pub output_shape: [usize; 2],
    /// Its steps' indices in the generation.
    pub steps: Range<usize>,
    /// The index of its first step's block in [`GenerationLayout::steps`].
    pub first_block: usize,
}

impl GenerationLayout {
    /// The layout of `Graph::for_generation(config, output_weight, prompt_tokens, passes,
    /// params)`.
    pub fn new(
        config: &LlamaConfig,
        output_weight: &str,
        prompt_tokens: usize,
        passes: usize,
        params: &SamplingParams,
    ) -> GenerationLayout {
        let head =
            Graph::for_generation(config, output_weight, prompt_tokens, passes.min(2), params);
        let mut op_steps = vec![0..0; head.ops.len()];
        for (index, step) in head.steps.iter().enumerate() {
            if let Some(range) = op_steps.get_mut(step.op) {
                if range.start == range.end {
                    *range = index..index;
                }
                range.end = index + 1;
            }
        }
        let (pass_ops, pass_steps) = match head.pass_starts.get(1) {
            Some(&start) => (
                head.ops.len() - start,
                head.steps.len() - op_steps.get(start).map_or(0, |r| r.start),
            ),
            None => (0, 0),
        };
        GenerationLayout {
            head,
            passes,
            op_steps,
            pass_ops,
            pass_steps,
        }
    }

    /// The first op of pass `pass` (the op count for `pass == passes`).
    pub fn pass_start(&self, pass: usize) -> usize {
        match (pass, self.head.pass_starts.get(1)) {
            (0, _) => 0,
            (_, None) => self.head.ops.len(),
            (pass, Some(&start)) => start + (pass - 1) * self.pass_ops,
        }
    }

    /// The first step of pass `pass` (the step count for `pass == passes`).
    pub fn pass_first_step(&self, pass: usize) -> usize {
        match (pass, self.head.pass_starts.get(1)) {
            (0, _) => 0,
            (_, None) => self.head.steps.len(),
            (pass, Some(&start)) => self.op_steps[start].start + (pass - 1) * self.pass_steps,
        }
    }

    /// Every step of the generation.
    pub fn step_count(&self) -> usize {
        self.pass_first_step(self.passes)
    }

    /// The blocks of the first two passes' steps, which [`OpSteps::first_block`] indexes
    /// (their `op` is the op of those passes that a later pass's op repeats).
    pub fn steps(&self) -> &[Step] {
        &self.head.steps
    }

    /// Op `op`'s output shape and steps; `None` past the last op.
    pub fn op(&self, op: usize) -> Option<OpSteps> {
        let (head_op, shift) = self.locate(op)?;
        let head = &self.op_steps[head_op];
        Some(OpSteps {
            output_shape: self.head.ops[head_op].output_shape,
            steps: head.start + shift * self.pass_steps..head.end + shift * self.pass_steps,
            first_block: head.start,
        })
    }

    /// Op `op` as the graph lists it: a later pass's op is the second pass's, its name, its
    /// positions and sample index moved on, its inputs read `shift` passes later (a stack of
    /// one op a pass holds `shift` more).
    pub fn op_listed(&self, op: usize) -> Option<Op> {
        let (head_op, shift) = self.locate(op)?;
        let template = &self.head.ops[head_op];
        if shift == 0 {
            return Some(template.clone());
        }
        let pass = 1 + shift;
        let part = template.name.split_once('.').map_or("", |(_, part)| part);
        let position = self.pass_position(pass);
        let kind = match &template.kind {
            OpKind::Sample { params, .. } => OpKind::Sample {
                index: pass as u64,
                params: params.clone(),
            },
            OpKind::Attention {
                heads, kv_heads, ..
            } => OpKind::Attention {
                heads: *heads,
                kv_heads: *kv_heads,
                first_position: position,
            },
            OpKind::LinearRope {
                heads, base, norm, ..
            } => OpKind::LinearRope {
                heads: *heads,
                base: *base,
                first_position: position,
                norm: *norm,
            },
            kind => kind.clone(),
        };
        let shifted = |source: &Source| self.shift_source(source, shift);
        Some(Op {
            name: format!("pass{pass}.{part}"),
            kind,
            inputs: template.inputs.iter().map(shifted).collect(),
            output_shape: template.output_shape,
        })
    }

    /// `source` of a second-pass op as the op `shift` passes later reads it: an op's output
    /// that many passes on, a stack of one op a pass (a series) that many ops longer.
    fn shift_source(&self, source: &Source, shift: usize) -> Source {
        match source {
            Source::Op(op) => Source::Op(op + shift * self.pass_ops),
            // One op is a series spaced by 1; with the next pass's it is spaced by a pass.
            Source::Series { first, step, count } => Source::Series {
                first: *first,
                step: if *count == 1 { self.pass_ops } else { *step },
                count: count + shift,
            },
            Source::Rows(parts) => Source::Rows(
                parts
                    .iter()
                    .map(|part| self.shift_source(part, shift))
                    .collect(),
            ),
            source => source.clone(),
        }
    }

    /// The position of pass `pass > 0`'s token: the prompt's length plus the passes before.
    fn pass_position(&self, pass: usize) -> usize {
        self.head
            .ops
            .first()
            .map_or(0, |embed| embed.output_shape[0])
            + pass
            - 1
    }

    /// The op of the first two passes that op `op` repeats, and by how many passes.
    fn locate(&self, op: usize) -> Option<(usize, usize)> {
        if op >= self.pass_start(self.passes) {
            return None;
        }
        match self.head.pass_starts.get(1) {
            Some(&start) if op >= start + self.pass_ops => {
                let shift = (op - start) / self.pass_ops;
                Some((op - shift * self.pass_ops, shift))
            }
            _ => Some((op, 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two layers of two heads sharing one KV head, a vocabulary of 11.
    fn tiny_config() -> LlamaConfig {
        LlamaConfig {
            layers: 2,
            hidden: 8,
            ffn: 16,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            vocab: 11,
            context: 256,
            rope_base: 10_000.0,
            rms_eps: 1e-5,
        }
    }

    /// Whatever the ops pushed, a stack's source is `Source::stack` of them: a series while
    /// they are evenly spaced, a list from the first uneven one on.
    #[test]
    fn op_stacks_are_the_stack_of_their_ops() {
        for ops in [
            &[4][..],
            &[4, 9, 14, 19, 24],
            &[4, 9, 15, 20],
            &[4, 9, 14, 14],
            &[4, 3],
            &[0, 0, 0],
        ] {
            let mut stack = OpStack::default();
            for (n, &op) in ops.iter().enumerate() {
                stack.push(op);
                assert_eq!(
                    stack.source(),
                    Source::stack(&ops[..=n]),
                    "{:?}",
                    &ops[..=n]
                );
            }
            assert_eq!(stack.ops(), ops);
        }
    }

    /// A generation's graph holds each KV cache and token history in constant space: every
    /// attention op's keys and values are a series of one op per pass so far, the history the
    /// prompt and a series of the samples.
    #[test]
    fn a_generation_stacks_its_cache_as_series() {
        let config = tiny_config();
        let passes = 5;
        let greedy = SamplingParams::greedy();
        let graph = Graph::for_generation(&config, "output.weight", 3, passes, &greedy);
        let per_pass = graph.ops.len() / passes;
        let mut attention = 0;
        for (index, op) in graph.ops.iter().enumerate() {
            let pass = index / per_pass;
            match &op.kind {
                OpKind::Attention { .. } => {
                    attention += 1;
                    for source in &op.inputs[1..3] {
                        let Source::Series { step, count, .. } = *source else {
                            panic!("{}: {source:?} is not a series", op.name);
                        };
                        // One op is a series spaced by 1.
                        let spacing = if pass == 0 { 1 } else { per_pass };
                        assert_eq!((step, count), (spacing, pass + 1), "{}", op.name);
                    }
                }
                OpKind::Sample { .. } => {
                    let Source::Rows(history) = &op.inputs[1] else {
                        panic!("{}: history {:?}", op.name, op.inputs[1]);
                    };
                    assert_eq!(history[0], PROMPT);
                    match pass {
                        0 => assert_eq!(history.len(), 1),
                        _ => assert!(matches!(
                            history[1],
                            Source::Series { step, count, .. }
                                if count == pass && (pass == 1 || step == per_pass)
                        )),
                    }
                }
                _ => {}
            }
        }
        assert_eq!(attention, passes * config.layers);
    }

    /// A generation's layout gives every op and step of its listed graph: pass starts, each
    /// op's name, kind and shape, its steps and their blocks, for one pass, two and many.
    #[test]
    fn a_generation_layout_is_its_graph_without_the_list() {
        let config = tiny_config();
        let params = SamplingParams::greedy();
        for (prompt, passes) in [(3, 1), (3, 2), (5, 3), (70, 7), (1, 9)] {
            let graph = Graph::for_generation(&config, "output.weight", prompt, passes, &params);
            let layout = GenerationLayout::new(&config, "output.weight", prompt, passes, &params);
            assert_eq!(layout.step_count(), graph.steps.len());
            for pass in 0..=passes {
                let start = graph.pass_starts.get(pass).copied();
                assert_eq!(layout.pass_start(pass), start.unwrap_or(graph.ops.len()));
                let first_step = start.map_or(graph.steps.len(), |op| {
                    graph.steps.iter().position(|step| step.op == op).unwrap()
                });
                assert_eq!(layout.pass_first_step(pass), first_step);
            }
            for (index, op) in graph.ops.iter().enumerate() {
                assert_eq!(layout.op_listed(index).as_ref(), Some(op));
                let located = layout.op(index).unwrap();
                assert_eq!(located.output_shape, op.output_shape);
                let steps: Vec<usize> = (0..graph.steps.len())
                    .filter(|&s| graph.steps[s].op == index)
                    .collect();
                assert_eq!(located.steps, steps[0]..steps[steps.len() - 1] + 1);
                for (offset, step) in located.steps.clone().enumerate() {
                    let block = &layout.steps()[located.first_block + offset];
                    assert_eq!(
                        (&block.rows, &block.columns),
                        (&graph.steps[step].rows, &graph.steps[step].columns),
                        "{} step {step}",
                        op.name
                    );
                }
            }
            assert_eq!(layout.op(graph.ops.len()), None);
            assert_eq!(layout.op_listed(graph.ops.len()), None);
        }
    }
}

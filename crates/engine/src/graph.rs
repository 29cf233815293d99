//! The operator graph: a model run as a fixed sequence of operators, each split into steps.
//!
//! An [`Op`] names its inputs ([`Source`]: a job input, a weight, or an earlier op's output)
//! and its parameters ([`OpKind`]). Every op's output is a matrix `[rows, width]`, and every op
//! is row-separable: output rows `r0..r1` depend only on input rows `i0..i1` (the same rows for
//! row-wise ops, whole sequences for attention and pooling). A [`Step`] is one such block; the
//! trace hashes one leaf per step, so no step needs more than a few MiB of input.

use std::ops::Range;

use piazza_tensor::{ops, Activation, Compute, PackedB, Tensor};
use piazza_trace::graph::OpReads;

use crate::{Error, Result};

/// Rows per step of a row-wise op: at most 64 rows × 1536 floats (384 KiB) of activations.
pub const ROW_BLOCK: usize = 64;

pub use piazza_trace::graph::{JobInput, Source, Step};

/// What an op computes. Activations (job inputs and op outputs) come first in `Op::inputs`,
/// weights after, in the order listed here.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// `layernorm((word[id] + token_type[0]) + position[row % seq])`.
    /// Activations: token ids. Weights: word, position, token type tables, gamma, beta.
    Embed { seq: usize, eps: f32 },
    /// `act(x · wᵀ + b)`. Activations: x. Weights: w `[n, k]`, b `[n]`.
    Linear { activation: Activation },
    /// Multi-head self-attention per sequence of `seq` rows.
    /// Activations: q, k, v, keep. Weights: none.
    Attention { seq: usize, heads: usize },
    /// `layernorm(x + residual)`. Activations: x, residual. Weights: gamma, beta.
    AddLayerNorm { eps: f32 },
    /// `layernorm((x · wᵀ + b) + residual)`: a projection fused with the residual layer norm
    /// after it (BERT's `*.output.dense` + `*.output.LayerNorm`), so the projection's output is
    /// not hashed on its own. Activations: x, residual. Weights: w, b, gamma, beta.
    LinearAddLayerNorm { eps: f32 },
    /// Masked mean over each sequence of `seq` rows. Activations: x, keep.
    MeanPool { seq: usize },
    /// Each row divided by its L2 norm. Activations: x.
    L2Normalize,
}

/// One operator of a run.
pub type Op = piazza_trace::graph::Op<OpKind>;

impl OpKind {
    /// Rows of a sequence-wise op's unit, or `None` for row-wise ops.
    fn sequence(&self) -> Option<usize> {
        match *self {
            OpKind::Attention { seq, .. } | OpKind::MeanPool { seq } => Some(seq),
            _ => None,
        }
    }
}

impl OpReads for OpKind {
    /// Every input is read over the step's rows, except by mean pooling, whose output row `b`
    /// reads sequence `b`'s rows.
    fn input_rows(&self, _input: usize, rows: &Range<usize>) -> Option<Range<usize>> {
        match *self {
            OpKind::MeanPool { seq } => Some(rows.start * seq..rows.end * seq),
            _ => Some(rows.clone()),
        }
    }

    /// Every step reads whole input rows.
    fn input_columns(&self, _: usize, _: usize, _: &Range<usize>) -> Option<Range<usize>> {
        None
    }
}

/// The input rows step `step` of `op` reads (the same for every activation input).
pub fn input_rows(op: &Op, step: &Step) -> Range<usize> {
    op.input_rows(0, &step.rows)
        .unwrap_or_else(|| step.rows.clone())
}

/// A model run for one input shape: ops in execution order and their steps (trace leaves).
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub batch: usize,
    pub seq: usize,
    pub ops: Vec<Op>,
    pub steps: Vec<Step>,
}

impl Graph {
    /// A graph of `ops`, cut into steps.
    pub fn new(batch: usize, seq: usize, ops: Vec<Op>) -> Graph {
        let mut steps = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let [rows, width] = op.output_shape;
            let step = |rows: Range<usize>| Step {
                op: index,
                rows,
                columns: 0..width,
            };
            match (&op.kind, op.kind.sequence()) {
                (OpKind::MeanPool { .. }, Some(_)) => {
                    steps.extend((0..rows).map(|b| step(b..b + 1)));
                }
                (_, Some(seq)) => {
                    for start in (0..rows).step_by(seq.max(1)) {
                        steps.push(step(start..start + seq));
                    }
                }
                (_, None) => {
                    for start in (0..rows).step_by(ROW_BLOCK) {
                        steps.push(step(start..(start + ROW_BLOCK).min(rows)));
                    }
                }
            }
        }
        Graph {
            batch,
            seq,
            ops,
            steps,
        }
    }

    /// For each op, the index of the last op that reads its output (itself when none does).
    pub fn last_uses(&self) -> Vec<usize> {
        piazza_trace::graph::last_uses(&self.ops)
    }
}

/// Compute one op (or one step of it) from its activation inputs and weights.
///
/// `activations` are the op's activation inputs restricted to the rows being computed, the
/// first of which is row `first_row` of the full input (only `Embed` uses it: positions).
pub fn apply(
    op: &Op,
    activations: &[&Tensor],
    weights: &[&Tensor],
    first_row: usize,
    compute: Compute,
) -> Result<Tensor> {
    apply_packed(op, activations, weights, None, first_row, compute)
}

/// [`apply`], with the matrix of a linear op (its first weight) also given packed
/// ([`PackedB::new`] of that weight, made once at load): the matrix product skips packing it.
/// The same bits as [`apply`]; other ops ignore `packed`.
pub fn apply_packed(
    op: &Op,
    activations: &[&Tensor],
    weights: &[&Tensor],
    packed: Option<&PackedB>,
    first_row: usize,
    compute: Compute,
) -> Result<Tensor> {
    let wrong_arity = || Error::Step {
        op: op.name.clone(),
        detail: format!(
            "expected other inputs, got {} activations and {} weights",
            activations.len(),
            weights.len()
        ),
    };
    let tensor_error = |source| Error::Tensor {
        op: op.name.clone(),
        source,
    };
    let output = match (&op.kind, activations, weights) {
        (&OpKind::Embed { seq, eps }, [ids], [word, position, token_type, gamma, beta]) => {
            let vocab = word.shape().first().copied().unwrap_or(0);
            let ids = token_ids(ids, vocab, &op.name)?;
            let positions: Vec<u32> = (0..ids.len())
                .map(|r| ((first_row + r) % seq.max(1)) as u32)
                .collect();
            let tables = EmbedTables {
                word,
                position,
                token_type,
                gamma,
                beta,
            };
            embed(&tables, &ids, &positions, 0, eps, compute).map_err(tensor_error)?
        }
        (&OpKind::Linear { activation }, [x], [w, b]) => {
            ops::linear_packed(x, w, packed, Some(b), activation, compute).map_err(tensor_error)?
        }
        (&OpKind::Attention { seq, heads }, [q, k, v, keep], []) => {
            let keep = keep_vector(keep).map_err(tensor_error)?;
            ops::attention(q, k, v, &keep, seq, heads, compute).map_err(tensor_error)?
        }
        (&OpKind::AddLayerNorm { eps }, [x, residual], [gamma, beta]) => {
            ops::layernorm(x, Some(residual), gamma, beta, eps, compute).map_err(tensor_error)?
        }
        (&OpKind::LinearAddLayerNorm { eps }, [x, residual], [w, b, gamma, beta]) => {
            let projected =
                ops::linear_packed(x, w, packed, Some(b), Activation::Identity, compute)
                    .map_err(tensor_error)?;
            ops::layernorm(&projected, Some(residual), gamma, beta, eps, compute)
                .map_err(tensor_error)?
        }
        (&OpKind::MeanPool { seq }, [x, keep], []) => {
            let keep = keep_vector(keep).map_err(tensor_error)?;
            ops::mean_pool(x, &keep, seq).map_err(tensor_error)?
        }
        (OpKind::L2Normalize, [x], []) => ops::l2_normalize(x).map_err(tensor_error)?,
        _ => return Err(wrong_arity()),
    };
    Ok(output)
}

/// The tables and norm of an [`OpKind::Embed`] op.
pub struct EmbedTables<'a> {
    pub word: &'a Tensor,
    pub position: &'a Tensor,
    pub token_type: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
}

/// `layernorm((word[ids[r]] + token_type[token_type_row]) + position[positions[r]])` for each
/// row `r`: the arithmetic of [`OpKind::Embed`]. The tables may be compact (only the rows the
/// ids name, with the ids renumbered): a gather copies rows, so the result is the same bits.
pub fn embed(
    tables: &EmbedTables<'_>,
    ids: &[u32],
    positions: &[u32],
    token_type_row: u32,
    eps: f32,
    compute: Compute,
) -> piazza_tensor::Result<Tensor> {
    let single = compute.single_threaded();
    let words = ops::embedding(tables.word, ids)?;
    let types = ops::embedding(tables.token_type, &vec![token_type_row; ids.len()])?;
    let positions = ops::embedding(tables.position, positions)?;
    let sum = ops::add(&ops::add(&words, &types, single)?, &positions, single)?;
    ops::layernorm(&sum, None, tables.gamma, tables.beta, eps, compute)
}

fn keep_vector(keep: &Tensor) -> piazza_tensor::Result<Tensor> {
    keep.reshape(&[keep.element_count()])
}

/// Token ids from a `[rows, 1]` f32 tensor: each must be an integer below `vocab`.
fn token_ids(ids: &Tensor, vocab: usize, op: &str) -> Result<Vec<u32>> {
    ids.to_vec()
        .into_iter()
        .map(|value| {
            let valid = value >= 0.0 && value.fract() == 0.0 && (value as usize) < vocab;
            if valid {
                Ok(value as u32)
            } else {
                Err(Error::Step {
                    op: op.to_string(),
                    detail: format!("token id {value} outside vocabulary of {vocab}"),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, rows: usize) -> Op {
        Op {
            name: "test".into(),
            kind,
            inputs: vec![],
            output_shape: [rows, 8],
        }
    }

    /// Steps of each op cover its output rows once, in order, each within the block limits.
    fn check_cover(graph: &Graph) {
        for (index, op) in graph.ops.iter().enumerate() {
            let rows: Vec<usize> = graph
                .steps
                .iter()
                .filter(|step| step.op == index)
                .flat_map(|step| step.rows.clone())
                .collect();
            assert_eq!(
                rows,
                (0..op.output_shape[0]).collect::<Vec<_>>(),
                "op {index}"
            );
        }
        for step in &graph.steps {
            let op = &graph.ops[step.op];
            assert!(input_rows(op, step).len() <= ROW_BLOCK.max(graph.seq));
            assert_eq!(step.columns, 0..op.output_shape[1]);
        }
    }

    #[test]
    fn steps_cover_every_row_once() {
        for (batch, seq) in [(1, 1), (1, 7), (3, 64), (4, 256), (5, 33)] {
            let rows = batch * seq;
            let graph = Graph::new(
                batch,
                seq,
                vec![
                    op(
                        OpKind::Linear {
                            activation: Activation::Identity,
                        },
                        rows,
                    ),
                    op(OpKind::Attention { seq, heads: 2 }, rows),
                    op(OpKind::MeanPool { seq }, batch),
                    op(OpKind::L2Normalize, batch),
                ],
            );
            check_cover(&graph);
        }
    }
}

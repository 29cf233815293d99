//! The operator graph: a model run as a fixed sequence of operators, each split into steps.
//!
//! An [`Op`] names its inputs ([`Source`]: a job input, a weight, or an earlier op's output)
//! and its parameters ([`OpKind`]). Every op's output is a matrix `[rows, width]`, and every op
//! is row-separable: output rows `r0..r1` depend only on input rows `i0..i1` (the same rows for
//! row-wise ops, whole sequences for attention and pooling). A [`Step`] is one such block; the
//! trace hashes one leaf per step, so no step needs more than a few MiB of input.

use std::ops::Range;
use std::sync::Arc;

use piazza_tensor::{ops, Activation, Compute, PackedB, Tensor};
use piazza_trace::graph::OpReads;

use crate::{Error, Result};

/// Rows per step of a row-wise op: at most 64 rows × 1536 floats (384 KiB) of activations.
pub const ROW_BLOCK: usize = 64;

pub use piazza_trace::graph::{JobInput, Source, Step};

/// The sequences of a packed batch: their token counts, in order. Sequence `b` is rows
/// `range(b)` of every row-wise activation (the rows of all sequences one after the other,
/// no padding). Cheap to clone (shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequences {
    /// `count + 1` offsets: sequence `b` is rows `starts[b]..starts[b + 1]`.
    starts: Arc<[usize]>,
}

impl Sequences {
    /// The sequences of `lengths` tokens each; `None` when a length is 0 or the rows
    /// overflow `usize` (so sequence boundaries are strictly increasing rows).
    pub fn new(lengths: &[usize]) -> Option<Sequences> {
        let mut starts = Vec::with_capacity(lengths.len() + 1);
        let mut row = 0usize;
        starts.push(row);
        for &length in lengths {
            if length == 0 {
                return None;
            }
            row = row.checked_add(length)?;
            starts.push(row);
        }
        Some(Sequences {
            starts: starts.into(),
        })
    }

    /// Number of sequences.
    pub fn count(&self) -> usize {
        self.starts.len() - 1
    }

    /// Rows of all sequences together.
    pub fn rows(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    /// The token count of each sequence, in order.
    pub fn lengths(&self) -> Vec<usize> {
        self.starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// The longest sequence's token count (0 for none).
    pub fn longest(&self) -> usize {
        self.starts
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }

    /// The rows of sequences `sequences` (empty past the end).
    pub fn rows_of(&self, sequences: &Range<usize>) -> Range<usize> {
        let at = |b: usize| self.starts[b.min(self.count())];
        at(sequences.start)..at(sequences.end.max(sequences.start))
    }

    /// The position of each of `rows` within its sequence (row minus its sequence's first
    /// row): what the `Embed` op adds the position table row of. `None` if a row is past the
    /// last sequence.
    pub fn positions(&self, rows: Range<usize>) -> Option<Vec<u32>> {
        if rows.end > self.rows() {
            return None;
        }
        // The sequence of the first row: the last start not above it.
        let mut b = self.starts.partition_point(|&start| start <= rows.start) - 1;
        rows.map(|row| {
            while self.starts[b + 1] <= row {
                b += 1;
            }
            u32::try_from(row - self.starts[b]).ok()
        })
        .collect()
    }
}

/// What an op computes. Activations (job inputs and op outputs) come first in `Op::inputs`,
/// weights after, in the order listed here. Row-wise ops run over the rows of every sequence
/// of the packed batch; the others take its [`Sequences`].
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// `layernorm((word[id] + token_type[0]) + position[p])` with `p` the row's position in
    /// its sequence. Activations: token ids. Weights: word, position, token type tables,
    /// gamma, beta.
    Embed { sequences: Sequences, eps: f32 },
    /// `act(x · wᵀ + b)`. Activations: x. Weights: w `[n, k]`, b `[n]`.
    Linear { activation: Activation },
    /// Multi-head self-attention within each sequence. Activations: q, k, v. Weights: none.
    Attention { sequences: Sequences, heads: usize },
    /// `layernorm(x + residual)`. Activations: x, residual. Weights: gamma, beta.
    AddLayerNorm { eps: f32 },
    /// `layernorm((x · wᵀ + b) + residual)`: a projection fused with the residual layer norm
    /// after it (BERT's `*.output.dense` + `*.output.LayerNorm`), so the projection's output is
    /// not hashed on its own. Activations: x, residual. Weights: w, b, gamma, beta.
    LinearAddLayerNorm { eps: f32 },
    /// Mean over each sequence's rows: one output row per sequence. Activations: x.
    MeanPool { sequences: Sequences },
    /// Each row divided by its L2 norm. Activations: x.
    L2Normalize,
}

/// One operator of a run.
pub type Op = piazza_trace::graph::Op<OpKind>;

impl OpReads for OpKind {
    /// Every input is read over the step's rows, except by mean pooling, whose output row `b`
    /// reads sequence `b`'s rows.
    fn input_rows(&self, _input: usize, rows: &Range<usize>) -> Option<Range<usize>> {
        match self {
            OpKind::MeanPool { sequences } => Some(sequences.rows_of(rows)),
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

/// A model run for one packed batch: ops in execution order and their steps (trace leaves).
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub sequences: Sequences,
    pub ops: Vec<Op>,
    pub steps: Vec<Step>,
}

impl Graph {
    /// A graph of `ops` over `sequences`, cut into steps: row-wise ops in blocks of
    /// [`ROW_BLOCK`] rows, attention one step per sequence, mean pooling one per output row.
    pub fn new(sequences: Sequences, ops: Vec<Op>) -> Graph {
        let mut steps = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let [rows, width] = op.output_shape;
            let step = |rows: Range<usize>| Step {
                op: index,
                rows,
                columns: 0..width,
            };
            match &op.kind {
                OpKind::MeanPool { .. } => steps.extend((0..rows).map(|b| step(b..b + 1))),
                OpKind::Attention { sequences, .. } => steps
                    .extend((0..sequences.count()).map(|b| step(sequences.rows_of(&(b..b + 1))))),
                _ => {
                    for start in (0..rows).step_by(ROW_BLOCK) {
                        steps.push(step(start..(start + ROW_BLOCK).min(rows)));
                    }
                }
            }
        }
        Graph {
            sequences,
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
        (OpKind::Embed { sequences, eps }, [ids], [word, position, token_type, gamma, beta]) => {
            let vocab = word.shape().first().copied().unwrap_or(0);
            let ids = token_ids(ids, vocab, &op.name)?;
            let positions = first_row
                .checked_add(ids.len())
                .and_then(|end| sequences.positions(first_row..end))
                .ok_or_else(|| Error::Step {
                    op: op.name.clone(),
                    detail: format!(
                        "rows {first_row}.. past the batch's {} rows",
                        sequences.rows()
                    ),
                })?;
            let tables = EmbedTables {
                word,
                position,
                token_type,
                gamma,
                beta,
            };
            embed(&tables, &ids, &positions, 0, *eps, compute).map_err(tensor_error)?
        }
        (&OpKind::Linear { activation }, [x], [w, b]) => {
            ops::linear_packed(x, w, packed, Some(b), activation, compute).map_err(tensor_error)?
        }
        (OpKind::Attention { sequences, heads }, [q, k, v], []) => {
            // A step is one sequence: its rows alone.
            let rows = q.shape().first().copied().unwrap_or(0);
            let lengths = sequence_lengths(sequences, first_row, rows, &op.name)?;
            ops::attention(q, k, v, &lengths, *heads, compute).map_err(tensor_error)?
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
        (OpKind::MeanPool { sequences }, [x], []) => {
            let rows = x.shape().first().copied().unwrap_or(0);
            let lengths = sequence_lengths(sequences, first_row, rows, &op.name)?;
            ops::mean_pool(x, &lengths).map_err(tensor_error)?
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

/// The lengths of the whole sequences that rows `first_row..first_row + rows` hold (what a
/// sequence-wise op or one step of it runs over), or an error if those rows cut a sequence.
fn sequence_lengths(
    sequences: &Sequences,
    first_row: usize,
    rows: usize,
    op: &str,
) -> Result<Vec<usize>> {
    let starts = &sequences.starts;
    let end = first_row.checked_add(rows);
    let first = starts.binary_search(&first_row);
    let last = end.map(|end| starts.binary_search(&end));
    match (first, last) {
        (Ok(first), Some(Ok(last))) if first <= last => {
            Ok(sequences.lengths()[first.min(last)..last].to_vec())
        }
        _ => Err(Error::Step {
            op: op.to_string(),
            detail: format!("rows {first_row}.. ({rows}) are not whole sequences"),
        }),
    }
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
            assert!(input_rows(op, step).len() <= ROW_BLOCK.max(graph.sequences.longest()));
            assert_eq!(step.columns, 0..op.output_shape[1]);
        }
    }

    #[test]
    fn steps_cover_every_row_once() {
        let cases: [&[usize]; 6] = [
            &[1],
            &[7],
            &[64, 64, 64],
            &[256; 4],
            &[1, 7, 22, 3],
            &[33, 70],
        ];
        for lengths in cases {
            let sequences = Sequences::new(lengths).unwrap();
            let (rows, batch) = (sequences.rows(), sequences.count());
            let graph = Graph::new(
                sequences.clone(),
                vec![
                    op(
                        OpKind::Linear {
                            activation: Activation::Identity,
                        },
                        rows,
                    ),
                    op(
                        OpKind::Attention {
                            sequences: sequences.clone(),
                            heads: 2,
                        },
                        rows,
                    ),
                    op(OpKind::MeanPool { sequences }, batch),
                    op(OpKind::L2Normalize, batch),
                ],
            );
            check_cover(&graph);
            // Attention and pooling steps are whole sequences, in order.
            let whole: Vec<Range<usize>> = graph
                .steps
                .iter()
                .filter(|step| step.op == 1)
                .map(|step| step.rows.clone())
                .collect();
            let pooled: Vec<Range<usize>> = graph
                .steps
                .iter()
                .filter(|step| step.op == 2)
                .map(|step| input_rows(&graph.ops[2], step))
                .collect();
            assert_eq!(whole, pooled);
            let lengths_read: Vec<usize> = whole.iter().map(Range::len).collect();
            assert_eq!(lengths_read, lengths);
        }
    }

    #[test]
    fn positions_restart_at_each_sequence() {
        let sequences = Sequences::new(&[3, 1, 2]).unwrap();
        assert_eq!(sequences.positions(0..6), Some(vec![0, 1, 2, 0, 0, 1]));
        assert_eq!(sequences.positions(2..5), Some(vec![2, 0, 0]));
        assert_eq!(sequences.positions(5..5), Some(vec![]));
        assert_eq!(sequences.positions(4..7), None);
        assert_eq!(Sequences::new(&[3, 0, 2]), None);
        assert_eq!(Sequences::new(&[usize::MAX, 1]), None);
        // A sequence-wise step must read whole sequences.
        assert_eq!(sequence_lengths(&sequences, 3, 3, "t").unwrap(), vec![1, 2]);
        assert_eq!(
            sequence_lengths(&sequences, 0, 6, "t").unwrap(),
            vec![3, 1, 2]
        );
        assert!(sequence_lengths(&sequences, 1, 3, "t").is_err());
        assert!(sequence_lengths(&sequences, 3, 4, "t").is_err());
        assert!(sequence_lengths(&sequences, usize::MAX, 2, "t").is_err());
    }
}

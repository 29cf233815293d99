//! What one step reads and how it is recomputed, for both model families: the run's graph seen
//! as one table of output blocks (one per trace leaf), the earlier blocks and weight slices a
//! step reads, the assembly of its activation inputs, and its re-execution. The arbiter and
//! the evidence builder share this code, so they cannot disagree on what evidence contains.

use std::ops::Range;

use piazza_engine::config::BertConfig;
use piazza_engine::graph::{self as bert_graph, EmbedTables};
use piazza_llm::LlamaConfig;
use piazza_tensor::{Compute, Tensor};
use piazza_trace::graph::{JobInput, Op, OpReads, Source, Step};
use piazza_trace::weights::{ManifestEntry, WEIGHT_CHUNK_BYTES};

use crate::evidence::EVIDENCE_BYTES_MAX;
use crate::ArbiterError;

/// Most floats the blocks and weights of one step may carry (what fits in the evidence).
const STEP_FLOATS_MAX: usize = EVIDENCE_BYTES_MAX / 4;

/// A run's graph, by family.
#[derive(Clone, Debug)]
pub(crate) enum ModelGraph {
    Bert {
        config: BertConfig,
        graph: piazza_engine::Graph,
    },
    Llama {
        config: LlamaConfig,
        graph: piazza_llm::Graph,
    },
}

/// A graph with, for each op, the range of its steps (an op's steps are consecutive).
#[derive(Clone, Debug)]
pub(crate) struct StepGraph {
    pub model: ModelGraph,
    op_steps: Vec<Range<usize>>,
}

impl ModelGraph {
    fn steps(&self) -> &[Step] {
        match self {
            ModelGraph::Bert { graph, .. } => &graph.steps,
            ModelGraph::Llama { graph, .. } => &graph.steps,
        }
    }

    fn op_count(&self) -> usize {
        match self {
            ModelGraph::Bert { graph, .. } => graph.ops.len(),
            ModelGraph::Llama { graph, .. } => graph.ops.len(),
        }
    }

    fn op_shape(&self, op: usize) -> Option<[usize; 2]> {
        match self {
            ModelGraph::Bert { graph, .. } => graph.ops.get(op).map(|o| o.output_shape),
            ModelGraph::Llama { graph, .. } => graph.ops.get(op).map(|o| o.output_shape),
        }
    }

    /// The activation sources of `step`'s op, each with the rows and columns the step reads
    /// of it (`None`: all).
    fn source_reads(&self, step: &Step) -> Option<Vec<SourceRead<'_>>> {
        match self {
            ModelGraph::Bert { graph, .. } => source_reads(&graph.ops, step),
            ModelGraph::Llama { graph, .. } => source_reads(&graph.ops, step),
        }
    }
}

/// An activation source with the rows and columns a step reads of it (`None`: all).
type SourceRead<'g> = (&'g Source, Option<Range<usize>>, Option<Range<usize>>);

fn source_reads<'g, K: OpReads>(ops: &'g [Op<K>], step: &Step) -> Option<Vec<SourceRead<'g>>> {
    let op = ops.get(step.op)?;
    Some(
        op.activations()
            .enumerate()
            .map(|(k, source)| {
                (
                    source,
                    op.input_rows(k, &step.rows),
                    op.input_columns(k, &step.columns),
                )
            })
            .collect(),
    )
}

/// Where part of an input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Rows `rows` of a job input (one column), to row `to_row`.
    Job { rows: Range<usize>, to_row: usize },
    /// Rows × columns of step `step`'s output block (block coordinates), to `to_row`,
    /// `to_column`.
    Block {
        step: usize,
        rows: Range<usize>,
        columns: Range<usize>,
        to_row: usize,
        to_column: usize,
    },
}

/// One activation input of a step: its shape and pieces (which tile it).
#[derive(Clone, Debug)]
struct InputPlan {
    shape: [usize; 2],
    pieces: Vec<Piece>,
}

/// What step `step` reads.
#[derive(Clone, Debug)]
pub(crate) struct StepPlan {
    pub step: usize,
    inputs: Vec<InputPlan>,
    /// The earlier steps whose output blocks the inputs are cut from, increasing.
    pub leaves: Vec<usize>,
}

/// Which part of a weight a step reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    Whole,
    /// Rows (first dimension) in this range: a linear block's output columns.
    Rows(Range<usize>),
    /// These rows, increasing and distinct: the table rows an embedding gathers.
    Gather(Vec<u32>),
}

/// A weight a step reads: its manifest entry (whose shape the graph expects) and the part.
#[derive(Clone, Debug)]
pub(crate) struct WeightRead {
    pub entry: ManifestEntry,
    pub read: Read,
}

fn internal(detail: String) -> ArbiterError {
    ArbiterError::Execution(detail)
}

fn intersect(a: &Range<usize>, b: &Range<usize>) -> Option<Range<usize>> {
    let range = a.start.max(b.start)..a.end.min(b.end);
    (range.start < range.end).then_some(range)
}

impl StepGraph {
    pub fn new(model: ModelGraph) -> StepGraph {
        let op_steps = piazza_trace::graph::op_steps(model.op_count(), model.steps());
        StepGraph { model, op_steps }
    }

    /// Step `step`'s op and output block (rows × columns of the op's output).
    pub fn block(&self, step: usize) -> Option<(usize, Range<usize>, Range<usize>)> {
        let s = self.model.steps().get(step)?;
        Some((s.op, s.rows.clone(), s.columns.clone()))
    }

    /// The index (new tokens before it) of the sample op whose step `step` is, or `None` for
    /// any other step.
    pub fn sample_index(&self, step: usize) -> Option<u64> {
        let ModelGraph::Llama { graph, .. } = &self.model else {
            return None;
        };
        match graph.ops.get(graph.steps.get(step)?.op)?.kind {
            piazza_llm::OpKind::Sample { index, .. } => Some(index),
            _ => None,
        }
    }

    /// `[rows, columns]` of step `step`'s output block.
    pub fn block_shape(&self, step: usize) -> Option<[usize; 2]> {
        Some(self.model.steps().get(step)?.shape())
    }

    fn source_shape(&self, source: &Source, ids: usize) -> Result<[usize; 2], ArbiterError> {
        match source {
            Source::Input(_) => Ok([ids, 1]),
            Source::Op(op) => self
                .model
                .op_shape(*op)
                .ok_or_else(|| internal(format!("no op {op}"))),
            Source::Rows(_) | Source::Series { .. } => {
                let mut shape = [0, 0];
                for (i, part) in source.parts().into_iter().flatten().enumerate() {
                    let [rows, width] = self.source_shape(&part, ids)?;
                    if i > 0 && width != shape[1] {
                        return Err(internal("stacked sources differ in width".into()));
                    }
                    shape = [shape[0] + rows, width];
                }
                Ok(shape)
            }
            Source::Weight(_) => Err(internal("weight as activation".into())),
        }
    }

    /// The activation sources of step `step`'s op, each with the rows and columns it reads.
    #[allow(clippy::type_complexity)]
    fn step_sources(
        &self,
        step: usize,
        ids: usize,
    ) -> Result<Vec<(&Source, Range<usize>, Range<usize>)>, ArbiterError> {
        let no_step = || internal(format!("no step {step}"));
        let s = self.model.steps().get(step).ok_or_else(no_step)?;
        let reads = self.model.source_reads(s).ok_or_else(no_step)?;
        reads
            .into_iter()
            .map(|(source, rows, columns)| {
                let [all_rows, width] = self.source_shape(source, ids)?;
                Ok((
                    source,
                    rows.unwrap_or(0..all_rows),
                    columns.unwrap_or(0..width),
                ))
            })
            .collect()
    }

    /// What step `step` reads, for a run over `ids` token ids.
    pub fn plan(&self, step: usize, ids: usize) -> Result<StepPlan, ArbiterError> {
        let mut inputs = Vec::new();
        let mut leaves = Vec::new();
        for (source, rows, columns) in self.step_sources(step, ids)? {
            let shape = [rows.len(), columns.len()];
            if shape[0].saturating_mul(shape[1]) > STEP_FLOATS_MAX {
                return Err(internal(format!("step {step} reads an input of {shape:?}")));
            }
            let mut pieces = Vec::new();
            self.pieces(source, &rows, &columns, [0, 0], ids, &mut pieces)?;
            leaves.extend(pieces.iter().filter_map(|piece| match piece {
                Piece::Block { step, .. } => Some(*step),
                Piece::Job { .. } => None,
            }));
            inputs.push(InputPlan { shape, pieces });
        }
        leaves.sort_unstable();
        leaves.dedup();
        if leaves.last().is_some_and(|&last| last >= step) {
            return Err(internal(format!("step {step} reads a later step")));
        }
        let floats = leaves.iter().try_fold(0usize, |sum, &leaf| {
            let [rows, columns] = self.block_shape(leaf)?;
            sum.checked_add(rows.checked_mul(columns)?)
        });
        if floats.is_none_or(|floats| floats > STEP_FLOATS_MAX) {
            return Err(internal(format!(
                "step {step} reads more earlier outputs than evidence can carry"
            )));
        }
        Ok(StepPlan {
            step,
            inputs,
            leaves,
        })
    }

    /// The pieces of `rows` × `columns` of `source`, placed at `to` in the input.
    fn pieces(
        &self,
        source: &Source,
        rows: &Range<usize>,
        columns: &Range<usize>,
        to: [usize; 2],
        ids: usize,
        out: &mut Vec<Piece>,
    ) -> Result<(), ArbiterError> {
        let [source_rows, width] = self.source_shape(source, ids)?;
        if rows.end > source_rows || columns.end > width || rows.is_empty() || columns.is_empty() {
            return Err(internal(format!(
                "reads {rows:?} × {columns:?} of a [{source_rows}, {width}] source"
            )));
        }
        match source {
            Source::Input(JobInput::TokenIds) => out.push(Piece::Job {
                rows: rows.clone(),
                to_row: to[0],
            }),
            Source::Op(op) => {
                let steps = self.op_steps.get(*op).cloned().unwrap_or(0..0);
                for step in steps {
                    let (_, block_rows, block_columns) = self
                        .block(step)
                        .ok_or_else(|| internal(format!("no step {step}")))?;
                    let (Some(r), Some(c)) = (
                        intersect(&block_rows, rows),
                        intersect(&block_columns, columns),
                    ) else {
                        continue;
                    };
                    out.push(Piece::Block {
                        step,
                        rows: r.start - block_rows.start..r.end - block_rows.start,
                        columns: c.start - block_columns.start..c.end - block_columns.start,
                        to_row: to[0] + r.start - rows.start,
                        to_column: to[1] + c.start - columns.start,
                    });
                }
            }
            Source::Rows(_) | Source::Series { .. } => {
                let mut offset = 0;
                for part in source.parts().into_iter().flatten() {
                    let [part_rows, _] = self.source_shape(&part, ids)?;
                    let span = offset..offset + part_rows;
                    if let Some(r) = intersect(&span, rows) {
                        let local = r.start - offset..r.end - offset;
                        let at = [to[0] + r.start - rows.start, to[1]];
                        self.pieces(&part, &local, columns, at, ids, out)?;
                    }
                    offset += part_rows;
                }
            }
            Source::Weight(_) => return Err(internal("weight as activation".into())),
        }
        Ok(())
    }
}

impl StepPlan {
    /// The activation inputs, from the token ids and the output blocks of [`StepPlan::leaves`]
    /// (`blocks[i]` is leaf `leaves[i]`'s block, `[rows, columns]` row-major).
    pub fn assemble(
        &self,
        graph: &StepGraph,
        ids: &[u32],
        blocks: &[&[f32]],
    ) -> Result<Vec<Tensor>, ArbiterError> {
        self.inputs
            .iter()
            .map(|input| {
                let [rows, columns] = input.shape;
                let mut values = vec![0.0f32; rows * columns];
                let mut filled = 0usize;
                for piece in &input.pieces {
                    filled += self.place(graph, piece, ids, blocks, &mut values, columns)?;
                }
                if filled != values.len() {
                    return Err(internal("input pieces do not tile the input".into()));
                }
                Tensor::from_vec(values, &input.shape).map_err(|e| internal(e.to_string()))
            })
            .collect()
    }

    /// Copy one piece into `values` (`columns` wide); returns the values written.
    fn place(
        &self,
        graph: &StepGraph,
        piece: &Piece,
        ids: &[u32],
        blocks: &[&[f32]],
        values: &mut [f32],
        columns: usize,
    ) -> Result<usize, ArbiterError> {
        let out_of_range = || internal("piece outside its input".into());
        match piece {
            Piece::Job { rows, to_row } => {
                for (i, row) in rows.clone().enumerate() {
                    let value = *ids.get(row).ok_or_else(out_of_range)? as f32;
                    *values
                        .get_mut((to_row + i) * columns)
                        .ok_or_else(out_of_range)? = value;
                }
                Ok(rows.len())
            }
            Piece::Block {
                step,
                rows,
                columns: block_columns,
                to_row,
                to_column,
            } => {
                let slot = self
                    .leaves
                    .binary_search(step)
                    .map_err(|_| internal(format!("no block for step {step}")))?;
                let block = blocks.get(slot).ok_or_else(out_of_range)?;
                let [_, width] = graph.block_shape(*step).ok_or_else(out_of_range)?;
                for (i, row) in rows.clone().enumerate() {
                    let from = block
                        .get(row * width + block_columns.start..row * width + block_columns.end)
                        .ok_or_else(out_of_range)?;
                    let at = (to_row + i) * columns + to_column;
                    values
                        .get_mut(at..at + from.len())
                        .ok_or_else(out_of_range)?
                        .copy_from_slice(from);
                }
                Ok(rows.len() * block_columns.len())
            }
        }
    }

    /// The weights the step reads, given its assembled inputs (an embedding's rows depend on
    /// the ids it reads), each checked against the shape the graph expects.
    pub fn weight_reads(
        &self,
        graph: &StepGraph,
        inputs: &[Tensor],
        manifest: &[ManifestEntry],
    ) -> Result<Vec<WeightRead>, ArbiterError> {
        let (names, reads, expected) = match &graph.model {
            ModelGraph::Bert { config, graph: g } => {
                let step = &g.steps[self.step];
                let op = &g.ops[step.op];
                let reads = match op.kind {
                    bert_graph::OpKind::Embed { ref sequences, .. } => {
                        let ids = token_ids(inputs, config.vocab_size)?;
                        let positions = embed_positions(sequences, op, step)?;
                        vec![
                            Read::Gather(distinct(ids)),
                            Read::Gather(distinct(positions)),
                            Read::Gather(vec![0]),
                            Read::Whole,
                            Read::Whole,
                        ]
                    }
                    _ => vec![Read::Whole; op.weights().count()],
                };
                let names: Vec<String> = op.weights().map(str::to_string).collect();
                let shapes = config.weight_shapes();
                let expected: Vec<Option<Vec<usize>>> =
                    names.iter().map(|name| shapes.get(name).cloned()).collect();
                (names, reads, expected)
            }
            ModelGraph::Llama { config, graph: g } => {
                let step = &g.steps[self.step];
                let op = &g.ops[step.op];
                let reads = match op.kind {
                    piazza_llm::OpKind::Embed => {
                        vec![Read::Gather(distinct(token_ids(inputs, config.vocab)?))]
                    }
                    ref linear if linear.is_linear() => (0..op.weights().count())
                        .map(|i| match linear.reads_weight_rows(i) {
                            true => Read::Rows(step.columns.clone()),
                            false => Read::Whole,
                        })
                        .collect(),
                    _ => vec![Read::Whole; op.weights().count()],
                };
                let names: Vec<String> = op.weights().map(str::to_string).collect();
                let mut shapes = config.weight_shapes();
                shapes.push(("output.weight".into(), vec![config.vocab, config.hidden]));
                let expected = names
                    .iter()
                    .map(|name| {
                        shapes
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, shape)| shape.clone())
                    })
                    .collect();
                (names, reads, expected)
            }
        };
        if reads.len() != names.len() {
            return Err(internal("weights and reads differ in number".into()));
        }
        let mut total = 0usize;
        let result = names
            .into_iter()
            .zip(reads)
            .zip(expected)
            .map(|((name, read), expected)| {
                let entry = manifest
                    .binary_search_by(|entry| entry.name.as_str().cmp(&name))
                    .ok()
                    .and_then(|i| manifest.get(i))
                    .ok_or_else(|| ArbiterError::Manifest(format!("no weight {name:?}")))?;
                // A Llama matrix may be committed in the quantized profile's block encoding.
                let quantized = matches!(graph.model, ModelGraph::Llama { .. })
                    && expected.as_ref().is_some_and(|shape| {
                        piazza_llm::model::committed_shape_matches(shape, &entry.shape)
                    });
                if Some(&entry.shape) != expected.as_ref() && !quantized {
                    return Err(ArbiterError::Manifest(format!(
                        "weight {name:?} has shape {:?}, the graph expects {expected:?}",
                        entry.shape
                    )));
                }
                let weight = WeightRead {
                    entry: entry.clone(),
                    read,
                };
                total = total.saturating_add(weight.floats()?);
                if total > STEP_FLOATS_MAX {
                    return Err(internal(format!(
                        "step {} reads more weights than evidence can carry",
                        self.step
                    )));
                }
                Ok(weight)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(result)
    }

    /// Re-execute the step on one thread from its inputs and the weights read (in the op's
    /// weight order, shaped as [`WeightRead::shape`]).
    pub fn execute(
        &self,
        graph: &StepGraph,
        inputs: &[Tensor],
        reads: &[WeightRead],
        weights: &[Tensor],
    ) -> Result<Tensor, ArbiterError> {
        let compute = Compute::new(1);
        let failed = |e: String| ArbiterError::Execution(e);
        match &graph.model {
            ModelGraph::Bert { config, graph: g } => {
                let step = &g.steps[self.step];
                let op = &g.ops[step.op];
                match (&op.kind, weights) {
                    (
                        bert_graph::OpKind::Embed { sequences, eps },
                        [word, position, token_type, gamma, beta],
                    ) => {
                        let ids = token_ids(inputs, config.vocab_size)?;
                        let positions = embed_positions(sequences, op, step)?;
                        let tables = EmbedTables {
                            word,
                            position,
                            token_type,
                            gamma,
                            beta,
                        };
                        let ids = renumber(&ids, &reads[0].read)?;
                        let positions = renumber(&positions, &reads[1].read)?;
                        bert_graph::embed(&tables, &ids, &positions, 0, *eps, compute)
                            .map_err(|e| failed(format!("op {}: {e}", op.name)))
                    }
                    _ => {
                        let activations: Vec<&Tensor> = inputs.iter().collect();
                        let weights: Vec<&Tensor> = weights.iter().collect();
                        bert_graph::apply(
                            op,
                            &activations,
                            &weights,
                            bert_graph::input_rows(op, step).start,
                            compute,
                        )
                        .map_err(|e| failed(e.to_string()))
                    }
                }
            }
            ModelGraph::Llama { config, graph: g } => {
                let step = &g.steps[self.step];
                let op = &g.ops[step.op];
                let mut inputs = inputs.to_vec();
                if op.kind == piazza_llm::OpKind::Embed {
                    let ids = token_ids(&inputs, config.vocab)?;
                    let ids = renumber(&ids, &reads[0].read)?;
                    let values = ids.iter().map(|&id| id as f32).collect();
                    inputs[0] = Tensor::from_vec(values, &[ids.len(), 1])
                        .map_err(|e| failed(e.to_string()))?;
                }
                let weights: Vec<&Tensor> = weights.iter().collect();
                piazza_llm::compute_block(
                    config,
                    op,
                    &step.rows,
                    &step.columns,
                    &inputs,
                    &weights,
                    compute,
                )
                .map_err(|e| failed(e.to_string()))
            }
        }
    }
}

impl WeightRead {
    /// Floats per row (the product of the dimensions after the first).
    fn row_floats(&self) -> usize {
        self.entry.shape.iter().skip(1).product()
    }

    fn floats(&self) -> Result<usize, ArbiterError> {
        let too_large = || ArbiterError::Manifest(format!("{} is too large", self.entry.name));
        let row = self.row_floats();
        let floats = match &self.read {
            Read::Whole => self
                .entry
                .shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d)),
            Read::Rows(rows) => rows.len().checked_mul(row),
            Read::Gather(rows) => rows.len().checked_mul(row),
        };
        floats.ok_or_else(too_large)
    }

    /// The shape of the tensor read.
    pub fn shape(&self) -> Vec<usize> {
        let mut shape = self.entry.shape.clone();
        match &self.read {
            Read::Whole => {}
            Read::Rows(rows) => shape[0] = rows.len(),
            Read::Gather(rows) => shape[0] = rows.len(),
        }
        shape
    }

    /// Byte ranges of the canonical blob read, increasing (rows must lie in the tensor).
    pub fn byte_ranges(&self) -> Result<Vec<Range<u64>>, ArbiterError> {
        let row_bytes = self.row_floats() as u64 * 4;
        let first_dim = self.entry.shape.first().copied().unwrap_or(1) as u64;
        let base = self.entry.offset;
        let out_of_range =
            || ArbiterError::Execution(format!("rows outside weight {}", self.entry.name));
        let rows = |r: Range<u64>| -> Result<Range<u64>, ArbiterError> {
            if r.end > first_dim {
                return Err(out_of_range());
            }
            Ok(base + r.start * row_bytes..base + r.end * row_bytes)
        };
        match &self.read {
            Read::Whole => {
                let whole = base..base + self.floats()? as u64 * 4;
                Ok(vec![whole])
            }
            Read::Rows(r) => Ok(vec![rows(r.start as u64..r.end as u64)?]),
            Read::Gather(list) => {
                let mut ranges: Vec<Range<u64>> = Vec::new();
                for &row in list {
                    let range = rows(u64::from(row)..u64::from(row) + 1)?;
                    match ranges.last_mut() {
                        Some(last) if last.end == range.start => last.end = range.end,
                        _ => ranges.push(range),
                    }
                }
                Ok(ranges)
            }
        }
    }
}

/// The chunk indices covering `ranges`, increasing and distinct.
pub(crate) fn chunks_of(reads: &[WeightRead]) -> Result<Vec<u64>, ArbiterError> {
    let chunk = WEIGHT_CHUNK_BYTES as u64;
    let mut chunks = Vec::new();
    for read in reads {
        for range in read.byte_ranges()? {
            if range.start < range.end {
                chunks.extend(range.start / chunk..range.end.div_ceil(chunk));
            }
        }
    }
    chunks.sort_unstable();
    chunks.dedup();
    Ok(chunks)
}

/// The position-table rows an embedding step gathers: each of its rows' position in its
/// sequence.
fn embed_positions(
    sequences: &bert_graph::Sequences,
    op: &bert_graph::Op,
    step: &Step,
) -> Result<Vec<u32>, ArbiterError> {
    sequences
        .positions(bert_graph::input_rows(op, step))
        .ok_or_else(|| internal(format!("step rows {:?} outside the batch", step.rows)))
}

/// The token ids in the first input (`[rows, 1]` of integer-valued floats below `vocab`).
fn token_ids(inputs: &[Tensor], vocab: usize) -> Result<Vec<u32>, ArbiterError> {
    let ids = inputs
        .first()
        .ok_or_else(|| internal("no ids input".into()))?;
    ids.to_vec()
        .into_iter()
        .map(|value| {
            if value >= 0.0 && value.fract() == 0.0 && (value as usize) < vocab {
                Ok(value as u32)
            } else {
                Err(ArbiterError::Execution(format!(
                    "token id {value} outside vocabulary of {vocab}"
                )))
            }
        })
        .collect()
}

fn distinct(mut values: Vec<u32>) -> Vec<u32> {
    values.sort_unstable();
    values.dedup();
    values
}

/// Each id's row in a gathered table.
fn renumber(ids: &[u32], read: &Read) -> Result<Vec<u32>, ArbiterError> {
    let Read::Gather(rows) = read else {
        return Err(internal("embedding table read whole".into()));
    };
    ids.iter()
        .map(|id| {
            rows.binary_search(id)
                .map(|row| row as u32)
                .map_err(|_| internal(format!("id {id} not gathered")))
        })
        .collect()
}

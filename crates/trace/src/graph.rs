//! The graph of a traced run, for every model family: ops in execution order, each cut into
//! [`Step`]s, one trace leaf per step, and the contract a model keeps to re-execute a step
//! ([`StepExecutor`]).
//!
//! Every op's output is a matrix `[rows, width]`. An [`Op`] names its inputs ([`Source`]: a job
//! input, a weight, an earlier op's output, or several of those stacked by rows) and its
//! parameters (the family's op kind `K`). A [`Step`] is one output block: rows × columns of its
//! op's output; its leaf hashes that block ([`crate::trace::step_hash`]).

use std::ops::Range;

use crate::Hash;

/// Job inputs, each a `[rows, 1]` f32 matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobInput {
    /// Token ids (integers below 2^24, so exact in f32). Batches are packed (sequences end to
    /// end, no padding), so a run has no other input.
    TokenIds,
}

/// Where an op's input comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Input(JobInput),
    Weight(String),
    /// The output of an earlier op (by index).
    Op(usize),
    /// Several activation sources stacked by rows, in order (a KV cache, a token history).
    Rows(Vec<Source>),
    /// The outputs of ops `first`, `first + step`, … (`count` of them) stacked by rows: the
    /// same input as [`Source::Rows`] of those ops, in constant space. A generation's KV cache
    /// and token history grow by one op a pass; listed, every pass's stacks made its graph
    /// quadratic in the number of passes.
    Series {
        first: usize,
        step: usize,
        count: usize,
    },
}

impl Source {
    /// `ops` stacked by rows: a [`Source::Series`] when they are evenly spaced and increasing
    /// (one op counts as spaced by 1), else a [`Source::Rows`] list.
    pub fn stack(ops: &[usize]) -> Source {
        let step = match ops {
            [] => None,
            [_] => Some(1),
            [a, b, ..] => b.checked_sub(*a).filter(|&d| d > 0),
        };
        match step {
            Some(step) if ops.windows(2).all(|w| w[0].checked_add(step) == Some(w[1])) => {
                Source::Series {
                    first: ops[0],
                    step,
                    count: ops.len(),
                }
            }
            _ => Source::Rows(ops.iter().map(|&i| Source::Op(i)).collect()),
        }
    }

    /// The parts of a stacked source, in order: a [`Source::Rows`] list's sources, a
    /// [`Source::Series`]' ops; `None` for any other source.
    pub fn parts(&self) -> Option<Parts<'_>> {
        match self {
            Source::Rows(list) => Some(Parts::List(list.iter())),
            &Source::Series { first, step, count } => Some(Parts::Series {
                next: first,
                step,
                left: count,
            }),
            Source::Input(_) | Source::Weight(_) | Source::Op(_) => None,
        }
    }
}

/// The parts of a stacked source ([`Source::parts`]).
#[derive(Clone, Debug)]
pub enum Parts<'a> {
    List(std::slice::Iter<'a, Source>),
    Series {
        next: usize,
        step: usize,
        left: usize,
    },
}

impl<'a> Iterator for Parts<'a> {
    type Item = std::borrow::Cow<'a, Source>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Parts::List(list) => list.next().map(std::borrow::Cow::Borrowed),
            Parts::Series { next, step, left } => {
                *left = left.checked_sub(1)?;
                let op = *next;
                *next = next.saturating_add(*step);
                Some(std::borrow::Cow::Owned(Source::Op(op)))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = match self {
            Parts::List(list) => list.len(),
            Parts::Series { left, .. } => *left,
        };
        (len, Some(len))
    }

    /// Skips without listing: a series' `n`-th part is computed.
    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        match self {
            Parts::List(list) => list.nth(n).map(std::borrow::Cow::Borrowed),
            Parts::Series { next, step, left } => {
                let skipped = n.min(*left);
                *left -= skipped;
                *next = next.saturating_add(step.saturating_mul(skipped));
                self.next()
            }
        }
    }
}

impl ExactSizeIterator for Parts<'_> {}

/// One operator of a run; `K` is the family's op kind. Activation inputs come first in
/// `inputs`, weights after.
#[derive(Clone, Debug, PartialEq)]
pub struct Op<K> {
    pub name: String,
    pub kind: K,
    pub inputs: Vec<Source>,
    /// `[rows, width]` of the output.
    pub output_shape: [usize; 2],
}

impl<K> Op<K> {
    pub fn activations(&self) -> impl Iterator<Item = &Source> {
        self.inputs
            .iter()
            .filter(|source| !matches!(source, Source::Weight(_)))
    }

    pub fn weights(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().filter_map(|source| match source {
            Source::Weight(name) => Some(name.as_str()),
            _ => None,
        })
    }
}

/// What a step of an op of this kind reads of its activation inputs, given the output block it
/// computes (the family's op kind implements it).
pub trait OpReads {
    /// Rows of activation input `input` (in activation order) that output rows `rows` read;
    /// `None`: all of them.
    fn input_rows(&self, input: usize, rows: &Range<usize>) -> Option<Range<usize>>;

    /// Columns of activation input `input` that output columns `columns` of an op `width`
    /// wide read; `None`: all of them.
    fn input_columns(
        &self,
        width: usize,
        input: usize,
        columns: &Range<usize>,
    ) -> Option<Range<usize>>;
}

impl<K: OpReads> Op<K> {
    /// Rows of activation input `input` that output rows `rows` read (`None`: all).
    pub fn input_rows(&self, input: usize, rows: &Range<usize>) -> Option<Range<usize>> {
        self.kind.input_rows(input, rows)
    }

    /// Columns of activation input `input` that output columns `columns` read (`None`: all).
    pub fn input_columns(&self, input: usize, columns: &Range<usize>) -> Option<Range<usize>> {
        self.kind
            .input_columns(self.output_shape[1], input, columns)
    }
}

/// One traced block of an op's output: rows × columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub op: usize,
    pub rows: Range<usize>,
    pub columns: Range<usize>,
}

impl Step {
    /// `[rows, columns]` of the block.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows.len(), self.columns.len()]
    }
}

/// For each op of `ops`, the index of the last op that reads its output (itself when none
/// does), looking through stacked sources.
pub fn last_uses<K>(ops: &[Op<K>]) -> Vec<usize> {
    fn mark(source: &Source, reader: usize, last: &mut [usize]) {
        match source {
            Source::Op(input) => {
                if let Some(slot) = last.get_mut(*input) {
                    *slot = reader;
                }
            }
            Source::Rows(_) | Source::Series { .. } => source
                .parts()
                .into_iter()
                .flatten()
                .for_each(|part| mark(&part, reader, last)),
            Source::Input(_) | Source::Weight(_) => {}
        }
    }
    let mut last: Vec<usize> = (0..ops.len()).collect();
    for (index, op) in ops.iter().enumerate() {
        for source in &op.inputs {
            mark(source, index, &mut last);
        }
    }
    last
}

/// For each op, the range of its steps in `steps` (an op's steps are consecutive); empty for
/// an op without steps.
pub fn op_steps(op_count: usize, steps: &[Step]) -> Vec<Range<usize>> {
    let mut ranges = vec![0..0; op_count];
    for (index, step) in steps.iter().enumerate() {
        if let Some(range) = ranges.get_mut(step.op) {
            if range.start == range.end {
                *range = index..index + 1;
            } else {
                range.end = index + 1;
            }
        }
    }
    ranges
}

/// The contract of a model whose runs are traced: any step can be recomputed from its
/// activation inputs alone (each restricted to the rows and columns the step reads) and the
/// model's weights, on one thread, and its leaf is the trace's leaf for that step.
pub trait StepExecutor {
    /// The model's graph of a run.
    type Graph;
    /// An activation block (the model's tensor type).
    type Block;
    type Error;

    /// Recompute step `index` of `graph` from its activation `inputs`.
    fn execute_step(
        &self,
        graph: &Self::Graph,
        index: usize,
        inputs: &[Self::Block],
    ) -> Result<Self::Block, Self::Error>;

    /// The trace leaf of step `index` whose output is `output`.
    fn step_leaf(&self, index: usize, output: &Self::Block) -> Hash;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(inputs: Vec<Source>) -> Op<()> {
        Op {
            name: "test".into(),
            kind: (),
            inputs,
            output_shape: [1, 1],
        }
    }

    #[test]
    fn last_uses_look_through_stacks_and_skip_weights() {
        let ops = vec![
            op(vec![Source::Input(JobInput::TokenIds)]),
            op(vec![Source::Op(0), Source::Weight("w".into())]),
            op(vec![Source::Rows(vec![Source::Op(0), Source::Op(1)])]),
            op(vec![Source::Op(1)]),
        ];
        assert_eq!(last_uses(&ops), vec![2, 3, 2, 3]);
        let series = vec![
            op(vec![Source::Input(JobInput::TokenIds)]),
            op(vec![Source::Op(0)]),
            op(vec![Source::Op(0)]),
            op(vec![Source::stack(&[0, 2])]),
        ];
        assert_eq!(last_uses(&series), vec![3, 1, 3, 3]);
        assert_eq!(ops[1].activations().count(), 1);
        assert_eq!(ops[1].weights().collect::<Vec<_>>(), vec!["w"]);
    }

    /// Evenly spaced ops stack as a series with the same parts a list has; anything else
    /// stays a list; skipping into a series computes the part.
    #[test]
    fn stacks_are_series_when_evenly_spaced() {
        let parts = |source: &Source| -> Vec<Source> {
            source
                .parts()
                .expect("stacked")
                .map(|p| p.into_owned())
                .collect()
        };
        let list = |ops: &[usize]| ops.iter().map(|&i| Source::Op(i)).collect::<Vec<_>>();
        for ops in [&[7][..], &[3, 10], &[3, 10, 17, 24]] {
            let stack = Source::stack(ops);
            assert!(matches!(stack, Source::Series { .. }), "{ops:?}");
            assert_eq!(parts(&stack), list(ops));
            assert_eq!(stack.parts().map(|p| p.len()), Some(ops.len()));
        }
        for ops in [&[][..], &[3, 10, 18], &[5, 5], &[9, 4]] {
            assert_eq!(Source::stack(ops), Source::Rows(list(ops)), "{ops:?}");
        }
        let series = Source::stack(&[3, 10, 17, 24]);
        let mut skipped = series.parts().expect("stacked");
        assert_eq!(skipped.nth(2).map(|p| p.into_owned()), Some(Source::Op(17)));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped.nth(5), None);
        assert_eq!(Source::Op(1).parts().map(|p| p.len()), None);
    }

    #[test]
    fn op_steps_are_the_consecutive_ranges() {
        let step = |op, row: usize| Step {
            op,
            rows: row..row + 1,
            columns: 0..1,
        };
        let steps = vec![step(0, 0), step(0, 1), step(2, 0)];
        assert_eq!(op_steps(3, &steps), vec![0..2, 0..0, 2..3]);
        assert_eq!(steps[0].shape(), [1, 1]);
    }
}

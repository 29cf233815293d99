//! The ledger's one window onto the inference engines: one-step arbitration of a dispute.
//!
//! The ledger decides who lost a dispute by re-executing one step of a model run (or by
//! tokenizing a job's input) with the engines' deterministic kernels. It does so only through
//! this trait, which the node implements with `piazza-arbiter` and passes to the executor, so
//! the ledger, mempool, store and client build without the ML stack. Every validator must use the
//! same implementation (it decides consensus); a node that runs none ([`NoArbiter`]) rejects
//! evidence, which keeps a dispute in its phase until its deadline. This file imports only
//! the job's parameters: modules and their context depend on it, never the other way.

use crate::job::JobParams;
use piazza_primitives::Hash;

/// Largest evidence a transaction may carry (a step's inputs and weight slices, or a
/// tokenizer); an implementation must accept evidence up to this size.
pub const EVIDENCE_BYTES_MAX: usize = 12 * 1024 * 1024;

/// The model a disputed job ran, as its record commits to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// `bert` or `llama` today; the arbiter refuses families it cannot run.
    pub architecture: String,
    pub config_hash: Hash,
    pub weights_commitment: Hash,
    pub tokenizer_hash: Hash,
}

/// A disputed job as the chain holds it: its input and the parameters of its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub input: Vec<u8>,
    pub params: JobParams,
}

/// Whether a revealed leaf opens against the subtrees both parties agreed on: `(step, leaf,
/// sibling path)`.
pub type LeafCheck<'a> = dyn Fn(u64, &Hash, &[Hash]) -> bool + 'a;

/// The input phase's finding: the token ids the model's own tokenizer gives the job's input.
pub trait InputVerdict {
    /// The commitment to those ids (the value parties state in round 0).
    fn ids(&self) -> Hash;
    /// Whether a run of these ids can have `step_count` steps under the job's parameters.
    fn step_count_fits(&self, step_count: u64) -> Result<bool, String>;
    /// How many ids there are: the prompt count a provider signs for the input (a session
    /// receipt's `input_units`, a result's). `None` from an arbiter that does not count them,
    /// which then decides no dispute over a count.
    fn id_count(&self) -> Option<u64> {
        None
    }
}

/// A length dispute's finding: the parties agree on every step both traces have and on the
/// ids, and differ in where the generation stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthFinding {
    /// Whether each given step count is a possible run of the ids under the job's parameters.
    pub fits: [bool; 2],
    /// The step count of a generation that stops at the first agreed sample that ends it (end
    /// of sequence, a stop sequence completed, `max_tokens` or the context reached); `None`
    /// when none of the agreed samples ends it, so the generation goes on past them.
    pub stop_steps: Option<u64>,
}

/// One-step arbitration as the ledger needs it. Errors are reasons the evidence is rejected.
pub trait Arbiter: Send + Sync {
    /// Tokenizes `job`'s input with the tokenizer carried in `evidence`, checked against the
    /// model record's tokenizer hash.
    fn input(
        &self,
        model: &Model,
        job: &Job,
        evidence: &[u8],
    ) -> Result<Box<dyn InputVerdict>, String>;

    /// Re-executes `step` of the run of `job` (`step_count` steps from the ids committed to by
    /// `ids`) from `evidence`, whose every input leaf must pass `leaf_agreed` and whose weights
    /// must open against the record's commitment; returns the step's leaf.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        model: &Model,
        job: &Job,
        step: u64,
        step_count: u64,
        ids: &Hash,
        evidence: &[u8],
        leaf_agreed: &LeafCheck<'_>,
    ) -> Result<Hash, String>;

    /// Decides a length dispute from `evidence`: the samples of the first
    /// `min(step_counts)` steps (each must pass `leaf_agreed`) with the model's config and
    /// tokenizer (checked against the record), for the run from the ids committed to by `ids`.
    /// An arbiter that cannot decide lengths rejects the evidence (the default).
    fn length(
        &self,
        _model: &Model,
        _job: &Job,
        _ids: &Hash,
        _step_counts: [u64; 2],
        _evidence: &[u8],
        _leaf_agreed: &LeafCheck<'_>,
    ) -> Result<LengthFinding, String> {
        Err("this arbiter decides no length disputes".into())
    }
}

/// For executors that decide no disputes (tests of other modules, tools): rejects all evidence.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoArbiter;

const NO_ARBITER: &str = "this executor has no arbiter to re-execute a step";

impl Arbiter for NoArbiter {
    fn input(&self, _: &Model, _: &Job, _: &[u8]) -> Result<Box<dyn InputVerdict>, String> {
        Err(NO_ARBITER.into())
    }

    fn step(
        &self,
        _: &Model,
        _: &Job,
        _: u64,
        _: u64,
        _: &Hash,
        _: &[u8],
        _: &LeafCheck<'_>,
    ) -> Result<Hash, String> {
        Err(NO_ARBITER.into())
    }
}

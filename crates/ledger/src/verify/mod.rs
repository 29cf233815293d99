//! `verify`: what makes a result trustworthy (DESIGN.md §4). Audits drawn with the randomness of
//! a block after the result, attestations, challenges with a bond, the bisection game over two
//! trace trees with a deadline per round, one-step arbitration in which the ledger re-executes
//! the first divergent step itself (through the node's [`Arbiter`]), slashing, refunds and bond forfeits, and
//! redundant jobs that settle at once when their copies agree.
//!
//! The game: the defendant (the provider whose result is questioned) and the claimant (a
//! challenger, or another provider of a redundant job) committed to trace roots over the same
//! number of steps. From the top of the trace tree, each round both reveal the two children of
//! their node; the game descends left when the left children differ, right otherwise. Every
//! leaf left of the final leaf lies in a subtree both revealed with equal hashes (kept in
//! `agreed`), so both agree on every input of the final step; the ledger checks each input the
//! evidence opens against those agreed subtrees and the weights against the model's
//! commitment, re-executes the step with the deterministic kernels, and the side whose leaf
//! matches wins. Silence at a round's deadline loses; when nobody proves anything at the
//! arbitration deadline, the claimant loses (a result stands until proven wrong). Runs of the
//! same ids that stop at different lengths play over the steps both have, then the ledger
//! decides where the generation stops from the agreed samples ([`game`]).
//!
//! Invariants:
//! - A held job never settles; every hold ends (attestation, audit deadline, dispute end).
//! - A game ends within `tree::rounds_max(step_count)` rounds plus one arbitration; a length
//!   dispute's within `2 + tree::rounds_max(larger count)` rounds plus one arbitration.
//! - The verify escrow holds exactly the bonds of open disputes.

mod arbitrate;
mod assign;
mod attest;
mod audit;
mod auditor;
mod challenge;
mod game;
mod msg;
mod outcome;
mod reveal;
pub mod state_key;
mod types;

pub use assign::{assign_auditor, audit_rate};
pub use game::{prefix_nodes, Advance, Dispute, Party, Phase, CLAIMANT, DEFENDANT};
pub use msg::Msg;
pub use types::{Auditor, Hold};

use audit::{disprove_attestation, release, review, review_group};
use outcome::{draw, enter_input_phase, open_dispute, resolve, timeout};

use crate::arbitration::{self, Arbiter};
use crate::bank;
use crate::compute::{self, JobStatus};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::list::{self, List};
use crate::models::{self, MODEL_NAME_BYTES_MAX};
use crate::module::GenesisError;
use crate::module::{BlockContext, Module, TxContext};
use crate::staking::{self, Role};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};
use piazza_trace::tree;

pub const AUDITOR_MODELS_MAX: usize = 16;
pub const AUDITORS_PER_MODEL_MAX: usize = 256;
/// Open audits and disputes one address may be part of.
pub const TASKS_MAX: usize = 4096;
/// Largest evidence a transaction may carry (a step's inputs and weight slices, or a
/// tokenizer); a transaction carrying it is in its own size class ([`crate::tx`]).
pub const EVIDENCE_BYTES_MAX: usize = crate::arbitration::EVIDENCE_BYTES_MAX;
const QUEUE_MAX: usize = 100_000;
const BPS: u128 = 10_000;

/// Where challenge bonds wait for the end of their dispute.
pub fn escrow() -> Address {
    Address::module("verify")
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelAuditRate {
    pub model: String,
    pub rate_bps: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    pub min_auditor_stake: Amount,
    /// Share of results audited, in basis points, for models without their own rate.
    pub audit_rate_bps: u16,
    /// Per-model base rates.
    #[serde(default)]
    pub model_rates: Vec<ModelAuditRate>,
    /// The rate for providers with fewer than `new_provider_jobs` completed jobs or any fraud.
    pub new_provider_audit_rate_bps: u16,
    pub new_provider_jobs: u64,
    /// Blocks an assigned auditor has to attest or challenge.
    pub audit_blocks: u64,
    pub challenge_bond: Amount,
    /// Blocks each party has to answer a round of the game.
    pub round_blocks: u64,
    /// Blocks for anyone to submit the evidence that decides the final step.
    pub arbitration_blocks: u64,
    /// Taken from a provider's stake when its result is proven wrong.
    pub fraud_slash: Amount,
    /// The winner's share of a slash or forfeited bond; the rest is burned.
    pub winner_share_bps: u16,
    /// Taken from an auditor's stake when a result it attested is proven wrong: an attestation
    /// is a liability, so attesting without computing (the verifier's dilemma) loses money to
    /// whoever plants or finds a wrong result (docs/verification.md, "Lazy auditors").
    #[serde(default = "default_lazy_slash")]
    pub lazy_slash: Amount,
}

fn default_lazy_slash() -> Amount {
    Amount::pza(100)
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_auditor_stake: Amount::pza(100),
            audit_rate_bps: 1_000,
            model_rates: Vec::new(),
            new_provider_audit_rate_bps: 5_000,
            new_provider_jobs: 20,
            audit_blocks: 100,
            challenge_bond: Amount::pza(10),
            round_blocks: 20,
            arbitration_blocks: 40,
            fraud_slash: Amount::pza(50),
            lazy_slash: default_lazy_slash(),
            winner_share_bps: 5_000,
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), String> {
        let rates = [self.audit_rate_bps, self.new_provider_audit_rate_bps]
            .into_iter()
            .chain(self.model_rates.iter().map(|r| r.rate_bps));
        if rates.into_iter().any(|r| r as u128 > BPS) || self.winner_share_bps as u128 > BPS {
            return Err("verify rates and shares are at most 10000 basis points".into());
        }
        if self.audit_blocks == 0 || self.round_blocks == 0 || self.arbitration_blocks == 0 {
            return Err("verify deadlines must be positive".into());
        }
        if self.model_rates.len() > models::MODELS_MAX {
            return Err("too many per-model audit rates".into());
        }
        if self
            .model_rates
            .iter()
            .any(|r| r.model.is_empty() || r.model.len() > MODEL_NAME_BYTES_MAX)
        {
            return Err(format!(
                "a per-model audit rate names a model of 1 to {MODEL_NAME_BYTES_MAX} bytes"
            ));
        }
        Ok(())
    }

    fn rate_for(&self, model: &str) -> u16 {
        self.model_rates
            .iter()
            .find(|r| r.model == model)
            .map_or(self.audit_rate_bps, |r| r.rate_bps)
    }
}

impl Encode for Params {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.min_auditor_stake);
        w.u16(self.audit_rate_bps);
        w.len(self.model_rates.len());
        for rate in &self.model_rates {
            w.str(&rate.model);
            w.u16(rate.rate_bps);
        }
        w.u16(self.new_provider_audit_rate_bps);
        w.u64(self.new_provider_jobs);
        w.u64(self.audit_blocks);
        w.value(&self.challenge_bond);
        w.u64(self.round_blocks);
        w.u64(self.arbitration_blocks);
        w.value(&self.fraud_slash);
        w.u16(self.winner_share_bps);
        w.value(&self.lazy_slash);
    }
}

impl Decode for Params {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Params {
            min_auditor_stake: r.value()?,
            audit_rate_bps: r.u16()?,
            model_rates: {
                let n = r.len(models::MODELS_MAX)?;
                (0..n)
                    .map(|_| {
                        Ok(ModelAuditRate {
                            model: r.string(MODEL_NAME_BYTES_MAX)?,
                            rate_bps: r.u16()?,
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?
            },
            new_provider_audit_rate_bps: r.u16()?,
            new_provider_jobs: r.u64()?,
            audit_blocks: r.u64()?,
            challenge_bond: r.value()?,
            round_blocks: r.u64()?,
            arbitration_blocks: r.u64()?,
            fraud_slash: r.value()?,
            winner_share_bps: r.u16()?,
            lazy_slash: r.value()?,
        })
    }
}

pub fn params(state: &StateDelta<'_>) -> Params {
    state
        .get(&state_key::params())
        .expect("verify params are written at genesis")
}

pub fn auditor(state: &StateDelta<'_>, address: &Address) -> Option<Auditor> {
    state.get(&state_key::auditor(address))
}

pub fn dispute(state: &StateDelta<'_>, job: u64) -> Option<Dispute> {
    state.get(&state_key::dispute(job))
}

pub fn hold(state: &StateDelta<'_>, job: u64) -> Option<Hold> {
    state.get(&state_key::hold(job))
}

/// Whether a posted job is held back from settlement.
pub fn holds(state: &StateDelta<'_>, job: u64) -> bool {
    hold(state, job).is_some()
}

/// The auditor who attested a job (its fee share goes to them).
pub fn attestation(state: &StateDelta<'_>, job: u64) -> Option<Address> {
    state.get(&state_key::attestation(job))
}

/// Holds a posted job for `why`: compute keeps it from settling until the hold ends.
fn set_hold(state: &mut StateDelta<'_>, job: u64, why: &Hold) {
    state.put(state_key::hold(job), why);
    compute::hold(state, job);
}

/// Ends a hold without settling the job (its group settles together, or it fails).
fn clear_hold(state: &mut StateDelta<'_>, job: u64) {
    state.delete(state_key::hold(job));
    compute::unhold(state, job);
}

/// Jobs with an open audit or dispute involving `address`.
pub fn tasks(state: &StateDelta<'_>, address: &Address) -> Vec<u64> {
    state
        .get::<List<u64, TASKS_MAX>>(&state_key::tasks(address))
        .unwrap_or_default()
        .0
}

pub fn auditors_of(state: &StateDelta<'_>, model: &str) -> Vec<Address> {
    state
        .get::<List<Address, AUDITORS_PER_MODEL_MAX>>(&state_key::auditing(model))
        .unwrap_or_default()
        .0
}

/// Records that `address` has an open audit or dispute on `job`; refuses when its list is full.
fn add_task(state: &mut StateDelta<'_>, address: &Address, job: u64) -> Result<(), list::Full> {
    let mut tasks: List<u64, TASKS_MAX> = state.get(&state_key::tasks(address)).unwrap_or_default();
    tasks.insert_sorted(job)?;
    state.put(state_key::tasks(address), &tasks);
    Ok(())
}

fn has_room_for_task(state: &StateDelta<'_>, address: &Address) -> bool {
    !state
        .get::<List<u64, TASKS_MAX>>(&state_key::tasks(address))
        .unwrap_or_default()
        .is_full()
}

fn remove_task(state: &mut StateDelta<'_>, address: &Address, job: u64) {
    let mut tasks: List<u64, TASKS_MAX> = state.get(&state_key::tasks(address)).unwrap_or_default();
    if tasks.remove_sorted(&job) {
        state.put(state_key::tasks(address), &tasks);
    }
}

/// Puts `job` in the deadline queue of `height` (or the next one with room); the height used.
fn schedule_deadline(state: &mut StateDelta<'_>, height: u64, job: u64) -> Result<u64, list::Full> {
    list::schedule::<QUEUE_MAX>(state, state_key::deadlines, height, job)
}

fn take(state: &mut StateDelta<'_>, key: Vec<u8>) -> Vec<u64> {
    list::take::<QUEUE_MAX>(state, key)
}

fn error(code: ErrorCode, message: impl Into<String>) -> TxError {
    TxError::new(code, message)
}

fn no_dispute(job: u64) -> TxError {
    error(
        ErrorCode::NoDispute,
        format!("job {job} has no open dispute"),
    )
}

pub struct Verify;

impl Module for Verify {
    type Msg = Msg;
    type Genesis = Params;
    const NAME: &'static str = "verify";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::RegisterAuditor { .. } | Msg::ExitAuditor => 200,
            Msg::Attest { .. } | Msg::Challenge { .. } | Msg::Reveal { .. } => 100,
            // Re-executing a step is the most expensive thing a transaction can ask for; the
            // per-byte charge covers its size.
            Msg::Arbitrate { .. } => 10_000,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::RegisterAuditor { models, .. } => auditor::check_register_stateless(models),
            Msg::Challenge { step_count, .. } => challenge::check_stateless(step_count),
            _ => Ok(()),
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::RegisterAuditor { models, .. } => auditor::check_register(state, ctx, models),
            Msg::ExitAuditor => auditor::check_exit(state, ctx),
            Msg::Attest { job } => attest::check_stateful(state, ctx, job),
            Msg::Challenge {
                job, trace_root, ..
            } => challenge::check_stateful(state, ctx, job, trace_root),
            Msg::Reveal { job, round, .. } => reveal::check_stateful(state, ctx, job, round),
            Msg::Arbitrate { job, .. } => arbitrate::check_stateful(state, job),
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::RegisterAuditor { models, stake } => {
                auditor::execute_register(state, ctx, models, stake)
            }
            Msg::ExitAuditor => auditor::execute_exit(state, ctx),
            Msg::Attest { job } => attest::execute(state, ctx, job),
            Msg::Challenge {
                job,
                trace_root,
                step_count,
                ids,
            } => challenge::execute(state, ctx, job, trace_root, step_count, ids),
            Msg::Reveal {
                job,
                left,
                right,
                step_count,
                ids,
                ..
            } => reveal::execute(state, ctx, job, left, right, step_count, ids),
            Msg::Arbitrate { job, evidence } => arbitrate::execute(state, ctx, job, evidence),
        }
    }

    fn init_chain(state: &mut StateDelta<'_>, params: &Params) -> Result<(), GenesisError> {
        params.validate().map_err(GenesisError::Invalid)?;
        state.put(state_key::params(), params);
        Ok(())
    }

    /// Draws audits for the results posted in the previous block, with this block's randomness.
    fn begin_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        if let Some(previous) = block.height.checked_sub(1) {
            for id in compute::take_reviews(state, previous) {
                review(state, id, block, events);
            }
        }
    }

    /// Ends audits and dispute rounds whose deadline is this block.
    fn end_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        for id in take(state, state_key::deadlines(block.height)) {
            if let Some(d) = dispute(state, id) {
                if d.deadline == block.height {
                    timeout(state, d, block, events);
                }
                continue;
            }
            if let Some(Hold::Audit {
                auditor: a,
                deadline,
            }) = hold(state, id)
            {
                if deadline == block.height {
                    remove_task(state, &a, id);
                    if let Some(mut record) = auditor(state, &a) {
                        record.missed += 1;
                        state.put(state_key::auditor(&a), &record);
                    }
                    events.push(Event::new(
                        "verify.audit_missed",
                        &[("job", id.to_string()), ("auditor", a.to_string())],
                    ));
                    release(state, id, block, events);
                }
            }
        }
    }
}

fn not_an_auditor(address: &Address) -> TxError {
    error(
        ErrorCode::NotAnAuditor,
        format!("{address} is not a registered auditor"),
    )
}

//! `compute`: the inference market. Providers register with stake, clients submit jobs with
//! escrow, the chain assigns each job to a provider by stake-weighted randomness, the provider
//! posts its result (output, output hash, trace root, work), and after the challenge window the
//! escrow pays the price — split among provider, model owner, auditor pool and treasury — and
//! refunds the rest. Every settled job leaves a receipt.
//!
//! Invariants:
//! - The escrow account holds exactly the `max_price` of every job not yet settled or expired.
//! - Assignment uses the randomness of a block after the job's submission, so neither the
//!   client nor the proposer of the submitting block can choose the provider.
//! - A job settles or expires exactly once; its price is at most its escrow.

mod adopt;
mod decline;
mod lifecycle;
mod msg;
mod post;
mod provider;
mod split;
pub mod state_key;
mod submit;
mod types;

use lifecycle::{assign, release_provider, settle, take_queue};

pub use crate::job::{
    JobParams, JOB_DEADLINE_BLOCKS_MAX, REDUNDANCY_MAX, STOP_SEQUENCES_MAX, STOP_SEQUENCE_BYTES_MAX,
};
pub use adopt::{adopt_posted, hold_provider, ServedRequest};
pub use lifecycle::{
    choose_provider, extend_window, fail, hold, is_held, pay_auditor_share_to, release, settle_now,
    settle_released, take_reviews, unhold,
};
pub use msg::{Msg, DECLINE_REASON_BYTES_MAX};
pub use split::{pay_model_revenue, pay_price, PriceSplit};
pub use types::{
    input_hash, output_hash, Job, JobReceipt, JobResult, JobStatus, Offer, Provider,
    INPUT_BYTES_PER_DEADLINE_UNIT, UNITS_PER_BLOCK_MAX,
};

use crate::bank;
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::models::MODEL_NAME_BYTES_MAX;
use crate::module::GenesisError;
use crate::module::{BlockContext, Module, TxContext};
use crate::staking::{self, Role};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount};

/// Largest inline job input.
pub const JOB_INPUT_BYTES_MAX: usize = 16 * 1024;
/// Largest inline job output.
pub const JOB_OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// Most units of work one job may declare.
pub const JOB_UNITS_MAX: u64 = 8192;
pub const PROVIDER_MODELS_MAX: usize = 16;
pub const PROVIDERS_PER_MODEL_MAX: usize = 256;
pub const PROVIDER_CAPACITY_MAX: u32 = 1024;
/// Most jobs queued for one block hook (assignment, deadlines, settlement).
pub const JOBS_PER_QUEUE_MAX: usize = 100_000;
const ENDPOINT_BYTES_MAX: usize = 256;
const BPS: u128 = 10_000;

/// The escrow account.
pub fn escrow() -> Address {
    Address::module("compute")
}

/// Where auditors' share of every fee collects.
pub fn auditor_pool() -> Address {
    Address::module("auditor-pool")
}

pub use crate::list::List;

/// Basis points of a job's price, by recipient; they sum to 10 000.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeeSplit {
    pub provider_bps: u16,
    pub model_owner_bps: u16,
    pub auditor_pool_bps: u16,
    pub treasury_bps: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    pub min_provider_stake: Amount,
    /// Blocks between a posted result and its settlement, for audits and challenges.
    pub challenge_window_blocks: u64,
    /// Blocks a provider has to post a result once assigned.
    pub job_deadline_blocks: u64,
    /// Taken from the provider's stake (to the treasury) when it misses a deadline.
    pub missed_deadline_penalty: Amount,
    /// Assignments before an unserved job expires and is refunded.
    pub max_attempts: u8,
    /// Blocks a job may wait for a provider with room before it expires and is refunded.
    pub queue_timeout_blocks: u64,
    pub split: FeeSplit,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_provider_stake: Amount::pza(100),
            challenge_window_blocks: 2,
            job_deadline_blocks: 20,
            missed_deadline_penalty: Amount::pza(10),
            max_attempts: 3,
            queue_timeout_blocks: 300,
            split: FeeSplit {
                provider_bps: 7_000,
                model_owner_bps: 1_500,
                auditor_pool_bps: 1_000,
                treasury_bps: 500,
            },
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.split;
        let total = s.provider_bps as u32
            + s.model_owner_bps as u32
            + s.auditor_pool_bps as u32
            + s.treasury_bps as u32;
        if total != BPS as u32 {
            return Err(format!(
                "the fee split sums to {total} basis points, not 10000"
            ));
        }
        if self.job_deadline_blocks == 0 || self.max_attempts == 0 {
            return Err("job deadline and attempts must be positive".into());
        }
        Ok(())
    }
}

impl Encode for Params {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.min_provider_stake);
        w.u64(self.challenge_window_blocks);
        w.u64(self.job_deadline_blocks);
        w.value(&self.missed_deadline_penalty);
        w.u8(self.max_attempts);
        w.u64(self.queue_timeout_blocks);
        w.u16(self.split.provider_bps);
        w.u16(self.split.model_owner_bps);
        w.u16(self.split.auditor_pool_bps);
        w.u16(self.split.treasury_bps);
    }
}

impl Decode for Params {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Params {
            min_provider_stake: r.value()?,
            challenge_window_blocks: r.u64()?,
            job_deadline_blocks: r.u64()?,
            missed_deadline_penalty: r.value()?,
            max_attempts: r.u8()?,
            queue_timeout_blocks: r.u64()?,
            split: FeeSplit {
                provider_bps: r.u16()?,
                model_owner_bps: r.u16()?,
                auditor_pool_bps: r.u16()?,
                treasury_bps: r.u16()?,
            },
        })
    }
}

fn encode_models(w: &mut Writer, models: &[String]) {
    w.len(models.len());
    for m in models {
        w.str(m);
    }
}

fn decode_models(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let n = r.len(PROVIDER_MODELS_MAX)?;
    (0..n).map(|_| r.string(MODEL_NAME_BYTES_MAX)).collect()
}

pub fn params(state: &StateDelta<'_>) -> Params {
    state
        .get(&state_key::params())
        .expect("compute params are written at genesis")
}

pub fn provider(state: &StateDelta<'_>, address: &Address) -> Option<Provider> {
    state.get(&state_key::provider(address))
}

pub fn job(state: &StateDelta<'_>, id: u64) -> Option<Job> {
    state.get(&state_key::job(id))
}

/// The jobs currently assigned to a provider.
pub fn assigned_jobs(state: &StateDelta<'_>, address: &Address) -> Vec<u64> {
    state
        .get::<List<u64, { PROVIDER_CAPACITY_MAX as usize }>>(&state_key::assigned(address))
        .unwrap_or_default()
        .0
}

pub fn providers_serving(state: &StateDelta<'_>, model: &str) -> Vec<Address> {
    state
        .get::<List<Address, PROVIDERS_PER_MODEL_MAX>>(&state_key::serving(model))
        .unwrap_or_default()
        .0
}

fn invalid(message: impl Into<String>) -> TxError {
    TxError::new(ErrorCode::InvalidMessage, message)
}

pub struct Compute;

impl Module for Compute {
    type Msg = Msg;
    type Genesis = Params;
    const NAME: &'static str = "compute";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::RegisterProvider { .. } | Msg::UpdateProvider { .. } | Msg::ExitProvider => 200,
            Msg::SubmitJob { .. } => 100,
            Msg::PostResult { .. } | Msg::DeclineJob { .. } => 100,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::RegisterProvider { offer, .. } | Msg::UpdateProvider { offer } => {
                provider::check_offer(offer)
            }
            Msg::ExitProvider => Ok(()),
            Msg::SubmitJob {
                input,
                max_units,
                params,
                ..
            } => submit::check_stateless(input, max_units, params),
            Msg::DeclineJob { reason, .. } => decline::check_stateless(reason),
            Msg::PostResult {
                output,
                output_hash,
                ..
            } => post::check_stateless(output, output_hash),
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::RegisterProvider { offer, .. } => provider::check_register(state, ctx, offer),
            Msg::UpdateProvider { offer } => provider::check_update(state, ctx, offer),
            Msg::ExitProvider => provider::check_exit(state, ctx),
            Msg::SubmitJob {
                model,
                input,
                max_units,
                max_price,
                params,
            } => submit::check_stateful(state, ctx, model, input, max_units, max_price, params),
            Msg::DeclineJob { job, .. } => decline::check_stateful(state, ctx, job),
            Msg::PostResult {
                job, work_units, ..
            } => post::check_stateful(state, ctx, job, work_units),
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::RegisterProvider { offer, stake } => {
                provider::execute_register(state, ctx, offer, stake)
            }
            Msg::UpdateProvider { offer } => provider::execute_update(state, ctx, offer),
            Msg::ExitProvider => provider::execute_exit(state, ctx),
            Msg::SubmitJob {
                model,
                input,
                params,
                max_units,
                max_price,
            } => submit::execute(state, ctx, model, input, params, max_units, max_price),
            Msg::DeclineJob { job, reason } => decline::execute(state, ctx, job, reason),
            Msg::PostResult {
                job,
                output,
                output_hash,
                trace_root,
                work_units,
                input_units,
            } => post::execute(
                state,
                ctx,
                job,
                output,
                output_hash,
                trace_root,
                work_units,
                input_units,
            ),
        }
    }

    fn init_chain(state: &mut StateDelta<'_>, params: &Params) -> Result<(), GenesisError> {
        params.validate().map_err(GenesisError::Invalid)?;
        state.put(state_key::params(), params);
        Ok(())
    }

    /// Assigns the jobs submitted in earlier blocks, with this block's randomness.
    fn begin_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        for id in take_queue(state, state_key::pending()) {
            if let Some(job) = job(state, id) {
                assign(state, job, block, events);
            }
        }
    }

    /// Penalises and reassigns jobs whose deadline is this block, then settles the jobs whose
    /// challenge window ends here.
    fn end_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        let params = params(state);
        for id in take_queue(state, state_key::deadlines(block.height)) {
            let Some(mut job) = job(state, id) else {
                continue;
            };
            let JobStatus::Assigned {
                provider: address,
                deadline_height,
            } = job.status
            else {
                continue;
            };
            if deadline_height != block.height {
                continue;
            }
            release_provider(state, &address, id, false);
            let penalty = staking::slash(
                state,
                &address,
                Role::Provider,
                params.missed_deadline_penalty,
                Some(&bank::treasury()),
            );
            events.push(Event::new(
                "compute.deadline_missed",
                &[
                    ("job", id.to_string()),
                    ("provider", address.to_string()),
                    ("penalty", penalty.base_units().to_string()),
                ],
            ));
            job.missed.push(address);
            job.queued_height = block.height;
            assign(state, job, block, events);
        }
        for id in take_queue(state, state_key::settlements(block.height)) {
            // Jobs under audit or dispute settle when the verify module releases them.
            if is_held(state, id) {
                continue;
            }
            if let Some(job) = job(state, id) {
                // A window extended after an attestation settles at its new height.
                if matches!(job.status, JobStatus::Posted { settle_height, .. } if settle_height > block.height)
                {
                    continue;
                }
                settle(state, job, block, events);
            }
        }
    }
}

fn not_a_provider(address: &Address) -> TxError {
    TxError::new(
        ErrorCode::NotAProvider,
        format!("{address} is not a registered provider"),
    )
}

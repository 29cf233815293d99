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

pub mod state_key;

use crate::bank;
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::list;
use crate::models::{self, MODEL_NAME_BYTES_MAX};
use crate::module::GenesisError;
use crate::module::{BlockContext, Module, TxContext};
use crate::staking::{self, Role};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};

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

/// What a provider offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub models: Vec<String>,
    pub price_per_unit: Amount,
    pub capacity: u32,
    pub endpoint: String,
    /// Work units the provider declares it finishes per block for one job while running
    /// `capacity` jobs at once: a job's result deadline grows with its work at this speed.
    pub units_per_block: u32,
}

/// The fastest speed a provider may declare.
pub const UNITS_PER_BLOCK_MAX: u32 = 1_000_000;
/// Input bytes that count as one unit of work when a deadline is set: reading a prompt is
/// several times faster per token than generating, and a token is a few bytes.
pub const INPUT_BYTES_PER_DEADLINE_UNIT: u64 = 32;

impl Job {
    /// The work a deadline allows for: the units asked for plus the input to read.
    pub fn deadline_units(&self) -> u64 {
        self.max_units
            .saturating_add(self.input.len() as u64 / INPUT_BYTES_PER_DEADLINE_UNIT)
    }
}

impl Offer {
    /// Blocks this provider needs for `units` of work at its declared speed (at least one).
    pub fn work_blocks(&self, units: u64) -> u64 {
        units
            .div_ceil(u64::from(self.units_per_block.max(1)))
            .max(1)
    }
}

impl Encode for Offer {
    fn encode(&self, w: &mut Writer) {
        encode_models(w, &self.models);
        w.value(&self.price_per_unit);
        w.u32(self.capacity);
        w.str(&self.endpoint);
        w.u32(self.units_per_block);
    }
}

impl Decode for Offer {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Offer {
            models: decode_models(r)?,
            price_per_unit: r.value()?,
            capacity: r.u32()?,
            endpoint: r.string(ENDPOINT_BYTES_MAX)?,
            units_per_block: r.u32()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub address: Address,
    pub offer: Offer,
    pub active_jobs: u32,
    pub jobs_completed: u64,
    pub deadlines_missed: u64,
    /// Results proven wrong in disputes.
    pub frauds: u64,
    /// Posted results not yet settled or failed: while any remains, the provider cannot exit
    /// (its stake must still answer for them).
    pub unsettled: u64,
}

impl Encode for Provider {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.address);
        w.value(&self.offer);
        w.u32(self.active_jobs);
        w.u64(self.jobs_completed);
        w.u64(self.deadlines_missed);
        w.u64(self.frauds);
        w.u64(self.unsettled);
    }
}

impl Decode for Provider {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Provider {
            address: r.value()?,
            offer: r.value()?,
            active_jobs: r.u32()?,
            jobs_completed: r.u64()?,
            deadlines_missed: r.u64()?,
            frauds: r.u64()?,
            unsettled: r.u64()?,
        })
    }
}

pub use crate::job::{
    JobParams, JOB_DEADLINE_BLOCKS_MAX, REDUNDANCY_MAX, STOP_SEQUENCES_MAX, STOP_SEQUENCE_BYTES_MAX,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for the next block's randomness.
    Pending,
    Assigned {
        provider: Address,
        deadline_height: u64,
    },
    Posted {
        provider: Address,
        settle_height: u64,
    },
    Settled,
    /// No provider could serve it; refunded in full.
    Expired,
    /// Its result was proven wrong in a dispute; refunded in full.
    Failed,
}

impl JobStatus {
    pub fn name(&self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Assigned { .. } => "assigned",
            JobStatus::Posted { .. } => "posted",
            JobStatus::Settled => "settled",
            JobStatus::Expired => "expired",
            JobStatus::Failed => "failed",
        }
    }
}

impl Encode for JobStatus {
    fn encode(&self, w: &mut Writer) {
        match self {
            JobStatus::Pending => w.u8(0),
            JobStatus::Assigned {
                provider,
                deadline_height,
            } => {
                w.u8(1);
                w.value(provider);
                w.u64(*deadline_height);
            }
            JobStatus::Posted {
                provider,
                settle_height,
            } => {
                w.u8(2);
                w.value(provider);
                w.u64(*settle_height);
            }
            JobStatus::Settled => w.u8(3),
            JobStatus::Expired => w.u8(4),
            JobStatus::Failed => w.u8(5),
        }
    }
}

impl Decode for JobStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => JobStatus::Pending,
            1 => JobStatus::Assigned {
                provider: r.value()?,
                deadline_height: r.u64()?,
            },
            2 => JobStatus::Posted {
                provider: r.value()?,
                settle_height: r.u64()?,
            },
            3 => JobStatus::Settled,
            4 => JobStatus::Expired,
            5 => JobStatus::Failed,
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "job status",
                })
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    pub output: Vec<u8>,
    pub output_hash: Hash,
    pub trace_root: Hash,
    pub work_units: u64,
    pub posted_height: u64,
}

impl Encode for JobResult {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.output);
        w.value(&self.output_hash);
        w.value(&self.trace_root);
        w.u64(self.work_units);
        w.u64(self.posted_height);
    }
}

impl Decode for JobResult {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(JobResult {
            output: r.bytes(JOB_OUTPUT_BYTES_MAX)?,
            output_hash: r.value()?,
            trace_root: r.value()?,
            work_units: r.u64()?,
            posted_height: r.u64()?,
        })
    }
}

/// The provenance record of a settled job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReceipt {
    pub job: u64,
    pub model: String,
    pub input_hash: Hash,
    pub output_hash: Hash,
    pub trace_root: Hash,
    pub provider: Address,
    pub price: Amount,
    pub refund: Amount,
    pub height: u64,
}

impl Encode for JobReceipt {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.job);
        w.str(&self.model);
        w.value(&self.input_hash);
        w.value(&self.output_hash);
        w.value(&self.trace_root);
        w.value(&self.provider);
        w.value(&self.price);
        w.value(&self.refund);
        w.u64(self.height);
    }
}

impl Decode for JobReceipt {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(JobReceipt {
            job: r.u64()?,
            model: r.string(MODEL_NAME_BYTES_MAX)?,
            input_hash: r.value()?,
            output_hash: r.value()?,
            trace_root: r.value()?,
            provider: r.value()?,
            price: r.value()?,
            refund: r.value()?,
            height: r.u64()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub client: Address,
    pub model: String,
    pub input: Vec<u8>,
    pub params: JobParams,
    pub max_units: u64,
    pub max_price: Amount,
    pub submitted_height: u64,
    /// The first job of its redundant group (its own id when it runs once); the group is
    /// `group .. group + params.copies()`.
    pub group: u64,
    /// When the job last started waiting for a provider (submission or a missed deadline);
    /// it waits for room at most `queue_timeout_blocks` from then.
    pub queued_height: u64,
    /// The assigned provider's price, fixed at assignment.
    pub price_per_unit: Amount,
    pub status: JobStatus,
    /// Providers assigned before, who missed their deadline.
    pub missed: Vec<Address>,
    pub result: Option<JobResult>,
    pub receipt: Option<JobReceipt>,
}

const ATTEMPTS_MAX: usize = 255;

impl Encode for Job {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.id);
        w.value(&self.client);
        w.str(&self.model);
        w.bytes(&self.input);
        w.value(&self.params);
        w.u64(self.max_units);
        w.value(&self.max_price);
        w.u64(self.submitted_height);
        w.u64(self.group);
        w.u64(self.queued_height);
        w.value(&self.price_per_unit);
        w.value(&self.status);
        w.seq(&self.missed);
        w.option(&self.result);
        w.option(&self.receipt);
    }
}

impl Decode for Job {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Job {
            id: r.u64()?,
            client: r.value()?,
            model: r.string(MODEL_NAME_BYTES_MAX)?,
            input: r.bytes(JOB_INPUT_BYTES_MAX)?,
            params: r.value()?,
            max_units: r.u64()?,
            max_price: r.value()?,
            submitted_height: r.u64()?,
            group: r.u64()?,
            queued_height: r.u64()?,
            price_per_unit: r.value()?,
            status: r.value()?,
            missed: r.seq(ATTEMPTS_MAX)?,
            result: r.option()?,
            receipt: r.option()?,
        })
    }
}

impl Job {
    pub fn input_hash(&self) -> Hash {
        input_hash(&self.input)
    }

    /// The ids of its redundant group (just its own when it runs once).
    pub fn group_ids(&self) -> std::ops::Range<u64> {
        self.group..self.group + self.params.copies() as u64
    }

    pub fn is_redundant(&self) -> bool {
        self.params.copies() > 1
    }

    /// The provider holding or having posted this job, if any.
    pub fn provider(&self) -> Option<Address> {
        match &self.status {
            JobStatus::Assigned { provider, .. } | JobStatus::Posted { provider, .. } => {
                Some(*provider)
            }
            _ => self.receipt.as_ref().map(|r| r.provider),
        }
    }
}

pub fn input_hash(input: &[u8]) -> Hash {
    Hash::of("piazza/job-input", &[input])
}

/// The hash a result's output must carry.
pub fn output_hash(output: &[u8]) -> Hash {
    Hash::of("piazza/job-output", &[output])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Becomes a provider, bonding `stake` (on top of any provider bond already held).
    RegisterProvider {
        offer: Offer,
        stake: Amount,
    },
    UpdateProvider {
        offer: Offer,
    },
    /// Stops serving and unbonds the whole provider bond (through the unbonding delay).
    ExitProvider,
    /// Submits a job, escrowing `max_price`.
    SubmitJob {
        model: String,
        input: Vec<u8>,
        params: JobParams,
        max_units: u64,
        max_price: Amount,
    },
    PostResult {
        job: u64,
        output: Vec<u8>,
        output_hash: Hash,
        trace_root: Hash,
        work_units: u64,
    },
    /// The assigned provider declines a job it cannot serve (an input its model cannot run):
    /// no penalty and no pay; the job goes to another provider, or expires with a full refund
    /// once `max_attempts` providers have missed or declined it.
    DeclineJob {
        job: u64,
        reason: String,
    },
}

/// Longest reason a provider may give for declining a job.
pub const DECLINE_REASON_BYTES_MAX: usize = 256;

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::RegisterProvider { offer, stake } => {
                w.u8(0);
                w.value(offer);
                w.value(stake);
            }
            Msg::UpdateProvider { offer } => {
                w.u8(1);
                w.value(offer);
            }
            Msg::ExitProvider => w.u8(2),
            Msg::SubmitJob {
                model,
                input,
                params,
                max_units,
                max_price,
            } => {
                w.u8(3);
                w.str(model);
                w.bytes(input);
                w.value(params);
                w.u64(*max_units);
                w.value(max_price);
            }
            Msg::PostResult {
                job,
                output,
                output_hash,
                trace_root,
                work_units,
            } => {
                w.u8(4);
                w.u64(*job);
                w.bytes(output);
                w.value(output_hash);
                w.value(trace_root);
                w.u64(*work_units);
            }
            Msg::DeclineJob { job, reason } => {
                w.u8(5);
                w.u64(*job);
                w.str(reason);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Msg::RegisterProvider {
                offer: r.value()?,
                stake: r.value()?,
            },
            1 => Msg::UpdateProvider { offer: r.value()? },
            2 => Msg::ExitProvider,
            // Inputs and outputs decode up to the transaction bound; the stateless check then
            // refuses oversized ones with their own error code.
            3 => Msg::SubmitJob {
                model: r.string(MODEL_NAME_BYTES_MAX)?,
                input: r.bytes(crate::limits::TX_BYTES_MAX)?,
                params: r.value()?,
                max_units: r.u64()?,
                max_price: r.value()?,
            },
            4 => Msg::PostResult {
                job: r.u64()?,
                output: r.bytes(crate::limits::TX_BYTES_MAX)?,
                output_hash: r.value()?,
                trace_root: r.value()?,
                work_units: r.u64()?,
            },
            5 => Msg::DeclineJob {
                job: r.u64()?,
                reason: r.string(DECLINE_REASON_BYTES_MAX)?,
            },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "compute message",
                })
            }
        })
    }
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

fn check_offer(offer: &Offer) -> Result<(), TxError> {
    if offer.models.is_empty() || offer.models.len() > PROVIDER_MODELS_MAX {
        return Err(invalid(format!(
            "a provider serves 1 to {PROVIDER_MODELS_MAX} models"
        )));
    }
    if offer.capacity == 0 || offer.capacity > PROVIDER_CAPACITY_MAX {
        return Err(invalid(format!(
            "capacity must be 1 to {PROVIDER_CAPACITY_MAX}"
        )));
    }
    if offer.units_per_block == 0 || offer.units_per_block > UNITS_PER_BLOCK_MAX {
        return Err(invalid(format!(
            "units_per_block (the declared speed) must be 1 to {UNITS_PER_BLOCK_MAX}"
        )));
    }
    let mut sorted = offer.models.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != offer.models.len() {
        return Err(invalid("a model is listed twice"));
    }
    Ok(())
}

fn check_offer_stateful(state: &StateDelta<'_>, offer: &Offer) -> Result<(), TxError> {
    for name in &offer.models {
        let record = models::record(state, name).ok_or_else(|| models::unknown(name))?;
        if models::retired(state, name) {
            return Err(TxError::new(
                ErrorCode::UnknownModel,
                format!("`{name}` is retired; it takes no new providers"),
            ));
        }
        if offer.price_per_unit < record.price_floor {
            return Err(invalid(format!(
                "`{name}` has a price floor of {} PZA per unit",
                record.price_floor
            )));
        }
        if providers_serving(state, name).len() >= PROVIDERS_PER_MODEL_MAX {
            return Err(invalid(format!(
                "`{name}` already has {PROVIDERS_PER_MODEL_MAX} providers"
            )));
        }
    }
    Ok(())
}

fn set_serving(state: &mut StateDelta<'_>, address: &Address, models: &[String], serve: bool) {
    for model in models {
        let mut list = providers_serving(state, model);
        match (list.binary_search(address), serve) {
            (Err(at), true) => list.insert(at, *address),
            (Ok(at), false) => {
                list.remove(at);
            }
            _ => {}
        }
        state.put(
            state_key::serving(model),
            &List::<Address, PROVIDERS_PER_MODEL_MAX>(list),
        );
    }
}

fn set_assigned(state: &mut StateDelta<'_>, address: &Address, job: u64, assigned: bool) {
    let mut list = assigned_jobs(state, address);
    match (list.binary_search(&job), assigned) {
        (Err(at), true) => list.insert(at, job),
        (Ok(at), false) => {
            list.remove(at);
        }
        _ => {}
    }
    state.put(
        state_key::assigned(address),
        &List::<u64, { PROVIDER_CAPACITY_MAX as usize }>(list),
    );
}

fn push_queue(state: &mut StateDelta<'_>, key: Vec<u8>, job: u64) -> Result<(), TxError> {
    list::push::<JOBS_PER_QUEUE_MAX>(state, key, job)
        .map_err(|full| full.refusal("the job queue of that block"))
}

fn take_queue(state: &mut StateDelta<'_>, key: Vec<u8>) -> Vec<u64> {
    list::take::<JOBS_PER_QUEUE_MAX>(state, key)
}

/// Chooses a provider for `job` by stake-weighted randomness: eligible providers serve the model,
/// have room, charge at most the job's escrow for its declared work, have the minimum stake and
/// have not missed this job's deadline before.
pub fn choose_provider(state: &StateDelta<'_>, job: &Job, randomness: &Hash) -> Option<Address> {
    let candidates = eligible_providers(state, job, true);
    crate::draw::weighted_choice(
        "piazza/compute/assign",
        &[
            &randomness.0,
            &job.id.to_le_bytes(),
            &(job.missed.len() as u64).to_le_bytes(),
        ],
        &candidates,
    )
}

/// Providers that could serve `job`, with their stake as weight; `with_room` also requires a
/// free slot now.
fn eligible_providers(state: &StateDelta<'_>, job: &Job, with_room: bool) -> Vec<(Address, u128)> {
    let params = params(state);
    // A redundant job's copies go to distinct providers.
    let siblings: Vec<Address> = job
        .group_ids()
        .filter(|id| *id != job.id)
        .filter_map(|id| self::job(state, id)?.provider())
        .collect();
    let mut candidates: Vec<(Address, u128)> = Vec::new();
    for address in providers_serving(state, &job.model) {
        let Some(p) = provider(state, &address) else {
            continue;
        };
        let affordable = p
            .offer
            .price_per_unit
            .checked_mul(job.max_units as u128)
            .is_some_and(|cost| cost <= job.max_price);
        // A client's own deadline must leave the provider the blocks its declared speed needs.
        let fast_enough = job.params.deadline_blocks == 0
            || p.offer.work_blocks(job.deadline_units()) < u64::from(job.params.deadline_blocks);
        let stake = staking::bonded(state, &address, Role::Provider);
        if affordable
            && fast_enough
            && (!with_room || p.active_jobs < p.offer.capacity)
            && stake >= params.min_provider_stake
            && !job.missed.contains(&address)
            && !siblings.contains(&address)
        {
            candidates.push((address, stake.base_units()));
        }
    }
    candidates
}

fn expire(state: &mut StateDelta<'_>, mut job: Job, block: &BlockContext, events: &mut Vec<Event>) {
    bank::transfer(state, &escrow(), &job.client, job.max_price)
        .expect("the escrow holds every open job's price");
    events.push(Event::new(
        "compute.job_expired",
        &[
            ("job", job.id.to_string()),
            ("refund", job.max_price.base_units().to_string()),
        ],
    ));
    job.status = JobStatus::Expired;
    state.put(state_key::job(job.id), &job);
    if job.is_redundant() {
        // The other copies no longer wait for this one: their group is reviewed again.
        if list::schedule::<JOBS_PER_QUEUE_MAX>(state, state_key::reviews, block.height, job.id)
            .is_err()
        {
            events.push(Event::new(
                "compute.review_unscheduled",
                &[("job", job.id.to_string())],
            ));
        }
    }
}

/// Assigns `job` at `block` or expires it when nobody can serve it.
fn assign(state: &mut StateDelta<'_>, mut job: Job, block: &BlockContext, events: &mut Vec<Event>) {
    let params = params(state);
    let chosen = (job.missed.len() < params.max_attempts as usize)
        .then(|| choose_provider(state, &job, &block.randomness))
        .flatten();
    let Some(address) = chosen else {
        // Providers may be busy: wait in the queue (bounded), then give up and refund.
        let waiting = job.missed.len() < params.max_attempts as usize
            && block.height
                < job
                    .queued_height
                    .saturating_add(params.queue_timeout_blocks);
        if waiting && push_queue(state, state_key::pending(), job.id).is_ok() {
            job.status = JobStatus::Pending;
            state.put(state_key::job(job.id), &job);
            return;
        }
        return expire(state, job, block, events);
    };
    let mut p = provider(state, &address).expect("chosen providers exist");
    // The deadline follows the work asked for at the provider's declared speed, on top of the
    // chain's base allowance for inclusion and latency; a client's own deadline was checked
    // against that speed when the provider was chosen.
    let deadline_blocks = match job.params.deadline_blocks {
        0 => params
            .job_deadline_blocks
            .saturating_add(p.offer.work_blocks(job.deadline_units())),
        asked => asked as u64,
    };
    let Ok(deadline_height) = list::schedule::<JOBS_PER_QUEUE_MAX>(
        state,
        state_key::deadlines,
        block.height + deadline_blocks,
        job.id,
    ) else {
        return expire(state, job, block, events);
    };
    p.active_jobs += 1;
    job.price_per_unit = p.offer.price_per_unit;
    state.put(state_key::provider(&address), &p);
    set_assigned(state, &address, job.id, true);
    job.status = JobStatus::Assigned {
        provider: address,
        deadline_height,
    };
    events.push(Event::new(
        "compute.job_assigned",
        &[
            ("job", job.id.to_string()),
            ("provider", address.to_string()),
            ("deadline_height", deadline_height.to_string()),
        ],
    ));
    state.put(state_key::job(job.id), &job);
}

/// One more (or one fewer) posted result of `address` waits to settle.
fn change_unsettled(state: &mut StateDelta<'_>, address: &Address, posted: bool) {
    if let Some(mut p) = provider(state, address) {
        p.unsettled = if posted {
            p.unsettled.saturating_add(1)
        } else {
            p.unsettled.saturating_sub(1)
        };
        state.put(state_key::provider(address), &p);
    }
}

fn release_provider(state: &mut StateDelta<'_>, address: &Address, job: u64, completed: bool) {
    if let Some(mut p) = provider(state, address) {
        p.active_jobs = p.active_jobs.saturating_sub(1);
        if completed {
            p.jobs_completed += 1;
        } else {
            p.deadlines_missed += 1;
        }
        state.put(state_key::provider(address), &p);
    }
    set_assigned(state, address, job, false);
}

fn settle(state: &mut StateDelta<'_>, mut job: Job, block: &BlockContext, events: &mut Vec<Event>) {
    let JobStatus::Posted {
        provider: address, ..
    } = job.status
    else {
        return;
    };
    change_unsettled(state, &address, false);
    let result = job.result.clone().expect("posted jobs have a result");
    let split = params(state).split;
    let price = job
        .price_per_unit
        .checked_mul(result.work_units as u128)
        .unwrap_or(job.max_price)
        .min(job.max_price);
    let share = |bps: u16| {
        price
            .checked_mul_div(bps as u128, BPS)
            .expect("bps shares of a u128 price fit")
    };
    let owner = models::record(state, &job.model)
        .map(|m| m.owner)
        .unwrap_or_else(bank::treasury);
    let (to_owner, to_pool, to_treasury) = (
        share(split.model_owner_bps),
        share(split.auditor_pool_bps),
        share(split.treasury_bps),
    );
    let to_provider = price
        .checked_sub(to_owner)
        .and_then(|p| p.checked_sub(to_pool))
        .and_then(|p| p.checked_sub(to_treasury))
        .expect("shares sum to at most the price");
    let refund = job
        .max_price
        .checked_sub(price)
        .expect("price is capped by the escrow");
    for (to, amount) in [
        (address, to_provider),
        (owner, to_owner),
        (
            state
                .get::<Address>(&state_key::auditor_share(job.id))
                .unwrap_or_else(auditor_pool),
            to_pool,
        ),
        (bank::treasury(), to_treasury),
        (job.client, refund),
    ] {
        if !amount.is_zero() {
            bank::transfer(state, &escrow(), &to, amount)
                .expect("the escrow holds every open job's price");
        }
    }
    let receipt = JobReceipt {
        job: job.id,
        model: job.model.clone(),
        input_hash: job.input_hash(),
        output_hash: result.output_hash,
        trace_root: result.trace_root,
        provider: address,
        price,
        refund,
        height: block.height,
    };
    events.push(Event::new(
        "compute.job_settled",
        &[
            ("job", job.id.to_string()),
            ("provider", address.to_string()),
            ("price", price.base_units().to_string()),
            ("to_provider", to_provider.base_units().to_string()),
            ("to_model_owner", to_owner.base_units().to_string()),
            ("to_auditor_pool", to_pool.base_units().to_string()),
            ("to_treasury", to_treasury.base_units().to_string()),
            ("refund", refund.base_units().to_string()),
            ("output_hash", result.output_hash.to_hex()),
            ("trace_root", result.trace_root.to_hex()),
        ],
    ));
    job.status = JobStatus::Settled;
    job.receipt = Some(receipt);
    state.put(state_key::job(job.id), &job);
}

/// Settles a posted job the verify module held back, if its challenge window is over (else its
/// queued settlement will).
pub fn settle_released(
    state: &mut StateDelta<'_>,
    id: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let Some(job) = job(state, id) else {
        return;
    };
    if let JobStatus::Posted { settle_height, .. } = job.status {
        if settle_height <= block.height {
            settle(state, job, block, events);
        }
    }
}

/// Keeps a posted job from settling until [`release`] (an audit, a dispute, a group).
pub fn hold(state: &mut StateDelta<'_>, id: u64) {
    state.put(state_key::held(id), &true);
}

/// Whether a posted job is kept from settling.
pub fn is_held(state: &StateDelta<'_>, id: u64) -> bool {
    state.get::<bool>(&state_key::held(id)).unwrap_or(false)
}

/// Ends a hold; the job settles at once if its challenge window is over, else at its end.
pub fn release(state: &mut StateDelta<'_>, id: u64, block: &BlockContext, events: &mut Vec<Event>) {
    state.delete(state_key::held(id));
    settle_released(state, id, block, events);
}

/// Keeps a posted job open to challenges for a full challenge window from `from_height` (after
/// an attestation, so a wrong attested result can still be proven); never shortens it.
pub fn extend_window(state: &mut StateDelta<'_>, id: u64, from_height: u64) -> Result<(), TxError> {
    let Some(mut job) = job(state, id) else {
        return Ok(());
    };
    let JobStatus::Posted {
        provider,
        settle_height,
    } = job.status
    else {
        return Ok(());
    };
    let wanted = from_height.saturating_add(params(state).challenge_window_blocks);
    if wanted <= settle_height {
        return Ok(());
    }
    let scheduled = list::schedule::<JOBS_PER_QUEUE_MAX>(state, state_key::settlements, wanted, id)
        .map_err(|full| full.refusal("the settlement queue"))?;
    job.status = JobStatus::Posted {
        provider,
        settle_height: scheduled,
    };
    state.put(state_key::job(id), &job);
    Ok(())
}

/// Ends a hold without settling (the job fails, or its group is settled together).
pub fn unhold(state: &mut StateDelta<'_>, id: u64) {
    state.delete(state_key::held(id));
}

/// The job's auditor-pool share goes to `auditor` when it settles (it attested the result).
pub fn pay_auditor_share_to(state: &mut StateDelta<'_>, id: u64, auditor: &Address) {
    state.put(state_key::auditor_share(id), auditor);
}

/// The jobs whose results were posted (or whose redundant copies closed) at `height`, for the
/// modules above to review; each height is taken once.
pub fn take_reviews(state: &mut StateDelta<'_>, height: u64) -> Vec<u64> {
    list::take::<JOBS_PER_QUEUE_MAX>(state, state_key::reviews(height))
}

/// Settles a posted job now (a redundant job whose copies agree).
pub fn settle_now(
    state: &mut StateDelta<'_>,
    id: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    if let Some(job) = job(state, id) {
        settle(state, job, block, events);
    }
}

/// A posted result proven wrong: the job fails, its whole escrow goes back to the client and
/// the provider's fraud count grows. Returns the provider.
pub fn fail(state: &mut StateDelta<'_>, id: u64, events: &mut Vec<Event>) -> Option<Address> {
    let mut job = job(state, id)?;
    let JobStatus::Posted {
        provider: address, ..
    } = job.status
    else {
        return None;
    };
    change_unsettled(state, &address, false);
    bank::transfer(state, &escrow(), &job.client, job.max_price)
        .expect("the escrow holds every open job's price");
    if let Some(mut p) = provider(state, &address) {
        p.frauds += 1;
        state.put(state_key::provider(&address), &p);
    }
    events.push(Event::new(
        "compute.job_failed",
        &[
            ("job", id.to_string()),
            ("provider", address.to_string()),
            ("refund", job.max_price.base_units().to_string()),
        ],
    ));
    job.status = JobStatus::Failed;
    state.put(state_key::job(id), &job);
    Some(address)
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
                check_offer(offer)
            }
            Msg::ExitProvider => Ok(()),
            Msg::SubmitJob {
                input,
                max_units,
                params,
                ..
            } => {
                if input.len() > JOB_INPUT_BYTES_MAX {
                    return Err(TxError::new(
                        ErrorCode::InputTooLarge,
                        format!("inline input is at most {JOB_INPUT_BYTES_MAX} bytes"),
                    ));
                }
                if input.is_empty() {
                    return Err(invalid("the input is empty; no model runs on nothing"));
                }
                if *max_units == 0 || *max_units > JOB_UNITS_MAX {
                    return Err(invalid(format!("max_units must be 1 to {JOB_UNITS_MAX}")));
                }
                if params.max_tokens as u64 > *max_units {
                    return Err(invalid("max_tokens exceeds max_units"));
                }
                if params.deadline_blocks > JOB_DEADLINE_BLOCKS_MAX {
                    return Err(invalid(format!(
                        "a job deadline is at most {JOB_DEADLINE_BLOCKS_MAX} blocks"
                    )));
                }
                if params.stop.iter().any(|s| s.is_empty()) {
                    return Err(invalid("a stop sequence is empty"));
                }
                Ok(())
            }
            Msg::DeclineJob { reason, .. } => {
                if reason.len() > DECLINE_REASON_BYTES_MAX {
                    return Err(invalid(format!(
                        "a decline reason is at most {DECLINE_REASON_BYTES_MAX} bytes"
                    )));
                }
                Ok(())
            }
            Msg::PostResult {
                output,
                output_hash: claimed,
                ..
            } => {
                if output.len() > JOB_OUTPUT_BYTES_MAX {
                    return Err(invalid(format!(
                        "inline output is at most {JOB_OUTPUT_BYTES_MAX} bytes"
                    )));
                }
                if output_hash(output) != *claimed {
                    return Err(TxError::new(
                        ErrorCode::OutputHashMismatch,
                        "the output hash is not the hash of the output",
                    ));
                }
                Ok(())
            }
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::RegisterProvider { offer, .. } => {
                if provider(state, &ctx.sender).is_some() {
                    return Err(TxError::new(
                        ErrorCode::ProviderExists,
                        format!("{} is already a provider; update it instead", ctx.sender),
                    ));
                }
                check_offer_stateful(state, offer)
            }
            Msg::UpdateProvider { offer } => {
                provider(state, &ctx.sender).ok_or_else(|| not_a_provider(&ctx.sender))?;
                check_offer_stateful(state, offer)
            }
            Msg::ExitProvider => {
                let p = provider(state, &ctx.sender).ok_or_else(|| not_a_provider(&ctx.sender))?;
                if p.active_jobs > 0 {
                    return Err(invalid(format!(
                        "{} jobs are still assigned; finish them first",
                        p.active_jobs
                    )));
                }
                if p.unsettled > 0 {
                    return Err(invalid(format!(
                        "{} results are still open to challenges or held; exit once they settle",
                        p.unsettled
                    )));
                }
                Ok(())
            }
            Msg::SubmitJob {
                model,
                input,
                max_units,
                max_price,
                params: job_params,
            } => {
                let record = models::record(state, model).ok_or_else(|| models::unknown(model))?;
                if models::retired(state, model) {
                    return Err(TxError::new(
                        ErrorCode::UnknownModel,
                        format!("`{model}` is retired; it takes no new jobs"),
                    ));
                }
                let floor = record
                    .price_floor
                    .checked_mul(*max_units as u128)
                    .ok_or_else(|| invalid("price overflows"))?;
                if *max_price < floor {
                    return Err(TxError::new(ErrorCode::EscrowTooLow, format!("{max_units} units of `{model}` cost at least {floor} PZA; the escrow is {max_price} PZA")));
                }
                if job_params.redundancy > REDUNDANCY_MAX {
                    return Err(invalid(format!(
                        "redundancy is at most {REDUNDANCY_MAX} providers"
                    )));
                }
                let escrowed = max_price
                    .checked_mul(job_params.copies() as u128)
                    .ok_or_else(|| invalid("escrow overflows"))?;
                let balance = bank::account(state, &ctx.sender).balance;
                if balance < escrowed {
                    return Err(TxError::new(
                        ErrorCode::InsufficientFunds,
                        format!(
                            "{} holds {balance} PZA, the escrow is {escrowed} PZA",
                            ctx.sender
                        ),
                    ));
                }
                let probe = Job {
                    id: 0,
                    client: ctx.sender,
                    model: model.clone(),
                    input: input.clone(),
                    params: JobParams {
                        deadline_blocks: job_params.deadline_blocks,
                        ..JobParams::default()
                    },
                    max_units: *max_units,
                    max_price: *max_price,
                    submitted_height: 0,
                    group: 0,
                    queued_height: 0,
                    price_per_unit: Amount::ZERO,
                    status: JobStatus::Pending,
                    missed: Vec::new(),
                    result: None,
                    receipt: None,
                };
                // A single job for a model nobody serves yet waits in the queue (up to
                // `queue_timeout_blocks`) for a provider to register; otherwise the providers
                // that could take it (price, speed for the client's deadline, one per copy of a
                // redundant job) must exist now.
                let eligible = eligible_providers(state, &probe, false).len();
                let copies = job_params.copies() as usize;
                let waits_for_first = copies == 1 && providers_serving(state, model).is_empty();
                if copies > eligible && !waits_for_first {
                    return Err(TxError::new(
                        ErrorCode::NoProvider,
                        format!("redundancy {copies} needs {copies} distinct providers of `{model}` within an escrow of {max_price} PZA; {eligible} serve it"),
                    ));
                }
                Ok(())
            }
            Msg::DeclineJob { job: id, .. } => {
                let job = job(state, *id)
                    .ok_or_else(|| TxError::new(ErrorCode::UnknownJob, format!("no job {id}")))?;
                match job.status {
                    JobStatus::Assigned { provider, .. } if provider == ctx.sender => Ok(()),
                    _ => Err(TxError::new(
                        ErrorCode::NotAssigned,
                        format!("job {id} is not assigned to {}", ctx.sender),
                    )),
                }
            }
            Msg::PostResult {
                job: id,
                work_units,
                ..
            } => {
                let job = job(state, *id)
                    .ok_or_else(|| TxError::new(ErrorCode::UnknownJob, format!("no job {id}")))?;
                match &job.status {
                    JobStatus::Assigned { provider, .. } if *provider == ctx.sender => {}
                    JobStatus::Posted { provider, .. } if *provider == ctx.sender => {
                        return Err(TxError::new(
                            ErrorCode::ResultAlreadyPosted,
                            format!("job {id} already has a result from {provider}"),
                        ))
                    }
                    JobStatus::Settled
                        if job
                            .receipt
                            .as_ref()
                            .is_some_and(|r| r.provider == ctx.sender) =>
                    {
                        return Err(TxError::new(
                            ErrorCode::ResultAlreadyPosted,
                            format!("job {id} is already settled with this provider's result"),
                        ))
                    }
                    _ if job.missed.contains(&ctx.sender) => {
                        return Err(TxError::new(
                            ErrorCode::LateResult,
                            format!(
                                "{} missed the deadline of job {id}; it was reassigned",
                                ctx.sender
                            ),
                        ))
                    }
                    _ => {
                        return Err(TxError::new(
                            ErrorCode::NotAssigned,
                            format!("job {id} is not assigned to {}", ctx.sender),
                        ))
                    }
                }
                if *work_units > job.max_units {
                    return Err(TxError::new(
                        ErrorCode::WorkExceedsLimit,
                        format!("{work_units} units exceed the job's {}", job.max_units),
                    ));
                }
                Ok(())
            }
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        let sender = ctx.sender;
        match msg {
            Msg::RegisterProvider { offer, stake } => {
                if !stake.is_zero() {
                    staking::bond(state, &sender, Role::Provider, *stake)?;
                }
                let minimum = params(state).min_provider_stake;
                let bonded = staking::bonded(state, &sender, Role::Provider);
                if bonded < minimum {
                    return Err(TxError::new(
                        ErrorCode::StakeBelowMinimum,
                        format!("a provider needs {minimum} PZA bonded, {sender} has {bonded} PZA"),
                    ));
                }
                set_serving(state, &sender, &offer.models, true);
                state.put(
                    state_key::provider(&sender),
                    &Provider {
                        address: sender,
                        offer: offer.clone(),
                        active_jobs: 0,
                        jobs_completed: 0,
                        deadlines_missed: 0,
                        frauds: 0,
                        unsettled: 0,
                    },
                );
                ctx.emit(Event::new(
                    "compute.provider_registered",
                    &[
                        ("provider", sender.to_string()),
                        ("stake", bonded.base_units().to_string()),
                    ],
                ));
            }
            Msg::UpdateProvider { offer } => {
                let mut p = provider(state, &sender).ok_or_else(|| not_a_provider(&sender))?;
                set_serving(state, &sender, &p.offer.models, false);
                set_serving(state, &sender, &offer.models, true);
                p.offer = offer.clone();
                state.put(state_key::provider(&sender), &p);
                ctx.emit(Event::new(
                    "compute.provider_updated",
                    &[("provider", sender.to_string())],
                ));
            }
            Msg::ExitProvider => {
                let p = provider(state, &sender).ok_or_else(|| not_a_provider(&sender))?;
                set_serving(state, &sender, &p.offer.models, false);
                state.delete(state_key::provider(&sender));
                state.delete(state_key::assigned(&sender));
                let bonded = staking::bonded(state, &sender, Role::Provider);
                let release = if bonded.is_zero() {
                    ctx.block.height
                } else {
                    staking::unbond(state, ctx.block, &sender, Role::Provider, bonded)?
                };
                ctx.emit(Event::new(
                    "compute.provider_exited",
                    &[
                        ("provider", sender.to_string()),
                        ("unbonding", bonded.base_units().to_string()),
                        ("release_height", release.to_string()),
                    ],
                ));
            }
            Msg::SubmitJob {
                model,
                input,
                params: job_params,
                max_units,
                max_price,
            } => {
                let copies = job_params.copies() as u64;
                let total = max_price
                    .checked_mul(copies as u128)
                    .ok_or_else(|| invalid("escrow overflows"))?;
                bank::transfer(state, &sender, &escrow(), total)?;
                let group: u64 = state.get(&state_key::next_job()).unwrap_or(0);
                state.put(state_key::next_job(), &(group + copies));
                for id in group..group + copies {
                    let job = Job {
                        id,
                        group,
                        client: sender,
                        model: model.clone(),
                        input: input.clone(),
                        params: job_params.clone(),
                        max_units: *max_units,
                        max_price: *max_price,
                        submitted_height: ctx.block.height,
                        queued_height: ctx.block.height,
                        price_per_unit: Amount::ZERO,
                        status: JobStatus::Pending,
                        missed: Vec::new(),
                        result: None,
                        receipt: None,
                    };
                    state.put(state_key::job(id), &job);
                    push_queue(state, state_key::pending(), id)?;
                    ctx.emit(Event::new(
                        "compute.job_submitted",
                        &[
                            ("job", id.to_string()),
                            ("model", model.clone()),
                            ("client", sender.to_string()),
                            ("escrow", max_price.base_units().to_string()),
                            ("group", group.to_string()),
                        ],
                    ));
                }
            }
            Msg::DeclineJob { job: id, reason } => {
                let mut job = job(state, *id).expect("checked: the job exists");
                if let Some(mut p) = provider(state, &sender) {
                    p.active_jobs = p.active_jobs.saturating_sub(1);
                    state.put(state_key::provider(&sender), &p);
                }
                set_assigned(state, &sender, *id, false);
                // Assigned again at the next block, with that block's randomness, to a provider
                // that has neither missed nor declined it.
                push_queue(state, state_key::pending(), *id)?;
                job.missed.push(sender);
                job.queued_height = ctx.block.height;
                job.status = JobStatus::Pending;
                state.put(state_key::job(*id), &job);
                ctx.emit(Event::new(
                    "compute.job_declined",
                    &[
                        ("job", id.to_string()),
                        ("provider", sender.to_string()),
                        ("reason", reason.clone()),
                    ],
                ));
            }
            Msg::PostResult {
                job: id,
                output,
                output_hash,
                trace_root,
                work_units,
            } => {
                let mut job = job(state, *id)
                    .ok_or_else(|| TxError::new(ErrorCode::UnknownJob, format!("no job {id}")))?;
                let settle_height = ctx.block.height + params(state).challenge_window_blocks;
                release_provider(state, &sender, *id, true);
                change_unsettled(state, &sender, true);
                push_queue(state, state_key::settlements(settle_height), *id)?;
                job.status = JobStatus::Posted {
                    provider: sender,
                    settle_height,
                };
                job.result = Some(JobResult {
                    output: output.clone(),
                    output_hash: *output_hash,
                    trace_root: *trace_root,
                    work_units: *work_units,
                    posted_height: ctx.block.height,
                });
                state.put(state_key::job(*id), &job);
                // Redundant copies wait for their group; every posted result is reviewed by the
                // modules above in a later block (`take_reviews`).
                if job.is_redundant() {
                    hold(state, *id);
                }
                list::schedule::<JOBS_PER_QUEUE_MAX>(
                    state,
                    state_key::reviews,
                    ctx.block.height,
                    *id,
                )
                .map_err(|full| full.refusal("the result review queue"))?;
                ctx.emit(Event::new(
                    "compute.result_posted",
                    &[
                        ("job", id.to_string()),
                        ("provider", sender.to_string()),
                        ("output_hash", output_hash.to_hex()),
                        ("trace_root", trace_root.to_hex()),
                        ("settle_height", settle_height.to_string()),
                    ],
                ));
            }
        }
        Ok(())
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

//! The compute module's records and their canonical encodings: offers, providers, jobs,
//! their status, results and receipts.

use super::JobParams;
use super::{
    decode_models, encode_models, ENDPOINT_BYTES_MAX, JOB_INPUT_BYTES_MAX, JOB_OUTPUT_BYTES_MAX,
};
use crate::models::MODEL_NAME_BYTES_MAX;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};

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
    /// Tokens the provider read from the input, as it stated them in `PostResult` (not
    /// billed; a dispute's input phase checks it against the tokenizer, 0 when not stated).
    pub input_units: u64,
}

impl Encode for JobResult {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.output);
        w.value(&self.output_hash);
        w.value(&self.trace_root);
        w.u64(self.work_units);
        w.u64(self.posted_height);
        w.u64(self.input_units);
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
            input_units: r.u64()?,
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

//! A job's parameters: what a client asks of a model run. Compute escrows and assigns jobs
//! with them, and arbitration re-runs a step under them, so they live below both.

use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};

/// Generation parameters, in integers (no floats in state): temperature, top-p and repetition
/// penalty are in thousandths.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct JobParams {
    pub max_tokens: u32,
    pub temperature_milli: u32,
    pub top_k: u32,
    pub top_p_milli: u32,
    pub repetition_penalty_milli: u32,
    pub seed: u64,
    /// Wrap the input in the model's chat template (the input is then a JSON array of
    /// `{role, content}` messages, or plain text for one user message).
    pub chat: bool,
    /// Stop generating when the text contains one of these.
    pub stop: Vec<String>,
    /// Blocks the assigned provider has to post a result (0: the chain's default).
    pub deadline_blocks: u32,
    /// Run the job on this many distinct providers (0 or 1: one). Equal results settle at
    /// once; any difference goes to a dispute. The client escrows `max_price` per provider.
    pub redundancy: u8,
}

/// Most providers one redundant job runs on.
pub const REDUNDANCY_MAX: u8 = 5;

impl JobParams {
    /// Providers the job runs on.
    pub fn copies(&self) -> u8 {
        self.redundancy.max(1)
    }
}

/// The longest deadline a client may ask for.
pub const JOB_DEADLINE_BLOCKS_MAX: u32 = 10_000;

/// Most stop sequences per job, and their longest length.
pub const STOP_SEQUENCES_MAX: usize = 4;
pub const STOP_SEQUENCE_BYTES_MAX: usize = 64;

impl Encode for JobParams {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.max_tokens);
        w.u32(self.temperature_milli);
        w.u32(self.top_k);
        w.u32(self.top_p_milli);
        w.u32(self.repetition_penalty_milli);
        w.u64(self.seed);
        w.bool(self.chat);
        w.len(self.stop.len());
        for s in &self.stop {
            w.str(s);
        }
        w.u32(self.deadline_blocks);
        w.u8(self.redundancy);
    }
}

impl Decode for JobParams {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(JobParams {
            max_tokens: r.u32()?,
            temperature_milli: r.u32()?,
            top_k: r.u32()?,
            top_p_milli: r.u32()?,
            repetition_penalty_milli: r.u32()?,
            seed: r.u64()?,
            chat: r.bool()?,
            stop: {
                let n = r.len(STOP_SEQUENCES_MAX)?;
                (0..n)
                    .map(|_| r.string(STOP_SEQUENCE_BYTES_MAX))
                    .collect::<Result<_, _>>()?
            },
            deadline_blocks: r.u32()?,
            redundancy: r.u8()?,
        })
    }
}

//! The verify module's messages and their canonical encoding.

use super::types::decode_models;
use super::EVIDENCE_BYTES_MAX;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Amount, Hash};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Becomes an auditor of `models`, bonding `stake`.
    RegisterAuditor { models: Vec<String>, stake: Amount },
    /// Stops auditing and unbonds the auditor bond (through the unbonding delay).
    ExitAuditor,
    /// The assigned auditor re-executed the job and got the same result.
    Attest { job: u64 },
    /// Disputes a posted result with the challenger's own trace, posting the bond.
    Challenge {
        job: u64,
        trace_root: Hash,
        step_count: u64,
        ids: Hash,
    },
    /// A party's answer to a round: the children of its node. Round 0 also states the
    /// party's step count and token ids commitment (the defendant's are compared with the
    /// claimant's).
    Reveal {
        job: u64,
        round: u32,
        left: Hash,
        right: Hash,
        step_count: u64,
        ids: Hash,
    },
    /// The evidence that decides a dispute's final step (or, in the input phase, the
    /// tokenizer). Anyone may send it.
    Arbitrate { job: u64, evidence: Vec<u8> },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::RegisterAuditor { models, stake } => {
                w.u8(0);
                w.len(models.len());
                for m in models {
                    w.str(m);
                }
                w.value(stake);
            }
            Msg::ExitAuditor => w.u8(1),
            Msg::Attest { job } => {
                w.u8(2);
                w.u64(*job);
            }
            Msg::Challenge {
                job,
                trace_root,
                step_count,
                ids,
            } => {
                w.u8(3);
                w.u64(*job);
                w.value(trace_root);
                w.u64(*step_count);
                w.value(ids);
            }
            Msg::Reveal {
                job,
                round,
                left,
                right,
                step_count,
                ids,
            } => {
                w.u8(4);
                w.u64(*job);
                w.u32(*round);
                w.value(left);
                w.value(right);
                w.u64(*step_count);
                w.value(ids);
            }
            Msg::Arbitrate { job, evidence } => {
                w.u8(5);
                w.u64(*job);
                w.bytes(evidence);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Msg::RegisterAuditor {
                models: decode_models(r)?,
                stake: r.value()?,
            },
            1 => Msg::ExitAuditor,
            2 => Msg::Attest { job: r.u64()? },
            3 => Msg::Challenge {
                job: r.u64()?,
                trace_root: r.value()?,
                step_count: r.u64()?,
                ids: r.value()?,
            },
            4 => Msg::Reveal {
                job: r.u64()?,
                round: r.u32()?,
                left: r.value()?,
                right: r.value()?,
                step_count: r.u64()?,
                ids: r.value()?,
            },
            5 => Msg::Arbitrate {
                job: r.u64()?,
                evidence: r.bytes(EVIDENCE_BYTES_MAX)?,
            },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "verify message",
                })
            }
        })
    }
}

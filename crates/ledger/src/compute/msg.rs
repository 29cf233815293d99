//! The compute module's messages and their canonical encoding.

use super::{JobParams, Offer};
use crate::models::MODEL_NAME_BYTES_MAX;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Amount, Hash};

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
        /// Tokens the provider read from the input (a generation's prompt tokens, an
        /// embedding's input tokens): stated by the provider, recorded, not billed.
        input_units: u64,
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
                input_units,
            } => {
                w.u8(4);
                w.u64(*job);
                w.bytes(output);
                w.value(output_hash);
                w.value(trace_root);
                w.u64(*work_units);
                w.u64(*input_units);
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
                input_units: r.u64()?,
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

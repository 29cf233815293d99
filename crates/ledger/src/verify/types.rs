//! The verify module's records and their canonical encodings: auditors and holds.

use super::AUDITOR_MODELS_MAX;
use crate::models::MODEL_NAME_BYTES_MAX;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::Address;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auditor {
    pub address: Address,
    pub models: Vec<String>,
    pub attested: u64,
    pub challenged: u64,
    /// Audits that reached their deadline unanswered.
    pub missed: u64,
    /// Attested results later proven wrong.
    pub disproven: u64,
}

impl Encode for Auditor {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.address);
        w.len(self.models.len());
        for m in &self.models {
            w.str(m);
        }
        w.u64(self.attested);
        w.u64(self.challenged);
        w.u64(self.missed);
        w.u64(self.disproven);
    }
}

impl Decode for Auditor {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Auditor {
            address: r.value()?,
            models: decode_models(r)?,
            attested: r.u64()?,
            challenged: r.u64()?,
            missed: r.u64()?,
            disproven: r.u64()?,
        })
    }
}

pub(super) fn decode_models(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let n = r.len(AUDITOR_MODELS_MAX)?;
    (0..n).map(|_| r.string(MODEL_NAME_BYTES_MAX)).collect()
}

/// Why a posted job does not settle yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Audit {
        auditor: Address,
        deadline: u64,
    },
    Dispute,
    /// A copy of a redundant job, waiting for the others.
    Group,
}

impl Encode for Hold {
    fn encode(&self, w: &mut Writer) {
        match self {
            Hold::Audit { auditor, deadline } => {
                w.u8(0);
                w.value(auditor);
                w.u64(*deadline);
            }
            Hold::Dispute => w.u8(1),
            Hold::Group => w.u8(2),
        }
    }
}

impl Decode for Hold {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Hold::Audit {
                auditor: r.value()?,
                deadline: r.u64()?,
            },
            1 => Hold::Dispute,
            2 => Hold::Group,
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "hold",
                })
            }
        })
    }
}

//! Genesis: the chain's first state, and the parameters it fixes. The document is made of the
//! modules' own sections (each module owns its genesis type and `init_chain`); this file only
//! composes them, so it imports the modules and no module imports it.

use crate::staking::{self, Role};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::Amount;

pub use crate::bank::GenesisAccount;
pub use crate::module::GenesisError;
pub use crate::staking::validators::GenesisValidator;
pub use crate::staking::GenesisBond;

/// How transaction fees are metered: `(tx_base_units + Σ message units + bytes × byte_units)
/// × unit_price`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeeParams {
    pub unit_price: Amount,
    pub tx_base_units: u64,
    pub byte_units: u64,
}

impl Default for FeeParams {
    fn default() -> Self {
        // 10 base units a unit: a one-job transaction (~450 units with its bytes) costs about
        // 0.0000045 PZA, the order of a small job's price rather than 10-100x it; filling a
        // 16 MiB block still costs ~0.17 PZA, and the mempool bounds each sender.
        FeeParams {
            unit_price: Amount::new(10),
            tx_base_units: 100,
            byte_units: 1,
        }
    }
}

impl Encode for FeeParams {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.unit_price);
        w.u64(self.tx_base_units);
        w.u64(self.byte_units);
    }
}

impl Decode for FeeParams {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(FeeParams {
            unit_price: r.value()?,
            tx_base_units: r.u64()?,
            byte_units: r.u64()?,
        })
    }
}

/// The genesis document. JSON on disk; its meaning is the state `init_chain` writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    pub genesis_time_ms: u64,
    #[serde(default)]
    pub fees: FeeParams,
    #[serde(default)]
    pub staking: staking::Params,
    pub accounts: Vec<GenesisAccount>,
    /// Bonds made at genesis from the accounts above; at least one validator.
    pub bonds: Vec<GenesisBond>,
    #[serde(default)]
    pub models: Vec<crate::models::ModelRecord>,
    #[serde(default)]
    pub compute: crate::compute::Params,
    #[serde(default)]
    pub verify: crate::verify::Params,
    #[serde(default)]
    pub sessions: crate::sessions::Params,
    #[serde(default)]
    pub storage: crate::storage::Params,
    #[serde(default)]
    pub agents: crate::agents::Params,
}

/// The genesis document of a network of validators: every field of [`Genesis`] and a
/// `validators` section naming the consensus keys of validators bonded in `bonds` (JSON: one
/// object, the genesis fields beside `validators`). The set of height 1 is theirs; later sets
/// come from the staking module (`staking::validators`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkGenesis {
    #[serde(flatten)]
    pub genesis: Genesis,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<GenesisValidator>,
}

impl Genesis {
    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.chain_id.is_empty() || self.chain_id.len() > crate::tx::CHAIN_ID_BYTES_MAX {
            return Err(GenesisError::Invalid(format!(
                "chain id must be 1..={} bytes",
                crate::tx::CHAIN_ID_BYTES_MAX
            )));
        }
        if !self.bonds.iter().any(|b| b.role == Role::Validator) {
            return Err(GenesisError::Invalid(
                "genesis needs at least one validator bond".into(),
            ));
        }
        Ok(())
    }
}

//! `models`: model records — what a model is (architecture, weights commitment, tokenizer),
//! who owns it, its license and its price floor per unit of work.
//!
//! Invariant: a model name is registered once; its record's commitments never change (a new
//! version is a new name), so a job that names a model names exact weights.

pub mod state_key;

use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::GenesisError;
use crate::module::{Module, TxContext};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};

pub const MODEL_NAME_BYTES_MAX: usize = 64;
const TEXT_BYTES_MAX: usize = 256;
/// Most models the chain lists.
pub const MODELS_MAX: usize = 4096;

/// What a model's work is and how it is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Sentence embeddings; a unit of work is one input token.
    Embedding = 0,
    /// Text generation; a unit of work is one generated token.
    Generation = 1,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Embedding => "embedding",
            ModelKind::Generation => "generation",
        }
    }
}

impl Encode for ModelKind {
    fn encode(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
}

impl Decode for ModelKind {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(ModelKind::Embedding),
            1 => Ok(ModelKind::Generation),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "model kind",
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub kind: ModelKind,
    /// e.g. `bert` or `llama`.
    pub architecture: String,
    /// Hash of the model's configuration as the engine reads it.
    pub config_hash: Hash,
    /// The engine's Merkle root over the weights' fixed-size chunks.
    pub weights_commitment: Hash,
    pub tokenizer_hash: Hash,
    pub owner: Address,
    pub license: String,
    /// Least price per unit of work a provider may charge for this model.
    pub price_floor: Amount,
}

impl Encode for ModelRecord {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.name);
        w.value(&self.kind);
        w.str(&self.architecture);
        w.value(&self.config_hash);
        w.value(&self.weights_commitment);
        w.value(&self.tokenizer_hash);
        w.value(&self.owner);
        w.str(&self.license);
        w.value(&self.price_floor);
    }
}

impl Decode for ModelRecord {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ModelRecord {
            name: r.string(MODEL_NAME_BYTES_MAX)?,
            kind: r.value()?,
            architecture: r.string(TEXT_BYTES_MAX)?,
            config_hash: r.value()?,
            weights_commitment: r.value()?,
            tokenizer_hash: r.value()?,
            owner: r.value()?,
            license: r.string(TEXT_BYTES_MAX)?,
            price_floor: r.value()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Registers a model owned by the sender (the record's `owner` is ignored and set to it).
    Register(ModelRecord),
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::Register(record) => {
                w.u8(0);
                w.value(record);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Msg::Register(r.value()?)),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "models message",
            }),
        }
    }
}

struct Names(Vec<String>);

impl Encode for Names {
    fn encode(&self, w: &mut Writer) {
        w.len(self.0.len());
        for n in &self.0 {
            w.str(n);
        }
    }
}

impl Decode for Names {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.len(MODELS_MAX)?;
        let mut names = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            names.push(r.string(MODEL_NAME_BYTES_MAX)?);
        }
        Ok(Names(names))
    }
}

pub fn record(state: &StateDelta<'_>, name: &str) -> Option<ModelRecord> {
    state.get(&state_key::record(name))
}

/// Every registered model, in registration order.
pub fn all(state: &StateDelta<'_>) -> Vec<ModelRecord> {
    let Names(names) = state.get(&state_key::names()).unwrap_or(Names(Vec::new()));
    names.iter().filter_map(|n| record(state, n)).collect()
}

pub fn unknown(name: &str) -> TxError {
    TxError::new(ErrorCode::UnknownModel, format!("no model named `{name}`"))
}

fn check_record(record: &ModelRecord) -> Result<(), TxError> {
    let valid_name = !record.name.is_empty()
        && record.name.len() <= MODEL_NAME_BYTES_MAX
        && record
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid_name {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            format!(
                "model name `{}` must be 1-{MODEL_NAME_BYTES_MAX} of [A-Za-z0-9-_.]",
                record.name
            ),
        ));
    }
    Ok(())
}

fn insert(state: &mut StateDelta<'_>, record: &ModelRecord) -> Result<(), TxError> {
    if self::record(state, &record.name).is_some() {
        return Err(TxError::new(
            ErrorCode::ModelExists,
            format!("a model named `{}` exists", record.name),
        ));
    }
    let Names(mut names) = state.get(&state_key::names()).unwrap_or(Names(Vec::new()));
    if names.len() >= MODELS_MAX {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            "the model registry is full",
        ));
    }
    names.push(record.name.clone());
    state.put(state_key::names(), &Names(names));
    state.put(state_key::record(&record.name), record);
    Ok(())
}

pub struct Models;

impl Module for Models {
    type Msg = Msg;
    type Genesis = [ModelRecord];
    const NAME: &'static str = "models";

    fn fee_units(_msg: &Msg) -> u64 {
        1_000
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        let Msg::Register(record) = msg;
        check_record(record)
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        _ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        let Msg::Register(record) = msg;
        if self::record(state, &record.name).is_some() {
            return Err(TxError::new(
                ErrorCode::ModelExists,
                format!("a model named `{}` exists", record.name),
            ));
        }
        Ok(())
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        let Msg::Register(record) = msg;
        let record = ModelRecord {
            owner: ctx.sender,
            ..record.clone()
        };
        insert(state, &record)?;
        ctx.emit(Event::new(
            "models.registered",
            &[
                ("name", record.name.clone()),
                ("owner", record.owner.to_string()),
            ],
        ));
        Ok(())
    }

    fn init_chain(state: &mut StateDelta<'_>, records: &[ModelRecord]) -> Result<(), GenesisError> {
        for record in records {
            check_record(record)
                .and_then(|()| insert(state, record))
                .map_err(|e| GenesisError::Invalid(format!("model `{}`: {e}", record.name)))?;
        }
        Ok(())
    }
}

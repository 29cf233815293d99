//! `models`: model records — what a model is (architecture, weights commitment, tokenizer),
//! who owns it, its license and its price floor per unit of work.
//!
//! Invariant: a model name is registered once; its record's commitments never change (a new
//! version is a new name), so a job that names a model names exact weights.

pub mod lineage;
pub mod state_key;

pub use lineage::{Lineage, ModelFiles, NumericProfile, Parent, Source};

use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::GenesisError;
use crate::module::{BlockContext, Module, TxContext};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};

pub const MODEL_NAME_BYTES_MAX: usize = 64;
const TEXT_BYTES_MAX: usize = 256;
/// Most per-model entries a genesis parameter list may hold (the registry itself has no cap).
pub const MODELS_MAX: usize = 4096;
/// Names per page of the registry's index; listings are read a page at a time.
pub const MODELS_PER_PAGE_MAX: usize = 256;
/// What a registered record locks per byte of its encoding, returned when it is removed: the
/// registry has no global cap, so its size is paid for by those who fill it.
pub const RECORD_DEPOSIT_PER_BYTE: Amount = Amount::new(10_000_000);
/// Blocks between a record's retirement and its removal (with the deposit's refund): longer
/// than any job for the model can still need its record (queue, deadline, window, dispute).
pub const RETIRE_DELAY_BLOCKS: u64 = 100_000;
/// Most removals due at one height (later ones slip to the next heights).
pub const REMOVALS_PER_HEIGHT_MAX: usize = 1_024;

/// Where record deposits wait.
pub fn escrow() -> Address {
    Address::module("models")
}

/// A record's bookkeeping: who paid its deposit, how much, where it is in the index, and when
/// it leaves (once retired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub payer: Address,
    pub deposit: Amount,
    pub index: u64,
    pub removal_height: Option<u64>,
}

impl Encode for Entry {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.payer);
        w.value(&self.deposit);
        w.u64(self.index);
        w.option(&self.removal_height);
    }
}

impl Decode for Entry {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Entry {
            payer: r.value()?,
            deposit: r.value()?,
            index: r.u64()?,
            removal_height: r.option()?,
        })
    }
}

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
    /// The arithmetic the model's engines run (and traces are made of).
    #[serde(default)]
    pub numeric: NumericProfile,
    /// The blobs its weights, tokenizer and config are stored in, when stored on Piazza.
    #[serde(default)]
    pub files: Option<ModelFiles>,
    /// Base models and datasets it was trained on, and the share of its revenue that flows up.
    #[serde(default)]
    pub lineage: Lineage,
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
        w.value(&self.numeric);
        w.option(&self.files);
        w.value(&self.lineage);
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
            numeric: r.value()?,
            files: r.option()?,
            lineage: r.value()?,
        })
    }
}

/// A registration carries the whole record inline (it is the common message and keeps its
/// callers' shape); the size difference with `Retire` is accepted.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Registers a model owned by the sender (the record's `owner` is ignored and set to it),
    /// locking [`RECORD_DEPOSIT_PER_BYTE`] for each byte of the record.
    Register(ModelRecord),
    /// The owner retires a model: no new jobs or providers from now; the record is removed and
    /// its deposit returned [`RETIRE_DELAY_BLOCKS`] later.
    Retire { name: String },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::Register(record) => {
                w.u8(0);
                w.value(record);
            }
            Msg::Retire { name } => {
                w.u8(1);
                w.str(name);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Msg::Register(r.value()?)),
            1 => Ok(Msg::Retire {
                name: r.string(MODEL_NAME_BYTES_MAX)?,
            }),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "models message",
            }),
        }
    }
}

pub fn record(state: &StateDelta<'_>, name: &str) -> Option<ModelRecord> {
    state.get(&state_key::record(name))
}

/// Model names, each a bounded string: a page of the index, or one name.
struct Names(Vec<String>);

impl Encode for Names {
    fn encode(&self, w: &mut Writer) {
        w.len(self.0.len());
        for name in &self.0 {
            w.str(name);
        }
    }
}

impl Decode for Names {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.len(MODELS_PER_PAGE_MAX)?;
        (0..n)
            .map(|_| r.string(MODEL_NAME_BYTES_MAX))
            .collect::<Result<_, _>>()
            .map(Names)
    }
}

/// How many models are registered.
pub fn count(state: &StateDelta<'_>) -> u64 {
    state.get(&state_key::count()).unwrap_or(0)
}

/// A record's deposit and place in the index.
pub fn entry(state: &StateDelta<'_>, name: &str) -> Option<Entry> {
    state.get(&state_key::entry(name))
}

/// Whether a model is retired (no new jobs or providers).
pub fn retired(state: &StateDelta<'_>, name: &str) -> bool {
    entry(state, name).is_some_and(|e| e.removal_height.is_some())
}

/// At most `limit` (up to [`MODELS_PER_PAGE_MAX`]) records from position `offset` of the index.
pub fn list(state: &StateDelta<'_>, offset: u64, limit: usize) -> Vec<ModelRecord> {
    let end = count(state).min(offset.saturating_add(limit.min(MODELS_PER_PAGE_MAX) as u64));
    (offset..end)
        .filter_map(|i| name_at(state, i))
        .filter_map(|name| record(state, &name))
        .collect()
}

/// The first page of the registry (in registration order until a removal moves the last
/// entry into the freed place).
pub fn all(state: &StateDelta<'_>) -> Vec<ModelRecord> {
    list(state, 0, MODELS_PER_PAGE_MAX)
}

fn page_of(index: u64) -> (u64, usize) {
    let per = MODELS_PER_PAGE_MAX as u64;
    (index / per, (index % per) as usize)
}

fn name_at(state: &StateDelta<'_>, index: u64) -> Option<String> {
    let (page, slot) = page_of(index);
    let Names(names) = state.get(&state_key::page(page))?;
    names.get(slot).cloned()
}

/// Writes `name` at `index` (the end of the index or an existing place), or with `None`
/// drops the last name.
fn set_name_at(state: &mut StateDelta<'_>, index: u64, name: Option<String>) {
    let (page, slot) = page_of(index);
    let Names(mut names) = state
        .get(&state_key::page(page))
        .unwrap_or(Names(Vec::new()));
    match name {
        Some(name) if slot < names.len() => names[slot] = name,
        Some(name) => names.push(name),
        None => names.truncate(slot),
    }
    if names.is_empty() {
        state.delete(state_key::page(page));
    } else {
        state.put(state_key::page(page), &Names(names));
    }
}

pub fn unknown(name: &str) -> TxError {
    TxError::new(ErrorCode::UnknownModel, format!("no model named `{name}`"))
}

fn check_record(record: &ModelRecord) -> Result<(), TxError> {
    if record.architecture.len() > TEXT_BYTES_MAX || record.license.len() > TEXT_BYTES_MAX {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            format!("a model's architecture and license are at most {TEXT_BYTES_MAX} bytes"),
        ));
    }
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
    record.lineage.check(&record.name)
}

/// The deposit a record locks: its encoded size at [`RECORD_DEPOSIT_PER_BYTE`].
pub fn deposit_for(record: &ModelRecord) -> Amount {
    RECORD_DEPOSIT_PER_BYTE
        .checked_mul(record.to_bytes().len() as u128)
        .expect("a bounded record's deposit fits")
}

fn insert(
    state: &mut StateDelta<'_>,
    record: &ModelRecord,
    payer: Address,
    deposit: Amount,
) -> Result<(), TxError> {
    if self::record(state, &record.name).is_some() {
        return Err(TxError::new(
            ErrorCode::ModelExists,
            format!("a model named `{}` exists", record.name),
        ));
    }
    // The model's share asset: its revenue goes to the owner until units are issued.
    let asset = crate::bank::assets::AssetId::Model(record.name.clone());
    crate::bank::assets::forget_if_unissued(state, &asset);
    crate::bank::assets::register(state, &asset, record.owner, None)?;
    let index = count(state);
    set_name_at(state, index, Some(record.name.clone()));
    state.put(state_key::count(), &(index + 1));
    state.put(state_key::record(&record.name), record);
    state.put(
        state_key::entry(&record.name),
        &Entry {
            payer,
            deposit,
            index,
            removal_height: None,
        },
    );
    Ok(())
}

/// Removes a retired record: the last name of the index takes its place, the deposit goes back.
fn remove(state: &mut StateDelta<'_>, name: &str, events: &mut Vec<Event>) {
    let Some(entry) = entry(state, name) else {
        return;
    };
    let last = count(state).saturating_sub(1);
    if entry.index != last {
        if let Some(moved) = name_at(state, last) {
            set_name_at(state, entry.index, Some(moved.clone()));
            if let Some(mut e) = self::entry(state, &moved) {
                e.index = entry.index;
                state.put(state_key::entry(&moved), &e);
            }
        }
    }
    set_name_at(state, last, None);
    state.put(state_key::count(), &last);
    state.delete(state_key::record(name));
    state.delete(state_key::entry(name));
    crate::bank::assets::forget_if_unissued(
        state,
        &crate::bank::assets::AssetId::Model(name.to_string()),
    );
    if !entry.deposit.is_zero() {
        crate::bank::transfer(state, &escrow(), &entry.payer, entry.deposit)
            .expect("the escrow holds every record's deposit");
    }
    events.push(Event::new(
        "models.removed",
        &[
            ("name", name.to_string()),
            ("refund", entry.deposit.base_units().to_string()),
        ],
    ));
}

pub struct Models;

impl Module for Models {
    type Msg = Msg;
    type Genesis = [ModelRecord];
    const NAME: &'static str = "models";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::Register(_) => 1_000,
            Msg::Retire { .. } => 200,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::Register(record) => check_record(record),
            Msg::Retire { .. } => Ok(()),
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Register(record) => {
                if self::record(state, &record.name).is_some() {
                    return Err(TxError::new(
                        ErrorCode::ModelExists,
                        format!("a model named `{}` exists", record.name),
                    ));
                }
                lineage::depth(state, &record.name, &record.lineage).map(|_| ())
            }
            Msg::Retire { name } => {
                let record = self::record(state, name).ok_or_else(|| unknown(name))?;
                if record.owner != ctx.sender {
                    return Err(TxError::new(
                        ErrorCode::InvalidMessage,
                        format!("only its owner {} may retire `{name}`", record.owner),
                    ));
                }
                if retired(state, name) {
                    return Err(TxError::new(
                        ErrorCode::InvalidMessage,
                        format!("`{name}` is already retired"),
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
        match msg {
            Msg::Register(record) => {
                let record = ModelRecord {
                    owner: ctx.sender,
                    ..record.clone()
                };
                let deposit = deposit_for(&record);
                crate::bank::transfer(state, &ctx.sender, &escrow(), deposit)?;
                insert(state, &record, ctx.sender, deposit)?;
                ctx.emit(Event::new(
                    "models.registered",
                    &[
                        ("name", record.name.clone()),
                        ("owner", record.owner.to_string()),
                        ("deposit", deposit.base_units().to_string()),
                    ],
                ));
            }
            Msg::Retire { name } => {
                let mut entry = entry(state, name).expect("checked: the record exists");
                let id: u64 = state.get(&state_key::next_removal()).unwrap_or(0);
                state.put(state_key::next_removal(), &(id + 1));
                state.put(state_key::removal(id), &Names(vec![name.clone()]));
                let height = crate::list::schedule::<REMOVALS_PER_HEIGHT_MAX>(
                    state,
                    state_key::removals,
                    ctx.block.height.saturating_add(RETIRE_DELAY_BLOCKS),
                    id,
                )
                .map_err(|full| full.refusal("the record removal queue"))?;
                entry.removal_height = Some(height);
                state.put(state_key::entry(name), &entry);
                ctx.emit(Event::new(
                    "models.retired",
                    &[
                        ("name", name.clone()),
                        ("removal_height", height.to_string()),
                    ],
                ));
            }
        }
        Ok(())
    }

    fn init_chain(state: &mut StateDelta<'_>, records: &[ModelRecord]) -> Result<(), GenesisError> {
        for record in records {
            check_record(record)
                .and_then(|()| lineage::depth(state, &record.name, &record.lineage))
                .and_then(|_| insert(state, record, record.owner, Amount::ZERO))
                .map_err(|e| GenesisError::Invalid(format!("model `{}`: {e}", record.name)))?;
        }
        Ok(())
    }

    /// Removes the records whose retirement delay ends at this block, refunding deposits.
    fn end_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        for id in
            crate::list::take::<REMOVALS_PER_HEIGHT_MAX>(state, state_key::removals(block.height))
        {
            if let Some(Names(names)) = state.get::<Names>(&state_key::removal(id)) {
                for name in names {
                    remove(state, &name, events);
                }
            }
            state.delete(state_key::removal(id));
        }
    }
}

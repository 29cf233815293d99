//! `data`: datasets, access purchases, contribution pools and labelling tasks (DESIGN.md §5).
//!
//! - A **dataset** is a record (blob id, schema, license, access price, owner, optional
//!   encryption) with a share asset `Dataset(id)`; an access purchase pays that asset (its
//!   holders, its owner while it has none, or — for a pool's dataset — the pool's
//!   contributors). An encrypted dataset's owner seals the content key to each buyer.
//! - A **contribution pool** grants weight (units of `Pool(id)`, not transferable) to an item
//!   only on a settled embedding job on Piazza's compute, paid by the contributor, whose output
//!   (the item's embedding) is, quantized with integer arithmetic, farther than the pool's
//!   threshold from every accepted item: anyone can re-check it from the job's output.
//! - A **labelling task** escrows rewards, assigns each item to `k` joined labellers with a
//!   block's randomness, decides each label by its rule, pays agreeing labellers, takes the
//!   stake of any labeller with a disagreeing or missing label, and publishes the result as a
//!   dataset whose pool lists the agreeing labellers by their agreeing labels.
//!
//! Invariants: every list is bounded and refuses when full; every escrowed base unit ends paid,
//! refunded or forfeited at settlement; a job validates at most one item.

mod dataset;
mod label;
pub mod msg;
mod pool;
pub mod state_key;
pub mod types;

pub use label::{decide, labels_id};
pub use msg::Msg;
pub use pool::{distance_sq, quantize};
pub use types::{Access, Dataset, Item, LabelTask, Phase, Pool, Rule, Validation};

use crate::error::TxError;
use crate::module::{GenesisError, Module, TxContext};
use crate::state::StateDelta;
use piazza_primitives::{Address, Amount};

/// The transaction tag of data messages.
pub const MODULE_TAG: u8 = 31;
/// Schema, license and similar texts.
pub const TEXT_BYTES_MAX: usize = 256;
/// A content key sealed to a buyer.
pub const SEALED_KEY_BYTES_MAX: usize = 256;
/// Largest embedding a pool compares (one byte per dimension once quantized).
pub const EMBEDDING_DIMS_MAX: usize = 1_024;
/// Most items one pool accepts (each contribution is compared with all of them).
pub const POOL_ITEMS_MAX: u32 = 256;
/// Weight one accepted item (or one agreeing label) grants.
pub const WEIGHT_PER_ITEM: u128 = 1;
/// Most items in one labelling task.
pub const LABEL_ITEMS_MAX: usize = 64;
/// Most labellers one task takes.
pub const LABELLERS_MAX: usize = 64;
/// Most labellers per item.
pub const LABEL_K_MAX: usize = 9;
/// Longest join or labelling window.
pub const LABEL_WINDOW_BLOCKS_MAX: u32 = 100_000;

/// Where label rewards and labeller stakes wait.
pub fn escrow() -> Address {
    Address::module("data")
}

pub fn dataset(state: &StateDelta<'_>, id: u64) -> Option<Dataset> {
    state.get(&state_key::dataset(id))
}

pub fn access(state: &StateDelta<'_>, dataset: u64, buyer: &Address) -> Option<Access> {
    state.get(&state_key::access(dataset, buyer))
}

pub fn pool(state: &StateDelta<'_>, id: u64) -> Option<Pool> {
    state.get(&state_key::pool(id))
}

pub fn item(state: &StateDelta<'_>, pool: u64, index: u32) -> Option<Item> {
    state.get(&state_key::item(pool, index))
}

pub fn label_task(state: &StateDelta<'_>, id: u64) -> Option<LabelTask> {
    state.get(&state_key::label_task(id))
}

/// Takes the next id of a counter.
fn next_id(state: &mut StateDelta<'_>, key: Vec<u8>) -> u64 {
    let id: u64 = state.get(&key).unwrap_or(0);
    state.put(key, &(id + 1));
    id
}

fn check_text(texts: &[&str]) -> Result<(), TxError> {
    if texts.iter().any(|t| t.len() > TEXT_BYTES_MAX) {
        return Err(TxError::new(
            crate::error::ErrorCode::InvalidMessage,
            format!("schema and license are at most {TEXT_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

pub struct Data;

impl Module for Data {
    type Msg = Msg;
    type Genesis = ();
    const NAME: &'static str = "data";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::RegisterDataset { .. } | Msg::CreatePool { .. } => 1_000,
            Msg::CreateLabelTask { items, .. } => 1_000 + 50 * items.len() as u64,
            // A contribution compares with up to POOL_ITEMS_MAX embeddings.
            Msg::Contribute { .. } => 2_000,
            Msg::AssignLabels { .. } | Msg::SettleLabelTask { .. } => 2_000,
            _ => 100,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::RegisterDataset {
                schema, license, ..
            } => check_text(&[schema, license]),
            Msg::CreatePool {
                schema,
                license,
                dims,
                ..
            } => {
                check_text(&[schema, license])?;
                pool::check_dims(*dims)
            }
            Msg::CreateLabelTask { .. } => label::check_stateless(msg),
            _ => Ok(()),
        }
    }

    /// Every rule reads the state the message changes; they are checked in `execute`.
    fn check_stateful(_: &StateDelta<'_>, _: &TxContext<'_>, _: &Msg) -> Result<(), TxError> {
        Ok(())
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::RegisterDataset {
                blob,
                schema,
                license,
                price,
                encrypted,
            } => {
                let record = Dataset {
                    owner: ctx.sender,
                    blob: *blob,
                    schema: schema.clone(),
                    license: license.clone(),
                    price: *price,
                    encrypted: *encrypted,
                    pool: None,
                };
                dataset::register(state, ctx, record).map(|_| ())
            }
            Msg::BuyAccess { dataset } => dataset::buy(state, ctx, *dataset),
            Msg::SealKey {
                dataset,
                buyer,
                sealed_key,
            } => dataset::seal(state, ctx, *dataset, buyer, sealed_key),
            Msg::CreatePool {
                model,
                dims,
                min_distance_sq,
                schema,
                license,
                price,
            } => pool::create(
                state,
                ctx,
                ctx.sender,
                Validation::Embedding {
                    model: model.clone(),
                    dims: *dims,
                    min_distance_sq: *min_distance_sq,
                },
                schema,
                license,
                *price,
            )
            .map(|_| ()),
            Msg::Contribute {
                pool,
                item,
                validation_job,
            } => pool::contribute(state, ctx, *pool, *item, *validation_job),
            Msg::CreateLabelTask { .. } => label::create(state, ctx, msg),
            Msg::JoinLabelTask { task } => label::join(state, ctx, *task),
            Msg::AssignLabels { task } => label::assign(state, ctx, *task),
            Msg::SubmitLabel { task, item, value } => {
                label::submit(state, ctx, *task, *item, *value)
            }
            Msg::SettleLabelTask { task } => label::settle(state, ctx, *task),
        }
    }

    fn init_chain(_: &mut StateDelta<'_>, _: &()) -> Result<(), GenesisError> {
        Ok(())
    }
}

/// The messages' outflow from the sender's balance, at most (for admission).
pub fn outflow(msg: &Msg) -> Option<Amount> {
    match msg {
        Msg::CreateLabelTask {
            items,
            k,
            reward_per_label,
            ..
        } => reward_per_label.checked_mul((items.len() as u128).checked_mul(*k as u128)?),
        // A join's stake and an access price are checked against the balance when they execute.
        _ => Some(Amount::ZERO),
    }
}

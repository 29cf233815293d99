//! The data module's messages.

use super::types::Rule;
use super::{LABEL_ITEMS_MAX, SEALED_KEY_BYTES_MAX, TEXT_BYTES_MAX};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Registers a dataset owned by the sender; its share asset `Dataset(id)` pays the owner
    /// until units are issued.
    RegisterDataset {
        blob: Hash,
        schema: String,
        license: String,
        price: Amount,
        encrypted: bool,
    },
    /// Buys access to a dataset at its price, paid to its holders (or its pool).
    BuyAccess { dataset: u64 },
    /// The owner of an encrypted dataset hands a buyer the content key sealed to its key.
    SealKey {
        dataset: u64,
        buyer: Address,
        sealed_key: Vec<u8>,
    },
    /// Opens a contribution pool validated by embedding distance, with its dataset.
    CreatePool {
        model: String,
        dims: u16,
        min_distance_sq: u32,
        schema: String,
        license: String,
        price: Amount,
    },
    /// Adds an item, proven new by a settled embedding job the sender paid for.
    Contribute {
        pool: u64,
        item: Hash,
        validation_job: u64,
    },
    /// Opens a labelling task, escrowing `reward_per_label · k` per item.
    CreateLabelTask {
        items: Vec<Hash>,
        k: u8,
        reward_per_label: Amount,
        stake: Amount,
        rule: Rule,
        join_blocks: u32,
        label_blocks: u32,
        price: Amount,
        license: String,
    },
    /// Joins a task as a labeller, depositing its stake.
    JoinLabelTask { task: u64 },
    /// After joining closes, anyone assigns each item to `k` labellers with this block's
    /// randomness.
    AssignLabels { task: u64 },
    /// An assigned labeller's label for one item.
    SubmitLabel { task: u64, item: u16, value: u32 },
    /// After labelling closes, anyone settles: agreeing labellers paid, the others' stakes
    /// lost, the result published as a dataset whose pool lists the agreeing labellers.
    SettleLabelTask { task: u64 },
}

struct Bytes(Vec<u8>);

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::RegisterDataset {
                blob,
                schema,
                license,
                price,
                encrypted,
            } => {
                w.u8(0);
                w.value(blob);
                w.str(schema);
                w.str(license);
                w.value(price);
                w.bool(*encrypted);
            }
            Msg::BuyAccess { dataset } => {
                w.u8(1);
                w.u64(*dataset);
            }
            Msg::SealKey {
                dataset,
                buyer,
                sealed_key,
            } => {
                w.u8(2);
                w.u64(*dataset);
                w.value(buyer);
                w.bytes(sealed_key);
            }
            Msg::CreatePool {
                model,
                dims,
                min_distance_sq,
                schema,
                license,
                price,
            } => {
                w.u8(3);
                w.str(model);
                w.u16(*dims);
                w.u32(*min_distance_sq);
                w.str(schema);
                w.str(license);
                w.value(price);
            }
            Msg::Contribute {
                pool,
                item,
                validation_job,
            } => {
                w.u8(4);
                w.u64(*pool);
                w.value(item);
                w.u64(*validation_job);
            }
            Msg::CreateLabelTask {
                items,
                k,
                reward_per_label,
                stake,
                rule,
                join_blocks,
                label_blocks,
                price,
                license,
            } => {
                w.u8(5);
                w.seq(items);
                w.u8(*k);
                w.value(reward_per_label);
                w.value(stake);
                w.value(rule);
                w.u32(*join_blocks);
                w.u32(*label_blocks);
                w.value(price);
                w.str(license);
            }
            Msg::JoinLabelTask { task } => {
                w.u8(6);
                w.u64(*task);
            }
            Msg::AssignLabels { task } => {
                w.u8(7);
                w.u64(*task);
            }
            Msg::SubmitLabel { task, item, value } => {
                w.u8(8);
                w.u64(*task);
                w.u16(*item);
                w.u32(*value);
            }
            Msg::SettleLabelTask { task } => {
                w.u8(9);
                w.u64(*task);
            }
        }
    }
}

impl Decode for Bytes {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Bytes(r.bytes(SEALED_KEY_BYTES_MAX)?))
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Msg::RegisterDataset {
                blob: r.value()?,
                schema: r.string(TEXT_BYTES_MAX)?,
                license: r.string(TEXT_BYTES_MAX)?,
                price: r.value()?,
                encrypted: r.bool()?,
            },
            1 => Msg::BuyAccess { dataset: r.u64()? },
            2 => Msg::SealKey {
                dataset: r.u64()?,
                buyer: r.value()?,
                sealed_key: r.value::<Bytes>()?.0,
            },
            3 => Msg::CreatePool {
                model: r.string(crate::models::MODEL_NAME_BYTES_MAX)?,
                dims: r.u16()?,
                min_distance_sq: r.u32()?,
                schema: r.string(TEXT_BYTES_MAX)?,
                license: r.string(TEXT_BYTES_MAX)?,
                price: r.value()?,
            },
            4 => Msg::Contribute {
                pool: r.u64()?,
                item: r.value()?,
                validation_job: r.u64()?,
            },
            5 => Msg::CreateLabelTask {
                items: r.seq(LABEL_ITEMS_MAX)?,
                k: r.u8()?,
                reward_per_label: r.value()?,
                stake: r.value()?,
                rule: r.value()?,
                join_blocks: r.u32()?,
                label_blocks: r.u32()?,
                price: r.value()?,
                license: r.string(TEXT_BYTES_MAX)?,
            },
            6 => Msg::JoinLabelTask { task: r.u64()? },
            7 => Msg::AssignLabels { task: r.u64()? },
            8 => Msg::SubmitLabel {
                task: r.u64()?,
                item: r.u16()?,
                value: r.u32()?,
            },
            9 => Msg::SettleLabelTask { task: r.u64()? },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "data message",
                })
            }
        })
    }
}

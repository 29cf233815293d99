//! The data module's records and their canonical encodings.

use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};

use super::{
    EMBEDDING_DIMS_MAX, LABELLERS_MAX, LABEL_ITEMS_MAX, LABEL_K_MAX, SEALED_KEY_BYTES_MAX,
    TEXT_BYTES_MAX,
};

/// A dataset: its content's blob id, how to read it, under what terms, and its access price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub owner: Address,
    /// The content's blob id (for a pool or a labelling result: the hash of its item list).
    pub blob: Hash,
    pub schema: String,
    pub license: String,
    /// What one access purchase pays (to the dataset's holders, or its pool's contributors).
    pub price: Amount,
    /// Whether the content is encrypted (buyers then get a content key sealed to their key).
    pub encrypted: bool,
    /// The pool whose contributors its revenue pays, if any.
    pub pool: Option<u64>,
}

impl Encode for Dataset {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.owner);
        w.value(&self.blob);
        w.str(&self.schema);
        w.str(&self.license);
        w.value(&self.price);
        w.bool(self.encrypted);
        w.option(&self.pool);
    }
}

impl Decode for Dataset {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Dataset {
            owner: r.value()?,
            blob: r.value()?,
            schema: r.string(TEXT_BYTES_MAX)?,
            license: r.string(TEXT_BYTES_MAX)?,
            price: r.value()?,
            encrypted: r.bool()?,
            pool: r.option()?,
        })
    }
}

/// A buyer's access to a dataset: what it paid and, for encrypted content, the content key
/// the owner sealed to the buyer's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub paid: Amount,
    pub height: u64,
    pub sealed_key: Option<Vec<u8>>,
}

struct SealedKey(Vec<u8>);

impl Encode for SealedKey {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.0);
    }
}

impl Decode for SealedKey {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SealedKey(r.bytes(SEALED_KEY_BYTES_MAX)?))
    }
}

impl Encode for Access {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.paid);
        w.u64(self.height);
        w.option(&self.sealed_key.clone().map(SealedKey));
    }
}

impl Decode for Access {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Access {
            paid: r.value()?,
            height: r.u64()?,
            sealed_key: r.option::<SealedKey>()?.map(|k| k.0),
        })
    }
}

/// How a pool grants weight: an embedding job's proof of novelty, or agreement in a labelling
/// task (the task grants it; no contribution message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// An item earns weight once a settled job of `model` embedded it (`dims` little-endian
    /// f32s) and, quantized to i8 at scale 127, its squared distance to every item of the pool
    /// is above `min_distance_sq`.
    Embedding {
        model: String,
        dims: u16,
        min_distance_sq: u32,
    },
    /// Weight comes from agreeing labels of a labelling task.
    Labels { task: u64 },
}

impl Encode for Validation {
    fn encode(&self, w: &mut Writer) {
        match self {
            Validation::Embedding {
                model,
                dims,
                min_distance_sq,
            } => {
                w.u8(0);
                w.str(model);
                w.u16(*dims);
                w.u32(*min_distance_sq);
            }
            Validation::Labels { task } => {
                w.u8(1);
                w.u64(*task);
            }
        }
    }
}

impl Decode for Validation {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Validation::Embedding {
                model: r.string(crate::models::MODEL_NAME_BYTES_MAX)?,
                dims: r.u16()?,
                min_distance_sq: r.u32()?,
            }),
            1 => Ok(Validation::Labels { task: r.u64()? }),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "pool validation",
            }),
        }
    }
}

/// A contribution pool: its dataset, its rule, and how many items it has accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub owner: Address,
    pub dataset: u64,
    pub validation: Validation,
    pub items: u32,
}

impl Encode for Pool {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.owner);
        w.u64(self.dataset);
        w.value(&self.validation);
        w.u32(self.items);
    }
}

impl Decode for Pool {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Pool {
            owner: r.value()?,
            dataset: r.u64()?,
            validation: r.value()?,
            items: r.u32()?,
        })
    }
}

/// An accepted item: who contributed it, its hash, the job that validated it and its
/// quantized embedding (what later contributions are compared with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub contributor: Address,
    pub hash: Hash,
    pub job: u64,
    pub embedding: Vec<u8>,
}

impl Encode for Item {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.contributor);
        w.value(&self.hash);
        w.u64(self.job);
        w.bytes(&self.embedding);
    }
}

impl Decode for Item {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Item {
            contributor: r.value()?,
            hash: r.value()?,
            job: r.u64()?,
            embedding: r.bytes(EMBEDDING_DIMS_MAX)?,
        })
    }
}

/// How a labelling task decides an item's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// More than half of the item's `k` labellers gave the same value.
    Majority,
    /// More than half of the `k` are within `tolerance` of the submitted values' lower median.
    Tolerance { tolerance: u32 },
}

impl Encode for Rule {
    fn encode(&self, w: &mut Writer) {
        match self {
            Rule::Majority => w.u8(0),
            Rule::Tolerance { tolerance } => {
                w.u8(1);
                w.u32(*tolerance);
            }
        }
    }
}

impl Decode for Rule {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Rule::Majority),
            1 => Ok(Rule::Tolerance {
                tolerance: r.u32()?,
            }),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "agreement rule",
            }),
        }
    }
}

/// Where a labelling task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Labellers join (with their stake) until `join_end`.
    Joining,
    /// Items are assigned; labels are taken until `label_end`.
    Labelling,
    /// Paid out; the result is a dataset.
    Settled,
}

/// One item's assignment: its labellers (indexes into the task's labellers) and their labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    pub labellers: Vec<u8>,
    pub labels: Vec<Option<u32>>,
}

impl Encode for Assignment {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.labellers);
        w.len(self.labels.len());
        for label in &self.labels {
            w.option(label);
        }
    }
}

impl Decode for Assignment {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let labellers = r.seq(LABEL_K_MAX)?;
        let n = r.len(LABEL_K_MAX)?;
        let labels = (0..n).map(|_| r.option()).collect::<Result<_, _>>()?;
        Ok(Assignment { labellers, labels })
    }
}

/// A labelling task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelTask {
    pub requester: Address,
    pub items: Vec<Hash>,
    pub k: u8,
    pub reward_per_label: Amount,
    /// What each labeller deposits to join; lost when one of its labels disagrees or is missing.
    pub stake: Amount,
    pub rule: Rule,
    pub join_end: u64,
    pub label_end: u64,
    pub labellers: Vec<Address>,
    pub assignments: Vec<Assignment>,
    pub phase: Phase,
    /// The dataset the result is published as (with its labellers' pool).
    pub result: Option<u64>,
    pub price: Amount,
    pub license: String,
}

impl Encode for LabelTask {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.requester);
        w.seq(&self.items);
        w.u8(self.k);
        w.value(&self.reward_per_label);
        w.value(&self.stake);
        w.value(&self.rule);
        w.u64(self.join_end);
        w.u64(self.label_end);
        w.seq(&self.labellers);
        w.seq(&self.assignments);
        w.u8(self.phase as u8);
        w.option(&self.result);
        w.value(&self.price);
        w.str(&self.license);
    }
}

impl Decode for LabelTask {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(LabelTask {
            requester: r.value()?,
            items: r.seq(LABEL_ITEMS_MAX)?,
            k: r.u8()?,
            reward_per_label: r.value()?,
            stake: r.value()?,
            rule: r.value()?,
            join_end: r.u64()?,
            label_end: r.u64()?,
            labellers: r.seq(LABELLERS_MAX)?,
            assignments: r.seq(LABEL_ITEMS_MAX)?,
            phase: {
                let offset = r.offset();
                match r.u8()? {
                    0 => Phase::Joining,
                    1 => Phase::Labelling,
                    2 => Phase::Settled,
                    tag => {
                        return Err(DecodeError::InvalidTag {
                            offset,
                            tag,
                            what: "label task phase",
                        })
                    }
                }
            },
            result: r.option()?,
            price: r.value()?,
            license: r.string(TEXT_BYTES_MAX)?,
        })
    }
}

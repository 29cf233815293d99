//! A model's provenance and how the record is computed: the numeric profile its engines run,
//! the blobs its files live in, and its lineage (the base models and datasets it was trained
//! on, each with a weight, plus the share of its revenue that flows up to them).
//!
//! Invariant: lineage is set at registration and never changes; its fan-out is at most
//! [`MAX_PARENTS`] and its depth at most [`MAX_DEPTH`], checked against the parents' own records
//! when it is registered, and its parents exist then — so the lineage graph has no cycles and
//! a settlement walks at most `MAX_PARENTS^MAX_DEPTH` edges.

use crate::error::{ErrorCode, TxError};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::Hash;

use super::MODEL_NAME_BYTES_MAX;

/// Most parents (base models and datasets) one record names.
pub const MAX_PARENTS: usize = 4;
/// Longest chain of parents below a record (a record without parents has depth 0).
pub const MAX_DEPTH: u8 = 4;
/// Basis points in one whole.
pub const BPS_WHOLE: u16 = 10_000;

/// How a model's engines compute: the arithmetic its traces are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumericProfile {
    /// Weights dequantized to f32, f32 kernels.
    #[default]
    F32 = 0,
    /// Integer block dot products over the quantized weights.
    Quantized = 1,
}

impl Encode for NumericProfile {
    fn encode(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
}

impl Decode for NumericProfile {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(NumericProfile::F32),
            1 => Ok(NumericProfile::Quantized),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "numeric profile",
            }),
        }
    }
}

/// The blobs a model's files are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelFiles {
    pub weights: Hash,
    pub tokenizer: Hash,
    pub config: Hash,
}

impl Encode for ModelFiles {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.weights);
        w.value(&self.tokenizer);
        w.value(&self.config);
    }
}

impl Decode for ModelFiles {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ModelFiles {
            weights: r.value()?,
            tokenizer: r.value()?,
            config: r.value()?,
        })
    }
}

/// What a parent is: a registered model (by name) or a dataset (by id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Model(String),
    Dataset(u64),
}

impl Encode for Source {
    fn encode(&self, w: &mut Writer) {
        match self {
            Source::Model(name) => {
                w.u8(0);
                w.str(name);
            }
            Source::Dataset(id) => {
                w.u8(1);
                w.u64(*id);
            }
        }
    }
}

impl Decode for Source {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Source::Model(r.string(MODEL_NAME_BYTES_MAX)?)),
            1 => Ok(Source::Dataset(r.u64()?)),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "lineage source",
            }),
        }
    }
}

/// One parent and its weight among the record's parents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Parent {
    pub source: Source,
    pub weight_bps: u16,
}

impl Encode for Parent {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.source);
        w.u16(self.weight_bps);
    }
}

impl Decode for Parent {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Parent {
            source: r.value()?,
            weight_bps: r.u16()?,
        })
    }
}

/// A record's parents and its royalty: `royalty_bps` of the model revenue that reaches the
/// record flows up to its parents by weight; the rest stays with its holders (or owner).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Lineage {
    #[serde(default)]
    pub parents: Vec<Parent>,
    #[serde(default)]
    pub royalty_bps: u16,
}

impl Encode for Lineage {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.parents);
        w.u16(self.royalty_bps);
    }
}

impl Decode for Lineage {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Lineage {
            parents: r.seq(MAX_PARENTS)?,
            royalty_bps: r.u16()?,
        })
    }
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> TxError {
    TxError::new(code, message)
}

impl Lineage {
    /// The checks that need no state: fan-out, weights summing to the whole, royalty within
    /// the whole and only with parents, no parent named twice, no self-reference.
    pub fn check(&self, own_name: &str) -> Result<(), TxError> {
        if self.parents.len() > MAX_PARENTS {
            return Err(refuse(
                ErrorCode::LineageTooWide,
                format!(
                    "{} parents; a lineage names at most {MAX_PARENTS}",
                    self.parents.len()
                ),
            ));
        }
        if self.royalty_bps > BPS_WHOLE {
            return Err(refuse(
                ErrorCode::RoyaltyOverWhole,
                format!(
                    "royalty {} bps is over the whole ({BPS_WHOLE} bps)",
                    self.royalty_bps
                ),
            ));
        }
        if self.parents.is_empty() {
            if self.royalty_bps != 0 {
                return Err(refuse(
                    ErrorCode::LineageWeights,
                    "a royalty needs parents to flow to",
                ));
            }
            return Ok(());
        }
        let total: u32 = self.parents.iter().map(|p| p.weight_bps as u32).sum();
        if total != BPS_WHOLE as u32 || self.parents.iter().any(|p| p.weight_bps == 0) {
            return Err(refuse(
                ErrorCode::LineageWeights,
                format!("parent weights must be positive and sum to {BPS_WHOLE} bps, not {total}"),
            ));
        }
        for (i, parent) in self.parents.iter().enumerate() {
            if parent.source == Source::Model(own_name.to_string()) {
                return Err(refuse(
                    ErrorCode::LineageCycle,
                    format!("`{own_name}` names itself as a parent"),
                ));
            }
            if self.parents[..i].iter().any(|p| p.source == parent.source) {
                return Err(refuse(
                    ErrorCode::LineageWeights,
                    format!("parent {:?} is named twice", parent.source),
                ));
            }
        }
        Ok(())
    }
}

/// How deep a lineage is (0 without parents; one more than its deepest model parent, 1 for a
/// dataset parent), reading its model parents' records: each must exist, none may be (or
/// descend from) `own_name`, and the result is at most [`MAX_DEPTH`]. At most
/// `MAX_PARENTS^MAX_DEPTH` records are read, since the walk stops past the bound.
pub fn depth(
    state: &crate::state::StateDelta<'_>,
    own_name: &str,
    lineage: &Lineage,
) -> Result<u8, TxError> {
    depth_below(state, own_name, lineage, 0)
}

fn depth_below(
    state: &crate::state::StateDelta<'_>,
    own_name: &str,
    lineage: &Lineage,
    level: u8,
) -> Result<u8, TxError> {
    if level > MAX_DEPTH {
        return Err(refuse(
            ErrorCode::LineageTooDeep,
            format!("`{own_name}`'s lineage is deeper than {MAX_DEPTH}"),
        ));
    }
    let mut deepest = 0u8;
    for parent in &lineage.parents {
        let below = match &parent.source {
            Source::Model(name) if name == own_name => {
                return Err(refuse(
                    ErrorCode::LineageCycle,
                    format!("`{own_name}` descends from itself"),
                ))
            }
            Source::Model(name) => {
                let record = super::record(state, name).ok_or_else(|| super::unknown(name))?;
                depth_below(state, own_name, &record.lineage, level + 1)?
            }
            Source::Dataset(id) => {
                let asset = crate::bank::assets::AssetId::Dataset(*id);
                if crate::bank::assets::asset(state, &asset).is_none() {
                    return Err(refuse(
                        ErrorCode::UnknownDataset,
                        format!("no dataset {id}"),
                    ));
                }
                0
            }
        };
        deepest = deepest.max(below + 1);
    }
    if deepest > MAX_DEPTH {
        return Err(refuse(
            ErrorCode::LineageTooDeep,
            format!("`{own_name}`'s lineage has depth {deepest}, more than {MAX_DEPTH}"),
        ));
    }
    Ok(deepest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelRecord;

    #[test]
    fn genesis_json_without_the_new_fields_takes_the_defaults() {
        let owner = serde_json::to_value(piazza_primitives::Address([1; 20])).unwrap();
        let hash = serde_json::to_value(Hash([7; 32])).unwrap();
        let json = serde_json::json!({"name": "m", "kind": "generation", "architecture": "llama",
            "config_hash": hash, "weights_commitment": hash, "tokenizer_hash": hash,
            "owner": owner, "license": "", "price_floor": "1"});
        let record: ModelRecord = serde_json::from_value(json).unwrap();
        assert_eq!(record.numeric, NumericProfile::F32);
        assert_eq!(record.files, None);
        assert_eq!(record.lineage, Lineage::default());
        let with = r#"{"parents":[{"source":{"model":"base"},"weight_bps":6000},
            {"source":{"dataset":3},"weight_bps":4000}],"royalty_bps":2500}"#;
        let lineage: Lineage = serde_json::from_str(with).unwrap();
        assert_eq!(lineage.parents[1].source, Source::Dataset(3));
        assert_eq!(lineage.check("child"), Ok(()));
        let bytes = lineage.to_bytes();
        assert_eq!(Lineage::decode(&mut Reader::new(&bytes)).unwrap(), lineage);
    }
}

//! Model weights as f32 tensors, and their commitment. The commitment's format (a Merkle tree
//! over fixed-size chunks of one canonical blob, with slice proofs) lives in piazza-trace
//! ([`piazza_trace::weights`], re-exported here); this module holds the tensors and feeds them
//! to it.

use std::collections::BTreeMap;
use std::ops::Range;

use piazza_tensor::Tensor;
use piazza_trace::weights::{self as commitment, ChunkHasher};
pub use piazza_trace::weights::{
    chunk_count, commitment_root, ChunkProof, CommitmentError, ManifestEntry, WeightCommitment,
    BLOB_BYTES_MAX, MANIFEST_ENTRIES_MAX, MANIFEST_NAME_BYTES_MAX, MANIFEST_RANK_MAX,
    WEIGHT_CHUNK_BYTES, WEIGHT_DOMAIN,
};

use crate::safetensors::SafeTensors;
use crate::{Error, Result};

/// The float tensors of a model, by name.
#[derive(Debug, Clone)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
}

impl Weights {
    /// Every float (F32/F16/BF16) tensor of the file, converted exactly to f32.
    /// Integer tensors (such as BERT's `position_ids` buffer) are not weights and are skipped.
    pub fn from_safetensors(file: &SafeTensors) -> Result<Weights> {
        let mut tensors = BTreeMap::new();
        for (name, info) in file.tensors() {
            if info.dtype.is_float() {
                tensors.insert(name.clone(), file.to_f32(name)?);
            }
        }
        Ok(Weights { tensors })
    }

    pub fn from_tensors(tensors: BTreeMap<String, Tensor>) -> Weights {
        Weights { tensors }
    }

    /// The tensor `name`, which must have shape `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        let tensor = self.tensors.get(name).ok_or_else(|| Error::MissingWeight {
            name: name.to_string(),
        })?;
        if tensor.shape() != shape {
            return Err(Error::WeightShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: tensor.shape().to_vec(),
            });
        }
        Ok(tensor)
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The manifest of the canonical blob.
    pub fn manifest(&self) -> Vec<ManifestEntry> {
        commitment::manifest(
            self.tensors
                .iter()
                .map(|(name, tensor)| (name.as_str(), tensor.shape())),
        )
    }

    /// Canonical bytes of the manifest ([`piazza_trace::weights::manifest_bytes`]).
    pub fn manifest_bytes(&self) -> Vec<u8> {
        commitment::manifest_bytes(&self.manifest())
    }

    /// Build the commitment (hashes every weight byte once, streamed: the blob is never held
    /// whole).
    pub fn commit(&self) -> WeightCommitment {
        let mut hasher = ChunkHasher::new();
        for tensor in self.tensors.values() {
            match tensor.as_slice() {
                Some(values) => hasher.push_f32s(values),
                None => hasher.push_f32s(&tensor.to_vec()),
            }
        }
        WeightCommitment::new(self.manifest(), hasher.finish())
    }

    /// The bytes of chunk `index` of the canonical blob (`None` past the end).
    pub fn chunk(&self, index: usize) -> Option<Vec<u8>> {
        let start = index.checked_mul(WEIGHT_CHUNK_BYTES)?;
        let end = start.checked_add(WEIGHT_CHUNK_BYTES)?;
        let mut bytes = Vec::new();
        let mut offset = 0usize;
        for tensor in self.tensors.values() {
            let len = tensor.element_count() * 4;
            let (from, to) = (start.max(offset), end.min(offset + len));
            if from < to {
                let elements = (from - offset) / 4..(to - offset) / 4;
                let mut push = |values: &[f32]| {
                    for value in &values[elements.clone()] {
                        bytes.extend_from_slice(&value.to_le_bytes());
                    }
                };
                match tensor.as_slice() {
                    Some(values) => push(values),
                    None => push(&tensor.to_vec()),
                }
            }
            offset += len;
            if offset >= end {
                break;
            }
        }
        (!bytes.is_empty()).then_some(bytes)
    }

    /// Proofs under `commitment` (this model's) of the chunks holding elements `elements` of
    /// tensor `name`.
    pub fn prove_slice(
        &self,
        commitment: &WeightCommitment,
        name: &str,
        elements: Range<usize>,
    ) -> Result<Vec<ChunkProof>> {
        commitment
            .prove_slice(
                |index| self.chunk(usize::try_from(index).ok()?),
                name,
                elements,
            )
            .map_err(commitment_error)
    }
}

fn commitment_error(error: CommitmentError) -> Error {
    match error {
        CommitmentError::MissingWeight { name } => Error::MissingWeight { name },
        other => Error::Input {
            detail: other.to_string(),
        },
    }
}

/// [`piazza_trace::weights::parse_manifest`], with this crate's error.
pub fn parse_manifest(bytes: &[u8]) -> Result<(Vec<ManifestEntry>, u64)> {
    commitment::parse_manifest(bytes).map_err(commitment_error)
}

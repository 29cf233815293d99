//! Model weights as f32 tensors, and their commitment: a Merkle tree over fixed-size chunks.
//!
//! Canonical weight bytes: every float tensor of the file, in name (byte) order, each as its
//! little-endian f32 values in row-major order, concatenated. The manifest lists, in the same
//! order, `name`, `shape` and the byte offset of each tensor in that blob. The commitment is
//!
//! `BLAKE3(0x03 ‖ "piazza.weights.v1" ‖ BLAKE3(manifest bytes) ‖ chunk root)`
//!
//! where the chunk root is [`crate::merkle::root`] in domain [`WEIGHT_DOMAIN`] over the blob cut
//! into [`WEIGHT_CHUNK_BYTES`] chunks (the last may be shorter). Any slice of any tensor is
//! proven by the chunks that cover it and their inclusion proofs.

use std::collections::BTreeMap;
use std::ops::Range;

use piazza_tensor::Tensor;

use crate::merkle::{self, Hash, Proof};
use crate::safetensors::SafeTensors;
use crate::{Error, Result};

/// Bytes per weight chunk.
pub const WEIGHT_CHUNK_BYTES: usize = 64 * 1024;
/// Merkle domain of weight chunks.
pub const WEIGHT_DOMAIN: &str = "piazza.weights.v1";

/// One tensor's place in the canonical weight blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    pub name: String,
    pub shape: Vec<usize>,
    /// Byte offset of the tensor's first element in the canonical blob.
    pub offset: u64,
}

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
        let mut offset = 0u64;
        self.tensors
            .iter()
            .map(|(name, tensor)| {
                let entry = ManifestEntry {
                    name: name.clone(),
                    shape: tensor.shape().to_vec(),
                    offset,
                };
                offset += tensor.element_count() as u64 * 4;
                entry
            })
            .collect()
    }

    /// Canonical bytes of the manifest: count, then per entry name length (u32), name,
    /// rank (u32), dims (u64 each) and offset (u64), all little-endian.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        let manifest = self.manifest();
        let mut bytes = (manifest.len() as u64).to_le_bytes().to_vec();
        for entry in &manifest {
            bytes.extend_from_slice(&(entry.name.len() as u32).to_le_bytes());
            bytes.extend_from_slice(entry.name.as_bytes());
            bytes.extend_from_slice(&(entry.shape.len() as u32).to_le_bytes());
            for &dim in &entry.shape {
                bytes.extend_from_slice(&(dim as u64).to_le_bytes());
            }
            bytes.extend_from_slice(&entry.offset.to_le_bytes());
        }
        bytes
    }

    /// The canonical blob, cut into chunks (streamed: never held whole).
    fn for_each_chunk(&self, mut visit: impl FnMut(usize, &[u8])) {
        let mut chunk = Vec::with_capacity(WEIGHT_CHUNK_BYTES);
        let mut index = 0;
        for tensor in self.tensors.values() {
            for value in tensor.to_vec() {
                chunk.extend_from_slice(&value.to_le_bytes());
                if chunk.len() == WEIGHT_CHUNK_BYTES {
                    visit(index, &chunk);
                    index += 1;
                    chunk.clear();
                }
            }
        }
        if !chunk.is_empty() {
            visit(index, &chunk);
        }
    }

    /// Build the commitment (hashes every weight byte once).
    pub fn commit(&self) -> WeightCommitment {
        let mut leaves = Vec::new();
        self.for_each_chunk(|index, chunk| {
            leaves.push(merkle::leaf_hash(WEIGHT_DOMAIN, index as u64, chunk))
        });
        let manifest_hash = *blake3::hash(&self.manifest_bytes()).as_bytes();
        let chunk_root = merkle::root(WEIGHT_DOMAIN, &leaves);
        WeightCommitment {
            root: commitment_root(&manifest_hash, &chunk_root),
            manifest_hash,
            chunk_root,
            chunk_leaves: leaves,
            manifest: self.manifest(),
        }
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
}

/// Most entries, name bytes and dimensions per entry [`parse_manifest`] accepts.
pub const MANIFEST_ENTRIES_MAX: usize = 1 << 16;
pub const MANIFEST_NAME_BYTES_MAX: usize = 1024;
pub const MANIFEST_RANK_MAX: usize = 8;
/// Largest canonical weight blob a manifest may describe (1 TiB).
pub const BLOB_BYTES_MAX: u64 = 1 << 40;

/// Read manifest bytes as [`Weights::manifest_bytes`] writes them, with limits: names in
/// strictly increasing byte order, each tensor at the offset where the previous one ends.
/// Returns the entries and the blob's length in bytes. Bytes that are not exactly a canonical
/// manifest give an error (never a panic).
pub fn parse_manifest(bytes: &[u8]) -> Result<(Vec<ManifestEntry>, u64)> {
    let fail = |detail: String| Error::Input {
        detail: format!("weight manifest: {detail}"),
    };
    let mut rest = bytes;
    let mut take = |len: usize| -> Result<&[u8]> {
        if rest.len() < len {
            return Err(fail("truncated".into()));
        }
        let (head, tail) = rest.split_at(len);
        rest = tail;
        Ok(head)
    };
    let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let count = u64_at(take(8)?);
    if count > MANIFEST_ENTRIES_MAX as u64 {
        return Err(fail(format!(
            "{count} entries, more than {MANIFEST_ENTRIES_MAX}"
        )));
    }
    let mut entries: Vec<ManifestEntry> = Vec::new();
    let mut offset = 0u64;
    for _ in 0..count {
        let name_len = u32_at(take(4)?) as usize;
        if name_len > MANIFEST_NAME_BYTES_MAX {
            return Err(fail(format!("name of {name_len} bytes")));
        }
        let name = std::str::from_utf8(take(name_len)?)
            .map_err(|_| fail("name is not UTF-8".into()))?
            .to_string();
        if entries.last().is_some_and(|last| last.name >= name) {
            return Err(fail(format!("{name:?} out of order")));
        }
        let rank = u32_at(take(4)?) as usize;
        if rank > MANIFEST_RANK_MAX {
            return Err(fail(format!("{name:?} has rank {rank}")));
        }
        let mut shape = Vec::with_capacity(rank);
        let mut elements = 1u64;
        for _ in 0..rank {
            let dim = u64_at(take(8)?);
            elements = elements
                .checked_mul(dim)
                .filter(|&e| e <= BLOB_BYTES_MAX / 4)
                .ok_or_else(|| fail(format!("{name:?} is too large")))?;
            shape.push(usize::try_from(dim).map_err(|_| fail(format!("{name:?} is too large")))?);
        }
        let entry_offset = u64_at(take(8)?);
        if entry_offset != offset {
            return Err(fail(format!(
                "{name:?} at offset {entry_offset}, expected {offset}"
            )));
        }
        offset = offset
            .checked_add(elements * 4)
            .filter(|&end| end <= BLOB_BYTES_MAX)
            .ok_or_else(|| fail("blob too large".into()))?;
        entries.push(ManifestEntry {
            name,
            shape,
            offset: entry_offset,
        });
    }
    if !rest.is_empty() {
        return Err(fail(format!("{} trailing bytes", rest.len())));
    }
    Ok((entries, offset))
}

/// Number of [`WEIGHT_CHUNK_BYTES`] chunks of a blob of `blob_bytes` bytes.
pub fn chunk_count(blob_bytes: u64) -> u64 {
    blob_bytes.div_ceil(WEIGHT_CHUNK_BYTES as u64)
}

/// The weight commitment from its two parts:
/// `BLAKE3(0x03 ‖ WEIGHT_DOMAIN ‖ manifest_hash ‖ chunk_root)`.
pub fn commitment_root(manifest_hash: &Hash, chunk_root: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0x03]);
    hasher.update(WEIGHT_DOMAIN.as_bytes());
    hasher.update(manifest_hash);
    hasher.update(chunk_root);
    *hasher.finalize().as_bytes()
}

/// The weight commitment, with what is needed to prove slices.
#[derive(Clone, Debug)]
pub struct WeightCommitment {
    /// The 32-byte commitment to the model's weights.
    pub root: Hash,
    pub manifest_hash: Hash,
    pub chunk_root: Hash,
    pub chunk_leaves: Vec<Hash>,
    pub manifest: Vec<ManifestEntry>,
}

/// A chunk of the canonical weight blob with its inclusion proof.
#[derive(Clone, Debug)]
pub struct ChunkProof {
    pub index: u64,
    pub bytes: Vec<u8>,
    pub proof: Proof,
}

impl WeightCommitment {
    /// Byte range of elements `elements` of tensor `name` in the canonical blob.
    pub fn byte_range(&self, name: &str, elements: Range<usize>) -> Result<Range<u64>> {
        let entry = self
            .manifest
            .iter()
            .find(|entry| entry.name == name)
            .ok_or_else(|| Error::MissingWeight {
                name: name.to_string(),
            })?;
        let count: usize = entry.shape.iter().product();
        if elements.start > elements.end || elements.end > count {
            return Err(Error::Input {
                detail: format!("elements {elements:?} outside {name} of {count}"),
            });
        }
        Ok(entry.offset + elements.start as u64 * 4..entry.offset + elements.end as u64 * 4)
    }

    /// Chunk indices covering a byte range of the blob.
    pub fn chunks_covering(bytes: &Range<u64>) -> Range<u64> {
        let chunk = WEIGHT_CHUNK_BYTES as u64;
        if bytes.start >= bytes.end {
            return 0..0;
        }
        bytes.start / chunk..bytes.end.div_ceil(chunk)
    }

    /// Proofs of the chunks holding elements `elements` of tensor `name`.
    pub fn prove_slice(
        &self,
        weights: &Weights,
        name: &str,
        elements: Range<usize>,
    ) -> Result<Vec<ChunkProof>> {
        let range = self.byte_range(name, elements)?;
        Self::chunks_covering(&range)
            .map(|index| {
                let bytes = weights.chunk(index as usize).ok_or_else(|| Error::Input {
                    detail: format!("no weight chunk {index}"),
                })?;
                let proof = merkle::prove(&self.chunk_leaves, index as usize).ok_or_else(|| {
                    Error::Input {
                        detail: format!("no weight chunk {index}"),
                    }
                })?;
                Ok(ChunkProof {
                    index,
                    bytes,
                    proof,
                })
            })
            .collect()
    }

    /// Check chunk proofs against `chunk_root` and return the f32 values of the byte range.
    pub fn verify_slice(
        chunk_root: &Hash,
        chunk_count: u64,
        bytes: Range<u64>,
        proofs: &[ChunkProof],
    ) -> Option<Vec<f32>> {
        let wanted = Self::chunks_covering(&bytes);
        if proofs.len() as u64 != wanted.end - wanted.start {
            return None;
        }
        let mut blob = Vec::new();
        for (expected_index, chunk) in wanted.clone().zip(proofs) {
            let leaf = merkle::leaf_hash(WEIGHT_DOMAIN, chunk.index, &chunk.bytes);
            let valid = chunk.index == expected_index
                && merkle::verify(
                    WEIGHT_DOMAIN,
                    chunk_root,
                    chunk_count,
                    chunk.index,
                    &leaf,
                    &chunk.proof,
                );
            if !valid {
                return None;
            }
            blob.extend_from_slice(&chunk.bytes);
        }
        let start = usize::try_from(bytes.start - wanted.start * WEIGHT_CHUNK_BYTES as u64).ok()?;
        let end = start + usize::try_from(bytes.end - bytes.start).ok()?;
        let slice = blob.get(start..end)?;
        Some(
            slice
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }
}

//! The commitment to a model's weights: a Merkle tree over fixed-size chunks of one canonical
//! blob, with slice proofs.
//!
//! Canonical weight bytes: every float tensor of the model, in name (byte) order, each as its
//! little-endian f32 values in row-major order, concatenated. The manifest lists, in the same
//! order, `name`, `shape` and the byte offset of each tensor in that blob. The commitment is
//!
//! `BLAKE3(0x03 ‖ "piazza.weights.v1" ‖ BLAKE3(manifest bytes) ‖ chunk root)`
//!
//! where the chunk root is [`merkle::root`] in domain [`WEIGHT_DOMAIN`] over the blob cut into
//! [`WEIGHT_CHUNK_BYTES`] chunks (the last may be shorter). Any slice of any tensor is proven
//! by the chunks that cover it and their inclusion proofs.

use std::ops::Range;

use crate::merkle::{self, Hash, Proof};

/// Bytes per weight chunk.
pub const WEIGHT_CHUNK_BYTES: usize = 64 * 1024;
/// Merkle domain of weight chunks.
pub const WEIGHT_DOMAIN: &str = "piazza.weights.v1";
/// Most entries, name bytes and dimensions per entry [`parse_manifest`] accepts.
pub const MANIFEST_ENTRIES_MAX: usize = 1 << 16;
pub const MANIFEST_NAME_BYTES_MAX: usize = 1024;
pub const MANIFEST_RANK_MAX: usize = 8;
/// Largest canonical weight blob a manifest may describe (1 TiB).
pub const BLOB_BYTES_MAX: u64 = 1 << 40;

/// Why a manifest, a slice or a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitmentError {
    #[error("weight manifest: {0}")]
    Manifest(String),
    #[error("weight {name:?} missing")]
    MissingWeight { name: String },
    #[error("elements {elements:?} outside {name} of {count}")]
    Elements {
        name: String,
        elements: Range<usize>,
        count: usize,
    },
    #[error("no weight chunk {0}")]
    NoChunk(u64),
    #[error("weight chunk {index}: {detail}")]
    Chunk { index: u64, detail: String },
}

/// One tensor's place in the canonical weight blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    pub name: String,
    pub shape: Vec<usize>,
    /// Byte offset of the tensor's first element in the canonical blob.
    pub offset: u64,
}

/// The manifest of tensors given in name order as `(name, shape)`.
pub fn manifest<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize])>,
) -> Vec<ManifestEntry> {
    let mut offset = 0u64;
    tensors
        .into_iter()
        .map(|(name, shape)| {
            let entry = ManifestEntry {
                name: name.to_string(),
                shape: shape.to_vec(),
                offset,
            };
            offset += shape.iter().product::<usize>() as u64 * 4;
            entry
        })
        .collect()
}

/// Canonical bytes of a manifest: count, then per entry name length (u32), name, rank (u32),
/// dims (u64 each) and offset (u64), all little-endian.
pub fn manifest_bytes(manifest: &[ManifestEntry]) -> Vec<u8> {
    let mut bytes = (manifest.len() as u64).to_le_bytes().to_vec();
    for entry in manifest {
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

/// Read manifest bytes as [`manifest_bytes`] writes them, with limits: names in strictly
/// increasing byte order, each tensor at the offset where the previous one ends. Returns the
/// entries and the blob's length in bytes. Bytes that are not exactly a canonical manifest give
/// an error (never a panic).
pub fn parse_manifest(bytes: &[u8]) -> Result<(Vec<ManifestEntry>, u64), CommitmentError> {
    let fail = CommitmentError::Manifest;
    let mut rest = bytes;
    let mut take = |len: usize| -> Result<&[u8], CommitmentError> {
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

/// Chunk indices covering a byte range of the blob.
pub fn chunks_covering(bytes: &Range<u64>) -> Range<u64> {
    let chunk = WEIGHT_CHUNK_BYTES as u64;
    if bytes.start >= bytes.end {
        return 0..0;
    }
    bytes.start / chunk..bytes.end.div_ceil(chunk)
}

/// The hash of a manifest's canonical bytes, the first part of the commitment.
pub fn manifest_hash(manifest_bytes: &[u8]) -> Hash {
    *blake3::hash(manifest_bytes).as_bytes()
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

/// Check that `bytes` are chunk `index` of a blob of `blob_bytes` bytes under `chunk_root`:
/// of canonical length (full, or the blob's tail for the last chunk) and proven by `siblings`.
pub fn verify_chunk(
    chunk_root: &Hash,
    blob_bytes: u64,
    index: u64,
    bytes: &[u8],
    siblings: &[Hash],
) -> Result<(), CommitmentError> {
    let count = chunk_count(blob_bytes);
    let start = index.saturating_mul(WEIGHT_CHUNK_BYTES as u64);
    let len = blob_bytes
        .saturating_sub(start)
        .min(WEIGHT_CHUNK_BYTES as u64);
    if index >= count || bytes.len() as u64 != len {
        return Err(CommitmentError::Chunk {
            index,
            detail: format!("{} bytes, expected {len} of {count} chunks", bytes.len()),
        });
    }
    let leaf = merkle::leaf_hash(WEIGHT_DOMAIN, index, bytes);
    let proof = Proof {
        siblings: siblings.to_vec(),
    };
    if !merkle::verify(WEIGHT_DOMAIN, chunk_root, count, index, &leaf, &proof) {
        return Err(CommitmentError::Chunk {
            index,
            detail: "not under the chunk root".into(),
        });
    }
    Ok(())
}

/// The leaf hashes of the canonical blob's chunks, fed value by value (the blob is never held
/// whole).
#[derive(Debug, Default)]
pub struct ChunkHasher {
    chunk: Vec<u8>,
    leaves: Vec<Hash>,
}

impl ChunkHasher {
    pub fn new() -> ChunkHasher {
        ChunkHasher {
            chunk: Vec::with_capacity(WEIGHT_CHUNK_BYTES),
            leaves: Vec::new(),
        }
    }

    /// Append the next values of the blob.
    pub fn push_f32s(&mut self, values: &[f32]) {
        for value in values {
            self.chunk.extend_from_slice(&value.to_le_bytes());
            if self.chunk.len() == WEIGHT_CHUNK_BYTES {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        let index = self.leaves.len() as u64;
        self.leaves
            .push(merkle::leaf_hash(WEIGHT_DOMAIN, index, &self.chunk));
        self.chunk.clear();
    }

    /// The chunk leaves, the last chunk possibly short.
    pub fn finish(mut self) -> Vec<Hash> {
        if !self.chunk.is_empty() {
            self.flush();
        }
        self.leaves
    }
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
    /// The commitment to a blob described by `manifest` whose chunks hash to `chunk_leaves`
    /// (from a [`ChunkHasher`]).
    pub fn new(manifest: Vec<ManifestEntry>, chunk_leaves: Vec<Hash>) -> WeightCommitment {
        let manifest_hash = manifest_hash(&manifest_bytes(&manifest));
        let chunk_root = merkle::root(WEIGHT_DOMAIN, &chunk_leaves);
        WeightCommitment {
            root: commitment_root(&manifest_hash, &chunk_root),
            manifest_hash,
            chunk_root,
            chunk_leaves,
            manifest,
        }
    }

    /// Byte range of elements `elements` of tensor `name` in the canonical blob.
    pub fn byte_range(
        &self,
        name: &str,
        elements: Range<usize>,
    ) -> Result<Range<u64>, CommitmentError> {
        let entry = self
            .manifest
            .iter()
            .find(|entry| entry.name == name)
            .ok_or_else(|| CommitmentError::MissingWeight {
                name: name.to_string(),
            })?;
        let count: usize = entry.shape.iter().product();
        if elements.start > elements.end || elements.end > count {
            return Err(CommitmentError::Elements {
                name: name.to_string(),
                elements,
                count,
            });
        }
        Ok(entry.offset + elements.start as u64 * 4..entry.offset + elements.end as u64 * 4)
    }

    /// Chunk indices covering a byte range of the blob.
    pub fn chunks_covering(bytes: &Range<u64>) -> Range<u64> {
        chunks_covering(bytes)
    }

    /// Proofs of the chunks holding elements `elements` of tensor `name`; `chunk(i)` gives the
    /// bytes of chunk `i` of the canonical blob.
    pub fn prove_slice(
        &self,
        chunk: impl Fn(u64) -> Option<Vec<u8>>,
        name: &str,
        elements: Range<usize>,
    ) -> Result<Vec<ChunkProof>, CommitmentError> {
        let range = self.byte_range(name, elements)?;
        chunks_covering(&range)
            .map(|index| {
                let bytes = chunk(index).ok_or(CommitmentError::NoChunk(index))?;
                let proof = usize::try_from(index)
                    .ok()
                    .and_then(|i| merkle::prove(&self.chunk_leaves, i))
                    .ok_or(CommitmentError::NoChunk(index))?;
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
        let wanted = chunks_covering(&bytes);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tensors whose blob spans three chunks, the last one short.
    fn model() -> (Vec<ManifestEntry>, Vec<f32>) {
        let floats = WEIGHT_CHUNK_BYTES / 4;
        let a: Vec<f32> = (0..floats + 5).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..floats).map(|i| -(i as f32)).collect();
        let shapes = [vec![floats + 5], vec![floats / 4, 4]];
        let manifest = manifest([("a", &shapes[0][..]), ("b", &shapes[1][..])]);
        (manifest, [a, b].concat())
    }

    fn chunk_of(blob: &[f32], index: u64) -> Option<Vec<u8>> {
        let floats = WEIGHT_CHUNK_BYTES / 4;
        let start = index as usize * floats;
        (start < blob.len()).then(|| {
            blob[start..(start + floats).min(blob.len())]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
    }

    #[test]
    fn manifests_round_trip_and_hostile_ones_are_refused() {
        let (manifest, blob) = model();
        let bytes = manifest_bytes(&manifest);
        assert_eq!(
            parse_manifest(&bytes).unwrap(),
            (manifest.clone(), blob.len() as u64 * 4)
        );
        for len in 0..bytes.len() {
            assert!(parse_manifest(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(parse_manifest(&trailing).is_err());
        let mut swapped = manifest.clone();
        swapped.swap(0, 1);
        assert!(parse_manifest(&manifest_bytes(&swapped)).is_err());
    }

    #[test]
    fn slices_and_chunks_prove_and_forgeries_fail() {
        let (manifest, blob) = model();
        let mut hasher = ChunkHasher::new();
        hasher.push_f32s(&blob[..10]);
        hasher.push_f32s(&blob[10..]);
        let commitment = WeightCommitment::new(manifest, hasher.finish());
        assert_eq!(commitment.chunk_leaves.len(), 3);
        let blob_bytes = blob.len() as u64 * 4;
        let count = chunk_count(blob_bytes);
        for (name, elements, offset) in [("a", 3..9, 0), ("b", 0..20, WEIGHT_CHUNK_BYTES / 4 + 5)] {
            let proofs = commitment
                .prove_slice(|i| chunk_of(&blob, i), name, elements.clone())
                .unwrap();
            let range = commitment.byte_range(name, elements.clone()).unwrap();
            let values = WeightCommitment::verify_slice(
                &commitment.chunk_root,
                count,
                range.clone(),
                &proofs,
            )
            .unwrap();
            assert_eq!(values, blob[offset + elements.start..offset + elements.end]);
            let mut forged = proofs.clone();
            forged[0].bytes[0] ^= 1;
            assert!(
                WeightCommitment::verify_slice(&commitment.chunk_root, count, range, &forged)
                    .is_none()
            );
        }
        for index in 0..count {
            let bytes = chunk_of(&blob, index).unwrap();
            let siblings = merkle::prove(&commitment.chunk_leaves, index as usize)
                .unwrap()
                .siblings;
            verify_chunk(&commitment.chunk_root, blob_bytes, index, &bytes, &siblings).unwrap();
            let short = &bytes[..bytes.len() - 4];
            assert!(
                verify_chunk(&commitment.chunk_root, blob_bytes, index, short, &siblings).is_err()
            );
        }
        assert!(commitment.byte_range("a", 0..usize::MAX).is_err());
        assert!(commitment.byte_range("c", 0..1).is_err());
    }
}

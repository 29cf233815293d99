//! The evidence for one step and its canonical encoding.
//!
//! Layout (all integers little-endian, every length a `u32` prefix):
//! `step u64 ‖ config ‖ manifest ‖ chunk_root [32] ‖ ids (count, u32 each) ‖
//!  leaves (count, each: index u64, rows u32, columns u32, values (count, f32 bits each),
//!  siblings (count, 32 bytes each)) ‖ chunks (count, each: index u64, bytes, siblings)`.
//! There is one encoding per value: [`Evidence::decode`] rejects trailing bytes, so decoding
//! and encoding again gives back the input.

use crate::{ArbiterError, Hash};

/// Largest encoded evidence accepted (12 MiB).
pub const EVIDENCE_BYTES_MAX: usize = 12 * 1024 * 1024;
/// Most sibling hashes in one Merkle proof (a tree of at most 2^64 leaves).
pub const SIBLINGS_MAX: usize = 64;

/// A step's output block in the trace, and its Merkle proof.
#[derive(Clone, Debug, PartialEq)]
pub struct LeafOpening {
    pub index: u64,
    pub rows: u32,
    pub columns: u32,
    /// `rows × columns` values, row-major.
    pub values: Vec<f32>,
    pub siblings: Vec<Hash>,
}

/// A chunk of the canonical weight blob, and its Merkle proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkOpening {
    pub index: u64,
    pub bytes: Vec<u8>,
    pub siblings: Vec<Hash>,
}

/// Everything needed to re-execute step `step` of a disputed run, checked against the
/// model's commitments and the provider's trace root.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub step: u64,
    /// The bytes whose hash is the model's config hash.
    pub config: Vec<u8>,
    /// The weight manifest bytes (`piazza_engine::weights::Weights::manifest_bytes`).
    pub manifest: Vec<u8>,
    pub chunk_root: Hash,
    /// The token ids of the run (embedding: the text's ids; generation: the prompt ids).
    pub ids: Vec<u32>,
    /// The output blocks of the earlier steps this step reads, by increasing index.
    pub leaves: Vec<LeafOpening>,
    /// The weight chunks this step reads, by increasing index.
    pub chunks: Vec<ChunkOpening>,
}

impl Evidence {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.step.to_le_bytes());
        put_bytes(&mut out, &self.config);
        put_bytes(&mut out, &self.manifest);
        out.extend_from_slice(&self.chunk_root);
        put_len(&mut out, self.ids.len());
        for id in &self.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        put_len(&mut out, self.leaves.len());
        for leaf in &self.leaves {
            out.extend_from_slice(&leaf.index.to_le_bytes());
            out.extend_from_slice(&leaf.rows.to_le_bytes());
            out.extend_from_slice(&leaf.columns.to_le_bytes());
            put_len(&mut out, leaf.values.len());
            for value in &leaf.values {
                out.extend_from_slice(&value.to_bits().to_le_bytes());
            }
            put_hashes(&mut out, &leaf.siblings);
        }
        put_len(&mut out, self.chunks.len());
        for chunk in &self.chunks {
            out.extend_from_slice(&chunk.index.to_le_bytes());
            put_bytes(&mut out, &chunk.bytes);
            put_hashes(&mut out, &chunk.siblings);
        }
        out
    }

    /// Length of [`Evidence::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        let leaves: usize = self
            .leaves
            .iter()
            .map(|leaf| 8 + 4 + 4 + 4 + 4 * leaf.values.len() + 4 + 32 * leaf.siblings.len())
            .sum();
        let chunks: usize = self
            .chunks
            .iter()
            .map(|chunk| 8 + 4 + chunk.bytes.len() + 4 + 32 * chunk.siblings.len())
            .sum();
        8 + 4
            + self.config.len()
            + 4
            + self.manifest.len()
            + 32
            + 4
            + 4 * self.ids.len()
            + 4
            + leaves
            + 4
            + chunks
    }

    /// Read canonical bytes: at most [`EVIDENCE_BYTES_MAX`], every count checked against the
    /// bytes left before anything is allocated, no trailing bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Evidence, ArbiterError> {
        if bytes.len() > EVIDENCE_BYTES_MAX {
            return Err(encoding(format!(
                "{} bytes, more than {EVIDENCE_BYTES_MAX}",
                bytes.len()
            )));
        }
        let mut reader = Reader { rest: bytes };
        let step = reader.u64()?;
        let config = reader.bytes()?;
        let manifest = reader.bytes()?;
        let chunk_root = reader.hash()?;
        let id_count = reader.count(4)?;
        let mut ids = Vec::with_capacity(id_count);
        for _ in 0..id_count {
            ids.push(reader.u32()?);
        }
        // A leaf is at least 28 bytes, a chunk at least 16.
        let leaf_count = reader.count(28)?;
        let mut leaves = Vec::with_capacity(leaf_count);
        for _ in 0..leaf_count {
            let index = reader.u64()?;
            let rows = reader.u32()?;
            let columns = reader.u32()?;
            let value_count = reader.count(4)?;
            let mut values = Vec::with_capacity(value_count);
            for _ in 0..value_count {
                values.push(f32::from_bits(reader.u32()?));
            }
            let siblings = reader.hashes()?;
            leaves.push(LeafOpening {
                index,
                rows,
                columns,
                values,
                siblings,
            });
        }
        let chunk_count = reader.count(16)?;
        let mut chunks = Vec::with_capacity(chunk_count);
        for _ in 0..chunk_count {
            let index = reader.u64()?;
            let bytes = reader.bytes()?;
            let siblings = reader.hashes()?;
            chunks.push(ChunkOpening {
                index,
                bytes,
                siblings,
            });
        }
        if !reader.rest.is_empty() {
            return Err(encoding(format!("{} trailing bytes", reader.rest.len())));
        }
        Ok(Evidence {
            step,
            config,
            manifest,
            chunk_root,
            ids,
            leaves,
            chunks,
        })
    }
}

fn encoding(detail: String) -> ArbiterError {
    ArbiterError::Encoding(detail)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("evidence parts are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_hashes(out: &mut Vec<u8>, hashes: &[Hash]) {
    put_len(out, hashes.len());
    for hash in hashes {
        out.extend_from_slice(hash);
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], ArbiterError> {
        if self.rest.len() < len {
            return Err(encoding(format!(
                "truncated: {len} bytes wanted, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ArbiterError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u32(&mut self) -> Result<u32, ArbiterError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ArbiterError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn hash(&mut self) -> Result<Hash, ArbiterError> {
        self.array()
    }

    /// A `u32` count of items of at least `item_bytes` bytes each, checked against the bytes
    /// left (so that no allocation exceeds the input's size).
    fn count(&mut self, item_bytes: usize) -> Result<usize, ArbiterError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(item_bytes) > self.rest.len() {
            return Err(encoding(format!(
                "{count} items of {item_bytes}+ bytes in {} bytes",
                self.rest.len()
            )));
        }
        Ok(count)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, ArbiterError> {
        let len = self.count(1)?;
        Ok(self.take(len)?.to_vec())
    }

    fn hashes(&mut self) -> Result<Vec<Hash>, ArbiterError> {
        let count = self.count(32)?;
        if count > SIBLINGS_MAX {
            return Err(encoding(format!(
                "{count} siblings, more than {SIBLINGS_MAX}"
            )));
        }
        (0..count).map(|_| self.hash()).collect()
    }
}

//! The evidence for one step and its canonical encoding.
//!
//! Layout (all integers little-endian, every length a `u32` prefix):
//! `step u64 ‖ config ‖ manifest ‖ chunk_root [32] ‖ ids (count, u32 each) ‖
//!  leaves (count, each: index u64, rows u32, columns u32, values (count, f32 bits each),
//!  siblings (count, 32 bytes each)) ‖ chunks (count, each: index u64, bytes, siblings)
//!  [‖ tokenizer]`. The tokenizer (a length-prefixed, non-empty byte string) is present only in
//! the evidence for a constrained job's sample step, whose token mask needs the vocabulary
//! (docs/grammar.md); every other step's evidence ends after its chunks, as before.
//! There is one encoding per value: [`Evidence::decode`] rejects trailing bytes, so decoding
//! and encoding again gives back the input.
//!
//! A length dispute's [`LengthEvidence`]: `config ‖ tokenizer ‖ ids (count, u32 each) ‖
//! samples (count, each a leaf as above)`, decoded under the same rules.

use piazza_codec::{DecodeError, Reader, Writer};

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
    /// The tokenizer's metadata preimage (`piazza_llm::Tokenizer::metadata_preimage`, whose
    /// BLAKE3 is the model record's tokenizer hash) for a constrained job's sample step, whose
    /// mask reads every token's bytes; empty for every other step.
    pub tokenizer: Vec<u8>,
}

impl Evidence {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Writer::new();
        out.u64(self.step);
        out.bytes(&self.config);
        out.bytes(&self.manifest);
        out.array(&self.chunk_root);
        out.len(self.ids.len());
        for &id in &self.ids {
            out.u32(id);
        }
        out.len(self.leaves.len());
        for leaf in &self.leaves {
            put_leaf(&mut out, leaf);
        }
        out.len(self.chunks.len());
        for chunk in &self.chunks {
            out.u64(chunk.index);
            out.bytes(&chunk.bytes);
            put_hashes(&mut out, &chunk.siblings);
        }
        if !self.tokenizer.is_empty() {
            out.bytes(&self.tokenizer);
        }
        out.into_bytes()
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
        let tokenizer = match self.tokenizer.len() {
            0 => 0,
            len => 4 + len,
        };
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
            + tokenizer
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
        Self::read(&mut Reader::new(bytes)).map_err(|error| encoding(error.to_string()))
    }

    fn read(reader: &mut Reader<'_>) -> Result<Evidence, DecodeError> {
        let step = reader.u64()?;
        let config = reader.bytes(reader.remaining())?;
        let manifest = reader.bytes(reader.remaining())?;
        let chunk_root = reader.array()?;
        let ids = read_ids(reader)?;
        let leaves = read_leaves(reader)?;
        // A chunk is at least 16 bytes.
        let chunk_count = count(reader, 16)?;
        let mut chunks = Vec::with_capacity(chunk_count);
        for _ in 0..chunk_count {
            let index = reader.u64()?;
            let bytes = reader.bytes(reader.remaining())?;
            let siblings = hashes(reader)?;
            chunks.push(ChunkOpening {
                index,
                bytes,
                siblings,
            });
        }
        // Present only when non-empty: an empty one would be a second encoding of its absence.
        let tokenizer = if reader.remaining() > 0 {
            let tokenizer = reader.bytes(reader.remaining())?;
            if tokenizer.is_empty() {
                return Err(DecodeError::Invalid {
                    what: "evidence tokenizer",
                    reason: "empty (absent is its one encoding)".into(),
                });
            }
            tokenizer
        } else {
            Vec::new()
        };
        reader.finish()?;
        Ok(Evidence {
            step,
            config,
            manifest,
            chunk_root,
            ids,
            leaves,
            chunks,
            tokenizer,
        })
    }
}

/// What decides a length dispute (the parties agree on the ids and on every step both traces
/// have, and differ in where the generation stops): the model's config and tokenizer (checked
/// against the record), the prompt ids, and the sample step of every generated token of the
/// common prefix, each with its Merkle proof.
#[derive(Clone, Debug, PartialEq)]
pub struct LengthEvidence {
    /// The bytes whose hash is the model's config hash.
    pub config: Vec<u8>,
    /// The tokenizer's metadata preimage (`piazza_llm::Tokenizer::metadata_preimage`).
    pub tokenizer: Vec<u8>,
    /// The prompt ids.
    pub ids: Vec<u32>,
    /// The sample steps' `1 × 1` blocks (the token ids), by increasing index.
    pub samples: Vec<LeafOpening>,
}

impl LengthEvidence {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Writer::new();
        out.bytes(&self.config);
        out.bytes(&self.tokenizer);
        out.len(self.ids.len());
        for &id in &self.ids {
            out.u32(id);
        }
        out.len(self.samples.len());
        for leaf in &self.samples {
            put_leaf(&mut out, leaf);
        }
        out.into_bytes()
    }

    /// Read canonical bytes under the rules of [`Evidence::decode`]. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<LengthEvidence, ArbiterError> {
        if bytes.len() > EVIDENCE_BYTES_MAX {
            return Err(encoding(format!(
                "{} bytes, more than {EVIDENCE_BYTES_MAX}",
                bytes.len()
            )));
        }
        let read = |reader: &mut Reader<'_>| {
            let config = reader.bytes(reader.remaining())?;
            let tokenizer = reader.bytes(reader.remaining())?;
            let ids = read_ids(reader)?;
            let samples = read_leaves(reader)?;
            reader.finish()?;
            Ok::<_, DecodeError>(LengthEvidence {
                config,
                tokenizer,
                ids,
                samples,
            })
        };
        read(&mut Reader::new(bytes)).map_err(|error| encoding(error.to_string()))
    }
}

fn put_leaf(out: &mut Writer, leaf: &LeafOpening) {
    out.u64(leaf.index);
    out.u32(leaf.rows);
    out.u32(leaf.columns);
    out.len(leaf.values.len());
    for value in &leaf.values {
        out.u32(value.to_bits());
    }
    put_hashes(out, &leaf.siblings);
}

fn read_ids(reader: &mut Reader<'_>) -> Result<Vec<u32>, DecodeError> {
    let id_count = count(reader, 4)?;
    (0..id_count).map(|_| reader.u32()).collect()
}

fn read_leaves(reader: &mut Reader<'_>) -> Result<Vec<LeafOpening>, DecodeError> {
    // A leaf is at least 28 bytes.
    let leaf_count = count(reader, 28)?;
    let mut leaves = Vec::with_capacity(leaf_count);
    for _ in 0..leaf_count {
        let index = reader.u64()?;
        let rows = reader.u32()?;
        let columns = reader.u32()?;
        let value_count = count(reader, 4)?;
        let mut values = Vec::with_capacity(value_count);
        for _ in 0..value_count {
            values.push(f32::from_bits(reader.u32()?));
        }
        let siblings = hashes(reader)?;
        leaves.push(LeafOpening {
            index,
            rows,
            columns,
            values,
            siblings,
        });
    }
    Ok(leaves)
}

fn encoding(detail: String) -> ArbiterError {
    ArbiterError::Encoding(detail)
}

fn put_hashes(out: &mut Writer, hashes: &[Hash]) {
    out.len(hashes.len());
    for hash in hashes {
        out.array(hash);
    }
}

/// A `u32` count of items of at least `item_bytes` bytes each, checked against the bytes left
/// (so that no allocation exceeds the input's size).
fn count(reader: &mut Reader<'_>, item_bytes: usize) -> Result<usize, DecodeError> {
    reader.len(reader.remaining() / item_bytes)
}

/// A Merkle proof's siblings: at most [`SIBLINGS_MAX`].
fn hashes(reader: &mut Reader<'_>) -> Result<Vec<Hash>, DecodeError> {
    let count = reader.len(SIBLINGS_MAX.min(reader.remaining() / 32))?;
    (0..count).map(|_| reader.array()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Evidence {
        Evidence {
            step: 7,
            config: b"cfg".to_vec(),
            manifest: vec![9],
            chunk_root: [0xAB; 32],
            ids: vec![1, 0x0102_0304],
            leaves: vec![LeafOpening {
                index: 3,
                rows: 1,
                columns: 2,
                values: vec![1.5, -0.0],
                siblings: vec![[0x11; 32]],
            }],
            chunks: vec![ChunkOpening {
                index: 5,
                bytes: vec![0xEE; 3],
                siblings: vec![],
            }],
            tokenizer: Vec::new(),
        }
    }

    /// The layout in the module documentation, byte for byte: evidence is consensus (the
    /// ledger decodes what daemons encode), so the format must not move.
    #[test]
    fn the_encoding_is_pinned() {
        let le32 = |v: u32| v.to_le_bytes().to_vec();
        let le64 = |v: u64| v.to_le_bytes().to_vec();
        let expected: Vec<u8> = [
            le64(7),
            le32(3),
            b"cfg".to_vec(),
            le32(1),
            vec![9],
            vec![0xAB; 32],
            le32(2),
            le32(1),
            le32(0x0102_0304),
            le32(1),
            le64(3),
            le32(1),
            le32(2),
            le32(2),
            le32(1.5f32.to_bits()),
            le32((-0.0f32).to_bits()),
            le32(1),
            vec![0x11; 32],
            le32(1),
            le64(5),
            le32(3),
            vec![0xEE; 3],
            le32(0),
        ]
        .concat();
        let evidence = sample();
        assert_eq!(evidence.encode(), expected);
        assert_eq!(evidence.encoded_len(), expected.len());
        assert_eq!(Evidence::decode(&expected).unwrap(), evidence);
    }

    /// Every truncation, one trailing byte, and a sibling count past the limit are refused.
    #[test]
    fn hostile_bytes_are_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Evidence::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Evidence::decode(&trailing).is_err());
        let mut many = sample();
        many.chunks[0].siblings = vec![[0; 32]; SIBLINGS_MAX + 1];
        assert!(Evidence::decode(&many.encode()).is_err());
        many.chunks[0].siblings.pop();
        assert!(Evidence::decode(&many.encode()).is_ok());
    }

    /// A constrained sample step's evidence ends in its tokenizer (length-prefixed); the
    /// evidence without one is the pinned layout unchanged, and an empty tokenizer written out
    /// (a second encoding of none) or a cut one is refused.
    #[test]
    fn the_tokenizer_is_an_optional_tail() {
        let plain = sample().encode();
        let mut with = sample();
        with.tokenizer = b"tok".to_vec();
        let bytes = with.encode();
        assert_eq!(
            bytes,
            [plain.clone(), 3u32.to_le_bytes().to_vec(), b"tok".to_vec()].concat()
        );
        assert_eq!(with.encoded_len(), bytes.len());
        assert_eq!(Evidence::decode(&bytes).unwrap(), with);
        for len in plain.len() + 1..bytes.len() {
            assert!(Evidence::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let empty = [plain, 0u32.to_le_bytes().to_vec()].concat();
        assert!(Evidence::decode(&empty).is_err());
    }
}

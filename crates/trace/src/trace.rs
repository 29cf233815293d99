//! The trace of a run: one leaf hash per step, and their Merkle root.
//!
//! Canonical tensor bytes (what a leaf hashes, see docs/engine.md):
//! `rank as u32 LE ‖ each dim as u64 LE ‖ each element as f32 LE (row-major)`.
//! Leaf `i` = [`merkle::leaf_hash`] in domain [`TRACE_DOMAIN`] at index `i` over those bytes.

use crate::merkle::{self, Hash, Proof};

/// Merkle domain of trace leaves.
pub const TRACE_DOMAIN: &str = "piazza.trace.v1";

/// Floats converted per hasher update on big-endian targets (16 KiB: full SIMD width in BLAKE3).
#[cfg(not(target_endian = "little"))]
const HASH_BUFFER_FLOATS: usize = 4096;

/// The hashes of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Leaf hash of each step, in step order.
    pub step_hashes: Vec<Hash>,
    /// Merkle root over `step_hashes`.
    pub root: Hash,
}

impl Trace {
    pub fn from_leaves(step_hashes: Vec<Hash>) -> Trace {
        let root = merkle::root(TRACE_DOMAIN, &step_hashes);
        Trace { step_hashes, root }
    }

    /// Inclusion proof of step `index` (for the bisection game).
    pub fn proof(&self, index: usize) -> Option<Proof> {
        merkle::prove(&self.step_hashes, index)
    }

    /// Whether `leaf` is step `index` of a trace with `root` and `step_count` steps.
    pub fn verify(root: &Hash, step_count: u64, index: u64, leaf: &Hash, proof: &Proof) -> bool {
        merkle::verify(TRACE_DOMAIN, root, step_count, index, leaf, proof)
    }
}

/// The leaf hash of step `index` whose output is `values`, a `[rows, width]` block of row-major
/// values (given as a slice to avoid a copy).
pub fn step_hash(index: usize, values: &[f32], rows: usize, width: usize) -> Hash {
    shaped_step_hash(index, &[rows, width], values)
}

/// The leaf hash of step `index` whose output has shape `shape` (any rank) and row-major
/// `values`: the leaf over [`canonical_bytes`], streamed.
pub fn shaped_step_hash(index: usize, shape: &[usize], values: &[f32]) -> Hash {
    let mut hasher = merkle::leaf_hasher(TRACE_DOMAIN, index as u64);
    update_with_shape(&mut hasher, shape);
    update_with_f32s(&mut hasher, values);
    *hasher.finalize().as_bytes()
}

/// Canonical bytes of a tensor of shape `shape` with row-major `values` (shape header, then
/// little-endian f32 values).
pub fn canonical_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + shape.len() * 8 + values.len() * 4);
    bytes.extend_from_slice(&(shape.len() as u32).to_le_bytes());
    for &dim in shape {
        bytes.extend_from_slice(&(dim as u64).to_le_bytes());
    }
    for value in values {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

fn update_with_shape(hasher: &mut blake3::Hasher, shape: &[usize]) {
    hasher.update(&(shape.len() as u32).to_le_bytes());
    for &dim in shape {
        hasher.update(&(dim as u64).to_le_bytes());
    }
}

/// Feed `values` as little-endian f32 bytes.
#[cfg(target_endian = "little")]
fn update_with_f32s(hasher: &mut blake3::Hasher, values: &[f32]) {
    // SAFETY: f32 has no padding and every byte pattern is a valid u8; u8 needs no alignment;
    // the byte length is exactly 4 * values.len(). On little-endian targets these bytes are the
    // canonical little-endian encoding.
    let bytes =
        unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len() * 4) };
    hasher.update(bytes);
}

/// Feed `values` as little-endian f32 bytes.
#[cfg(not(target_endian = "little"))]
fn update_with_f32s(hasher: &mut blake3::Hasher, values: &[f32]) {
    let mut buffer = [0u8; HASH_BUFFER_FLOATS * 4];
    for chunk in values.chunks(HASH_BUFFER_FLOATS) {
        for (bytes, value) in buffer.chunks_exact_mut(4).zip(chunk) {
            bytes.copy_from_slice(&value.to_le_bytes());
        }
        hasher.update(&buffer[..chunk.len() * 4]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_and_whole_hashes_agree() {
        for len in [0usize, 1, 7, 1024, 1025, 3000] {
            let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let whole = merkle::leaf_hash(TRACE_DOMAIN, 3, &canonical_bytes(&[len, 1], &values));
            assert_eq!(step_hash(3, &values, len, 1), whole);
            assert_eq!(shaped_step_hash(3, &[len, 1], &values), whole);
            assert_ne!(step_hash(3, &values, len, 1), step_hash(4, &values, len, 1));
            assert_ne!(
                shaped_step_hash(3, &[len, 1], &values),
                shaped_step_hash(3, &[len], &values)
            );
        }
    }

    /// A leaf pinned by value: the trace format is consensus, so any change to it must show
    /// here (and in the engines' golden trace roots).
    #[test]
    fn the_leaf_format_is_pinned() {
        let leaf = step_hash(2, &[1.0, -0.5, 0.25, 3.0], 2, 2);
        let mut expected = blake3::Hasher::new();
        expected.update(&[0x00, TRACE_DOMAIN.len() as u8]);
        expected.update(TRACE_DOMAIN.as_bytes());
        expected.update(&2u64.to_le_bytes());
        expected.update(&2u32.to_le_bytes());
        expected.update(&2u64.to_le_bytes());
        expected.update(&2u64.to_le_bytes());
        for value in [1.0f32, -0.5, 0.25, 3.0] {
            expected.update(&value.to_le_bytes());
        }
        assert_eq!(leaf, *expected.finalize().as_bytes());
    }
}

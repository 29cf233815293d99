//! The trace of a run: one leaf hash per step, and their Merkle root. The format lives in
//! piazza-trace ([`piazza_trace::trace`]); this module adds the [`Tensor`] forms.

use piazza_tensor::Tensor;

use crate::merkle::Hash;
pub use piazza_trace::trace::{shaped_step_hash, step_hash, Trace, TRACE_DOMAIN};

/// Canonical bytes of any tensor (shape header, then little-endian f32 values).
pub fn canonical_bytes(tensor: &Tensor) -> Vec<u8> {
    piazza_trace::trace::canonical_bytes(tensor.shape(), &tensor.to_vec())
}

/// The leaf hash of step `index` with output `tensor` (any shape).
pub fn tensor_step_hash(index: usize, tensor: &Tensor) -> Hash {
    match tensor.as_slice() {
        Some(values) => shaped_step_hash(index, tensor.shape(), values),
        None => shaped_step_hash(index, tensor.shape(), &tensor.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;

    #[test]
    fn streamed_and_whole_hashes_agree() {
        for len in [0usize, 1, 7, 1024, 1025, 3000] {
            let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let tensor = Tensor::from_vec(values.clone(), &[len, 1]).unwrap();
            assert_eq!(step_hash(3, &values, len, 1), tensor_step_hash(3, &tensor));
            assert_eq!(
                merkle::leaf_hash(TRACE_DOMAIN, 3, &canonical_bytes(&tensor)),
                tensor_step_hash(3, &tensor)
            );
            assert_ne!(step_hash(3, &values, len, 1), step_hash(4, &values, len, 1));
        }
    }
}

//! An f32 tensor: shared storage plus a [`Layout`].

use std::cell::RefCell;
use std::sync::Arc;

use crate::layout::{element_count, Layout};
use crate::{Error, Result};

/// An immutable f32 tensor. Views (`transpose`, `narrow`, `reshape`) share storage;
/// [`Tensor::contiguous`] copies into row-major order (a copy is exact, so views never change bits).
#[derive(Clone, Debug)]
pub struct Tensor {
    /// The `Vec` an op wrote, shared as it is (a `Vec` moves into the `Arc` without a copy,
    /// which `Arc<[f32]>` would need).
    storage: Arc<Vec<f32>>,
    layout: Layout,
}

/// Smallest buffer worth keeping for reuse (smaller ones are cheap to allocate).
const RECYCLE_BYTES_MIN: usize = 256 << 10;
/// Most bytes, and most buffers, one thread keeps for reuse; a buffer that would exceed either
/// is freed instead of kept.
const RECYCLED_BYTES_MAX: usize = 64 << 20;
const RECYCLED_BUFFERS_MAX: usize = 8;

thread_local! {
    /// Storage of this thread's dropped tensors, for the next op outputs: a reused buffer is
    /// zeroed in place instead of mapping, faulting in and clearing fresh pages per op.
    static RECYCLED: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// `len` zeros: in the smallest buffer this thread recycled that holds them, else new.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    match recycled(len) {
        Some(mut buffer) => {
            buffer.clear();
            buffer.resize(len, 0.0);
            buffer
        }
        None => vec![0.0; len],
    }
}

/// `len` values for an op that writes every one of them: a recycled buffer holding what it
/// held (cut to `len`, or zeros past its old length), so nothing is cleared first; else new
/// zeros.
pub(crate) fn overwritten(len: usize) -> Vec<f32> {
    match recycled(len) {
        Some(mut buffer) => {
            buffer.resize(len, 0.0);
            buffer
        }
        None => vec![0.0; len],
    }
}

/// An empty vector with room for `len` values, for an op that writes every one of them: the
/// smallest buffer this thread recycled that holds them (not zeroed first), else new.
pub(crate) fn empty_buffer(len: usize) -> Vec<f32> {
    match recycled(len) {
        Some(mut buffer) => {
            buffer.clear();
            buffer
        }
        None => Vec::with_capacity(len),
    }
}

/// The smallest buffer this thread recycled that holds `len` values, as it was kept.
fn recycled(len: usize) -> Option<Vec<f32>> {
    if len.saturating_mul(4) < RECYCLE_BYTES_MIN {
        return None;
    }
    RECYCLED
        .try_with(|cell| {
            let mut list = cell.try_borrow_mut().ok()?;
            let best = (0..list.len())
                .filter(|&i| list[i].capacity() >= len)
                .min_by_key(|&i| list[i].capacity())?;
            Some(list.swap_remove(best))
        })
        .ok()
        .flatten()
}

/// Keeps `buffer` for [`zeroed`] when it is large enough and the thread's bounds allow, the
/// smallest kept buffers freed to make room (the cheapest to fault in again: the largest, an
/// audit's logits say, cost the most); otherwise frees it.
fn recycle(buffer: Vec<f32>) {
    let bytes = buffer.capacity().saturating_mul(4);
    if !(RECYCLE_BYTES_MIN..=RECYCLED_BYTES_MAX).contains(&bytes) {
        return;
    }
    // During thread teardown, or re-entered, the buffer is simply freed.
    let _ = RECYCLED.try_with(|cell| {
        if let Ok(mut list) = cell.try_borrow_mut() {
            list.push(buffer);
            let mut held: usize = list.iter().map(|b| b.capacity() * 4).sum();
            while list.len() > RECYCLED_BUFFERS_MAX || held > RECYCLED_BYTES_MAX {
                let Some(smallest) = (0..list.len()).min_by_key(|&i| list[i].capacity()) else {
                    break;
                };
                held -= list.swap_remove(smallest).capacity() * 4;
            }
        }
    });
}

impl Drop for Tensor {
    /// The last tensor on a storage hands it to [`recycle`].
    fn drop(&mut self) {
        if let Some(buffer) = Arc::get_mut(&mut self.storage) {
            recycle(std::mem::take(buffer));
        }
    }
}

impl Tensor {
    /// A row-major tensor owning `data`; `data.len()` must equal the product of `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let count = element_count(shape)?;
        if count != data.len() {
            return Err(Error::Shape {
                op: "from_vec",
                expected: shape.to_vec(),
                got: vec![data.len()],
            });
        }
        Ok(Self {
            storage: Arc::new(data),
            layout: Layout::contiguous(shape)?,
        })
    }

    pub fn zeros(shape: &[usize]) -> Result<Self> {
        let count = element_count(shape)?;
        Self::from_vec(zeroed(count), shape)
    }

    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn rank(&self) -> usize {
        self.layout.rank()
    }

    pub fn element_count(&self) -> usize {
        self.layout.element_count()
    }

    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// The elements in row-major order, borrowed when the tensor is contiguous.
    pub fn as_slice(&self) -> Option<&[f32]> {
        if !self.is_contiguous() {
            return None;
        }
        let start = self.layout.offset();
        self.storage.get(start..start + self.element_count())
    }

    /// The elements in row-major order (a copy).
    pub fn to_vec(&self) -> Vec<f32> {
        match self.as_slice() {
            Some(slice) => slice.to_vec(),
            None => self.layout.indices().map(|i| self.storage[i]).collect(),
        }
    }

    /// This tensor in row-major order: itself when already contiguous, otherwise a copy.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        let layout = Layout::contiguous(self.shape()).expect("shape was valid already");
        Tensor {
            storage: Arc::new(self.to_vec()),
            layout,
        }
    }

    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        Ok(Tensor {
            storage: self.storage.clone(),
            layout: self.layout.transpose(a, b)?,
        })
    }

    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        Ok(Tensor {
            storage: self.storage.clone(),
            layout: self.layout.narrow(axis, start, len)?,
        })
    }

    /// Reinterpret with a new shape; copies first when the tensor is not contiguous.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let base = self.contiguous();
        Ok(Tensor {
            layout: base.layout.reshape(shape)?,
            storage: Arc::clone(&base.storage),
        })
    }

    /// Rows `start..start + len` of a rank-2 tensor, as a contiguous tensor.
    pub fn rows(&self, start: usize, len: usize) -> Result<Tensor> {
        Ok(self.narrow(0, start, len)?.contiguous())
    }

    /// Canonical bytes: the little-endian f32 values in row-major order (see docs/engine.md).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.element_count() * 4);
        match self.as_slice() {
            Some(slice) => {
                for value in slice {
                    bytes.extend_from_slice(&value.to_le_bytes());
                }
            }
            None => {
                for index in self.layout.indices() {
                    bytes.extend_from_slice(&self.storage[index].to_le_bytes());
                }
            }
        }
        bytes
    }

    /// True when both tensors have the same shape and the same bits in every element.
    pub fn bits_eq(&self, other: &Tensor) -> bool {
        self.shape() == other.shape()
            && self
                .to_vec()
                .iter()
                .zip(other.to_vec())
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// The rank-2 view `[rows, cols]` of a contiguous tensor, or a shape error naming `op`.
    pub(crate) fn matrix(&self, op: &'static str) -> Result<(&[f32], usize, usize)> {
        if self.rank() != 2 {
            return Err(Error::Rank {
                op,
                expected: 2,
                shape: self.shape().to_vec(),
            });
        }
        let slice = self.as_slice().ok_or_else(|| Error::NotContiguous {
            op,
            shape: self.shape().to_vec(),
        })?;
        Ok((slice, self.shape()[0], self.shape()[1]))
    }

    /// The elements of a contiguous rank-1 tensor of length `len`.
    pub(crate) fn vector(&self, op: &'static str, len: usize) -> Result<&[f32]> {
        if self.shape() != [len] {
            return Err(Error::Shape {
                op,
                expected: vec![len],
                got: self.shape().to_vec(),
            });
        }
        self.as_slice().ok_or_else(|| Error::NotContiguous {
            op,
            shape: self.shape().to_vec(),
        })
    }
}

/// Exact conversion of an IEEE 754 binary16 bit pattern to f32 (every f16 is an f32).
pub fn f16_bits_to_f32(bits: u16) -> f32 {
    let sign = ((bits as u32) & 0x8000) << 16;
    let exponent = ((bits >> 10) & 0x1f) as u32;
    let mantissa = (bits & 0x3ff) as u32;
    let magnitude = match exponent {
        0 if mantissa == 0 => 0,
        0 => {
            // Subnormal f16: value = mantissa * 2^-24; normalise it for f32.
            let shift = mantissa.leading_zeros() - 21; // bring the top set bit to bit 10
            let mantissa = (mantissa << shift) & 0x3ff;
            let exponent = 127 - 15 + 1 - shift;
            (exponent << 23) | (mantissa << 13)
        }
        0x1f => 0x7f80_0000 | (mantissa << 13), // infinity or NaN (payload kept)
        _ => ((exponent + 127 - 15) << 23) | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// Exact conversion of a bfloat16 bit pattern to f32 (bf16 is the top half of an f32).
pub fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Floats in a buffer of `bytes`.
    fn floats(bytes: usize) -> usize {
        bytes / 4
    }

    /// A dropped op output's buffer is the next large output's, zeroed; a view keeps it alive.
    #[test]
    fn dropped_storage_is_reused_zeroed() {
        let len = floats(RECYCLE_BYTES_MIN) + 5;
        let tensor = Tensor::from_vec(vec![7.0; len], &[len]).unwrap();
        let address = tensor.as_slice().unwrap().as_ptr();
        let view = tensor.narrow(0, 1, 3).unwrap();
        drop(tensor);
        let other = zeroed(len);
        assert_ne!(other.as_ptr(), address, "a view still holds the storage");
        drop(view);
        let reused = zeroed(len - 3);
        assert_eq!(reused.as_ptr(), address);
        assert!(reused.iter().all(|&v| v.to_bits() == 0) && reused.len() == len - 3);
    }

    /// A large dropped buffer (an audit's logits) outlives the smaller ones dropped after it
    /// while the thread's bounds allow: the next output of its size reuses it instead of
    /// faulting in fresh pages; smaller ones make room by leaving, smallest first.
    #[test]
    fn the_largest_dropped_buffers_are_kept() {
        RECYCLED.with(|cell| cell.borrow_mut().clear());
        let small = floats(RECYCLE_BYTES_MIN);
        let large = 16 * small;
        let big = Tensor::from_vec(vec![1.0; large], &[large]).unwrap();
        let address = big.as_slice().unwrap().as_ptr();
        drop(big);
        // More small buffers than the thread keeps, all alive at once, then dropped.
        let smalls: Vec<Tensor> = (0..RECYCLED_BUFFERS_MAX + 3)
            .map(|i| Tensor::from_vec(vec![0.5; small + i], &[small + i]).unwrap())
            .collect();
        let kept_small: Vec<*const f32> = smalls[4..]
            .iter()
            .map(|t| t.as_slice().unwrap().as_ptr())
            .collect();
        drop(smalls);
        let kept: Vec<*const f32> =
            RECYCLED.with(|cell| cell.borrow().iter().map(|b| b.as_ptr()).collect());
        assert_eq!(kept.len(), RECYCLED_BUFFERS_MAX);
        assert!(kept.contains(&address), "the large buffer is kept");
        // The four smallest left: the others are kept.
        assert!(kept_small.iter().all(|p| kept.contains(p)));
        let reused = zeroed(large);
        assert_eq!(reused.as_ptr(), address);
        drop(reused);
        // Never past the byte bound: a buffer the size of the bound replaces every other.
        let bound = floats(RECYCLED_BYTES_MAX);
        drop(Tensor::from_vec(vec![0.0; bound], &[bound]).unwrap());
        RECYCLED.with(|cell| {
            let list = cell.borrow();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].capacity(), bound);
        });
    }

    /// An op that writes every output takes a dropped buffer as it is (not cleared): sums,
    /// products, RMS norms and rotations into buffers that held other values are exact.
    #[test]
    fn overwritten_outputs_reuse_storage_and_are_exact() {
        let (rows, n) = (64, floats(RECYCLE_BYTES_MIN) / 64 + 8);
        let len = rows * n;
        let values = |seed: f32| {
            (0..len)
                .map(|i| (i as f32 * seed).sin())
                .collect::<Vec<_>>()
        };
        let (xs, ys) = (values(0.37), values(1.91));
        let x = Tensor::from_vec(xs.clone(), &[rows, n]).unwrap();
        let y = Tensor::from_vec(ys.clone(), &[rows, n]).unwrap();
        let gamma = Tensor::from_vec(values(0.5)[..n].to_vec(), &[n]).unwrap();
        let compute = crate::Compute::new(1);
        let bits = |t: &Tensor| {
            t.as_slice()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        let mut expected = vec![0.0; len];
        for (op, reference) in [
            (
                crate::ops::add as fn(&Tensor, &Tensor, crate::Compute) -> crate::Result<Tensor>,
                crate::reference::add as fn(&[f32], &[f32], &mut [f32]),
            ),
            (crate::ops::mul, crate::reference::mul),
        ] {
            // A dropped buffer of stale values for the op's output, the only one kept.
            RECYCLED.with(|cell| cell.borrow_mut().clear());
            let stale = Tensor::from_vec(vec![f32::NAN; len + 3], &[len + 3]).unwrap();
            let address = stale.as_slice().unwrap().as_ptr();
            drop(stale);
            let out = op(&x, &y, compute).unwrap();
            assert_eq!(out.as_slice().unwrap().as_ptr(), address);
            reference(&xs, &ys, &mut expected);
            assert_eq!(
                bits(&out),
                bits(&Tensor::from_vec(expected.clone(), &[rows, n]).unwrap())
            );
        }
        drop(Tensor::from_vec(vec![f32::NAN; len], &[len]).unwrap());
        let normed = crate::ops::rmsnorm(&x, &gamma, 1e-5, compute).unwrap();
        let mut reference = vec![0.0; len];
        crate::reference::rmsnorm(&xs, gamma.as_slice().unwrap(), 1e-5, n, &mut reference);
        assert_eq!(
            bits(&normed),
            bits(&Tensor::from_vec(reference, &[rows, n]).unwrap())
        );
    }

    /// The per-thread bounds hold: buffers past the count or byte limit are freed, not kept.
    #[test]
    fn recycling_stops_at_its_bounds() {
        let held = || {
            RECYCLED.with(|cell| {
                cell.borrow()
                    .iter()
                    .map(|b| b.capacity() * 4)
                    .sum::<usize>()
            })
        };
        let count = || RECYCLED.with(|cell| cell.borrow().len());
        for _ in 0..RECYCLED_BUFFERS_MAX + 3 {
            drop(
                Tensor::from_vec(
                    vec![1.0; floats(RECYCLE_BYTES_MIN)],
                    &[floats(RECYCLE_BYTES_MIN)],
                )
                .unwrap(),
            );
        }
        assert_eq!(count(), RECYCLED_BUFFERS_MAX);
        RECYCLED.with(|cell| cell.borrow_mut().clear());
        let large = floats(RECYCLED_BYTES_MAX / 3);
        for _ in 0..4 {
            drop(Tensor::from_vec(vec![1.0; large], &[large]).unwrap());
        }
        assert_eq!(count(), 3);
        assert!(held() <= RECYCLED_BYTES_MAX);
        // Too small to keep.
        RECYCLED.with(|cell| cell.borrow_mut().clear());
        drop(Tensor::from_vec(vec![1.0; 16], &[16]).unwrap());
        assert_eq!(count(), 0);
    }

    /// An op's output becomes a tensor without a copy: the tensor reads the very buffer the op
    /// wrote.
    #[test]
    fn from_vec_keeps_the_buffer() {
        let data: Vec<f32> = (0..1024).map(|i| i as f32).collect();
        let address = data.as_ptr();
        let tensor = Tensor::from_vec(data, &[32, 32]).unwrap();
        assert_eq!(tensor.as_slice().unwrap().as_ptr(), address);
        assert_eq!(tensor.as_slice().unwrap()[33], 33.0);
    }
}

//! Shape and strides, apart from storage.

use crate::{Error, Result};

/// Most dimensions a tensor may have; every model we serve needs at most four.
pub const RANK_MAX: usize = 8;

/// Most elements one tensor may hold (2^32): keeps every index and byte count inside `u64`
/// and every `usize` product free of overflow on 64-bit targets.
pub const ELEMENTS_MAX: usize = 1 << 32;

/// Where the elements of a tensor lie in its storage: `element[i0, i1, ...]` is at
/// `offset + i0 * strides[0] + i1 * strides[1] + ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// A row-major (C order) layout for `shape`, starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Result<Self> {
        element_count(shape)?;
        let mut strides = vec![0; shape.len()];
        let mut stride = 1usize;
        for (axis, &dim) in shape.iter().enumerate().rev() {
            strides[axis] = stride;
            // Saturates only for tensors with a zero dimension, whose strides are never used.
            stride = stride.saturating_mul(dim);
        }
        Ok(Self {
            shape: shape.to_vec(),
            strides,
            offset: 0,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are in row-major order with no gaps (offset may be non-zero).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&dim, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if dim != 1 && stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }

    /// One past the largest storage index this layout touches (0 when empty).
    pub fn storage_end(&self) -> usize {
        if self.element_count() == 0 {
            return self.offset;
        }
        let last: usize = self
            .shape
            .iter()
            .zip(&self.strides)
            .map(|(&dim, &stride)| (dim - 1) * stride)
            .sum();
        self.offset + last + 1
    }

    /// The same storage seen with axes `a` and `b` swapped.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Self> {
        if a >= self.rank() || b >= self.rank() {
            return Err(Error::Axis {
                op: "transpose",
                axis: a.max(b),
                shape: self.shape.clone(),
            });
        }
        let mut out = self.clone();
        out.shape.swap(a, b);
        out.strides.swap(a, b);
        Ok(out)
    }

    /// Elements `start..start + len` along `axis`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Self> {
        let dim = *self.shape.get(axis).ok_or_else(|| Error::Axis {
            op: "narrow",
            axis,
            shape: self.shape.clone(),
        })?;
        let end = start.checked_add(len).filter(|&end| end <= dim);
        if end.is_none() {
            return Err(Error::Range {
                op: "narrow",
                start,
                len,
                shape: self.shape.clone(),
            });
        }
        let mut out = self.clone();
        out.offset += start * self.strides[axis];
        out.shape[axis] = len;
        Ok(out)
    }

    /// A contiguous layout reinterpreted with a new shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if !self.is_contiguous() {
            return Err(Error::NotContiguous {
                op: "reshape",
                shape: self.shape.clone(),
            });
        }
        if element_count(shape)? != self.element_count() {
            return Err(Error::Shape {
                op: "reshape",
                expected: self.shape.clone(),
                got: shape.to_vec(),
            });
        }
        let mut out = Self::contiguous(shape)?;
        out.offset = self.offset;
        Ok(out)
    }

    /// Storage indices of every element, in row-major order of the logical shape.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        let count = self.element_count();
        let mut index = vec![0usize; self.rank()];
        let mut position = self.offset;
        let mut produced = 0usize;
        std::iter::from_fn(move || {
            if produced == count {
                return None;
            }
            let current = position;
            produced += 1;
            // Advance the multi-index like an odometer.
            for axis in (0..index.len()).rev() {
                index[axis] += 1;
                position += self.strides[axis];
                if index[axis] < self.shape[axis] {
                    break;
                }
                position -= self.strides[axis] * self.shape[axis];
                index[axis] = 0;
            }
            Some(current)
        })
    }
}

/// The product of `shape`, or an error past [`ELEMENTS_MAX`] or [`RANK_MAX`].
pub fn element_count(shape: &[usize]) -> Result<usize> {
    if shape.len() > RANK_MAX {
        return Err(Error::TooLarge {
            op: "shape",
            shape: shape.to_vec(),
        });
    }
    let mut count = 1usize;
    for &dim in shape {
        count = count
            .checked_mul(dim)
            .filter(|&count| count <= ELEMENTS_MAX)
            .ok_or_else(|| Error::TooLarge {
                op: "shape",
                shape: shape.to_vec(),
            })?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use crate::{Error, Tensor};

    fn matrix() -> Tensor {
        Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap()
    }

    #[test]
    fn views_share_storage_and_copy_exactly() {
        let m = matrix();
        let t = m.transpose(0, 1).unwrap();
        assert!(!t.is_contiguous());
        assert_eq!(t.shape(), [3, 2]);
        assert_eq!(t.to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert!(t.contiguous().is_contiguous());
        let column = m.narrow(1, 1, 2).unwrap();
        assert_eq!(column.to_vec(), vec![1.0, 2.0, 4.0, 5.0]);
        let row = m.narrow(0, 1, 1).unwrap();
        assert!(row.is_contiguous());
        assert_eq!(row.as_slice().unwrap(), &[3.0, 4.0, 5.0]);
        assert_eq!(t.reshape(&[6]).unwrap().to_vec(), t.to_vec());
        assert_eq!(m.layout().storage_end(), 6);
    }

    #[test]
    fn bad_views_are_errors() {
        let m = matrix();
        assert!(matches!(m.transpose(0, 2), Err(Error::Axis { .. })));
        assert!(matches!(m.narrow(1, 2, 2), Err(Error::Range { .. })));
        assert!(matches!(
            m.narrow(1, usize::MAX, 2),
            Err(Error::Range { .. })
        ));
        assert!(matches!(m.reshape(&[4]), Err(Error::Shape { .. })));
        assert!(matches!(
            Tensor::zeros(&[1 << 20, 1 << 20]),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            Tensor::zeros(&[1; 9]),
            Err(Error::TooLarge { .. })
        ));
        assert!(Tensor::zeros(&[0, 1 << 31, 1 << 31]).is_ok());
    }
}

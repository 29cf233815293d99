//! Deterministic f32 tensor kernels: the same model and input give the same bits on every machine.
//!
//! # Invariants
//! - [`reference`] holds a plain scalar implementation of every operator; it is the
//!   specification. Every fast path in [`kernels`] (SIMD, tiles, threads, AVX2) returns exactly
//!   its bits, for every input, thread count and target CPU.
//! - Every reduction uses [`reference::LANES`] = 16 partial sums (element `i` into lane `i % 16`)
//!   and the fixed combine tree [`reference::combine`]. A reduction axis is never split across
//!   threads; threads only split output rows.
//! - Matrix products accumulate each output over `k` in order with fused multiply-add
//!   ([`reference::dot_fma`]); nowhere else is a product fused. No fast-math; `exp`, `erf`, `pow`, `sin`, `cos` come from the
//!   pure-Rust `libm` crate; `sqrt` is IEEE 754's correctly rounded square root.
//! - No panic on bad shapes: operators return [`Error`] naming the op and the shapes.
//!
//! This crate knows nothing of models, files or hashes: it is arithmetic only.
//!
//! # Example
//! ```
//! use piazza_tensor::{ops, Activation, Compute, Tensor};
//!
//! let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
//! let w = Tensor::from_vec(vec![1.0, 0.0, -1.0], &[1, 3]).unwrap();
//! let y1 = ops::linear(&x, &w, None, Activation::Identity, Compute::new(1)).unwrap();
//! let y2 = ops::linear(&x, &w, None, Activation::Identity, Compute::new(4)).unwrap();
//! assert_eq!(y1.to_vec(), vec![-2.0, -2.0]);
//! assert!(y1.bits_eq(&y2));
//! ```

// `a = a + b` is written out on purpose: it spells the floating-point operation order.
#![allow(clippy::assign_op_pattern)]

pub mod kernels;
pub mod layout;
pub mod ops;
pub mod pool;
pub mod quant;
pub mod reference;
mod tensor;

pub use kernels::{Compute, Isa, PackedB};
pub use layout::Layout;
pub use reference::Activation;
pub use tensor::{bf16_bits_to_f32, f16_bits_to_f32, Tensor};

/// What went wrong in a tensor operation; every variant names the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{op}: expected shape {expected:?}, got {got:?}")]
    Shape {
        op: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{op}: expected rank {expected}, got shape {shape:?}")]
    Rank {
        op: &'static str,
        expected: usize,
        shape: Vec<usize>,
    },
    #[error("{op}: axis {axis} out of range for shape {shape:?}")]
    Axis {
        op: &'static str,
        axis: usize,
        shape: Vec<usize>,
    },
    #[error("{op}: range {start}+{len} out of bounds for shape {shape:?}")]
    Range {
        op: &'static str,
        start: usize,
        len: usize,
        shape: Vec<usize>,
    },
    #[error("{op}: index {index} out of range (length {len})")]
    Index {
        op: &'static str,
        index: usize,
        len: usize,
    },
    #[error("{op}: tensor with shape {shape:?} is not contiguous")]
    NotContiguous { op: &'static str, shape: Vec<usize> },
    #[error("{op}: shape {shape:?} is too large")]
    TooLarge { op: &'static str, shape: Vec<usize> },
    #[error("{op}: {detail}")]
    Parameter { op: &'static str, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

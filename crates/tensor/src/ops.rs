//! Operators on [`Tensor`]s: shape checks, then the fast kernel.
//!
//! Every function here returns exactly the bits of its [`crate::reference`] counterpart, for
//! any [`Compute`] (thread count and instruction set).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::kernels::{self, AttentionShape, Compute, Linear, PackedB};
use crate::reference::{self, Activation};
use crate::{Error, Result, Tensor};

fn check_shape(op: &'static str, tensor: &Tensor, expected: &[usize]) -> Result<()> {
    if tensor.shape() != expected {
        return Err(Error::Shape {
            op,
            expected: expected.to_vec(),
            got: tensor.shape().to_vec(),
        });
    }
    Ok(())
}

fn contiguous_slice<'a>(op: &'static str, tensor: &'a Tensor) -> Result<&'a [f32]> {
    tensor.as_slice().ok_or_else(|| Error::NotContiguous {
        op,
        shape: tensor.shape().to_vec(),
    })
}

/// `act(x · wᵀ + bias)` for `x: [m, k]`, `w: [n, k]` (PyTorch's `Linear` weight layout), `bias: [n]`.
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    activation: Activation,
    compute: Compute,
) -> Result<Tensor> {
    linear_packed(x, w, None, bias, activation, compute)
}

/// [`linear`] with `w` also given packed ([`PackedB::new`] of `w`'s values, e.g. once at load):
/// the kernel skips packing `w` when `packed` fits the call. The same bits either way.
pub fn linear_packed(
    x: &Tensor,
    w: &Tensor,
    packed: Option<&PackedB>,
    bias: Option<&Tensor>,
    activation: Activation,
    compute: Compute,
) -> Result<Tensor> {
    const OP: &str = "linear";
    let (a, m, k) = x.matrix(OP)?;
    let (b, n, k_w) = w.matrix(OP)?;
    if k != k_w {
        return Err(Error::Shape {
            op: OP,
            expected: vec![n, k],
            got: w.shape().to_vec(),
        });
    }
    let bias = bias.map(|bias| bias.vector(OP, n)).transpose()?;
    // Every output is written (each panel's columns of every row).
    let mut out = crate::tensor::overwritten(m * n);
    let op = Linear {
        b,
        bias,
        activation,
        n,
        k,
    };
    kernels::linear_packed(&op, packed, a, &mut out, compute);
    Tensor::from_vec(out, &[m, n])
}

/// `a · bᵀ` for `a: [m, k]`, `b: [n, k]`.
pub fn matmul_nt(a: &Tensor, b: &Tensor, compute: Compute) -> Result<Tensor> {
    linear(a, b, None, Activation::Identity, compute)
}

/// `a · b` for `a: [m, k]`, `b: [k, n]` (`b` is transposed into a contiguous copy first; exact).
pub fn matmul(a: &Tensor, b: &Tensor, compute: Compute) -> Result<Tensor> {
    let b_t = b.transpose(0, 1)?.contiguous();
    matmul_nt(a, &b_t, compute)
}

fn binary(
    op: &'static str,
    x: &Tensor,
    y: &Tensor,
    compute: Compute,
    kernel: fn(&[f32], &[f32], &mut [f32], usize, Compute),
) -> Result<Tensor> {
    check_shape(op, y, x.shape())?;
    let (xs, ys) = (x.contiguous(), y.contiguous());
    let (xs, ys) = (contiguous_slice(op, &xs)?, contiguous_slice(op, &ys)?);
    // The kernel writes every output.
    let mut out = crate::tensor::overwritten(xs.len());
    let width = x.shape().last().copied().unwrap_or(1);
    kernel(xs, ys, &mut out, width, compute);
    Tensor::from_vec(out, x.shape())
}

/// Elementwise `x + y` (same shapes).
pub fn add(x: &Tensor, y: &Tensor, compute: Compute) -> Result<Tensor> {
    binary("add", x, y, compute, kernels::add)
}

/// Elementwise `x * y` (same shapes).
pub fn mul(x: &Tensor, y: &Tensor, compute: Compute) -> Result<Tensor> {
    binary("mul", x, y, compute, kernels::mul)
}

/// Elementwise activation (erf-GELU, SiLU or identity).
pub fn activation(x: &Tensor, activation: Activation, compute: Compute) -> Result<Tensor> {
    let xs = x.contiguous();
    let xs = contiguous_slice("activation", &xs)?;
    let mut out = crate::tensor::zeroed(xs.len());
    let width = x.shape().last().copied().unwrap_or(1);
    kernels::activation(xs, activation, &mut out, width, compute);
    Tensor::from_vec(out, x.shape())
}

pub fn gelu_erf(x: &Tensor, compute: Compute) -> Result<Tensor> {
    activation(x, Activation::GeluErf, compute)
}

pub fn silu(x: &Tensor, compute: Compute) -> Result<Tensor> {
    activation(x, Activation::Silu, compute)
}

/// Layer normalisation over the last axis of `x: [rows, n]`, optionally of `x + residual`.
pub fn layernorm(
    x: &Tensor,
    residual: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    compute: Compute,
) -> Result<Tensor> {
    const OP: &str = "layernorm";
    let (xs, _, n) = x.matrix(OP)?;
    let residual = match residual {
        Some(residual) => {
            check_shape(OP, residual, x.shape())?;
            Some(contiguous_slice(OP, residual)?)
        }
        None => None,
    };
    let (gamma, beta) = (gamma.vector(OP, n)?, beta.vector(OP, n)?);
    // Every row is written whole.
    let mut out = crate::tensor::overwritten(xs.len());
    kernels::layernorm(xs, residual, gamma, beta, eps, n, &mut out, compute);
    Tensor::from_vec(out, x.shape())
}

/// RMS normalisation over the last axis of `x: [rows, n]`.
pub fn rmsnorm(x: &Tensor, gamma: &Tensor, eps: f32, compute: Compute) -> Result<Tensor> {
    const OP: &str = "rmsnorm";
    let (xs, _, n) = x.matrix(OP)?;
    let gamma = gamma.vector(OP, n)?;
    // Every row is written whole.
    let mut out = crate::tensor::overwritten(xs.len());
    kernels::rmsnorm(xs, gamma, eps, n, &mut out, compute);
    Tensor::from_vec(out, x.shape())
}

/// Softmax over the last axis of `x: [rows, n]` after scaling by `scale`; `keep: [n]` masks columns.
pub fn softmax(x: &Tensor, keep: Option<&Tensor>, scale: f32, compute: Compute) -> Result<Tensor> {
    const OP: &str = "softmax";
    let (xs, _, n) = x.matrix(OP)?;
    let keep = keep.map(|keep| keep.vector(OP, n)).transpose()?;
    let mut out = crate::tensor::zeroed(xs.len());
    kernels::softmax(xs, keep, scale, n, &mut out, compute);
    Tensor::from_vec(out, x.shape())
}

/// Checks that the sequence `lengths` of a packed batch add up to `rows` (each sequence the
/// next `lengths[b]` rows).
fn check_lengths(op: &'static str, lengths: &[usize], rows: usize) -> Result<()> {
    let total = lengths
        .iter()
        .try_fold(0usize, |total, &length| total.checked_add(length));
    if total != Some(rows) {
        return Err(Error::Parameter {
            op,
            detail: format!(
                "{} sequence lengths do not add up to {rows} rows",
                lengths.len()
            ),
        });
    }
    Ok(())
}

/// Multi-head self-attention over a packed batch: sequence `b` is the next `lengths[b]` rows.
///
/// `q, k, v: [rows, heads * head_dim]` with `rows` the sum of `lengths`; a query attends to
/// the keys of its own sequence; scores are scaled by `1 / sqrt(head_dim)` inside the softmax.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lengths: &[usize],
    heads: usize,
    compute: Compute,
) -> Result<Tensor> {
    const OP: &str = "attention";
    let (qs, rows, width) = q.matrix(OP)?;
    check_shape(OP, k, q.shape())?;
    check_shape(OP, v, q.shape())?;
    check_lengths(OP, lengths, rows)?;
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(Error::Parameter {
            op: OP,
            detail: format!("{heads} heads do not divide shape {:?}", q.shape()),
        });
    }
    let head_dim = width / heads;
    let shape = AttentionShape {
        heads,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
    };
    let (ks, vs) = (contiguous_slice(OP, k)?, contiguous_slice(OP, v)?);
    let mut out = crate::tensor::zeroed(qs.len());
    kernels::attention(qs, ks, vs, lengths, shape, &mut out, compute);
    Tensor::from_vec(out, q.shape())
}

/// Rotary position embedding of `x: [seq, heads * head_dim]` at `positions` (one per row).
pub fn rope(x: &Tensor, positions: &[u32], heads: usize, base: f32) -> Result<Tensor> {
    const OP: &str = "rope";
    let (xs, rows, width) = x.matrix(OP)?;
    if positions.len() != rows
        || heads == 0
        || !width.is_multiple_of(heads)
        || !(width / heads).is_multiple_of(2)
    {
        return Err(Error::Parameter {
            op: OP,
            detail: format!(
                "{} positions, {heads} heads for shape {:?}",
                positions.len(),
                x.shape()
            ),
        });
    }
    // Every row is written whole (its heads' pairs).
    let mut out = crate::tensor::overwritten(xs.len());
    let head_dim = width / heads;
    let half = head_dim / 2;
    let table = rope_table(head_dim, base, positions.iter().copied().max().unwrap_or(0));
    match table.as_deref() {
        Some(table) => {
            for (t, &position) in positions.iter().enumerate() {
                let angles = &table[position as usize * half..][..half];
                let at = t * width;
                reference::rope_row(&xs[at..at + width], angles, &mut out[at..at + width]);
            }
        }
        None => reference::rope(xs, positions, heads, head_dim, base, &mut out),
    }
    Tensor::from_vec(out, x.shape())
}

/// Positions below this are served from [`rope_table`]'s cache (4096 positions of a 64-wide
/// head are 1 MiB); later ones are computed per call.
const ROPE_TABLE_POSITIONS: u32 = 4096;

/// The `(cos, sin)` of every pair at positions `0..=max_position` (at least) for `head_dim`
/// and `base`, `[position][pair]`, computed as [`reference::rope_angle`] specifies (so the
/// same bits) and kept for the process, grown by doubling as later positions are asked: a
/// model calls RoPE twice per layer at the same positions. `None` past
/// [`ROPE_TABLE_POSITIONS`].
fn rope_table(head_dim: usize, base: f32, max_position: u32) -> Option<Arc<Vec<(f32, f32)>>> {
    type Tables = HashMap<(usize, u32), Arc<Vec<(f32, f32)>>>;
    static TABLES: OnceLock<Mutex<Tables>> = OnceLock::new();
    if max_position >= ROPE_TABLE_POSITIONS {
        return None;
    }
    let half = head_dim / 2;
    let mut tables = TABLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let table = tables.entry((head_dim, base.to_bits())).or_default();
    let have = (table.len() / half.max(1)) as u32;
    if have <= max_position {
        let positions = (max_position + 1)
            .max(2 * have)
            .clamp(64, ROPE_TABLE_POSITIONS);
        let inv_freqs: Vec<f32> = (0..half)
            .map(|i| reference::rope_inv_freq(i, head_dim, base))
            .collect();
        let mut grown = Vec::with_capacity(positions as usize * half);
        grown.extend_from_slice(table);
        for position in have..positions {
            grown.extend(
                inv_freqs
                    .iter()
                    .map(|&inv_freq| reference::rope_cos_sin(position, inv_freq)),
            );
        }
        *table = Arc::new(grown);
    }
    Some(Arc::clone(table))
}

/// Rows of `table: [vocab, width]` picked by `ids`; an id past the table is an error.
pub fn embedding(table: &Tensor, ids: &[u32]) -> Result<Tensor> {
    const OP: &str = "embedding";
    let (rows, vocab, width) = table.matrix(OP)?;
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::Index {
            op: OP,
            index: id as usize,
            len: vocab,
        });
    }
    let mut out = crate::tensor::zeroed(ids.len() * width);
    reference::embedding(rows, ids, width, &mut out);
    Tensor::from_vec(out, &[ids.len(), width])
}

/// Mean over the tokens of each sequence of a packed batch: `x: [rows, width]`, sequence `b`
/// the next `lengths[b]` rows (`rows` the sum of `lengths`) → `[lengths.len(), width]`.
pub fn mean_pool(x: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    const OP: &str = "mean_pool";
    let (xs, rows, width) = x.matrix(OP)?;
    check_lengths(OP, lengths, rows)?;
    let mut out = crate::tensor::zeroed(lengths.len() * width);
    kernels::mean_pool(xs, lengths, width, &mut out);
    Tensor::from_vec(out, &[lengths.len(), width])
}

/// Each row of `x: [rows, n]` divided by its L2 norm (at least 1e-12).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let (xs, _, n) = x.matrix("l2_normalize")?;
    let mut out = crate::tensor::zeroed(xs.len());
    kernels::l2_normalize(xs, n, &mut out);
    Tensor::from_vec(out, x.shape())
}

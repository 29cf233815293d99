//! The scalar reference implementation of every operator: this module *is* the specification.
//!
//! Each function is written as plainly as possible, one element at a time, so that the
//! floating-point operation order can be read off the source. The fast kernels in
//! [`crate::kernels`] must return the same bits as these functions for every input; the
//! property tests in `tests/equivalence.rs` check it.
//!
//! Rules shared by every reduction (see docs/engine.md):
//! - [`LANES`] = 16 partial sums; element `i` of the reduced axis is added to lane `i % 16`, in
//!   increasing `i`; every lane starts at `+0.0`.
//! - the lanes are combined by the fixed tree in [`combine`].
//! - products are rounded before they are added (no fused multiply-add), except in matrix
//!   products ([`linear`], [`attention`]), whose outputs are [`dot_fma`]: one accumulator per
//!   output, fused multiply-add over `k` in increasing order.
//! - transcendental functions come from the pure-Rust `libm` crate, except GELU's [`erf`] and
//!   softmax's [`exp`], fixed polynomial sequences; `sqrt` is IEEE 754's correctly rounded
//!   square root (identical on every target).
//!
//! Functions here take row-major slices whose lengths the caller ([`crate::ops`]) has checked.

#![allow(clippy::needless_range_loop)] // index loops keep the order visible

/// Number of partial sums in every reduction.
pub const LANES: usize = 16;

/// The fixed combine tree, pairwise halving: `l[i] = l[i] + l[i + w]` for `i < w`, with
/// `w = 8, 4, 2, 1`; the result is `l[0]`. (What a vector reduction of 16 lanes does.)
pub fn combine(lanes: [f32; LANES]) -> f32 {
    let mut lanes = lanes;
    let mut width = LANES / 2;
    while width >= 1 {
        for i in 0..width {
            lanes[i] = lanes[i] + lanes[i + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// `sum_i x[i]` in the lane order.
pub fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for (i, &value) in x.iter().enumerate() {
        lanes[i % LANES] = lanes[i % LANES] + value;
    }
    combine(lanes)
}

/// `sum_i x[i] * y[i]` in the lane order; `x` and `y` have the same length.
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for i in 0..x.len() {
        let product = x[i] * y[i];
        lanes[i % LANES] = lanes[i % LANES] + product;
    }
    combine(lanes)
}

/// `sum_p x[p] * y[p]` as matrix products specify it: one accumulator starting at `+0.0`,
/// `acc = fma(x[p], y[p], acc)` for `p = 0, 1, …` in order, each step rounded once (IEEE 754
/// fusedMultiplyAdd). No output's order depends on tiles, threads or vector width, so fast
/// kernels vectorise across outputs and still return these bits.
pub fn dot_fma(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for p in 0..x.len() {
        acc = x[p].mul_add(y[p], acc);
    }
    acc
}

/// `sum_i (x[i] - mean)^2` in the lane order.
pub fn sum_squared_deviation(x: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for (i, &value) in x.iter().enumerate() {
        let deviation = value - mean;
        let square = deviation * deviation;
        lanes[i % LANES] = lanes[i % LANES] + square;
    }
    combine(lanes)
}

/// `e^x` as a fixed sequence of f32 operations (softmax's exponential): branch-free, so it
/// vectorises, and the same bits on every path because each step is one IEEE operation.
///
/// `n = (x·log2(e) + 1.5·2²³) - 1.5·2²³` (round to nearest integer), `r = (x - n·LN2_HI) - n·LN2_LO`
/// (Cody–Waite: `n·LN2_HI` is exact), `p = 1 + r(1 + r(1/2 + r(1/6 + r(1/24 + r(1/120 +
/// r(1/720 + r/5040))))))` by Horner with separate multiply and add, then
/// `(p · 2^⌊n/2⌋) · 2^(n-⌊n/2⌋)` (`⌊⌋` toward zero; both factors normal, so only the last
/// product rounds). `x` is clamped to `[EXP_X_MIN, EXP_X_MAX]` first; above the range `+inf`,
/// below `+0.0`, NaN stays NaN. Within 2 ulp of `libm::expf` (`exp_is_within_two_ulp_of_libm`).
#[inline]
pub fn exp(x: f32) -> f32 {
    use exp_constants::*;
    let clamped = x.clamp(EXP_X_MIN, EXP_X_MAX);
    let rounded = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = rounded - ROUND;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let mut p = TAYLOR[0];
    for c in &TAYLOR[1..] {
        p = p * r + c;
    }
    // `n` as an integer, read from the low bits of `rounded` (same exponent as ROUND), equal
    // to `n as i32` within [-150, 128]; wrapping operations (and no float-to-int cast) keep the
    // loop free of checks so it vectorises. A NaN's value is replaced below.
    let n = (rounded.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let half = n / 2;
    let scale = |e: i32| f32::from_bits((e.wrapping_add(127) as u32) << 23);
    let y = (p * scale(half)) * scale(n.wrapping_sub(half));
    // Selects, not branches, so a loop of `exp` vectorises (the kernels rely on it).
    let y = if x > EXP_X_MAX { f32::INFINITY } else { y };
    let y = if x < EXP_X_MIN { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// [`exp`]'s constants, shared with the kernels' vector copies of its operations.
pub(crate) mod exp_constants {
    /// `ln 2` rounded to 9 significant bits (0.693359375), so `n · LN2_HI` is exact.
    pub(crate) const LN2_HI: f32 = f32::from_bits(0x3f31_8000);
    /// `ln 2 - LN2_HI`.
    pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
    /// `1.5 · 2²³`: adding and subtracting it rounds to the nearest integer.
    pub(crate) const ROUND: f32 = 12_582_912.0;
    /// The Horner coefficients from the highest degree: `1/7!, 1/6!, …, 1/2, 1, 1`.
    pub(crate) const TAYLOR: [f32; 8] = [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
}

/// Largest input of [`exp`] computed (`ln(f32::MAX)` rounded down); above it `+inf`.
pub const EXP_X_MAX: f32 = 88.722_83;
/// Smallest input of [`exp`] computed (`ln` of the smallest subnormal, rounded up); below it `+0.0`.
pub const EXP_X_MIN: f32 = -103.972_08;

/// An elementwise function applied to a linear layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Identity,
    /// The exact (erf) GELU, as in BERT.
    GeluErf,
    /// `x * sigmoid(x)`, as in Llama's feed-forward.
    Silu,
}

impl Activation {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::GeluErf => gelu_erf(x),
            Activation::Silu => silu(x),
        }
    }
}

/// `(x * 0.5) * (1 + erf(x * (1/sqrt 2)))` with [`erf`] (branch-free, so a loop of it
/// vectorises).
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    let half = x * 0.5;
    let inner = x * std::f32::consts::FRAC_1_SQRT_2;
    half * (1.0 + erf(inner))
}

/// `erf(x)` as a fixed sequence of f32 operations (GELU's error function): branch-free, so it
/// vectorises, and the same bits on every path because each step is one IEEE operation.
///
/// Abramowitz & Stegun 7.1.26 on `a = |x|`: `t = 1 / (1 + P·a)`,
/// `q = t(A1 + t(A2 + t(A3 + t(A4 + t·A5))))` by Horner with separate multiply and add,
/// `y = 1 - q · exp(-(a·a))` ([`exp`]), then `x`'s sign copied onto `y`. Past `|x| ≈ 1e19`
/// `a·a` is `+inf`, `exp` gives `+0.0` and `y = 1`; NaN stays NaN. Within [`ERF_ABS_ERROR_MAX`]
/// of `libm::erff` over the whole f32 range (`erf_is_close_to_libm`).
#[inline]
pub fn erf(x: f32) -> f32 {
    use erf_constants::*;
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let mut q = A[0];
    for c in &A[1..] {
        q = q * t + c;
    }
    q = q * t;
    let y = 1.0 - q * exp(-(a * a));
    // A select, not a branch, so a loop of `erf` vectorises.
    if x.is_nan() {
        x
    } else {
        y.copysign(x)
    }
}

/// [`erf`]'s constants (Abramowitz & Stegun 7.1.26), shared with the kernels' vector copies.
pub(crate) mod erf_constants {
    pub(crate) const P: f32 = 0.327_591_1;
    /// `A5, A4, A3, A2, A1`: the Horner coefficients from the highest degree.
    pub(crate) const A: [f32; 5] = [
        1.061_405_4,
        -1.453_152,
        1.421_413_8,
        -0.284_496_72,
        0.254_829_6,
    ];
}

/// Bound on `|erf(x) - libm::erff(x)|` over f32 inputs (`erf_is_close_to_libm` measures
/// 5.4e-7, near `x = 5.5e-4`, where `1 - q·exp(..)` cancels).
pub const ERF_ABS_ERROR_MAX: f32 = 1e-6;

/// `x / (1 + exp(-x))`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + libm::expf(-x))
}

/// `out[i][j] = act(dot_fma(a[i], b[j]) + bias[j])` for `a: [m, k]`, `b: [n, k]`, `out: [m, n]`.
/// Without a bias the `+ bias[j]` step is skipped (not replaced by `+ 0.0`).
#[allow(clippy::too_many_arguments)]
pub fn linear(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut value = dot_fma(&a[i * k..(i + 1) * k], &b[j * k..(j + 1) * k]);
            if let Some(bias) = bias {
                value = value + bias[j];
            }
            out[i * n + j] = activation.apply(value);
        }
    }
}

/// Elementwise `x + y`.
pub fn add(x: &[f32], y: &[f32], out: &mut [f32]) {
    for i in 0..x.len() {
        out[i] = x[i] + y[i];
    }
}

/// Elementwise `x * y`.
pub fn mul(x: &[f32], y: &[f32], out: &mut [f32]) {
    for i in 0..x.len() {
        out[i] = x[i] * y[i];
    }
}

/// Elementwise activation.
pub fn activation(x: &[f32], activation: Activation, out: &mut [f32]) {
    for i in 0..x.len() {
        out[i] = activation.apply(x[i]);
    }
}

/// Layer normalisation of each row of `x: [rows, n]`:
/// `mean = sum(x) / n`, `var = sum((x - mean)^2) / n`, `inv = 1 / sqrt(var + eps)`,
/// `out = ((x - mean) * inv) * gamma + beta`.
pub fn layernorm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, n: usize, out: &mut [f32]) {
    let rows = x.len().checked_div(n).unwrap_or(0);
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let mean = sum(row) / n as f32;
        let variance = sum_squared_deviation(row, mean) / n as f32;
        let inv = 1.0 / (variance + eps).sqrt();
        for c in 0..n {
            let centered = row[c] - mean;
            let scaled = centered * inv;
            out[r * n + c] = scaled * gamma[c] + beta[c];
        }
    }
}

/// `layernorm(x + residual)`: the sum is rounded to f32 first.
pub fn add_layernorm(
    x: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    n: usize,
    out: &mut [f32],
) {
    let mut summed = vec![0.0f32; x.len()];
    add(x, residual, &mut summed);
    layernorm(&summed, gamma, beta, eps, n, out);
}

/// RMS normalisation of each row: `inv = 1 / sqrt(dot(x, x) / n + eps)`, `out = (x * inv) * gamma`.
pub fn rmsnorm(x: &[f32], gamma: &[f32], eps: f32, n: usize, out: &mut [f32]) {
    let rows = x.len().checked_div(n).unwrap_or(0);
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let mean_square = dot(row, row) / n as f32;
        let inv = 1.0 / (mean_square + eps).sqrt();
        for c in 0..n {
            out[r * n + c] = (row[c] * inv) * gamma[c];
        }
    }
}

/// Masked softmax of each row of `x: [rows, n]` after scaling by `scale`.
///
/// Column `c` takes part when `keep` is `None` or `keep[c] != 0`. With `z = x * scale`:
/// `max` = the largest kept `z` (scanned in increasing `c`, replaced only when strictly
/// greater), `e = exp(z - max)` ([`exp`]) for kept columns and `0` for the others, `out = e / sum(e)`.
/// A row with no kept column is all zeros.
pub fn softmax(x: &[f32], keep: Option<&[f32]>, scale: f32, n: usize, out: &mut [f32]) {
    let rows = x.len().checked_div(n).unwrap_or(0);
    let kept = |c: usize| keep.is_none_or(|keep| keep[c] != 0.0);
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let mut max = f32::NEG_INFINITY;
        let mut any = false;
        for c in 0..n {
            if kept(c) {
                let z = row[c] * scale;
                if !any || z > max {
                    max = z;
                }
                any = true;
            }
        }
        let exps: Vec<f32> = (0..n)
            .map(|c| {
                if any && kept(c) {
                    exp(row[c] * scale - max)
                } else {
                    0.0
                }
            })
            .collect();
        let total = sum(&exps);
        for c in 0..n {
            out[r * n + c] = if any { exps[c] / total } else { 0.0 };
        }
    }
}

/// Multi-head self-attention over a packed batch: `q, k, v: [rows, heads * head_dim]` hold
/// the rows of every sequence one after the other, sequence `b` being the next `lengths[b]`
/// rows (`rows` = the sum of `lengths`). A query attends to the keys of its own sequence only.
///
/// For each sequence, head `h` and query `i`: `s[j] = dot_fma(q[i, h], k[j, h])` over the
/// sequence's keys `j` in order, `p = softmax(s, None, scale)`,
/// `out[i, h*head_dim + c] = dot_fma(p, v[:, h*head_dim + c])` (both matrix products:
/// sequential fused multiply-add over `c`, then over `j`).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lengths: &[usize],
    heads: usize,
    head_dim: usize,
    scale: f32,
    out: &mut [f32],
) {
    let width = heads * head_dim;
    let mut start = 0;
    for &seq in lengths {
        for h in 0..heads {
            let column = |t: &[f32], row: usize| {
                let at = (start + row) * width + h * head_dim;
                t[at..at + head_dim].to_vec()
            };
            for i in 0..seq {
                let query = column(q, i);
                let scores: Vec<f32> = (0..seq).map(|j| dot_fma(&query, &column(k, j))).collect();
                let mut probabilities = vec![0.0f32; seq];
                softmax(&scores, None, scale, seq, &mut probabilities);
                for c in 0..head_dim {
                    let values: Vec<f32> = (0..seq)
                        .map(|j| v[(start + j) * width + h * head_dim + c])
                        .collect();
                    out[(start + i) * width + h * head_dim + c] = dot_fma(&probabilities, &values);
                }
            }
        }
        start += seq;
    }
}

/// Shape of a causal grouped-query attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CausalShape {
    /// Query rows.
    pub rows: usize,
    /// Position of query row 0; row `i` attends to keys `0..=first_position + i`.
    pub first_position: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl CausalShape {
    /// Keys needed: `first_position + rows`.
    pub fn keys(&self) -> usize {
        self.first_position + self.rows
    }

    /// `1 / sqrt(head_dim)`.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Causal grouped-query attention over a KV cache.
///
/// `q: [rows, heads * d]`, `k, v: [keys, kv_heads * d]` (keys ≥ `first_position + rows`).
/// Query head `h` reads KV head `g = h / (heads / kv_heads)`. For query row `i` at position
/// `t = first_position + i`: `s[j] = dot(q[i, h], k[j, g])` for `j = 0..=t`,
/// `p = softmax(s, scale = 1/sqrt(d))`, `out[i, h, c] = dot(p, v[0..=t, g, c])` (both dots in
/// the lane order of [`dot`]).
pub fn causal_attention(q: &[f32], k: &[f32], v: &[f32], shape: CausalShape, out: &mut [f32]) {
    let CausalShape {
        rows,
        first_position,
        heads,
        kv_heads,
        head_dim: d,
    } = shape;
    let (width, kv_width, group) = (heads * d, kv_heads * d, heads / kv_heads);
    for i in 0..rows {
        let keys = first_position + i + 1;
        for h in 0..heads {
            let g = h / group;
            let query = &q[i * width + h * d..i * width + (h + 1) * d];
            let scores: Vec<f32> = (0..keys)
                .map(|j| dot(query, &k[j * kv_width + g * d..j * kv_width + (g + 1) * d]))
                .collect();
            let mut p = vec![0.0f32; keys];
            softmax(&scores, None, shape.scale(), keys, &mut p);
            for c in 0..d {
                let values: Vec<f32> = (0..keys).map(|j| v[j * kv_width + g * d + c]).collect();
                out[i * width + h * d + c] = dot(&p, &values);
            }
        }
    }
}

/// Rotary position embedding (rotate-half form) of `x: [seq, heads * head_dim]`.
///
/// For pair `i < head_dim / 2`: `inv_freq = 1 / powf(base, (2i) / head_dim)`,
/// `angle = position * inv_freq`, `(c, s) = (cosf(angle), sinf(angle))`,
/// `out[i] = x[i] * c - x[i + half] * s`, `out[i + half] = x[i + half] * c + x[i] * s`.
/// (`inv_freq` depends on the pair alone and `(c, s)` on the pair and the row's position, so
/// each is computed once and shared by every row, or every head.)
pub fn rope(
    x: &[f32],
    positions: &[u32],
    heads: usize,
    head_dim: usize,
    base: f32,
    out: &mut [f32],
) {
    let half = head_dim / 2;
    let inv_freqs: Vec<f32> = (0..half)
        .map(|i| rope_inv_freq(i, head_dim, base))
        .collect();
    let mut angles = vec![(0.0f32, 0.0f32); half];
    let width = heads * head_dim;
    for (t, &position) in positions.iter().enumerate() {
        for (angle, &inv_freq) in angles.iter_mut().zip(&inv_freqs) {
            *angle = rope_cos_sin(position, inv_freq);
        }
        let at = t * width;
        rope_row(&x[at..at + width], &angles, &mut out[at..at + width]);
    }
}

/// One row of [`rope`] given its `(cos, sin)` per pair (`angles`, `head_dim / 2` of them):
/// every head of `x` rotated into `out`.
pub fn rope_row(x: &[f32], angles: &[(f32, f32)], out: &mut [f32]) {
    let half = angles.len();
    for (x, out) in x.chunks_exact(2 * half).zip(out.chunks_exact_mut(2 * half)) {
        for (i, &(cos, sin)) in angles.iter().enumerate() {
            let first = x[i];
            let second = x[i + half];
            out[i] = first * cos - second * sin;
            out[i + half] = second * cos + first * sin;
        }
    }
}

/// `(cos, sin)` of RoPE pair `i` at `position`, as specified in [`rope`].
pub fn rope_angle(position: u32, i: usize, head_dim: usize, base: f32) -> (f32, f32) {
    rope_cos_sin(position, rope_inv_freq(i, head_dim, base))
}

/// `inv_freq` of RoPE pair `i` (a function of the pair alone, as specified in [`rope`]).
pub fn rope_inv_freq(i: usize, head_dim: usize, base: f32) -> f32 {
    let exponent = (2 * i) as f32 / head_dim as f32;
    1.0 / libm::powf(base, exponent)
}

/// `(cos, sin)` of the angle `position * inv_freq` (as specified in [`rope`]).
pub fn rope_cos_sin(position: u32, inv_freq: f32) -> (f32, f32) {
    let angle = position as f32 * inv_freq;
    (libm::cosf(angle), libm::sinf(angle))
}

/// Row gather: `out[t] = table[ids[t]]` for `table: [vocab, width]` (ids checked by the caller).
pub fn embedding(table: &[f32], ids: &[u32], width: usize, out: &mut [f32]) {
    for (t, &id) in ids.iter().enumerate() {
        let id = id as usize;
        out[t * width..(t + 1) * width].copy_from_slice(&table[id * width..(id + 1) * width]);
    }
}

/// Mean over the tokens of each sequence of a packed batch: `x: [rows, width]`, sequence `b`
/// the next `lengths[b]` rows → `out: [lengths.len(), width]`.
///
/// For sequence `b` and column `c`: token `t` of the sequence (in increasing `t`, counted from
/// the sequence's first row) is added to lane `t % 16`; the lanes are combined; the sum is
/// divided by the sequence's length as f32. A sequence of no token gives zeros.
pub fn mean_pool(x: &[f32], lengths: &[usize], width: usize, out: &mut [f32]) {
    let mut start = 0;
    for (b, &seq) in lengths.iter().enumerate() {
        for c in 0..width {
            let mut lanes = [0.0f32; LANES];
            for t in 0..seq {
                lanes[t % LANES] = lanes[t % LANES] + x[(start + t) * width + c];
            }
            out[b * width + c] = if seq == 0 {
                0.0
            } else {
                combine(lanes) / seq as f32
            };
        }
        start += seq;
    }
}

/// Smallest norm [`l2_normalize`] divides by (as `torch.nn.functional.normalize`).
pub const L2_NORM_EPSILON: f32 = 1e-12;

/// Each row divided by `max(sqrt(dot(row, row)), 1e-12)`.
pub fn l2_normalize(x: &[f32], n: usize, out: &mut [f32]) {
    let rows = x.len().checked_div(n).unwrap_or(0);
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let norm = dot(row, row).sqrt();
        let denominator = if norm > L2_NORM_EPSILON {
            norm
        } else {
            L2_NORM_EPSILON
        };
        for c in 0..n {
            out[r * n + c] = row[c] / denominator;
        }
    }
}

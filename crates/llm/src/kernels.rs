//! Kernels the decoder needs beyond `piazza-tensor`'s, with the same discipline: a scalar
//! reference that is the specification, a fast path equal to it bit for bit (property-tested in
//! `tests/kernels.rs`), threads over independent outputs only.
//!
//! (Candidates to move into `piazza-tensor`: causal grouped-query attention over a KV cache,
//! and a matmul threaded over output columns for one-row inputs.)

use piazza_tensor::kernels::{self as tk, for_row_ranges, Linear};
use piazza_tensor::reference::{self, Activation};
use piazza_tensor::Compute;

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

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Reference causal grouped-query attention (the specification).
///
/// `q: [rows, heads * d]`, `k, v: [keys, kv_heads * d]` (keys ≥ `first_position + rows`).
/// Query head `h` reads KV head `g = h / (heads / kv_heads)`. For query row `i` at position
/// `t = first_position + i`: `s[j] = dot(q[i, h], k[j, g])` for `j = 0..=t`,
/// `p = softmax(s, scale = 1/sqrt(d))`, `out[i, h, c] = dot(p, v[0..=t, g, c])` (both dots in the
/// 16-lane order of `reference::dot`).
pub fn causal_attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: CausalShape,
    out: &mut [f32],
) {
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
                .map(|j| {
                    reference::dot(query, &k[j * kv_width + g * d..j * kv_width + (g + 1) * d])
                })
                .collect();
            let mut p = vec![0.0f32; keys];
            reference::softmax(&scores, None, shape.scale(), keys, &mut p);
            for c in 0..d {
                let values: Vec<f32> = (0..keys).map(|j| v[j * kv_width + g * d + c]).collect();
                out[i * width + h * d + c] = reference::dot(&p, &values);
            }
        }
    }
}

/// [`causal_attention_reference`], vectorised dots, threaded over (row, head) pairs.
pub fn causal_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: CausalShape,
    out: &mut [f32],
    compute: Compute,
) {
    let CausalShape {
        rows,
        first_position,
        heads,
        kv_heads,
        head_dim: d,
    } = shape;
    let (width, kv_width, group) = (heads * d, kv_heads * d, heads / kv_heads);
    let keys_max = shape.keys();
    if rows == 0 || d == 0 {
        return;
    }
    // V transposed per KV head: vt[g][c][j] (exact copy), so each output is a contiguous dot.
    let mut vt = vec![0.0f32; kv_heads * d * keys_max];
    for j in 0..keys_max {
        for g in 0..kv_heads {
            for c in 0..d {
                vt[(g * d + c) * keys_max + j] = v[j * kv_width + g * d + c];
            }
        }
    }
    let scale = shape.scale();
    // `out` viewed as rows * heads units of d values each.
    for_row_ranges(
        out,
        d,
        1,
        keys_max * d * 2,
        compute.threads,
        |first_unit, chunk| {
            let mut p = vec![0.0f32; keys_max];
            for (u, block) in chunk.chunks_exact_mut(d).enumerate() {
                let (i, h) = ((first_unit + u) / heads, (first_unit + u) % heads);
                let g = h / group;
                let keys = first_position + i + 1;
                let query = &q[i * width + h * d..i * width + (h + 1) * d];
                let p = &mut p[..keys];
                let mut max = f32::NEG_INFINITY;
                for (j, score) in p.iter_mut().enumerate() {
                    let s = tk::dot(query, &k[j * kv_width + g * d..j * kv_width + (g + 1) * d]);
                    let z = s * scale;
                    if j == 0 || z > max {
                        max = z;
                    }
                    *score = s;
                }
                for score in p.iter_mut() {
                    *score = libm::expf(*score * scale - max);
                }
                let total = tk::sum(p);
                for score in p.iter_mut() {
                    *score /= total;
                }
                for (c, value) in block.iter_mut().enumerate() {
                    let column = &vt[(g * d + c) * keys_max..(g * d + c) * keys_max + keys];
                    *value = tk::dot(p, column);
                }
            }
        },
    );
}

/// Multiply-adds below which a few-row matmul stays on one thread: each split is a spawn and
/// a join, and a decode step has hundreds of ops (only the FFN and output projections of
/// SmolLM2 are split).
pub const COLUMN_THREADS_WORK_MIN: usize = 1 << 19;

#[allow(clippy::too_many_arguments)]
/// `act(x · wᵀ)` for `x: [m, k]`, `w: [n, k]`, exactly [`reference::linear`] without bias.
///
/// Few rows (decoding): threads split the output columns, each running `piazza-tensor`'s tile
/// kernel on its rows of `w`; many rows: `piazza-tensor` splits the rows. Every output element
/// is one [`reference::dot`] either way.
pub fn linear(
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    activation: Activation,
    out: &mut [f32],
    compute: Compute,
) {
    let threads = compute.threads.get();
    if m >= 4 * threads || threads == 1 || n < 2 * threads || m * n * k < COLUMN_THREADS_WORK_MIN {
        let op = Linear {
            b: w,
            bias: None,
            activation,
            n,
            k,
        };
        tk::linear(&op, x, out, compute);
        return;
    }
    let per_thread = n.div_ceil(threads);
    let single = compute.single_threaded();
    let blocks: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(per_thread)
            .map(|c0| {
                let c1 = (c0 + per_thread).min(n);
                scope.spawn(move || {
                    let op = Linear {
                        b: &w[c0 * k..c1 * k],
                        bias: None,
                        activation,
                        n: c1 - c0,
                        k,
                    };
                    let mut block = vec![0.0f32; m * (c1 - c0)];
                    tk::linear(&op, x, &mut block, single);
                    block
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("linear worker panicked"))
            .collect()
    });
    for (b, block) in blocks.iter().enumerate() {
        let c0 = b * per_thread;
        let cols = block.len() / m.max(1);
        for r in 0..m {
            out[r * n + c0..r * n + c0 + cols].copy_from_slice(&block[r * cols..(r + 1) * cols]);
        }
    }
}

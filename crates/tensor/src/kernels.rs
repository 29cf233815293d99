//! Fast kernels: the same floating-point operations as [`crate::reference`], in the same order
//! for every output element, arranged for speed.
//!
//! What may change here and what may not:
//! - May: the order in which *independent* output elements are computed (tiles, threads over
//!   output rows, SIMD across lanes or columns), loads and stores, packing, copies.
//! - May not: the lane an element is added to, the order within a lane, the combine tree,
//!   fused multiply-add outside matrix products, or a different transcendental function.
//!
//! Reductions get SIMD from the compiler vectorising lane arrays (`[f32; 16]`), which maps each
//! lane to one vector slot and keeps each slot's operation sequence as written (Rust never
//! contracts `a * b + c` into an FMA). Matrix products ([`linear`]) follow
//! [`reference::dot_fma`]: each output is one accumulator, fused multiply-add over `k` in order,
//! so micro-kernels vectorise across output columns (a packed panel of `b`) and the bits do not
//! depend on the tile, the thread or the vector width. On x86-64 they run AVX-512F or AVX2+FMA
//! intrinsics, picked at run time ([`Isa`]); elsewhere scalar `mul_add`.

use std::mem::MaybeUninit;
use std::num::NonZeroUsize;

use crate::pool::Pool;
use crate::reference::{self, combine, Activation, LANES};

/// Instruction set a kernel is compiled for. Every choice gives the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// The target's baseline instructions (SSE2 on x86-64).
    Portable,
    /// x86-64 AVX2 with FMA (only offered when the CPU has both).
    Avx2,
    /// x86-64 AVX-512F with FMA (only offered when the CPU has both).
    Avx512,
}

impl Isa {
    /// The widest instruction set this CPU offers.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            for isa in [Isa::Avx512, Isa::Avx2] {
                if isa.is_supported() {
                    return isa;
                }
            }
        }
        Isa::Portable
    }

    /// Whether this CPU can run `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every instruction set this CPU can run (for equivalence tests).
    pub fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }
}

/// How a kernel runs: thread count and instruction set. Neither changes any result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compute {
    pub threads: NonZeroUsize,
    pub isa: Isa,
}

impl Compute {
    /// `threads` threads (0 is read as 1) with the CPU's best instruction set.
    pub fn new(threads: usize) -> Compute {
        Compute {
            threads: NonZeroUsize::new(threads).unwrap_or(NonZeroUsize::MIN),
            isa: Isa::detect(),
        }
    }

    pub fn single_threaded(self) -> Compute {
        Compute {
            threads: NonZeroUsize::MIN,
            ..self
        }
    }
}

impl Default for Compute {
    fn default() -> Self {
        Compute::new(1)
    }
}

/// Work below this many multiply-adds runs on the calling thread (spawning costs more).
const PARALLEL_WORK_MIN: usize = 1 << 16;

/// Row ranges per thread: more ranges than threads, handed out on demand, keep every core busy
/// when another process takes one (which range a thread gets never changes what it computes).
const RANGES_PER_THREAD: usize = 4;
/// Fewest rows in one range when there are enough rows (a range re-reads the other operand,
/// so tiny ranges cost bandwidth).
const RANGE_ROWS_MIN: usize = 16;

/// Split `out` (rows of `width` elements) into contiguous row ranges and run
/// `body(first_row, rows_out)` on each, on up to `threads` threads (the caller is one of them).
/// Ranges are multiples of `align` rows (but the last). Every row is computed by exactly one
/// call, with the same operations whichever thread runs it, so results cannot depend on the
/// thread count or on scheduling.
pub fn for_row_ranges<F>(
    out: &mut [f32],
    width: usize,
    align: usize,
    work_per_row: usize,
    threads: NonZeroUsize,
    body: F,
) where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let align = align.max(1);
    let rows = out.len().checked_div(width).unwrap_or(0);
    let threads = threads.get().min(rows.div_ceil(align)).max(1);
    if threads == 1 || rows.saturating_mul(work_per_row) < PARALLEL_WORK_MIN {
        body(0, out);
        return;
    }
    let ranges = threads * RANGES_PER_THREAD;
    // At least RANGE_ROWS_MIN rows per range, but never fewer ranges than threads.
    let floor = RANGE_ROWS_MIN.min(rows.div_ceil(threads));
    let per_range = rows.div_ceil(ranges).max(floor).div_ceil(align) * align;
    // Each range behind its own lock (never contended: every index is claimed once).
    let chunks: Vec<std::sync::Mutex<&mut [f32]>> = out
        .chunks_mut(per_range * width)
        .map(std::sync::Mutex::new)
        .collect();
    Pool::global().for_each(threads, chunks.len(), |i| {
        let mut chunk = match chunks[i].lock() {
            Ok(chunk) => chunk,
            Err(poisoned) => poisoned.into_inner(),
        };
        body(i * per_range, &mut chunk);
    });
}

/// [`reference::sum`], vectorised.
pub fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for l in 0..LANES {
            lanes[l] = lanes[l] + chunk[l];
        }
    }
    for (l, &value) in tail.iter().enumerate() {
        lanes[l] = lanes[l] + value;
    }
    combine(lanes)
}

/// [`reference::dot`], vectorised.
#[inline(always)]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "dot of unequal lengths");
    let mut lanes = [0.0f32; LANES];
    let xs = x.chunks_exact(LANES);
    let ys = y.chunks_exact(LANES);
    let (x_tail, y_tail) = (xs.remainder(), ys.remainder());
    for (xc, yc) in xs.zip(ys) {
        for l in 0..LANES {
            lanes[l] = lanes[l] + xc[l] * yc[l];
        }
    }
    for l in 0..x_tail.len() {
        lanes[l] = lanes[l] + x_tail[l] * y_tail[l];
    }
    combine(lanes)
}

/// [`reference::sum_squared_deviation`], vectorised.
pub fn sum_squared_deviation(x: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for l in 0..LANES {
            let deviation = chunk[l] - mean;
            lanes[l] = lanes[l] + deviation * deviation;
        }
    }
    for (l, &value) in tail.iter().enumerate() {
        let deviation = value - mean;
        lanes[l] = lanes[l] + deviation * deviation;
    }
    combine(lanes)
}

// ---------------------------------------------------------------------------------------------
// Matrix multiply: out = act(a · bᵀ + bias), each output one `reference::dot_fma`
// ---------------------------------------------------------------------------------------------

/// Row alignment of the thread ranges (a multiple of every tile height below).
const ROW_ALIGN: usize = 24;
/// Widest panel (columns of `out`) and tallest tile (rows of `out`) of any kernel below.
const PANEL_COLS_MAX: usize = 32;
const TILE_ROWS_MAX: usize = 8;
/// Rows of `a` a matmul takes at a time through every panel: their bytes stay in a core's L2
/// cache while the panels pass (else a long `a` streams from L3 once per panel).
const A_BLOCK_BYTES: usize = 1 << 18;
/// One tile of finished sums, before the activation epilogue.
type TileSums = [[f32; PANEL_COLS_MAX]; TILE_ROWS_MAX];

/// Where a micro-kernel stores a tile: row `r`, column `c` at `ptr + r · stride + c`, each sum
/// plus `bias[c]` first where `bias` is not null (the reference's `+ bias[j]`, one rounding,
/// added in the registers).
#[derive(Clone, Copy)]
struct TileOut {
    ptr: *mut f32,
    stride: usize,
    bias: *const f32,
}

/// A register-tiled micro-kernel: `rows ≤ tile_rows` rows of `a` (stride `k`, from `a[0]`)
/// times one packed panel of `cols` columns (`panel[p * cols + c]`, `k * cols` floats), each
/// output accumulated over `p = 0..k` in order with fused multiply-add, stored through a
/// [`TileOut`].
#[derive(Clone, Copy)]
struct TileKernel {
    /// The instruction set the kernel (and its epilogue's activation) is compiled for.
    isa: Isa,
    cols: usize,
    tile_rows: usize,
    /// SAFETY contract: the CPU supports the kernel's instructions (checked when it is chosen);
    /// `a.len() >= (rows - 1) * k + k`, `panel.len() >= k * cols`, `1 <= rows <= tile_rows`;
    /// `out` can take `rows` rows of `cols` values, and its bias (if any) `cols` values.
    tile: unsafe fn(rows: usize, a: &[f32], k: usize, panel: &[f32], out: TileOut),
}

/// Portable kernel: scalar `f32::mul_add` (IEEE fusedMultiplyAdd; a library call where the CPU
/// has no FMA instruction, so slow but the same bits).
/// Safety: as [`TileKernel::tile`]'s.
unsafe fn tile_portable(rows: usize, a: &[f32], k: usize, panel: &[f32], out: TileOut) {
    const COLS: usize = 16;
    for r in 0..rows {
        let row = &a[r * k..r * k + k];
        let mut acc = [0.0f32; COLS];
        for (p, &x) in row.iter().enumerate() {
            let b = &panel[p * COLS..p * COLS + COLS];
            for c in 0..COLS {
                acc[c] = x.mul_add(b[c], acc[c]);
            }
        }
        for (c, sum) in acc.into_iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe {
                let value = match out.bias.is_null() {
                    true => sum,
                    false => sum + *out.bias.add(c),
                };
                *out.ptr.add(r * out.stride + c) = value;
            }
        }
    }
}

const PORTABLE: TileKernel = TileKernel {
    isa: Isa::Portable,
    cols: 16,
    tile_rows: 4,
    tile: tile_portable,
};

#[cfg(target_arch = "x86_64")]
mod x86 {
    // Index loops over the register tile keep row `r`'s broadcast next to its accumulators.
    #![allow(clippy::needless_range_loop)]

    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{Isa, TileKernel, TileOut, LANES};

    /// One micro-kernel: `$rows_fn::<R>` holds `R` rows × 2 vectors of `$width` lanes
    /// (`2 * $width` panel columns) in registers; `$tile_fn` dispatches on the row count under
    /// `$feature`; `$name` is the [`TileKernel`].
    macro_rules! micro_kernel {
        ($name:ident, $isa:ident, $tile_fn:ident, $rows_fn:ident, $feature:literal,
         $width:literal, $tile_rows:literal, $zero:ident, $load:ident, $set1:ident, $fmadd:ident,
         $add:ident, $store:ident) => {
            #[inline(always)]
            unsafe fn $rows_fn<const R: usize>(a: &[f32], k: usize, panel: &[f32], out: TileOut) {
                const COLS: usize = 2 * $width;
                assert!(a.len() >= (R - 1) * k + k && panel.len() >= k * COLS);
                let (pa, pb) = (a.as_ptr(), panel.as_ptr());
                // SAFETY: every pointer below stays inside the slices checked above; the
                // caller guarantees the instruction set.
                unsafe {
                    let mut acc = [[$zero(); 2]; R];
                    for p in 0..k {
                        let b0 = $load(pb.add(p * COLS));
                        let b1 = $load(pb.add(p * COLS + $width));
                        for r in 0..R {
                            let x = $set1(*pa.add(r * k + p));
                            acc[r][0] = $fmadd(x, b0, acc[r][0]);
                            acc[r][1] = $fmadd(x, b1, acc[r][1]);
                        }
                    }
                    if !out.bias.is_null() {
                        let bias = [$load(out.bias), $load(out.bias.add($width))];
                        for r in 0..R {
                            acc[r][0] = $add(acc[r][0], bias[0]);
                            acc[r][1] = $add(acc[r][1], bias[1]);
                        }
                    }
                    for r in 0..R {
                        let row = out.ptr.add(r * out.stride);
                        $store(row, acc[r][0]);
                        $store(row.add($width), acc[r][1]);
                    }
                }
            }

            #[target_feature(enable = $feature)]
            unsafe fn $tile_fn(rows: usize, a: &[f32], k: usize, panel: &[f32], out: TileOut) {
                // SAFETY: forwarded contract of `TileKernel::tile`.
                unsafe {
                    match rows.min($tile_rows) {
                        8 => $rows_fn::<8>(a, k, panel, out),
                        7 => $rows_fn::<7>(a, k, panel, out),
                        6 => $rows_fn::<6>(a, k, panel, out),
                        5 => $rows_fn::<5>(a, k, panel, out),
                        4 => $rows_fn::<4>(a, k, panel, out),
                        3 => $rows_fn::<3>(a, k, panel, out),
                        2 => $rows_fn::<2>(a, k, panel, out),
                        _ => $rows_fn::<1>(a, k, panel, out),
                    }
                }
            }

            pub(super) const $name: TileKernel = TileKernel {
                isa: Isa::$isa,
                cols: 2 * $width,
                tile_rows: $tile_rows,
                tile: $tile_fn,
            };
        };
    }

    // 8 rows × 32 columns: 16 of 32 zmm registers accumulate.
    micro_kernel!(
        AVX512,
        Avx512,
        tile_avx512,
        avx512_rows,
        "avx512f",
        16,
        8,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_storeu_ps
    );
    // 6 rows × 16 columns: 12 of 16 ymm registers accumulate.
    micro_kernel!(
        AVX2,
        Avx2,
        tile_avx2,
        avx2_rows,
        "avx2,fma",
        8,
        6,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        _mm256_storeu_ps
    );
    /// `$name`: [`super::softmax_tail`] compiled with `$feature` (no FMA: the tail has no
    /// product to fuse), its exponentials by `$exp`. Safety: the CPU supports `$feature`.
    macro_rules! softmax_tail_for {
        ($name:ident, $feature:literal, $exp:ty) => {
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(
                row: &[f32],
                keep: Option<&[f32]>,
                scale: f32,
                first: usize,
                out: &mut [f32],
            ) {
                super::softmax_tail::<$exp>(row, keep, scale, first, out)
            }
        };
    }
    softmax_tail_for!(softmax_tail_avx512, "avx512f", Exp);
    softmax_tail_for!(softmax_tail_avx2, "avx2", super::LaneExp);

    /// `$name`: [`super::causal_unit_body`] compiled with `$feature` (no FMA: its dots and
    /// sums are unfused by specification). Safety: the CPU supports `$feature`.
    macro_rules! causal_unit_for {
        ($name:ident, $feature:literal) => {
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(
                unit: super::CausalUnit<'_>,
                scores: &mut [f32],
                p: &mut [f32],
                out: &mut [f32],
            ) {
                super::causal_unit_body(unit, scores, p, out)
            }
        };
    }
    causal_unit_for!(causal_unit_avx2, "avx2");

    /// [`super::causal_unit_body`] with AVX-512 F, its scores sixteen keys at a time
    /// ([`unit_scores_avx512`]) when the head size is a whole number of 16-lane chunks.
    /// Safety: the CPU supports AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn causal_unit_avx512(
        unit: super::CausalUnit<'_>,
        scores: &mut [f32],
        p: &mut [f32],
        out: &mut [f32],
    ) {
        let d = unit.query.len();
        let blocked = if d.is_multiple_of(LANES) {
            // SAFETY: the caller guarantees AVX-512 F.
            unsafe { unit_scores_avx512(unit.query, unit.k, unit.kv_width, scores) }
        } else {
            0
        };
        super::causal_unit_tail(unit, blocked, scores, p, out)
    }

    /// Scores of one query against the first `scores.len() / 16 * 16` keys (key `j` at
    /// `k[j * kv_width..][..d]`, `d` a multiple of 16), in the reference's lane order
    /// ([`super::reference::dot`]: lane `l` adds the products of dimensions `l`, `l + 16`, …
    /// to `+0.0` in order, then [`super::reference::combine`]'s tree): each key's sixteen lane
    /// sums in one register, then the tree for sixteen keys at once, each level adding the
    /// halves `i` and `i + w` (`w` = 8, 4, 2, 1) of two registers' keys side by side (IEEE
    /// addition is commutative, so which operand comes first does not matter). Returns the
    /// keys scored. Safety: the CPU supports AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn unit_scores_avx512(
        query: &[f32],
        k: &[f32],
        kv_width: usize,
        scores: &mut [f32],
    ) -> usize {
        let d = query.len();
        let blocks = scores.len() / LANES;
        if blocks == 0 {
            return 0;
        }
        let keys = blocks * LANES;
        assert!(
            d.is_multiple_of(LANES) && d <= kv_width && (keys - 1) * kv_width + d <= k.len(),
            "keys out of range"
        );
        // Output lane `j` of the last level holds key `4 (j mod 4) + j / 4`.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        // SAFETY: every key row read lies inside `k` (checked above), every query chunk inside
        // `query`, every store inside `scores`; the caller guarantees AVX-512 F.
        unsafe {
            let (q, kp) = (query.as_ptr(), k.as_ptr());
            for block in 0..blocks {
                let sums: [__m512; LANES] = std::array::from_fn(|key| {
                    let row = kp.add((block * LANES + key) * kv_width);
                    let mut acc = _mm512_setzero_ps();
                    for c in (0..d).step_by(LANES) {
                        let product =
                            _mm512_mul_ps(_mm512_loadu_ps(q.add(c)), _mm512_loadu_ps(row.add(c)));
                        acc = _mm512_add_ps(acc, product);
                    }
                    acc
                });
                // w = 8: 128-bit blocks (0, 1) + (2, 3) of two keys.
                let eights: [__m512; 8] = std::array::from_fn(|m| {
                    let (a, b) = (sums[2 * m], sums[2 * m + 1]);
                    _mm512_add_ps(
                        _mm512_shuffle_f32x4::<0x44>(a, b),
                        _mm512_shuffle_f32x4::<0xEE>(a, b),
                    )
                });
                // w = 4: blocks 0 + 1 of each key (keys 4n..4n + 4, one 128-bit block each).
                let fours: [__m512; 4] = std::array::from_fn(|n| {
                    let (a, b) = (eights[2 * n], eights[2 * n + 1]);
                    _mm512_add_ps(
                        _mm512_shuffle_f32x4::<0x88>(a, b),
                        _mm512_shuffle_f32x4::<0xDD>(a, b),
                    )
                });
                // w = 2 within each 128-bit block: key 8s + b at lanes 0, 1, key 8s + 4 + b at 2, 3.
                let twos: [__m512; 2] = std::array::from_fn(|t| {
                    let (a, b) = (fours[2 * t], fours[2 * t + 1]);
                    _mm512_add_ps(
                        _mm512_shuffle_ps::<0x44>(a, b),
                        _mm512_shuffle_ps::<0xEE>(a, b),
                    )
                });
                // w = 1: lane 4b + r holds key b + 4r.
                let ones = _mm512_add_ps(
                    _mm512_shuffle_ps::<0x88>(twos[0], twos[1]),
                    _mm512_shuffle_ps::<0xDD>(twos[0], twos[1]),
                );
                _mm512_storeu_ps(
                    scores.as_mut_ptr().add(block * LANES),
                    _mm512_permutexvar_ps(order, ones),
                );
            }
        }
        keys
    }

    /// `$name`: [`super::causal_rows_body`] for vectors of `$width` lanes (`$vector`), compiled
    /// with `$feature` (no FMA: the dots are unfused by specification), in module `$module`
    /// with its kernels: `scores` ([`super::BlockScores`], blocks of `$width` positions, one
    /// register) and `values` ([`super::WeightedValues`], `$width` columns per register), each
    /// running up to `$pairs` (row, head) pairs at once, so that one load of keys or values
    /// serves them all.
    ///
    /// Both compute dots in the reference's lane order ([`super::reference::dot`]): lane `l`
    /// of a dot sums its terms `l, l + 16, …` in order, and the 16 lanes meet in
    /// [`super::combine`]'s tree. Only a quarter of the lanes (`l`, `l + 8`, `l + 4`, `l + 12`,
    /// which the tree's first two levels join) is live at a time, so `$pairs` pairs' lanes fit
    /// in registers. A lane here starts from its first product instead of `+0 + product`: the
    /// two differ only when the lane is `-0` here and `+0` in the reference (`+0 + x = x` but
    /// for `x = -0`; a sum is `-0` only when both terms are), that difference stays a
    /// `-0`/`+0` one through every later add and the tree, and the final `+ +0` of each dot
    /// removes it (`-0 + +0 = +0`, `x + 0 = x` otherwise, NaN included). Zero padding
    /// (elements past `d`) adds `+0 * +0 = +0`, which keeps that relation too. Safety (every
    /// function): the CPU supports `$feature`.
    macro_rules! causal_rows_for {
        ($module:ident, $name:ident, $feature:literal, $width:path, $pairs:literal,
         $transpose:expr, $vector:ty, $zero:ident, $load:ident, $set1:ident, $mul:ident, $add:ident, $store:ident) => {
            pub(super) use $module::causal_rows as $name;

            mod $module {
                use std::arch::x86_64::*;

                use super::super::{BlockQueries, CausalRows, SlabValues, LANES};

                /// Vectors of `$width` lanes.
                const WIDTH: usize = $width;

                #[target_feature(enable = $feature)]
                pub(in super::super) unsafe fn causal_rows(rows: CausalRows<'_>, out: &mut [f32]) {
                    let kernels = super::super::CausalKernels {
                        transpose: $transpose,
                        scores,
                        values,
                    };
                    // SAFETY: the kernels need `$feature`, which the caller guarantees.
                    unsafe { super::super::causal_rows_body::<WIDTH>(rows, out, kernels) }
                }

                /// `a[u] + b[u]` for every pair `u`.
                #[inline(always)]
                fn add_pairs<const Q: usize>(mut a: [$vector; Q], b: [$vector; Q]) -> [$vector; Q] {
                    for u in 0..Q {
                        // SAFETY: inlined into functions compiled with `$feature` only.
                        a[u] = unsafe { $add(a[u], b[u]) };
                    }
                    a
                }

                /// `Q` queries from `queries` (`query_stride` apart) against one key block at
                /// `block` ([`super::super::transpose_keys`]), for the block's `WIDTH`
                /// positions at once: lanes `l`, `l + 8`, `l + 4` and `l + 12` of each dot
                /// (each over its elements `lane, lane + 16, …` in order) and their first two
                /// levels of [`super::super::combine`]'s tree, `(L[l] + L[l + 8]) + (L[l + 4]
                /// + L[l + 12])`. Safety: the block holds `d_padded` rows of `WIDTH` and the
                /// queries `Q * d_padded` values; `l < 4`.
                #[inline(always)]
                unsafe fn score_quarter<const Q: usize>(
                    l: usize,
                    queries: *const f32,
                    query_stride: usize,
                    d_padded: usize,
                    block: *const f32,
                ) -> [$vector; Q] {
                    // Lane offsets from lane `l`.
                    const OFFSETS: [usize; 4] = [0, 8, 4, 12];
                    // Lane `l`'s row of the block and element of each query, stepped one
                    // chunk of 16 elements at a time (wrapping: only read below `d_padded`).
                    let mut keys_at = block.wrapping_add(l * WIDTH);
                    let mut query_at = [queries.wrapping_add(l); Q];
                    for u in 1..Q {
                        query_at[u] = query_at[u - 1].wrapping_add(query_stride);
                    }
                    // SAFETY: every read is element `e < d_padded` of query `u < Q` and row `e`
                    // of the block, inside them by the caller's contract.
                    unsafe {
                        let mut acc = [[$zero(); Q]; 4];
                        for (acc, offset) in acc.iter_mut().zip(OFFSETS) {
                            let keys = $load(keys_at.add(offset * WIDTH));
                            for u in 0..Q {
                                acc[u] = $mul($set1(*query_at[u].add(offset)), keys);
                            }
                        }
                        for _ in 1..d_padded / LANES {
                            keys_at = keys_at.wrapping_add(LANES * WIDTH);
                            for at in query_at.iter_mut() {
                                *at = at.wrapping_add(LANES);
                            }
                            for (acc, offset) in acc.iter_mut().zip(OFFSETS) {
                                let keys = $load(keys_at.add(offset * WIDTH));
                                for u in 0..Q {
                                    let product = $mul($set1(*query_at[u].add(offset)), keys);
                                    acc[u] = $add(acc[u], product);
                                }
                            }
                        }
                        add_pairs(add_pairs(acc[0], acc[1]), add_pairs(acc[2], acc[3]))
                    }
                }

                /// The scores of `Q` queries against one key block, query `u`'s at
                /// `scores[u * stride..][..WIDTH]`: the quarters meet as the rest of the
                /// tree. Safety: as [`score_quarter`], and the scores hold
                /// `(Q - 1) * stride + WIDTH` values.
                #[inline(always)]
                unsafe fn score_block<const Q: usize>(
                    queries: *const f32,
                    query_stride: usize,
                    d_padded: usize,
                    block: *const f32,
                    scores: *mut f32,
                    stride: usize,
                ) {
                    let (stride_q, d) = (query_stride, d_padded);
                    // SAFETY: the caller's contract.
                    unsafe {
                        let half = add_pairs(
                            score_quarter::<Q>(0, queries, stride_q, d, block),
                            score_quarter::<Q>(2, queries, stride_q, d, block),
                        );
                        let sums = add_pairs(
                            half,
                            add_pairs(
                                score_quarter::<Q>(1, queries, stride_q, d, block),
                                score_quarter::<Q>(3, queries, stride_q, d, block),
                            ),
                        );
                        for u in 0..Q {
                            $store(scores.add(u * stride), $add(sums[u], $zero()));
                        }
                    }
                }

                /// The [`super::super::BlockScores`] for `$feature`.
                #[target_feature(enable = $feature)]
                unsafe fn scores(
                    job: BlockQueries<'_>,
                    block: &[f32],
                    scores: &mut [f32],
                    stride: usize,
                ) {
                    let BlockQueries {
                        queries,
                        query_stride,
                        count,
                    } = job;
                    let d_padded = block.len() / WIDTH;
                    assert!(
                        d_padded % LANES == 0
                            && block.len() == d_padded * WIDTH
                            && (count == 0
                                || ((count - 1) * query_stride + d_padded <= queries.len()
                                    && (count - 1) * stride + WIDTH <= scores.len())),
                        "score block out of range"
                    );
                    let mut first = 0;
                    while first < count {
                        let q = (count - first).min($pairs);
                        // SAFETY: queries `first..first + q` and their scores are inside the
                        // slices checked above; the caller guarantees `$feature`.
                        unsafe {
                            let queries = queries.as_ptr().add(first * query_stride);
                            let block = block.as_ptr();
                            let scores = scores.as_mut_ptr().add(first * stride);
                            let (query_stride, dims) = (query_stride, d_padded);
                            match q {
                                1 => score_block::<1>(
                                    queries,
                                    query_stride,
                                    dims,
                                    block,
                                    scores,
                                    stride,
                                ),
                                2 => score_block::<2>(
                                    queries,
                                    query_stride,
                                    dims,
                                    block,
                                    scores,
                                    stride,
                                ),
                                3 => score_block::<3>(
                                    queries,
                                    query_stride,
                                    dims,
                                    block,
                                    scores,
                                    stride,
                                ),
                                _ => score_block::<$pairs>(
                                    queries,
                                    query_stride,
                                    dims,
                                    block,
                                    scores,
                                    stride,
                                ),
                            }
                        }
                        first += q;
                    }
                }

                /// Lanes `l`, `l + 8`, `l + 4` and `l + 12` of `Q` pairs' weighted values
                /// and their first two tree levels, as [`score_quarter`]: lane `lane` sums
                /// positions `lane, lane + 16, … < keys`, each the slab's row (`WIDTH` columns
                /// at `slab + j * LANES`) times pair `u`'s weight `p[u * p_stride + j]`; a lane
                /// without positions is the reference's `+0`. Safety: the slab holds `keys`
                /// rows of `LANES`, the weights `(Q - 1) * p_stride + keys` values; `l < 4`.
                #[inline(always)]
                unsafe fn value_quarter<const Q: usize>(
                    l: usize,
                    p: *const f32,
                    p_stride: usize,
                    keys: usize,
                    slab: *const f32,
                ) -> [$vector; Q] {
                    // Lane offsets from lane `l`.
                    const OFFSETS: [usize; 4] = [0, 8, 4, 12];
                    let (chunks, tail) = (keys / LANES, keys % LANES);
                    // Lane `l`'s row of the slab and weight of each pair, stepped one chunk
                    // of 16 positions at a time (wrapping: only read below `keys`).
                    let mut values_at = slab.wrapping_add(l * LANES);
                    let mut p_at = [p.wrapping_add(l); Q];
                    for u in 1..Q {
                        p_at[u] = p_at[u - 1].wrapping_add(p_stride);
                    }
                    // SAFETY: every read is position `j < keys` of pair `u < Q` and row `j` of
                    // the slab, inside them by the caller's contract.
                    unsafe {
                        let mut acc = [[$zero(); Q]; 4];
                        if chunks > 0 {
                            for (acc, offset) in acc.iter_mut().zip(OFFSETS) {
                                let values = $load(values_at.add(offset * LANES));
                                for u in 0..Q {
                                    acc[u] = $mul($set1(*p_at[u].add(offset)), values);
                                }
                            }
                            for _ in 1..chunks {
                                values_at = values_at.wrapping_add(LANES * LANES);
                                for at in p_at.iter_mut() {
                                    *at = at.wrapping_add(LANES);
                                }
                                for (acc, offset) in acc.iter_mut().zip(OFFSETS) {
                                    let values = $load(values_at.add(offset * LANES));
                                    for u in 0..Q {
                                        let product = $mul($set1(*p_at[u].add(offset)), values);
                                        acc[u] = $add(acc[u], product);
                                    }
                                }
                            }
                            values_at = values_at.wrapping_add(LANES * LANES);
                            for at in p_at.iter_mut() {
                                *at = at.wrapping_add(LANES);
                            }
                        }
                        // The partial chunk: lanes below `tail` have one more position.
                        for (acc, offset) in acc.iter_mut().zip(OFFSETS) {
                            if l + offset < tail {
                                let values = $load(values_at.add(offset * LANES));
                                for u in 0..Q {
                                    let product = $mul($set1(*p_at[u].add(offset)), values);
                                    acc[u] = if chunks > 0 {
                                        $add(acc[u], product)
                                    } else {
                                        product
                                    };
                                }
                            }
                        }
                        add_pairs(add_pairs(acc[0], acc[1]), add_pairs(acc[2], acc[3]))
                    }
                }

                /// `Q` pairs' weighted values for `WIDTH` columns from `slab` (columns
                /// `0..columns` of them stored at `out + u * out_stride`). Safety: as
                /// [`value_quarter`], and `out` holds `(Q - 1) * out_stride + columns` values,
                /// `columns <= WIDTH`.
                #[inline(always)]
                unsafe fn value_columns<const Q: usize>(
                    p: *const f32,
                    p_stride: usize,
                    keys: usize,
                    slab: *const f32,
                    out: *mut f32,
                    out_stride: usize,
                    columns: usize,
                ) {
                    // SAFETY: the caller's contract.
                    unsafe {
                        let half = add_pairs(
                            value_quarter::<Q>(0, p, p_stride, keys, slab),
                            value_quarter::<Q>(2, p, p_stride, keys, slab),
                        );
                        let sums = add_pairs(
                            half,
                            add_pairs(
                                value_quarter::<Q>(1, p, p_stride, keys, slab),
                                value_quarter::<Q>(3, p, p_stride, keys, slab),
                            ),
                        );
                        for u in 0..Q {
                            let sum = $add(sums[u], $zero());
                            if columns == WIDTH {
                                $store(out.add(u * out_stride), sum);
                            } else {
                                let mut lanes = [0.0f32; WIDTH];
                                $store(lanes.as_mut_ptr(), sum);
                                std::ptr::copy_nonoverlapping(
                                    lanes.as_ptr(),
                                    out.add(u * out_stride),
                                    columns,
                                );
                            }
                        }
                    }
                }

                /// The [`super::super::WeightedValues`] for `$feature`.
                #[target_feature(enable = $feature)]
                unsafe fn values(
                    job: SlabValues<'_>,
                    out: &mut [f32],
                    out_row_stride: usize,
                    out_stride: usize,
                ) {
                    let SlabValues {
                        p,
                        p_row_stride,
                        p_stride,
                        first_keys,
                        rows,
                        slab,
                        pairs,
                        columns,
                    } = job;
                    if rows == 0 || pairs == 0 {
                        return;
                    }
                    // Every bound grows with the row, so the last row's bound all.
                    let keys_max = first_keys + rows - 1;
                    let last_pair = (rows - 1) * p_row_stride + (pairs - 1) * p_stride;
                    let last_out = (rows - 1) * out_row_stride + (pairs - 1) * out_stride;
                    assert!(
                        columns <= LANES
                            && keys_max * LANES <= slab.len()
                            && last_pair + keys_max <= p.len()
                            && last_out + columns <= out.len(),
                        "slab values out of range"
                    );
                    for i in 0..rows {
                        let keys = first_keys + i;
                        let mut first = 0;
                        while first < pairs {
                            let q = (pairs - first).min($pairs);
                            for c0 in (0..columns).step_by(WIDTH) {
                                let width = (columns - c0).min(WIDTH);
                                // SAFETY: row `i`'s pairs `first..first + q`, their weights
                                // and outputs and the slab's columns `c0..c0 + WIDTH` (`c0 +
                                // WIDTH <= LANES`) are inside the slices checked above; the
                                // caller guarantees `$feature`.
                                unsafe {
                                    let p_at = i * p_row_stride + first * p_stride;
                                    let p = p.as_ptr().add(p_at);
                                    let slab = slab.as_ptr().add(c0);
                                    let out_at = i * out_row_stride + first * out_stride + c0;
                                    let out = out.as_mut_ptr().add(out_at);
                                    let (stride, width) = (out_stride, width);
                                    match q {
                                        1 => value_columns::<1>(
                                            p, p_stride, keys, slab, out, stride, width,
                                        ),
                                        2 => value_columns::<2>(
                                            p, p_stride, keys, slab, out, stride, width,
                                        ),
                                        3 => value_columns::<3>(
                                            p, p_stride, keys, slab, out, stride, width,
                                        ),
                                        _ => value_columns::<$pairs>(
                                            p, p_stride, keys, slab, out, stride, width,
                                        ),
                                    }
                                }
                            }
                            first += q;
                        }
                    }
                }
            }
        };
    }
    causal_rows_for!(
        avx512,
        causal_rows_avx512,
        "avx512f",
        super::super::AVX512_KEYS,
        4,
        super::transpose_keys_avx512,
        __m512,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_mul_ps,
        _mm512_add_ps,
        _mm512_storeu_ps
    );
    causal_rows_for!(
        avx2,
        causal_rows_avx2,
        "avx2",
        super::super::AVX2_KEYS,
        2,
        super::super::transpose_keys::<WIDTH>,
        __m256,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_mul_ps,
        _mm256_add_ps,
        _mm256_storeu_ps
    );
    causal_rows_for!(
        sse2,
        causal_rows_sse2,
        "sse2",
        super::super::SSE2_KEYS,
        2,
        super::super::transpose_keys::<WIDTH>,
        __m128,
        _mm_setzero_ps,
        _mm_loadu_ps,
        _mm_set1_ps,
        _mm_mul_ps,
        _mm_add_ps,
        _mm_storeu_ps
    );

    /// [`super::transpose_keys`] for blocks of 16 positions, 16 keys by 16 elements at a time
    /// in registers ([`transpose_16x16`]) where `d` is whole chunks of 16; the last partial
    /// block (and any `d` that is not) by [`super::transpose_keys`]. Safety: the CPU supports
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose_keys_avx512(
        k: &[f32],
        kv_width: usize,
        d: usize,
        keys: usize,
        keys_t: &mut [f32],
    ) {
        const KEYS: usize = super::AVX512_KEYS;
        let full = if d.is_multiple_of(LANES) {
            keys / KEYS
        } else {
            0
        };
        let block_len = d * KEYS;
        for (b, block) in keys_t.chunks_exact_mut(block_len).take(full).enumerate() {
            let first = b * KEYS * kv_width;
            assert!(
                first + (KEYS - 1) * kv_width + d <= k.len(),
                "keys out of range"
            );
            for (e0, rows) in (0..d)
                .step_by(LANES)
                .zip(block.chunks_exact_mut(LANES * KEYS))
            {
                // SAFETY: elements `e0..e0 + 16 <= d` of keys `b * 16 + i` (`i < 16`) are
                // inside `k` (asserted above), `rows` holds 16 rows of 16; the CPU has
                // AVX-512F.
                unsafe {
                    let key = |i: usize| _mm512_loadu_ps(k.as_ptr().add(first + i * kv_width + e0));
                    let elements = transpose_16x16(std::array::from_fn(key));
                    for (e, row) in elements.into_iter().enumerate() {
                        _mm512_storeu_ps(rows.as_mut_ptr().add(e * KEYS), row);
                    }
                }
            }
        }
        if full * KEYS < keys {
            super::transpose_keys::<KEYS>(
                &k[full * KEYS * kv_width..],
                kv_width,
                d,
                keys - full * KEYS,
                &mut keys_t[full * block_len..],
            );
        }
    }

    /// The transpose of 16 rows of 16 values: `out[e]` lane `i` is `rows[i]` lane `e`
    /// (interleaves of pairs, then of pairs of pairs, then two 128-bit lane shuffles).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose_16x16(rows: [__m512; 16]) -> [__m512; 16] {
        {
            // `pairs[2m]`, `pairs[2m + 1]`: rows 2m and 2m + 1 interleaved, each 128-bit lane
            // `c` holding elements 4c, 4c + 1 (low) and 4c + 2, 4c + 3 (high).
            let pairs: [__m512; 16] = std::array::from_fn(|i| {
                let (a, b) = (rows[i / 2 * 2], rows[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            // `quads[4m + f]`: rows 4m..4m + 4, each 128-bit lane `c` element 4c + f.
            let quads: [__m512; 16] = std::array::from_fn(|i| {
                let (m, f) = (i / 4, i % 4);
                let a = _mm512_castps_pd(pairs[4 * m + f / 2]);
                let b = _mm512_castps_pd(pairs[4 * m + 2 + f / 2]);
                _mm512_castpd_ps(if f % 2 == 0 {
                    _mm512_unpacklo_pd(a, b)
                } else {
                    _mm512_unpackhi_pd(a, b)
                })
            });
            // `halves[8h + 2f + s]`: rows 8h..8h + 8, elements f + 4s (low lanes) and
            // f + 4s + 8 (high lanes) of rows 8h..8h + 4 then 8h + 4..8h + 8.
            let halves: [__m512; 16] = std::array::from_fn(|i| {
                let (h, f, s) = (i / 8, i % 8 / 2, i % 2);
                let (a, b) = (quads[8 * h + f], quads[8 * h + 4 + f]);
                if s == 0 {
                    _mm512_shuffle_f32x4::<0x88>(a, b)
                } else {
                    _mm512_shuffle_f32x4::<0xdd>(a, b)
                }
            });
            // Element `e = f + 4s + 8t`: lanes of rows 0..8 then 8..16.
            std::array::from_fn(|e| {
                let (f, s, t) = (e % 4, e / 4 % 2, e / 8);
                let (a, b) = (halves[2 * f + s], halves[8 + 2 * f + s]);
                if t == 0 {
                    _mm512_shuffle_f32x4::<0x88>(a, b)
                } else {
                    _mm512_shuffle_f32x4::<0xdd>(a, b)
                }
            })
        }
    }

    /// `$name`: `super::$body` (an in-place activation) compiled with `$feature` (no FMA:
    /// GELU's sequence, libm's `expf` and SiLU have no fused product). Safety: the CPU supports
    /// `$feature`.
    macro_rules! in_place_for {
        ($name:ident, $feature:literal, $body:ident) => {
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(values: &mut [f32]) {
                super::$body(values)
            }
        };
    }
    /// [`super::gelu_in_place`] with AVX-512 written out ([`Gelu`] in [`map_in_place`]). The
    /// autovectorised loop took 0.92 ns an element, about twice its operations' throughput:
    /// each vector is one long chain (a division and two Horner sequences), and a loop of them
    /// kept too few in flight; four side by side take 0.70. Safety: the CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu_avx512(values: &mut [f32]) {
        map_in_place::<Gelu>(values)
    }

    /// An elementwise function written out on AVX-512 vectors for [`map_in_place`].
    trait VectorMap {
        /// A tail's padding: a value [`VectorMap::vectors`] takes.
        const PAD: f32;
        /// The function of every lane of `N` vectors computed side by side (every step maps
        /// over the vectors before the next, so their chains interleave), or `None` when a
        /// lane needs the scalar path. Safety: the CPU supports AVX-512F.
        unsafe fn vectors<const N: usize>(x: [__m512; N]) -> Option<[__m512; N]>;
        /// The scalar reference, in place.
        fn scalar(values: &mut [f32]);
    }

    /// `M` over `values` in place: [`SIDE_BY_SIDE`] vectors at a time, then one at a time (a
    /// vector `M` refuses through its scalar path), the tail in a padded vector. Inlined into
    /// callers compiled with AVX-512F. Safety: the CPU supports AVX-512F.
    #[inline(always)]
    unsafe fn map_in_place<M: VectorMap>(values: &mut [f32]) {
        let (groups, rest) = values.as_chunks_mut::<{ SIDE_BY_SIDE * LANES }>();
        for group in groups {
            let x: [__m512; SIDE_BY_SIDE] =
                std::array::from_fn(|i| _mm512_loadu_ps(group.as_ptr().add(i * LANES)));
            match M::vectors(x) {
                Some(y) => {
                    for (i, y) in y.into_iter().enumerate() {
                        _mm512_storeu_ps(group.as_mut_ptr().add(i * LANES), y);
                    }
                }
                None => {
                    for chunk in group.as_chunks_mut::<LANES>().0 {
                        map_vector::<M>(chunk);
                    }
                }
            }
        }
        let (chunks, tail) = rest.as_chunks_mut::<LANES>();
        for chunk in chunks {
            map_vector::<M>(chunk);
        }
        if !tail.is_empty() {
            let mut lanes = [M::PAD; LANES];
            lanes[..tail.len()].copy_from_slice(tail);
            map_vector::<M>(&mut lanes);
            let len = tail.len();
            tail.copy_from_slice(&lanes[..len]);
        }
    }

    /// [`map_in_place`] of one vector. Safety: as there.
    #[inline(always)]
    unsafe fn map_vector<M: VectorMap>(chunk: &mut [f32; LANES]) {
        match M::vectors([_mm512_loadu_ps(chunk.as_ptr())]) {
            Some([y]) => _mm512_storeu_ps(chunk.as_mut_ptr(), y),
            None => M::scalar(chunk),
        }
    }

    /// Vectors the elementwise AVX-512 loops compute side by side, so that the long chains
    /// of dependent operations of several are in flight at once.
    const SIDE_BY_SIDE: usize = 4;

    /// [`reference::gelu_erf`], operation for operation (the `erf` and its `exp` on an argument
    /// at or below zero, as [`super::softmax_exp`]); a NaN lane (whose payload the scalar
    /// reference decides) takes the scalar path.
    struct Gelu;

    impl VectorMap for Gelu {
        const PAD: f32 = 0.0;

        fn scalar(values: &mut [f32]) {
            super::gelu_in_place(values)
        }

        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn vectors<const N: usize>(x: [__m512; N]) -> Option<[__m512; N]> {
            use crate::reference::erf_constants::{A, P};
            let nan = x
                .iter()
                .fold(0, |m, &v| m | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v));
            if nan != 0 {
                return None;
            }
            let splat = _mm512_set1_ps;
            let int = _mm512_set1_epi32;
            let each = |f: &dyn Fn(usize) -> __m512| -> [__m512; N] { std::array::from_fn(f) };
            let mul = |a: [__m512; N], b: __m512| each(&|i| _mm512_mul_ps(a[i], b));
            let horner = |t: [__m512; N], coefficients: &[f32]| {
                let mut q = [splat(coefficients[0]); N];
                for &c in &coefficients[1..] {
                    q = each(&|i| _mm512_add_ps(_mm512_mul_ps(q[i], t[i]), splat(c)));
                }
                q
            };
            let sign_bit = int(i32::MIN);
            let half = mul(x, splat(0.5));
            let inner = mul(x, splat(std::f32::consts::FRAC_1_SQRT_2));
            let a = each(&|i| {
                _mm512_castsi512_ps(_mm512_andnot_si512(sign_bit, _mm512_castps_si512(inner[i])))
            });
            // erf: `t = 1 / (1 + P·a)`, `q = t·(A1 + t·(… + t·A5))`.
            let t = each(&|i| {
                _mm512_div_ps(
                    splat(1.0),
                    _mm512_add_ps(splat(1.0), _mm512_mul_ps(splat(P), a[i])),
                )
            });
            let q = horner(t, &A);
            let q = each(&|i| _mm512_mul_ps(q[i], t[i]));
            // exp(-(a·a)): the argument is at or below zero and not NaN.
            let z = each(&|i| {
                _mm512_castsi512_ps(_mm512_xor_si512(
                    _mm512_castps_si512(_mm512_mul_ps(a[i], a[i])),
                    sign_bit,
                ))
            });
            let e = exp_vectors::<N, false>(z);
            // `y = 1 - q·e` with the sign of `inner`, then `half · (1 + erf)`.
            Some(each(&|i| {
                let y = _mm512_sub_ps(splat(1.0), _mm512_mul_ps(q[i], e[i]));
                let erf = _mm512_or_si512(
                    _mm512_andnot_si512(sign_bit, _mm512_castps_si512(y)),
                    _mm512_and_si512(sign_bit, _mm512_castps_si512(inner[i])),
                );
                _mm512_mul_ps(half[i], _mm512_add_ps(splat(1.0), _mm512_castsi512_ps(erf)))
            }))
        }
    }
    in_place_for!(gelu_avx2, "avx2", gelu_in_place);
    /// [`super::silu_in_place`] with AVX-512 written out: `expf` ([`super::expf_lanes`]'s
    /// operations, one vector each) and SiLU's division on sixteen lanes, chunks with a lane
    /// off `expf`'s vector path ([`super::expf_lane_is_plain`]) lane by lane as there. The
    /// autovectorised loop took 0.80 ns an element (47 cycles a chunk), no faster than AVX2's.
    /// Safety: the CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn silu_avx512(values: &mut [f32]) {
        silu_slice_avx512(values)
    }

    /// [`silu_avx512`] on `cols` values from every `stride` (a block of rows of a wider
    /// matrix) in one call. Safety: the CPU supports AVX-512F, and those values are
    /// initialised.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn silu_rows_avx512(
        values: &mut [MaybeUninit<f32>],
        stride: usize,
        cols: usize,
    ) {
        for row in values.chunks_mut(stride.max(1)) {
            let cols = cols.min(row.len());
            // SAFETY: the caller's contract.
            silu_slice_avx512(unsafe { super::assume_init(&mut row[..cols]) });
        }
    }

    /// [`reference::exp`] of every lane of `x` (no lane NaN), operation for operation, `N`
    /// vectors side by side. Without `FULL` every lane is at or below zero, where the upper
    /// clamp and the `+inf` select change nothing and are left out (as
    /// [`super::softmax_exp`]). Safety: the CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn exp_vectors<const N: usize, const FULL: bool>(x: [__m512; N]) -> [__m512; N] {
        use crate::reference::exp_constants::*;
        use crate::reference::{EXP_X_MAX, EXP_X_MIN};
        let splat = _mm512_set1_ps;
        let int = _mm512_set1_epi32;
        let each = |f: &dyn Fn(usize) -> __m512| -> [__m512; N] { std::array::from_fn(f) };
        let clamped = each(&|i| {
            let low = _mm512_max_ps(x[i], splat(EXP_X_MIN));
            match FULL {
                true => _mm512_min_ps(low, splat(EXP_X_MAX)),
                false => low,
            }
        });
        let rounded = each(&|i| {
            _mm512_add_ps(
                _mm512_mul_ps(clamped[i], splat(std::f32::consts::LOG2_E)),
                splat(ROUND),
            )
        });
        let n = each(&|i| _mm512_sub_ps(rounded[i], splat(ROUND)));
        let r = each(&|i| {
            _mm512_sub_ps(
                _mm512_sub_ps(clamped[i], _mm512_mul_ps(n[i], splat(LN2_HI))),
                _mm512_mul_ps(n[i], splat(LN2_LO)),
            )
        });
        let mut p = [splat(TAYLOR[0]); N];
        for &c in &TAYLOR[1..] {
            p = each(&|i| _mm512_add_ps(_mm512_mul_ps(p[i], r[i]), splat(c)));
        }
        each(&|i| {
            // `n` as an integer, halved toward zero; `2^e` from its biased exponent.
            let n = _mm512_sub_epi32(_mm512_castps_si512(rounded[i]), int(ROUND.to_bits() as i32));
            let low = _mm512_srai_epi32::<1>(_mm512_add_epi32(n, _mm512_srli_epi32::<31>(n)));
            let scale = |e: __m512i| {
                _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(e, int(127))))
            };
            let y = _mm512_mul_ps(
                _mm512_mul_ps(p[i], scale(low)),
                scale(_mm512_sub_epi32(n, low)),
            );
            let y = match FULL {
                true => {
                    let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x[i], splat(EXP_X_MAX));
                    _mm512_mask_blend_ps(over, y, splat(f32::INFINITY))
                }
                false => y,
            };
            let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x[i], splat(EXP_X_MIN));
            _mm512_mask_blend_ps(under, y, _mm512_setzero_ps())
        })
    }

    /// [`reference::exp`] on the whole f32 range; a NaN lane (whose payload the scalar
    /// reference decides) takes the scalar path.
    pub(super) struct Exp;

    impl VectorMap for Exp {
        const PAD: f32 = 0.0;

        fn scalar(values: &mut [f32]) {
            super::map_by_lanes(values, crate::reference::exp)
        }

        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn vectors<const N: usize>(x: [__m512; N]) -> Option<[__m512; N]> {
            if x.iter()
                .any(|&v| _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v) != 0)
            {
                return None;
            }
            Some(exp_vectors::<N, true>(x))
        }
    }

    impl super::ExpInPlace for Exp {
        /// Safety: the CPU supports AVX-512F.
        #[inline(always)]
        unsafe fn exp_in_place(values: &mut [f32]) {
            unsafe { map_in_place::<Exp>(values) }
        }
    }

    /// [`silu_avx512`]'s loop, inlined into its callers. Safety: as theirs.
    #[inline(always)]
    unsafe fn silu_slice_avx512(values: &mut [f32]) {
        map_in_place::<Silu>(values)
    }

    /// `x / (1 + expf(-x))` ([`super::expf_lanes`]'s operations); a lane off `expf`'s vector
    /// path ([`super::expf_lane_is_plain`]) takes the scalar path.
    struct Silu;

    impl VectorMap for Silu {
        const PAD: f32 = 1.0;

        fn scalar(values: &mut [f32]) {
            super::silu_scalar(values)
        }

        /// One vector after another: SiLU's two divisions bound it, not its chain (side by
        /// side ran no faster).
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn vectors<const N: usize>(x: [__m512; N]) -> Option<[__m512; N]> {
            let mut y = x;
            for (x, y) in x.iter().zip(&mut y) {
                *y = silu_vector(*x)?;
            }
            Some(y)
        }
    }

    /// `x / (1 + expf(-x))` of every lane, or `None` when a lane is off `expf`'s vector path.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn silu_vector(x: __m512) -> Option<__m512> {
        use super::expf_constants::*;
        let splat = _mm512_set1_ps;
        let int = _mm512_set1_epi32;
        // `-x` has the magnitude of `x`.
        let v = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), int(i32::MIN)));
        let bits = _mm512_castps_si512(v);
        let magnitude = _mm512_and_si512(bits, int(0x7fff_ffff));
        let plain = _mm512_cmpgt_epi32_mask(magnitude, int(super::EXPF_TINY_BITS as i32))
            & _mm512_cmplt_epi32_mask(magnitude, int(super::EXPF_LARGE_BITS as i32));
        if plain != 0xffff {
            return None;
        }
        let negative = _mm512_cmplt_epi32_mask(bits, _mm512_setzero_si512());
        let half = _mm512_mask_blend_ps(negative, splat(0.5), splat(-0.5));
        let k_far = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(
            _mm512_add_ps(_mm512_mul_ps(splat(INV_LN2), v), half),
        );
        let k_near = _mm512_mask_blend_ps(negative, splat(1.0), splat(-1.0));
        let far = _mm512_cmpgt_epi32_mask(magnitude, int(FAR_BITS as i32));
        let near = _mm512_cmpgt_epi32_mask(magnitude, int(NEAR_BITS as i32));
        let kf = _mm512_mask_blend_ps(far, _mm512_maskz_mov_ps(near, k_near), k_far);
        let hi = _mm512_sub_ps(v, _mm512_mul_ps(kf, splat(LN2_HI)));
        let lo = _mm512_mul_ps(kf, splat(LN2_LO));
        let r = _mm512_sub_ps(hi, lo);
        let rr = _mm512_mul_ps(r, r);
        let p = _mm512_add_ps(splat(P1), _mm512_mul_ps(rr, splat(P2)));
        let c = _mm512_sub_ps(r, _mm512_mul_ps(rr, p));
        let quotient = _mm512_div_ps(_mm512_mul_ps(r, c), _mm512_sub_ps(splat(2.0), c));
        let y = _mm512_add_ps(splat(1.0), _mm512_add_ps(_mm512_sub_ps(quotient, lo), hi));
        let biased = _mm512_castps_si512(_mm512_add_ps(kf, splat(MAGIC)));
        let scale = _mm512_slli_epi32::<23>(_mm512_sub_epi32(biased, int(MAGIC_BIAS as i32)));
        let e = _mm512_mul_ps(y, _mm512_castsi512_ps(scale));
        Some(_mm512_div_ps(x, _mm512_add_ps(splat(1.0), e)))
    }
    in_place_for!(silu_avx2, "avx2", silu_in_place);

    /// `$name`: [`super::zip_body`] compiled with `$feature`. Safety: the CPU supports it.
    macro_rules! zip_for {
        ($name:ident, $feature:literal) => {
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(x: &[f32], y: &[f32], out: &mut [f32], op: super::BinaryOp) {
                super::zip_body(x, y, out, op)
            }
        };
    }
    zip_for!(zip_avx512, "avx512f");
    zip_for!(zip_avx2, "avx2");

    /// `$name`: [`super::rmsnorm_rows`] compiled with `$feature`. Safety: the CPU supports it.
    macro_rules! rmsnorm_for {
        ($name:ident, $feature:literal) => {
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(
                x: &[f32],
                gamma: &[f32],
                eps: f32,
                n: usize,
                out: &mut [f32],
            ) {
                super::rmsnorm_rows(x, gamma, eps, n, out)
            }
        };
    }
    rmsnorm_for!(rmsnorm_rows_avx512, "avx512f");
    rmsnorm_for!(rmsnorm_rows_avx2, "avx2");
}

/// [`reference::gelu_erf`] over `values` in place; inlined into one copy per instruction set.
#[inline(always)]
fn gelu_in_place(values: &mut [f32]) {
    map_by_lanes(values, reference::gelu_erf);
}

/// `dst.copy_from_slice(src)`, a row of 32 or 16 floats (a full tile row, one MiniLM head) as
/// one fixed-size move: inlined vector moves instead of a `memcpy` call per short row.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    if !copy_fixed::<PANEL_COLS_MAX>(dst, src) && !copy_fixed::<LANES>(dst, src) {
        copy_other(dst, src);
    }
}

/// `dst.copy_from_slice(src)` out of line: kept apart so LLVM does not merge the fixed-size
/// moves of [`copy_row`] into one `memcpy` call of a variable length.
#[inline(never)]
fn copy_other(dst: &mut [f32], src: &[f32]) {
    dst.copy_from_slice(src);
}

/// Copies `src` into `dst` and returns `true` when both hold exactly `N` floats.
#[inline(always)]
fn copy_fixed<const N: usize>(dst: &mut [f32], src: &[f32]) -> bool {
    match (<&mut [f32; N]>::try_from(dst), <&[f32; N]>::try_from(src)) {
        (Ok(dst), Ok(src)) => {
            *dst = *src;
            true
        }
        _ => false,
    }
}

/// `values[i] = f(values[i])`, [`LANES`] at a time through a fixed-size array (one vector
/// register per step once compiled for AVX-512), the tail padded with zeros into one more
/// array, so short rows (a 32-column tile row, a 22-token softmax row) run as vectors too
/// instead of falling into a scalar remainder loop. `f` sees each element once; the padding's
/// results are dropped.
#[inline(always)]
fn map_by_lanes(values: &mut [f32], f: impl Fn(f32) -> f32) {
    let mut chunks = values.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        // An optimisation barrier between chunks: without it LLVM vectorises a cheap `f`
        // (a division) across 16 chunks with gathers and scatters instead of within one.
        std::hint::black_box(());
        let mut lanes = [0.0f32; LANES];
        lanes.copy_from_slice(chunk);
        for value in lanes.iter_mut() {
            *value = f(*value);
        }
        chunk.copy_from_slice(&lanes);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut lanes = [0.0f32; LANES];
        lanes[..tail.len()].copy_from_slice(tail);
        for value in lanes.iter_mut() {
            *value = f(*value);
        }
        tail.copy_from_slice(&lanes[..tail.len()]);
    }
}

/// `activation` over `values` in place, GELU's loop vectorised for `isa` (a supported one).
pub(crate) fn activate(isa: Isa, activation: Activation, values: &mut [f32]) {
    match (activation, isa) {
        (Activation::Identity, _) => {}
        // SAFETY: the callers pass an `isa` the CPU supports (checked by `supported_isa`).
        #[cfg(target_arch = "x86_64")]
        (Activation::GeluErf, Isa::Avx512) => unsafe { x86::gelu_avx512(values) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Activation::GeluErf, Isa::Avx2) => unsafe { x86::gelu_avx2(values) },
        (Activation::GeluErf, _) => gelu_in_place(values),
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Activation::Silu, Isa::Avx512) => unsafe { x86::silu_avx512(values) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Activation::Silu, Isa::Avx2) => unsafe { x86::silu_avx2(values) },
        (Activation::Silu, _) => silu_in_place(values),
    }
}

/// [`activate`] on the first `cols` values of every `stride` of `values` (rows of a block of
/// a wider matrix, the values between them possibly not written yet), in one call where the
/// instruction set has a row loop of its own. Safety: those values are initialised.
pub(crate) unsafe fn activate_rows(
    isa: Isa,
    activation: Activation,
    values: &mut [MaybeUninit<f32>],
    stride: usize,
    cols: usize,
) {
    match (activation, isa) {
        (Activation::Identity, _) => {}
        // SAFETY: the callers pass an `isa` the CPU supports (checked by `supported_isa`),
        // and the values as the contract says.
        #[cfg(target_arch = "x86_64")]
        (Activation::Silu, Isa::Avx512) => unsafe { x86::silu_rows_avx512(values, stride, cols) },
        _ => {
            for row in values.chunks_mut(stride.max(1)) {
                let cols = cols.min(row.len());
                // SAFETY: the caller's contract.
                activate(isa, activation, unsafe { assume_init(&mut row[..cols]) });
            }
        }
    }
}

/// `values` as the initialised floats they hold. Safety: every one of them is initialised.
pub(crate) unsafe fn assume_init(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the caller's contract.
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// [`reference::silu`] over `values` in place, [`LANES`] at a time ([`silu_lanes`]); the tail
/// padded with ones (a value on the vector path) and dropped. Inlined into one copy per
/// instruction set.
#[inline(always)]
fn silu_in_place(values: &mut [f32]) {
    let mut chunks = values.as_chunks_mut::<LANES>();
    for chunk in chunks.0.iter_mut() {
        silu_lanes(chunk);
    }
    let tail = &mut chunks.1;
    if !tail.is_empty() {
        let mut lanes = [1.0f32; LANES];
        lanes[..tail.len()].copy_from_slice(tail);
        silu_lanes(&mut lanes);
        let len = tail.len();
        tail.copy_from_slice(&lanes[..len]);
    }
}

/// [`reference::silu`] of each lane in place: `x / (1 + expf(-x))` with [`expf_lanes`] when
/// every lane is on `expf`'s vector path ([`expf_lane_is_plain`]); otherwise the chunk takes
/// the scalar function lane by lane (rare in activations: `|x| ≥ 87.3`, `|x| ≤ 2^-14`, NaN).
#[inline(always)]
fn silu_lanes(x: &mut [f32; LANES]) {
    let mut plain = true;
    for value in x.iter() {
        // `-x` has the magnitude of `x`.
        plain &= expf_lane_is_plain(*value);
    }
    if !plain {
        silu_scalar(x);
        return;
    }
    let mut negated = [0.0f32; LANES];
    for l in 0..LANES {
        negated[l] = -x[l];
    }
    let exps = expf_lanes(negated);
    for l in 0..LANES {
        x[l] /= 1.0 + exps[l];
    }
}

/// [`reference::silu`] of each lane, out of line (the rare path of [`silu_lanes`]).
#[inline(never)]
#[cold]
fn silu_scalar(x: &mut [f32]) {
    for value in x.iter_mut() {
        *value = reference::silu(*value);
    }
}

/// Below this `|x|` (bits of 2^-14) `libm::expf` returns `1 + x`: lanes there take the scalar call.
const EXPF_TINY_BITS: u32 = 0x3900_0000;
/// From this `|x|` (bits of 87.33655) `libm::expf` takes its overflow, underflow and NaN
/// branches, or a scale beyond one multiply: lanes there take the scalar call.
const EXPF_LARGE_BITS: u32 = 0x42ae_ac50;

/// Whether `libm::expf(x)` takes the path [`expf_lanes`] computes: `2^-14 < |x| < 87.33655`.
#[inline(always)]
fn expf_lane_is_plain(x: f32) -> bool {
    let magnitude = x.to_bits() & 0x7fff_ffff;
    magnitude > EXPF_TINY_BITS && magnitude < EXPF_LARGE_BITS
}

/// `libm::expf`'s constants, by their bits, and the edges of its argument reduction.
mod expf_constants {
    pub(super) const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
    pub(super) const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
    pub(super) const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
    pub(super) const P1: f32 = f32::from_bits(0x3e2a_aa8f);
    pub(super) const P2: f32 = f32::from_bits(0xbb35_5215);
    /// `k + 127` read back from the bits of `k + MAGIC` (exact for integer `|k| < 2^22`).
    pub(super) const MAGIC: f32 = 12_582_912.0;
    pub(super) const MAGIC_BIAS: u32 = 0x4b40_0000 - 0x7f;
    /// Above this `|x|` (bits of 1.5 ln 2) `k` is `(int)(x / ln 2 ± 0.5)`.
    pub(super) const FAR_BITS: u32 = 0x3f85_1592;
    /// Above this `|x|` (bits of 0.5 ln 2), and up to [`FAR_BITS`], `k` is ±1; below, 0.
    pub(super) const NEAR_BITS: u32 = 0x3eb1_7218;
}

/// `libm::expf` (libm 0.2, FreeBSD's `e_expf.c`) of every lane, operation for operation, so
/// the bits are the same, for lanes that are all [`expf_lane_is_plain`] (the caller checks):
/// the argument reduction, the rational approximation and the one-multiply scale `2^k` (`k`
/// within [-126, 126] there, where `scalbnf` is that one multiply; `k = 0` multiplies by 1,
/// exact) as branch-free selects that vectorise. `silu_equals_the_reference_on_every_path`
/// checks it against `libm::expf` at every branch edge and over a sweep of bit patterns.
#[inline(always)]
fn expf_lanes(x: [f32; LANES]) -> [f32; LANES] {
    use expf_constants::*;
    let mut out = [0.0f32; LANES];
    for l in 0..LANES {
        let bits = x[l].to_bits();
        let negative = bits >> 31 != 0;
        let magnitude = bits & 0x7fff_ffff;
        let half = if negative { -0.5f32 } else { 0.5 };
        // libm's `(int)(invln2 * x + half)` as a float: `trunc` vectorises where `as i32`'s
        // saturation does not; on plain lanes it is an integer in [-126, 126], never -0.
        let k_far = (INV_LN2 * x[l] + half).trunc();
        let k_near = if negative { -1.0f32 } else { 1.0 };
        let kf = if magnitude > FAR_BITS {
            k_far
        } else if magnitude > NEAR_BITS {
            k_near
        } else {
            0.0
        };
        // With k = 0 these are libm's `hi = x, lo = 0` exactly (x - 0 * c = x, 0 * c = 0).
        let hi = x[l] - kf * LN2_HI;
        let lo = kf * LN2_LO;
        let r = hi - lo;
        let rr = r * r;
        let c = r - rr * (P1 + rr * P2);
        let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
        // 2^k: the biased exponent `k + 127` (in [1, 253] on plain lanes) shifted into place.
        let scale = f32::from_bits((kf + MAGIC).to_bits().wrapping_sub(MAGIC_BIAS) << 23);
        out[l] = y * scale;
    }
    out
}

impl TileKernel {
    /// The kernel for `isa` (the caller has checked that the CPU supports it).
    fn for_isa(isa: Isa) -> TileKernel {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::AVX512,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::AVX2,
            _ => PORTABLE,
        }
    }
}

thread_local! {
    /// Each thread's packed panels of `b`, reused across calls (grown, never shrunk), so the
    /// matmul allocates only the first time a thread sees a larger `b`.
    static PANELS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Every panel of `b` (`n` rows of `k`) for a kernel of `cols` columns, panel after panel:
/// `packed[(j / cols) * k * cols + p * cols + c] = b[(j + c) * k + p]`, `0` past row `n`.
fn pack_panels(b: &[f32], n: usize, k: usize, cols: usize, packed: &mut [f32]) {
    pack_strided_panels(b, k, n, k, cols, packed);
}

/// [`pack_panels`] of a `b` whose row `r` is `b[r * stride..r * stride + k]` (one head's slice
/// of a wider activation row, read in place).
fn pack_strided_panels(
    b: &[f32],
    stride: usize,
    n: usize,
    k: usize,
    cols: usize,
    packed: &mut [f32],
) {
    for (panel_index, panel) in packed.chunks_exact_mut(k * cols).enumerate() {
        let first = panel_index * cols;
        let width = cols.min(n - first);
        // Row by row of `b` (each read once, in order); the panel's columns past `n` are 0.
        for c in 0..width {
            let row = &b[(first + c) * stride..(first + c) * stride + k];
            for (value, packed_row) in row.iter().zip(panel.chunks_exact_mut(cols)) {
                packed_row[c] = *value;
            }
        }
        if width < cols {
            for packed_row in panel.chunks_exact_mut(cols) {
                packed_row[width..].fill(0.0);
            }
        }
    }
}

/// Shape and epilogue of one matrix multiply.
#[derive(Clone, Copy)]
pub struct Linear<'a> {
    pub b: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub activation: Activation,
    pub n: usize,
    pub k: usize,
}

impl Linear<'_> {
    #[inline(always)]
    fn finish(&self, j: usize, sum: f32) -> f32 {
        let value = match self.bias {
            Some(bias) => sum + bias[j],
            None => sum,
        };
        self.activation.apply(value)
    }

    /// [`Linear::finish`] over one tile of sums in place (rows `..rows`, columns
    /// `j..j + width` of the result in `sums[r][..width]`): the bias added to each row unless
    /// the kernel added it (`biased`), then the activation over the tile ([`activate`] for
    /// `isa`: the same operations per element, in loops that vectorise where the activation
    /// does). Fused into the tile while it is in L1, so the result is stored once.
    #[inline(always)]
    fn finish_tile(
        &self,
        isa: Isa,
        j: usize,
        (rows, width): (usize, usize),
        biased: bool,
        sums: &mut TileSums,
    ) {
        if let Some(bias) = self.bias.filter(|_| !biased) {
            for row in sums[..rows].iter_mut() {
                for (sum, &b) in row[..width].iter_mut().zip(&bias[j..j + width]) {
                    *sum = *sum + b;
                }
            }
        }
        if self.activation == Activation::Identity {
            return;
        }
        if width == PANEL_COLS_MAX {
            // One call over the whole tile: the rows are contiguous.
            activate(isa, self.activation, sums[..rows].as_flattened_mut());
        } else {
            for row in sums[..rows].iter_mut() {
                activate(isa, self.activation, &mut row[..width]);
            }
        }
    }

    /// `out` (rows `first_row..` of the result) from the matching rows of `a`: for each packed
    /// panel of `kernel.cols` columns of `b` ([`pack_panels`]), every tile of rows; the tile
    /// shape only groups independent outputs.
    fn rows(
        &self,
        kernel: TileKernel,
        a: &[f32],
        first_row: usize,
        out: &mut [f32],
        packed: &[f32],
    ) {
        let panel_len = self.k * kernel.cols;
        let block_rows =
            (A_BLOCK_BYTES / (size_of::<f32>() * self.k)) / kernel.tile_rows * kernel.tile_rows;
        let block_rows = block_rows.max(kernel.tile_rows);
        for (b, out) in out.chunks_mut(block_rows * self.n).enumerate() {
            let first_row = first_row + b * block_rows;
            for (panel_index, panel) in packed.chunks_exact(panel_len).enumerate() {
                self.panel_rows(kernel, a, first_row, out, panel, panel_index * kernel.cols);
            }
        }
    }

    /// Columns `j..j + kernel.cols` (one packed `panel`) of `out`, every tile of rows.
    fn panel_rows(
        &self,
        kernel: TileKernel,
        a: &[f32],
        first_row: usize,
        out: &mut [f32],
        panel: &[f32],
        j: usize,
    ) {
        let (n, k, cols) = (self.n, self.k, kernel.cols);
        let rows = out.len() / n;
        let width = cols.min(n - j);
        // A whole panel's bias is added in the kernel; a partial one's in `finish_tile`.
        let whole = width == cols;
        let bias = match self.bias {
            Some(bias) if whole => bias[j..j + cols].as_ptr(),
            _ => std::ptr::null(),
        };
        // A whole panel without an activation is stored straight into `out`; otherwise the
        // tile goes through `sums` (the activation runs on it while it is in L1).
        let direct = whole && self.activation == Activation::Identity;
        let mut sums: TileSums = [[0.0; PANEL_COLS_MAX]; TILE_ROWS_MAX];
        let mut i = 0;
        while i < rows {
            let tile_rows = kernel.tile_rows.min(rows - i);
            let a_tile = &a[(first_row + i) * k..(first_row + i + tile_rows) * k];
            let tile_out = match direct {
                true => TileOut {
                    ptr: out[i * n + j..].as_mut_ptr(),
                    stride: n,
                    bias,
                },
                false => TileOut {
                    ptr: sums.as_mut_ptr().cast(),
                    stride: PANEL_COLS_MAX,
                    bias,
                },
            };
            // SAFETY: `kernel` was chosen for a supported ISA; the slices have the lengths
            // the contract asks for (`a_tile` holds `tile_rows` rows, `panel` `k * cols`);
            // `out` holds rows `i..i + tile_rows` of `n` values and `j + cols <= n` when
            // `direct`, `sums` holds `TILE_ROWS_MAX` rows of `PANEL_COLS_MAX >= cols`, and a
            // bias is passed only for a whole panel (`j + cols <= n`).
            unsafe { (kernel.tile)(tile_rows, a_tile, k, panel, tile_out) };
            if !direct {
                self.finish_tile(kernel.isa, j, (tile_rows, width), whole, &mut sums);
                for r in 0..tile_rows {
                    copy_row(&mut out[(i + r) * n + j..][..width], &sums[r][..width]);
                }
            }
            i += tile_rows;
        }
    }
}

/// [`reference::linear`]: packed panels of `b`, register-tiled FMA micro-kernels, threads over
/// rows. `a: [m, k]`, `out: [m, n]` with `m = out.len() / n` (lengths checked by the caller).
/// An instruction set the CPU lacks falls back to the portable kernel (same bits).
pub fn linear(linear: &Linear<'_>, a: &[f32], out: &mut [f32], compute: Compute) {
    linear_packed(linear, None, a, out, compute);
}

/// A matrix `b` (`n` rows of `k`, a weight) packed once into the panels of the micro-kernel an
/// instruction set runs, so [`linear_packed`] does not pack it on every call. The panel width
/// is the kernel's (32 columns for AVX-512, 16 for AVX2 and the portable kernel).
#[derive(Clone, Debug)]
pub struct PackedB {
    values: Vec<f32>,
    n: usize,
    k: usize,
    cols: usize,
}

impl PackedB {
    /// `b` packed for the kernel that `isa` runs on this CPU (the portable one where the CPU
    /// lacks `isa`); `None` when `b` is not `n * k` floats or has no column to pack (`k == 0`).
    pub fn new(b: &[f32], n: usize, k: usize, isa: Isa) -> Option<PackedB> {
        if k == 0 || n.checked_mul(k) != Some(b.len()) {
            return None;
        }
        let cols = TileKernel::for_isa(supported_isa(isa)).cols;
        let mut values = vec![0.0f32; n.div_ceil(cols).checked_mul(k * cols)?];
        pack_panels(b, n, k, cols, &mut values);
        Some(PackedB { values, n, k, cols })
    }

    /// Bytes the packed copy holds.
    pub fn bytes(&self) -> usize {
        self.values.len() * std::mem::size_of::<f32>()
    }

    /// Whether this is `linear.b`'s shape packed for `kernel`'s panel width.
    fn fits(&self, linear: &Linear<'_>, kernel: TileKernel) -> bool {
        self.n == linear.n && self.k == linear.k && self.cols == kernel.cols
    }
}

/// [`linear`], reading `b`'s panels from `packed` when it fits the call (the caller packed
/// `linear.b` itself, with the shape and the panel width of the kernel `compute` picks), and
/// packing `b` here as [`linear`] does otherwise. The same bits either way: packing only moves
/// values.
pub fn linear_packed(
    linear: &Linear<'_>,
    packed: Option<&PackedB>,
    a: &[f32],
    out: &mut [f32],
    compute: Compute,
) {
    if linear.n == 0 || out.is_empty() {
        return;
    }
    let work_per_row = linear.n.saturating_mul(linear.k);
    let isa = supported_isa(compute.isa);
    if linear.k == 0 {
        // Empty products: every sum is `+0.0` (no panel to pack).
        for row in out.chunks_exact_mut(linear.n) {
            for (j, value) in row.iter_mut().enumerate() {
                *value = linear.finish(j, 0.0);
            }
        }
        return;
    }
    let kernel = TileKernel::for_isa(isa);
    debug_assert!(kernel.cols <= PANEL_COLS_MAX && kernel.tile_rows <= TILE_ROWS_MAX);
    let run_panels = |out: &mut [f32], packed: &[f32]| {
        for_row_ranges(
            out,
            linear.n,
            ROW_ALIGN,
            work_per_row,
            compute.threads,
            |first_row, chunk| linear.rows(kernel, a, first_row, chunk, packed),
        );
    };
    if let Some(packed) = packed.filter(|packed| packed.fits(linear, kernel)) {
        run_panels(out, &packed.values);
        return;
    }
    let rows = out.len() / linear.n;
    let few_rows = rows <= ROW_ALIGN;
    // Few rows (one thread range, e.g. decoding a token): each panel is packed just before its
    // tiles run, into a buffer that stays in cache, so `b` is read once and never written out
    // whole. Otherwise `b` is packed once per call, on the calling thread, into its reused
    // buffer; the workers only read it.
    let panel_len = linear.k * kernel.cols;
    let packed_len = if few_rows {
        panel_len
    } else {
        linear.n.div_ceil(kernel.cols) * panel_len
    };
    let mut run = |packed: &mut [f32]| {
        if few_rows {
            for j in (0..linear.n).step_by(kernel.cols) {
                let b = &linear.b[j * linear.k..];
                pack_panels(b, linear.n - j, linear.k, kernel.cols, packed);
                linear.panel_rows(kernel, a, 0, out, packed, j);
            }
            return;
        }
        pack_panels(linear.b, linear.n, linear.k, kernel.cols, packed);
        run_panels(out, packed);
    };
    PANELS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut panels) => {
            if panels.len() < packed_len {
                panels.resize(packed_len, 0.0);
            }
            run(&mut panels[..packed_len]);
        }
        // Re-entered on this thread (never in this crate): a buffer of its own.
        Err(_) => run(&mut vec![0.0f32; packed_len]),
    });
}

// ---------------------------------------------------------------------------------------------
// Row-wise operators
// ---------------------------------------------------------------------------------------------

/// Elementwise `f` over rows of `width`, threaded; `f(x_chunk, y_chunk, out_chunk)`.
fn elementwise<F>(len: usize, width: usize, out: &mut [f32], compute: Compute, f: F)
where
    F: Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
{
    let width = width.max(1);
    let _ = len;
    for_row_ranges(out, width, 1, width * 8, compute.threads, |first, chunk| {
        f(first * width..first * width + chunk.len(), chunk)
    });
}

/// [`reference::add`], threaded, vectorised for `compute.isa`.
pub fn add(x: &[f32], y: &[f32], out: &mut [f32], width: usize, compute: Compute) {
    let isa = supported_isa(compute.isa);
    elementwise(x.len(), width, out, compute, |range, chunk| {
        zip_with(isa, &x[range.clone()], &y[range], chunk, BinaryOp::Add)
    });
}

/// [`reference::mul`], threaded, vectorised for `compute.isa`.
pub fn mul(x: &[f32], y: &[f32], out: &mut [f32], width: usize, compute: Compute) {
    let isa = supported_isa(compute.isa);
    elementwise(x.len(), width, out, compute, |range, chunk| {
        zip_with(isa, &x[range.clone()], &y[range], chunk, BinaryOp::Mul)
    });
}

/// An exact elementwise operation: one IEEE rounding, the same bits on every instruction set.
#[derive(Clone, Copy, PartialEq)]
enum BinaryOp {
    Add,
    Mul,
}

/// `out[i] = x[i] op y[i]` compiled for `isa` (a supported one): the baseline build's loop is
/// SSE2, a quarter of an AVX-512 register per instruction.
fn zip_with(isa: Isa, x: &[f32], y: &[f32], out: &mut [f32], op: BinaryOp) {
    match isa {
        // SAFETY: the caller passes an `isa` the CPU supports (checked by `supported_isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::zip_avx512(x, y, out, op) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::zip_avx2(x, y, out, op) },
        _ => zip_body(x, y, out, op),
    }
}

/// [`zip_with`]'s loop, inlined into one copy per instruction set.
#[inline(always)]
fn zip_body(x: &[f32], y: &[f32], out: &mut [f32], op: BinaryOp) {
    let pairs = out.iter_mut().zip(x).zip(y);
    match op {
        BinaryOp::Add => pairs.for_each(|((o, a), b)| *o = a + b),
        BinaryOp::Mul => pairs.for_each(|((o, a), b)| *o = a * b),
    }
}

/// [`reference::activation`], threaded.
pub fn activation(
    x: &[f32],
    activation: Activation,
    out: &mut [f32],
    width: usize,
    compute: Compute,
) {
    let isa = supported_isa(compute.isa);
    elementwise(x.len(), width, out, compute, |range, chunk| {
        chunk.copy_from_slice(&x[range]);
        activate(isa, activation, chunk);
    });
}

/// [`reference::layernorm`] (with the residual add of [`reference::add_layernorm`] when given).
#[allow(clippy::too_many_arguments)]
pub fn layernorm(
    x: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    n: usize,
    out: &mut [f32],
    compute: Compute,
) {
    for_row_ranges(out, n, 1, n * 4, compute.threads, |first, chunk| {
        let mut summed = vec![0.0f32; n];
        for (r, out_row) in chunk.chunks_exact_mut(n).enumerate() {
            let at = (first + r) * n;
            let row = match residual {
                Some(residual) => {
                    for c in 0..n {
                        summed[c] = x[at + c] + residual[at + c];
                    }
                    &summed[..]
                }
                None => &x[at..at + n],
            };
            let mean = sum(row) / n as f32;
            let variance = sum_squared_deviation(row, mean) / n as f32;
            let inv = 1.0 / (variance + eps).sqrt();
            for c in 0..n {
                out_row[c] = ((row[c] - mean) * inv) * gamma[c] + beta[c];
            }
        }
    });
}

/// [`reference::rmsnorm`], threaded over rows.
pub fn rmsnorm(x: &[f32], gamma: &[f32], eps: f32, n: usize, out: &mut [f32], compute: Compute) {
    let isa = supported_isa(compute.isa);
    for_row_ranges(out, n, 1, n * 2, compute.threads, |first, chunk| {
        let x = &x[first * n..first * n + chunk.len()];
        match isa {
            // SAFETY: `supported_isa` checked that the CPU has it.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::rmsnorm_rows_avx512(x, gamma, eps, n, chunk) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::rmsnorm_rows_avx2(x, gamma, eps, n, chunk) },
            _ => rmsnorm_rows(x, gamma, eps, n, chunk),
        }
    });
}

/// [`rmsnorm`]'s rows `x` into `out`, inlined into one copy per instruction set (exact
/// operations and the lane order of [`dot`]: the same bits on each).
#[inline(always)]
fn rmsnorm_rows(x: &[f32], gamma: &[f32], eps: f32, n: usize, out: &mut [f32]) {
    for (row, out_row) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let inv = 1.0 / (dot(row, row) / n as f32 + eps).sqrt();
        for ((o, &v), &g) in out_row.iter_mut().zip(row).zip(gamma) {
            *o = (v * inv) * g;
        }
    }
}

/// One row of [`reference::softmax`]: the max of the kept scaled values, the exponentials,
/// the lane sum and the divisions, vectorised for `isa` ([`softmax_tail`]).
fn softmax_row(isa: Isa, row: &[f32], keep: Option<&[f32]>, scale: f32, out: &mut [f32]) {
    let first = match keep {
        Some(keep) => keep.iter().position(|&k| k != 0.0),
        None => (!row.is_empty()).then_some(0),
    };
    let Some(first) = first else {
        out.fill(0.0);
        return;
    };
    match isa {
        // SAFETY: the callers pass an `isa` the CPU supports (checked by `supported_isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::softmax_tail_avx512(row, keep, scale, first, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::softmax_tail_avx2(row, keep, scale, first, out) },
        _ => softmax_tail::<LaneExp>(row, keep, scale, first, out),
    }
}

/// [`reference::exp`] over values in place, as one instruction set computes it.
trait ExpInPlace {
    /// Safety: the CPU supports the instruction set of the implementation.
    unsafe fn exp_in_place(values: &mut [f32]);
}

/// [`reference::exp`] lane by lane in [`map_by_lanes`]' loop (vectorised where the caller's
/// instruction set allows).
struct LaneExp;

impl ExpInPlace for LaneExp {
    #[inline(always)]
    unsafe fn exp_in_place(values: &mut [f32]) {
        map_by_lanes(values, reference::exp)
    }
}

/// The reference's running max of the kept `row[c] * scale` in column order, from the first
/// kept column `first`: that value if it is NaN (nothing compares greater than NaN), else the
/// largest kept value that is not NaN (a later NaN never compares greater). Computed in
/// [`LANES`] lanes; which of two equal zeros wins may differ from the column order, and that
/// changes no `exp(z - max)` (`z - 0.0` and `z - -0.0` are equal, or both zeros, and
/// [`reference::exp`] maps both zeros to 1).
#[inline(always)]
fn kept_max(row: &[f32], keep: Option<&[f32]>, scale: f32, first: usize) -> f32 {
    let first_value = row[first] * scale;
    if first_value.is_nan() {
        return first_value;
    }
    let candidate = |value: f32, k: f32| {
        let z = value * scale;
        if k != 0.0 && !z.is_nan() {
            z
        } else {
            f32::NEG_INFINITY
        }
    };
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let (row_chunks, row_tail) = row.as_chunks::<LANES>();
    match keep {
        Some(keep) => {
            let (keep_chunks, keep_tail) = keep.as_chunks::<LANES>();
            for (values, keeps) in row_chunks.iter().zip(keep_chunks) {
                for l in 0..LANES {
                    lanes[l] = larger(lanes[l], candidate(values[l], keeps[l]));
                }
            }
            for (l, (&value, &k)) in row_tail.iter().zip(keep_tail).enumerate() {
                lanes[l] = larger(lanes[l], candidate(value, k));
            }
        }
        None => {
            for values in row_chunks {
                for l in 0..LANES {
                    lanes[l] = larger(lanes[l], candidate(values[l], 1.0));
                }
            }
            for (l, &value) in row_tail.iter().enumerate() {
                lanes[l] = larger(lanes[l], candidate(value, 1.0));
            }
        }
    }
    lanes.into_iter().fold(first_value, larger)
}

/// `out[c] = exp(row[c] * scale - max)` ([`reference::exp`], `0.0` where `keep[c] == 0`), then
/// each divided by their lane [`sum`], with `max` from [`kept_max`]. Every column's
/// exponential is computed and the masked ones dropped by a select (the same bits as skipping
/// them), so the loop has no branch and vectorises; inlined into one copy per instruction set.
#[inline(always)]
fn softmax_tail<E: ExpInPlace>(
    row: &[f32],
    keep: Option<&[f32]>,
    scale: f32,
    first: usize,
    out: &mut [f32],
) {
    let max = kept_max(row, keep, scale, first);
    // The argument of each exponential first (each step one f32 operation, stored as f32:
    // the same bits as computed inline), then the exponentials over whole vectors.
    for (o, &value) in out.iter_mut().zip(row) {
        *o = value * scale - max;
    }
    // SAFETY: each copy of this function is compiled for the instruction set `E` runs on.
    unsafe { E::exp_in_place(out) };
    if let Some(keep) = keep {
        for (o, &k) in out.iter_mut().zip(keep) {
            *o = if k != 0.0 { *o } else { 0.0 };
        }
    }
    let total = sum(out);
    map_by_lanes(out, |value| value / total);
}

/// `isa` if the CPU runs it, else [`Isa::Portable`] (same bits either way).
pub(crate) fn supported_isa(isa: Isa) -> Isa {
    if isa.is_supported() {
        isa
    } else {
        Isa::Portable
    }
}

/// [`reference::softmax`], threaded over rows.
pub fn softmax(
    x: &[f32],
    keep: Option<&[f32]>,
    scale: f32,
    n: usize,
    out: &mut [f32],
    compute: Compute,
) {
    let isa = supported_isa(compute.isa);
    for_row_ranges(out, n, 1, n * 16, compute.threads, |first, chunk| {
        for (r, out_row) in chunk.chunks_exact_mut(n).enumerate() {
            softmax_row(
                isa,
                &x[(first + r) * n..(first + r + 1) * n],
                keep,
                scale,
                out_row,
            );
        }
    });
}

/// Shape of an attention call: `heads` heads of `head_dim` columns, scores scaled by `scale`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// A product of `n` outputs over `k` without bias or activation, its panels packed by the
/// caller (attention's two products).
fn plain_product(n: usize, k: usize) -> Linear<'static> {
    Linear {
        b: &[],
        bias: None,
        activation: Activation::Identity,
        n,
        k,
    }
}

/// The first row of each sequence of a packed batch, then the row count: `lengths.len() + 1`
/// offsets.
fn sequence_starts(lengths: &[usize]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(lengths.len() + 1);
    let mut row = 0;
    starts.push(row);
    for &length in lengths {
        row += length;
        starts.push(row);
    }
    starts
}

/// [`reference::attention`] over a packed batch (sequence `b` the next `lengths[b]` rows of
/// `q`, `k`, `v`; the caller checks that the lengths sum to the rows), threaded over
/// (sequence, head) units.
///
/// Per unit: `q_h` is copied out contiguously (exact), the micro-kernel's panels are packed
/// straight from `k` and `v` (key rows for `scores = q_h · k_hᵀ`, value rows' column blocks for
/// `context = p · v_h`), and the matmul tile kernel runs on them, whose per-element order is
/// [`reference::dot_fma`]'s. No padding: every score and probability is of a real key.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lengths: &[usize],
    shape: AttentionShape,
    out: &mut [f32],
    compute: Compute,
) {
    let AttentionShape {
        heads,
        head_dim,
        scale,
    } = shape;
    let width = heads * head_dim;
    let units = lengths.len() * heads;
    if units == 0 || head_dim == 0 {
        return;
    }
    let starts = sequence_starts(lengths);
    // Unit u (sequence u / heads, head u % heads) writes a [length, head_dim] block; the
    // blocks lie in unit order, so each sequence's blocks fill its rows × width floats.
    let block_start = |u: usize| match (starts.get(u / heads), lengths.get(u / heads)) {
        (Some(&row), Some(&length)) => row * width + (u % heads) * length * head_dim,
        _ => starts[lengths.len()] * width,
    };
    let mut blocks = vec![0.0f32; starts[lengths.len()] * width];
    let isa = supported_isa(compute.isa);
    // Units first_unit..end_unit, whose blocks are `chunk`.
    let run = |first_unit: usize, end_unit: usize, chunk: &mut [f32]| {
        let kernel = TileKernel::for_isa(isa);
        let base = block_start(first_unit);
        let longest = lengths[first_unit / heads..end_unit.div_ceil(heads)]
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let mut qh = vec![0.0f32; longest * head_dim];
        let mut panel = vec![0.0f32; longest.max(head_dim) * kernel.cols];
        let mut scores = vec![0.0f32; longest * longest];
        let mut probabilities = vec![0.0f32; longest * longest];
        for u in first_unit..end_unit {
            let (b, h) = (u / heads, u % heads);
            let seq = lengths[b];
            if seq == 0 {
                continue;
            }
            let block = &mut chunk[block_start(u) - base..][..seq * head_dim];
            let (qh, scores, probabilities) = (
                &mut qh[..seq * head_dim],
                &mut scores[..seq * seq],
                &mut probabilities[..seq * seq],
            );
            // This head's columns of sequence b: row t at `at(t)`, rows `width` apart.
            let head_start = starts[b] * width + h * head_dim;
            for t in 0..seq {
                let at = head_start + t * width;
                copy_row(
                    &mut qh[t * head_dim..(t + 1) * head_dim],
                    &q[at..at + head_dim],
                );
            }
            // scores = q_h · k_hᵀ: each panel of key rows packed from `k` in place.
            let scores_op = plain_product(seq, head_dim);
            let panel_len = head_dim * kernel.cols;
            for j in (0..seq).step_by(kernel.cols) {
                let panel = &mut panel[..panel_len];
                let first_key = &k[head_start + j * width..];
                pack_strided_panels(first_key, width, seq - j, head_dim, kernel.cols, panel);
                scores_op.panel_rows(kernel, qh, 0, scores, panel, j);
            }
            for (score_row, probability_row) in scores
                .chunks_exact(seq)
                .zip(probabilities.chunks_exact_mut(seq))
            {
                softmax_row(isa, score_row, None, scale, probability_row);
            }
            // context = p · v_h: the panel of columns j.. of v_hᵀ is, row p, value row p's
            // columns j.. (a row copy, no transpose).
            let context_op = plain_product(head_dim, seq);
            let panel_len = seq * kernel.cols;
            for j in (0..head_dim).step_by(kernel.cols) {
                let width_j = kernel.cols.min(head_dim - j);
                let panel = &mut panel[..panel_len];
                for (p, packed_row) in panel.chunks_exact_mut(kernel.cols).enumerate() {
                    let at = head_start + p * width + j;
                    copy_row(&mut packed_row[..width_j], &v[at..at + width_j]);
                    packed_row[width_j..].fill(0.0);
                }
                context_op.panel_rows(kernel, probabilities, 0, block, panel, j);
            }
        }
    };
    let work: usize = lengths
        .iter()
        .map(|&length| length.saturating_mul(length).saturating_mul(2 * width))
        .fold(0, usize::saturating_add);
    let threads = compute.threads.get().min(units);
    if threads == 1 || work < PARALLEL_WORK_MIN {
        run(0, units, &mut blocks);
    } else {
        // Consecutive units per range, about RANGES_PER_THREAD ranges per thread, taken in
        // order as threads free up.
        let per_range = units.div_ceil(threads * RANGES_PER_THREAD);
        let mut chunks = Vec::new();
        let mut rest: &mut [f32] = &mut blocks;
        for first in (0..units).step_by(per_range) {
            let end = (first + per_range).min(units);
            let (chunk, tail) = rest.split_at_mut(block_start(end) - block_start(first));
            chunks.push(std::sync::Mutex::new((first, end, chunk)));
            rest = tail;
        }
        Pool::global().for_each(threads, chunks.len(), |i| {
            let mut guard = match chunks[i].lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let (first, end, ref mut chunk) = *guard;
            run(first, end, chunk);
        });
    }
    for u in 0..units {
        let (b, h) = (u / heads, u % heads);
        let block = &blocks[block_start(u)..][..lengths[b] * head_dim];
        for (t, row) in block.chunks_exact(head_dim).enumerate() {
            let at = (starts[b] + t) * width + h * head_dim;
            copy_row(&mut out[at..at + head_dim], row);
        }
    }
}

/// [`reference::mean_pool`] over a packed batch, vectorised across columns.
pub fn mean_pool(x: &[f32], lengths: &[usize], width: usize, out: &mut [f32]) {
    let mut lanes = vec![[0.0f32; LANES]; width];
    let mut start = 0;
    for (b, &seq) in lengths.iter().enumerate() {
        for lane in lanes.iter_mut() {
            *lane = [0.0; LANES];
        }
        for t in 0..seq {
            let row = &x[(start + t) * width..(start + t + 1) * width];
            let l = t % LANES;
            for (lane, &value) in lanes.iter_mut().zip(row) {
                lane[l] = lane[l] + value;
            }
        }
        for c in 0..width {
            out[b * width + c] = if seq == 0 {
                0.0
            } else {
                combine(lanes[c]) / seq as f32
            };
        }
        start += seq;
    }
}

/// [`reference::l2_normalize`], with a vectorised dot.
pub fn l2_normalize(x: &[f32], n: usize, out: &mut [f32]) {
    for (row, out_row) in x.chunks_exact(n.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
        let norm = dot(row, row).sqrt();
        let denominator = if norm > reference::L2_NORM_EPSILON {
            norm
        } else {
            reference::L2_NORM_EPSILON
        };
        for (o, &value) in out_row.iter_mut().zip(row) {
            *o = value / denominator;
        }
    }
}

pub use crate::reference::CausalShape;

/// [`reference::causal_attention`], compiled for `compute.isa`. One row (decoding): threaded
/// over heads, each (row, head) pair on its own ([`causal_unit`]). More rows (prefill):
/// threaded over row ranges, each range one KV group at a time with the keys transposed once
/// and shared by every row and head of the group ([`causal_rows`]).
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
    let scale = shape.scale();
    let isa = supported_isa(compute.isa);
    #[cfg(target_arch = "x86_64")]
    if rows > 1 {
        for_row_ranges(
            out,
            width,
            1,
            keys_max * width * 2,
            compute.threads,
            |first_row, chunk| {
                let rows = CausalRows {
                    q,
                    k,
                    v,
                    shape,
                    first_row,
                };
                causal_rows(isa, rows, chunk);
            },
        );
        return;
    }
    // `out` viewed as rows * heads units of d values each.
    for_row_ranges(
        out,
        d,
        1,
        keys_max * d * 2,
        compute.threads,
        |first_unit, chunk| {
            let mut scores = vec![0.0f32; keys_max];
            let mut p = vec![0.0f32; keys_max];
            for (u, block) in chunk.chunks_exact_mut(d).enumerate() {
                let (i, h) = ((first_unit + u) / heads, (first_unit + u) % heads);
                let g = h / group;
                let keys = first_position + i + 1;
                let unit = CausalUnit {
                    query: &q[i * width + h * d..i * width + (h + 1) * d],
                    k: &k[g * d..],
                    v: &v[g * d..],
                    kv_width,
                    scale,
                };
                causal_unit(isa, unit, &mut scores[..keys], &mut p[..keys], block);
            }
        },
    );
}

/// One (row, head) pair of [`causal_attention`]: the query, and the KV cache from this head's
/// group on (key and value `j` start at `j * kv_width`).
#[derive(Clone, Copy)]
struct CausalUnit<'a> {
    query: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    kv_width: usize,
    scale: f32,
}

/// [`causal_unit_body`] compiled for `isa` (a supported one: [`supported_isa`]).
fn causal_unit(isa: Isa, unit: CausalUnit<'_>, scores: &mut [f32], p: &mut [f32], out: &mut [f32]) {
    match isa {
        // SAFETY: the caller passes an `isa` the CPU supports (checked by `supported_isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::causal_unit_avx512(unit, scores, p, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::causal_unit_avx2(unit, scores, p, out) },
        _ => causal_unit_body(unit, scores, p, out),
    }
}

/// One query over `scores.len()` cached positions, exactly as the reference: each score a
/// lane [`dot`] of the query and key `j`, the reference softmax ([`softmax_tail`], its
/// exponentials across positions in vectors), then [`weighted_values`]. Inlined into one copy
/// per instruction set.
#[inline(always)]
fn causal_unit_body(unit: CausalUnit<'_>, scores: &mut [f32], p: &mut [f32], out: &mut [f32]) {
    causal_unit_tail(unit, 0, scores, p, out)
}

/// [`causal_unit_body`] with the scores of keys `..scored` already in `scores`.
#[inline(always)]
fn causal_unit_tail(
    unit: CausalUnit<'_>,
    scored: usize,
    scores: &mut [f32],
    p: &mut [f32],
    out: &mut [f32],
) {
    let d = unit.query.len();
    for (j, score) in scores.iter_mut().enumerate().skip(scored) {
        let at = j * unit.kv_width;
        *score = dot(unit.query, &unit.k[at..at + d]);
    }
    // Position 0 is always a key of a causal row, so the softmax starts there.
    softmax_tail::<LaneExp>(scores, None, unit.scale, 0, p);
    weighted_values(p, unit.v, unit.kv_width, out);
}

/// Query rows `first_row..` of a [`causal_attention`] call with every input (as many rows as
/// the output slice it is run with holds).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct CausalRows<'a> {
    shape: CausalShape,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    first_row: usize,
}

/// Cached positions per block of [`BlockScores`], and value columns per register of
/// [`WeightedValues`]: one vector register (AVX-512: 16 lanes, AVX2: 8, the x86-64 baseline
/// SSE2: 4).
#[cfg(target_arch = "x86_64")]
const AVX512_KEYS: usize = 16;
#[cfg(target_arch = "x86_64")]
const AVX2_KEYS: usize = 8;
#[cfg(target_arch = "x86_64")]
const SSE2_KEYS: usize = 4;

/// [`causal_rows_body`] compiled for `isa` (a supported one: [`supported_isa`]; the baseline
/// is x86-64's SSE2).
#[cfg(target_arch = "x86_64")]
fn causal_rows(isa: Isa, rows: CausalRows<'_>, out: &mut [f32]) {
    match isa {
        // SAFETY: the caller passes an `isa` the CPU supports (checked by `supported_isa`).
        Isa::Avx512 => unsafe { x86::causal_rows_avx512(rows, out) },
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::causal_rows_avx2(rows, out) },
        // SAFETY: every x86-64 CPU has SSE2.
        Isa::Portable => unsafe { x86::causal_rows_sse2(rows, out) },
    }
}

/// Scores (then probabilities) held at once by the many-row path, per thread: a tile of rows
/// times the KV group's heads times the positions of the tile's last row. 256 KiB stays in a
/// core's L2 cache; longer calls run in tiles of fewer rows (at least one).
#[cfg(target_arch = "x86_64")]
const CAUSAL_SCORES_BYTES_MAX: usize = 1 << 18;

/// The rows of `out` (each `heads * head_dim` wide), exactly as the reference, one KV group at
/// a time. The group's keys up to the last row's position are transposed once into blocks of
/// `KEYS` positions ([`transpose_keys`]) and its values packed into slabs of 16 columns
/// ([`pack_values`]). Then, a tile of rows at a time ([`CAUSAL_SCORES_BYTES_MAX`]), over the
/// tile's (row, head) pairs, head by head: the scores of every pair one key block at a time
/// ([`BlockScores`]: the block stays in the L1 cache while every pair that reaches it reads
/// it), the reference softmax of each pair in place ([`causal_softmax_rows`]), and the
/// weighted values one slab at a time ([`WeightedValues`]: the slab, 64 bytes per position,
/// stays in L1 while every pair reads it). Only the order of independent outputs changes:
/// each score, probability and output value has the reference's operations. Inlined into
/// one copy per instruction set.
/// Safety: the `kernels` (for `KEYS` positions) run on this CPU.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn causal_rows_body<const KEYS: usize>(
    rows: CausalRows<'_>,
    out: &mut [f32],
    kernels: CausalKernels,
) {
    let CausalKernels {
        transpose,
        scores: scores_of,
        values: values_of,
    } = kernels;
    let CausalShape {
        first_position,
        heads,
        kv_heads,
        head_dim: d,
        ..
    } = rows.shape;
    let (width, kv_width, group) = (heads * d, kv_heads * d, heads / kv_heads);
    let out_rows = out.len() / width;
    let keys_max = first_position + rows.first_row + out_rows;
    let d_padded = d.div_ceil(LANES) * LANES;
    let block_len = d_padded * KEYS;
    // Scores per (row, head) pair: every block of the longest row, in whole chunks of LANES
    // (a multiple of KEYS) for the softmax.
    let stride = keys_max.div_ceil(LANES) * LANES;
    let tile_rows = (CAUSAL_SCORES_BYTES_MAX / size_of::<f32>() / (group * stride))
        .min(out_rows)
        .max(1);
    // Padding (positions past `keys_max`, elements past `d`) is zero.
    let mut keys_t = vec![0.0f32; keys_max.div_ceil(KEYS) * block_len];
    let slab_len = keys_max * LANES;
    let mut slabs = vec![0.0f32; d_padded / LANES * slab_len];
    // Queries zero-padded to whole lanes (head by head, row by row) when `d` is not; else
    // they are read in place.
    let padded = d != d_padded;
    let mut queries = vec![
        0.0f32;
        if padded {
            tile_rows * group * d_padded
        } else {
            0
        }
    ];
    let mut scores = vec![0.0f32; tile_rows * group * stride];
    let mut maxes = vec![0.0f32; tile_rows * group];
    let scale = rows.shape.scale();
    // Every head of `out`, as the one-row path (head `h` reads KV group `h / group`).
    for g in 0..heads.div_ceil(group) {
        // SAFETY: the caller's contract.
        unsafe { transpose(&rows.k[g * d..], kv_width, d, keys_max, &mut keys_t) };
        pack_values(&rows.v[g * d..], kv_width, d, keys_max, &mut slabs);
        let first_head = g * group;
        let group_heads = ((g + 1) * group).min(heads) - first_head;
        for (t, out_tile) in out.chunks_mut(tile_rows * width).enumerate() {
            let tile_first = rows.first_row + t * tile_rows;
            let tile_len = out_tile.len() / width;
            // Pair `u * tile_len + i`: head `first_head + u`, row `tile_first + i`; head
            // `u`'s queries start at `q_at(u)`, `query_stride` apart.
            let q_at = |u: usize| tile_first * width + (first_head + u) * d;
            let (queries, query_stride) = if padded {
                let pairs = queries
                    .chunks_exact_mut(d_padded)
                    .take(group_heads * tile_len);
                for (pair, query) in pairs.enumerate() {
                    let at = q_at(pair / tile_len) + pair % tile_len * width;
                    query[..d].copy_from_slice(&rows.q[at..at + d]);
                }
                (&queries[..], d_padded)
            } else {
                (&rows.q[q_at(0)..], width)
            };
            let head_queries = |u: usize| {
                if padded {
                    u * tile_len * d_padded
                } else {
                    u * d
                }
            };
            let keys_of = |i: usize| first_position + tile_first + i + 1;
            for (b, block) in keys_t.chunks_exact(block_len).enumerate() {
                // The rows from the first whose positions reach into block `b`.
                let first_row = (b * KEYS).saturating_sub(first_position + tile_first);
                if first_row >= tile_len {
                    break;
                }
                for u in 0..group_heads {
                    let job = BlockQueries {
                        queries: &queries[head_queries(u) + first_row * query_stride..],
                        query_stride,
                        count: tile_len - first_row,
                    };
                    let at = (u * tile_len + first_row) * stride + b * KEYS;
                    // SAFETY: the caller's contract.
                    unsafe { scores_of(job, block, &mut scores[at..], stride) };
                }
            }
            let pairs = group_heads * tile_len;
            causal_softmax_rows(
                &mut scores[..pairs * stride],
                stride,
                |pair| keys_of(pair % tile_len),
                scale,
                &mut maxes[..pairs],
            );
            for (c, slab) in slabs.chunks_exact(slab_len).enumerate() {
                let job = SlabValues {
                    p: &scores[..pairs * stride],
                    p_row_stride: stride,
                    p_stride: tile_len * stride,
                    first_keys: keys_of(0),
                    rows: tile_len,
                    slab,
                    pairs: group_heads,
                    columns: (d - c * LANES).min(LANES),
                };
                let at = first_head * d + c * LANES;
                // SAFETY: the caller's contract.
                unsafe { values_of(job, &mut out_tile[at..], width, d) };
            }
        }
    }
}

/// The reference softmax of each row of `rows` in place (row `r`: `keys(r)` positions at
/// `rows[r * stride..]`): `row[c] = exp(row[c] * scale - max) / total` with `max` the largest
/// `row[c] * scale` ([`causal_max`]), each exponential ([`softmax_exp`]) added to lane
/// `c % 16` of `total` in order, the lanes combined by [`combine`], then the divisions. Each
/// step runs over every row before the next (`maxes` holds the rows' maxes, then their
/// totals). A row is processed in
/// whole chunks of [`LANES`] (`stride` is a multiple): the entries past `keys(r)` are scratch,
/// computed with the rest but never added, so every loop runs on whole vectors. Inlined into
/// one copy per instruction set, where the lane arrays are vectors.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn causal_softmax_rows(
    rows: &mut [f32],
    stride: usize,
    keys: impl Fn(usize) -> usize,
    scale: f32,
    maxes: &mut [f32],
) {
    let chunks_of = |r: usize| keys(r).div_ceil(LANES) * LANES;
    for (r, (row, max)) in rows.chunks_exact(stride).zip(maxes.iter_mut()).enumerate() {
        let (chunks, _) = row[..chunks_of(r)].as_chunks::<LANES>();
        *max = causal_max(chunks, keys(r), scale);
    }
    for (r, (row, max)) in rows
        .chunks_exact_mut(stride)
        .zip(maxes.iter_mut())
        .enumerate()
    {
        let (keys, row_max) = (keys(r), *max);
        let exps = |chunk: &mut [f32; LANES]| {
            for value in chunk.iter_mut() {
                *value = softmax_exp(*value * scale - row_max);
            }
        };
        let (chunks, _) = row[..chunks_of(r)].as_chunks_mut::<LANES>();
        let (full, last) = chunks.split_at_mut(keys / LANES);
        let mut lanes = [0.0f32; LANES];
        for chunk in full.iter_mut() {
            exps(chunk);
            for l in 0..LANES {
                lanes[l] = lanes[l] + chunk[l];
            }
        }
        // The partial chunk: its lanes past `keys` add nothing.
        if let Some(chunk) = last.first_mut() {
            exps(chunk);
            for l in 0..LANES {
                lanes[l] = if l < keys % LANES {
                    lanes[l] + chunk[l]
                } else {
                    lanes[l]
                };
            }
        }
        *max = combine(lanes);
    }
    for (r, (row, &total)) in rows.chunks_exact_mut(stride).zip(maxes.iter()).enumerate() {
        let (chunks, _) = row[..chunks_of(r)].as_chunks_mut::<LANES>();
        for chunk in chunks.iter_mut() {
            std::hint::black_box(());
            for value in chunk.iter_mut() {
                *value = *value / total;
            }
        }
    }
}

/// [`reference::exp`] of a softmax argument `z - max`, which is `<= 0` or NaN (`z <= max` for
/// every counted `z`; `z - z = +0`): the reference's operations but for two that change
/// nothing there, the clamp's upper bound and the `+inf` select above `EXP_X_MAX`. A NaN
/// argument is returned as the reference returns it. The same bits on that domain
/// (`softmax_exp_equals_the_reference_at_or_below_zero`); inlined into the vectorised loops.
#[inline(always)]
fn softmax_exp(x: f32) -> f32 {
    use reference::exp_constants::*;
    let clamped = if x < reference::EXP_X_MIN {
        reference::EXP_X_MIN
    } else {
        x
    };
    let rounded = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = rounded - ROUND;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let mut p = TAYLOR[0];
    for c in &TAYLOR[1..] {
        p = p * r + c;
    }
    let n = (rounded.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let half = n / 2;
    let scale = |e: i32| f32::from_bits((e.wrapping_add(127) as u32) << 23);
    let y = (p * scale(half)) * scale(n.wrapping_sub(half));
    let y = if x < reference::EXP_X_MIN { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// The reference softmax's max of `row[c] * scale` over `c < keys` (the first if it is NaN,
/// else the largest that is not NaN) in [`LANES`] lanes and a halving tree: which of two equal
/// zeros wins may differ from the column order, and that changes no `exp(z - max)` (as
/// [`kept_max`]). Entries past `keys` count as the first.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn causal_max(chunks: &[[f32; LANES]], keys: usize, scale: f32) -> f32 {
    let first = chunks[0][0] * scale;
    if first.is_nan() {
        return first;
    }
    // `z` where it is greater, so a NaN `z` never wins.
    let larger = |a: f32, z: f32| if z > a { z } else { a };
    let mut lanes = [first; LANES];
    let (full, last) = chunks.split_at(keys / LANES);
    for chunk in full {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = larger(*lane, value * scale);
        }
    }
    if let Some(chunk) = last.first() {
        let tail = keys % LANES;
        for l in 0..LANES {
            let value = if l < tail { chunk[l] * scale } else { first };
            lanes[l] = larger(lanes[l], value);
        }
    }
    let mut width = LANES / 2;
    while width >= 1 {
        for l in 0..width {
            lanes[l] = larger(lanes[l], lanes[l + width]);
        }
        width /= 2;
    }
    lanes[0]
}

/// Values `0..keys` (value `j`'s `d` values at `v[j * kv_width..]`) into `slabs` of [`LANES`]
/// columns: column `c` of value `j` at `slabs[(c / LANES) * keys * LANES + j * LANES + c % LANES]`.
/// Other entries are left as they are.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn pack_values(v: &[f32], kv_width: usize, d: usize, keys: usize, slabs: &mut [f32]) {
    let slab_len = keys * LANES;
    for (j, value) in v.chunks(kv_width).take(keys).enumerate() {
        for (slab, columns) in value[..d].chunks(LANES).enumerate() {
            let at = slab * slab_len + j * LANES;
            copy_row(&mut slabs[at..at + columns.len()], columns);
        }
    }
}

/// Keys `0..keys` (key `j`'s `d` values at `k[j * kv_width..]`) into `keys_t` as blocks of
/// `KEYS` positions, each `d_padded` rows of `KEYS` values: element `e` of key `j` at
/// `keys_t[((j / KEYS) * d_padded + e) * KEYS + j % KEYS]`. Other entries are left as they are.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose_keys<const KEYS: usize>(
    k: &[f32],
    kv_width: usize,
    d: usize,
    keys: usize,
    keys_t: &mut [f32],
) {
    let block_len = d.div_ceil(LANES) * LANES * KEYS;
    let mut first = 0;
    for block in keys_t.chunks_exact_mut(block_len).take(keys.div_ceil(KEYS)) {
        let count = (keys - first).min(KEYS);
        // A tile of `KEYS` keys by 16 elements at a time: loaded a key at a time (zeros past
        // the last key and past `d`), stored an element at a time.
        for (e0, rows) in (0..d)
            .step_by(LANES)
            .zip(block.chunks_exact_mut(LANES * KEYS))
        {
            let mut tile = [[0.0f32; LANES]; KEYS];
            let width = (d - e0).min(LANES);
            for (position, lanes) in tile.iter_mut().enumerate().take(count) {
                let at = (first + position) * kv_width + e0;
                copy_row(&mut lanes[..width], &k[at..at + width]);
            }
            for (e, row) in rows.chunks_exact_mut(KEYS).enumerate() {
                for (position, value) in row.iter_mut().enumerate() {
                    *value = tile[position][e];
                }
            }
        }
        first += count;
    }
}

/// The kernels of [`causal_rows_body`] for one instruction set (unsafe to call on a CPU
/// without it).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct CausalKernels {
    /// [`transpose_keys`] or the same for one instruction set.
    transpose: unsafe fn(k: &[f32], kv_width: usize, d: usize, keys: usize, keys_t: &mut [f32]),
    scores: BlockScores,
    values: WeightedValues,
}

/// `scores[u * stride + j] = `[`reference::dot`]`(query u, key j)` for the `KEYS` positions
/// of one block of [`transpose_keys`] (`block`, `d_padded * KEYS` values) and every query of
/// a [`BlockQueries`], compiled for an instruction set (unsafe to call on a CPU without it):
/// `x86::*::scores`.
#[cfg(target_arch = "x86_64")]
type BlockScores =
    unsafe fn(queries: BlockQueries<'_>, block: &[f32], scores: &mut [f32], stride: usize);

/// The queries of a [`BlockScores`] call: query `u < count` is `queries[u * query_stride..]`
/// (`d_padded` values, zero past `d` like the keys).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct BlockQueries<'a> {
    queries: &'a [f32],
    query_stride: usize,
    count: usize,
}

/// The weighted values of a tile's (row, head) pairs over one slab of [`pack_values`] (see
/// [`SlabValues`]), compiled for an instruction set (unsafe to call on a CPU without it):
/// `x86::*::values`. Output `c` of row `i`, head `u` goes to
/// `out[i * out_row_stride + u * out_stride + c]`.
#[cfg(target_arch = "x86_64")]
type WeightedValues =
    unsafe fn(job: SlabValues<'_>, out: &mut [f32], out_row_stride: usize, out_stride: usize);

/// The inputs of a [`WeightedValues`] call: rows `i < rows` with `first_keys + i` positions
/// each, heads `u < pairs`; output column `c < columns` of pair `(i, u)` is
/// [`reference::dot`]`(p_iu, slab column c)` with
/// `p_iu = p[i * p_row_stride + u * p_stride..][..first_keys + i]` and the slab's rows
/// `0..first_keys + i`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct SlabValues<'a> {
    p: &'a [f32],
    p_row_stride: usize,
    p_stride: usize,
    first_keys: usize,
    rows: usize,
    /// Rows of [`LANES`] values (at least the last row's positions).
    slab: &'a [f32],
    pairs: usize,
    /// Columns of the slab that are outputs (at most [`LANES`]; the rest are padding).
    columns: usize,
}

/// [`combine`]'s tree for each of `N` columns at once: `acc[lane][column]`, whole-vector adds.
#[inline(always)]
fn combine_vectors<const N: usize>(mut acc: [[f32; N]; LANES]) -> [f32; N] {
    let mut width = LANES / 2;
    while width >= 1 {
        for i in 0..width {
            let upper = acc[i + width];
            for (sum, &value) in acc[i].iter_mut().zip(&upper) {
                *sum = *sum + value;
            }
        }
        width /= 2;
    }
    acc[0]
}

/// `out[c] = `[`reference::dot`]`(p, v[.., c])` for every column `c < out.len()`, with value
/// `j`'s row at `v[j * kv_width..]`: position `j` goes to lane `j % LANES` and each column's
/// lanes meet in [`combine`]'s tree, as the reference. Vectorised across 16 columns at a time
/// (`acc[lane][column]`, one vector per lane) reading value rows in place, so no transposed
/// copy of `v` is needed; the tree runs as whole-vector adds.
/// Head sizes of 32, 64 and 128 columns take every column at once ([`weighted_values_wide`]).
#[inline(always)]
fn weighted_values(p: &[f32], v: &[f32], kv_width: usize, out: &mut [f32]) {
    match out.len() {
        32 => weighted_values_wide::<32>(p, v, kv_width, out),
        64 => weighted_values_wide::<64>(p, v, kv_width, out),
        128 => weighted_values_wide::<128>(p, v, kv_width, out),
        _ => weighted_values_blocks(p, v, kv_width, out),
    }
}

/// [`weighted_values`] for `N` columns (`out.len() == N`): every column of a value row at
/// once (`N / 16` vectors per lane), so each row is read once, not once per 16 columns.
#[inline(always)]
fn weighted_values_wide<const N: usize>(p: &[f32], v: &[f32], kv_width: usize, out: &mut [f32]) {
    let row = |j: usize| -> [f32; N] {
        #[cfg(target_arch = "x86_64")]
        {
            // A few rows ahead (a hint: `prefetch` never faults, the address need not be valid).
            let ahead = v.as_ptr().wrapping_add((j + VALUE_ROWS_AHEAD) * kv_width);
            for line in (0..N).step_by(16) {
                // SAFETY: a prefetch reads nothing and has no effect on memory.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        ahead.wrapping_add(line).cast(),
                    )
                };
            }
        }
        v[j * kv_width..][..N]
            .try_into()
            .expect("a value row holds the head's columns")
    };
    out.copy_from_slice(&weighted_lanes(p, row));
}

/// Value rows ahead of the one being read that [`weighted_values_wide`] asks the cache for:
/// rows lie a KV width apart, past what the hardware prefetcher follows well.
const VALUE_ROWS_AHEAD: usize = 6;

/// [`weighted_values`] 16 columns at a time, any head size.
#[inline(always)]
fn weighted_values_blocks(p: &[f32], v: &[f32], kv_width: usize, out: &mut [f32]) {
    for (block, out_block) in out.chunks_mut(LANES).enumerate() {
        let c0 = block * LANES;
        let cols = out_block.len();
        let row = |j: usize| padded_lanes(&v[j * kv_width + c0..j * kv_width + c0 + cols]);
        out_block.copy_from_slice(&weighted_lanes(p, row)[..cols]);
    }
}

/// `sum_j p[j] · row(j)[c]` for each of `N` columns `c` in the reference's lane order:
/// `acc[lane][column]`, position `j` in lane `j % LANES`, then [`combine`]'s tree as whole-
/// vector adds.
#[inline(always)]
fn weighted_lanes<const N: usize>(p: &[f32], row: impl Fn(usize) -> [f32; N]) -> [f32; N] {
    let (weight_chunks, weight_tail) = p.as_chunks::<LANES>();
    let mut acc = [[0.0f32; N]; LANES];
    let chunks = weight_chunks.iter().flat_map(|weights| weights.iter());
    for (j, &weight) in chunks.chain(weight_tail).enumerate() {
        let values = row(j);
        let lane = &mut acc[j % LANES];
        for c in 0..N {
            lane[c] = lane[c] + weight * values[c];
        }
    }
    combine_vectors(acc)
}

/// `values` (at most [`LANES`]) in a fixed-size array, zeros after them.
#[inline(always)]
fn padded_lanes(values: &[f32]) -> [f32; LANES] {
    match <[f32; LANES]>::try_from(values) {
        Ok(lanes) => lanes,
        Err(_) => {
            let mut lanes = [0.0f32; LANES];
            lanes[..values.len()].copy_from_slice(values);
            lanes
        }
    }
}

/// Multiply-adds below which [`linear_by_columns`] stays on one thread: each split is a
/// hand-off to the pool and a wait, and a decode step has hundreds of ops.
pub const COLUMN_THREADS_WORK_MIN: usize = 1 << 19;

/// `act(x · wᵀ)` for `x: [m, k]`, `w: [n, k]`, exactly [`reference::linear`] without bias.
///
/// Few rows (decoding one token): threads split the output columns, each running the tile
/// kernel of [`linear`] on its rows of `w`; many rows: [`linear`] splits the rows. Every output
/// element is one [`reference::dot_fma`] either way.
#[allow(clippy::too_many_arguments)]
pub fn linear_by_columns(
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
        linear(&op, x, out, compute);
        return;
    }
    let per_thread = n.div_ceil(threads);
    let single = compute.single_threaded();
    let blocks: Vec<std::sync::Mutex<Vec<f32>>> = (0..n.div_ceil(per_thread))
        .map(|_| std::sync::Mutex::new(Vec::new()))
        .collect();
    Pool::global().for_each(threads, blocks.len(), |b| {
        let (c0, c1) = (b * per_thread, ((b + 1) * per_thread).min(n));
        let op = Linear {
            b: &w[c0 * k..c1 * k],
            bias: None,
            activation,
            n: c1 - c0,
            k,
        };
        let mut block = vec![0.0f32; m * (c1 - c0)];
        linear(&op, x, &mut block, single);
        match blocks[b].lock() {
            Ok(mut slot) => *slot = block,
            Err(poisoned) => *poisoned.into_inner() = block,
        }
    });
    let blocks: Vec<Vec<f32>> = blocks
        .into_iter()
        .map(|block| match block.into_inner() {
            Ok(block) => block,
            Err(poisoned) => poisoned.into_inner(),
        })
        .collect();
    for (b, block) in blocks.iter().enumerate() {
        let c0 = b * per_thread;
        let cols = block.len() / m.max(1);
        for r in 0..m {
            out[r * n + c0..r * n + c0 + cols].copy_from_slice(&block[r * cols..(r + 1) * cols]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Elementwise sums and products equal the reference's on every instruction set and
    /// thread count: NaNs, infinities, signed zeros and subnormals among random values, a
    /// length with a tail.
    #[test]
    fn elementwise_sums_and_products_are_the_references() {
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MIN_POSITIVE / 4.0,
            f32::MAX,
        ];
        let mut seed = 7u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (width, len) = (37, 37 * 2000);
        let mut random = |_| match next() % 9 {
            0 => specials[(next() % 7) as usize],
            _ => {
                f32::from_bits(next() as u32 & 0x7f7f_ffff)
                    * if next() % 2 == 0 { 1.0 } else { -1.0 }
            }
        };
        let x: Vec<f32> = (0..len).map(&mut random).collect();
        let y: Vec<f32> = (0..len).map(&mut random).collect();
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let (mut sum, mut product) = (vec![0.0; len], vec![0.0; len]);
        reference::add(&x, &y, &mut sum);
        reference::mul(&x, &y, &mut product);
        for isa in Isa::available() {
            for threads in [1, 2, 3] {
                let compute = Compute {
                    threads: NonZeroUsize::new(threads).unwrap(),
                    isa,
                };
                let mut out = vec![0.0; len];
                add(&x, &y, &mut out, width, compute);
                assert_eq!(bits(&out), bits(&sum), "add {isa:?} {threads}");
                mul(&x, &y, &mut out, width, compute);
                assert_eq!(bits(&out), bits(&product), "mul {isa:?} {threads}");
            }
        }
    }

    /// [`softmax_exp`] is [`reference::exp`] at and below zero and for NaN: a sweep of the
    /// negative bit patterns (every 1021st; every one was checked once), both zeros, the
    /// neighbourhoods of the lower clamp and of a few thresholds, and NaNs.
    #[test]
    fn softmax_exp_equals_the_reference_at_or_below_zero() {
        let mut inputs: Vec<f32> = (0x8000_0000u32..=0xffff_ffff)
            .step_by(1021)
            .map(f32::from_bits)
            .collect();
        inputs.extend([0.0, -0.0, f32::NEG_INFINITY, f32::NAN, -f32::NAN]);
        for edge in [
            reference::EXP_X_MIN,
            -87.0,
            -0.5 * std::f32::consts::LN_2,
            -1e-30,
        ] {
            let bits = edge.to_bits();
            inputs.extend((bits.saturating_sub(64)..=bits.saturating_add(64)).map(f32::from_bits));
        }
        for x in inputs.into_iter().filter(|x| x.is_nan() || *x <= 0.0) {
            assert_eq!(
                softmax_exp(x).to_bits(),
                reference::exp(x).to_bits(),
                "x {x:e} ({:#x})",
                x.to_bits()
            );
        }
    }

    /// The exponentials of the softmax tail (AVX-512: four vectors side by side, every
    /// operation of `reference::exp`, NaN vectors through the scalar path; elsewhere lane by
    /// lane) equal `reference::exp` bit for bit on a stride through every f32 bit pattern and
    /// around the clamps, the zeros and the infinities, with NaNs placed in groups.
    #[test]
    fn softmax_exponentials_equal_the_reference_on_a_sweep_of_bit_patterns() {
        let mut inputs: Vec<f32> = (0..=u32::MAX).step_by(4093).map(f32::from_bits).collect();
        for edge in [
            reference::EXP_X_MIN,
            reference::EXP_X_MAX,
            -87.0,
            88.0,
            1e-30,
        ] {
            for edge in [edge, -edge] {
                let bits = edge.to_bits();
                inputs.extend((bits - 64..=bits + 64).map(f32::from_bits));
            }
        }
        inputs.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY]);
        for group in inputs.chunks_mut(4 * 64).filter(|g| g.len() > 100) {
            group[100] = f32::NAN;
        }
        let expected: Vec<u32> = inputs
            .iter()
            .map(|&x| reference::exp(x).to_bits())
            .collect();
        let check = |what: &str, values: &[f32]| {
            for (i, (value, expected)) in values.iter().zip(&expected).enumerate() {
                assert_eq!(
                    value.to_bits(),
                    *expected,
                    "{what}: exp({:e}) at {i}",
                    inputs[i]
                );
            }
        };
        for len in [inputs.len(), inputs.len() - 17, inputs.len() - 40] {
            let mut values = inputs[..len].to_vec();
            // SAFETY: the lane-by-lane loop runs on any CPU.
            unsafe { LaneExp::exp_in_place(&mut values) };
            check("lanes", &values);
            #[cfg(target_arch = "x86_64")]
            if Isa::Avx512.is_supported() {
                let mut values = inputs[..len].to_vec();
                // SAFETY: the CPU has AVX-512F (checked above).
                unsafe { x86::Exp::exp_in_place(&mut values) };
                check("AVX-512", &values);
            }
        }
    }

    /// GELU on every instruction set (AVX-512: four vectors side by side, then one, then the
    /// padded tail) equals `reference::gelu_erf` bit for bit on a stride through every f32 bit
    /// pattern (every 4093rd, both signs), with a NaN placed in every fourth group of 64 so
    /// that groups and single vectors also take the scalar path.
    #[test]
    fn gelu_equals_the_reference_on_a_sweep_of_bit_patterns() {
        let mut inputs: Vec<f32> = (0..=u32::MAX).step_by(4093).map(f32::from_bits).collect();
        for group in inputs.chunks_mut(4 * 64).filter(|g| g.len() > 100) {
            group[100] = f32::NAN;
        }
        let expected: Vec<u32> = inputs
            .iter()
            .map(|&x| reference::gelu_erf(x).to_bits())
            .collect();
        for isa in Isa::available() {
            // Lengths that leave every kind of tail.
            for len in [inputs.len(), inputs.len() - 17, inputs.len() - 40] {
                let mut values = inputs[..len].to_vec();
                activate(supported_isa(isa), Activation::GeluErf, &mut values);
                for (i, (value, expected)) in values.iter().zip(&expected).enumerate() {
                    assert_eq!(
                        value.to_bits(),
                        *expected,
                        "{isa:?}: gelu({:e}) at {i}",
                        inputs[i]
                    );
                }
            }
        }
    }
}

//! The quantized integer matmul: weights kept in GGUF's 32-element blocks (Q4_0, Q4_1, Q8_0),
//! activations quantized per 32-element block to int8, block dot products in integers (exact),
//! block terms combined in f32 in a fixed order. The specification is docs/llm.md §2.1; the
//! scalar functions here ([`quantize_activations`], [`reference_linear`]) are it, and the AVX2
//! and AVX-512 VNNI paths equal them bit for bit (the integer sums are exact in any order and
//! every f32 operation is the same one, lane by lane).

use std::ops::Range;

use crate::kernels::{Compute, Isa};
use crate::reference::Activation;
use crate::tensor::f16_bits_to_f32;

/// Elements per quantization block (weights and activations).
pub const BLOCK: usize = 32;
/// Largest magnitude of a quantized activation.
pub const ACTIVATION_Q_MAX: f32 = 127.0;
/// Work below this many multiply-adds runs on the calling thread (spawning costs more).
const PARALLEL_WORK_MIN: usize = 1 << 16;

/// How a weight block stores its 32 values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFormat {
    /// `d * (n - 8)`, `n` a nibble.
    Q4_0,
    /// `d * n + m`, `n` a nibble.
    Q4_1,
    /// `d * q`, `q` an i8.
    Q8_0,
}

impl BlockFormat {
    /// Bytes of one block in GGUF: f16 scale(s), then the values.
    pub fn gguf_block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
        }
    }

    /// Bytes of a block's values in memory (nibbles packed two to a byte as in GGUF: byte `j`
    /// holds element `j` in its low nibble and element `j + 16` in its high nibble).
    pub fn value_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => BLOCK / 2,
            BlockFormat::Q8_0 => BLOCK,
        }
    }
}

/// Why quantized data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{what}: {detail}")]
    Shape { what: &'static str, detail: String },
}

/// A `[rows, cols]` weight matrix in quantized blocks, `cols` a multiple of [`BLOCK`]; each
/// row is `cols / BLOCK` blocks. Scales are the f16 scales converted exactly to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    /// `d` of every block, row-major.
    scales: Vec<f32>,
    /// `m` of every block (Q4_1 only; empty otherwise).
    mins: Vec<f32>,
    /// The values of every block, [`BlockFormat::value_bytes`] each.
    values: Vec<u8>,
    /// `scales` again, laid out for the SIMD tiles: groups of [`TILE_WEIGHT_ROWS`] rows, block
    /// by block, row by row within a block (`[(row / 8 * bpr + b) * 8 + row % 8]`, 0 past the
    /// last row), so a tile loads one block's scales of its eight rows as one vector.
    tile_scales: Vec<f32>,
    /// `mins` in the same layout (Q4_1 only; empty otherwise).
    tile_mins: Vec<f32>,
}

/// Blocks of a `rows × cols` matrix: both at least 1, `cols` whole blocks, no overflow.
fn block_count(rows: usize, cols: usize, what: &'static str) -> Result<usize, QuantError> {
    let fail = |detail: String| QuantError::Shape { what, detail };
    if rows == 0 || cols == 0 || !cols.is_multiple_of(BLOCK) {
        return Err(fail(format!("{rows} × {cols}: columns not whole blocks")));
    }
    rows.checked_mul(cols / BLOCK)
        .ok_or_else(|| fail(format!("{rows} × {cols} overflows")))
}

impl QuantMatrix {
    /// Read `rows × cols` values from GGUF blocks (`bytes` exactly `rows × cols / 32` blocks).
    pub fn from_gguf(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<QuantMatrix, QuantError> {
        let shape = |detail: String| QuantError::Shape {
            what: "quantized matrix",
            detail,
        };
        let blocks = block_count(rows, cols, "quantized matrix")?;
        let expected = blocks.checked_mul(format.gguf_block_bytes());
        if expected != Some(bytes.len()) {
            return Err(shape(format!(
                "{} bytes for {blocks} {format:?} blocks",
                bytes.len()
            )));
        }
        let f16 = |b: &[u8]| f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let mut matrix = QuantMatrix {
            format,
            rows,
            cols,
            scales: Vec::with_capacity(blocks),
            mins: Vec::new(),
            values: Vec::with_capacity(blocks * format.value_bytes()),
            tile_scales: Vec::new(),
            tile_mins: Vec::new(),
        };
        let header = format.gguf_block_bytes() - format.value_bytes();
        for block in bytes.chunks_exact(format.gguf_block_bytes()) {
            matrix.scales.push(f16(&block[0..2]));
            if format == BlockFormat::Q4_1 {
                matrix.mins.push(f16(&block[2..4]));
            }
            matrix.values.extend_from_slice(&block[header..]);
        }
        Ok(matrix.with_tile_layout())
    }

    pub fn format(&self) -> BlockFormat {
        self.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        (self.scales.len() + self.mins.len() + self.tile_scales.len() + self.tile_mins.len()) * 4
            + self.values.len()
    }

    /// Fill `tile_scales` and `tile_mins` from `scales` and `mins` (once, when built).
    fn with_tile_layout(mut self) -> QuantMatrix {
        let bpr = self.blocks_per_row();
        let groups = self.rows.div_ceil(TILE_WEIGHT_ROWS);
        let layout = |from: &[f32]| {
            let mut to = vec![0.0f32; groups * bpr * TILE_WEIGHT_ROWS];
            for (row, values) in from.chunks_exact(bpr).enumerate() {
                let (group, lane) = (row / TILE_WEIGHT_ROWS, row % TILE_WEIGHT_ROWS);
                for (b, &value) in values.iter().enumerate() {
                    to[(group * bpr + b) * TILE_WEIGHT_ROWS + lane] = value;
                }
            }
            to
        };
        self.tile_scales = layout(&self.scales);
        self.tile_mins = if self.format == BlockFormat::Q4_1 {
            layout(&self.mins)
        } else {
            Vec::new()
        };
        self
    }

    /// The matrix made of rows `order[0], order[1], …` of this one (a row permutation or a
    /// selection: moves whole rows, exact).
    pub fn select_rows(&self, order: &[usize]) -> Result<QuantMatrix, QuantError> {
        if let Some(&bad) = order.iter().find(|&&r| r >= self.rows) {
            return Err(QuantError::Shape {
                what: "row selection",
                detail: format!("row {bad} of {}", self.rows),
            });
        }
        if order.is_empty() {
            return Err(QuantError::Shape {
                what: "row selection",
                detail: "no rows".into(),
            });
        }
        let (bpr, vb) = (self.blocks_per_row(), self.format.value_bytes());
        let mut out = QuantMatrix {
            format: self.format,
            rows: order.len(),
            cols: self.cols,
            scales: Vec::with_capacity(order.len() * bpr),
            mins: Vec::new(),
            values: Vec::with_capacity(order.len() * bpr * vb),
            tile_scales: Vec::new(),
            tile_mins: Vec::new(),
        };
        for &r in order {
            out.scales
                .extend_from_slice(&self.scales[r * bpr..(r + 1) * bpr]);
            if self.format == BlockFormat::Q4_1 {
                out.mins
                    .extend_from_slice(&self.mins[r * bpr..(r + 1) * bpr]);
            }
            out.values
                .extend_from_slice(&self.values[r * bpr * vb..(r + 1) * bpr * vb]);
        }
        Ok(out.with_tile_layout())
    }

    /// The integer value of element `j` of block `block` (row-major block index): `q` for
    /// Q8_0, `n - 8` for Q4_0, `n` for Q4_1.
    fn integer(&self, block: usize, j: usize) -> i32 {
        match self.format {
            BlockFormat::Q8_0 => self.values[block * BLOCK + j] as i8 as i32,
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let byte = self.values[block * BLOCK / 2 + j % 16];
                let nibble = if j < 16 { byte & 15 } else { byte >> 4 } as i32;
                if self.format == BlockFormat::Q4_0 {
                    nibble - 8
                } else {
                    nibble
                }
            }
        }
    }

    /// Floats per block in the f32 block encoding ([`QuantMatrix::encode_row`]): 33 for
    /// blocks of signed integers (Q8_0, Q4_0), 34 for Q4_1.
    pub fn encoded_block_floats(format: BlockFormat) -> usize {
        match format {
            BlockFormat::Q4_1 => BLOCK + 2,
            _ => BLOCK + 1,
        }
    }

    /// Width of a row in the f32 block encoding.
    pub fn encoded_cols(&self) -> usize {
        self.blocks_per_row() * QuantMatrix::encoded_block_floats(self.format)
    }

    /// Row `row` in the f32 block encoding (docs/llm.md §2.1), appended to `out`: per block
    /// `d`, then (Q4_1) `m`, then the 32 integer values as f32 (`q`, `n - 8` or `n`). Every
    /// number is exact in f32, so [`QuantMatrix::from_encoded`] gives back the same arithmetic.
    pub fn encode_row(&self, row: usize, out: &mut Vec<f32>) {
        let bpr = self.blocks_per_row();
        for block in row * bpr..(row + 1) * bpr {
            out.push(self.scales[block]);
            if self.format == BlockFormat::Q4_1 {
                out.push(self.mins[block]);
            }
            out.extend((0..BLOCK).map(|j| self.integer(block, j) as f32));
        }
    }

    /// A matrix from its f32 block encoding: `rows` rows of `cols` values, the block layout
    /// told by the width (`cols / 32 × 33`: signed blocks, held as Q8_0; `× 34`: Q4_1).
    /// Refuses values that are not integers in range (`-128..=127`, Q4_1 `0..=15`).
    pub fn from_encoded(
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<QuantMatrix, QuantError> {
        let fail = |detail: String| QuantError::Shape {
            what: "encoded blocks",
            detail,
        };
        let blocks = block_count(rows, cols, "encoded blocks")?;
        let format = if Some(values.len()) == blocks.checked_mul(BLOCK + 1) {
            BlockFormat::Q8_0
        } else if Some(values.len()) == blocks.checked_mul(BLOCK + 2) {
            BlockFormat::Q4_1
        } else {
            return Err(fail(format!("{} values for {blocks} blocks", values.len())));
        };
        let (low, high) = match format {
            BlockFormat::Q4_1 => (0.0, 15.0),
            _ => (-128.0, 127.0),
        };
        let mut matrix = QuantMatrix {
            format,
            rows,
            cols,
            scales: Vec::with_capacity(blocks),
            mins: Vec::new(),
            values: Vec::with_capacity(blocks * format.value_bytes()),
            tile_scales: Vec::new(),
            tile_mins: Vec::new(),
        };
        for block in values.chunks_exact(QuantMatrix::encoded_block_floats(format)) {
            matrix.scales.push(block[0]);
            let integers = match format {
                BlockFormat::Q4_1 => {
                    matrix.mins.push(block[1]);
                    &block[2..]
                }
                _ => &block[1..],
            };
            if let Some(bad) = integers
                .iter()
                .find(|v| !(v.fract() == 0.0 && (low..=high).contains(*v)))
            {
                return Err(fail(format!("{bad} is not a {format:?} integer")));
            }
            match format {
                BlockFormat::Q4_1 => matrix.values.extend(
                    (0..BLOCK / 2).map(|j| integers[j] as u8 | ((integers[j + 16] as u8) << 4)),
                ),
                _ => matrix
                    .values
                    .extend(integers.iter().map(|&v| v as i32 as i8 as u8)),
            }
        }
        Ok(matrix.with_tile_layout())
    }

    /// Row `row` dequantized by docs/llm.md §2's exact rules (`d * q`, `d * (n - 8)`,
    /// `d * n + m` with the product rounded first), into `out` (`cols` values).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let bpr = self.blocks_per_row();
        for (b, values) in out.chunks_exact_mut(BLOCK).take(bpr).enumerate() {
            let block = row * bpr + b;
            let d = self.scales[block];
            for (j, value) in values.iter_mut().enumerate() {
                let product = d * self.integer(block, j) as f32;
                *value = match self.format {
                    BlockFormat::Q4_1 => product + self.mins[block],
                    _ => product,
                };
            }
        }
    }
}

/// Activations `[rows, cols]` quantized per 32-element block: a scale `d`, 32 int8 values
/// and their sum per block.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantActivations {
    rows: usize,
    cols: usize,
    scales: Vec<f32>,
    sums: Vec<i32>,
    values: Vec<i8>,
}

impl QuantActivations {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Quantize `x: [rows, cols]` (`cols` a multiple of [`BLOCK`]) per block (docs/llm.md §2.1):
/// `amax = max |x_j|` (NaN ignored), `d = amax / 127`, `q_j = round(x_j * (127 / amax))`
/// rounded half away from zero and clamped to ±127 (`q_j = 0` when `amax = 0`); every
/// operation one f32 rounding.
pub fn quantize_activations(
    x: &[f32],
    rows: usize,
    cols: usize,
) -> Result<QuantActivations, QuantError> {
    if !cols.is_multiple_of(BLOCK) || x.len() != rows * cols {
        return Err(QuantError::Shape {
            what: "activations",
            detail: format!("{} values for {rows} × {cols}", x.len()),
        });
    }
    let blocks = x.len() / BLOCK;
    let mut out = QuantActivations {
        rows,
        cols,
        scales: Vec::with_capacity(blocks),
        sums: Vec::with_capacity(blocks),
        values: Vec::with_capacity(x.len()),
    };
    for block in x.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inverse = if amax > 0.0 {
            ACTIVATION_Q_MAX / amax
        } else {
            0.0
        };
        out.scales.push(amax / ACTIVATION_Q_MAX);
        let mut sum = 0i32;
        for &v in block {
            let q = (v * inverse)
                .round()
                .clamp(-ACTIVATION_Q_MAX, ACTIVATION_Q_MAX) as i8;
            sum += q as i32;
            out.values.push(q);
        }
        out.sums.push(sum);
    }
    Ok(out)
}

/// One output: row `row` of the activations against row `w_row` of the weights, the
/// specification's fixed order: `acc = 0; for each block b in order:
/// acc = acc + term_b`, with `term_b = (dw * da) * isum` (Q4_0, Q8_0) or
/// `(dw * da) * isum + (mw * da) * asum` (Q4_1), `isum` the exact integer dot, `asum` the sum
/// of the activation block; each operation one f32 rounding, no fused multiply-add.
fn reference_dot(x: &QuantActivations, row: usize, w: &QuantMatrix, w_row: usize) -> f32 {
    let bpr = w.blocks_per_row();
    let mut acc = 0.0f32;
    for b in 0..bpr {
        let (wb, xb) = (w_row * bpr + b, row * bpr + b);
        let isum: i32 = (0..BLOCK)
            .map(|j| w.integer(wb, j) * x.values[xb * BLOCK + j] as i32)
            .sum();
        acc += block_term(w, wb, x, xb, isum);
    }
    acc
}

/// `term_b` of [`reference_dot`] from its exact integer dot.
#[inline(always)]
fn block_term(w: &QuantMatrix, wb: usize, x: &QuantActivations, xb: usize, isum: i32) -> f32 {
    let da = x.scales[xb];
    let term = (w.scales[wb] * da) * isum as f32;
    match w.format {
        BlockFormat::Q4_1 => term + (w.mins[wb] * da) * x.sums[xb] as f32,
        _ => term,
    }
}

fn check_shapes(
    x: &QuantActivations,
    w: &QuantMatrix,
    columns: &Range<usize>,
    out: &[f32],
) -> Result<(), QuantError> {
    if x.cols != w.cols
        || columns.end > w.rows
        || columns.is_empty()
        || out.len() != x.rows * columns.len()
    {
        return Err(QuantError::Shape {
            what: "quantized linear",
            detail: format!(
                "x {} × {}, w {} × {}, columns {columns:?}, out {}",
                x.rows,
                x.cols,
                w.rows,
                w.cols,
                out.len()
            ),
        });
    }
    Ok(())
}

/// The specification: `out[i][c - columns.start] = act(dot(x[i], w[c]))` for weight rows
/// `c` in `columns`, by [`reference_dot`], one thread.
pub fn reference_linear(
    x: &QuantActivations,
    w: &QuantMatrix,
    columns: Range<usize>,
    activation: Activation,
    out: &mut [f32],
) -> Result<(), QuantError> {
    check_shapes(x, w, &columns, out)?;
    let n = columns.len();
    for i in 0..x.rows {
        for (c, w_row) in columns.clone().enumerate() {
            out[i * n + c] = activation.apply(reference_dot(x, i, w, w_row));
        }
    }
    Ok(())
}

/// [`reference_linear`] on `compute`'s instruction set and threads (threads split the weight
/// rows; every output is computed whole by one thread): the same bits.
pub fn linear(
    x: &QuantActivations,
    w: &QuantMatrix,
    columns: Range<usize>,
    activation: Activation,
    out: &mut [f32],
    compute: Compute,
) -> Result<(), QuantError> {
    check_shapes(x, w, &columns, out)?;
    let n = columns.len();
    let threads = compute.threads.get().min(n);
    let work = x.rows * n * w.cols;
    if threads <= 1 || work < PARALLEL_WORK_MIN {
        let block = weight_rows_block(x, w, columns.clone(), compute.isa);
        for (o, v) in out.iter_mut().zip(&block) {
            *o = activation.apply(*v);
        }
        return Ok(());
    }
    // Whole tiles of weight rows per thread (a tile aligned to them loads its scales whole).
    let per_thread = n.div_ceil(threads).div_ceil(TILE_WEIGHT_ROWS) * TILE_WEIGHT_ROWS;
    let part_count = n.div_ceil(per_thread);
    let compute_part = |p: usize| {
        let c0 = columns.start + p * per_thread;
        let c1 = (c0 + per_thread).min(columns.end);
        weight_rows_block(x, w, c0..c1, compute.isa)
    };
    let slots: Vec<std::sync::Mutex<Vec<f32>>> =
        (0..part_count).map(|_| Default::default()).collect();
    let fill = |p: usize| {
        let part = compute_part(p);
        if let Ok(mut slot) = slots[p].lock() {
            *slot = part;
        }
    };
    if !pool::run(part_count, &fill) {
        // The pool is serving another caller: threads of our own.
        std::thread::scope(|scope| {
            for p in 1..part_count {
                let fill = &fill;
                scope.spawn(move || fill(p));
            }
            fill(0);
        });
    }
    let parts: Vec<Vec<f32>> = slots
        .into_iter()
        .map(|slot| slot.into_inner().unwrap_or_default())
        .collect();
    for (p, part) in parts.iter().enumerate() {
        let c0 = p * per_thread;
        let width = part.len() / x.rows.max(1);
        for i in 0..x.rows {
            for (o, v) in out[i * n + c0..i * n + c0 + width]
                .iter_mut()
                .zip(&part[i * width..(i + 1) * width])
            {
                *o = activation.apply(*v);
            }
        }
    }
    Ok(())
}

/// Weight rows read together by every activation row (they stay in cache while the rows pass
/// over them): 64 rows of 576 Q4_1 weights are 23 KiB.
const WEIGHT_ROWS_CACHED: usize = 64;
/// Weight rows of one tile: lane `r` of a tile's block terms belongs to weight row `r`.
const TILE_WEIGHT_ROWS: usize = 8;
/// Activation rows of one tile: they share one unpacking of the tile's weight blocks.
const TILE_ACTIVATION_ROWS: usize = 4;
/// One tile's finished dots: `[activation row][weight row]`.
type TileDots = [[f32; TILE_WEIGHT_ROWS]; TILE_ACTIVATION_ROWS];

/// `[x.rows, columns.len()]` dots of every activation row with weight rows `columns` (no
/// activation), weight rows outermost so a prefill reads each weight once per row block; within
/// a block, tiles of [`TILE_ACTIVATION_ROWS`] × [`TILE_WEIGHT_ROWS`] dots.
fn weight_rows_block(
    x: &QuantActivations,
    w: &QuantMatrix,
    columns: Range<usize>,
    isa: Isa,
) -> Vec<f32> {
    let width = columns.len();
    let mut block = vec![0.0f32; x.rows * width];
    let mut dots: TileDots = [[0.0; TILE_WEIGHT_ROWS]; TILE_ACTIVATION_ROWS];
    for c0 in columns.clone().step_by(WEIGHT_ROWS_CACHED) {
        let c1 = (c0 + WEIGHT_ROWS_CACHED).min(columns.end);
        for i0 in (0..x.rows).step_by(TILE_ACTIVATION_ROWS) {
            let i1 = (i0 + TILE_ACTIVATION_ROWS).min(x.rows);
            for g0 in (c0..c1).step_by(TILE_WEIGHT_ROWS) {
                let g1 = (g0 + TILE_WEIGHT_ROWS).min(c1);
                tile(x, i0..i1, w, g0..g1, &mut dots, isa);
                let at = g0 - columns.start;
                for (i, row) in (i0..i1).zip(&dots) {
                    block[i * width + at..i * width + at + (g1 - g0)]
                        .copy_from_slice(&row[..g1 - g0]);
                }
            }
        }
    }
    block
}

mod pool {
    //! A persistent pool of worker threads for [`super::linear`]: a decode step runs a few
    //! hundred small matmuls per token, and spawning threads for each costs as much as the work.
    //! One caller at a time (others get `false` and use threads of their own); the caller runs
    //! parts too and returns only when every part is done.

    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

    /// Most worker threads the pool starts.
    const WORKERS_MAX: usize = 63;

    type Task = dyn Fn(usize) + Sync;

    struct Job {
        /// The caller's task; valid until the caller sees `next == parts && running == 0`.
        task: *const Task,
        parts: usize,
        next: usize,
        running: usize,
        panicked: bool,
    }

    // SAFETY: the task is `Sync` and outlives every use (the caller waits for all parts).
    unsafe impl Send for Job {}

    #[derive(Default)]
    struct State {
        job: Option<Job>,
        workers: usize,
    }

    #[derive(Default)]
    struct Shared {
        state: Mutex<State>,
        work: Condvar,
        done: Condvar,
    }

    struct Pool {
        shared: Arc<Shared>,
        call: Mutex<()>,
    }

    fn pool() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool {
            shared: Arc::new(Shared::default()),
            call: Mutex::new(()),
        })
    }

    fn lock(shared: &Shared) -> MutexGuard<'_, State> {
        shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Take the next part of the current job, if any.
    fn take(state: &mut State) -> Option<(usize, *const Task)> {
        let job = state.job.as_mut()?;
        (job.next < job.parts).then(|| {
            job.next += 1;
            job.running += 1;
            (job.next - 1, job.task)
        })
    }

    /// Run part `part` of `task` and record its end.
    fn run_part(shared: &Shared, part: usize, task: *const Task) {
        // SAFETY: the caller of `run` keeps `task` alive until this part is recorded done.
        let ok = catch_unwind(AssertUnwindSafe(|| unsafe { (*task)(part) })).is_ok();
        let mut state = lock(shared);
        if let Some(job) = state.job.as_mut() {
            job.running -= 1;
            job.panicked |= !ok;
            if job.next == job.parts && job.running == 0 {
                shared.done.notify_all();
            }
        }
    }

    fn worker(shared: Arc<Shared>) {
        loop {
            let (part, task) = {
                let mut state = lock(&shared);
                loop {
                    if let Some(taken) = take(&mut state) {
                        break taken;
                    }
                    state = shared
                        .work
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
            };
            run_part(&shared, part, task);
        }
    }

    /// Run `task(0)`, …, `task(parts - 1)` on the pool and the calling thread; `false` (nothing
    /// run) when another caller holds the pool.
    pub(super) fn run(parts: usize, task: &(dyn Fn(usize) + Sync)) -> bool {
        let pool = pool();
        let Ok(_call) = pool.call.try_lock() else {
            return false;
        };
        let shared = &pool.shared;
        {
            let mut state = lock(shared);
            let wanted = parts.saturating_sub(1).min(WORKERS_MAX);
            while state.workers < wanted {
                let for_worker = Arc::clone(shared);
                if std::thread::Builder::new()
                    .name("piazza-quant".into())
                    .spawn(move || worker(for_worker))
                    .is_err()
                {
                    break;
                }
                state.workers += 1;
            }
            // SAFETY (lifetime erased): `task` outlives the job; this function returns only
            // after every part has finished and the job is removed.
            let task: *const Task =
                unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Task>(task) };
            state.job = Some(Job {
                task,
                parts,
                next: 0,
                running: 0,
                panicked: false,
            });
            shared.work.notify_all();
        }
        loop {
            let taken = take(&mut lock(shared));
            match taken {
                Some((part, task)) => run_part(shared, part, task),
                None => break,
            }
        }
        let mut state = lock(shared);
        while state
            .job
            .as_ref()
            .is_some_and(|job| job.next < job.parts || job.running > 0)
        {
            state = shared
                .done
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let panicked = state.job.take().is_some_and(|job| job.panicked);
        drop(state);
        assert!(!panicked, "a quantized linear part panicked");
        true
    }
}

/// The dots of activation rows `rows` (at most [`TILE_ACTIVATION_ROWS`]) with weight rows
/// `weight_rows` (at most [`TILE_WEIGHT_ROWS`]), into
/// `dots[i][r]` (no activation); each dot is [`reference_dot`]'s sequence of operations.
fn tile(
    x: &QuantActivations,
    rows: Range<usize>,
    w: &QuantMatrix,
    weight_rows: Range<usize>,
    dots: &mut TileDots,
    isa: Isa,
) {
    debug_assert!(rows.len() <= TILE_ACTIVATION_ROWS && weight_rows.len() <= TILE_WEIGHT_ROWS);
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && has_vnni() {
            // SAFETY: the CPU has AVX-512 F/BW/VL and VNNI (checked above).
            unsafe { x86::tile_vnni(x, rows, w, weight_rows, dots) };
            return;
        }
        if matches!(isa, Isa::Avx512 | Isa::Avx2) && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { x86::tile_avx2(x, rows, w, weight_rows, dots) };
            return;
        }
    }
    let _ = isa;
    for (i, out) in rows.zip(dots.iter_mut()) {
        for (o, w_row) in out.iter_mut().zip(weight_rows.clone()) {
            *o = reference_dot(x, i, w, w_row);
        }
    }
}

/// Whether the AVX-512 path can use VNNI (`vpdpbusd` on 256-bit registers).
#[cfg(target_arch = "x86_64")]
pub fn has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Integer block dots in SIMD: a tile's eight weight rows in the eight lanes, so each block
    //! gives one vector of exact `isum`s, one vector of f32 block terms (the same operations as
    //! [`super::block_term`], lane by lane) and one vector add into eight sequential sums.

    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{BlockFormat, QuantActivations, QuantMatrix, TileDots, BLOCK, TILE_WEIGHT_ROWS};

    /// The 32 integer weights of the block at `at` as bytes: unsigned nibbles (Q4_0, Q4_1;
    /// Q4_0's `- 8` is applied to the sum) or the signed i8 (Q8_0).
    #[inline(always)]
    unsafe fn load_weights(format: BlockFormat, at: *const u8) -> __m256i {
        match format {
            BlockFormat::Q8_0 => _mm256_loadu_si256(at as *const __m256i),
            _ => {
                let packed = _mm_loadu_si128(at as *const __m128i);
                let mask = _mm_set1_epi8(15);
                let low = _mm_and_si128(packed, mask);
                let high = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
                _mm256_set_m128i(high, low)
            }
        }
    }

    /// Partial sums of `weights · activations` (unsigned-or-signed weights per format).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn partial_avx2(format: BlockFormat, wv: __m256i, xv: __m256i) -> __m256i {
        let (a, b) = match format {
            // |w| (≤ 128 as u8) times x with w's sign: pairs ≤ 2 · 128 · 127 fit i16.
            BlockFormat::Q8_0 => (_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv)),
            _ => (wv, xv),
        };
        let pairs = _mm256_maddubs_epi16(a, b);
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn partial_vnni(format: BlockFormat, wv: __m256i, xv: __m256i) -> __m256i {
        let (a, b) = match format {
            BlockFormat::Q8_0 => (_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv)),
            _ => (wv, xv),
        };
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
    }

    /// Eight partial-sum vectors reduced to one vector of their eight sums, vector `i`'s in
    /// lane `i` (integer adds: exact in any order).
    #[inline(always)]
    unsafe fn reduce8(p: [__m256i; 8]) -> __m256i {
        let t0 = _mm256_hadd_epi32(p[0], p[1]);
        let t1 = _mm256_hadd_epi32(p[2], p[3]);
        let t2 = _mm256_hadd_epi32(p[4], p[5]);
        let t3 = _mm256_hadd_epi32(p[6], p[7]);
        let u0 = _mm256_hadd_epi32(t0, t1);
        let u1 = _mm256_hadd_epi32(t2, t3);
        _mm256_add_epi32(
            _mm256_permute2x128_si256(u0, u1, 0x20),
            _mm256_permute2x128_si256(u0, u1, 0x31),
        )
    }

    /// `values[at + offsets[r]]` in the lanes `r` that `lanes` selects, 0 in the others.
    #[inline(always)]
    unsafe fn gather_rows(values: &[f32], at: usize, offsets: __m256i, lanes: __m256) -> __m256 {
        _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), values.as_ptr().add(at), offsets, lanes)
    }

    /// One tile: `R` activation rows from `row0` against the weight rows `weight_rows`
    /// (unused lanes read no weights and are never stored). For each block in order, lane by
    /// lane: `term = (dw * da) * isum` (`+ (mw * da) * asum` for Q4_1), `acc = acc + term`.
    macro_rules! tile_body {
        ($rows_fn:ident, $tile_fn:ident, $partial:ident, $feature:literal) => {
            #[inline(always)]
            unsafe fn $rows_fn<const R: usize>(
                x: &QuantActivations,
                row0: usize,
                w: &QuantMatrix,
                weight_rows: Range<usize>,
                dots: &mut TileDots,
            ) {
                let bpr = w.cols / BLOCK;
                let count = weight_rows.len();
                assert!(
                    (1..=TILE_WEIGHT_ROWS).contains(&count)
                        && weight_rows.end <= w.rows
                        && (row0 + R) * bpr <= x.scales.len()
                        && bpr <= i32::MAX as usize / TILE_WEIGHT_ROWS
                );
                let q4_1 = w.format == BlockFormat::Q4_1;
                // Lane `r` reads weight row `weight_rows.start + r`'s scale (rows past `count`:
                // masked off, read as 0 and never stored).
                let stride = bpr as i32;
                let offsets = _mm256_mullo_epi32(
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                    _mm256_set1_epi32(stride),
                );
                let lanes = _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(count as i32),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                let lanes = _mm256_castsi256_ps(lanes);
                let first_block = weight_rows.start * bpr;
                // A tile of whole row groups reads the tile layout of the scales (contiguous);
                // one that starts inside a group gathers from the row-major scales.
                let aligned = weight_rows.start % TILE_WEIGHT_ROWS == 0;
                let tile_first = weight_rows.start * bpr;
                assert!(
                    !aligned
                        || (w.tile_scales.len() >= tile_first + bpr * TILE_WEIGHT_ROWS
                            && (!q4_1 || w.tile_mins.len() >= tile_first + bpr * TILE_WEIGHT_ROWS))
                );
                // Each lane's weight row (a tile of fewer rows repeats its last one in the
                // unused lanes, whose sums are never stored).
                let value_bytes = w.format.value_bytes();
                let row_bytes = bpr * value_bytes;
                let mut w_rows = [w.values.as_ptr(); TILE_WEIGHT_ROWS];
                for (r, at) in w_rows.iter_mut().enumerate() {
                    *at = at.add((weight_rows.start + r.min(count - 1)) * row_bytes);
                }
                let x_rows: [*const i8; R] =
                    std::array::from_fn(|i| x.values.as_ptr().add((row0 + i) * bpr * BLOCK));
                let mut acc = [_mm256_setzero_ps(); R];
                for b in 0..bpr {
                    let mut wv = [_mm256_setzero_si256(); TILE_WEIGHT_ROWS];
                    for (v, at) in wv.iter_mut().zip(w_rows) {
                        *v = load_weights(w.format, at.add(b * value_bytes));
                    }
                    let (dw, mw) = if aligned {
                        let at = tile_first + b * TILE_WEIGHT_ROWS;
                        let mw = if q4_1 {
                            _mm256_loadu_ps(w.tile_mins.as_ptr().add(at))
                        } else {
                            _mm256_setzero_ps()
                        };
                        (_mm256_loadu_ps(w.tile_scales.as_ptr().add(at)), mw)
                    } else {
                        let mw = if q4_1 {
                            gather_rows(&w.mins, first_block + b, offsets, lanes)
                        } else {
                            _mm256_setzero_ps()
                        };
                        (gather_rows(&w.scales, first_block + b, offsets, lanes), mw)
                    };
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let xb = (row0 + i) * bpr + b;
                        let xv = _mm256_loadu_si256(x_rows[i].add(b * BLOCK) as *const __m256i);
                        let mut partials = [_mm256_setzero_si256(); TILE_WEIGHT_ROWS];
                        for (p, &v) in partials.iter_mut().zip(&wv) {
                            *p = $partial(w.format, v, xv);
                        }
                        let mut isum = reduce8(partials);
                        let asum = *x.sums.get_unchecked(xb);
                        if w.format == BlockFormat::Q4_0 {
                            isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * asum));
                        }
                        let da = _mm256_set1_ps(*x.scales.get_unchecked(xb));
                        let mut term =
                            _mm256_mul_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(isum));
                        if q4_1 {
                            let offset =
                                _mm256_mul_ps(_mm256_mul_ps(mw, da), _mm256_set1_ps(asum as f32));
                            term = _mm256_add_ps(term, offset);
                        }
                        *acc = _mm256_add_ps(*acc, term);
                    }
                }
                for (out, acc) in dots.iter_mut().zip(acc) {
                    _mm256_storeu_ps(out.as_mut_ptr(), acc);
                }
            }

            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $tile_fn(
                x: &QuantActivations,
                rows: Range<usize>,
                w: &QuantMatrix,
                weight_rows: Range<usize>,
                dots: &mut TileDots,
            ) {
                let row0 = rows.start;
                match rows.len() {
                    0 => {}
                    1 => $rows_fn::<1>(x, row0, w, weight_rows, dots),
                    2 => $rows_fn::<2>(x, row0, w, weight_rows, dots),
                    3 => $rows_fn::<3>(x, row0, w, weight_rows, dots),
                    _ => $rows_fn::<4>(x, row0, w, weight_rows, dots),
                }
            }
        };
    }

    tile_body!(rows_avx2, tile_avx2, partial_avx2, "avx2");
    tile_body!(
        rows_vnni,
        tile_vnni,
        partial_vnni,
        "avx2,avx512f,avx512bw,avx512vl,avx512vnni"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator of test data (xorshift).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn float(&mut self) -> f32 {
            (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
        }
    }

    /// GGUF bytes of `blocks` random blocks of `format` (every nibble and i8 value reachable,
    /// -128 included).
    fn random_gguf(format: BlockFormat, blocks: usize, rng: &mut Rng) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..blocks {
            // f16 scales in a normal range (exponent 5..20), either sign for m.
            let scale =
                |rng: &mut Rng| (((rng.next() % 16 + 5) << 10) | (rng.next() % 1024)) as u16;
            bytes.extend_from_slice(&scale(rng).to_le_bytes());
            if format == BlockFormat::Q4_1 {
                let m = scale(rng) | (((rng.next() % 2) as u16) << 15);
                bytes.extend_from_slice(&m.to_le_bytes());
            }
            for _ in 0..format.value_bytes() {
                bytes.push(rng.next() as u8);
            }
        }
        bytes
    }

    fn check(format: BlockFormat, rows: usize, cols: usize, n: usize, seed: u64) {
        let mut rng = Rng(seed);
        let w = QuantMatrix::from_gguf(
            format,
            n,
            cols,
            &random_gguf(format, n * cols / BLOCK, &mut rng),
        )
        .unwrap();
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| {
                // Mix magnitudes, exact zeros and ties at .5 after scaling.
                match i % 11 {
                    0 => 0.0,
                    1 => rng.float() * 1e3,
                    _ => rng.float(),
                }
            })
            .collect();
        let xq = quantize_activations(&x, rows, cols).unwrap();
        for columns in [0..n, 1..n.min(7)] {
            let mut expected = vec![0.0f32; rows * columns.len()];
            reference_linear(&xq, &w, columns.clone(), Activation::Silu, &mut expected).unwrap();
            for isa in Isa::available() {
                for threads in [1, 3] {
                    let mut got = vec![0.0f32; expected.len()];
                    let compute = Compute {
                        threads: std::num::NonZeroUsize::new(threads).unwrap(),
                        isa,
                    };
                    linear(
                        &xq,
                        &w,
                        columns.clone(),
                        Activation::Silu,
                        &mut got,
                        compute,
                    )
                    .unwrap();
                    let same = got
                        .iter()
                        .zip(&expected)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{format:?} {isa:?} threads {threads} {columns:?}");
                }
            }
        }
    }

    #[test]
    fn every_path_equals_the_reference_on_random_blocks() {
        for (seed, format) in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0]
            .into_iter()
            .enumerate()
        {
            check(format, 3, 8 * BLOCK, 40, seed as u64 + 1);
            check(format, 1, 18 * BLOCK, 300, seed as u64 + 10);
            // Tiles of 4 activation rows and 8 weight rows with remainders of both, several
            // cached weight-row blocks, a row of fewer blocks than a vector's lanes.
            check(format, 6, 5 * BLOCK, 70, seed as u64 + 20);
            check(format, 9, 48 * BLOCK, 133, seed as u64 + 30);
        }
    }

    #[test]
    fn the_dot_is_the_specified_sum_of_block_terms() {
        // One Q8_0 row of two blocks against activations quantized exactly.
        let mut bytes = Vec::new();
        for (d, q) in [(0x3c00u16, 2i8), (0x4000u16, -3i8)] {
            bytes.extend_from_slice(&d.to_le_bytes());
            bytes.extend(std::iter::repeat_n(q as u8, BLOCK));
        }
        let w = QuantMatrix::from_gguf(BlockFormat::Q8_0, 1, 2 * BLOCK, &bytes).unwrap();
        let x = vec![127.0f32; 2 * BLOCK];
        let xq = quantize_activations(&x, 1, 2 * BLOCK).unwrap();
        assert_eq!(xq.scales, vec![1.0, 1.0]);
        let mut out = [0.0f32];
        reference_linear(&xq, &w, 0..1, Activation::Identity, &mut out).unwrap();
        // (1 · 1) · (32 · 2 · 127) + (2 · 1) · (32 · -3 · 127)
        assert_eq!(out[0], 8128.0 - 24384.0);
    }

    #[test]
    fn activation_rounding_is_half_away_from_zero_and_clamped() {
        let mut x = vec![0.0f32; BLOCK];
        x[0] = 254.0; // amax: d = 2, q = 127
        x[1] = 1.0; // 0.5 after scaling: rounds to 1
        x[2] = -1.0; // -0.5: rounds to -1
        x[3] = -254.0;
        let q = quantize_activations(&x, 1, BLOCK).unwrap();
        assert_eq!(q.scales[0], 2.0);
        assert_eq!(&q.values[..4], &[127, 1, -1, -127]);
        assert_eq!(q.sums[0], 0);
        let zeros = quantize_activations(&[0.0; BLOCK], 1, BLOCK).unwrap();
        assert_eq!((zeros.scales[0], zeros.sums[0]), (0.0, 0));
    }

    #[test]
    fn dequantized_rows_follow_the_gguf_rules() {
        // Q4_1: d = 1, m = -0.5 → n - 0.5; nibble layout low = j, high = j + 16.
        let mut bytes = vec![0x00, 0x3c, 0x00, 0xb8];
        bytes.extend((0..16u8).map(|j| j | (15 - j) << 4));
        let w = QuantMatrix::from_gguf(BlockFormat::Q4_1, 1, BLOCK, &bytes).unwrap();
        let mut row = [0.0f32; BLOCK];
        w.dequantize_row(0, &mut row);
        assert_eq!(row[3], 2.5);
        assert_eq!(row[16 + 3], 11.5);
        let picked = w.select_rows(&[0, 0]).unwrap();
        assert_eq!(picked.rows(), 2);
        assert!(w.select_rows(&[1]).is_err());
    }

    #[test]
    fn the_f32_block_encoding_keeps_the_arithmetic() {
        for (seed, format) in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0]
            .into_iter()
            .enumerate()
        {
            let mut rng = Rng(seed as u64 + 20);
            let (n, cols) = (5, 4 * BLOCK);
            let bytes = random_gguf(format, n * cols / BLOCK, &mut rng);
            let w = QuantMatrix::from_gguf(format, n, cols, &bytes).unwrap();
            let mut encoded = Vec::new();
            for r in 0..n {
                encoded.clear();
                w.encode_row(r, &mut encoded);
                assert_eq!(encoded.len(), w.encoded_cols());
            }
            let encoded: Vec<f32> = (0..n)
                .flat_map(|r| {
                    let mut row = Vec::new();
                    w.encode_row(r, &mut row);
                    row
                })
                .collect();
            let back = QuantMatrix::from_encoded(n, cols, &encoded).unwrap();
            let x: Vec<f32> = (0..2 * cols).map(|_| rng.float()).collect();
            let xq = quantize_activations(&x, 2, cols).unwrap();
            let (mut a, mut b) = (vec![0.0f32; 2 * n], vec![0.0f32; 2 * n]);
            reference_linear(&xq, &w, 0..n, Activation::Identity, &mut a).unwrap();
            linear(
                &xq,
                &back,
                0..n,
                Activation::Identity,
                &mut b,
                Compute::new(1),
            )
            .unwrap();
            assert!(
                a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{format:?}"
            );
            let (mut da, mut db) = (vec![0.0f32; cols], vec![0.0f32; cols]);
            w.dequantize_row(1, &mut da);
            back.dequantize_row(1, &mut db);
            assert!(
                da.iter().zip(&db).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{format:?}"
            );
            let mut bad = encoded.clone();
            bad[1 + usize::from(format == BlockFormat::Q4_1)] = 0.5;
            assert!(QuantMatrix::from_encoded(n, cols, &bad).is_err());
            assert!(QuantMatrix::from_encoded(n, cols, &encoded[1..]).is_err());
        }
    }

    #[test]
    fn malformed_shapes_are_refused() {
        assert!(QuantMatrix::from_gguf(BlockFormat::Q8_0, 1, 31, &[0; 34]).is_err());
        assert!(QuantMatrix::from_gguf(BlockFormat::Q8_0, 1, 32, &[0; 33]).is_err());
        assert!(quantize_activations(&[0.0; 31], 1, 31).is_err());
        let w = QuantMatrix::from_gguf(BlockFormat::Q8_0, 1, 32, &[0; 34]).unwrap();
        let x = quantize_activations(&[0.0; 64], 1, 64).unwrap();
        let mut out = [0.0f32];
        assert!(reference_linear(&x, &w, 0..1, Activation::Identity, &mut out).is_err());
    }
}

//! The quantized integer matmul: weights kept in GGUF's 32-element blocks (Q4_0, Q4_1, Q8_0),
//! activations quantized per 32-element block to int8, block dot products in integers (exact),
//! block terms combined in f32 in a fixed order. The specification is docs/llm.md §2.1; the
//! scalar functions here ([`quantize_activations`], [`reference_linear`]) are it, and the AVX2
//! and AVX-512 VNNI paths equal them bit for bit (the integer sums are exact in any order and
//! every f32 operation is the same one, lane by lane).

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Mutex;

use crate::kernels::{self, Compute, Isa};
use crate::pool::Pool;
use crate::reference::Activation;
use crate::tensor::f16_bits_to_f32;

/// Elements per quantization block (weights and activations).
pub const BLOCK: usize = 32;
/// Largest magnitude of a quantized activation.
pub const ACTIVATION_Q_MAX: f32 = 127.0;
/// Work below this many multiply-adds runs on the calling thread. Handing a part to a
/// spinning [`Pool`] worker costs about a microsecond: one-row SmolLM2 matmuls on 2 threads
/// (`examples/quant_decode_speed.rs`, quiet machine) took × 0.98 the 1-thread time for k / v
/// (192 × 576, 0.11 M), × 1.5 for q / o (576 × 576, 0.33 M), × 1.7–1.8 for gate, up and down
/// (0.88 M); so a decode step splits every matmul but k and v.
const PARALLEL_WORK_MIN: usize = 1 << 18;

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

/// Weight rows of one group: a group's blocks are stored together, lane `r` of every vector
/// belonging to weight row `16 g + r` (16 f32 or i32 lanes fill an AVX-512 register).
const GROUP_ROWS: usize = 16;
/// Bytes of one chunk of a group's block: four bytes of each of its rows.
const CHUNK_BYTES: usize = 4 * GROUP_ROWS;

/// A `[rows, cols]` weight matrix in quantized blocks, `cols` a multiple of [`BLOCK`]; each
/// row is `cols / BLOCK` blocks. Scales are the f16 scales converted exactly to f32.
///
/// Held in one layout, the one the SIMD kernels read (no second copy): rows in groups of
/// [`GROUP_ROWS`] (zero rows pad the last group), and per group and block (a *cell*) the
/// sixteen rows' scales side by side and their values interleaved in 64-byte chunks of four
/// values per row, so one integer dot-product instruction against four broadcast activations
/// advances sixteen rows at once, and no horizontal sum is ever needed. Values are stored as
/// unsigned bytes: the specified integer plus [`BlockFormat::stored_bias`].
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    /// `d` of every block: `[cell * 16 + row % 16]`, `cell = row / 16 * bpr + block`.
    scales: Vec<f32>,
    /// `m` of every block in the same layout (Q4_1 only; empty otherwise).
    mins: Vec<f32>,
    /// The values of every cell, `16 ×` [`BlockFormat::value_bytes`] bytes each: chunk `k`,
    /// lane `r`, byte `j` holds element `4k + j` (Q8_0), or elements `8k + j` (low nibble) and
    /// `8k + 4 + j` (high nibble) (Q4_0, Q4_1).
    values: Vec<u8>,
}

impl BlockFormat {
    /// What a stored value exceeds the specified integer by (Q8_0's `q + 128` as a byte, Q4_0's
    /// nibble `n` for `n - 8`): a block's integer dot is the stored dot minus the bias times
    /// the activation block's sum.
    fn stored_bias(self) -> i32 {
        match self {
            BlockFormat::Q4_0 => 8,
            BlockFormat::Q4_1 => 0,
            BlockFormat::Q8_0 => 128,
        }
    }
}

/// Blocks of a `rows × cols` matrix: both at least 1, `cols` whole blocks, no overflow.
fn block_count(rows: usize, cols: usize, what: &'static str) -> Result<usize, QuantError> {
    let fail = |detail: String| QuantError::Shape { what, detail };
    if rows == 0 || cols == 0 || !cols.is_multiple_of(BLOCK) {
        return Err(fail(format!("{rows} × {cols}: columns not whole blocks")));
    }
    // The stored layout pads the rows to whole groups: at most `(rows + 16) × cols` bytes.
    rows.checked_add(GROUP_ROWS)
        .and_then(|padded| padded.checked_mul(cols))
        .map(|_| rows * (cols / BLOCK))
        .ok_or_else(|| fail(format!("{rows} × {cols} overflows")))
}

impl QuantMatrix {
    /// A matrix of zero blocks (shape checked by [`block_count`]).
    fn zeros(format: BlockFormat, rows: usize, cols: usize) -> QuantMatrix {
        let cells = rows.div_ceil(GROUP_ROWS) * (cols / BLOCK);
        QuantMatrix {
            format,
            rows,
            cols,
            scales: vec![0.0; cells * GROUP_ROWS],
            mins: if format == BlockFormat::Q4_1 {
                vec![0.0; cells * GROUP_ROWS]
            } else {
                Vec::new()
            },
            values: vec![0; cells * GROUP_ROWS * format.value_bytes()],
        }
    }

    /// Index of block `b` of row `row` in `scales` and `mins`.
    fn lane(&self, row: usize, b: usize) -> usize {
        (row / GROUP_ROWS * self.blocks_per_row() + b) * GROUP_ROWS + row % GROUP_ROWS
    }

    /// Where block `b` of row `row` starts in `values` (its element 0's byte).
    fn block_at(&self, row: usize, b: usize) -> usize {
        (row / GROUP_ROWS * self.blocks_per_row() + b) * self.cell_bytes() + (row % GROUP_ROWS) * 4
    }

    /// Where element `e` of a block is stored, from the block's start: byte offset and bit
    /// shift.
    fn element_offset(format: BlockFormat, e: usize) -> (usize, u32) {
        match format {
            BlockFormat::Q8_0 => (e / 4 * CHUNK_BYTES + e % 4, 0),
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let within = e % 8;
                let shift = if within < 4 { 0 } else { 4 };
                (e / 8 * CHUNK_BYTES + within % 4, shift)
            }
        }
    }

    /// The stored (biased, unsigned) value of element `e` of block `b` of row `row`.
    fn stored(&self, row: usize, b: usize, e: usize) -> u8 {
        let (offset, shift) = QuantMatrix::element_offset(self.format, e);
        let byte = self.values[self.block_at(row, b) + offset];
        match self.format {
            BlockFormat::Q8_0 => byte,
            _ => (byte >> shift) & 15,
        }
    }

    /// Set block `b` of row `row` of a matrix built by [`QuantMatrix::zeros`]: scale `d`, min
    /// `m` (Q4_1) and stored values `stored(e)`.
    fn set_block(&mut self, row: usize, b: usize, d: f32, m: f32, stored: impl Fn(usize) -> u8) {
        let lane = self.lane(row, b);
        self.scales[lane] = d;
        if self.format == BlockFormat::Q4_1 {
            self.mins[lane] = m;
        }
        let at = self.block_at(row, b);
        for e in 0..BLOCK {
            let (offset, shift) = QuantMatrix::element_offset(self.format, e);
            self.values[at + offset] |= stored(e) << shift;
        }
    }

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
        let mut matrix = QuantMatrix::zeros(format, rows, cols);
        let bpr = matrix.blocks_per_row();
        let header = format.gguf_block_bytes() - format.value_bytes();
        for (k, block) in bytes.chunks_exact(format.gguf_block_bytes()).enumerate() {
            let m = if format == BlockFormat::Q4_1 {
                f16(&block[2..4])
            } else {
                0.0
            };
            let values = &block[header..];
            matrix.set_block(k / bpr, k % bpr, f16(&block[0..2]), m, |e| match format {
                BlockFormat::Q8_0 => values[e] ^ 0x80,
                _ if e < 16 => values[e] & 15,
                _ => values[e - 16] >> 4,
            });
        }
        Ok(matrix)
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

    /// Bytes of one cell's values (a group's block).
    fn cell_bytes(&self) -> usize {
        GROUP_ROWS * self.format.value_bytes()
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        (self.scales.len() + self.mins.len()) * 4 + self.values.len()
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
        block_count(order.len(), self.cols, "row selection")?;
        let mut out = QuantMatrix::zeros(self.format, order.len(), self.cols);
        for (to, &from) in order.iter().enumerate() {
            for b in 0..self.blocks_per_row() {
                let (d, m) = (self.scale(from, b), self.min(from, b));
                out.set_block(to, b, d, m, |e| self.stored(from, b, e));
            }
        }
        Ok(out)
    }

    /// `d` of block `b` of row `row`.
    fn scale(&self, row: usize, b: usize) -> f32 {
        self.scales[self.lane(row, b)]
    }

    /// `m` of block `b` of row `row` (0 unless Q4_1).
    fn min(&self, row: usize, b: usize) -> f32 {
        match self.format {
            BlockFormat::Q4_1 => self.mins[self.lane(row, b)],
            _ => 0.0,
        }
    }

    /// The integer value of element `e` of block `b` of row `row`: `q` for Q8_0, `n - 8` for
    /// Q4_0, `n` for Q4_1.
    fn integer(&self, row: usize, b: usize, e: usize) -> i32 {
        self.stored(row, b, e) as i32 - self.format.stored_bias()
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
        for b in 0..self.blocks_per_row() {
            out.push(self.scale(row, b));
            if self.format == BlockFormat::Q4_1 {
                out.push(self.min(row, b));
            }
            out.extend((0..BLOCK).map(|e| self.integer(row, b, e) as f32));
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
        let mut matrix = QuantMatrix::zeros(format, rows, cols);
        let bpr = matrix.blocks_per_row();
        let bias = format.stored_bias();
        let per_block = QuantMatrix::encoded_block_floats(format);
        for (k, block) in values.chunks_exact(per_block).enumerate() {
            let (m, integers) = match format {
                BlockFormat::Q4_1 => (block[1], &block[2..]),
                _ => (0.0, &block[1..]),
            };
            if let Some(bad) = integers
                .iter()
                .find(|v| !(v.fract() == 0.0 && (low..=high).contains(*v)))
            {
                return Err(fail(format!("{bad} is not a {format:?} integer")));
            }
            matrix.set_block(k / bpr, k % bpr, block[0], m, |e| {
                (integers[e] as i32 + bias) as u8
            });
        }
        Ok(matrix)
    }

    /// Row `row` dequantized by docs/llm.md §2's exact rules (`d * q`, `d * (n - 8)`,
    /// `d * n + m` with the product rounded first), into `out` (`cols` values).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let bpr = self.blocks_per_row();
        for (b, values) in out.chunks_exact_mut(BLOCK).take(bpr).enumerate() {
            let (d, m) = (self.scale(row, b), self.min(row, b));
            for (e, value) in values.iter_mut().enumerate() {
                let product = d * self.integer(row, b, e) as f32;
                *value = match self.format {
                    BlockFormat::Q4_1 => product + m,
                    _ => product,
                };
            }
        }
    }
}

/// Activations `[rows, cols]` quantized per 32-element block: a scale `d`, 32 int8 values
/// and their sum per block.
///
/// Held in the order the SIMD kernels read: rows in tiles of [`TILE_ACTIVATION_ROWS`] (the
/// last tile holds the rest), and within a tile block by block, the tile's rows side by side
/// ([`QuantActivations::block_index`]), so a kernel steps one pointer per array by one block
/// of its tile and finds each row at a constant offset, every scale a broadcast operand read
/// from memory.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantActivations {
    rows: usize,
    cols: usize,
    scales: Vec<f32>,
    sums: Vec<i32>,
    /// `d · f32(s)` per block (one rounding), the factor of Q4_1's min term.
    scaled_sums: Vec<f32>,
    values: Vec<i8>,
}

impl QuantActivations {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows of the tile holding `row`.
    fn tile_rows(&self, row: usize) -> usize {
        let first = row - row % TILE_ACTIVATION_ROWS;
        (self.rows - first).min(TILE_ACTIVATION_ROWS)
    }

    /// Where block `b` of row `row` is held (an index into the scales and sums; its values
    /// start at `BLOCK` times it): the tiles before the row's, then `b` blocks of its tile,
    /// then the rows above it in the tile.
    fn block_index(&self, row: usize, b: usize) -> usize {
        let first = row - row % TILE_ACTIVATION_ROWS;
        first * (self.cols / BLOCK) + b * self.tile_rows(row) + row % TILE_ACTIVATION_ROWS
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Quantize `x: [rows, cols]` (`cols` a multiple of [`BLOCK`]) per block (docs/llm.md §2.1):
/// `amax = max |x_j|` (NaN ignored), `d = amax / 127`, `q_j = round(x_j * (127 / amax))`
/// rounded half away from zero and clamped to ±127 (`q_j = 0` when `amax = 0`), the sum
/// `s = Σ q_j` and the scaled sum `d * f32(s)`; every operation one f32 rounding.
pub fn quantize_activations(
    x: &[f32],
    rows: usize,
    cols: usize,
) -> Result<QuantActivations, QuantError> {
    quantize_activations_on(x, rows, cols, Compute::new(1))
}

/// [`quantize_activations`] on `compute`'s threads, whole tiles of rows each (a tile's blocks
/// are one run of the result): the same blocks as on one.
pub fn quantize_activations_on(
    x: &[f32],
    rows: usize,
    cols: usize,
    compute: Compute,
) -> Result<QuantActivations, QuantError> {
    let mut out = QuantActivations {
        rows: 0,
        cols: 0,
        scales: Vec::new(),
        sums: Vec::new(),
        scaled_sums: Vec::new(),
        values: Vec::new(),
    };
    out.requantize(x, rows, cols, compute)?;
    Ok(out)
}

impl QuantActivations {
    /// These activations replaced by `x: [rows, cols]` quantized on `compute`'s threads
    /// ([`quantize_activations_on`]), in the storage they held: every block is written, so
    /// nothing is cleared first (a pass quantizes a few inputs a layer, and clearing fresh
    /// storage for each was a sixth of the quantizer's time).
    pub fn requantize(
        &mut self,
        x: &[f32],
        rows: usize,
        cols: usize,
        compute: Compute,
    ) -> Result<(), QuantError> {
        if !cols.is_multiple_of(BLOCK) || x.len() != rows * cols {
            return Err(QuantError::Shape {
                what: "activations",
                detail: format!("{} values for {rows} × {cols}", x.len()),
            });
        }
        let blocks = x.len() / BLOCK;
        (self.rows, self.cols) = (rows, cols);
        self.scales.resize(blocks, 0.0);
        self.sums.resize(blocks, 0);
        self.scaled_sums.resize(blocks, 0.0);
        self.values.resize(x.len(), 0);
        quantize_parts(x, rows, cols, compute, self);
        Ok(())
    }
}

/// [`QuantActivations::requantize`]'s work, shapes checked: `x` into `out`'s blocks.
fn quantize_parts(
    x: &[f32],
    rows: usize,
    cols: usize,
    compute: Compute,
    out: &mut QuantActivations,
) {
    let tiles = rows.div_ceil(TILE_ACTIVATION_ROWS);
    let threads = compute.threads.get().min(tiles);
    if threads <= 1 || x.len() < QUANTIZE_PARALLEL_MIN || cols == 0 {
        let part = out.blocks_mut();
        quantize_tiles(x, cols, part);
        return;
    }
    let part_rows = tiles.div_ceil(threads) * TILE_ACTIVATION_ROWS;
    let part_blocks = part_rows * cols / BLOCK;
    let parts: Vec<Mutex<(&[f32], TileBlocks)>> = x
        .chunks(part_rows * cols)
        .zip(out.scales.chunks_mut(part_blocks))
        .zip(out.sums.chunks_mut(part_blocks))
        .zip(out.scaled_sums.chunks_mut(part_blocks))
        .zip(out.values.chunks_mut(part_blocks * BLOCK))
        .map(|((((x, scales), sums), scaled_sums), values)| {
            let blocks = TileBlocks {
                scales,
                sums,
                scaled_sums,
                values,
            };
            Mutex::new((x, blocks))
        })
        .collect();
    Pool::global().for_each(threads, parts.len(), |p| {
        let mut part = parts[p]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (x, blocks) = &mut *part;
        quantize_tiles(x, cols, blocks.reborrow());
    });
}

/// Activation values from which [`quantize_activations_on`] quantizes on several threads
/// (a decode step's rows are quantized on the calling thread).
const QUANTIZE_PARALLEL_MIN: usize = 1 << 14;

/// The blocks of whole tiles of rows of a [`QuantActivations`] (a run of its blocks).
struct TileBlocks<'a> {
    scales: &'a mut [f32],
    sums: &'a mut [i32],
    scaled_sums: &'a mut [f32],
    values: &'a mut [i8],
}

impl QuantActivations {
    /// All its blocks, to be written.
    fn blocks_mut(&mut self) -> TileBlocks<'_> {
        TileBlocks {
            scales: &mut self.scales,
            sums: &mut self.sums,
            scaled_sums: &mut self.scaled_sums,
            values: &mut self.values,
        }
    }
}

impl TileBlocks<'_> {
    fn reborrow(&mut self) -> TileBlocks<'_> {
        TileBlocks {
            scales: self.scales,
            sums: self.sums,
            scaled_sums: self.scaled_sums,
            values: self.values,
        }
    }
}

/// Quantize rows `x` (`cols` wide: whole tiles of [`TILE_ACTIVATION_ROWS`] rows, then the
/// last rows) into `out`, laid out as [`QuantActivations::block_index`] says.
fn quantize_tiles(x: &[f32], cols: usize, out: TileBlocks) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked here).
        unsafe { x86::quantize_tiles_avx512(x, cols, out) };
        return;
    }
    quantize_tiles_portable(x, cols, out);
}

/// [`quantize_tiles`] with `sixteen` quantizing a row's blocks sixteen at a time, then
/// `block` each block left. `sixteen(x, values, first, stride)` writes block `j`'s values to
/// `values[first + j · stride]` and returns the sixteen scales and sums.
#[inline(always)]
fn quantize_tiles_with<S>(
    x: &[f32],
    cols: usize,
    out: TileBlocks,
    sixteen: S,
    block: impl Fn(&[f32; BLOCK], &mut [i8]) -> (f32, i32),
) where
    S: Fn(&[f32; 16 * BLOCK], &mut [[i8; BLOCK]], usize, usize) -> ([f32; 16], [i32; 16]),
{
    let bpr = cols / BLOCK;
    let tile_values = TILE_ACTIVATION_ROWS * cols;
    let tiles = x.chunks(tile_values).zip(
        out.scales
            .chunks_mut(TILE_ACTIVATION_ROWS * bpr)
            .zip(out.sums.chunks_mut(TILE_ACTIVATION_ROWS * bpr))
            .zip(out.scaled_sums.chunks_mut(TILE_ACTIVATION_ROWS * bpr))
            .zip(out.values.chunks_mut(tile_values)),
    );
    for (tile, (((scales, sums), scaled_sums), values)) in tiles {
        let tile_rows = tile.len() / cols;
        let values: &mut [[i8; BLOCK]] = values.as_chunks_mut().0;
        let mut set = |at: usize, d: f32, s: i32| {
            scales[at] = d;
            sums[at] = s;
            scaled_sums[at] = d * s as f32;
        };
        for (r, row) in tile.chunks_exact(cols).enumerate() {
            let (groups, rest) = row.as_chunks::<{ 16 * BLOCK }>();
            for (g, group) in groups.iter().enumerate() {
                let first = 16 * g * tile_rows + r;
                let (d, s) = sixteen(group, values, first, tile_rows);
                for j in 0..16 {
                    set(first + j * tile_rows, d[j], s[j]);
                }
            }
            for (b, x) in rest.as_chunks::<BLOCK>().0.iter().enumerate() {
                let at = (16 * groups.len() + b) * tile_rows + r;
                if let Some(values) = values.get_mut(at) {
                    let (d, s) = block(x, values);
                    set(at, d, s);
                }
            }
        }
    }
}

/// [`quantize_tiles`] on the baseline instruction set.
fn quantize_tiles_portable(x: &[f32], cols: usize, out: TileBlocks) {
    let sixteen =
        |row: &[f32; 16 * BLOCK], values: &mut [[i8; BLOCK]], first: usize, stride: usize| {
            let (mut d, mut s) = ([0.0; 16], [0; 16]);
            for (j, x) in row.as_chunks::<BLOCK>().0.iter().enumerate() {
                if let Some(values) = values.get_mut(first + j * stride) {
                    (d[j], s[j]) = quantize_block(x, values);
                }
            }
            (d, s)
        };
    quantize_tiles_with(x, cols, out, sixteen, quantize_block);
}

/// One block of [`quantize_activations`] into `values`: its scale and the sum of its values.
/// Written so the compiler vectorises it on the baseline instruction set: the maximum over
/// eight lanes (exact, so in any order), and `round(clamp(p))`, which equals the specified
/// `clamp(round(p))` because ±127 are integers, as truncation plus a carry when the
/// remainder (exact) reaches one half.
#[inline]
fn quantize_block(block: &[f32; BLOCK], values: &mut [i8]) -> (f32, i32) {
    let mut lanes = [0.0f32; 8];
    for eight in block.chunks_exact(8) {
        for (m, v) in lanes.iter_mut().zip(eight) {
            *m = m.max(v.abs());
        }
    }
    let amax = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
    let inverse = if amax > 0.0 {
        ACTIVATION_Q_MAX / amax
    } else {
        0.0
    };
    let mut sum = 0i32;
    for (q, &v) in values.iter_mut().zip(block) {
        let clamped = (v * inverse).clamp(-ACTIVATION_Q_MAX, ACTIVATION_Q_MAX);
        // NaN gives 0 here (and `round` then `as i8` gives 0 in the specification).
        let truncated = clamped as i32;
        let remainder = clamped - truncated as f32;
        // |rounded| ≤ 127 and |sum| ≤ 32 · 127: the wrapping operations never wrap (and
        // carry no overflow branch that would keep the loop scalar).
        let rounded = truncated
            .wrapping_add(i32::from(remainder >= 0.5))
            .wrapping_sub(i32::from(remainder <= -0.5));
        sum = sum.wrapping_add(rounded);
        *q = rounded as i8;
    }
    (amax / ACTIVATION_Q_MAX, sum)
}

/// One output: row `row` of the activations against row `w_row` of the weights, the
/// specification's fixed order: `acc = 0; for each block b in order:
/// acc = acc + term_b`, with `term_b = (dw * da) * isum` (Q4_0, Q8_0) or
/// `(dw * da) * isum + mw * (da * asum)` (Q4_1), `isum` the exact integer dot, `asum` the sum
/// of the activation block (`da * asum` is the block's scaled sum, formed once when the
/// activations are quantized); each operation one f32 rounding, no fused multiply-add.
fn reference_dot(x: &QuantActivations, row: usize, w: &QuantMatrix, w_row: usize) -> f32 {
    let bpr = w.blocks_per_row();
    let mut acc = 0.0f32;
    for b in 0..bpr {
        let xb = x.block_index(row, b);
        let isum: i32 = (0..BLOCK)
            .map(|e| w.integer(w_row, b, e) * x.values[xb * BLOCK + e] as i32)
            .sum();
        let da = x.scales[xb];
        let mut term = (w.scale(w_row, b) * da) * isum as f32;
        if w.format == BlockFormat::Q4_1 {
            term += w.min(w_row, b) * x.scaled_sums[xb];
        }
        acc += term;
    }
    acc
}

fn check_shapes(
    x: &QuantActivations,
    w: &QuantMatrix,
    columns: &Range<usize>,
    out_len: usize,
) -> Result<(), QuantError> {
    if x.cols != w.cols
        || columns.end > w.rows
        || columns.is_empty()
        || out_len != x.rows * columns.len()
    {
        return Err(QuantError::Shape {
            what: "quantized linear",
            detail: format!(
                "x {} × {}, w {} × {}, columns {columns:?}, out {}",
                x.rows, x.cols, w.rows, w.cols, out_len
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
    check_shapes(x, w, &columns, out.len())?;
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
    check_shapes(x, w, &columns, out.len())?;
    // SAFETY: `linear_into` only writes initialised values, so `out` stays initialised.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
    linear_into(x, w, columns, activation, out, compute);
    Ok(())
}

/// [`linear`] into a new vector (a dropped tensor's storage where this thread has one),
/// `[x.rows(), columns.len()]`: its outputs are written once, not over zeros (an audit pass's
/// matmuls zeroed 93 MB of outputs first).
pub fn linear_vec(
    x: &QuantActivations,
    w: &QuantMatrix,
    columns: Range<usize>,
    activation: Activation,
    compute: Compute,
) -> Result<Vec<f32>, QuantError> {
    let len = x.rows * columns.len();
    check_shapes(x, w, &columns, len)?;
    let mut out = crate::tensor::empty_buffer(len);
    linear_into(
        x,
        w,
        columns,
        activation,
        &mut out.spare_capacity_mut()[..len],
        compute,
    );
    // SAFETY: `linear_into` writes every output (each path covers every row and column of
    // `out`: whole activation rows, or whole columns of every row).
    unsafe { out.set_len(len) };
    Ok(out)
}

/// [`linear`] into `out` (shapes checked), every element of which it writes.
fn linear_into(
    x: &QuantActivations,
    w: &QuantMatrix,
    columns: Range<usize>,
    activation: Activation,
    out: &mut [MaybeUninit<f32>],
    compute: Compute,
) {
    let n = columns.len();
    let threads = compute.threads.get().min(n);
    let work = x.rows * n * w.cols;
    let all_rows = 0..x.rows;
    if threads <= 1 || work < PARALLEL_WORK_MIN {
        weight_rows_block(
            x,
            all_rows,
            w,
            columns.clone(),
            activation,
            out,
            compute.isa,
        );
        return;
    }
    if x.rows >= threads * TILE_ACTIVATION_ROWS {
        // Many activation rows (a prefill, an audit pass): whole tiles of activation rows per
        // part, so each part's outputs are one contiguous run of `out`, written in place (no
        // buffer per part and no copy), and the parts read the weights from the shared cache.
        let per_part =
            x.rows.div_ceil(threads).div_ceil(TILE_ACTIVATION_ROWS) * TILE_ACTIVATION_ROWS;
        let parts: Vec<Mutex<&mut [MaybeUninit<f32>]>> =
            out.chunks_mut(per_part * n).map(Mutex::new).collect();
        Pool::global().for_each(threads, parts.len(), |p| {
            let mut part = parts[p]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let rows = p * per_part..((p + 1) * per_part).min(x.rows);
            weight_rows_block(
                x,
                rows,
                w,
                columns.clone(),
                activation,
                &mut part,
                compute.isa,
            );
        });
        return;
    }
    // Whole groups of weight rows per thread, one part each: `kernels::for_row_ranges`'s
    // four smaller ranges per thread cost a decode step's matmuls their spans of
    // `CACHED_GROUPS` groups (2 threads on 576 × 576: × 1.16 the 1-thread speed, against × 1.5).
    let per_thread = n.div_ceil(threads).div_ceil(GROUP_ROWS) * GROUP_ROWS;
    let part_count = n.div_ceil(per_thread);
    let part_columns = |p: usize| {
        let c0 = columns.start + p * per_thread;
        c0..(c0 + per_thread).min(columns.end)
    };
    if x.rows == 1 {
        // One activation row: each part's outputs are one contiguous run of `out`.
        let parts: Vec<Mutex<&mut [MaybeUninit<f32>]>> =
            out.chunks_mut(per_thread).map(Mutex::new).collect();
        Pool::global().for_each(threads, part_count, |p| {
            let mut part = parts[p]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let c = part_columns(p);
            weight_rows_block(
                x,
                all_rows.clone(),
                w,
                c,
                activation,
                &mut part,
                compute.isa,
            );
        });
        return;
    }
    let parts: Vec<Mutex<Vec<f32>>> = (0..part_count).map(|_| Default::default()).collect();
    Pool::global().for_each(threads, part_count, |p| {
        let c = part_columns(p);
        let len = x.rows * c.len();
        let mut part = Vec::with_capacity(len);
        weight_rows_block(
            x,
            all_rows.clone(),
            w,
            c,
            activation,
            &mut part.spare_capacity_mut()[..len],
            compute.isa,
        );
        // SAFETY: `weight_rows_block` writes every output of its block.
        unsafe { part.set_len(len) };
        *parts[p]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = part;
    });
    for (p, part) in parts.into_iter().enumerate() {
        let part = part
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let c0 = p * per_thread;
        let width = part_columns(p).len();
        for (i, row) in part.chunks_exact(width).enumerate() {
            write_all(&mut out[i * n + c0..i * n + c0 + width], row);
        }
    }
}

/// Groups of weight rows read together by every activation row (they stay in cache while the
/// rows pass over them): 4 groups of 16 rows of 576 Q4_1 weights are 23 KiB.
const CACHED_GROUPS: usize = 4;
/// Activation rows of one tile: they share one unpacking of the tile's weight blocks and one
/// load of its scales.
const TILE_ACTIVATION_ROWS: usize = 8;
/// Dots of a tile's activation rows with the weight rows of [`CACHED_GROUPS`] groups:
/// `[activation row][weight row - first row of the groups]`.
type SpanDots = [SpanRow; TILE_ACTIVATION_ROWS];
/// One activation row's dots in [`SpanDots`].
type SpanRow = [f32; CACHED_GROUPS * GROUP_ROWS];

/// Where a span's dots go: those of its activation row `i` (from 0) at `ptr + i · stride`,
/// sixteen per group, written and never read.
#[derive(Clone, Copy)]
struct SpanOut {
    ptr: *mut f32,
    stride: usize,
}

impl SpanOut {
    /// A tile's [`SpanDots`].
    fn dots(dots: &mut SpanDots) -> SpanOut {
        SpanOut {
            ptr: dots.as_mut_ptr() as *mut f32,
            stride: CACHED_GROUPS * GROUP_ROWS,
        }
    }

    /// Where row `i`'s dots start. Safety: the span has row `i`.
    #[inline(always)]
    unsafe fn row(self, i: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.ptr.add(i * self.stride) }
    }

    /// The rows from `i` on. Safety: the span has row `i`.
    #[inline(always)]
    unsafe fn rows_from(self, i: usize) -> SpanOut {
        SpanOut {
            // SAFETY: the caller's contract.
            ptr: unsafe { self.row(i) },
            stride: self.stride,
        }
    }
}

/// `[rows.len(), columns.len()]` outputs of activation rows `rows` with weight rows `columns`,
/// weight rows outermost so a prefill reads each weight once per [`TILE_ACTIVATION_ROWS`]
/// rows; whole groups are computed and the rows of `columns` kept.
fn weight_rows_block(
    x: &QuantActivations,
    rows: Range<usize>,
    w: &QuantMatrix,
    columns: Range<usize>,
    activation: Activation,
    block: &mut [MaybeUninit<f32>],
    isa: Isa,
) {
    let width = columns.len();
    assert!(rows.end <= x.rows && block.len() == rows.len() * width);
    let activation_isa = kernels::supported_isa(isa);
    let mut dots: SpanDots = [[0.0; CACHED_GROUPS * GROUP_ROWS]; TILE_ACTIVATION_ROWS];
    let groups = columns.start / GROUP_ROWS..columns.end.div_ceil(GROUP_ROWS);
    for g0 in groups.clone().step_by(CACHED_GROUPS) {
        let g1 = (g0 + CACHED_GROUPS).min(groups.end);
        let first = g0 * GROUP_ROWS;
        let kept = first.max(columns.start)..(g1 * GROUP_ROWS).min(columns.end);
        // Whole groups inside `columns` are written straight into `block`; the groups at its
        // edges into `dots`, their rows in `columns` then copied.
        let whole = kept == (first..g1 * GROUP_ROWS);
        // The activation rows tile by tile of `x` (a kernel reads one tile at a time).
        let mut i0 = rows.start;
        while i0 < rows.end {
            let i1 = (i0 - i0 % TILE_ACTIVATION_ROWS + TILE_ACTIVATION_ROWS).min(rows.end);
            let at = |i: usize| (i - rows.start) * width + kept.start - columns.start;
            if whole {
                // SAFETY: rows `i0..i1` of `block` hold `kept` (`(g1 - g0) · 16` values) from
                // `at(i)` (`at(i1 - 1) + kept.len() <= block.len()`, asserted above).
                unsafe {
                    let out = SpanOut {
                        ptr: block.as_mut_ptr().add(at(i0)) as *mut f32,
                        stride: width,
                    };
                    span(x, i0..i1, w, g0..g1, out, isa);
                }
                let rows = &mut block[at(i0)..at(i1 - 1) + kept.len()];
                // SAFETY: `span` wrote `kept.len()` values from every `width` of `rows`.
                unsafe {
                    kernels::activate_rows(activation_isa, activation, rows, width, kept.len())
                };
            } else {
                // SAFETY: `dots` holds a tile's rows of `CACHED_GROUPS` groups.
                unsafe { span(x, i0..i1, w, g0..g1, SpanOut::dots(&mut dots), isa) };
                for (i, row) in (i0..i1).zip(&dots) {
                    apply_activation(
                        activation_isa,
                        activation,
                        &row[kept.start - first..kept.end - first],
                        &mut block[at(i)..at(i) + kept.len()],
                    );
                }
            }
            i0 = i1;
        }
    }
}

/// `out = values` (same lengths), returned as the initialised values.
fn write_all<'a>(out: &'a mut [MaybeUninit<f32>], values: &[f32]) -> &'a mut [f32] {
    assert_eq!(out.len(), values.len());
    for (out, &value) in out.iter_mut().zip(values) {
        out.write(value);
    }
    // SAFETY: every element of `out` was just written.
    unsafe { kernels::assume_init(out) }
}

/// `out[j] = activation.apply(dots[j])` with the kernels' activation for `isa` (a supported
/// one; SiLU's `expf` in lanes, the same bits as [`crate::reference::silu`]).
fn apply_activation(isa: Isa, activation: Activation, dots: &[f32], out: &mut [MaybeUninit<f32>]) {
    kernels::activate(isa, activation, write_all(out, dots));
}

/// The dots of activation rows `rows` (at most [`TILE_ACTIVATION_ROWS`]) with the weight rows
/// of groups `groups` (at most [`CACHED_GROUPS`]), row `i`'s dot with weight row `r` of the
/// groups at `out.row(i) + r` (no activation; the rows padding the last group give 0); each
/// dot is [`reference_dot`]'s sequence of operations. Safety: `out` can be written at
/// `out.row(i) + r` for every such `i` and `r < 16 · groups.len()`.
unsafe fn span(
    x: &QuantActivations,
    rows: Range<usize>,
    w: &QuantMatrix,
    groups: Range<usize>,
    out: SpanOut,
    isa: Isa,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && has_vnni() {
            // SAFETY: the CPU has AVX-512 F/BW/VL and VNNI (checked above); `out` as the
            // caller guarantees.
            unsafe { x86::span_vnni(x, rows, w, groups, out) };
            return;
        }
        if matches!(isa, Isa::Avx512 | Isa::Avx2) && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above); `out` as the caller guarantees.
            unsafe { x86::span_avx2(x, rows, w, groups, out) };
            return;
        }
    }
    let _ = isa;
    let first = groups.start * GROUP_ROWS;
    for (n, i) in rows.enumerate() {
        for (r, w_row) in (first..groups.end * GROUP_ROWS).enumerate() {
            let dot = if w_row < w.rows {
                reference_dot(x, i, w, w_row)
            } else {
                0.0
            };
            // SAFETY: the caller's contract.
            unsafe { out.row(n).add(r).write(dot) };
        }
    }
}

/// Whether the AVX-512 path can use VNNI (`vpdpbusd`).
#[cfg(target_arch = "x86_64")]
pub fn has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Integer block dots in SIMD on the group layout of [`QuantMatrix`]: a group's sixteen
    //! weight rows in the lanes (eight per AVX2 register, one half of the group), so each chunk
    //! of a block is one integer dot-product instruction per activation row against four
    //! broadcast activations, a block gives one vector of exact `isum`s without any horizontal
    //! sum, then one vector of f32 block terms (the operations of [`super::reference_dot`], lane
    //! by lane) and one vector add into the sequential sums.

    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{
        BlockFormat, QuantActivations, QuantMatrix, SpanOut, ACTIVATION_Q_MAX, BLOCK,
        CACHED_GROUPS, CHUNK_BYTES, GROUP_ROWS, TILE_ACTIVATION_ROWS,
    };

    /// The bounds every kernel below relies on: the activation rows are within one tile of
    /// `x`, and they and the weight groups exist (the caller guarantees the output).
    fn check(x: &QuantActivations, rows: &Range<usize>, w: &QuantMatrix, groups: &Range<usize>) {
        let bpr = w.cols / BLOCK;
        let lanes = groups.end * bpr * GROUP_ROWS;
        let tile_end = rows.start - rows.start % TILE_ACTIVATION_ROWS + x.tile_rows(rows.start);
        assert!(
            x.cols == w.cols
                && rows.start < x.rows
                && rows.end <= tile_end
                && x.rows * bpr <= x.scales.len()
                && x.rows * bpr <= x.sums.len()
                && x.rows * bpr <= x.scaled_sums.len()
                && x.rows * w.cols <= x.values.len()
                && groups.len() <= CACHED_GROUPS
                && lanes <= w.scales.len()
                && (w.format != BlockFormat::Q4_1 || lanes <= w.mins.len())
                && lanes * w.format.value_bytes() <= w.values.len()
        );
    }

    /// [`super::quantize_tiles`] with AVX-512: a row's blocks sixteen at a time
    /// ([`quantize_sixteen_avx512`]), the rest one at a time.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_tiles_avx512(x: &[f32], cols: usize, out: super::TileBlocks) {
        // SAFETY: this function's caller checked AVX-512 F.
        super::quantize_tiles_with(
            x,
            cols,
            out,
            |row, values, first, stride| unsafe {
                quantize_sixteen_avx512(row, values, first, stride)
            },
            |block, values| unsafe { quantize_block_avx512(block, values) },
        );
    }

    /// The reductions [`reduce_sixteen`] makes.
    const MAX_F32: u8 = 0;
    const ADD_I32: u8 = 1;

    /// `a` and `b` combined lane by lane: their maximum (`vmaxps`) or integer sum.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn combine<const OP: u8>(a: __m512, b: __m512) -> __m512 {
        match OP {
            MAX_F32 => _mm512_max_ps(a, b),
            _ => _mm512_castsi512_ps(_mm512_add_epi32(
                _mm512_castps_si512(a),
                _mm512_castps_si512(b),
            )),
        }
    }

    /// Sixteen vectors `v` reduced lane-wise into one by [`combine`] (exact in any order, as
    /// a maximum of numbers or a sum of small integers is): lane `j` of the result is the
    /// reduction of `v[j]`'s sixteen lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn reduce_sixteen<const OP: u8>(v: &[__m512; 16]) -> __m512 {
        // Pairs: lanes 0–7 hold `a`'s halves combined, 8–15 `b`'s.
        let mut halves = [_mm512_setzero_ps(); 8];
        for (k, half) in halves.iter_mut().enumerate() {
            let (a, b) = (v[2 * k], v[2 * k + 1]);
            *half = combine::<OP>(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            );
        }
        // Quarters: four lanes per vector of `v` (quarter q of `quarters[e]` is v[4e + q]).
        let mut quarters = [_mm512_setzero_ps(); 4];
        for (e, quarter) in quarters.iter_mut().enumerate() {
            let (c, d) = (halves[2 * e], halves[2 * e + 1]);
            *quarter = combine::<OP>(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(c, d),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(c, d),
            );
        }
        // Within each 128-bit quarter: two lanes per vector of `v`, then one.
        let mut pairs = [_mm512_setzero_ps(); 2];
        for (f, pair) in pairs.iter_mut().enumerate() {
            let (e0, e1) = (quarters[2 * f], quarters[2 * f + 1]);
            *pair = combine::<OP>(
                _mm512_shuffle_ps::<0b01_00_01_00>(e0, e1),
                _mm512_shuffle_ps::<0b11_10_11_10>(e0, e1),
            );
        }
        let lanes = combine::<OP>(
            _mm512_shuffle_ps::<0b10_00_10_00>(pairs[0], pairs[1]),
            _mm512_shuffle_ps::<0b11_01_11_01>(pairs[0], pairs[1]),
        );
        // Lane 4q + e holds v[4e + q]: back to lane j for v[j].
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_ps(order, lanes)
    }

    /// Sixteen consecutive blocks of a row, each as [`quantize_block_avx512`] quantizes it,
    /// their `amax` (and so their scales) and sums found for all sixteen at once (one
    /// division for sixteen, no horizontal reduction per block); block `j`'s values go to
    /// `values[first + j · stride]`. Returns the scales and sums.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn quantize_sixteen_avx512(
        row: &[f32; 16 * BLOCK],
        values: &mut [[i8; BLOCK]],
        first: usize,
        stride: usize,
    ) -> ([f32; 16], [i32; 16]) {
        assert!(first + 15 * stride < values.len());
        let magnitude = _mm512_set1_epi32(i32::MAX);
        let at = row.as_ptr();
        // Per block, `quantize_block_avx512`'s lane maxima: NaN lanes give way (`vmaxps`
        // returns its second operand), so no lane is NaN and any order of reduction is exact.
        let mut maxima = [_mm512_setzero_ps(); 16];
        for (j, maximum) in maxima.iter_mut().enumerate() {
            let v0 = _mm512_loadu_ps(at.add(j * BLOCK));
            let v1 = _mm512_loadu_ps(at.add(j * BLOCK + 16));
            let abs0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v0), magnitude));
            let abs1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v1), magnitude));
            *maximum = _mm512_max_ps(abs1, _mm512_max_ps(abs0, _mm512_setzero_ps()));
        }
        let amax = reduce_sixteen::<MAX_F32>(&maxima);
        let q_max = _mm512_set1_ps(ACTIVATION_Q_MAX);
        let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(amax, _mm512_setzero_ps());
        let mut inverse = [0.0f32; 16];
        _mm512_storeu_ps(
            inverse.as_mut_ptr(),
            _mm512_maskz_div_ps(positive, q_max, amax),
        );
        let mut sums = [_mm512_setzero_ps(); 16];
        for (j, block_sum) in sums.iter_mut().enumerate() {
            let scale = _mm512_set1_ps(inverse[j]);
            let out = values.as_mut_ptr().add(first + j * stride) as *mut i8;
            let low = quantize_lanes(_mm512_loadu_ps(at.add(j * BLOCK)), scale, out);
            let high = quantize_lanes(_mm512_loadu_ps(at.add(j * BLOCK + 16)), scale, out.add(16));
            // The integer sums in f32 lanes' bits: the reduction adds them as integers.
            *block_sum = _mm512_castsi512_ps(_mm512_add_epi32(low, high));
        }
        let (mut d, mut s) = ([0.0f32; 16], [0i32; 16]);
        _mm512_storeu_ps(d.as_mut_ptr(), _mm512_div_ps(amax, q_max));
        let sums = _mm512_castps_si512(reduce_sixteen::<ADD_I32>(&sums));
        _mm512_storeu_si512(s.as_mut_ptr() as *mut _, sums);
        (d, s)
    }

    /// [`super::quantize_block`] with AVX-512, lane by lane the same operations: `amax` as
    /// the maximum of `|v|` with NaN lanes ignored (`vmaxps` returns its second operand, the
    /// running maximum, when the first is NaN; a maximum is exact in any order), the product
    /// clamped with NaN kept and then taken to 0 as `as i32` does, truncation and the carry
    /// of a remainder of at least one half.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_block_avx512(
        block: &[f32; BLOCK],
        values: &mut [i8],
    ) -> (f32, i32) {
        assert!(values.len() >= BLOCK);
        let magnitude = _mm512_set1_epi32(i32::MAX);
        let v = [
            _mm512_loadu_ps(block.as_ptr()),
            _mm512_loadu_ps(block.as_ptr().add(16)),
        ];
        let abs =
            |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), magnitude));
        let lanes = _mm512_max_ps(abs(v[1]), _mm512_max_ps(abs(v[0]), _mm512_setzero_ps()));
        let amax = _mm512_reduce_max_ps(lanes);
        let inverse = if amax > 0.0 {
            ACTIVATION_Q_MAX / amax
        } else {
            0.0
        };
        let scale = _mm512_set1_ps(inverse);
        let out = values.as_mut_ptr();
        let sum = _mm512_add_epi32(
            quantize_lanes(v[0], scale, out),
            quantize_lanes(v[1], scale, out.add(16)),
        );
        (amax / ACTIVATION_Q_MAX, _mm512_reduce_add_epi32(sum))
    }

    /// Sixteen values of a block quantized with its `inverse` (`127 / amax` in every lane):
    /// the product clamped with NaN kept, rounded half away from zero as `trunc(p +
    /// copysign(0.5⁻, p))` (`0.5⁻` the float below one half: the sum rounds to the next
    /// integer exactly when `|p|`'s fraction is at least one half, and a tie at 0.5 itself
    /// rounds to even, 1), a NaN lane 0 as `as i32` gives; stored as i8 at `out` and returned.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn quantize_lanes(v: __m512, inverse: __m512, out: *mut i8) -> __m512i {
        let (low, high) = (
            _mm512_set1_ps(-ACTIVATION_Q_MAX),
            _mm512_set1_ps(ACTIVATION_Q_MAX),
        );
        let product = _mm512_mul_ps(v, inverse);
        // `f32::clamp`: NaN stays NaN (`vmaxps`/`vminps` return the second operand, NaN).
        let clamped = _mm512_min_ps(high, _mm512_max_ps(low, product));
        let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(clamped, clamped);
        // `copysign(0.5⁻, clamped)`: the sign bit of `clamped` with the bits of 0.5⁻.
        // (a & b) | c, lane by lane.
        let below_half = _mm512_set1_epi32(0x3eff_ffff);
        let signed_half = _mm512_ternarylogic_epi32::<0xea>(
            _mm512_castps_si512(clamped),
            _mm512_set1_epi32(i32::MIN),
            below_half,
        );
        let sum = _mm512_add_ps(clamped, _mm512_castsi512_ps(signed_half));
        let rounded = _mm512_maskz_cvttps_epi32(ordered, sum);
        _mm_storeu_si128(out as *mut __m128i, _mm512_cvtepi32_epi8(rounded));
        rounded
    }

    /// Activation bytes `e..e + 4` of the block at `at`, as one i32 (for a broadcast).
    #[inline(always)]
    unsafe fn four(at: *const i8, e: usize) -> i32 {
        (at.add(e) as *const i32).read_unaligned()
    }

    /// The current block of `R` activation rows of one tile ([`QuantActivations`]'s order):
    /// the first row's values, scale and sums, row `i` at `i` blocks further; stepped by one
    /// block of the tile (`tile_rows` blocks) at a time. Four pointers for any `R`, and each
    /// row at a constant offset, so nothing spills and every scale and sum is a broadcast
    /// operand read from memory.
    struct RowBlocks<const R: usize> {
        values: *const i8,
        scales: *const f32,
        sums: *const i32,
        scaled_sums: *const f32,
        tile_rows: usize,
    }

    impl<const R: usize> RowBlocks<R> {
        /// Block 0 of rows `row0..row0 + R` (in one tile of `x`, as [`check`] asserts).
        #[inline(always)]
        unsafe fn first(x: &QuantActivations, row0: usize) -> Self {
            let at = x.block_index(row0, 0);
            RowBlocks {
                values: x.values.as_ptr().add(at * BLOCK),
                scales: x.scales.as_ptr().add(at),
                sums: x.sums.as_ptr().add(at),
                scaled_sums: x.scaled_sums.as_ptr().add(at),
                tile_rows: x.tile_rows(row0),
            }
        }

        /// Row `i`'s values of the current block.
        #[inline(always)]
        unsafe fn values(&self, i: usize) -> *const i8 {
            self.values.add(i * BLOCK)
        }

        /// Row `i`'s scale of the current block.
        #[inline(always)]
        unsafe fn scale(&self, i: usize) -> f32 {
            *self.scales.add(i)
        }

        /// Row `i`'s sum of the current block.
        #[inline(always)]
        unsafe fn sum(&self, i: usize) -> i32 {
            *self.sums.add(i)
        }

        /// Row `i`'s scaled sum of the current block.
        #[inline(always)]
        unsafe fn scaled_sum(&self, i: usize) -> f32 {
            *self.scaled_sums.add(i)
        }

        /// The next block of every row (at most one past the tile's last).
        #[inline(always)]
        unsafe fn step(&mut self) {
            self.values = self.values.add(self.tile_rows * BLOCK);
            self.scales = self.scales.add(self.tile_rows);
            self.sums = self.sums.add(self.tile_rows);
            self.scaled_sums = self.scaled_sums.add(self.tile_rows);
        }
    }

    /// A [`BlockFormat`] as a constant parameter of the kernels below, so each format's loop
    /// carries no branch on it.
    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q8_0: u8 = 2;

    /// `R` activation rows from `row0` against the `G` groups from `group0` of a matrix in
    /// format `F` ([`Q4_0`], [`Q4_1`] or [`Q8_0`]), into `out.row(i) + at + 16 g + r`. Per block,
    /// lane by lane: `isum` = the stored dot less the format's bias times `asum`,
    /// `term = (dw * da) * isum` (`+ mw * (da * asum)` for Q4_1, the scaled sum read as it is), `acc = acc + term`. Q4 chunks
    /// hold two sets of four values per row (low and high nibbles); Q8_0 chunks one (stored
    /// `q + 128`, unsigned as `vpdpbusd` needs). Every address is a pointer stepped once per
    /// block (no index arithmetic, and so no overflow check, inside the loop) and the sums stay
    /// in registers.
    #[inline(always)]
    unsafe fn tile_vnni<const R: usize, const G: usize, const F: u8>(
        x: &QuantActivations,
        row0: usize,
        w: &QuantMatrix,
        group0: usize,
        out: SpanOut,
        at: usize,
    ) {
        let (bpr, cell_bytes) = (w.blocks_per_row(), w.cell_bytes());
        let bias = match F {
            Q4_0 => BlockFormat::Q4_0.stored_bias(),
            Q4_1 => 0,
            _ => BlockFormat::Q8_0.stored_bias(),
        };
        let nibble = _mm512_set1_epi8(15);
        // Block 0 of each activation row and of each group; stepped by one block per loop.
        let mut xs = RowBlocks::<R>::first(x, row0);
        let lanes0 = |g: usize| (group0 + g) * bpr * GROUP_ROWS;
        let mut w_values: [*const u8; G] =
            std::array::from_fn(|g| w.values.as_ptr().add((group0 + g) * bpr * cell_bytes));
        let mut w_scales: [*const f32; G] =
            std::array::from_fn(|g| w.scales.as_ptr().add(lanes0(g)));
        // Q4_1 only (`mins` is empty otherwise and never read).
        let mut w_mins: [*const f32; G] = std::array::from_fn(|g| match F {
            Q4_1 => w.mins.as_ptr().add(lanes0(g)),
            _ => w.mins.as_ptr(),
        });
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        for _ in 0..bpr {
            // `isum[g][i]`: group `g`, activation row `i`.
            let mut isum = [[_mm512_setzero_si512(); R]; G];
            if F == Q8_0 {
                for k in 0..BLOCK / 4 {
                    for (sums, w_at) in isum.iter_mut().zip(&w_values) {
                        let raw = _mm512_loadu_si512(w_at.add(k * CHUNK_BYTES) as *const _);
                        for (i, sum) in sums.iter_mut().enumerate() {
                            let xv = _mm512_set1_epi32(four(xs.values(i), 4 * k));
                            *sum = _mm512_dpbusd_epi32(*sum, raw, xv);
                        }
                    }
                }
            } else {
                for c in 0..BLOCK / 8 {
                    for (sums, w_at) in isum.iter_mut().zip(&w_values) {
                        let raw = _mm512_loadu_si512(w_at.add(c * CHUNK_BYTES) as *const _);
                        let low = _mm512_and_si512(raw, nibble);
                        let high = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nibble);
                        for (i, sum) in sums.iter_mut().enumerate() {
                            let xl = _mm512_set1_epi32(four(xs.values(i), 8 * c));
                            let xh = _mm512_set1_epi32(four(xs.values(i), 8 * c + 4));
                            *sum = _mm512_dpbusd_epi32(*sum, low, xl);
                            *sum = _mm512_dpbusd_epi32(*sum, high, xh);
                        }
                    }
                }
            }
            let dw: [__m512; G] = std::array::from_fn(|g| _mm512_loadu_ps(w_scales[g]));
            let mw: [__m512; G] = std::array::from_fn(|g| match F {
                Q4_1 => _mm512_loadu_ps(w_mins[g]),
                _ => _mm512_setzero_ps(),
            });
            for i in 0..R {
                let da = _mm512_set1_ps(xs.scale(i));
                let scaled_sum = _mm512_set1_ps(xs.scaled_sum(i));
                let offset = _mm512_set1_epi32(bias.wrapping_mul(xs.sum(i)));
                for g in 0..G {
                    let exact = match F {
                        Q4_1 => isum[g][i],
                        _ => _mm512_sub_epi32(isum[g][i], offset),
                    };
                    let mut term =
                        _mm512_mul_ps(_mm512_mul_ps(dw[g], da), _mm512_cvtepi32_ps(exact));
                    if F == Q4_1 {
                        term = _mm512_add_ps(term, _mm512_mul_ps(mw[g], scaled_sum));
                    }
                    acc[i][g] = _mm512_add_ps(acc[i][g], term);
                }
            }
            xs.step();
            for g in 0..G {
                w_values[g] = w_values[g].add(cell_bytes);
                w_scales[g] = w_scales[g].add(GROUP_ROWS);
                if F == Q4_1 {
                    w_mins[g] = w_mins[g].add(GROUP_ROWS);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (g, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.row(i).add(at + g * GROUP_ROWS), *acc);
            }
        }
    }

    /// The groups `groups` in tiles of `G` groups (then single groups) for `R` rows.
    #[inline(always)]
    unsafe fn groups_vnni<const R: usize, const G: usize, const F: u8>(
        x: &QuantActivations,
        row0: usize,
        w: &QuantMatrix,
        groups: Range<usize>,
        out: SpanOut,
    ) {
        let mut g = groups.start;
        while g + G <= groups.end {
            tile_vnni::<R, G, F>(x, row0, w, g, out, (g - groups.start) * GROUP_ROWS);
            g += G;
        }
        while g < groups.end {
            tile_vnni::<R, 1, F>(x, row0, w, g, out, (g - groups.start) * GROUP_ROWS);
            g += 1;
        }
    }

    /// [`groups_vnni`] for the activation rows `rows` (at most [`TILE_ACTIVATION_ROWS`]) of
    /// format `F`: up to four rows against two groups at a time, five to eight against one
    /// (sixteen or fewer sums and as many block dots in the 32 registers either way; eight
    /// rows share each unpacked weight chunk: 145 against 143 multiply-adds/ns for tiles of
    /// 4 × 2 and 6 × 2, `examples/quant_prefill_speed.rs`).
    #[inline(always)]
    unsafe fn rows_vnni<const F: u8>(
        x: &QuantActivations,
        rows: Range<usize>,
        w: &QuantMatrix,
        groups: Range<usize>,
        out: SpanOut,
    ) {
        match rows.len() {
            0 => {}
            1 => groups_vnni::<1, 4, F>(x, rows.start, w, groups, out),
            2 => groups_vnni::<2, 2, F>(x, rows.start, w, groups, out),
            3 => groups_vnni::<3, 2, F>(x, rows.start, w, groups, out),
            4 => groups_vnni::<4, 2, F>(x, rows.start, w, groups, out),
            5 => groups_vnni::<5, 1, F>(x, rows.start, w, groups, out),
            6 => groups_vnni::<6, 1, F>(x, rows.start, w, groups, out),
            7 => groups_vnni::<7, 1, F>(x, rows.start, w, groups, out),
            _ => groups_vnni::<8, 1, F>(x, rows.start, w, groups, out),
        }
    }

    /// [`super::span`] with AVX-512 VNNI: one activation row against four groups at once
    /// (four independent sums hide the dot instruction's latency), more rows as
    /// [`rows_vnni`] tiles them. Safety: as [`super::span`]'s, and the CPU has the features.
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn span_vnni(
        x: &QuantActivations,
        rows: Range<usize>,
        w: &QuantMatrix,
        groups: Range<usize>,
        out: SpanOut,
    ) {
        check(x, &rows, w, &groups);
        match w.format {
            BlockFormat::Q4_0 => rows_vnni::<Q4_0>(x, rows, w, groups, out),
            BlockFormat::Q4_1 => rows_vnni::<Q4_1>(x, rows, w, groups, out),
            BlockFormat::Q8_0 => rows_vnni::<Q8_0>(x, rows, w, groups, out),
        }
    }

    /// [`tile_vnni`] in AVX2 on half a group (`half` 0: rows 0–7, 1: rows 8–15) and one group.
    /// Pairs of products are summed in i16 by `vpmaddubsw` first, so Q8_0's values are taken
    /// back to signed (`q`, no bias) and multiplied as `|q| · (x · sign q)` (≤ 2 · 128 · 127
    /// per pair); Q4 nibbles (≤ 15) against i8 fit as they are.
    #[inline(always)]
    unsafe fn tile_avx2<const R: usize, const F: u8>(
        x: &QuantActivations,
        row0: usize,
        w: &QuantMatrix,
        group: usize,
        half: usize,
        out: SpanOut,
        at: usize,
    ) {
        let (bpr, cell_bytes) = (w.blocks_per_row(), w.cell_bytes());
        let bias = match F {
            Q4_0 => BlockFormat::Q4_0.stored_bias(),
            _ => 0,
        };
        let nibble = _mm256_set1_epi8(15);
        let flip = _mm256_set1_epi8(i8::MIN);
        let ones = _mm256_set1_epi16(1);
        // Block 0 of each activation row and of the half group; stepped by one block per loop.
        let mut xs = RowBlocks::<R>::first(x, row0);
        let lanes0 = group * bpr * GROUP_ROWS + half * GROUP_ROWS / 2;
        let mut w_values = w
            .values
            .as_ptr()
            .add(group * bpr * cell_bytes + half * CHUNK_BYTES / 2);
        let mut w_scales = w.scales.as_ptr().add(lanes0);
        // Q4_1 only (`mins` is empty otherwise and never read).
        let mut w_mins = match F {
            Q4_1 => w.mins.as_ptr().add(lanes0),
            _ => w.mins.as_ptr(),
        };
        let mut acc = [_mm256_setzero_ps(); R];
        for _ in 0..bpr {
            let mut isum = [_mm256_setzero_si256(); R];
            if F == Q8_0 {
                for k in 0..BLOCK / 4 {
                    let raw = _mm256_loadu_si256(w_values.add(k * CHUNK_BYTES) as *const __m256i);
                    let signed = _mm256_xor_si256(raw, flip);
                    let magnitude = _mm256_sign_epi8(signed, signed);
                    for (i, sum) in isum.iter_mut().enumerate() {
                        let xv = _mm256_set1_epi32(four(xs.values(i), 4 * k));
                        let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(xv, signed));
                        *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
                    }
                }
            } else {
                for c in 0..BLOCK / 8 {
                    let raw = _mm256_loadu_si256(w_values.add(c * CHUNK_BYTES) as *const __m256i);
                    let low = _mm256_and_si256(raw, nibble);
                    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nibble);
                    for (i, sum) in isum.iter_mut().enumerate() {
                        let xl = _mm256_set1_epi32(four(xs.values(i), 8 * c));
                        let xh = _mm256_set1_epi32(four(xs.values(i), 8 * c + 4));
                        // Each pair ≤ 2 · 15 · 127, the two together fit i16 too.
                        let pairs = _mm256_add_epi16(
                            _mm256_maddubs_epi16(low, xl),
                            _mm256_maddubs_epi16(high, xh),
                        );
                        *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
            let dw = _mm256_loadu_ps(w_scales);
            for i in 0..R {
                let da = _mm256_set1_ps(xs.scale(i));
                let exact = match F {
                    Q4_0 => {
                        let offset = _mm256_set1_epi32(bias.wrapping_mul(xs.sum(i)));
                        _mm256_sub_epi32(isum[i], offset)
                    }
                    _ => isum[i],
                };
                let mut term = _mm256_mul_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(exact));
                if F == Q4_1 {
                    let mw = _mm256_loadu_ps(w_mins);
                    let scaled_sum = _mm256_set1_ps(xs.scaled_sum(i));
                    term = _mm256_add_ps(term, _mm256_mul_ps(mw, scaled_sum));
                }
                acc[i] = _mm256_add_ps(acc[i], term);
            }
            xs.step();
            w_values = w_values.add(cell_bytes);
            w_scales = w_scales.add(GROUP_ROWS);
            if F == Q4_1 {
                w_mins = w_mins.add(GROUP_ROWS);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.row(i).add(at), *acc);
        }
    }

    /// [`tile_avx2`] over the groups `groups` and activation rows `rows`, four rows at a time
    /// (the sums of more spill the sixteen registers).
    #[inline(always)]
    unsafe fn groups_avx2<const F: u8>(
        x: &QuantActivations,
        rows: Range<usize>,
        w: &QuantMatrix,
        groups: Range<usize>,
        out: SpanOut,
    ) {
        for g in groups.clone() {
            for half in 0..2 {
                let at = (g - groups.start) * GROUP_ROWS + half * GROUP_ROWS / 2;
                for r0 in rows.clone().step_by(4) {
                    let out = out.rows_from(r0 - rows.start);
                    match (rows.end - r0).min(4) {
                        1 => tile_avx2::<1, F>(x, r0, w, g, half, out, at),
                        2 => tile_avx2::<2, F>(x, r0, w, g, half, out, at),
                        3 => tile_avx2::<3, F>(x, r0, w, g, half, out, at),
                        _ => tile_avx2::<4, F>(x, r0, w, g, half, out, at),
                    }
                }
            }
        }
    }

    /// [`super::span`] with AVX2. Safety: as [`super::span`]'s, and the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn span_avx2(
        x: &QuantActivations,
        rows: Range<usize>,
        w: &QuantMatrix,
        groups: Range<usize>,
        out: SpanOut,
    ) {
        check(x, &rows, w, &groups);
        match w.format {
            BlockFormat::Q4_0 => groups_avx2::<Q4_0>(x, rows, w, groups, out),
            BlockFormat::Q4_1 => groups_avx2::<Q4_1>(x, rows, w, groups, out),
            BlockFormat::Q8_0 => groups_avx2::<Q8_0>(x, rows, w, groups, out),
        }
    }
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
        // Whole groups, a few rows inside the first group, rows from inside a group to the end.
        for columns in [0..n, 1..n.min(7), n / 3..n] {
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
                    // Into a new vector, written once: the same bits.
                    let vec = linear_vec(&xq, &w, columns.clone(), Activation::Silu, compute);
                    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&vec.unwrap()), bits(&got), "{format:?} {isa:?}");
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
            // Tiles of 4 activation rows and groups of 16 weight rows with remainders of both,
            // several cached spans of groups, a row of fewer blocks than a vector's lanes.
            check(format, 6, 5 * BLOCK, 70, seed as u64 + 20);
            check(format, 9, 48 * BLOCK, 133, seed as u64 + 30);
            // Every tile height: 8 + 2, 8 + 4, 8 + 7 activation rows.
            for (i, rows) in [10, 12, 15].into_iter().enumerate() {
                check(format, rows, 3 * BLOCK, 35, seed as u64 + 60 + i as u64);
            }
            // Above the work that is split between threads: several activation rows, and one
            // (a decode step's matmul, each part written in place).
            const { assert!(5 * 16 * BLOCK * 900 >= PARALLEL_WORK_MIN) };
            check(format, 5, 16 * BLOCK, 900, seed as u64 + 40);
            // Enough activation rows that the threads split them in whole tiles (48 rows on
            // 3 threads: parts of 16; 43 rows: 16, 16 and 11).
            const { assert!(43 * 3 * BLOCK * 70 >= PARALLEL_WORK_MIN) };
            const { assert!(43 >= 3 * TILE_ACTIVATION_ROWS) };
            check(format, 48, 3 * BLOCK, 70, seed as u64 + 70);
            check(format, 43, 3 * BLOCK, 70, seed as u64 + 80);
            const { assert!(18 * BLOCK * 467 >= PARALLEL_WORK_MIN) };
            check(format, 1, 18 * BLOCK, 700, seed as u64 + 50);
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

    /// Q4_1's min term is `m_w · (d_x · f32(s_x))`, the activation block's scaled sum formed
    /// once: pinned on blocks where `(m_w · d_x) · f32(s_x)` rounds differently.
    #[test]
    fn the_q4_1_min_term_multiplies_the_scaled_sum() {
        let x: Vec<f32> = (0..BLOCK).map(|j| 0.3 + j as f32 * 0.71).collect();
        let xq = quantize_activations(&x, 1, BLOCK).unwrap();
        let (da, s) = (xq.scales[0], xq.sums[0]);
        assert_eq!(xq.scaled_sums[0].to_bits(), (da * s as f32).to_bits());
        let mut orders_differ = 0;
        for m_bits in 0x3c01u16..0x3c41 {
            // d = 1.5 (f16 0x3e00), min m, nibbles 0..15 then 15..0.
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&0x3e00u16.to_le_bytes());
            bytes.extend_from_slice(&m_bits.to_le_bytes());
            bytes.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
            let w = QuantMatrix::from_gguf(BlockFormat::Q4_1, 1, BLOCK, &bytes).unwrap();
            let (dw, mw) = (w.scale(0, 0), w.min(0, 0));
            let isum: i32 = (0..BLOCK)
                .map(|e| w.integer(0, 0, e) * xq.values[e] as i32)
                .sum();
            let specified = (dw * da) * isum as f32 + mw * (da * s as f32);
            let other = (dw * da) * isum as f32 + (mw * da) * s as f32;
            orders_differ += usize::from(specified.to_bits() != other.to_bits());
            let mut out = [0.0f32];
            reference_linear(&xq, &w, 0..1, Activation::Identity, &mut out).unwrap();
            assert_eq!(
                out[0].to_bits(),
                (0.0 + specified).to_bits(),
                "m {m_bits:#x}"
            );
        }
        assert!(orders_differ > 0, "no block tells the two orders apart");
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

    /// Every product near an integer's half and near an integer, both signs, below one and
    /// up to the clamp, through every path (blocks whose `amax` is 127, so each value is its
    /// own product): the specified rounding, half away from zero.
    #[test]
    fn rounding_is_exact_at_every_half_and_integer() {
        let mut values = Vec::new();
        for k in 0..=130 {
            for edge in [k as f32 + 0.5, k as f32] {
                let mut v = edge;
                for _ in 0..3 {
                    v = v.next_down();
                }
                for _ in 0..7 {
                    values.extend([v, -v]);
                    v = v.next_up();
                }
            }
        }
        values.extend([
            0.25f32.next_down(),
            0.25,
            0.5f32.next_down(),
            1e-30,
            2.9e-39,
        ]);
        // Blocks of 31 values and 127 (the block's `amax`, so the inverse is 1).
        let blocks: Vec<f32> = values
            .chunks(BLOCK - 1)
            .flat_map(|chunk| {
                let mut block = chunk.to_vec();
                block.resize(BLOCK - 1, 0.0);
                block.push(127.0);
                block
            })
            .collect();
        // Whole rows of sixteen blocks, padded with blocks of zeros.
        let cols = 16 * BLOCK;
        let rows = blocks.len().div_ceil(cols);
        let mut blocks = blocks;
        blocks.resize(rows * cols, 0.0);
        let blocks = &blocks[..];
        let got = quantize_activations(blocks, rows, cols).unwrap();
        let mut portable = got.clone();
        portable.values.fill(0);
        let out = portable.blocks_mut();
        quantize_tiles_portable(blocks, cols, out);
        for (r, row) in blocks.chunks_exact(cols).enumerate() {
            for (b, block) in row.chunks_exact(BLOCK).enumerate() {
                let at = got.block_index(r, b);
                let (_, q) = specified_block(block);
                assert_eq!(&got.values[at * BLOCK..(at + 1) * BLOCK], q, "{block:?}");
                assert_eq!(
                    &portable.values[at * BLOCK..(at + 1) * BLOCK],
                    q,
                    "{block:?}"
                );
            }
        }
    }

    /// docs/llm.md §2.1's rounding of one block, written as stated: `round` (half away from
    /// zero), then clamp, then the integer.
    fn specified_block(block: &[f32]) -> (f32, Vec<i8>) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inverse = if amax > 0.0 {
            ACTIVATION_Q_MAX / amax
        } else {
            0.0
        };
        let q = block
            .iter()
            .map(|&v| {
                (v * inverse)
                    .round()
                    .clamp(-ACTIVATION_Q_MAX, ACTIVATION_Q_MAX) as i8
            })
            .collect();
        (amax / ACTIVATION_Q_MAX, q)
    }

    #[test]
    fn block_quantization_is_the_specified_rounding_on_edge_values() {
        let mut rng = Rng(77);
        let edges = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE / 8.0,
            f32::MAX,
            f32::MIN,
            0.5,
            -0.5,
            1.5,
            -2.5,
            126.5,
            -126.5,
            127.0,
            3e38,
            1e-30,
        ];
        // Rows of nineteen blocks: sixteen quantized at once on AVX-512, three one by one.
        const ROW_BLOCKS: usize = 19;
        for round in 0..200 {
            // Blocks of edge values among others, of exact halves, of zeros, of plain values.
            let row: Vec<f32> = (0..ROW_BLOCKS * BLOCK)
                .map(|j| match ((round + j / BLOCK) % 5, (round + j) % 5) {
                    (0, 0) => edges[(rng.next() as usize) % edges.len()],
                    // Exact halves after scaling: amax 127 makes each value its own `p`.
                    (1, _) => (rng.next() % 255) as f32 / 2.0 - 63.5,
                    (2, _) if round % 3 == 0 => 0.0,
                    _ => rng.float() * 10f32.powi((rng.next() % 9) as i32 - 4),
                })
                .collect();
            let got = quantize_activations(&row, 1, ROW_BLOCKS * BLOCK).unwrap();
            for (b, block) in row.chunks_exact(BLOCK).enumerate() {
                let at = got.block_index(0, b);
                let (d, q) = specified_block(block);
                assert_eq!(got.scales[at].to_bits(), d.to_bits(), "{block:?}");
                assert_eq!(&got.values[at * BLOCK..(at + 1) * BLOCK], q, "{block:?}");
                assert_eq!(got.sums[at], q.iter().map(|&v| v as i32).sum::<i32>());
            }
            // The portable path too, wherever the SIMD one ran above.
            let mut portable = got.clone();
            portable.values.fill(0);
            portable.scales.fill(0.0);
            let blocks = portable.blocks_mut();
            quantize_tiles_portable(&row, ROW_BLOCKS * BLOCK, blocks);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&portable.scales), bits(&got.scales));
            assert_eq!(bits(&portable.scaled_sums), bits(&got.scaled_sums));
            assert_eq!((&portable.values, &portable.sums), (&got.values, &got.sums));
        }
    }

    /// Activations quantized on several threads are those quantized on one, and each block
    /// sits where `block_index` says: whole tiles, a last short tile, one row, wide rows.
    #[test]
    fn activations_quantized_on_threads_are_the_blocks_of_one() {
        let mut rng = Rng(5);
        // The last three are quantized in parts (at least `QUANTIZE_PARALLEL_MIN` values).
        for (rows, cols) in [
            (1, 64),
            (7, 576),
            (9, 1536),
            (67, 576),
            (130, 160),
            (16, 1536),
        ] {
            let x: Vec<f32> = (0..rows * cols).map(|_| rng.float() * 3.0).collect();
            let one = quantize_activations(&x, rows, cols).unwrap();
            for (r, row) in x.chunks_exact(cols).enumerate() {
                for (b, block) in row.chunks_exact(BLOCK).enumerate() {
                    let at = one.block_index(r, b);
                    let (d, q) = specified_block(block);
                    assert_eq!(one.scales[at].to_bits(), d.to_bits());
                    assert_eq!(&one.values[at * BLOCK..(at + 1) * BLOCK], q.as_slice());
                }
            }
            for threads in [2, 3, 7] {
                let many = quantize_activations_on(&x, rows, cols, Compute::new(threads));
                assert_eq!(many.unwrap(), one, "{rows} × {cols} on {threads} threads");
            }
            // Into the storage of other activations, larger and smaller: the same blocks.
            for (other_rows, other_cols) in [(130, 1536), (1, 32)] {
                let other: Vec<f32> = (0..other_rows * other_cols).map(|_| rng.float()).collect();
                let mut reused = quantize_activations(&other, other_rows, other_cols).unwrap();
                reused.requantize(&x, rows, cols, Compute::new(2)).unwrap();
                assert_eq!(
                    reused, one,
                    "{rows} × {cols} over {other_rows} × {other_cols}"
                );
            }
        }
    }

    /// The SiLU applied to matmul outputs (the kernels' `activate`, the one vectorised `expf`)
    /// equals `reference::silu` (libm's `expf`) bit for bit on every instruction set: a stride
    /// through every f32 bit pattern, values at each of `expf`'s branch edges (in vectors of
    /// their own, so the lanes' path runs them, and beside special lanes), random values, and
    /// a length with a tail.
    #[test]
    fn silu_equals_the_reference_on_every_path() {
        let around = |edges: &[u32]| -> Vec<f32> {
            let mut out = Vec::new();
            for &edge in edges {
                for delta in 0..4u32 {
                    for sign in [0, 1u32 << 31] {
                        out.push(f32::from_bits((edge + delta) | sign));
                        out.push(f32::from_bits((edge - delta) | sign));
                    }
                }
            }
            out
        };
        let strided: Vec<f32> = (0..=u32::MAX / 9973)
            .map(|i| f32::from_bits(i * 9973))
            .collect();
        // The argument reductions' edges (|t| = 0.5 ln 2 and 1.5 ln 2), then the special paths'.
        let reductions = around(&[0x3f85_1592, 0x3eb1_7218]);
        let special = around(&[0x42ae_ac50, 0x42b1_7218, 0x42cf_f1b5, 0x3900_0000]);
        let mut rng = Rng(3);
        let random: Vec<f32> = (0..20_000).map(|_| rng.float() * 20.0).collect();
        for isa in Isa::available() {
            for x in [&strided, &reductions, &special, &random, &random[3..40]] {
                let mut got = Vec::with_capacity(x.len());
                let out = &mut got.spare_capacity_mut()[..x.len()];
                apply_activation(isa, Activation::Silu, x, out);
                // SAFETY: `apply_activation` wrote every output.
                unsafe { got.set_len(x.len()) };
                for (&v, g) in x.iter().zip(&got) {
                    let expected = crate::reference::silu(v);
                    assert!(
                        g.to_bits() == expected.to_bits() || (g.is_nan() && expected.is_nan()),
                        "{isa:?}: silu({v:e}) = {g:e}, expected {expected:e}"
                    );
                }
            }
        }
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
    fn a_matrix_is_held_once_in_whole_groups() {
        // 20 rows of 2 Q4_1 blocks: 2 groups of 16 rows (the second padded), per block 16 value
        // bytes, a scale and a min per row — and no second copy of either.
        let mut rng = Rng(5);
        let w = QuantMatrix::from_gguf(
            BlockFormat::Q4_1,
            20,
            2 * BLOCK,
            &random_gguf(BlockFormat::Q4_1, 40, &mut rng),
        )
        .unwrap();
        let padded_blocks = 2 * GROUP_ROWS * 2;
        assert_eq!(w.memory_bytes(), padded_blocks * (16 + 4 + 4));
        // The padding rows are zeros: they add nothing to a dot and are never read back.
        assert!((20..32).all(|r| (0..2).all(|b| w.scale(r, b) == 0.0 && w.stored(r, b, 7) == 0)));
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

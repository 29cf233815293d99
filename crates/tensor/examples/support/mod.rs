//! What the quantized matmul's speed examples share: a Q4_1 matrix of SmolLM2's shapes.

use piazza_tensor::quant::{self, BlockFormat, QuantMatrix};

/// Bytes of one Q4_1 block: the f16 scale, the f16 minimum, 32 nibbles.
const Q4_1_BLOCK_BYTES: usize = 20;

/// A `rows × cols` Q4_1 matrix, every block `d = 1/16`, `m = -1/8` and hashed nibbles.
pub fn q4_1_matrix(rows: usize, cols: usize) -> QuantMatrix {
    let blocks = rows * cols / quant::BLOCK;
    let bytes: Vec<u8> = (0..blocks * Q4_1_BLOCK_BYTES)
        .map(|i| match i % Q4_1_BLOCK_BYTES {
            0 => 0x00, // d = 0x2c00 (1/16), little-endian
            1 => 0x2c,
            2 => 0x00, // m = 0xb000 (-1/8)
            3 => 0xb0,
            _ => (i.wrapping_mul(2_654_435_761) >> 7) as u8,
        })
        .collect();
    QuantMatrix::from_gguf(BlockFormat::Q4_1, rows, cols, &bytes).expect("a well-formed matrix")
}

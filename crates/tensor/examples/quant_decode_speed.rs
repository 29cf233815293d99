//! Prints the quantized matmul's time per call for SmolLM2-135M's one-row decode shapes
//! (Q4_1 weights, SiLU on the gate projection) on 1 and 2 threads, interleaved, and the
//! speed-up of 2 threads: what [`piazza_tensor::quant::linear`]'s threading threshold is set
//! from. `cargo run --release -p piazza-tensor --example quant_decode_speed`. Printed, never
//! asserted.
use std::num::NonZeroUsize;
use std::time::Instant;

use piazza_tensor::quant::{self, BlockFormat, QuantMatrix};
use piazza_tensor::{Activation, Compute, Isa};

/// Bytes of one Q4_1 block: the f16 scale, the f16 minimum, 32 nibbles.
const Q4_1_BLOCK_BYTES: usize = 20;
/// Calls timed per measurement.
const CALLS: usize = 2_000;

fn micros_per_call(mut run: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..CALLS {
            run();
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
    }
    best
}

fn main() {
    // (weight rows, columns, activation, what)
    let shapes = [
        (192, 576, Activation::Identity, "k / v"),
        (576, 576, Activation::Identity, "q / o"),
        (1536, 576, Activation::Silu, "gate"),
        (1536, 576, Activation::Identity, "up"),
        (576, 1536, Activation::Identity, "down"),
        (49152, 576, Activation::Identity, "LM head"),
    ];
    let isa = Isa::available().into_iter().last().unwrap_or(Isa::Portable);
    for (rows, cols, activation, what) in shapes {
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
        let w = QuantMatrix::from_gguf(BlockFormat::Q4_1, rows, cols, &bytes)
            .expect("a well-formed matrix");
        let x: Vec<f32> = (0..cols).map(|i| (i % 37) as f32 * 0.05 - 0.9).collect();
        let xq = quant::quantize_activations(&x, 1, cols).expect("one block-aligned row");
        let mut out = vec![0.0f32; rows];
        let mut time = |threads: usize| {
            let compute = Compute {
                threads: NonZeroUsize::new(threads).unwrap_or(NonZeroUsize::MIN),
                isa,
            };
            micros_per_call(|| {
                quant::linear(&xq, &w, 0..rows, activation, &mut out, compute)
                    .expect("matching shapes");
            })
        };
        let (mut one, mut two) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..3 {
            one = one.min(time(1));
            two = two.min(time(2));
        }
        println!(
            "{what:8} {rows:5} × {cols:4} ({:5.2} M multiply-adds): 1 thread {one:8.2} µs, \
             2 threads {two:8.2} µs, × {:.2}",
            (rows * cols) as f64 / 1e6,
            one / two
        );
    }
}

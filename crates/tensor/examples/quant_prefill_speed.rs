//! Prints the quantized matmul's speed on SmolLM2-135M's many-row shapes (an auditor's single
//! pass: prompt and generated tokens as one prefill, 130 activation rows; Q4_1 weights) on one
//! thread (or THREADS), in multiply-adds per nanosecond of wall time, and the sum over one
//! pass's matmuls.
//! `cargo run --release -p piazza-tensor --example quant_prefill_speed [-- ROWS [THREADS]]`
//! (`PIAZZA_ISA=avx2` for the AVX2 path on an AVX-512 machine). Printed, never asserted.
use std::time::Instant;

use piazza_tensor::quant;
use piazza_tensor::{Activation, Compute, Isa};

#[path = "support/mod.rs"]
mod support;

/// Timed rounds per shape (the best is printed).
const ROUNDS: usize = 5;
/// Activation rows by default: the 67-token prompt and 63 fed tokens of `bench_generate 64`.
const ROWS_DEFAULT: usize = 130;
/// Decoder layers of SmolLM2-135M.
const LAYERS: usize = 30;

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (activation_rows, threads) = (arg(1, ROWS_DEFAULT), arg(2, 1));
    // (weight rows, columns, activation, matmuls per pass, what)
    let shapes = [
        (192, 576, Activation::Identity, 2 * LAYERS, "k / v"),
        (576, 576, Activation::Identity, 2 * LAYERS, "q / o"),
        (1536, 576, Activation::Silu, LAYERS, "gate"),
        (1536, 576, Activation::Identity, LAYERS, "up"),
        (576, 1536, Activation::Identity, LAYERS, "down"),
    ];
    let isa = match std::env::var("PIAZZA_ISA").as_deref() {
        Ok("avx2") => Isa::Avx2,
        Ok("portable") => Isa::Portable,
        _ => Isa::detect(),
    };
    println!("isa {isa:?}");
    let mut pass_s = 0.0;
    for (rows, cols, activation, count, what) in shapes {
        let w = support::q4_1_matrix(rows, cols);
        let x: Vec<f32> = (0..activation_rows * cols)
            .map(|i| (i % 37) as f32 * 0.05 - 0.9 + (i / cols) as f32 * 1e-3)
            .collect();
        let xq =
            quant::quantize_activations(&x, activation_rows, cols).expect("block-aligned rows");
        let mut out = vec![0.0f32; activation_rows * rows];
        let compute = Compute {
            isa,
            ..Compute::new(threads)
        };
        let mut best = f64::INFINITY;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            quant::linear(&xq, &w, 0..rows, activation, &mut out, compute)
                .expect("matching shapes");
            best = best.min(start.elapsed().as_secs_f64());
        }
        let multiply_adds = (activation_rows * rows * cols) as f64;
        pass_s += best * count as f64;
        println!(
            "{what:6} {rows:5} × {cols:4}, {activation_rows} rows: {:7.3} ms, {:6.1} multiply-adds/ns",
            best * 1e3,
            multiply_adds / best / 1e9
        );
    }
    println!("layer matmuls of one pass: {:.1} ms", pass_s * 1e3);
}

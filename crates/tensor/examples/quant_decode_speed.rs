//! Prints the quantized matmul's time per call for SmolLM2-135M's one-row decode shapes
//! (Q4_1 weights, SiLU on the gate projection) on 1 and 2 threads, interleaved, and the
//! speed-up of 2 threads: what [`piazza_tensor::quant::linear`]'s threading threshold is set
//! from. `cargo run --release -p piazza-tensor --example quant_decode_speed`. Printed, never
//! asserted.
use std::num::NonZeroUsize;
use std::time::Instant;

use piazza_tensor::quant;
use piazza_tensor::{Activation, Compute, Isa};

#[path = "support/mod.rs"]
mod support;

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
        let w = support::q4_1_matrix(rows, cols);
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

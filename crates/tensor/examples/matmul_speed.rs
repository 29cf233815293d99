//! Prints the matmul kernel's speed in GFLOP/s for MiniLM's shapes (the feed-forward's first
//! projection with its bias and GELU epilogue) and for SmolLM2's one-row f32 decode (no bias),
//! then MiniLM's four matmuls of a layer over the 2048 rows of a batch of 8 × 256 tokens, `b`
//! packed once as the encoder keeps it, one thread, in milliseconds and multiply-adds per
//! nanosecond: `cargo run --release -p piazza-tensor --example matmul_speed`.
use std::time::Instant;

use piazza_tensor::kernels::{self, Linear, PackedB};
use piazza_tensor::{Activation, Compute, Isa};

fn main() {
    let shapes = [
        (704, 1536, 384, Activation::GeluErf),
        (704, 384, 1536, Activation::Identity),
        (704, 384, 384, Activation::Identity),
        (272, 384, 384, Activation::Identity),
        (1, 1536, 576, Activation::Identity),
        (1, 576, 1536, Activation::Identity),
        (1, 576, 576, Activation::Identity),
    ];
    for (m, n, k, activation) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 97) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i % 89) as f32 * 0.01).collect();
        let bias: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let mut out = vec![0.0f32; m * n];
        for isa in Isa::available() {
            for threads in [1, 2, 1] {
                let compute = Compute {
                    threads: std::num::NonZeroUsize::new(threads).unwrap(),
                    isa,
                };
                let op = Linear {
                    b: &b,
                    bias: (m > 1).then_some(&bias[..]),
                    activation,
                    n,
                    k,
                };
                kernels::linear(&op, &a, &mut out, compute);
                // About 2 GFLOP per measurement, so one-row products are timed over many calls.
                let runs = (1usize << 30) / (m * n * k);
                let start = Instant::now();
                for _ in 0..runs {
                    kernels::linear(&op, &a, &mut out, compute);
                }
                let seconds = start.elapsed().as_secs_f64() / runs as f64;
                let gflops = 2.0 * (m * n * k) as f64 / seconds / 1e9;
                println!(
                    "{m}x{n}x{k} {activation:?} {isa:?} threads={threads}: {gflops:.1} GFLOP/s"
                );
            }
        }
    }
    batch_layer();
}

/// One MiniLM layer's matmuls over a 256-token batch of 8 (2048 rows), `b` packed once: the
/// feed-forward's first projection with and without its GELU, its second, and one of the four
/// 384 × 384 attention projections. Best of 7 calls each.
fn batch_layer() {
    const ROWS: usize = 2048;
    let shapes = [
        (1536, 384, Activation::GeluErf),
        (1536, 384, Activation::Identity),
        (384, 1536, Activation::Identity),
        (384, 384, Activation::Identity),
    ];
    let compute = Compute::new(1);
    for (n, k, activation) in shapes {
        let a: Vec<f32> = (0..ROWS * k).map(|i| (i % 97) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i % 89) as f32 * 0.01).collect();
        let bias: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let mut out = vec![0.0f32; ROWS * n];
        let packed = PackedB::new(&b, n, k, compute.isa).expect("k > 0");
        let op = Linear {
            b: &b,
            bias: Some(&bias),
            activation,
            n,
            k,
        };
        let best = (0..7)
            .map(|_| {
                let start = Instant::now();
                kernels::linear_packed(&op, Some(&packed), &a, &mut out, compute);
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!(
            "{ROWS}x{n}x{k} {activation:?}, b packed, threads=1: {:.2} ms, {:.1} multiply-adds/ns",
            best * 1e3,
            (ROWS * n * k) as f64 / best / 1e9
        );
    }
}

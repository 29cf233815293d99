//! Prints the speed of SmolLM2's decode attention (`kernels::causal_attention`, one query row
//! over the KV cache: 9 heads, 3 KV heads, head size 64) in microseconds per call, for a few
//! cache lengths, threads 1 and 2: `cargo run --release -p piazza-tensor --example
//! causal_attention_speed`. Printed, never asserted.
use std::num::NonZeroUsize;
use std::time::Instant;

use piazza_tensor::kernels;
use piazza_tensor::reference::CausalShape;
use piazza_tensor::{Compute, Isa};

/// Calls per measurement (best of a few measurements is printed).
const CALLS: usize = 2000;
const MEASUREMENTS: usize = 5;

fn main() {
    let isa = Isa::detect();
    println!("isa {isa:?}; microseconds per call, best of {MEASUREMENTS} x {CALLS} calls");
    for cache in [64usize, 256, 1024] {
        let shape = CausalShape {
            rows: 1,
            first_position: cache,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
        };
        let kv = shape.keys() * shape.kv_heads * shape.head_dim;
        let q: Vec<f32> = (0..shape.heads * 64)
            .map(|i| (i % 31) as f32 * 0.03 - 0.4)
            .collect();
        let k: Vec<f32> = (0..kv).map(|i| (i % 37) as f32 * 0.02 - 0.3).collect();
        let v: Vec<f32> = (0..kv).map(|i| (i % 41) as f32 * 0.01 - 0.2).collect();
        let mut out = vec![0.0f32; q.len()];
        for threads in [1, 2] {
            let compute = Compute {
                threads: NonZeroUsize::new(threads).unwrap_or(NonZeroUsize::MIN),
                isa,
            };
            let mut best = f64::INFINITY;
            for _ in 0..MEASUREMENTS {
                let start = Instant::now();
                for _ in 0..CALLS {
                    kernels::causal_attention(&q, &k, &v, shape, &mut out, compute);
                    std::hint::black_box(&mut out);
                }
                best = best.min(start.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
            }
            println!("cache {cache:5} threads {threads}: {best:8.2} us");
        }
    }
}

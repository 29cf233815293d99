//! Prints the speed of SmolLM2's attention (`kernels::causal_attention`: 9 heads, 3 KV heads,
//! head size 64) in microseconds per call: decode (one query row over a KV cache of a few
//! lengths) and prefill (130 rows from position 0, the auditor's pass over prompt + output),
//! threads 1 and 2: `cargo run --release -p piazza-tensor --example causal_attention_speed`
//! (`PIAZZA_ISA=avx2` or `portable` for those paths on an AVX-512 machine; an argument
//! `decode` or `prefill` runs only those lines, e.g. under `perf record`;
//! `PIAZZA_PREFILL_ROWS=1024` a longer prompt). Printed, never asserted.
use std::num::NonZeroUsize;
use std::time::Instant;

use piazza_tensor::kernels;
use piazza_tensor::reference::CausalShape;
use piazza_tensor::{Compute, Isa};

/// Work per measurement, in query rows × cached positions (best of a few measurements is
/// printed).
const ROW_POSITIONS_PER_MEASUREMENT: usize = 1 << 19;
const MEASUREMENTS: usize = 5;

fn main() {
    let isa = match std::env::var("PIAZZA_ISA").as_deref() {
        Ok("avx2") => Isa::Avx2,
        Ok("portable") => Isa::Portable,
        _ => Isa::detect(),
    };
    let only = std::env::args().nth(1);
    println!("isa {isa:?}; microseconds per call, best of {MEASUREMENTS} measurements");
    let decode = [64usize, 256, 1024].map(|cache| ("decode", "decode cache", 1, cache));
    let prefill_rows = std::env::var("PIAZZA_PREFILL_ROWS")
        .ok()
        .and_then(|rows| rows.parse().ok())
        .unwrap_or(130);
    let prefill = ("prefill", "prefill rows", prefill_rows, 0);
    for (kind, label, rows, first_position) in decode.into_iter().chain([prefill]) {
        if only.as_deref().is_some_and(|only| only != kind) {
            continue;
        }
        let shape = CausalShape {
            rows,
            first_position,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
        };
        let calls = (ROW_POSITIONS_PER_MEASUREMENT / (rows * shape.keys())).max(1);
        let kv = shape.keys() * shape.kv_heads * shape.head_dim;
        let q: Vec<f32> = (0..rows * shape.heads * 64)
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
                for _ in 0..calls {
                    kernels::causal_attention(&q, &k, &v, shape, &mut out, compute);
                    std::hint::black_box(&mut out);
                }
                best = best.min(start.elapsed().as_secs_f64() * 1e6 / calls as f64);
            }
            let size = rows.max(first_position);
            println!("{label} {size:5} threads {threads}: {best:9.2} us");
        }
    }
}

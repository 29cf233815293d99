//! Prints SiLU's speed in nanoseconds per element over SmolLM2's feed-forward width (1536):
//! the scalar reference (`libm::expf` per element, what the kernel ran before it was
//! vectorised) beside `kernels::activation` on each instruction set; then the same for
//! MiniLM's GELU (the same width as its feed-forward):
//! `cargo run --release -p piazza-tensor --example silu_speed`. Printed, never asserted.
use std::num::NonZeroUsize;
use std::time::Instant;

use piazza_tensor::{kernels, reference, Activation, Compute, Isa};

const WIDTH: usize = 1536;
const CALLS: usize = 20_000;

fn best_ns_per_element(mut run: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..CALLS {
            run();
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e9 / (CALLS * WIDTH) as f64);
    }
    best
}

fn main() {
    let x: Vec<f32> = (0..WIDTH).map(|i| (i % 113) as f32 * 0.07 - 4.0).collect();
    let mut out = vec![0.0f32; WIDTH];
    for (activation, what) in [
        (Activation::Silu, "SiLU (libm expf)"),
        (Activation::GeluErf, "GELU (erf)"),
    ] {
        let reference_ns = best_ns_per_element(|| {
            reference::activation(std::hint::black_box(&x), activation, &mut out);
        });
        println!("{what}: reference (scalar): {reference_ns:.3} ns/element");
        for isa in Isa::available() {
            let compute = Compute {
                threads: NonZeroUsize::MIN,
                isa,
            };
            let ns = best_ns_per_element(|| {
                kernels::activation(
                    std::hint::black_box(&x),
                    activation,
                    &mut out,
                    WIDTH,
                    compute,
                );
            });
            println!("{what}: kernels {isa:?}: {ns:.3} ns/element");
        }
    }
}

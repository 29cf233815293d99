//! This crate's kernels equal their scalar reference bit for bit, for any thread count and ISA.

use piazza_llm::kernels::{causal_attention, causal_attention_reference, linear, CausalShape};
use piazza_tensor::reference::{self, Activation};
use piazza_tensor::{Compute, Isa};
use proptest::prelude::*;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

fn computes() -> Vec<Compute> {
    let mut out = Vec::new();
    for isa in Isa::available() {
        for threads in 1..=4 {
            out.push(Compute {
                isa,
                ..Compute::new(threads)
            });
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn causal_attention_equals_reference(
        rows in 1usize..20,
        first_position in 0usize..40,
        kv_heads in 1usize..4,
        group in 1usize..4,
        head_dim in (1usize..20).prop_map(|d| d * 2),
        seed in any::<u64>(),
    ) {
        let heads = kv_heads * group;
        let shape = CausalShape { rows, first_position, heads, kv_heads, head_dim };
        let keys = shape.keys();
        let q = values(rows * heads * head_dim, seed);
        let k = values(keys * kv_heads * head_dim, seed ^ 1);
        let v = values(keys * kv_heads * head_dim, seed ^ 2);
        let mut expected = vec![0.0f32; q.len()];
        causal_attention_reference(&q, &k, &v, shape, &mut expected);
        for compute in computes() {
            let mut out = vec![0.0f32; q.len()];
            causal_attention(&q, &k, &v, shape, &mut out, compute);
            let same = out.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same, "{compute:?}");
        }
    }

    #[test]
    fn linear_equals_reference(
        m in 1usize..6,
        n in 1usize..300,
        k in 1usize..300,
        silu in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let activation = if silu { Activation::Silu } else { Activation::Identity };
        let x = values(m * k, seed);
        let w = values(n * k, seed ^ 3);
        let mut expected = vec![0.0f32; m * n];
        reference::linear(&x, &w, None, activation, m, n, k, &mut expected);
        for compute in computes() {
            let mut out = vec![0.0f32; m * n];
            linear(&x, &w, m, n, k, activation, &mut out, compute);
            let same = out.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same, "{compute:?}");
        }
    }
}

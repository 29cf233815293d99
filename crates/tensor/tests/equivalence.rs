//! Every fast kernel returns exactly the bits of its scalar reference, for random shapes (odd
//! sizes and tails included), every thread count and every instruction set this CPU has.

use std::num::NonZeroUsize;

use piazza_tensor::kernels::{self, AttentionShape, Linear, PackedB};
use piazza_tensor::reference::{self, Activation};
use piazza_tensor::{bf16_bits_to_f32, f16_bits_to_f32, Compute, Isa};
use proptest::prelude::*;

/// Values with a wide spread of magnitudes and signs, so rounding differences would show.
fn values(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            4 => -4.0f32..4.0,
            1 => -1.0e4f32..1.0e4,
            1 => -1.0e-3f32..1.0e-3,
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
        ],
        len,
    )
}

fn keep_mask(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(prop_oneof![3 => Just(1.0f32), 1 => Just(0.0f32)], len)
}

/// All the ways a kernel may run: 1, 2, 3 and 4 threads on each instruction set.
fn computes() -> Vec<Compute> {
    let mut all = Vec::new();
    for isa in Isa::available() {
        for threads in [1, 2, 3, 4] {
            all.push(Compute {
                threads: NonZeroUsize::new(threads).unwrap(),
                isa,
            });
        }
    }
    all
}

/// The one assertion every test makes: same length, same bits.
fn check_bits(what: &str, reference: &[f32], fast: &[f32]) {
    assert_eq!(reference.len(), fast.len(), "{what}: length");
    for (i, (r, f)) in reference.iter().zip(fast).enumerate() {
        assert_eq!(
            r.to_bits(),
            f.to_bits(),
            "{what}: element {i}: reference {r:e}, fast {f:e}"
        );
    }
}

fn activations() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::GeluErf),
        Just(Activation::Silu)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn reductions_match((x, y, mean) in (0usize..200).prop_flat_map(|n| (values(n), values(n), -2.0f32..2.0))) {
        check_bits("sum", &[reference::sum(&x)], &[kernels::sum(&x)]);
        check_bits("dot", &[reference::dot(&x, &y)], &[kernels::dot(&x, &y)]);
        check_bits(
            "sum_squared_deviation",
            &[reference::sum_squared_deviation(&x, mean)],
            &[kernels::sum_squared_deviation(&x, mean)],
        );
    }

    #[test]
    fn linear_matches(
        (m, n, k, a, b, bias) in (1usize..40, 1usize..60, 0usize..70).prop_flat_map(|(m, n, k)| {
            (Just(m), Just(n), Just(k), values(m * k), values(n * k), prop::option::of(values(n)))
        }),
        activation in activations(),
    ) {
        let mut expected = vec![0.0f32; m * n];
        reference::linear(&a, &b, bias.as_deref(), activation, m, n, k, &mut expected);
        for compute in computes() {
            let mut out = vec![f32::NAN; m * n];
            let op = Linear { b: &b, bias: bias.as_deref(), activation, n, k };
            kernels::linear(&op, &a, &mut out, compute);
            check_bits(&format!("linear {m}x{n}x{k} {compute:?}"), &expected, &out);
            // `b` packed ahead for this ISA's kernel, and for every other ISA's (a packing of
            // another panel width is not used: the kernel packs `b` itself).
            for packed_isa in Isa::available() {
                let packed = PackedB::new(&b, n, k, packed_isa);
                prop_assert_eq!(packed.is_some(), k > 0);
                prop_assert!(PackedB::new(&b, n + 1, k, packed_isa).is_none());
                let mut out = vec![f32::NAN; m * n];
                kernels::linear_packed(&op, packed.as_ref(), &a, &mut out, compute);
                check_bits(&format!("linear packed for {packed_isa:?} {compute:?}"), &expected, &out);
            }
        }
    }

    #[test]
    fn elementwise_matches(
        (width, x, y) in (1usize..50, 0usize..20).prop_flat_map(|(w, r)| (Just(w), values(w * r), values(w * r))),
        activation in activations(),
    ) {
        let len = x.len();
        let (mut add_ref, mut mul_ref, mut act_ref) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        reference::add(&x, &y, &mut add_ref);
        reference::mul(&x, &y, &mut mul_ref);
        reference::activation(&x, activation, &mut act_ref);
        for compute in computes() {
            let (mut add, mut mul, mut act) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
            kernels::add(&x, &y, &mut add, width, compute);
            kernels::mul(&x, &y, &mut mul, width, compute);
            kernels::activation(&x, activation, &mut act, width, compute);
            check_bits("add", &add_ref, &add);
            check_bits("mul", &mul_ref, &mul);
            check_bits("activation", &act_ref, &act);
        }
    }

    #[test]
    fn norms_match(
        (n, x, residual, gamma, beta) in (1usize..100, 1usize..12).prop_flat_map(|(n, rows)| {
            (Just(n), values(n * rows), values(n * rows), values(n), values(n))
        }),
        eps in prop_oneof![Just(1e-12f32), Just(1e-5f32), Just(1e-6f32)],
    ) {
        let len = x.len();
        let mut ln_ref = vec![0.0; len];
        let mut add_ln_ref = vec![0.0; len];
        let mut rms_ref = vec![0.0; len];
        let mut l2_ref = vec![0.0; len];
        reference::layernorm(&x, &gamma, &beta, eps, n, &mut ln_ref);
        reference::add_layernorm(&x, &residual, &gamma, &beta, eps, n, &mut add_ln_ref);
        reference::rmsnorm(&x, &gamma, eps, n, &mut rms_ref);
        reference::l2_normalize(&x, n, &mut l2_ref);
        let mut l2 = vec![0.0; len];
        kernels::l2_normalize(&x, n, &mut l2);
        check_bits("l2_normalize", &l2_ref, &l2);
        for compute in computes() {
            let (mut ln, mut add_ln, mut rms) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
            kernels::layernorm(&x, None, &gamma, &beta, eps, n, &mut ln, compute);
            kernels::layernorm(&x, Some(&residual), &gamma, &beta, eps, n, &mut add_ln, compute);
            kernels::rmsnorm(&x, &gamma, eps, n, &mut rms, compute);
            check_bits("layernorm", &ln_ref, &ln);
            check_bits("add_layernorm", &add_ln_ref, &add_ln);
            check_bits("rmsnorm", &rms_ref, &rms);
        }
    }

    #[test]
    fn softmax_matches(
        (n, x, keep) in (1usize..80, 1usize..10).prop_flat_map(|(n, rows)| (Just(n), values(n * rows), keep_mask(n))),
        scale in prop_oneof![Just(1.0f32), Just(0.17677669f32), 0.01f32..2.0],
        masked in any::<bool>(),
    ) {
        let keep = masked.then_some(&keep[..]);
        let mut expected = vec![0.0; x.len()];
        reference::softmax(&x, keep, scale, n, &mut expected);
        for compute in computes() {
            let mut out = vec![f32::NAN; x.len()];
            kernels::softmax(&x, keep, scale, n, &mut out, compute);
            check_bits("softmax", &expected, &out);
        }
    }

    #[test]
    fn attention_matches(
        (lengths, heads, head_dim, q, k, v) in (prop::collection::vec(0usize..20, 1..4), 1usize..4, 1usize..12)
            .prop_flat_map(|(lengths, heads, head_dim)| {
                let len = lengths.iter().sum::<usize>() * heads * head_dim;
                (Just(lengths), Just(heads), Just(head_dim), values(len), values(len), values(len))
            }),
    ) {
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut expected = vec![0.0; q.len()];
        reference::attention(&q, &k, &v, &lengths, heads, head_dim, scale, &mut expected);
        for compute in computes() {
            let mut out = vec![f32::NAN; q.len()];
            let shape = AttentionShape { heads, head_dim, scale };
            kernels::attention(&q, &k, &v, &lengths, shape, &mut out, compute);
            check_bits("attention", &expected, &out);
        }
    }

    #[test]
    fn mean_pool_matches(
        (lengths, width, x) in (prop::collection::vec(0usize..40, 1..4), 1usize..40).prop_flat_map(|(lengths, width)| {
            let rows = lengths.iter().sum::<usize>();
            (Just(lengths), Just(width), values(rows * width))
        }),
    ) {
        let mut expected = vec![0.0; lengths.len() * width];
        let mut out = vec![f32::NAN; lengths.len() * width];
        reference::mean_pool(&x, &lengths, width, &mut expected);
        kernels::mean_pool(&x, &lengths, width, &mut out);
        check_bits("mean_pool", &expected, &out);
    }
}

/// Every f16 bit pattern converts to the value the IEEE 754 binary16 formula gives.
/// The softmax kernels (exponentials vectorised per instruction set) keep the reference's
/// bits at the edges of `exp`: subnormal and zero results, the clamp bounds, infinities, NaN
/// (also as the first column), tied zeros of both signs as the max, masked columns, and a row
/// longer than one vector with a tail.
#[test]
fn softmax_matches_at_the_edges_of_exp() {
    let edges = [
        0.0f32,
        -87.0,
        -88.72283,
        -100.0,
        -103.97208,
        -103.972_09,
        -1.0e30,
        f32::NEG_INFINITY,
        80.0,
        88.72283,
        1.0,
        -0.5,
        3.0,
        -126.5,
        -149.0,
        2.0,
        -0.0,
        f32::MIN_POSITIVE,
    ];
    let n = edges.len();
    let mut rows = edges.to_vec();
    // Rows whose max is +inf or NaN: every exponential is NaN or 0.
    rows.extend(
        edges
            .iter()
            .map(|&x| if x == 1.0 { f32::INFINITY } else { x }),
    );
    rows.extend(edges.iter().map(|&x| if x == 3.0 { f32::NAN } else { x }));
    // The first (kept) column NaN: the max is NaN whatever follows.
    rows.extend(
        edges
            .iter()
            .enumerate()
            .map(|(c, &x)| if c == 0 { f32::NAN } else { x }),
    );
    // A max of +0.0 and -0.0 tied (every other value negative).
    rows.extend(edges.iter().map(|&x| if x == 0.0 { x } else { -x.abs() }));
    // -inf first, NaN after: the max stays -inf.
    rows.extend((0..edges.len()).map(|c| if c == 0 { f32::NEG_INFINITY } else { f32::NAN }));
    let mask: Vec<f32> = (0..n).map(|c| if c % 3 == 1 { 0.0 } else { 1.0 }).collect();
    for scale in [1.0f32, 0.125, 4.0] {
        for keep in [None, Some(&mask[..])] {
            let mut expected = vec![0.0; rows.len()];
            reference::softmax(&rows, keep, scale, n, &mut expected);
            for compute in computes() {
                let mut out = vec![f32::NAN; rows.len()];
                kernels::softmax(&rows, keep, scale, n, &mut out, compute);
                check_bits(&format!("softmax {scale} {compute:?}"), &expected, &out);
            }
        }
    }
}

#[test]
fn f16_conversion_is_exact() {
    for bits in 0..=u16::MAX {
        let sign = if bits & 0x8000 != 0 { -1.0f64 } else { 1.0 };
        let exponent = ((bits >> 10) & 0x1f) as i32;
        let mantissa = (bits & 0x3ff) as f64;
        let value = f16_bits_to_f32(bits);
        match exponent {
            0x1f if mantissa == 0.0 => assert_eq!(value as f64, sign * f64::INFINITY),
            0x1f => assert!(value.is_nan(), "{bits:#06x}"),
            0 => assert_eq!(
                value as f64,
                sign * mantissa * 2f64.powi(-24),
                "{bits:#06x}"
            ),
            _ => assert_eq!(
                value as f64,
                sign * (1.0 + mantissa / 1024.0) * 2f64.powi(exponent - 15),
                "{bits:#06x}"
            ),
        }
        if bits == 0x8000 {
            assert!(value.is_sign_negative());
        }
    }
}

#[test]
fn bf16_conversion_is_exact() {
    for bits in 0..=u16::MAX {
        let value = bf16_bits_to_f32(bits);
        assert_eq!(value.to_bits() >> 16, bits as u32);
        assert_eq!(value.to_bits() & 0xffff, 0);
    }
}

#[test]
fn rope_rotates_pairs_by_position() {
    // Position 0 is the identity; the norm of each pair is kept (to rounding).
    let x: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
    let mut out = vec![0.0; 16];
    reference::rope(&x, &[0, 5], 2, 4, 10000.0, &mut out);
    assert_eq!(&out[..8], &x[..8]);
    for h in 0..2 {
        for i in 0..2 {
            let at = 8 + h * 4;
            let before = x[at + i].hypot(x[at + i + 2]);
            let after = out[at + i].hypot(out[at + i + 2]);
            assert!((before - after).abs() < 1e-5 * before.max(1.0));
        }
    }
}

/// `ops::rope` reads its angles from a table kept per process and grown as later positions
/// are asked (positions past the table computed per call): the same bits as the reference,
/// in calls that grow the table, read it, and pass its end, for two head sizes and bases.
#[test]
fn rope_from_the_angle_table_equals_the_reference() {
    let calls: [&[u32]; 5] = [
        &[0, 1, 2],
        &[63, 64, 65, 200],
        &[5, 4095],
        &[4096, 9000],
        &[7, 3],
    ];
    for (heads, head_dim, base) in [(3, 64, 100_000.0f32), (2, 8, 10_000.0)] {
        let width = heads * head_dim;
        for positions in calls {
            let x: Vec<f32> = (0..positions.len() * width)
                .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
                .collect();
            let mut expected = vec![0.0; x.len()];
            reference::rope(&x, positions, heads, head_dim, base, &mut expected);
            let tensor = piazza_tensor::Tensor::from_vec(x, &[positions.len(), width]).unwrap();
            let got = piazza_tensor::ops::rope(&tensor, positions, heads, base).unwrap();
            let got = got.to_vec();
            assert!(
                got.iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{heads} × {head_dim}, positions {positions:?}"
            );
        }
    }
}

/// RoPE computes each pair's angle once per row and shares it across heads: every element
/// still equals the specification's per-element formula through `rope_angle`.
#[test]
fn rope_equals_the_per_element_formula() {
    let (heads, head_dim) = (3, 64);
    let width = heads * head_dim;
    let positions = [0u32, 1, 17, 300, 8191];
    let x: Vec<f32> = (0..positions.len() * width)
        .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    let mut out = vec![0.0; x.len()];
    reference::rope(&x, &positions, heads, head_dim, 100_000.0, &mut out);
    let half = head_dim / 2;
    for (t, &position) in positions.iter().enumerate() {
        for h in 0..heads {
            for i in 0..half {
                let at = t * width + h * head_dim;
                let (cos, sin) = reference::rope_angle(position, i, head_dim, 100_000.0);
                let (first, second) = (x[at + i], x[at + i + half]);
                assert_eq!(
                    out[at + i].to_bits(),
                    (first * cos - second * sin).to_bits()
                );
                assert_eq!(
                    out[at + i + half].to_bits(),
                    (second * cos + first * sin).to_bits()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Causal grouped-query attention over a KV cache (prefill: many rows at position 0;
    /// decode: one row after a cache).
    #[test]
    fn causal_attention_matches(
        (shape, q, k, v) in (1usize..12, 0usize..30, 1usize..4, 1usize..4, 1usize..10)
            .prop_flat_map(|(rows, first_position, kv_heads, group, half_dim)| {
                let shape = reference::CausalShape {
                    rows,
                    first_position,
                    heads: kv_heads * group,
                    kv_heads,
                    head_dim: half_dim * 2,
                };
                let kv = shape.keys() * kv_heads * shape.head_dim;
                (Just(shape), values(rows * shape.heads * shape.head_dim), values(kv), values(kv))
            })
    ) {
        check_causal_attention(shape, &q, &k, &v);
    }

    /// Decode over a longer cache (one row, up to ~300 positions: many full 16-position lane
    /// chunks and an odd tail), SmolLM2's head size and odd ones (a partial 16-column block).
    #[test]
    fn causal_attention_matches_long_caches(
        (shape, q, k, v) in (40usize..300, 1usize..3, 1usize..4, prop_oneof![Just(64usize), 1usize..40])
            .prop_flat_map(|(first_position, kv_heads, group, head_dim)| {
                let shape = reference::CausalShape {
                    rows: 1,
                    first_position,
                    heads: kv_heads * group,
                    kv_heads,
                    head_dim,
                };
                let kv = shape.keys() * kv_heads * shape.head_dim;
                (Just(shape), values(shape.heads * shape.head_dim), values(kv), values(kv))
            })
    ) {
        check_causal_attention(shape, &q, &k, &v);
    }

    /// Small products: `linear_by_columns` stays on the row-threaded kernel.
    #[test]
    fn linear_by_columns_matches_small(
        (m, n, k, x, w, activation) in (1usize..6, 1usize..80, 1usize..80).prop_flat_map(|(m, n, k)| {
            (Just(m), Just(n), Just(k), values(m * k), values(n * k), activations())
        })
    ) {
        check_linear_by_columns(m, n, k, &x, &w, activation);
    }
}

/// `kernels::causal_attention` gives the reference's bits on every thread count and ISA.
fn check_causal_attention(shape: reference::CausalShape, q: &[f32], k: &[f32], v: &[f32]) {
    let mut expected = vec![0.0f32; q.len()];
    reference::causal_attention(q, k, v, shape, &mut expected);
    for compute in computes() {
        let mut out = vec![0.0f32; q.len()];
        kernels::causal_attention(q, k, v, shape, &mut out, compute);
        check_bits(
            &format!("causal_attention {shape:?} {compute:?}"),
            &expected,
            &out,
        );
    }
}

/// Prefill-shaped calls (many query rows: the many-row path, whose keys are transposed per row
/// range) and decode, SmolLM2's 9 heads over 3 KV heads: head size 64 and odd ones (a partial
/// 16-lane chunk of each key, a partial column block), rows that leave a partial block of
/// positions, from position 0 and from a filled cache; every ISA and thread count.
#[test]
fn causal_attention_matches_prefill_shapes() {
    for head_dim in [64usize, 23, 5] {
        for rows in [1usize, 5, 17, 130] {
            for first_position in [0usize, 37] {
                let shape = reference::CausalShape {
                    rows,
                    first_position,
                    heads: 9,
                    kv_heads: 3,
                    head_dim,
                };
                let kv = shape.keys() * shape.kv_heads * head_dim;
                let seed = (head_dim * 1000 + rows * 10 + first_position) as u32;
                // Queries scaled down so the softmax spreads over many positions.
                let q: Vec<f32> = spread(rows * shape.heads * head_dim, seed)
                    .into_iter()
                    .map(|x| x * 0.05)
                    .collect();
                let (k, v) = (spread(kv, seed + 1), spread(kv, seed + 2));
                check_causal_attention(shape, &q, &k, &v);
            }
        }
    }
}

/// The many-row path's edges: a cache long enough that the scores are held a tile of rows at a
/// time (several tiles per call and per thread range), KV groups of more heads than one kernel
/// call takes at once (5 and 7 heads per KV head), and dots whose every product is `-0`
/// (queries of `+0` against negative keys, values of `-0`), where the reference's lanes, which
/// start at `+0`, end at `+0`.
#[test]
fn causal_attention_matches_on_many_row_edges() {
    let shapes = [
        (40, 3000, 2, 1, 8),
        (33, 0, 5, 1, 16),
        (21, 9, 14, 2, 24),
        (18, 40, 7, 1, 64),
    ];
    for (rows, first_position, heads, kv_heads, head_dim) in shapes {
        let shape = reference::CausalShape {
            rows,
            first_position,
            heads,
            kv_heads,
            head_dim,
        };
        let kv = shape.keys() * kv_heads * head_dim;
        let seed = (rows * 7 + heads) as u32;
        let q: Vec<f32> = spread(rows * heads * head_dim, seed)
            .into_iter()
            .map(|x| x * 0.05)
            .collect();
        check_causal_attention(shape, &q, &spread(kv, seed + 1), &spread(kv, seed + 2));
        // Every product `-0`: each score and each output a sum of `-0`s.
        let zeros = vec![0.0f32; q.len()];
        let negative = vec![-1.5f32; kv];
        check_causal_attention(shape, &zeros, &negative, &vec![-0.0f32; kv]);
        check_causal_attention(shape, &q, &spread(kv, seed + 3), &vec![-0.0f32; kv]);
    }
}

/// Each output is one [`reference::dot`] whichever way `linear_by_columns` splits the work.
fn check_linear_by_columns(
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    w: &[f32],
    activation: Activation,
) {
    let mut expected = vec![0.0f32; m * n];
    reference::linear(x, w, None, activation, m, n, k, &mut expected);
    for compute in computes() {
        let mut out = vec![0.0f32; m * n];
        kernels::linear_by_columns(x, w, m, n, k, activation, &mut out, compute);
        check_bits(
            &format!("linear_by_columns {m}x{n}x{k} {compute:?}"),
            &expected,
            &out,
        );
    }
}

/// `len` values spread over [-10, 10] by a multiplicative hash of the index and `seed`.
fn spread(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| {
            let h = i
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed)
                .rotate_left(13);
            (h % 20_001) as f32 / 1000.0 - 10.0
        })
        .collect()
}

/// Ops large enough to run on the thread pool (odd shapes, uneven row ranges) give the
/// reference's bits, and so one thread's, on 1, 2 and 4 threads, call after call on the same
/// pool.
#[test]
fn pooled_threads_give_the_bits_of_one_thread() {
    let (m, n, k) = (203, 77, 131);
    let (a, b, bias) = (spread(m * k, 3), spread(n * k, 4), spread(n, 5));
    let mut linear_expected = vec![0.0f32; m * n];
    reference::linear(
        &a,
        &b,
        Some(&bias),
        Activation::GeluErf,
        m,
        n,
        k,
        &mut linear_expected,
    );
    let (rows, cols) = (301, 37);
    let x = spread(rows * cols, 6);
    let mut softmax_expected = vec![0.0f32; x.len()];
    reference::softmax(&x, None, 0.3, cols, &mut softmax_expected);
    let shape = reference::CausalShape {
        rows: 37,
        first_position: 5,
        heads: 6,
        kv_heads: 2,
        head_dim: 24,
    };
    let q = spread(shape.rows * shape.heads * shape.head_dim, 7);
    let (kc, vc) = (
        spread(shape.keys() * 2 * 24, 8),
        spread(shape.keys() * 2 * 24, 9),
    );
    let mut causal_expected = vec![0.0f32; q.len()];
    reference::causal_attention(&q, &kc, &vc, shape, &mut causal_expected);
    for _round in 0..3 {
        for isa in Isa::available() {
            for threads in [1, 2, 4] {
                let compute = Compute {
                    threads: NonZeroUsize::new(threads).unwrap(),
                    isa,
                };
                let op = Linear {
                    b: &b,
                    bias: Some(&bias),
                    activation: Activation::GeluErf,
                    n,
                    k,
                };
                let mut out = vec![f32::NAN; m * n];
                kernels::linear(&op, &a, &mut out, compute);
                check_bits(&format!("linear {compute:?}"), &linear_expected, &out);
                let mut out = vec![f32::NAN; x.len()];
                kernels::softmax(&x, None, 0.3, cols, &mut out, compute);
                check_bits(&format!("softmax {compute:?}"), &softmax_expected, &out);
                let mut out = vec![f32::NAN; q.len()];
                kernels::causal_attention(&q, &kc, &vc, shape, &mut out, compute);
                check_bits(&format!("causal {compute:?}"), &causal_expected, &out);
            }
        }
    }
}

/// Products above `COLUMN_THREADS_WORK_MIN` with few rows, where threads split the output
/// columns (uneven splits included).
#[test]
fn linear_by_columns_matches_when_split_by_columns() {
    for (m, n, k) in [(1, 1031, 577), (2, 700, 389), (3, 515, 341)] {
        assert!(m * n * k >= kernels::COLUMN_THREADS_WORK_MIN);
        let (x, w) = (spread(m * k, 1), spread(n * k, 2));
        for activation in [Activation::Identity, Activation::Silu] {
            check_linear_by_columns(m, n, k, &x, &w, activation);
        }
    }
}

/// Matrix products are fused multiply-adds in `k` order: `(1 + 2⁻¹²)² - (1 + 2⁻¹¹)` is `2⁻²⁴`
/// with one rounding and `0` when the product is rounded first; every kernel gives `2⁻²⁴`.
#[test]
fn linear_fuses_multiply_add_in_k_order() {
    let e = 2.0f32.powi(-12);
    let a = [-(1.0 + 2.0 * e), 1.0 + e];
    let b = [1.0, 1.0 + e];
    // Step 0: acc = -(1 + 2⁻¹¹) exactly. Step 1: fma(1 + 2⁻¹², 1 + 2⁻¹², acc) = 2⁻²⁴ exactly.
    // Rounded first, the product 1 + 2⁻¹¹ + 2⁻²⁴ is a tie that goes to 1 + 2⁻¹¹: the sum is 0.
    let expected = 2.0f32.powi(-24);
    let mut reference_out = [0.0f32];
    reference::linear(
        &a,
        &b,
        None,
        Activation::Identity,
        1,
        1,
        2,
        &mut reference_out,
    );
    assert_eq!(reference_out[0].to_bits(), expected.to_bits());
    for compute in computes() {
        // 30 rows and 40 columns: full tiles, tails and several panels on every ISA.
        let (m, n) = (30, 40);
        let a_rows: Vec<f32> = a.iter().copied().cycle().take(m * 2).collect();
        let b_rows: Vec<f32> = b.iter().copied().cycle().take(n * 2).collect();
        let op = Linear {
            b: &b_rows,
            bias: None,
            activation: Activation::Identity,
            n,
            k: 2,
        };
        let mut out = vec![f32::NAN; m * n];
        kernels::linear(&op, &a_rows, &mut out, compute);
        check_bits(&format!("fma {compute:?}"), &vec![expected; m * n], &out);
    }
}

/// `k = 0`: every output is the epilogue of `+0.0` on every kernel.
#[test]
fn empty_products_are_the_epilogue_of_zero() {
    let bias = [1.5f32, -2.0, 0.25];
    let mut expected = [f32::NAN; 6];
    reference::linear(
        &[],
        &[],
        Some(&bias),
        Activation::GeluErf,
        2,
        3,
        0,
        &mut expected,
    );
    for compute in computes() {
        let op = Linear {
            b: &[],
            bias: Some(&bias),
            activation: Activation::GeluErf,
            n: 3,
            k: 0,
        };
        let mut out = [f32::NAN; 6];
        kernels::linear(&op, &[], &mut out, compute);
        check_bits(&format!("k = 0 {compute:?}"), &expected, &out);
    }
}

/// Distance in units in the last place between two finite non-negative floats (or equal ones).
fn ulp_distance(a: f32, b: f32) -> u32 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    a.to_bits().abs_diff(b.to_bits())
}

/// `reference::exp` against `libm::expf` on every 257th float of both signs up to ±104 (and the
/// special values): the largest error is printed and at most 2 ulp.
#[test]
fn exp_is_within_two_ulp_of_libm() {
    let mut worst = (0u32, 0.0f32);
    let limit = 104.0f32.to_bits();
    for magnitude in (0..=limit).step_by(257) {
        for sign in [0u32, 0x8000_0000] {
            let x = f32::from_bits(magnitude | sign);
            let distance = ulp_distance(reference::exp(x), libm::expf(x));
            if distance > worst.0 {
                worst = (distance, x);
            }
        }
    }
    for x in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        88.73,
        -104.0,
        1e30,
    ] {
        let distance = ulp_distance(reference::exp(x), libm::expf(x));
        assert!(
            distance <= 2,
            "exp({x}) = {} vs {}",
            reference::exp(x),
            libm::expf(x)
        );
    }
    println!("exp: max error {} ulp (at x = {:e})", worst.0, worst.1);
    assert!(worst.0 <= 2, "exp: {} ulp at {:e}", worst.0, worst.1);
}

/// Inputs at GELU's edges: signed zeros, subnormals, the normal extremes, the values where
/// `erf`'s `exp` underflows or `x·x` overflows, infinities and NaNs of both signs.
fn gelu_edge_inputs() -> Vec<f32> {
    let mut inputs = vec![
        0.0,
        -0.0,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::MIN_POSITIVE / 3.0,
        f32::MAX,
        f32::MIN,
        1e19,
        -1e19,
        1e20,
        -1e20,
        14.5,
        -14.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7fa0_0001), // a signalling NaN
    ];
    // A dense run through the range where erf changes, with a length that leaves tails for
    // every vector width.
    inputs.extend((0..203).map(|i| (i as f32 - 101.0) * 0.0625));
    inputs
}

/// GELU through the elementwise kernel and the matmul epilogue (an identity `b`, so the sums
/// are the inputs) equals `reference::gelu_erf` bit for bit on every ISA and thread count.
#[test]
fn gelu_equals_reference_at_the_edges() {
    let inputs = gelu_edge_inputs();
    let expected: Vec<f32> = inputs.iter().map(|&x| reference::gelu_erf(x)).collect();
    let n = inputs.len();
    // One row per input value (k = 1, b = [1.0]): each sum is `fma(x, 1, +0.0)` (`x`, with
    // `-0.0` made `+0.0` and NaNs quieted), then the bias-free GELU.
    let identity = [1.0f32];
    for compute in computes() {
        let mut out = vec![0.0f32; n];
        kernels::activation(&inputs, Activation::GeluErf, &mut out, n, compute);
        check_bits(&format!("activation {compute:?}"), &expected, &out);

        let op = Linear {
            b: &identity,
            bias: None,
            activation: Activation::GeluErf,
            n: 1,
            k: 1,
        };
        let mut out = vec![0.0f32; n];
        kernels::linear(&op, &inputs, &mut out, compute);
        let through_matmul: Vec<f32> = inputs
            .iter()
            .map(|&x| reference::gelu_erf(x.mul_add(1.0, 0.0)))
            .collect();
        check_bits(&format!("linear {compute:?}"), &through_matmul, &out);

        // A wide row (n = inputs), so the epilogue's vector loop and its tail both run.
        let op = Linear {
            b: &vec![1.0f32; n],
            bias: Some(&inputs),
            activation: Activation::GeluErf,
            n,
            k: 1,
        };
        let zero_row = [0.0f32; 3];
        let mut out = vec![0.0f32; 3 * n];
        kernels::linear(&op, &zero_row, &mut out, compute);
        let expected_row: Vec<f32> = inputs
            .iter()
            .map(|&x| reference::gelu_erf(0.0f32.mul_add(1.0, 0.0) + x))
            .collect();
        for row in out.chunks_exact(n) {
            check_bits(&format!("linear wide {compute:?}"), &expected_row, row);
        }
    }
}

/// `reference::erf` against `libm::erff`: every 4099th float of both signs (the whole f32
/// range) plus a dense run over [-8, 8]; the largest absolute error is printed and at most
/// `ERF_ABS_ERROR_MAX`. Infinities give ±1, NaN stays NaN, zeros keep their sign.
#[test]
fn erf_is_close_to_libm() {
    let mut worst = (0.0f32, 0.0f32);
    let mut check = |x: f32| {
        let (ours, libm) = (reference::erf(x), libm::erff(x));
        if x.is_nan() {
            assert!(ours.is_nan(), "erf(NaN) = {ours}");
            return;
        }
        let error = (ours - libm).abs();
        if error > worst.0 {
            worst = (error, x);
        }
    };
    for bits in (0..=u32::MAX).step_by(4099) {
        check(f32::from_bits(bits));
    }
    for i in -80_000..=80_000 {
        check(i as f32 * 1e-4);
    }
    for x in gelu_edge_inputs() {
        check(x);
    }
    assert_eq!(reference::erf(f32::INFINITY), 1.0);
    assert_eq!(reference::erf(f32::NEG_INFINITY), -1.0);
    assert!(reference::erf(0.0).is_sign_positive() && reference::erf(-0.0).is_sign_negative());
    println!("erf: max abs error {:e} (at x = {:e})", worst.0, worst.1);
    assert!(
        worst.0 <= reference::ERF_ABS_ERROR_MAX,
        "erf: {:e} at {:e}",
        worst.0,
        worst.1
    );
}

/// Attention over packed batches of odd sequence lengths (1, 7, 22, 3 and others) at head
/// widths of 16 and 32 (MiniLM's, whose rows the kernel copies as fixed-size moves), lengths
/// around a 16-lane vector (softmax rows with a tail) and several key panels, equals the
/// reference on every ISA and 1–4 threads (every batch here is above the threading floor).
#[test]
fn attention_matches_over_packed_odd_lengths() {
    let value = |i: usize| ((i * 7919 % 1013) as f32 - 506.0) * 0.013;
    let cases: [(usize, &[usize]); 6] = [
        (16, &[1, 7, 22, 3]),
        (32, &[1, 7, 22, 3]),
        (16, &[5, 22, 17, 1, 1]),
        (32, &[22, 19, 33]),
        (32, &[17, 0, 14]),
        // Several key panels and a partial value panel on every kernel width.
        (48, &[70, 3]),
    ];
    for (head_dim, lengths) in cases {
        let heads = 3;
        let len = lengths.iter().sum::<usize>() * heads * head_dim;
        let q: Vec<f32> = (0..len).map(value).collect();
        let k: Vec<f32> = (0..len).map(|i| value(i + 17)).collect();
        let v: Vec<f32> = (0..len).map(|i| value(i + 31)).collect();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut expected = vec![0.0; len];
        reference::attention(&q, &k, &v, lengths, heads, head_dim, scale, &mut expected);
        for compute in computes() {
            let mut out = vec![f32::NAN; len];
            let shape = AttentionShape {
                heads,
                head_dim,
                scale,
            };
            kernels::attention(&q, &k, &v, lengths, shape, &mut out, compute);
            check_bits(
                &format!("attention d={head_dim} lengths={lengths:?} {compute:?}"),
                &expected,
                &out,
            );
        }
    }
}

/// A sequence's attention and mean are the same bits alone as inside any packed batch: the
/// rows of the other sequences never enter them.
#[test]
fn packed_sequences_do_not_see_each_other() {
    let value = |i: usize| ((i * 104_729 % 2003) as f32 - 1001.0) * 0.007;
    let (heads, head_dim) = (2, 16);
    let width = heads * head_dim;
    let lengths = [7usize, 22, 1, 3];
    let rows: usize = lengths.iter().sum();
    let [q, k, v]: [Vec<f32>; 3] =
        [0, 5, 9].map(|shift| (0..rows * width).map(|i| value(i + shift)).collect());
    let shape = AttentionShape {
        heads,
        head_dim,
        scale: 0.25,
    };
    let compute = Compute::new(2);
    let mut batched = vec![0.0; rows * width];
    kernels::attention(&q, &k, &v, &lengths, shape, &mut batched, compute);
    let mut pooled = vec![0.0; lengths.len() * width];
    kernels::mean_pool(&q, &lengths, width, &mut pooled);
    let mut start = 0;
    for (b, &length) in lengths.iter().enumerate() {
        let range = start * width..(start + length) * width;
        let mut alone = vec![0.0; length * width];
        let (qs, ks, vs) = (&q[range.clone()], &k[range.clone()], &v[range.clone()]);
        kernels::attention(qs, ks, vs, &[length], shape, &mut alone, compute);
        check_bits("attention alone", &batched[range.clone()], &alone);
        let mut mean = vec![0.0; width];
        kernels::mean_pool(qs, &[length], width, &mut mean);
        check_bits("mean alone", &pooled[b * width..(b + 1) * width], &mean);
        start += length;
    }
}

/// The packed operators refuse sequence lengths that do not add up to the rows, with an
/// error (untrusted lengths never index past the data).
#[test]
fn packed_operators_refuse_lengths_that_do_not_add_up() {
    use piazza_tensor::{ops, Tensor};
    let x = Tensor::from_vec(vec![0.5; 6 * 4], &[6, 4]).unwrap();
    let compute = Compute::new(1);
    for lengths in [&[5usize][..], &[3, 4], &[], &[usize::MAX, 7]] {
        assert!(ops::attention(&x, &x, &x, lengths, 2, compute).is_err());
        assert!(ops::mean_pool(&x, lengths).is_err());
    }
    assert_eq!(
        ops::attention(&x, &x, &x, &[2, 4], 2, compute)
            .unwrap()
            .shape(),
        &[6, 4]
    );
    assert_eq!(ops::mean_pool(&x, &[2, 0, 4]).unwrap().shape(), &[3, 4]);
    assert!(ops::attention(&x, &x, &x, &[6], 3, compute).is_err());
}

/// SiLU's vectorised `expf` is `libm::expf` bit for bit: every 97th f32 bit pattern (each
/// exponent and sign, both sides of every branch of libm's `expf`: 2^-14, 0.5 ln 2, 1.5 ln 2,
/// 87.3, 88.7, 104, infinities and NaNs), plus those edges' neighbours, on every ISA.
#[test]
fn silu_matches_libm_expf_over_a_sweep_of_bit_patterns() {
    const STRIDE: usize = 97;
    let edges = [
        0x3900_0000u32,
        0x3eb1_7218,
        0x3f85_1592,
        0x42ae_ac50,
        0x42b1_7218,
        0x42cf_f1b5,
        0x7f80_0000,
        0x7fc0_0000,
        0,
    ];
    let mut x: Vec<f32> = (0..=u32::MAX as usize)
        .step_by(STRIDE)
        .map(|bits| f32::from_bits(bits as u32))
        .collect();
    for edge in edges {
        for sign in [0, 0x8000_0000u32] {
            for delta in 0..3u32 {
                x.push(f32::from_bits((edge | sign).wrapping_add(delta)));
                x.push(f32::from_bits((edge | sign).wrapping_sub(delta)));
            }
        }
    }
    let mut expected = vec![0.0f32; x.len()];
    reference::activation(&x, Activation::Silu, &mut expected);
    for isa in Isa::available() {
        let compute = Compute {
            threads: NonZeroUsize::MIN,
            isa,
        };
        let mut out = vec![0.0f32; x.len()];
        kernels::activation(&x, Activation::Silu, &mut out, x.len(), compute);
        let mismatches = expected
            .iter()
            .zip(&out)
            .filter(|(e, o)| e.to_bits() != o.to_bits())
            .count();
        assert_eq!(mismatches, 0, "{isa:?}: {mismatches} of {} differ", x.len());
    }
}

/// A long `a` runs through the panels a block of rows at a time (256 KiB of `a` each: 32 rows
/// of 2048 here, so 100 rows make three whole blocks and a short one), with whole and partial
/// panels, a bias and each activation: the reference's bits on every instruction set and
/// thread count, every output written.
#[test]
fn linear_matches_over_blocks_of_rows() {
    let (m, n, k) = (100, 70, 2048);
    let (a, b, bias) = (spread(m * k, 6), spread(n * k, 7), spread(n, 8));
    for activation in [Activation::Identity, Activation::GeluErf, Activation::Silu] {
        let mut expected = vec![0.0f32; m * n];
        reference::linear(&a, &b, Some(&bias), activation, m, n, k, &mut expected);
        let op = Linear {
            b: &b,
            bias: Some(&bias),
            activation,
            n,
            k,
        };
        for compute in computes() {
            let mut out = vec![f32::NAN; m * n];
            kernels::linear(&op, &a, &mut out, compute);
            check_bits(
                &format!("linear {activation:?} {compute:?}"),
                &expected,
                &out,
            );
        }
    }
}

//! Hostile GGUF files: truncations and corruptions give errors, never panics.

mod common;

use piazza_llm::gguf::{dequantize, GgmlType, Gguf};
use piazza_llm::{Compute, GenerateParams, Generator, NumericProfile};
use proptest::prelude::*;

use common::writer;

/// Parse, and when that succeeds, build the generator and run two tokens: nothing may panic.
fn exercise(bytes: Vec<u8>) -> bool {
    let Ok(file) = Gguf::parse(bytes) else {
        return false;
    };
    for name in file.tensors().keys() {
        let _ = file.tensor_f32(name);
    }
    for profile in [NumericProfile::F32, NumericProfile::Quantized] {
        if let Ok(generator) = Generator::from_gguf_with(&file, profile) {
            if let Ok(ids) = generator.tokenize("hello world") {
                let _ = generator.generate(&ids, &GenerateParams::greedy(2), 1, |_| {});
            }
        }
    }
    true
}

#[test]
fn tiny_model_in_the_quantized_profile_reexecutes_every_step_from_committed_weights() {
    // Its matrices are Q4_0, Q4_1, Q8_0, F16 and F32: every block format and the f32 fallback.
    let file = Gguf::parse(writer::tiny_llama()).unwrap();
    let generator = Generator::from_gguf_with(&file, NumericProfile::Quantized).unwrap();
    assert!(generator.quantized_matrix("blk.0.attn_q.weight").is_some());
    assert!(generator
        .quantized_matrix("blk.0.ffn_down.weight")
        .is_none());
    let ids = generator.tokenize("hello world").unwrap();
    let (generation, recording) = generator
        .generate_recorded(&ids, &GenerateParams::greedy(3), Compute::new(2))
        .unwrap();
    let f32_run = Generator::from_gguf(&file)
        .unwrap()
        .generate(&ids, &GenerateParams::greedy(3), 1, |_| {})
        .unwrap();
    assert_ne!(f32_run.trace_root(), generation.trace_root());
    for (index, step) in recording.graph.steps.iter().enumerate() {
        let name = &recording.graph.ops[step.op].name;
        assert!(
            common::step_from_committed_weights(&generator, &recording, &generation, index),
            "{name}"
        );
    }
    let weights = generator.weights();
    assert_eq!(generator.weight_commitment().root, weights.commit().root);
}

#[test]
fn tiny_model_loads_and_generates() {
    let file = Gguf::parse(writer::tiny_llama()).unwrap();
    let generator = Generator::from_gguf(&file).unwrap();
    let ids = generator.tokenize("hello world").unwrap();
    // "he" + "ll" merge to "hell", then "o", then "Ġw" + "orld" bytes.
    assert_eq!(generator.tokenizer().decode(&ids), "hello world");
    assert_eq!(ids[0], 258 + 2, "merged token 'hell'");
    let generation = generator
        .generate(&ids, &GenerateParams::greedy(4), 1, |_| {})
        .unwrap();
    assert!(!generation.ids.is_empty());
}

#[test]
fn truncations_of_the_tiny_model_are_errors() {
    let bytes = writer::tiny_llama();
    for len in 0..bytes.len() {
        // Every prefix misses data some tensor needs, so none may parse.
        assert!(
            Gguf::parse(bytes[..len].to_vec()).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
}

#[test]
fn truncations_of_the_real_header_are_errors() {
    let path = piazza_llm::default_model_path();
    assert!(
        path.exists(),
        "{} missing: run `bash scripts/fetch-models.sh`",
        path.display()
    );
    // Only the header region (≈ 1.8 MB) is needed.
    let mut header = vec![0u8; 2 << 20];
    use std::io::Read;
    let read = std::fs::File::open(&path)
        .unwrap()
        .read(&mut header)
        .unwrap();
    header.truncate(read);
    let mut len = 0usize;
    while len < header.len() {
        let error = Gguf::parse(header[..len].to_vec()).expect_err("a header prefix parsed");
        assert!(!error.to_string().is_empty());
        len = len * 2 + 1;
        if len > 4096 {
            len += 65_521; // a prime stride through the rest
        }
    }
}

#[test]
fn errors_name_what_is_wrong() {
    let mut bytes = writer::tiny_llama();
    bytes[0] = b'X';
    assert!(Gguf::parse(bytes)
        .unwrap_err()
        .to_string()
        .contains("magic"));
    let mut bytes = writer::tiny_llama();
    bytes[4] = 2;
    assert!(Gguf::parse(bytes)
        .unwrap_err()
        .to_string()
        .contains("version 2"));
    let mut bytes = writer::tiny_llama();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(Gguf::parse(bytes)
        .unwrap_err()
        .to_string()
        .contains("tensor count"));
    let mut bytes = writer::tiny_llama();
    bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(Gguf::parse(bytes)
        .unwrap_err()
        .to_string()
        .contains("metadata entry count"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_tiny_models_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
    ) {
        let mut bytes = writer::tiny_llama();
        let len = bytes.len();
        for (at, value) in edits {
            bytes[at.index(len)] = value;
        }
        exercise(bytes);
    }

    #[test]
    fn corrupted_length_fields_never_panic(at in 0usize..4096, value in any::<u64>()) {
        let mut bytes = writer::tiny_llama();
        let at = at.min(bytes.len() - 8);
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        exercise(bytes);
    }

    /// Q4_1 is `d * q + m` with one rounding: the product of an f16 scale and a 4-bit integer is
    /// exact in f32, so the result is the f64 product rounded after adding m.
    #[test]
    fn q4_1_is_one_rounded_addition(block in proptest::collection::vec(any::<u8>(), 20)) {
        let mut out = [0.0f32; 32];
        dequantize(GgmlType::Q4_1, &block, &mut out);
        let d = piazza_tensor::f16_bits_to_f32(u16::from_le_bytes([block[0], block[1]]));
        let m = piazza_tensor::f16_bits_to_f32(u16::from_le_bytes([block[2], block[3]]));
        for j in 0..32 {
            let q = if j < 16 { block[4 + j] & 0x0f } else { block[4 + j - 16] >> 4 };
            let exact = d as f64 * q as f64;
            prop_assert!(exact.is_nan() || exact as f32 as f64 == exact);
            let expected = ((exact as f32) + m).to_bits();
            prop_assert_eq!(out[j].to_bits(), expected);
        }
    }
}

#[test]
fn a_cancelled_generation_stops_at_the_next_token() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let file = Gguf::parse(writer::tiny_llama()).unwrap();
    let generator = Generator::from_gguf(&file).unwrap();
    let ids = generator.tokenize("hello world").unwrap();
    let mut params = GenerateParams::greedy(16);
    params.stop_at_eos = false;
    let cancel = AtomicBool::new(false);
    let mut seen = 0;
    let result = generator.generate_until(
        &ids,
        &params,
        1,
        |_| {
            seen += 1;
            if seen == 3 {
                cancel.store(true, Ordering::Relaxed);
            }
        },
        &cancel,
    );
    match result {
        Err(piazza_llm::Error::Cancelled { tokens }) => assert_eq!(tokens, 3),
        other => panic!("expected a cancellation, got {other:?}"),
    }
    // Without the flag, the same run goes on to its limit.
    let full = generator
        .generate_until(&ids, &params, 1, |_| {}, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(full.ids.len(), 16);
}

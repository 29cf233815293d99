//! MiniLM against sentence-transformers' reference outputs (tests/fixtures/minilm_reference.json).

mod common;

use piazza_engine::{Batch, Compute};

/// Largest per-component difference allowed, and smallest cosine similarity.
const COMPONENT_TOLERANCE: f32 = 1e-5;
const COSINE_MIN: f64 = 0.99999;

fn check_close(case: &str, expected: &[f32], got: &[f32]) {
    assert_eq!(expected.len(), got.len(), "{case}: dimension");
    let worst = expected
        .iter()
        .zip(got)
        .map(|(e, g)| (e - g).abs())
        .fold(0.0f32, f32::max);
    let dot: f64 = expected
        .iter()
        .zip(got)
        .map(|(&e, &g)| e as f64 * g as f64)
        .sum();
    let norm = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let cosine = dot / (norm(expected) * norm(got));
    assert!(
        worst < COMPONENT_TOLERANCE,
        "{case}: component difference {worst:e}"
    );
    assert!(cosine >= COSINE_MIN, "{case}: cosine {cosine}");
    eprintln!("{case}: max component difference {worst:.2e}, cosine {cosine:.9}");
}

#[test]
fn token_ids_match_reference() {
    let reference = common::reference();
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let ids = common::minilm().tokenize(&texts).unwrap();
    for (case, (got, expected)) in ids.iter().zip(&reference.input_ids).enumerate() {
        assert_eq!(got, expected, "case {case}: {:?}", texts[case]);
    }
}

#[test]
fn embeddings_match_reference_alone_and_batched() {
    let reference = common::reference();
    let embedder = common::minilm();
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let ids = embedder.tokenize(&texts).unwrap();
    let compute = Compute::new(2);

    let mut alone = Vec::new();
    for (case, sequence) in ids.iter().enumerate() {
        let output = embedder
            .run(
                &Batch::pack(std::slice::from_ref(sequence)).unwrap(),
                compute,
            )
            .unwrap();
        check_close(
            &format!("case {case} alone"),
            &reference.embeddings[case],
            &output.to_vec(),
        );
        alone.push(output.to_vec());
    }
    // Batches of 4 (sentence-transformers ran them padded; ours are packed).
    for (group_index, group) in ids.chunks(4).enumerate() {
        let output = embedder
            .run(&Batch::pack(group).unwrap(), compute)
            .unwrap()
            .to_vec();
        for (offset, got) in output.chunks_exact(embedder.dimension()).enumerate() {
            let case = group_index * 4 + offset;
            check_close(
                &format!("case {case} batched"),
                &reference.embeddings[case],
                got,
            );
            // Batching changes no bit of a sentence's embedding.
            let same_bits = got
                .iter()
                .zip(&alone[case])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same_bits, "case {case}: batched differs from alone");
        }
    }
}

#[test]
fn embed_api_matches_reference() {
    let reference = common::reference();
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let vectors = common::minilm().embed(&texts, 1).unwrap();
    for (case, got) in vectors.iter().enumerate() {
        check_close(
            &format!("case {case} embed"),
            &reference.embeddings[case],
            got,
        );
    }
}

//! Reproducibility of traces and single-step re-execution on a real MiniLM run.

mod common;

use piazza_engine::trace::tensor_step_hash;
use piazza_engine::weights::WeightCommitment;
use piazza_engine::{Batch, Compute, Trace};
use piazza_tensor::Isa;

const TEXTS: [&str; 5] = [
    "Verifiable inference needs the same bits everywhere.",
    "Hello world",
    "",
    "Ünïcödé, emoji 🚀 and CJK 去中心化.",
    "A somewhat longer sentence, so that the batch has sequences of unequal lengths and more than one row block of tokens to hash.",
];

fn computes() -> Vec<Compute> {
    let mut all = Vec::new();
    for isa in Isa::available() {
        for threads in [1, 2, 4] {
            all.push(Compute {
                threads: std::num::NonZeroUsize::new(threads).unwrap(),
                isa,
            });
        }
    }
    all
}

#[test]
fn trace_root_is_independent_of_threads_and_isa() {
    let embedder = common::minilm();
    let ids = embedder.tokenize(&TEXTS).unwrap();
    let batched = Batch::pack(&ids).unwrap();
    let alone = Batch::pack(&ids[4..5]).unwrap();
    for batch in [&batched, &alone] {
        let (first_output, first_trace) = embedder.run_traced(batch, Compute::new(1)).unwrap();
        let untraced = embedder.run(batch, Compute::new(1)).unwrap();
        assert!(
            first_output.bits_eq(&untraced),
            "tracing changed the output"
        );
        assert_eq!(
            first_trace.step_hashes.len(),
            embedder.graph(&batch.lengths).unwrap().steps.len()
        );
        for compute in computes() {
            let (output, trace) = embedder.run_traced(batch, compute).unwrap();
            assert!(output.bits_eq(&first_output), "{compute:?}: output differs");
            assert_eq!(trace, first_trace, "{compute:?}: trace differs");
        }
    }
    // Different inputs give different roots.
    let (_, batched_trace) = embedder.run_traced(&batched, Compute::new(2)).unwrap();
    let (_, alone_trace) = embedder.run_traced(&alone, Compute::new(2)).unwrap();
    assert_ne!(batched_trace.root, alone_trace.root);
}

/// A packed batch holds real tokens only: row-wise ops run over the sum of the lengths,
/// attention and pooling have one step per sequence, and one sequence of `n` tokens gives
/// the unbatched graph.
#[test]
fn packed_batch_computes_real_tokens_only() {
    let embedder = common::minilm();
    let ids = embedder.tokenize(&TEXTS).unwrap();
    let batch = Batch::pack(&ids).unwrap();
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    assert_eq!(batch.lengths, lengths);
    assert_eq!(batch.rows(), lengths.iter().sum::<usize>());
    assert!(batch.rows() < ids.len() * lengths.iter().max().unwrap());
    let graph = embedder.graph(&batch.lengths).unwrap();
    for op in &graph.ops {
        let expected = match op.kind {
            piazza_engine::OpKind::MeanPool { .. } | piazza_engine::OpKind::L2Normalize => {
                ids.len()
            }
            _ => batch.rows(),
        };
        assert_eq!(op.output_shape[0], expected, "{}", op.name);
        let steps = graph.steps.iter().filter(|step| graph.ops[step.op] == *op);
        if let piazza_engine::OpKind::Attention { .. } = op.kind {
            let rows: Vec<usize> = steps.map(|step| step.rows.len()).collect();
            assert_eq!(rows, lengths, "{}", op.name);
        }
    }
    // Alone, one sequence's graph has one attention step per layer and 64-row blocks.
    let alone = embedder.graph(&lengths[4..5]).unwrap();
    assert_eq!(alone.sequences.count(), 1);
    let per_op = |graph: &piazza_engine::Graph, name: &str| {
        let op = graph.ops.iter().position(|op| op.name == name).unwrap();
        graph.steps.iter().filter(|step| step.op == op).count()
    };
    assert_eq!(per_op(&alone, "encoder.layer.0.attention.self"), 1);
    assert_eq!(
        per_op(&alone, "encoder.layer.0.intermediate.dense"),
        lengths[4].div_ceil(64)
    );
}

/// Untrusted batches give errors: no sequence, an empty sequence, an id not exact in f32,
/// a sequence past the position table, token ids that do not match the lengths.
#[test]
fn bad_batches_are_errors() {
    let embedder = common::minilm();
    assert!(Batch::pack(&[]).is_err());
    assert!(Batch::pack(&[vec![101, 102], vec![]]).is_err());
    assert!(Batch::pack(&[vec![101, 1 << 24]]).is_err());
    let too_long = Batch::pack(&[vec![101; piazza_engine::MAX_TOKENS + 1]]).unwrap();
    assert!(embedder.run(&too_long, Compute::new(1)).is_err());
    let mut mismatched = Batch::pack(&[vec![101, 7592, 102], vec![101, 102]]).unwrap();
    mismatched.lengths = vec![3, 3];
    assert!(embedder.run(&mismatched, Compute::new(1)).is_err());
    mismatched.lengths = vec![5, 0];
    assert!(embedder.run(&mismatched, Compute::new(1)).is_err());
    mismatched.lengths = vec![];
    assert!(embedder.run(&mismatched, Compute::new(1)).is_err());
    assert!(embedder.graph(&[]).is_err());
    assert!(embedder.graph(&[3, 0]).is_err());
    assert!(embedder.graph(&[usize::MAX, 2]).is_err());
    let outside = Batch::pack(&[vec![101, 1 << 23, 102]]).unwrap();
    assert!(embedder.run(&outside, Compute::new(1)).is_err());
}

#[test]
fn every_step_reexecutes_to_its_hash() {
    let embedder = common::minilm();
    let ids = embedder.tokenize(&TEXTS).unwrap();
    let batch = Batch::pack(&ids).unwrap();
    let recording = embedder.run_recorded(&batch, Compute::new(2)).unwrap();
    let (_, traced) = embedder.run_traced(&batch, Compute::new(2)).unwrap();
    assert_eq!(recording.trace, traced);
    let step_count = recording.graph.steps.len() as u64;
    for index in 0..recording.graph.steps.len() {
        let inputs = recording.step_inputs(&batch, index).unwrap();
        let output = embedder
            .execute_step(&recording.graph, index, &inputs)
            .unwrap();
        let leaf = tensor_step_hash(index, &output);
        assert_eq!(leaf, recording.trace.step_hashes[index], "step {index}");
        let proof = recording.trace.proof(index).unwrap();
        assert!(Trace::verify(
            &recording.trace.root,
            step_count,
            index as u64,
            &leaf,
            &proof
        ));
        // A perturbed input changes the step's hash. Row 0 of every step's first input is a
        // real token ([CLS] for sequence-wise steps), which every op reads.
        if let Some(first) = inputs.first() {
            let mut values = first.to_vec();
            values[0] = values[0] * 1.5 + 1.0;
            let mut tampered = inputs.clone();
            tampered[0] = piazza_engine::Tensor::from_vec(values, first.shape()).unwrap();
            if let Ok(output) = embedder.execute_step(&recording.graph, index, &tampered) {
                assert_ne!(
                    tensor_step_hash(index, &output),
                    leaf,
                    "step {index} ignores its input"
                );
            }
        }
    }
    // Each step stays within a few MiB of activation input.
    for (index, step) in recording.graph.steps.iter().enumerate() {
        let bytes: usize = recording
            .step_inputs(&batch, index)
            .unwrap()
            .iter()
            .map(|t| t.element_count() * 4)
            .sum();
        assert!(
            bytes <= 4 << 20,
            "step {index} ({:?}) reads {bytes} bytes",
            step
        );
    }
}

#[test]
fn weight_slices_are_provable() {
    let embedder = common::minilm();
    let commitment = embedder.weight_commitment();
    assert_eq!(commitment.root, embedder.weights_commitment());
    let chunk_count = commitment.chunk_leaves.len() as u64;
    let name = "encoder.layer.3.intermediate.dense.weight";
    let tensor = embedder.weights().tensor(name).unwrap().to_vec();
    for elements in [
        0..1,
        1000..1384,
        100_000..140_000,
        tensor.len() - 10..tensor.len(),
    ] {
        let proofs = embedder
            .weights()
            .prove_slice(commitment, name, elements.clone())
            .unwrap();
        let bytes = commitment.byte_range(name, elements.clone()).unwrap();
        let values = WeightCommitment::verify_slice(
            &commitment.chunk_root,
            chunk_count,
            bytes.clone(),
            &proofs,
        )
        .expect("valid proof");
        assert_eq!(values, tensor[elements.clone()]);
        let mut forged = proofs.clone();
        forged[0].bytes[0] ^= 1;
        assert!(WeightCommitment::verify_slice(
            &commitment.chunk_root,
            chunk_count,
            bytes,
            &forged
        )
        .is_none());
    }
}

#[test]
fn tokenizer_hash_is_blake3_of_the_file() {
    let bytes = std::fs::read(common::minilm_dir().join("tokenizer.json")).unwrap();
    assert_eq!(
        common::minilm().tokenizer_hash(),
        *blake3::hash(&bytes).as_bytes()
    );
}

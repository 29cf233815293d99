//! The trace: identical across thread counts; every sampled step re-executes to its leaf.

mod common;

use std::sync::OnceLock;

use piazza_llm::{Compute, GenerateParams, Generation, Generator, OpKind, Recording};

/// A prompt longer than one row block (64), so prefill ops have several steps.
const PROMPT: &str = "Decentralized compute networks let anyone rent out spare machines to run \
    models for others. The hard part is trust: how does the client know that the provider \
    really ran the model it paid for, and did not return something cheaper instead? One answer \
    is to make every operator deterministic, so that anyone can check any result by re-running \
    the one operator on which a provider and a challenger disagree.";
const NEW_TOKENS: usize = 4;

fn recorded() -> &'static (Vec<u32>, Generation, Recording) {
    static RUN: OnceLock<(Vec<u32>, Generation, Recording)> = OnceLock::new();
    RUN.get_or_init(|| {
        let generator = common::generator();
        let prompt = generator.tokenize(PROMPT).unwrap();
        assert!(prompt.len() > 64, "prompt has {} tokens", prompt.len());
        let (generation, recording) = generator
            .generate_recorded(
                &prompt,
                &GenerateParams::greedy(NEW_TOKENS),
                Compute::new(1),
            )
            .unwrap();
        (prompt, generation, recording)
    })
}

#[test]
fn trace_is_identical_across_thread_counts() {
    let (prompt, reference, _) = recorded();
    assert_eq!(reference.ids.len(), NEW_TOKENS);
    for threads in [2, 4] {
        let generation = common::generator()
            .generate(prompt, &GenerateParams::greedy(NEW_TOKENS), threads, |_| {})
            .unwrap();
        assert_eq!(generation.ids, reference.ids, "{threads} threads");
        assert_eq!(
            generation.trace.step_hashes, reference.trace.step_hashes,
            "{threads} threads"
        );
        assert_eq!(generation.trace_root(), reference.trace_root());
    }
}

/// Re-execute `index` alone and compare with its leaf; a changed input must change the hash.
fn check_step(generator: &Generator, recording: &Recording, generation: &Generation, index: usize) {
    let inputs = recording.step_inputs(index).unwrap();
    let output = generator
        .execute_step(&recording.graph, index, &inputs)
        .unwrap();
    let op = &recording.graph.ops[recording.graph.steps[index].op];
    assert_eq!(
        Generator::step_leaf(index, &output),
        generation.trace.step_hashes[index],
        "step {index} ({})",
        op.name
    );
    // Tamper with the first activation input: a different result (or a refused input).
    let mut tampered = inputs.clone();
    let mut values = tampered[0].to_vec();
    let at = values.len() / 2;
    values[at] = if matches!(op.kind, OpKind::Embed | OpKind::Sample { .. }) {
        values[at] + 1.0
    } else {
        values[at] * 2.0 + 1.0
    };
    tampered[0] = piazza_llm::Tensor::from_vec(values, tampered[0].shape()).unwrap();
    if let Ok(other) = generator.execute_step(&recording.graph, index, &tampered) {
        if !matches!(op.kind, OpKind::Sample { .. }) {
            assert_ne!(
                Generator::step_leaf(index, &other),
                generation.trace.step_hashes[index],
                "{}",
                op.name
            );
        }
    }
}

#[test]
fn prefill_and_decode_steps_reexecute_to_their_leaves() {
    let (_, generation, recording) = recorded();
    let generator = common::generator();
    let graph = &recording.graph;
    assert_eq!(graph.steps.len(), generation.step_count());
    assert_eq!(graph.pass_starts.len(), NEW_TOKENS);
    let layers = generator.config().layers;
    let mut checked = 0;
    for (index, step) in graph.steps.iter().enumerate() {
        let op = &graph.ops[step.op];
        let pass = graph.pass_starts.partition_point(|&start| start <= step.op) - 1;
        let in_sampled_layer = [0, layers / 2, layers - 1]
            .iter()
            .any(|l| op.name.contains(&format!(".blk.{l}.")));
        let outside_layers = !op.name.contains(".blk.");
        // Every step of layers 0, middle and last, and the head, in the prefill and in the last
        // decode pass (whose attention reads the KV cache of every earlier pass).
        if (pass == 0 || pass == NEW_TOKENS - 1) && (in_sampled_layer || outside_layers) {
            check_step(generator, recording, generation, index);
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} steps checked");
    // A verifier rebuilds the same graph from the job's parameters alone.
    let rebuilt = generator.generation_graph(
        recording.prompt.len(),
        NEW_TOKENS,
        &GenerateParams::greedy(NEW_TOKENS).sampling,
    );
    assert_eq!(&rebuilt, graph);
    // Attention steps are one KV head each.
    let attention = graph
        .ops
        .iter()
        .position(|op| op.name.ends_with("attention"))
        .unwrap();
    let heads = graph
        .steps
        .iter()
        .filter(|s| s.op == attention && s.rows.start == 0)
        .count();
    assert_eq!(heads, generator.config().kv_heads);
    // The prefill was cut: some op has several row blocks, the logits several column blocks.
    assert!(graph.steps.iter().any(|s| s.rows.start == 64));
    assert!(graph.steps.iter().any(|s| s.columns.start > 0));
}

#[test]
fn a_step_with_wrong_input_shapes_is_an_error() {
    let (_, _, recording) = recorded();
    let generator = common::generator();
    for index in [0, 5, 9, recording.graph.steps.len() - 1] {
        let mut inputs = recording.step_inputs(index).unwrap();
        let shape = inputs[0].shape().to_vec();
        inputs[0] = piazza_llm::Tensor::zeros(&[shape[0] + 1, shape[1]]).unwrap();
        assert!(generator
            .execute_step(&recording.graph, index, &inputs)
            .is_err());
        assert!(generator
            .execute_step(&recording.graph, index, &[])
            .is_err());
    }
    assert!(generator
        .execute_step(&recording.graph, usize::MAX, &[])
        .is_err());
}

//! Both models keep piazza-trace's step re-execution contract (`StepExecutor`), checked by one
//! generic helper: a step recomputed from its recorded inputs alone hashes to the run's leaf.

mod common;

use piazza_arbiter::LoadedModel;
use piazza_engine::Batch;
use piazza_llm::GenerateParams;
use piazza_tensor::{Compute, Tensor};
use piazza_trace::graph::StepExecutor;
use piazza_trace::Hash;

/// Every `stride`-th step (and the last) of a run with `leaves`, re-executed from `inputs`.
fn check<E>(
    executor: &E,
    graph: &E::Graph,
    leaves: &[Hash],
    stride: usize,
    inputs: impl Fn(usize) -> Vec<Tensor>,
) where
    E: StepExecutor<Block = Tensor>,
    E::Error: std::fmt::Debug,
{
    let last = leaves.len() - 1;
    let mut checked = 0;
    for step in (0..leaves.len()).step_by(stride).chain([last]) {
        let output = executor.execute_step(graph, step, &inputs(step)).unwrap();
        assert_eq!(
            executor.step_leaf(step, &output),
            leaves[step],
            "step {step}"
        );
        checked += 1;
    }
    assert!(checked >= 2);
}

#[test]
fn the_embedder_keeps_the_step_contract() {
    let LoadedModel::Embedding(embedder) = &common::minilm().loaded else {
        panic!("minilm is an embedding model");
    };
    let ids = embedder
        .tokenize(&["Steps replay from their inputs alone.", "Hi"])
        .unwrap();
    let batch = Batch::pack(&ids).unwrap();
    let recording = embedder.run_recorded(&batch, Compute::new(2)).unwrap();
    check(
        embedder.as_ref(),
        &recording.graph,
        &recording.trace.step_hashes,
        7,
        |step| recording.step_inputs(&batch, step).unwrap(),
    );
}

#[test]
fn the_generator_keeps_the_step_contract() {
    let LoadedModel::Generation(generator) = &common::smollm2().loaded else {
        panic!("smollm2 is a generation model");
    };
    let prompt = generator.tokenize("One two three").unwrap();
    let (generation, recording) = generator
        .generate_recorded(&prompt, &GenerateParams::greedy(3), Compute::new(2))
        .unwrap();
    check(
        generator.as_ref(),
        &recording.graph,
        &generation.trace.step_hashes,
        97,
        |step| recording.step_inputs(step).unwrap(),
    );
}

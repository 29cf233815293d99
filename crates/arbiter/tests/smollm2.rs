//! Arbitration of SmolLM2 (Llama) generation steps, with the real model: prefill and decode
//! passes, the KV cache, the LM head and sampling.

mod common;

use common::{chat_job, check_step, claim, smollm2, smollm2_quantized, Model};
use piazza_arbiter::{
    arbitrate, generate_params, run_job, ArbiterError, JobRun, JobSpec, LoadedModel,
};
use piazza_llm::OpKind;

const PROMPT: &str = "Write a short poem about the sea and the wind.";
const NEW_TOKENS: u32 = 7;

fn generator(model: &Model) -> &piazza_llm::Generator {
    match &model.loaded {
        LoadedModel::Generation(generator) => generator,
        LoadedModel::Embedding(_) => unreachable!("smollm2 is a generation model"),
    }
}

fn graph(model: &Model, job: &JobSpec, run: &JobRun) -> piazza_llm::Graph {
    generator(model).generation_graph(
        run.ids.len(),
        run.work_units as usize,
        &generate_params(job).sampling,
    )
}

/// First and last steps, the first step of each op kind in pass 0, and in a later pass: the
/// embedding (of the previous sample), attention over the KV cache, the LM head, the sample.
fn spread(model: &Model, job: &JobSpec, run: &JobRun) -> Vec<u64> {
    let graph = graph(model, job, run);
    assert_eq!(graph.steps.len() as u64, run.step_count());
    let mut steps = vec![0, run.step_count() - 1];
    let later_pass = graph.pass_starts[graph.pass_starts.len() - 2];
    let mut kinds: Vec<(bool, std::mem::Discriminant<OpKind>)> = Vec::new();
    for (index, step) in graph.steps.iter().enumerate() {
        let pass = if step.op < graph.pass_starts[1] {
            Some(false)
        } else if step.op >= later_pass {
            Some(true)
        } else {
            None
        };
        let Some(later) = pass else { continue };
        let kind = (later, std::mem::discriminant(&graph.ops[step.op].kind));
        if !kinds.contains(&kind) {
            kinds.push(kind);
            steps.push(index as u64);
        }
    }
    // Column blocks that do not start at 0 (the LM head's last block, the gated FFN's and the
    // FFN residual's, which reads the same columns of its residual input) and an attention
    // step of a KV head other than the first in a later pass.
    let op_of = |name: &str| graph.ops.iter().position(|op| op.name == name).unwrap();
    let pass = graph.pass_starts.len() - 2;
    for name in ["logits", "blk.29.ffn_gated", "blk.29.ffn_residual"] {
        let op = op_of(&format!("pass{pass}.{name}"));
        let last = graph.steps.iter().rposition(|s| s.op == op).unwrap();
        assert_ne!(
            graph.steps[last].columns.start, 0,
            "{name} has one column block"
        );
        steps.push(last as u64);
    }
    let attention = op_of(&format!(
        "pass{}.blk.29.attention",
        graph.pass_starts.len() - 2
    ));
    steps.push(graph.steps.iter().rposition(|s| s.op == attention).unwrap() as u64);
    steps.sort_unstable();
    steps.dedup();
    steps
}

fn check_job(job: &JobSpec, label: &str) {
    check_job_on(smollm2(), job, label);
}

fn check_job_on(model: &Model, job: &JobSpec, label: &str) {
    let run = run_job(&model.loaded, job, 2, None).unwrap();
    assert_eq!(
        run.work_units,
        u64::from(NEW_TOKENS),
        "the prompt should not stop early"
    );
    for step in spread(model, job, &run) {
        check_step(model, job, &run, step, label);
    }
}

#[test]
fn greedy_generation_steps_arbitrate_to_their_leaves() {
    check_job(&chat_job(PROMPT, NEW_TOKENS, 0, 0), "smollm2 greedy");
}

#[test]
fn quantized_generation_steps_arbitrate_to_their_leaves() {
    // The weights are committed in the block encoding; the arbiter re-runs the integer path.
    let model = smollm2_quantized();
    assert_ne!(
        model.commitments.weights_commitment,
        smollm2().commitments.weights_commitment
    );
    check_job_on(
        model,
        &chat_job(PROMPT, NEW_TOKENS, 0, 0),
        "smollm2 quantized",
    );
}

#[test]
fn sampled_generation_steps_arbitrate_to_their_leaves() {
    check_job(&chat_job(PROMPT, NEW_TOKENS, 800, 42), "smollm2 sampled");
}

#[test]
fn run_job_matches_the_generator() {
    let model = smollm2();
    let job = chat_job(PROMPT, NEW_TOKENS, 800, 7);
    let run = run_job(&model.loaded, &job, 2, None).unwrap();
    let generator = generator(model);
    let generation = generator
        .generate(&run.ids, &generate_params(&job), 1, |_| {})
        .unwrap();
    assert_eq!(run.output, generation.text.as_bytes());
    assert_eq!(run.trace_root, generation.trace_root());
    assert_eq!(run.work_units, generation.ids.len() as u64);
    // The provider's unrecorded path posts exactly what the recorded run commits to.
    let posted = piazza_arbiter::execute(&model.loaded, &job, 1).unwrap();
    assert_eq!(
        (posted.output, posted.trace_root, posted.work_units),
        (run.output.clone(), run.trace_root, run.work_units)
    );
    // Streamed: the pieces make the output, and the input units are the prompt's ids.
    let mut pieces = String::new();
    let streamed = piazza_arbiter::execute_streaming(
        &model.loaded,
        &job,
        1,
        &std::sync::atomic::AtomicBool::new(false),
        |piece| pieces.push_str(piece),
    )
    .unwrap();
    assert_eq!(pieces.as_bytes(), run.output.as_slice());
    assert_eq!(streamed.output, run.output);
    let text = String::from_utf8_lossy(&job.input);
    let prompt = piazza_arbiter::prompt_ids(generator, &job, &text).unwrap();
    assert!(!prompt.is_empty());
    assert_eq!(streamed.input_units, prompt.len() as u64);
}

#[test]
fn a_corrupted_step_loses() {
    let model = smollm2();
    let job = chat_job(PROMPT, NEW_TOKENS, 0, 0);
    let honest = run_job(&model.loaded, &job, 2, None).unwrap();
    let last = honest.step_count() - 1;
    let graph = graph(model, &job, &honest);
    let sample_of_pass_1 = graph
        .steps
        .iter()
        .position(|s| graph.ops[s.op].name == "pass1.sample")
        .unwrap() as u64;
    for step in [3, sample_of_pass_1, last] {
        let corrupted = run_job(&model.loaded, &job, 2, Some(step)).unwrap();
        assert_ne!(
            corrupted.leaves[step as usize],
            honest.leaves[step as usize]
        );
        assert_eq!(
            corrupted.output != honest.output,
            step == last,
            "step {step}"
        );
        for (run, who) in [(&honest, "honest"), (&corrupted, "corrupted")] {
            let evidence = run.evidence(&model.loaded, step).unwrap();
            let leaf = arbitrate(&model.commitments, &job, &claim(run), &evidence).unwrap();
            assert_eq!(
                leaf, honest.leaves[step as usize],
                "{who} evidence, step {step}"
            );
        }
    }
}

#[test]
fn hostile_generation_evidence_is_rejected() {
    let model = smollm2();
    let job = chat_job(PROMPT, NEW_TOKENS, 0, 0);
    let run = run_job(&model.loaded, &job, 2, None).unwrap();
    let graph = graph(model, &job, &run);
    let embed_of_pass_2 = graph
        .steps
        .iter()
        .position(|s| graph.ops[s.op].name == "pass2.token_embd")
        .unwrap() as u64;
    let evidence = run.evidence(&model.loaded, embed_of_pass_2).unwrap();
    assert_eq!(evidence.leaves.len(), 1, "reads the previous sample");
    let rejects = |evidence: &piazza_arbiter::Evidence, job: &JobSpec| {
        arbitrate(&model.commitments, job, &claim(&run), evidence).unwrap_err()
    };
    // A different sampled id: the opening no longer hashes into the trace.
    let mut e = evidence.clone();
    e.leaves[0].values[0] += 1.0;
    assert!(matches!(
        rejects(&e, &job),
        ArbiterError::LeafOpening { .. }
    ));
    // Missing weight chunks.
    let mut e = evidence.clone();
    e.chunks.clear();
    assert!(matches!(rejects(&e, &job), ArbiterError::Chunks(_)));
    // Another job (more tokens) has another graph: the step count cannot match.
    let mut longer = job.clone();
    longer.max_tokens = 3;
    assert!(matches!(
        rejects(&evidence, &longer),
        ArbiterError::StepCount { .. }
    ));
    let mut e = evidence.clone();
    e.config[30] ^= 1;
    assert!(matches!(rejects(&e, &job), ArbiterError::ConfigHash));
}

/// A provider whose trace holds a sample that is not a token id (0.5, NaN, past the
/// vocabulary), properly proven: the next embedding step is an error, not a panic.
#[test]
fn a_proven_but_impossible_token_id_is_an_error() {
    let model = smollm2();
    let job = chat_job(PROMPT, NEW_TOKENS, 0, 0);
    let run = run_job(&model.loaded, &job, 2, None).unwrap();
    let graph = graph(model, &job, &run);
    let step_of = |name: &str| {
        graph
            .steps
            .iter()
            .position(|s| graph.ops[s.op].name == name)
            .unwrap()
    };
    let (sample, embed) = (step_of("pass1.sample"), step_of("pass2.token_embd"));
    let honest = run.evidence(&model.loaded, embed as u64).unwrap();
    for value in [0.5, f32::NAN, 1e9, -1.0] {
        let mut leaves = run.leaves.clone();
        leaves[sample] = piazza_engine::trace::step_hash(sample, &[value], 1, 1);
        let mut evidence = honest.clone();
        evidence.leaves[0].values = vec![value];
        evidence.leaves[0].siblings = piazza_engine::merkle::prove(&leaves, sample)
            .unwrap()
            .siblings;
        let claim = piazza_arbiter::TraceClaim {
            root: piazza_engine::merkle::root(piazza_engine::trace::TRACE_DOMAIN, &leaves),
            ..claim(&run)
        };
        let result = arbitrate(&model.commitments, &job, &claim, &evidence);
        assert!(
            matches!(result, Err(ArbiterError::Execution(_))),
            "{value}: {result:?}"
        );
    }
}

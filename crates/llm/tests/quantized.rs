//! The quantized numeric profile on the real model: the same trace for any thread count;
//! every step re-executes to its leaf, from the generator and from the committed weights
//! alone (as the arbiter holds them); the SIMD paths equal the scalar reference on the model's
//! own matrices; logits stay within the stated tolerance of the f32 profile.

mod common;

use std::sync::OnceLock;

use piazza_llm::{Compute, GenerateParams, Generation, Generator, NumericProfile, Recording};
use piazza_tensor::quant;
use piazza_tensor::{Activation, Isa};

/// Largest |quantized − f32| next-token logit on the fixture prompts (docs/llm.md §2.1).
const LOGIT_TOLERANCE: f32 = 2.0;
const NEW_TOKENS: usize = 3;
const PROMPT: &str = "The quantized profile keeps the weights in their blocks and multiplies \
    integers, so a provider serves the model in a third of the memory.";

fn quantized() -> &'static Generator {
    static GENERATOR: OnceLock<Generator> = OnceLock::new();
    GENERATOR.get_or_init(|| {
        Generator::load_with(piazza_llm::default_model_path(), NumericProfile::Quantized)
            .expect("the model loads in the quantized profile")
    })
}

fn recorded() -> &'static (Vec<u32>, Generation, Recording) {
    static RUN: OnceLock<(Vec<u32>, Generation, Recording)> = OnceLock::new();
    RUN.get_or_init(|| {
        let generator = quantized();
        let prompt = generator.tokenize(PROMPT).unwrap();
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
fn quantized_trace_is_identical_across_thread_counts_and_differs_from_f32() {
    let (prompt, reference, _) = recorded();
    for threads in [2, 4] {
        let generation = quantized()
            .generate(prompt, &GenerateParams::greedy(NEW_TOKENS), threads, |_| {})
            .unwrap();
        assert_eq!(generation.ids, reference.ids, "{threads} threads");
        assert_eq!(generation.trace_root(), reference.trace_root());
    }
    let f32_run = common::generator()
        .generate(prompt, &GenerateParams::greedy(NEW_TOKENS), 2, |_| {})
        .unwrap();
    assert_eq!(f32_run.step_count(), reference.step_count());
    assert_ne!(f32_run.trace_root(), reference.trace_root());
}

#[test]
fn quantized_steps_reexecute_from_the_generator_and_from_committed_rows() {
    let (_, generation, recording) = recorded();
    let generator = quantized();
    let graph = &recording.graph;
    let mut checked = 0;
    for (index, step) in graph.steps.iter().enumerate() {
        let op = &graph.ops[step.op];
        let sampled = op.name.contains(".blk.0.")
            || op.name.contains(".blk.29.")
            || !op.name.contains(".blk.");
        if !sampled {
            continue;
        }
        let inputs = recording.step_inputs(index).unwrap();
        let leaf = generation.trace.step_hashes[index];
        let output = generator.execute_step(graph, index, &inputs).unwrap();
        assert_eq!(Generator::step_leaf(index, &output), leaf, "{}", op.name);
        assert!(
            common::step_from_committed_weights(generator, recording, generation, index),
            "{} (committed)",
            op.name
        );
        checked += 1;
    }
    assert!(checked > 30, "{checked} steps checked");
    // The streamed commitment is the commitment of the committed tensors.
    assert_eq!(
        generator.weight_commitment().root,
        generator.weights().commit().root
    );
}

#[test]
fn every_isa_equals_the_reference_on_the_models_matrices() {
    let (_, _, recording) = recorded();
    let generator = quantized();
    // Real activations: the prompt's attention and gated FFN rows of layer 0, and the last
    // layer's output.
    let find = |suffix: &str| {
        let at = recording
            .graph
            .ops
            .iter()
            .position(|op| op.name == format!("pass0.{suffix}"))
            .unwrap();
        recording.outputs[at].clone()
    };
    for (weight, input) in [
        ("blk.0.attn_output.weight", "blk.0.attention"),
        ("blk.0.ffn_down.weight", "blk.0.ffn_gated"),
        ("token_embd.weight", "blk.29.ffn_residual"),
    ] {
        let w = generator.quantized_matrix(weight).unwrap();
        let x = find(input);
        let (rows, k) = (x.shape()[0].min(5), x.shape()[1]);
        let x = quant::quantize_activations(&x.to_vec()[..rows * k], rows, k).unwrap();
        let columns = 0..w.rows().min(2048);
        let mut expected = vec![0.0f32; rows * columns.len()];
        quant::reference_linear(&x, w, columns.clone(), Activation::Identity, &mut expected)
            .unwrap();
        for isa in Isa::available() {
            for threads in [1, 2] {
                let compute = Compute {
                    threads: std::num::NonZeroUsize::new(threads).unwrap(),
                    isa,
                };
                let mut got = vec![0.0f32; expected.len()];
                quant::linear(
                    &x,
                    w,
                    columns.clone(),
                    Activation::Identity,
                    &mut got,
                    compute,
                )
                .unwrap();
                let same = got
                    .iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{weight} {isa:?} {threads} threads");
            }
        }
    }
}

#[test]
fn next_token_logits_stay_within_the_tolerance_of_f32() {
    for case in common::reference_cases() {
        let reference = common::generator()
            .next_token_logits(&case.prompt_ids, 2)
            .unwrap();
        let logits = quantized().next_token_logits(&case.prompt_ids, 2).unwrap();
        let gap = reference
            .iter()
            .zip(&logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(gap <= LOGIT_TOLERANCE, "{:?}: {gap}", case.prompt);
        // The top token agrees unless the reference's top two are within the tolerance.
        let top = |l: &[f32]| (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap();
        let (r, q) = (top(&reference), top(&logits));
        assert!(
            r == q || reference[r] - reference[q] <= 2.0 * LOGIT_TOLERANCE,
            "{:?}: {r} vs {q}",
            case.prompt
        );
    }
}

#[test]
fn the_draining_loader_gives_the_same_model_as_the_borrowing_one() {
    let path = piazza_llm::default_model_path();
    let file = piazza_llm::Gguf::open(&path).unwrap();
    let borrowed = Generator::from_gguf_with(&file, NumericProfile::Quantized).unwrap();
    // The file's tensors, each handed over once, last in the data section first.
    let mut offsets = Vec::new();
    file.clone()
        .drain_tensors(|info, bytes| {
            assert_eq!(bytes.len() as u64, info.byte_len);
            offsets.push(info.offset);
            Ok(())
        })
        .unwrap();
    assert_eq!(offsets.len(), file.tensors().len());
    assert!(offsets.windows(2).all(|w| w[0] > w[1]));
    assert_eq!(
        borrowed.weight_commitment().root,
        quantized().weight_commitment().root
    );
}

#[test]
fn one_audit_pass_reproduces_every_decode_logit_in_both_profiles() {
    for generator in [common::generator(), quantized()] {
        let prompt = generator.tokenize(PROMPT).unwrap();
        let mut params = GenerateParams::greedy(6);
        params.stop_at_eos = false;
        let (generation, recording) = generator
            .generate_recorded(&prompt, &params, Compute::new(2))
            .unwrap();
        let audited = generator.audit_logits(&prompt, &generation.ids, 2).unwrap();
        assert_eq!(audited.len(), generation.ids.len());
        for (pass, row) in audited.iter().enumerate() {
            let decoded = recording.logits(pass).unwrap().to_vec();
            let same = decoded
                .iter()
                .zip(row)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{:?} pass {pass}", generator.profile());
        }
        assert_eq!(
            generator
                .audit(&prompt, &generation.ids, &params, 1)
                .unwrap(),
            None
        );
        let mut forged = generation.ids.clone();
        forged[3] = (forged[3] + 1) % generator.config().vocab as u32;
        assert_eq!(
            generator.audit(&prompt, &forged, &params, 1).unwrap(),
            Some(3)
        );
    }
}

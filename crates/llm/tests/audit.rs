//! A generation rebuilt from one prefill-shaped pass (`Generator::generate_from_draft`, what an
//! auditor runs) equals the step-by-step generation: the same ids, text, finish and trace root,
//! in both numeric profiles, on several prompts and sampling rules; a draft that does not carry
//! the generation to its end gives `None`, never a wrong trace.

mod common;

use std::sync::OnceLock;

use piazza_llm::{Compute, GenerateParams, Generator, NumericProfile, SamplingParams};

const NEW_TOKENS: usize = 6;

fn quantized() -> &'static Generator {
    static GENERATOR: OnceLock<Generator> = OnceLock::new();
    GENERATOR.get_or_init(|| {
        Generator::load_with(piazza_llm::default_model_path(), NumericProfile::Quantized)
            .expect("the model loads in the quantized profile")
    })
}

fn generators() -> [&'static Generator; 2] {
    [common::generator(), quantized()]
}

/// Prompts of 3 to ~90 tokens (the longest spans two 64-row step blocks).
fn prompts() -> Vec<String> {
    vec![
        "Once upon a time".to_string(),
        "The capital of France is".to_string(),
        "A verifier checks a generation by recomputing it. ".repeat(9),
    ]
}

/// The step-by-step generation of `prompt` with `params`, then the single pass fed its own ids:
/// both must agree on everything the trace commits to.
fn check(generator: &Generator, prompt: &str, params: &GenerateParams) {
    let prompt_ids = generator.tokenize(prompt).unwrap();
    let decoded = generator.generate(&prompt_ids, params, 2, |_| {}).unwrap();
    let single = generator
        .generate_from_draft(&prompt_ids, &decoded.ids, params, Compute::new(2), None)
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "{:?} {prompt:?}: the draft is its own ids",
                generator.profile()
            )
        });
    let context = format!("{:?} {prompt:?} {params:?}", generator.profile());
    assert_eq!(single.ids, decoded.ids, "{context}");
    assert_eq!(single.text, decoded.text, "{context}");
    assert_eq!(single.finish, decoded.finish, "{context}");
    assert_eq!(single.step_count(), decoded.step_count(), "{context}");
    assert_eq!(
        single.trace.step_hashes, decoded.trace.step_hashes,
        "{context}"
    );
    assert_eq!(single.trace_root(), decoded.trace_root(), "{context}");
}

#[test]
fn the_single_pass_trace_root_equals_the_step_by_step_one_in_both_profiles() {
    let mut greedy = GenerateParams::greedy(NEW_TOKENS);
    greedy.stop_at_eos = false;
    let mut sampled = GenerateParams::greedy(NEW_TOKENS);
    sampled.sampling = SamplingParams::seeded(7, 0.8);
    for generator in generators() {
        for prompt in prompts() {
            check(generator, &prompt, &greedy);
        }
        check(generator, &prompts()[0], &sampled);
    }
}

/// A generation longer than one block of the single pass's logits rows (64): its rows come
/// from two blocks, each hashed and sampled before the next, and a draft that leaves the
/// generation in the second block is refused there.
#[test]
fn a_generation_past_one_block_of_logits_rows_is_rebuilt() {
    let generator = quantized();
    let mut params = GenerateParams::greedy(70);
    params.stop_at_eos = false;
    check(generator, &prompts()[1], &params);
    let prompt_ids = generator.tokenize(&prompts()[1]).unwrap();
    let decoded = generator.generate(&prompt_ids, &params, 1, |_| {}).unwrap();
    let mut forged = decoded.ids.clone();
    forged[66] = (forged[66] + 1) % 1000;
    let rebuilt = generator
        .generate_from_draft(&prompt_ids, &forged, &params, Compute::new(1), None)
        .unwrap();
    assert!(
        rebuilt.is_none(),
        "a draft that leaves the generation at token 66"
    );
}

#[test]
fn a_generation_ended_by_a_stop_sequence_or_its_last_token_is_rebuilt_too() {
    let generator = quantized();
    let prompt = "The capital of France is";
    let prompt_ids = generator.tokenize(prompt).unwrap();
    let free = generator
        .generate(&prompt_ids, &GenerateParams::greedy(NEW_TOKENS), 1, |_| {})
        .unwrap();
    // Stop at the text of the third token: the generation ends there, its text before it.
    let third = generator.generation_text(&free.ids[..3], &GenerateParams::greedy(3));
    let second = generator.generation_text(&free.ids[..2], &GenerateParams::greedy(2));
    let mut stopping = GenerateParams::greedy(NEW_TOKENS);
    let stop = third[second.len()..].to_string();
    assert!(!stop.is_empty(), "the third token has text");
    stopping.stop = vec![stop];
    let stopped = generator
        .generate(&prompt_ids, &stopping, 1, |_| {})
        .unwrap();
    assert_eq!(stopped.finish, piazza_llm::FinishReason::Stop);
    check(generator, prompt, &stopping);
    // A draft longer than the generation: the extra rows are not part of its trace.
    let mut longer = free.ids.clone();
    longer.extend_from_slice(&free.ids);
    let short = GenerateParams::greedy(3);
    let decoded = generator.generate(&prompt_ids, &short, 1, |_| {}).unwrap();
    let single = generator
        .generate_from_draft(&prompt_ids, &longer, &short, Compute::new(1), None)
        .unwrap()
        .expect("the draft covers the generation");
    assert_eq!(single.ids, decoded.ids);
    assert_eq!(single.trace_root(), decoded.trace_root());
}

#[test]
fn a_draft_that_does_not_reach_the_end_gives_none() {
    let generator = quantized();
    let prompt_ids = generator.tokenize("Once upon a time").unwrap();
    let mut params = GenerateParams::greedy(NEW_TOKENS);
    params.stop_at_eos = false;
    let decoded = generator.generate(&prompt_ids, &params, 1, |_| {}).unwrap();
    let single = |draft: &[u32]| {
        generator
            .generate_from_draft(&prompt_ids, draft, &params, Compute::new(1), None)
            .unwrap()
    };
    // A wrong token in the middle: the rows after it are not the generation's.
    let mut forged = decoded.ids.clone();
    forged[2] = (forged[2] + 1) % generator.config().vocab as u32;
    assert!(single(&forged).is_none());
    // Too short: the generation goes on past the draft.
    assert!(single(&decoded.ids[..NEW_TOKENS - 2]).is_none());
    // The draft minus its last token is enough: the last token is chosen, never fed.
    let rebuilt = single(&decoded.ids[..NEW_TOKENS - 1]).unwrap();
    assert_eq!(rebuilt.trace_root(), decoded.trace_root());
    // Ids outside the vocabulary are an error.
    assert!(generator
        .generate_from_draft(&prompt_ids, &[u32::MAX], &params, Compute::new(1), None)
        .is_err());
}

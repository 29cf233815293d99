//! Seeded sampling: same seed, same tokens (any run, any thread count); other seeds differ.

mod common;

use piazza_llm::sampling::{sample, uniform, SamplingParams};
use piazza_llm::{GenerateParams, Message};
use proptest::prelude::*;

const NEW_TOKENS: usize = 8;

fn params(seed: u64) -> GenerateParams {
    GenerateParams {
        max_tokens: NEW_TOKENS,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: 50,
            top_p: 0.95,
            repetition_penalty: 1.1,
            seed,
        },
        stop: Vec::new(),
        stop_at_eos: false,
    }
}

#[test]
fn same_seed_same_tokens_other_seeds_differ() {
    let generator = common::generator();
    let prompt = generator.tokenize("My favourite colour is").unwrap();
    let first = generator.generate(&prompt, &params(42), 1, |_| {}).unwrap();
    let again = generator.generate(&prompt, &params(42), 2, |_| {}).unwrap();
    assert_eq!(first.ids, again.ids);
    assert_eq!(first.trace_root(), again.trace_root());
    let others: Vec<Vec<u32>> = [1u64, 2, 3]
        .iter()
        .map(|&seed| {
            generator
                .generate(&prompt, &params(seed), 2, |_| {})
                .unwrap()
                .ids
        })
        .collect();
    assert!(
        others.iter().any(|ids| *ids != first.ids),
        "{first:?} {others:?}"
    );
}

#[test]
fn chat_prompt_and_streaming() {
    let generator = common::generator();
    let text = generator
        .apply_chat_template(&[Message::new("user", "Say hello.")])
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = generator.tokenize(&text).unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one control token");
    assert_eq!(
        generator.tokenizer().decode(&ids),
        text.replace("<|im_start|>", "").replace("<|im_end|>", "")
    );
    let mut pieces = Vec::new();
    let mut params = GenerateParams::greedy(6);
    params.stop = vec!["\n".into()];
    let generation = generator
        .generate(&ids, &params, 2, |event| pieces.push(event))
        .unwrap();
    assert_eq!(
        pieces.iter().map(|p| p.text.as_str()).collect::<String>(),
        generation.text
    );
    assert_eq!(
        pieces.iter().map(|p| p.id).collect::<Vec<_>>(),
        generation.ids
    );
    assert!(!generation.text.contains('\n'));
}

proptest! {
    #[test]
    fn uniform_is_in_range_and_keyed(seed in any::<u64>(), counter in any::<u64>()) {
        let u = uniform(seed, counter);
        prop_assert!((0.0..1.0).contains(&u));
        prop_assert_eq!(u.to_bits(), uniform(seed, counter).to_bits());
        prop_assert_ne!(u.to_bits(), uniform(seed, counter.wrapping_add(1)).to_bits());
    }

    #[test]
    fn sampling_is_a_function_of_its_inputs(
        logits in proptest::collection::vec(-20.0f32..20.0, 1..300),
        history in proptest::collection::vec(0u32..400, 0..20),
        seed in any::<u64>(),
        top_k in 0u32..10,
        top_p in 0.05f32..=1.0,
    ) {
        let params = SamplingParams { temperature: 0.7, top_k, top_p, repetition_penalty: 1.3, seed };
        let id = sample(&logits, &history, &params, 3);
        prop_assert!((id as usize) < logits.len());
        prop_assert_eq!(id, sample(&logits, &history, &params, 3));
        // top_k = 1 is greedy (after the penalty).
        let greedy = SamplingParams { temperature: 0.0, ..params.clone() };
        let top1 = SamplingParams { top_k: 1, ..params };
        prop_assert_eq!(sample(&logits, &history, &top1, 9), sample(&logits, &history, &greedy, 9));
    }
}

//! SmolLM2 against Hugging Face transformers (float32, dequantized GGUF):
//! tests/fixtures/smollm2_reference.json.

mod common;

use piazza_llm::{Compute, FinishReason, GenerateParams};

/// Largest |logit difference| accepted for the top-5 next-token logits.
const LOGIT_TOLERANCE: f32 = 1e-3;

#[test]
fn prompt_ids_match_the_reference() {
    let generator = common::generator();
    for case in common::reference_cases() {
        assert_eq!(
            generator.tokenize(&case.prompt).unwrap(),
            case.prompt_ids,
            "{:?}",
            case.prompt
        );
    }
}

/// The greedy continuation, and the top-5 logits after the prompt (from the same run's trace).
#[test]
fn greedy_continuations_and_next_token_logits_match_the_reference() {
    let generator = common::generator();
    for case in common::reference_cases() {
        let params = GenerateParams::greedy(case.greedy_ids.len());
        let (generation, recording) = generator
            .generate_recorded(&case.prompt_ids, &params, Compute::new(2))
            .unwrap();
        let logits = recording.logits(0).unwrap().to_vec();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let top5: Vec<u32> = order[..5].iter().map(|&i| i as u32).collect();
        eprintln!("{:?}: top5 {top5:?}", case.prompt);
        for (&id, &expected) in case.top5_ids.iter().zip(&case.top5_logits) {
            let got = logits[id as usize];
            eprintln!(
                "  id {id}: ours {got} reference {expected} diff {:e}",
                got - expected
            );
            assert!(
                (got - expected).abs() <= LOGIT_TOLERANCE,
                "{:?}: logit of {id} is {got}, reference {expected}",
                case.prompt
            );
        }
        assert_eq!(top5, case.top5_ids, "{:?}", case.prompt);
        assert_eq!(generation.ids, case.greedy_ids, "{:?}", case.prompt);
        assert_eq!(generation.text, case.greedy_text, "{:?}", case.prompt);
        assert_eq!(generation.finish, FinishReason::MaxTokens);
    }
}

/// Streaming gives the same text, piece by piece, as the finished generation.
#[test]
fn streamed_pieces_add_up_to_the_text() {
    let generator = common::generator();
    let case = &common::reference_cases()[1];
    let params = GenerateParams::greedy(case.greedy_ids.len());
    let mut streamed = String::new();
    let mut count = 0;
    let generation = generator
        .generate(&case.prompt_ids, &params, 1, |event| {
            assert_eq!(event.index, count);
            count += 1;
            streamed.push_str(&event.text);
        })
        .unwrap();
    assert_eq!(count, generation.ids.len());
    assert_eq!(streamed, case.greedy_text);
}

/// A stop string ends the generation; the text ends before it, and no streamed piece shows
/// any part of it.
#[test]
fn stop_strings_cut_the_text_and_the_stream() {
    let generator = common::generator();
    let case = &common::reference_cases()[1];
    let stop = "answer is";
    let at = case
        .greedy_text
        .find(stop)
        .expect("fixture text contains the stop string");
    let mut params = GenerateParams::greedy(case.greedy_ids.len());
    params.stop = vec![stop.to_string(), "never appears".to_string()];
    let mut streamed = String::new();
    let generation = generator
        .generate(&case.prompt_ids, &params, 1, |event| {
            streamed.push_str(&event.text)
        })
        .unwrap();
    assert_eq!(generation.finish, FinishReason::Stop);
    assert_eq!(generation.text, case.greedy_text[..at]);
    assert_eq!(streamed, generation.text);
    assert!(generation.ids.len() < case.greedy_ids.len());
    assert_eq!(generation.ids[..], case.greedy_ids[..generation.ids.len()]);
}

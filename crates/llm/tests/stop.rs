//! The text the generator returns equals the text recomputed from its token ids
//! (`Generator::generation_text`, what the arbiter and the daemons use), for stop sequences cut
//! at every kind of place: the two must never drift, or an honest provider would be slashed.

mod common;

use piazza_llm::{Compute, FinishReason, GenerateParams};

/// Generate with `stop`, then recompute the text from the ids; both must agree.
fn check(prompt: &[u32], params: &GenerateParams) -> piazza_llm::Generation {
    let generator = common::generator();
    let generation = generator
        .generate_recorded(prompt, params, Compute::new(2))
        .unwrap()
        .0;
    assert_eq!(
        generator.generation_text(&generation.ids, params),
        generation.text,
        "stops {:?}",
        params.stop
    );
    generation
}

#[test]
fn generated_and_recomputed_text_agree_for_every_stop() {
    let generator = common::generator();
    let prompt = generator.tokenize("The capital of France is").unwrap();
    let mut params = GenerateParams::greedy(24);
    params.stop_at_eos = false;
    let free = check(&prompt, &params);
    assert_eq!(free.finish, FinishReason::MaxTokens);
    let text = free.text.clone();
    assert!(text.len() > 8, "{text:?}");
    // Stops that begin at several places of the free text (inside a token or across two), one
    // that never occurs, and an empty one.
    let mut cut_somewhere = false;
    for start in [1, text.len() / 3, text.len() / 2, text.len() - 2] {
        let Some(stop) = text.get(start..(start + 3).min(text.len())) else {
            continue;
        };
        params.stop = vec![stop.to_string(), "never occurs \u{1}".into(), String::new()];
        let stopped = check(&prompt, &params);
        let at = text.find(stop).unwrap();
        assert_eq!(stopped.text, text[..at], "stop {stop:?}");
        assert_eq!(stopped.finish, FinishReason::Stop);
        cut_somewhere = true;
    }
    assert!(cut_somewhere);
    // The end token is not text.
    params.stop.clear();
    params.stop_at_eos = true;
    check(&prompt, &params);
}

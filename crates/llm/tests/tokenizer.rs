//! Tokenizer round trips and incremental UTF-8 decoding.

mod common;

use piazza_llm::tokenizer::TextDecoder;
use proptest::prelude::*;

#[test]
fn streamed_text_of_multibyte_characters_is_never_split() {
    let tokenizer = common::generator().tokenizer();
    for text in [
        "héllo 🙂 世界, naïve café",
        "2018-01-22 12:15",
        "  indented\n\ttabs",
        "🦀🦀🦀",
    ] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(tokenizer.decode(&ids), text);
        let mut decoder = TextDecoder::default();
        let mut streamed = String::new();
        let mut split = false;
        for &id in &ids {
            let bytes = tokenizer.token_bytes(id);
            split |= std::str::from_utf8(bytes).is_err();
            let piece = decoder.push(bytes);
            assert!(!piece.contains('\u{FFFD}'), "{text:?}");
            streamed.push_str(&piece);
        }
        streamed.push_str(&decoder.finish());
        assert_eq!(streamed, text);
        if text.starts_with('🦀') {
            assert!(split, "some emoji token is a partial UTF-8 sequence");
        }
    }
}

#[test]
fn digits_are_split_one_by_one() {
    // SmolLM2's pre-tokenizer ("smollm"): every digit is its own token.
    let tokenizer = common::generator().tokenizer();
    let ids = tokenizer.encode("2018").unwrap();
    assert_eq!(ids.len(), 4);
}

#[test]
fn tokenizer_hash_is_stable_and_bound_to_metadata() {
    let generator = common::generator();
    assert_eq!(generator.tokenizer_hash(), generator.tokenizer().hash());
    let tiny = piazza_llm::Generator::from_gguf(
        &piazza_llm::Gguf::parse(common::writer::tiny_llama()).unwrap(),
    )
    .unwrap();
    assert_ne!(tiny.tokenizer_hash(), generator.tokenizer_hash());
}

proptest! {
    #[test]
    fn decoder_output_is_lossy_utf8_of_the_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        cuts.sort();
        let mut decoder = TextDecoder::default();
        let mut text = String::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            text.push_str(&decoder.push(&bytes[at..cut]));
            at = cut;
        }
        text.push_str(&decoder.finish());
        if let Ok(valid) = std::str::from_utf8(&bytes) {
            prop_assert_eq!(text, valid);
        } else {
            prop_assert!(text.contains(char::REPLACEMENT_CHARACTER), "{:?}", text);
        }
    }
}

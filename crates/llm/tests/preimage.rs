//! The tokenizer metadata preimage: its BLAKE3 is the tokenizer hash, it rebuilds the same
//! tokenizer as the GGUF file, and hostile preimages are errors, never panics.

mod common;

use std::sync::OnceLock;

use piazza_llm::tokenizer::{preimage_hash, PREIMAGE_BYTES_MAX, TOKENIZER_DOMAIN};
use piazza_llm::{Gguf, LlamaConfig, Message, Tokenizer};
use proptest::prelude::*;

/// SmolLM2's tokenizer read from the GGUF file, and its vocabulary size.
fn smollm2() -> &'static (Tokenizer, usize) {
    static TOKENIZER: OnceLock<(Tokenizer, usize)> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = piazza_llm::default_model_path();
        let file = Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let vocab = LlamaConfig::from_gguf(&file).unwrap().vocab;
        (Tokenizer::from_gguf(&file, vocab).unwrap(), vocab)
    })
}

fn tiny() -> (Tokenizer, usize) {
    let file = Gguf::parse(common::writer::tiny_llama()).unwrap();
    let vocab = LlamaConfig::from_gguf(&file).unwrap().vocab;
    (Tokenizer::from_gguf(&file, vocab).unwrap(), vocab)
}

const TEXTS: &[&str] = &[
    "",
    "Hello world",
    "héllo 🙂 世界, naïve café 2018-01-22",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "  indented\n\ttabs\r\n\u{FFFD}\u{0}",
];

/// `rebuilt` behaves as `original` on every sample text, chat prompt and token.
fn check_same(original: &Tokenizer, rebuilt: &Tokenizer) {
    assert_eq!(rebuilt.hash(), original.hash());
    assert_eq!(rebuilt.metadata_preimage(), original.metadata_preimage());
    assert_eq!(
        (rebuilt.bos, rebuilt.eos, rebuilt.vocab_size()),
        (original.bos, original.eos, original.vocab_size())
    );
    assert_eq!(rebuilt.chat_template, original.chat_template);
    let long = "The quick brown fox jumps over the lazy dog. 12345 ".repeat(200);
    for text in TEXTS.iter().copied().chain([long.as_str()]) {
        let ids = original.encode(text).unwrap();
        assert_eq!(rebuilt.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(rebuilt.decode(&ids), original.decode(&ids));
    }
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi!"),
    ];
    assert_eq!(
        rebuilt.chat_prompt_ids(&messages).unwrap(),
        original.chat_prompt_ids(&messages).unwrap()
    );
    for id in 0..original.vocab_size() as u32 {
        assert_eq!(rebuilt.token_bytes(id), original.token_bytes(id));
    }
}

#[test]
fn preimage_hashes_to_the_tokenizer_hash_and_rebuilds_the_same_tokenizer() {
    let (original, vocab) = smollm2();
    let preimage = original.metadata_preimage();
    assert!(preimage.starts_with(TOKENIZER_DOMAIN.as_bytes()));
    assert_eq!(preimage_hash(preimage), original.hash());
    assert!(preimage.len() <= PREIMAGE_BYTES_MAX);
    eprintln!("SmolLM2 tokenizer preimage: {} bytes", preimage.len());
    let rebuilt = Tokenizer::from_metadata_preimage(preimage, *vocab).unwrap();
    check_same(original, &rebuilt);

    let (tiny, tiny_vocab) = tiny();
    let rebuilt = Tokenizer::from_metadata_preimage(tiny.metadata_preimage(), tiny_vocab).unwrap();
    check_same(&tiny, &rebuilt);
    assert_ne!(tiny.hash(), original.hash());
}

/// The documented hash, computed here independently from the parsed file:
/// `BLAKE3(domain ‖ for each "tokenizer.*" key in byte order: len u32 ‖ key ‖ GGUF value bytes)`.
fn documented_hash(file: &Gguf) -> [u8; 32] {
    use piazza_llm::gguf::Value;
    fn value(v: &Value, out: &mut Vec<u8>, tagged: bool) {
        let (tag, payload): (u32, Vec<u8>) = match v {
            Value::U32(x) => (4, x.to_le_bytes().to_vec()),
            Value::I32(x) => (5, x.to_le_bytes().to_vec()),
            Value::F32(x) => (6, x.to_le_bytes().to_vec()),
            Value::Bool(x) => (7, vec![*x as u8]),
            Value::String(s) => (
                8,
                [&(s.len() as u64).to_le_bytes()[..], s.as_bytes()].concat(),
            ),
            Value::Array(items) => {
                if tagged {
                    out.extend_from_slice(&9u32.to_le_bytes());
                }
                let element = match items.first() {
                    Some(Value::String(_)) => 8u32,
                    Some(Value::I32(_)) => 5,
                    Some(Value::F32(_)) => 6,
                    None => 0,
                    Some(other) => panic!("unexpected array of {other:?}"),
                };
                out.extend_from_slice(&element.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                items.iter().for_each(|item| value(item, out, false));
                return;
            }
            other => panic!("unexpected tokenizer value {other:?}"),
        };
        if tagged {
            out.extend_from_slice(&tag.to_le_bytes());
        }
        out.extend_from_slice(&payload);
    }
    let mut out = TOKENIZER_DOMAIN.as_bytes().to_vec();
    for (key, v) in file
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
    {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        value(v, &mut out, true);
    }
    *blake3::hash(&out).as_bytes()
}

#[test]
fn tokenizer_hash_is_the_documented_hash() {
    let path = piazza_llm::default_model_path();
    let file = Gguf::open(&path).unwrap();
    assert_eq!(smollm2().0.hash(), documented_hash(&file));
    let tiny_file = Gguf::parse(common::writer::tiny_llama()).unwrap();
    assert_eq!(tiny().0.hash(), documented_hash(&tiny_file));
}

#[test]
fn targeted_bad_preimages_are_errors() {
    let (tokenizer, vocab) = smollm2();
    let good = tokenizer.metadata_preimage();
    let rebuild = |bytes: &[u8], vocab: usize| Tokenizer::from_metadata_preimage(bytes, vocab);
    assert!(rebuild(good, vocab + 1).is_err(), "wrong vocabulary size");
    assert!(rebuild(&[], *vocab).is_err(), "empty");
    assert!(
        rebuild(TOKENIZER_DOMAIN.as_bytes(), *vocab).is_err(),
        "no entries"
    );
    assert!(rebuild(&good[1..], *vocab).is_err(), "no domain");
    assert!(
        rebuild(&good[..good.len() - 1], *vocab).is_err(),
        "truncated"
    );
    let mut trailing = good.to_vec();
    trailing.push(0);
    assert!(rebuild(&trailing, *vocab).is_err(), "trailing byte");
    let oversized = vec![0u8; PREIMAGE_BYTES_MAX + 1];
    assert!(rebuild(&oversized, *vocab).is_err(), "over the size limit");

    // One entry, written twice or out of order, or outside "tokenizer.*".
    let entry = |key: &str, value: &str| {
        let mut out = (key.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
        out
    };
    let with = |entries: &[Vec<u8>]| {
        let mut out = TOKENIZER_DOMAIN.as_bytes().to_vec();
        entries.iter().for_each(|e| out.extend_from_slice(e));
        out
    };
    let model = entry("tokenizer.ggml.model", "gpt2");
    let pre = entry("tokenizer.ggml.pre", "smollm");
    for (bytes, why) in [
        (with(&[model.clone(), model.clone()]), "repeated key"),
        (with(&[pre.clone(), model.clone()]), "keys out of order"),
        (with(&[entry("general.name", "x")]), "not a tokenizer key"),
        (with(std::slice::from_ref(&model)), "no tokens"),
    ] {
        let error = rebuild(&bytes, 1).unwrap_err();
        eprintln!("{why}: {error}");
    }
}

/// Rebuilding `bytes` returns (Ok or Err) without panicking; an Ok is self-consistent.
fn exercise(bytes: &[u8], vocab: usize) {
    if let Ok(tokenizer) = Tokenizer::from_metadata_preimage(bytes, vocab) {
        assert_eq!(tokenizer.metadata_preimage(), bytes);
        assert_eq!(tokenizer.hash(), preimage_hash(bytes));
        let _ = tokenizer.encode("Hello world 123 <|im_start|>");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn truncated_preimages_never_panic(fraction in 0.0f64..1.0) {
        let (tokenizer, vocab) = smollm2();
        let good = tokenizer.metadata_preimage();
        let cut = (good.len() as f64 * fraction) as usize;
        prop_assert!(Tokenizer::from_metadata_preimage(&good[..cut], *vocab).is_err());
    }

    #[test]
    fn corrupted_preimages_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        // The tiny tokenizer's preimage is small, so edits often land in lengths and type ids.
        let (tokenizer, vocab) = tiny();
        let mut bytes = tokenizer.metadata_preimage().to_vec();
        for (index, byte) in edits {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        exercise(&bytes, vocab);
    }

    #[test]
    fn corrupted_real_preimages_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (tokenizer, vocab) = smollm2();
        let mut bytes = tokenizer.metadata_preimage().to_vec();
        for (index, byte) in edits {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        exercise(&bytes, *vocab);
    }

    #[test]
    fn random_preimages_are_errors(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        with_domain in any::<bool>(),
        vocab in 0usize..300,
    ) {
        let mut bytes = if with_domain { TOKENIZER_DOMAIN.as_bytes().to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&tail);
        prop_assert!(Tokenizer::from_metadata_preimage(&bytes, vocab).is_err());
    }
}

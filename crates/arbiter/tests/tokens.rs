//! Tokenization disputes: the ids the ledger derives from the tokenizer evidence equal the ids
//! a provider computes with the loaded model, and hostile evidence is an error, never a panic.

use std::sync::OnceLock;
use std::time::Instant;

use piazza_arbiter::tokens::{
    bert_ids, bert_tokenizer_bytes, llama_ids, llama_tokenizer_bytes, TokensError,
};
use piazza_engine::Embedder;
use piazza_llm::Generator;
use piazza_primitives::chat::{ChatInput, ChatMessage, ChatRole};
use proptest::prelude::*;

fn minilm() -> &'static Embedder {
    static MODEL: OnceLock<Embedder> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = piazza_engine::models_dir().join("minilm");
        Embedder::load(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-models.sh)", dir.display()))
    })
}

fn smollm2() -> &'static Generator {
    static MODEL: OnceLock<Generator> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = piazza_llm::default_model_path();
        Generator::load(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-models.sh)", path.display()))
    })
}

fn bert_evidence() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| bert_tokenizer_bytes(minilm()))
}

fn llama_evidence() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| llama_tokenizer_bytes(smollm2()))
}

fn vocab() -> usize {
    smollm2().config().vocab
}

/// The inputs every check runs over: (label, bytes).
fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ascii", b"Hello world, how are you?".to_vec()),
        (
            "unicode",
            "héllo 🙂 世界, naïve café — 2018".as_bytes().to_vec(),
        ),
        ("invalid utf-8", b"caf\xe9 \xff\xfe ok \xf0\x9f".to_vec()),
        ("empty", Vec::new()),
        (
            "long",
            "The quick brown fox jumps over the lazy dog. "
                .repeat(80)
                .into_bytes(),
        ),
        ("chat input", french_chat()),
        ("plain chat", b"What is the capital of France?".to_vec()),
        (
            "json messages (plain text)",
            br#"[{"role":"system","content":"Answer in French."},{"role":"user","content":"Hi!"}]"#
                .to_vec(),
        ),
        (
            "chat magic, bad body",
            b"\x1epiazza-chat/1\nuser 9\nHi!\n".to_vec(),
        ),
        ("control tokens", b"<|im_start|>user\nx<|im_end|>".to_vec()),
    ]
}

/// A system and a user message in the canonical chat encoding.
fn french_chat() -> Vec<u8> {
    ChatInput::new(vec![
        ChatMessage::new(ChatRole::System, "Answer in French."),
        ChatMessage::new(ChatRole::User, "Hi!"),
    ])
    .unwrap()
    .encode()
}

/// What the provider computes for an embedding job (crates/provider/src/models.rs `execute`).
fn provider_bert_ids(input: &[u8]) -> Vec<u32> {
    let text = String::from_utf8_lossy(input);
    minilm().tokenize(&[text.as_ref()]).unwrap().remove(0)
}

/// What the provider computes for a generation job's prompt.
fn provider_llama_ids(input: &[u8], chat: bool) -> Result<Vec<u32>, piazza_llm::Error> {
    let generator = smollm2();
    let text = String::from_utf8_lossy(input);
    if chat {
        piazza_llm::chat_prompt_ids(generator, &piazza_llm::chat_messages_from_input(&text))
    } else {
        generator.tokenize(&text)
    }
}

#[test]
fn bert_ids_equal_the_provider_ids() {
    let embedder = minilm();
    let evidence = bert_evidence();
    eprintln!("BERT tokenizer evidence: {} bytes", evidence.len());
    for (label, input) in inputs() {
        let started = Instant::now();
        let ids = bert_ids(evidence, &embedder.tokenizer_hash(), &input).unwrap();
        let elapsed = started.elapsed();
        eprintln!("bert_ids({label}): {} ids in {elapsed:?}", ids.len());
        assert_eq!(ids, provider_bert_ids(&input), "{label}");
        assert!(ids.len() >= 2, "{label}: [CLS] and [SEP]");
    }
    let long = bert_ids(evidence, &embedder.tokenizer_hash(), &inputs()[4].1).unwrap();
    assert_eq!(long.len(), piazza_engine::MAX_TOKENS, "truncated");
}

#[test]
fn llama_ids_equal_the_provider_ids() {
    let generator = smollm2();
    let evidence = llama_evidence();
    eprintln!("Llama tokenizer evidence: {} bytes", evidence.len());
    for (label, input) in inputs() {
        for chat in [false, true] {
            let started = Instant::now();
            let ids = llama_ids(evidence, &generator.tokenizer_hash(), vocab(), &input, chat);
            let elapsed = started.elapsed();
            let ids = ids.unwrap();
            eprintln!(
                "llama_ids({label}, chat {chat}): {} ids in {elapsed:?}",
                ids.len()
            );
            assert_eq!(ids, provider_llama_ids(&input, chat).unwrap(), "{label}");
        }
    }
}

#[test]
fn chat_inputs_are_read_as_messages_and_json_is_plain_text() {
    let generator = smollm2();
    let hash = generator.tokenizer_hash();
    let chat = french_chat();
    let ids = llama_ids(llama_evidence(), &hash, vocab(), &chat, true).unwrap();
    let text = generator.tokenizer().decode(&ids);
    assert!(text.starts_with("system\nAnswer in French."), "{text:?}");
    assert!(
        !text.contains("SmolLM"),
        "no default system prompt: {text:?}"
    );
    // The same bytes as a plain (non-chat) prompt are the encoded text itself.
    let plain = llama_ids(llama_evidence(), &hash, vocab(), &chat, false).unwrap();
    assert_eq!(generator.tokenizer().decode(&plain).as_bytes(), chat);
    // A JSON message list is no longer parsed: it is one user message.
    let json =
        br#"[{"role":"system","content":"Answer in French."},{"role":"user","content":"Hi!"}]"#;
    let ids = llama_ids(llama_evidence(), &hash, vocab(), json, true).unwrap();
    let text = generator.tokenizer().decode(&ids);
    assert!(
        text.contains("SmolLM") && text.contains("user\n[{\"role\":\"system\""),
        "{text:?}"
    );
    // Plain chat text is one user message after SmolLM2's default system prompt.
    let ids = llama_ids(llama_evidence(), &hash, vocab(), b"Hi!", true).unwrap();
    let text = generator.tokenizer().decode(&ids);
    assert!(
        text.contains("SmolLM") && text.ends_with("user\nHi!\nassistant\n"),
        "{text:?}"
    );
}

#[test]
fn wrong_hashes_are_refused() {
    let mut bert_hash = minilm().tokenizer_hash();
    bert_hash[0] ^= 1;
    let error = bert_ids(bert_evidence(), &bert_hash, b"hi").unwrap_err();
    assert!(
        matches!(error, TokensError::TokenizerHash { .. }),
        "{error}"
    );
    eprintln!("{error}");

    let mut llama_hash = smollm2().tokenizer_hash();
    llama_hash[31] ^= 0x80;
    let error = llama_ids(llama_evidence(), &llama_hash, vocab(), b"hi", false).unwrap_err();
    assert!(
        matches!(error, TokensError::TokenizerHash { .. }),
        "{error}"
    );

    // Each model's evidence under the other's hash.
    let error = bert_ids(llama_evidence(), &minilm().tokenizer_hash(), b"hi").unwrap_err();
    assert!(
        matches!(error, TokensError::TokenizerHash { .. }),
        "{error}"
    );
    let llama_hash = smollm2().tokenizer_hash();
    let error = llama_ids(bert_evidence(), &llama_hash, vocab(), b"hi", true).unwrap_err();
    assert!(
        matches!(error, TokensError::TokenizerHash { .. }),
        "{error}"
    );
}

#[test]
fn right_hash_but_unusable_evidence_is_refused() {
    // The hash check passes (the record could commit to anything): the parser must refuse.
    let llama_hash = smollm2().tokenizer_hash();
    let error = llama_ids(llama_evidence(), &llama_hash, vocab() + 1, b"hi", false).unwrap_err();
    assert!(matches!(error, TokensError::Tokenizer { .. }), "{error}");
    eprintln!("{error}");
    for bytes in [&b""[..], b"{}", b"not json", b"piazza.llm.tokenizer.v1"] {
        let hash = piazza_engine::tokenizer_hash(bytes);
        let error = bert_ids(bytes, &hash, b"hi").unwrap_err();
        assert!(matches!(error, TokensError::Tokenizer { .. }), "{error}");
        let hash = piazza_llm::tokenizer::preimage_hash(bytes);
        let error = llama_ids(bytes, &hash, vocab(), b"hi", false).unwrap_err();
        assert!(matches!(error, TokensError::Tokenizer { .. }), "{error}");
    }
}

#[test]
fn inputs_the_tokenizer_refuses_are_input_errors() {
    // Over piazza-llm's 1 MiB text limit: the provider fails alike.
    let input = vec![b'a'; (1 << 20) + 1];
    let hash = smollm2().tokenizer_hash();
    let error = llama_ids(llama_evidence(), &hash, vocab(), &input, false).unwrap_err();
    assert!(matches!(error, TokensError::Input { .. }), "{error}");
    assert!(provider_llama_ids(&input, false).is_err());
}

/// `bytes` as evidence with a hash that matches them: Ok or Err, never a panic.
fn exercise_bert(bytes: &[u8]) {
    let _ = bert_ids(bytes, &piazza_engine::tokenizer_hash(bytes), b"Hello world");
}

fn exercise_llama(bytes: &[u8]) {
    let hash = piazza_llm::tokenizer::preimage_hash(bytes);
    let _ = llama_ids(bytes, &hash, vocab(), &french_chat(), true);
}

fn mutate(
    good: &[u8],
    edits: &[(prop::sample::Index, u8)],
    cut: Option<prop::sample::Index>,
) -> Vec<u8> {
    let mut bytes = good.to_vec();
    for (index, byte) in edits {
        let at = index.index(bytes.len());
        bytes[at] = *byte;
    }
    if let Some(cut) = cut {
        bytes.truncate(cut.index(bytes.len()));
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn mutated_bert_evidence_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let bytes = mutate(bert_evidence(), &edits, cut);
        prop_assume!(bytes != bert_evidence());
        // Against the real hash: always refused.
        let hash = minilm().tokenizer_hash();
        prop_assert!(
            matches!(bert_ids(&bytes, &hash, b"hi"), Err(TokensError::TokenizerHash { .. })),
            "mutated evidence passed the hash check"
        );
        exercise_bert(&bytes);
    }

    #[test]
    fn mutated_llama_evidence_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let bytes = mutate(llama_evidence(), &edits, cut);
        prop_assume!(bytes != llama_evidence());
        let hash = smollm2().tokenizer_hash();
        prop_assert!(
            matches!(llama_ids(&bytes, &hash, vocab(), b"hi", false), Err(TokensError::TokenizerHash { .. })),
            "mutated evidence passed the hash check"
        );
        exercise_llama(&bytes);
    }

    #[test]
    fn random_evidence_is_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        input in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let hash = piazza_engine::tokenizer_hash(&bytes);
        prop_assert!(bert_ids(&bytes, &hash, &input).is_err());
        let hash = piazza_llm::tokenizer::preimage_hash(&bytes);
        prop_assert!(llama_ids(&bytes, &hash, vocab(), &input, true).is_err());
    }

    #[test]
    fn arbitrary_inputs_match_the_provider(
        input in proptest::collection::vec(any::<u8>(), 0..256),
        chat in any::<bool>(),
    ) {
        let hash = minilm().tokenizer_hash();
        prop_assert_eq!(bert_ids(bert_evidence(), &hash, &input).unwrap(), provider_bert_ids(&input));
        let hash = smollm2().tokenizer_hash();
        prop_assert_eq!(
            llama_ids(llama_evidence(), &hash, vocab(), &input, chat).unwrap(),
            provider_llama_ids(&input, chat).unwrap()
        );
    }
}

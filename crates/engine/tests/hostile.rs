//! Hostile model files: truncated or corrupted safetensors, tokenizer.json and config.json give
//! typed errors, never panics.

mod common;

use piazza_engine::config::BertConfig;
use piazza_engine::safetensors::{SafeTensors, HEADER_BYTES_MAX};
use piazza_engine::{parse_tokenizer, SafeTensorsError};
use proptest::prelude::*;

/// A small valid file: an F32, an F16, a BF16 and an I64 tensor.
fn small_safetensors() -> Vec<u8> {
    let header = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"BF16","shape":[2,2],"data_offsets":[32,40]},"d":{"dtype":"I64","shape":[1],"data_offsets":[40,48]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend((0..48u8).map(|i| i.wrapping_mul(37)));
    bytes
}

/// Parsing and converting every tensor must not panic; it may fail.
fn exercise(bytes: Vec<u8>) -> Result<(), SafeTensorsError> {
    let file = SafeTensors::parse(bytes)?;
    let names: Vec<String> = file.tensors().keys().cloned().collect();
    for name in names {
        let _ = file.to_f32(&name);
    }
    Ok(())
}

#[test]
fn small_file_parses_and_converts() {
    let file = SafeTensors::parse(small_safetensors()).unwrap();
    assert_eq!(file.to_f32("a").unwrap().shape(), [2, 3]);
    assert_eq!(file.to_f32("b").unwrap().shape(), [4]);
    assert_eq!(file.to_f32("c").unwrap().shape(), [2, 2]);
    assert!(matches!(
        file.to_f32("d"),
        Err(SafeTensorsError::NotFloat { .. })
    ));
    assert!(matches!(
        file.to_f32("zz"),
        Err(SafeTensorsError::Missing { .. })
    ));
}

#[test]
fn known_bad_headers_are_typed_errors() {
    let with_header = |header: &str, data: usize| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data));
        SafeTensors::parse(bytes)
    };
    assert!(matches!(
        SafeTensors::parse(vec![1, 2, 3]),
        Err(SafeTensorsError::TooShort { .. })
    ));
    let mut huge = (HEADER_BYTES_MAX + 1).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(matches!(
        SafeTensors::parse(huge),
        Err(SafeTensorsError::HeaderLength { .. })
    ));
    let mut past_end = u64::MAX.to_le_bytes().to_vec();
    past_end.extend_from_slice(b"{}");
    assert!(matches!(
        SafeTensors::parse(past_end),
        Err(SafeTensorsError::HeaderLength { .. })
    ));
    let cases = [(
        r#"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#,
        SafeTensorsError::UnknownDtype {
            name: "a".into(),
            dtype: "F33".into(),
        },
    )];
    for (header, expected) in cases {
        assert_eq!(with_header(header, 4).unwrap_err(), expected);
    }
    let bad_offsets = [
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#,
        r#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#,
    ];
    for header in bad_offsets {
        let error = with_header(header, 4).unwrap_err();
        assert!(
            matches!(
                error,
                SafeTensorsError::BadOffsets { .. } | SafeTensorsError::BadShape { .. }
            ),
            "{header}: {error:?}"
        );
    }
    let overlap = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#;
    assert!(matches!(
        with_header(overlap, 8),
        Err(SafeTensorsError::Overlap { .. })
    ));
    assert!(matches!(
        with_header("{not json", 0),
        Err(SafeTensorsError::HeaderJson { .. })
    ));
    assert!(matches!(
        with_header(r#"{"a":{"dtype":"F32"}}"#, 0),
        Err(SafeTensorsError::HeaderJson { .. })
    ));
    // Zero-sized dimensions next to huge ones must not overflow stride arithmetic.
    let zero = r#"{"a":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}"#;
    if let Ok(file) = with_header(zero, 0) {
        let _ = file.to_f32("a");
    }
}

#[test]
fn truncated_real_model_is_an_error() {
    let bytes = std::fs::read(common::minilm_dir().join("model.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for cut in [
        0,
        7,
        8,
        100,
        header_end - 1,
        header_end,
        header_end + 1000,
        bytes.len() - 1,
    ] {
        assert!(
            SafeTensors::parse(bytes[..cut].to_vec()).is_err(),
            "cut at {cut}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn truncated_safetensors_never_panic(cut in 0usize..400) {
        let bytes = small_safetensors();
        let cut = cut.min(bytes.len());
        let result = exercise(bytes[..cut].to_vec());
        prop_assert!(cut == bytes.len() || result.is_err());
    }

    #[test]
    fn corrupted_safetensors_never_panic(
        edits in prop::collection::vec((0usize..400, any::<u8>()), 1..8),
    ) {
        let mut bytes = small_safetensors();
        let len = bytes.len();
        for (at, value) in edits {
            bytes[at % len] = value;
        }
        let _ = exercise(bytes);
    }
}

fn real_tokenizer() -> Vec<u8> {
    std::fs::read(common::minilm_dir().join("tokenizer.json")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn truncated_tokenizer_never_panics(fraction in 0.0f64..1.0) {
        let bytes = real_tokenizer();
        let cut = (bytes.len() as f64 * fraction) as usize;
        prop_assert!(parse_tokenizer(&bytes[..cut]).is_err());
    }

    #[test]
    fn corrupted_tokenizer_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = real_tokenizer();
        for (at, value) in edits {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(tokenizer) = parse_tokenizer(&bytes) {
            let _ = tokenizer.encode("Hello world, ünïcödé 🚀", true);
        }
    }

    #[test]
    fn corrupted_config_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = std::fs::read(common::minilm_dir().join("config.json")).unwrap();
        for (at, value) in edits {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        let _ = BertConfig::parse(&bytes);
    }
}

#[test]
fn tokenizer_targeted_corruptions_are_errors() {
    let text = String::from_utf8(real_tokenizer()).unwrap();
    for (from, to) in [
        ("\"WordPiece\"", "\"Nonsense\""),
        ("\"[UNK]\"", "42"),
        ("\"vocab\"", "\"vocabulary\""),
        ("\"BertPreTokenizer\"", "\"Split\""),
    ] {
        let changed = text.replacen(from, to, 1);
        assert_ne!(changed, text, "{from} present");
        let _ = parse_tokenizer(changed.as_bytes());
    }
    assert!(parse_tokenizer(b"").is_err());
    assert!(parse_tokenizer(b"{}").is_err());
}

#[test]
fn bad_configs_are_errors() {
    let good = std::fs::read_to_string(common::minilm_dir().join("config.json")).unwrap();
    assert!(BertConfig::parse(good.as_bytes()).is_ok());
    for (from, to) in [
        ("\"num_attention_heads\": 12", "\"num_attention_heads\": 7"),
        ("\"num_attention_heads\": 12", "\"num_attention_heads\": 0"),
        ("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\""),
        ("\"hidden_size\": 384", "\"hidden_size\": 99999999999"),
        ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": -1"),
    ] {
        let changed = good.replacen(from, to, 1);
        assert_ne!(changed, good, "{from} present");
        assert!(BertConfig::parse(changed.as_bytes()).is_err(), "{to}");
    }
}

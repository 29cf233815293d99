//! The automaton against serde_json and a validator of the schema subset written here.

use piazza_grammar::{Constraint, Grammar, SchemaError, State, TokenMask, Vocabulary};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;

/// Whether `value` is valid against `schema` (the supported subset, written independently of
/// the automaton).
fn valid(value: &Value, schema: &Value) -> bool {
    if let Some(alternatives) = schema.get("anyOf").and_then(Value::as_array) {
        return alternatives.iter().any(|s| valid(value, s));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.contains(value);
    }
    if let Some(c) = schema.get("const") {
        return c == value;
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return false,
    };
    types.iter().any(|t| match (*t, value) {
        ("null", Value::Null) | ("boolean", Value::Bool(_)) => true,
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("string", Value::String(s)) => schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_none_or(|max| s.chars().count() as u64 <= max),
        ("array", Value::Array(items)) => {
            let max = schema.get("maxItems").and_then(Value::as_u64);
            max.is_none_or(|max| items.len() as u64 <= max)
                && items.iter().all(|i| valid(i, &schema["items"]))
        }
        ("object", Value::Object(members)) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let required = schema.get("required").and_then(Value::as_array);
            required.is_none_or(|r| {
                r.iter()
                    .all(|n| n.as_str().is_some_and(|n| members.contains_key(n)))
            }) && members.iter().all(|(k, v)| {
                properties
                    .and_then(|p| p.get(k))
                    .is_some_and(|s| valid(v, s))
            })
        }
        _ => false,
    })
}

fn weather() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"}
        },
        "required": ["city", "unit"],
        "additionalProperties": false
    })
}

fn person() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": ["integer", "null"]},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
            "alive": {"type": "boolean"},
            "pet": {"anyOf": [
                {"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}}, "required": ["kind"]},
                {"type": "object", "properties": {"kind": {"const": "dog"}}, "required": ["kind"]},
                {"type": "null"}
            ]}
        },
        "required": ["name", "alive"]
    })
}

/// What the gateway builds for tools with `tool_choice: auto`.
fn tools() -> Value {
    json!({"anyOf": [
        {"type": "object", "properties": {
            "name": {"const": "get_weather"},
            "arguments": weather()
        }, "required": ["name", "arguments"], "additionalProperties": false},
        {"type": "object", "properties": {
            "name": {"const": "get_time"},
            "arguments": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}}, "required": ["zone"]}
        }, "required": ["name", "arguments"], "additionalProperties": false}
    ]})
}

fn grammar(schema: &Value) -> Grammar {
    Grammar::from_schema(schema.to_string().as_bytes()).unwrap()
}

/// How the automaton reads `input`: "complete", "partial" or "rejected".
fn read(grammar: &Grammar, input: &str) -> &'static str {
    match grammar.allowed(&grammar.start(), input.as_bytes()) {
        None => "rejected",
        Some(s) if grammar.is_complete(&s) => "complete",
        Some(_) => "partial",
    }
}

fn check(schema: &Value, cases: &[(&str, &str)]) {
    let g = grammar(schema);
    for (input, expect) in cases {
        assert_eq!(read(&g, input), *expect, "{input}");
        if *expect == "complete" {
            let value: Value = serde_json::from_str(input).unwrap();
            assert!(valid(&value, schema), "{input}");
        }
    }
}

#[test]
fn objects_follow_required_order_and_bounds() {
    check(
        &weather(),
        &[
            (r#"{"city":"Paris","unit":"celsius"}"#, "complete"),
            (r#"{"city":"Paris","days":3,"unit":"celsius"}"#, "complete"),
            (r#"{"city":"Paris","days":-3"#, "partial"),
            (r#"{"city":"Paris","unit":"celsius","days":3}"#, "rejected"),
            (r#"{"city":"Paris"}"#, "rejected"),
            (r#"{"unit":"celsius"}"#, "rejected"),
            (r#"{"city":"Paris","unit":"kelvin"}"#, "rejected"),
            (r#"{"city":"Paris","days":3.5"#, "rejected"),
            (r#"{"city":"Paris","days":-0"#, "rejected"),
            (r#"{"city":"Paris","unit":"celsius","other":1}"#, "rejected"),
            (r#"{"city": "Paris"#, "rejected"),
            (r#"{"city":"abcdefghijklmnopqrstuvwxyz"#, "rejected"),
            (r#"{"city":"Zürich \"\n\\","#, "partial"),
            (r#"{"city":"\u00e9"#, "rejected"),
            ("{\"city\":\"a\u{1}", "rejected"),
        ],
    );
    check(
        &person(),
        &[
            (r#"{"alive":true,"name":"a"}"#, "complete"),
            (r#"{"name":"a","alive":true}"#, "rejected"),
            (
                r#"{"age":null,"alive":false,"name":"a","pet":{"kind":"cat","lives":9},"score":-0.25,"tags":["x","y"]}"#,
                "complete",
            ),
            (
                r#"{"alive":true,"name":"a","tags":["1","2","3","4"]"#,
                "rejected",
            ),
            (
                r#"{"alive":true,"name":"a","pet":{"kind":"dog","lives":1}}"#,
                "rejected",
            ),
            (r#"{"alive":true,"name":"a","pet":null}"#, "complete"),
            (r#"{"alive":true,"name":"a","score":01"#, "rejected"),
            (r#"{"alive":true,"name":"a","score":1."#, "partial"),
            (r#"{"alive":true,"name":"a","score":1.}"#, "rejected"),
        ],
    );
}

#[test]
fn properties_come_in_the_schema_documents_order() {
    let schema = br#"{"type":"object","properties":{"b":{"type":"integer"},"a":{"type":"integer"}},"required":["b","a"]}"#;
    let g = Grammar::from_schema(schema).unwrap();
    assert_eq!(read(&g, r#"{"b":1,"a":2}"#), "complete");
    assert_eq!(read(&g, r#"{"a":2,"b":1}"#), "rejected");
}

#[test]
fn invalid_utf8_and_surrogates_are_refused() {
    let g = grammar(&json!({"type": "string"}));
    let start = g.start();
    assert!(g.allowed(&start, "\"é€😀\"".as_bytes()).is_some());
    for bad in [
        &b"\"\xc0\xaf"[..],
        b"\"\xed\xa0\x80",
        b"\"\xf4\x90",
        b"\"\xff",
        b"\"\xe2\x82\"",
    ] {
        assert!(g.allowed(&start, bad).is_none(), "{bad:?}");
    }
}

#[test]
fn min_bytes_to_complete_is_exact_on_known_prefixes() {
    let g = grammar(&weather());
    let cases = [
        ("", r#"{"city":"","unit":"celsius"}"#.len()),
        (r#"{"city":"ab"#, r#"","unit":"celsius"}"#.len()),
        (r#"{"city":"ab","unit":"f"#, r#"ahrenheit"}"#.len()),
        (r#"{"city":"ab","days":1"#, r#","unit":"celsius"}"#.len()),
    ];
    for (prefix, expect) in cases {
        let s = g.allowed(&g.start(), prefix.as_bytes()).unwrap();
        assert_eq!(g.min_bytes_to_complete(&s), expect as u64, "{prefix}");
    }
}

fn refused(schema: &str) -> SchemaError {
    Grammar::from_schema(schema.as_bytes()).unwrap_err()
}

#[test]
fn hostile_and_unsupported_schemas_are_refused_by_name() {
    let big = format!(
        r#"{{"type":"string","description":"{}"}}"#,
        "x".repeat(20_000)
    );
    assert!(matches!(refused(&big), SchemaError::TooLarge { .. }));
    let mut deep = String::from(r#"{"type":"string"}"#);
    for _ in 0..12 {
        deep = format!(r#"{{"type":"array","items":{deep}}}"#);
    }
    assert!(matches!(refused(&deep), SchemaError::TooDeep { .. }));
    let mut nested_json = "[".repeat(5000);
    nested_json.push_str(&"]".repeat(5000));
    assert!(matches!(refused(&nested_json), SchemaError::Json(_)));
    let wide = format!(
        r#"{{"anyOf":[{}]}}"#,
        vec![r#"{"anyOf":[{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"},"c":{"type":"string"}}},{"type":"string"}]}"#; 30].join(",")
    );
    assert!(
        matches!(refused(&wide), SchemaError::TooWide { .. }),
        "{:?}",
        refused(&wide)
    );
    for (schema, keyword) in [
        (r#"{"type":"string","pattern":"a+"}"#, "pattern"),
        (r##"{"$ref":"#/$defs/a"}"##, "$ref"),
        (r#"{"type":"integer","minimum":3}"#, "minimum"),
        (
            r#"{"type":"object","additionalProperties":true}"#,
            "additionalProperties other than false",
        ),
        (r#"{"type":"number","maxLength":3}"#, "maxLength"),
        (r#"{"type":"tuple"}"#, "type `tuple`"),
    ] {
        match refused(schema) {
            SchemaError::Unsupported { keyword: k, .. } => assert_eq!(k, keyword, "{schema}"),
            other => panic!("{schema}: {other}"),
        }
    }
    for schema in [
        "[]",
        "{}",
        r#"{"type":"object","required":["a"]}"#,
        r#"{"type":"string","maxLength":100000}"#,
        r#"{"type":"array"}"#,
        r#"{"enum":[]}"#,
        r#"{"enum":[{"a":1}]}"#,
        r#"{"type":"integer","enum":["a"]}"#,
        r#"{"type":"string","type":"number"}"#,
    ] {
        assert!(
            matches!(refused(schema), SchemaError::Invalid { .. }),
            "{schema}: {:?}",
            Grammar::from_schema(schema.as_bytes())
        );
    }
}

#[test]
fn constraint_header_round_trips_and_refuses_non_canonical_bytes() {
    let schema = weather().to_string().into_bytes();
    for constraint in [Constraint::JsonSchema(schema), Constraint::JsonObject] {
        let wrapped = constraint.wrap(b"hello");
        assert_eq!(
            Constraint::split(&wrapped).unwrap(),
            Some((constraint.clone(), &b"hello"[..]))
        );
        // Every truncation is an error or a different (shorter) inner input, never a panic.
        for end in 0..wrapped.len() {
            if let Ok(Some((c, inner))) = Constraint::split(&wrapped[..end]) {
                assert_eq!(c, constraint);
                assert!(inner.len() < 5);
            }
        }
    }
    assert_eq!(Constraint::split(b"plain text").unwrap(), None);
    for bad in [
        &b"\x1epiazza-constraint/1\njson_schema\n02\n{}\n"[..],
        b"\x1epiazza-constraint/1\njson_object\n2\n{}\n",
        b"\x1epiazza-constraint/1\nregex\n0\n\n",
        b"\x1epiazza-constraint/1\njson_schema\n99999\n{}\n",
        b"\x1epiazza-constraint/1\njson_schema\n2\n{}",
    ] {
        assert!(Constraint::split(bad).is_err(), "{bad:?}");
    }
}

/// The bytes allowed after `state`.
fn next_bytes(g: &Grammar, state: &State) -> Vec<(u8, State)> {
    (0..=255u8)
        .filter_map(|b| g.allowed(state, &[b]).map(|s| (b, s)))
        .collect()
}

/// Walk `choices` (each picks one of the allowed bytes), then complete along a shortest path;
/// the text must be complete after exactly the promised number of bytes.
fn walk(g: &Grammar, choices: &[u16]) -> Vec<u8> {
    let mut state = g.start();
    let mut text = Vec::new();
    for &choice in choices {
        let next = next_bytes(g, &state);
        if next.is_empty() {
            break;
        }
        let (b, s) = next[choice as usize % next.len()].clone();
        text.push(b);
        state = s;
    }
    let promised = g.min_bytes_to_complete(&state);
    let mut used = 0u64;
    while !g.is_complete(&state) {
        let need = g.min_bytes_to_complete(&state);
        let (b, s) = next_bytes(g, &state)
            .into_iter()
            .find(|(_, s)| g.min_bytes_to_complete(s) + 1 == need)
            .expect("a shortest completion exists");
        text.push(b);
        state = s;
        used += 1;
    }
    assert_eq!(used, promised, "{}", String::from_utf8_lossy(&text));
    text
}

fn complete_texts_validate(schema: &Value, choices: &[u16]) {
    let g = grammar(schema);
    let text = walk(&g, choices);
    let value: Value = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&text)));
    assert!(valid(&value, schema), "{}", String::from_utf8_lossy(&text));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn weather_texts_parse_and_validate(choices in proptest::collection::vec(any::<u16>(), 0..80)) {
        complete_texts_validate(&weather(), &choices);
    }

    #[test]
    fn person_texts_parse_and_validate(choices in proptest::collection::vec(any::<u16>(), 0..120)) {
        complete_texts_validate(&person(), &choices);
    }

    #[test]
    fn tool_call_texts_parse_and_validate(choices in proptest::collection::vec(any::<u16>(), 0..80)) {
        complete_texts_validate(&tools(), &choices);
    }

    #[test]
    fn any_object_texts_parse_as_objects(choices in proptest::collection::vec(any::<u16>(), 0..120)) {
        let g = Grammar::any_object();
        let text = walk(&g, &choices);
        let value: Value = serde_json::from_slice(&text).unwrap();
        prop_assert!(value.is_object());
    }

    #[test]
    fn arbitrary_schema_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Grammar::from_schema(&bytes);
        let _ = Constraint::split(&bytes);
    }
}

/// A toy byte-level vocabulary: every single byte, plus some multi-byte tokens.
fn vocabulary() -> Arc<Vocabulary> {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for t in [
        "{\"", "\":", "\",\"", "city", "unit", "celsius", "\"}", " the", "Paris", "",
    ] {
        tokens.push(t.as_bytes().to_vec());
    }
    tokens.push(b"<eos>".to_vec());
    let eos = tokens.len() as u32 - 1;
    Arc::new(Vocabulary::new(tokens, Some(eos)).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any token choice the mask allows ends, within `max_tokens`, in a valid value.
    #[test]
    fn masked_generations_complete_within_the_budget(
        choices in proptest::collection::vec(any::<u16>(), 40),
        max_tokens in 28usize..40,
    ) {
        let vocab = vocabulary();
        let mask = TokenMask::new(grammar(&weather()), vocab.clone(), max_tokens).unwrap();
        let mut generated: Vec<u32> = Vec::new();
        let mut allowed = vec![false; vocab.len()];
        let mut ended = false;
        for &choice in &choices {
            if generated.len() == max_tokens {
                break;
            }
            mask.allowed(&generated, &mut allowed).unwrap();
            let ids: Vec<u32> = (0..allowed.len() as u32).filter(|&i| allowed[i as usize]).collect();
            prop_assert!(!ids.is_empty());
            prop_assert!(!allowed[vocab.len() - 2], "the empty token is never allowed");
            let id = ids[choice as usize % ids.len()];
            if id == vocab.eos() {
                ended = true;
                break;
            }
            generated.push(id);
        }
        prop_assert!(ended || generated.len() == max_tokens);
        let text: Vec<u8> = generated
            .iter()
            .flat_map(|&id| token_bytes(id))
            .collect();
        let value: Value = serde_json::from_slice(&text).unwrap();
        prop_assert!(valid(&value, &weather()));
    }
}

fn token_bytes(id: u32) -> Vec<u8> {
    let extra = [
        "{\"", "\":", "\",\"", "city", "unit", "celsius", "\"}", " the", "Paris", "",
    ];
    match id {
        0..=255 => vec![id as u8],
        _ => extra[id as usize - 256].as_bytes().to_vec(),
    }
}

#[test]
fn mask_refuses_a_budget_too_small_and_tokens_it_did_not_allow() {
    let vocab = vocabulary();
    let needed = r#"{"city":"","unit":"celsius"}"#.len();
    assert!(TokenMask::new(grammar(&weather()), vocab.clone(), needed - 1).is_err());
    let mask = TokenMask::new(grammar(&weather()), vocab.clone(), needed).unwrap();
    assert!(mask.state_after(&[u32::from(b'x')]).is_err());
    let mut allowed = vec![false; vocab.len()];
    assert!(mask
        .allowed(&vec![u32::from(b'{'); needed], &mut allowed)
        .is_err());
    // With exactly the shortest value's budget, every step allows only its shortest path.
    let mut generated = Vec::new();
    while generated.len() < needed {
        mask.allowed(&generated, &mut allowed).unwrap();
        let ids: Vec<usize> = (0..allowed.len()).filter(|&i| allowed[i]).collect();
        generated.push(ids[0] as u32);
    }
    let text: Vec<u8> = generated.iter().flat_map(|&id| token_bytes(id)).collect();
    assert_eq!(text, br#"{"city":"","unit":"celsius"}"#);
    assert!(Vocabulary::new(vec![vec![b'a']], Some(0)).is_err());
    // Control bytes and bytes that never occur in UTF-8 need no token of their own; a byte of a
    // schema's literal does.
    let mut tokens: Vec<Vec<u8>> = (0..=255u8)
        .filter(|&b| b >= 0x20 && b != 0xD1)
        .map(|b| vec![b])
        .collect();
    tokens.push(b"\xd1\x84".to_vec());
    tokens.push(Vec::new());
    let eos = Some(tokens.len() as u32 - 1);
    let vocab = Arc::new(Vocabulary::new(tokens, eos).unwrap());
    let cyrillic = grammar(&json!({"enum": ["ф"]}));
    assert!(TokenMask::new(cyrillic, vocab.clone(), 8).is_err());
    assert!(TokenMask::new(grammar(&json!({"type": "string"})), vocab, 8).is_ok());
    assert!(Vocabulary::new((0..=255u8).map(|b| vec![b]).collect(), None).is_err());
}

#[test]
fn generic_json_object_is_within_limits() {
    let g = Grammar::any_object();
    assert_eq!(read(&g, r#"{"a":[1,{"b":null}],"c":"d"}"#), "complete");
    assert_eq!(read(&g, "[1]"), "rejected");
}

//! Which request fields each endpoint takes. A field the gateway cannot honour is refused with
//! 400 naming it, never silently ignored: an answer without the tool call, JSON mode or log
//! probabilities a client asked for would look like a valid answer and be wrong.
//!
//! A field set to `null` counts as absent (some clients send every field).

use crate::errors::ApiError;
use serde_json::{Map, Value};

/// The endpoints that take a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Embeddings,
    Chat,
    Completions,
}

/// What the gateway does with one field.
#[derive(Clone, Copy)]
enum Rule {
    /// Read into the typed request (and checked there).
    Used,
    /// Accepted and ignored: it does not change the answer.
    Ignored,
    /// Accepted only at its default value, which `is_default` recognises; `what` says why
    /// other values are refused.
    DefaultOnly {
        is_default: fn(&Value) -> bool,
        what: &'static str,
    },
    /// Refused whatever its value.
    Unsupported { what: &'static str },
    /// Read into the typed request when `is_valid` accepts its shape; otherwise a 400 saying
    /// `what` it must be.
    Shaped {
        is_valid: fn(&Value) -> bool,
        what: &'static str,
    },
}

fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}
fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}
fn is_one(v: &Value) -> bool {
    v.as_u64() == Some(1)
}
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}
/// A list of `{"type": "function", "function": {"name": ...}}` (the rest is checked when the
/// tools are compiled, `generation::structured`).
fn is_tool_list(v: &Value) -> bool {
    v.as_array().is_some_and(|tools| {
        tools.iter().all(|t| {
            t.get("type").and_then(Value::as_str) == Some("function")
                && t.get("function")
                    .and_then(|f| f.get("name"))
                    .is_some_and(Value::is_string)
        })
    })
}
fn is_none_choice(v: &Value) -> bool {
    v.as_str() == Some("none")
}
fn is_text_only(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().all(|m| m.as_str() == Some("text")))
}

const NO_TOOLS: &str = "the deprecated `functions` are not supported (use `tools`)";
const NO_LOGPROBS: &str = "log probabilities are not returned (providers post only the text)";
const NO_PENALTIES: &str = "frequency and presence penalties are not supported";

/// Fields of both generation endpoints.
fn generation_rule(name: &str) -> Option<Rule> {
    let default_only = |is_default, what| Some(Rule::DefaultOnly { is_default, what });
    match name {
        "model" | "max_tokens" | "temperature" | "top_p" | "seed" | "stop" | "stream"
        | "stream_options" | "n" => Some(Rule::Used),
        "user" | "metadata" | "store" | "service_tier" | "prompt_cache_key"
        | "safety_identifier" => Some(Rule::Ignored),
        "logit_bias" => default_only(is_empty, "`logit_bias` is not supported"),
        "frequency_penalty" | "presence_penalty" => default_only(is_zero, NO_PENALTIES),
        _ => None,
    }
}

fn rule(endpoint: Endpoint, name: &str) -> Option<Rule> {
    let default_only = |is_default, what| Some(Rule::DefaultOnly { is_default, what });
    match endpoint {
        Endpoint::Embeddings => match name {
            "model" | "input" | "encoding_format" | "dimensions" => Some(Rule::Used),
            "user" => Some(Rule::Ignored),
            "stream" => Some(Rule::Unsupported {
                what: "embeddings are not streamed",
            }),
            _ => None,
        },
        Endpoint::Chat => match name {
            "messages" | "max_completion_tokens" => Some(Rule::Used),
            // One tool call per answer: the flag changes nothing.
            "parallel_tool_calls" => Some(Rule::Ignored),
            // Compiled into a constraint (`generation::structured`), checked there.
            "tool_choice" | "response_format" => Some(Rule::Used),
            "tools" => Some(Rule::Shaped {
                is_valid: is_tool_list,
                what: "a list of {\"type\": \"function\", \"function\": {\"name\": ...}}",
            }),
            "functions" => default_only(is_empty, NO_TOOLS),
            "function_call" => default_only(is_none_choice, NO_TOOLS),
            "logprobs" => default_only(is_false, NO_LOGPROBS),
            "top_logprobs" => default_only(is_zero, NO_LOGPROBS),
            "modalities" => default_only(is_text_only, "only text output is supported"),
            "audio" => Some(Rule::Unsupported {
                what: "audio output is not supported",
            }),
            "prediction" => Some(Rule::Unsupported {
                what: "predicted outputs are not supported",
            }),
            "reasoning_effort" | "verbosity" => Some(Rule::Unsupported {
                what: "the models served here take no reasoning or verbosity setting",
            }),
            "web_search_options" => Some(Rule::Unsupported {
                what: "web search is not supported",
            }),
            _ => generation_rule(name),
        },
        Endpoint::Completions => match name {
            "prompt" => Some(Rule::Used),
            "echo" => default_only(is_false, "`echo` is not supported"),
            "best_of" => default_only(is_one, "only `best_of: 1` is supported"),
            "logprobs" => default_only(is_zero, NO_LOGPROBS),
            "suffix" => Some(Rule::Unsupported {
                what: "`suffix` (insertion) is not supported",
            }),
            _ => generation_rule(name),
        },
    }
}

/// The field's name with the lifetime the error needs: every name a rule refuses is listed
/// here (an unknown field is named in the message).
fn static_name(name: &str) -> Option<&'static str> {
    const NAMES: &[&str] = &[
        "stream",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "response_format",
        "logprobs",
        "top_logprobs",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
        "echo",
        "best_of",
        "suffix",
        "logit_bias",
        "frequency_penalty",
        "presence_penalty",
    ];
    NAMES.iter().copied().find(|n| *n == name)
}

/// Refuses the first field (in name order) that `endpoint` cannot honour.
pub fn check(endpoint: Endpoint, body: &Map<String, Value>) -> Result<(), ApiError> {
    let mut fields: Vec<(&String, &Value)> = body.iter().collect();
    fields.sort_by_key(|(name, _)| *name);
    for (name, value) in fields {
        if value.is_null() {
            continue;
        }
        let refused = match rule(endpoint, name) {
            Some(Rule::Used | Rule::Ignored) => continue,
            Some(Rule::DefaultOnly { is_default, what }) => {
                if is_default(value) {
                    continue;
                }
                what
            }
            Some(Rule::Unsupported { what }) => what,
            Some(Rule::Shaped { is_valid, what }) => {
                if is_valid(value) {
                    continue;
                }
                let param = static_name(name).unwrap_or("request");
                return Err(ApiError::invalid(
                    Some(param),
                    format!("`{name}` must be {what}"),
                ));
            }
            None => {
                return Err(ApiError {
                    code: Some("unknown_parameter"),
                    ..ApiError::invalid(
                        None,
                        format!("Unrecognized request argument supplied: {name}"),
                    )
                })
            }
        };
        let param = static_name(name).unwrap_or("request");
        return Err(ApiError::unsupported(
            param,
            format!("`{name}` is not supported by this gateway: {refused}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    fn check_json(endpoint: Endpoint, body: Value) -> Result<(), ApiError> {
        check(endpoint, body.as_object().expect("an object"))
    }

    #[test]
    fn unsupported_fields_are_400_naming_them() {
        let chat = |extra: Value| {
            let mut body = json!({"model": "m", "messages": []});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            body
        };
        for (endpoint, body, param) in [
            (
                Endpoint::Chat,
                chat(json!({"functions": [{"name": "f"}]})),
                "functions",
            ),
            (
                Endpoint::Chat,
                chat(json!({"function_call": {"name": "f"}})),
                "function_call",
            ),
            (Endpoint::Chat, chat(json!({"logprobs": true})), "logprobs"),
            (
                Endpoint::Chat,
                chat(json!({"top_logprobs": 3})),
                "top_logprobs",
            ),
            (
                Endpoint::Chat,
                chat(json!({"presence_penalty": 0.5})),
                "presence_penalty",
            ),
            (
                Endpoint::Chat,
                chat(json!({"logit_bias": {"50256": -100}})),
                "logit_bias",
            ),
            (
                Endpoint::Chat,
                chat(json!({"modalities": ["text", "audio"]})),
                "modalities",
            ),
            (
                Endpoint::Chat,
                chat(json!({"reasoning_effort": "low"})),
                "reasoning_effort",
            ),
            (
                Endpoint::Completions,
                json!({"model": "m", "prompt": "p", "echo": true}),
                "echo",
            ),
            (
                Endpoint::Completions,
                json!({"model": "m", "prompt": "p", "best_of": 3}),
                "best_of",
            ),
            (
                Endpoint::Completions,
                json!({"model": "m", "prompt": "p", "logprobs": 2}),
                "logprobs",
            ),
            (
                Endpoint::Completions,
                json!({"model": "m", "prompt": "p", "suffix": "end"}),
                "suffix",
            ),
            (
                Endpoint::Embeddings,
                json!({"model": "m", "input": "x", "stream": true}),
                "stream",
            ),
        ] {
            let e = check_json(endpoint, body.clone()).expect_err(&body.to_string());
            assert_eq!(
                (e.status, e.kind, e.param),
                (
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some(param)
                ),
                "{body}"
            );
            assert!(e.message.contains(param), "{}", e.message);
        }
    }

    #[test]
    fn unknown_fields_are_named_in_the_message() {
        let e = check_json(
            Endpoint::Embeddings,
            json!({"model": "m", "input": "x", "n": 2}),
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "Unrecognized request argument supplied: n");
    }

    #[test]
    fn defaults_harmless_fields_and_nulls_are_accepted() {
        let chat = json!({
            "model": "m", "messages": [], "user": "u", "stream": true,
            "stream_options": {"include_usage": true}, "tools": [], "tool_choice": "none",
            "response_format": {"type": "text"}, "logprobs": false, "top_logprobs": 0,
            "n": 1, "frequency_penalty": 0, "presence_penalty": 0.0, "logit_bias": {},
            "parallel_tool_calls": true, "metadata": {"a": "b"}, "store": false,
            "modalities": ["text"], "audio": null, "functions": null, "seed": 7,
        });
        check_json(Endpoint::Chat, chat).unwrap();
        check_json(
            Endpoint::Completions,
            json!({"model": "m", "prompt": "p", "echo": false, "best_of": 1, "logprobs": null, "suffix": null, "user": "u"}),
        )
        .unwrap();
        check_json(
            Endpoint::Embeddings,
            json!({"model": "m", "input": "x", "user": "u", "encoding_format": "float", "stream": null}),
        )
        .unwrap();
    }
}

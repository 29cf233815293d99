//! Structured outputs: `response_format` (`json_object`, `json_schema`) and `tools` with
//! `tool_choice` become a constraint in front of the job's input (`piazza_grammar`,
//! docs/grammar.md), which the provider's sample op and every re-execution apply. `auto` and
//! `required` make the model call one of the tools (an `anyOf` over `{name, arguments}`
//! objects), a named tool that one, `none` plain text. The tools and the schema are also shown
//! to the model in a system message.

use piazza_grammar::{Constraint, Grammar};
use serde_json::{json, Value};

use crate::errors::ApiError;

/// Most tools one request may offer.
pub(crate) const TOOLS_MAX: usize = 16;
/// Longest tool name, in bytes (OpenAI's limit).
const TOOL_NAME_BYTES_MAX: usize = 64;

/// What the answer's text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// JSON content.
    Json,
    /// One tool call, written as `{"name": ..., "arguments": {...}}`.
    ToolCall,
}

/// A request's constraint, what its answer is, and the system message that explains it.
pub(crate) struct Structured {
    pub constraint: Constraint,
    pub output: Output,
    pub instruction: String,
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(Some(param), message)
}

/// The tools `tool_choice` leaves: `(name, description, parameters)` each.
fn chosen_tools(
    tools: &[Value],
    tool_choice: Option<&Value>,
) -> Result<Vec<(String, String, Value)>, ApiError> {
    if tools.len() > TOOLS_MAX {
        return Err(invalid("tools", format!("at most {TOOLS_MAX} tools")));
    }
    let mut all = Vec::with_capacity(tools.len());
    for tool in tools {
        let function = tool
            .get("function")
            .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"))
            .ok_or_else(|| {
                invalid(
                    "tools",
                    "each tool is `{\"type\": \"function\", \"function\": {...}}`",
                )
            })?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= TOOL_NAME_BYTES_MAX
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
            .ok_or_else(|| {
                invalid(
                    "tools",
                    format!(
                        "a tool's `name` is 1 to {TOOL_NAME_BYTES_MAX} of a-z, A-Z, 0-9, _ and -"
                    ),
                )
            })?;
        let description = function
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let parameters = function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        all.push((name.to_string(), description, parameters));
    }
    match tool_choice {
        None | Some(Value::Null) => Ok(all),
        Some(Value::String(s)) if s == "auto" || s == "required" => Ok(all),
        Some(Value::String(s)) if s == "none" => Ok(Vec::new()),
        Some(choice) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice", "`tool_choice` is \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}"))?;
            let one: Vec<_> = all.into_iter().filter(|(n, _, _)| n == name).collect();
            if one.is_empty() {
                return Err(invalid("tool_choice", format!("no tool is named `{name}`")));
            }
            Ok(one)
        }
    }
}

/// The schema of one call of each tool: `{"name": <const>, "arguments": <parameters>}`,
/// written by hand so `name` comes first (the automaton keeps the document's order).
fn tool_call_schema(tools: &[(String, String, Value)]) -> String {
    let one = |(name, _, parameters): &(String, String, Value)| {
        format!(
            r#"{{"type":"object","properties":{{"name":{{"const":{}}},"arguments":{}}},"required":["name","arguments"],"additionalProperties":false}}"#,
            Value::String(name.clone()),
            parameters
        )
    };
    match tools {
        [tool] => one(tool),
        _ => format!(
            r#"{{"anyOf":[{}]}}"#,
            tools.iter().map(one).collect::<Vec<_>>().join(",")
        ),
    }
}

/// The structured output a chat request asks for, checked (a schema the automaton cannot take,
/// or one whose shortest value does not fit in `max_tokens`, is a 400 naming the field).
pub(crate) fn from_request(
    response_format: Option<&Value>,
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    max_tokens: u64,
) -> Result<Option<Structured>, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => chosen_tools(list, tool_choice)?,
        Some(_) => return Err(invalid("tools", "`tools` must be a list")),
    };
    // A call can be required only of tools the request lists.
    let requires_call = !matches!(
        tool_choice,
        None | Some(Value::Null) | Some(Value::String(_))
    ) || tool_choice.and_then(Value::as_str) == Some("required");
    if tools.is_empty() && requires_call {
        return Err(invalid(
            "tool_choice",
            "`tool_choice` asks for a tool call but `tools` lists none",
        ));
    }
    let format = response_format
        .filter(|f| !f.is_null())
        .map(|f| (f.get("type").and_then(Value::as_str), f));
    let (param, structured) = if !tools.is_empty() {
        if format.is_some_and(|(kind, _)| kind != Some("text")) {
            return Err(invalid(
                "response_format",
                "`response_format` cannot be combined with tool calls",
            ));
        }
        let listing: Vec<String> = tools
            .iter()
            .map(|(name, description, parameters)| {
                format!("- {name}: {description} Arguments (JSON schema): {parameters}")
            })
            .collect();
        let instruction = format!(
            "You can call these tools:\n{}\nAnswer with one JSON object {{\"name\": <tool name>, \"arguments\": <its arguments>}}.",
            listing.join("\n")
        );
        let constraint = Constraint::JsonSchema(tool_call_schema(&tools).into_bytes());
        (
            "tools",
            Structured {
                constraint,
                output: Output::ToolCall,
                instruction,
            },
        )
    } else {
        match format {
            None | Some((Some("text"), _)) => return Ok(None),
            Some((Some("json_object"), _)) => (
                "response_format",
                Structured {
                    constraint: Constraint::JsonObject,
                    output: Output::Json,
                    instruction: "Answer with one JSON object.".into(),
                },
            ),
            Some((Some("json_schema"), f)) => {
                let schema = f
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .ok_or_else(|| invalid("response_format", "`json_schema` needs a `schema`"))?;
                (
                    "response_format",
                    Structured {
                        constraint: Constraint::JsonSchema(schema.to_string().into_bytes()),
                        output: Output::Json,
                        instruction: format!(
                            "Answer with JSON that follows this JSON schema: {schema}"
                        ),
                    },
                )
            }
            Some(_) => {
                return Err(invalid(
                    "response_format",
                    "`response_format.type` is \"text\", \"json_object\" or \"json_schema\"",
                ))
            }
        }
    };
    let grammar: Grammar = structured
        .constraint
        .grammar()
        .map_err(|e| invalid(param, e.to_string()))?;
    let needed = grammar.min_bytes_to_complete(&grammar.start());
    if needed > max_tokens {
        return Err(invalid(
            "max_tokens",
            format!(
                "the shortest valid answer takes {needed} tokens; `max_tokens` is {max_tokens}"
            ),
        ));
    }
    Ok(Some(structured))
}

/// A tool call's answer from the generated text: `(name, arguments as JSON text)`.
pub(crate) fn tool_call(text: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(text).ok()?;
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = value.get("arguments")?.to_string();
    Some((name, arguments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time"}}])
    }

    #[test]
    fn tools_compile_to_one_call_of_the_chosen_tools() {
        let s = from_request(None, Some(&weather()), None, 64)
            .unwrap()
            .unwrap();
        assert_eq!(s.output, Output::ToolCall);
        let g = s.constraint.grammar().unwrap();
        for (text, ok) in [
            (
                r#"{"name":"get_weather","arguments":{"city":"Oslo"}}"#,
                true,
            ),
            (r#"{"name":"get_time","arguments":{}}"#, true),
            (r#"{"name":"get_time","arguments":{"city":"Oslo"}}"#, false),
            (r#"{"arguments":{},"name":"get_time"}"#, false),
        ] {
            let complete = g
                .allowed(&g.start(), text.as_bytes())
                .is_some_and(|st| g.is_complete(&st));
            assert_eq!(complete, ok, "{text}");
        }
        assert_eq!(
            tool_call(r#"{"name":"get_time","arguments":{}}"#),
            Some(("get_time".into(), "{}".into()))
        );
        let named = json!({"type": "function", "function": {"name": "get_time"}});
        let s = from_request(None, Some(&weather()), Some(&named), 64)
            .unwrap()
            .unwrap();
        let g = s.constraint.grammar().unwrap();
        assert!(g.allowed(&g.start(), br#"{"name":"get_w"#).is_none());
        assert!(
            from_request(None, Some(&weather()), Some(&json!("none")), 64)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_required_call_without_tools_is_a_400_naming_tool_choice() {
        let named = json!({"type": "function", "function": {"name": "get_time"}});
        for choice in [json!("required"), named] {
            for tools in [None, Some(json!([]))] {
                let refused = from_request(None, tools.as_ref(), Some(&choice), 64);
                let param = refused.err().and_then(|e| e.param);
                assert_eq!(param, Some("tool_choice"), "{choice} {tools:?}");
            }
        }
        for choice in [json!("none"), json!("auto")] {
            assert!(from_request(None, None, Some(&choice), 64)
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn response_formats_compile_or_are_400_naming_the_field() {
        let schema = json!({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}});
        assert_eq!(
            from_request(Some(&schema), None, None, 16)
                .unwrap()
                .unwrap()
                .output,
            Output::Json
        );
        assert!(
            from_request(Some(&json!({"type": "json_object"})), None, None, 16)
                .unwrap()
                .is_some()
        );
        assert!(from_request(Some(&json!({"type": "text"})), None, None, 16)
            .unwrap()
            .is_none());
        let deep = (0..12).fold(
            json!({"type": "string"}),
            |s, _| json!({"type": "array", "items": s}),
        );
        for (format, tools, param) in [
            (
                json!({"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a"}}}),
                None,
                "response_format",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"schema": deep}}),
                None,
                "response_format",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"schema": {"type": "string", "description": "x".repeat(20_000)}}}),
                None,
                "response_format",
            ),
            (json!({"type": "yaml"}), None, "response_format"),
            (
                json!({"type": "json_object"}),
                Some(weather()),
                "response_format",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"schema": {"enum": ["a long literal value"]}}}),
                None,
                "max_tokens",
            ),
            (json!(null), Some(json!([{"type": "function"}])), "tools"),
        ] {
            let e = from_request(Some(&format), tools.as_ref(), None, 16)
                .err()
                .unwrap_or_else(|| panic!("{format}"));
            assert_eq!(e.param, Some(param), "{format}: {}", e.body());
        }
    }
}

//! `/mcp`: Piazza's capabilities as MCP tools over the Streamable HTTP transport
//! (JSON-RPC 2.0; `initialize`, `ping`, `tools/list`, `tools/call`, notifications answered
//! `202`). Each POST carries one message and gets one `application/json` answer; the gateway
//! offers no server-initiated stream (`GET` and `DELETE` answer `405`) and keeps no MCP session.
//!
//! Every message is authenticated with the same API keys as the OpenAI routes, and the paid
//! tools (`embed`, `chat`, `submit_job`) run through those routes' own handlers, so they take
//! the same slots, reserve the same worst case against the key's spend limit and answer with
//! the same receipts (`search_agents` pays for its embeddings the same way). Reading tools
//! (`show_job`, `balance`, `find_agents`, `get_agent`) hold the key's slot while they ask the node.

use crate::errors::ApiError;
use crate::server::Gateway;
use crate::BODY_READ_TIMEOUT;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use piazza_primitives::Address;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The largest MCP message the gateway reads, in bytes.
pub const MCP_BODY_BYTES_MAX: usize = 256 * 1024;
/// The largest answer of a tool the gateway relays, in bytes (a batch of embeddings as JSON).
pub const MCP_TOOL_ANSWER_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The handshake protocol versions served, oldest first; a client asking another gets the last.
pub const MCP_PROTOCOL_VERSIONS: &[&str] =
    &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Agents a discovery tool returns at most.
pub const MCP_AGENTS_LIMIT_MAX: u64 = 100;

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// `GET` and `DELETE /mcp`: no server-initiated stream, no session to end.
pub(crate) async fn not_offered() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(axum::http::header::ALLOW, "POST")],
        "this MCP endpoint takes POST only: no server-initiated stream, no session",
    )
        .into_response()
}

/// `POST /mcp`: one JSON-RPC message.
pub(crate) async fn post(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The key is checked for every message; the slots are given back at once (a tool that
    // runs a paid request takes its own through the OpenAI handler).
    drop(gw.admit(&headers).await?);
    let bytes = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MCP_BODY_BYTES_MAX),
    )
    .await
    .map_err(|_| ApiError::timeout("The MCP message did not arrive in time"))?
    .map_err(|_| {
        ApiError::too_large(format!(
            "An MCP message is at most {MCP_BODY_BYTES_MAX} bytes"
        ))
    })?;
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return Ok(rpc_error(
                Value::Null,
                PARSE_ERROR,
                format!("parse error: {e}"),
            ))
        }
    };
    let Value::Object(message) = message else {
        return Ok(rpc_error(
            Value::Null,
            INVALID_REQUEST,
            "one JSON-RPC message per POST (batches are not accepted)",
        ));
    };
    let method = message.get("method").and_then(Value::as_str);
    let id = message.get("id").cloned();
    let (Some(method), true) = (
        method,
        message.get("jsonrpc").and_then(Value::as_str) == Some("2.0"),
    ) else {
        // A client's response to a server request: the gateway sends none, so nothing awaits it.
        if id.is_some() && (message.contains_key("result") || message.contains_key("error")) {
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        return Ok(rpc_error(
            id.unwrap_or(Value::Null),
            INVALID_REQUEST,
            "a JSON-RPC 2.0 request needs `jsonrpc: \"2.0\"` and a `method`",
        ));
    };
    let Some(id) = id else {
        // A notification (`notifications/initialized`, `notifications/cancelled`, ...).
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let answer = match method {
        "initialize" => Ok(initialize(&params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": tools() })),
        "tools/call" => call(&gw, &headers, &params).await,
        other => Err((METHOD_NOT_FOUND, format!("method not found: {other}"))),
    };
    Ok(match answer {
        Ok(result) => Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response(),
        Err((code, message)) => rpc_error(id, code, message),
    })
}

fn rpc_error(id: Value, code: i64, message: impl Into<String>) -> Response {
    let message: String = message.into();
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
        .into_response()
}

/// The client's protocol version when served, else the newest served.
fn initialize(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| MCP_PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(MCP_PROTOCOL_VERSIONS[MCP_PROTOCOL_VERSIONS.len() - 1]);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "piazza-gateway", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "Piazza's verifiable AI network: every paid tool is charged to this API key within its spend limit and answers with the receipts of the jobs or session requests that served it.",
    })
}

/// One tool's description: name, what it does, its arguments' JSON Schema.
fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": properties, "required": required},
    })
}

fn tools() -> Vec<Value> {
    let model = json!({"type": "string", "description": "a model name from list_models"});
    let text_or_texts = json!({"anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
    ]});
    let id = json!({"type": "integer", "minimum": 0});
    let limit = json!({"type": "integer", "minimum": 1, "maximum": MCP_AGENTS_LIMIT_MAX});
    vec![
        tool(
            "list_models",
            "The chain's models with their commitments, providers and price per unit.",
            json!({}),
            &[],
        ),
        tool(
            "embed",
            "Sentence embeddings of one or more texts (paid; receipts in `piazza`).",
            json!({"model": model, "input": text_or_texts}),
            &["model", "input"],
        ),
        tool(
            "chat",
            "A chat completion (paid; receipts in `piazza`).",
            json!({
                "model": model,
                "messages": {"type": "array", "items": {"type": "object", "properties": {
                    "role": {"type": "string"}, "content": {"type": "string"}}}},
                "max_tokens": {"type": "integer", "minimum": 1},
            }),
            &["model", "messages"],
        ),
        tool(
            "submit_job",
            "Runs one input as a paid job on chain (an embedding model embeds it, a generation model continues it) and answers once it settles, with its job receipt.",
            json!({
                "model": model,
                "input": {"type": "string"},
                "max_tokens": {"type": "integer", "minimum": 1},
            }),
            &["model", "input"],
        ),
        tool(
            "show_job",
            "A job's record on chain: state, provider, result, trace root, price.",
            json!({"id": id}),
            &["id"],
        ),
        tool(
            "balance",
            "An account's balance and nonce (default: the account this API key pays from).",
            json!({"address": {"type": "string", "description": "pz1..."}}),
            &[],
        ),
        tool(
            "find_agents",
            "Active agents with a capability tag, best discovery score (stake and reputation) first.",
            json!({"tag": {"type": "string"}, "limit": limit}),
            &["tag"],
        ),
        tool(
            "search_agents",
            "Active agents nearest in meaning to a query (descriptions embedded with MiniLM; paid), ranked with their stake and reputation.",
            json!({"query": {"type": "string"}, "limit": limit}),
            &["query"],
        ),
        tool(
            "get_agent",
            "One agent's record, history, reputation and score.",
            json!({"id": id}),
            &["id"],
        ),
        tool(
            "call_agent",
            "POSTs a JSON body to an agent's HTTP endpoint and pays its x402 price (at most max_price PZA) from this API key's account, within the key's spend limit; answers the agent's status, answer and the settling transaction.",
            json!({
                "agent": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}], "description": "the agent's name or id"},
                "body": {"type": "object"},
                "max_price": {"type": "string", "description": "most PZA to pay, e.g. \"0.5\""},
            }),
            &["agent", "max_price"],
        ),
    ]
}

/// A tool's failure: the caller sees it as the tool's answer (`isError`), not as a protocol
/// error, so a model can read it.
fn tool_error(message: impl Into<String>) -> Value {
    let message: String = message.into();
    json!({"content": [{"type": "text", "text": message}], "isError": true})
}

fn tool_answer(value: Value) -> Value {
    let text = value.to_string();
    let structured = match value {
        object @ Value::Object(_) => object,
        other => json!({ "result": other }),
    };
    json!({"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": false})
}

type RpcResult = Result<Value, (i64, String)>;

async fn call(gw: &Arc<Gateway>, headers: &HeaderMap, params: &Value) -> RpcResult {
    let name = params.get("name").and_then(Value::as_str).ok_or((
        INVALID_PARAMS,
        "tools/call needs the tool's `name`".to_string(),
    ))?;
    let empty = Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(args)) => args,
        Some(_) => return Err((INVALID_PARAMS, "`arguments` must be an object".to_string())),
    };
    let answer = match name {
        "list_models" => openai_route(gw, headers, Route::Models, None).await,
        "embed" => {
            let body = json!({"model": args.get("model"), "input": args.get("input")});
            openai_route(gw, headers, Route::Embeddings, Some(body)).await
        }
        "chat" => {
            let mut body = json!({"model": args.get("model"), "messages": args.get("messages")});
            if let Some(max) = args.get("max_tokens") {
                body["max_tokens"] = max.clone();
            }
            openai_route(gw, headers, Route::Chat, Some(body)).await
        }
        "submit_job" => submit_job(gw, headers, args).await,
        "search_agents" => {
            let query = args.get("query").and_then(Value::as_str).unwrap_or("");
            let limit = args.get("limit").and_then(Value::as_u64);
            crate::agents::search(gw, headers, query, limit.map(|l| l as usize)).await
        }
        "call_agent" => crate::agents::call_agent(gw, headers, args).await,
        "show_job" | "balance" | "find_agents" | "get_agent" => {
            read_tool(gw, headers, name, args).await
        }
        other => return Err((INVALID_PARAMS, format!("unknown tool: {other}"))),
    };
    Ok(match answer {
        Ok(value) => tool_answer(value),
        Err(e) => tool_error(e.message),
    })
}

enum Route {
    Models,
    Embeddings,
    Chat,
    Completions,
}

/// Runs an OpenAI route's handler with the caller's key (and `x-piazza-mode: job` when
/// `job`), so the tool is admitted, reserved and charged exactly as that route is.
async fn openai_route(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    route: Route,
    body: Option<Value>,
) -> Result<Value, ApiError> {
    run_route(gw, forwarded(headers, false), route, body).await
}

fn forwarded(headers: &HeaderMap, job: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(key) = headers.get(axum::http::header::AUTHORIZATION) {
        out.insert(axum::http::header::AUTHORIZATION, key.clone());
    }
    if job {
        out.insert(
            HeaderName::from_static("x-piazza-mode"),
            HeaderValue::from_static("job"),
        );
    }
    out
}

async fn run_route(
    gw: &Arc<Gateway>,
    headers: HeaderMap,
    route: Route,
    body: Option<Value>,
) -> Result<Value, ApiError> {
    let state = State(gw.clone());
    let body = Body::from(body.map(|b| b.to_string()).unwrap_or_default());
    let response = match route {
        Route::Models => crate::models::list(state, headers)
            .await
            .map(IntoResponse::into_response),
        Route::Embeddings => crate::embeddings::create(state, headers, body).await,
        Route::Chat => crate::generation::chat(state, headers, body).await,
        Route::Completions => crate::generation::completions(state, headers, body).await,
    }
    .unwrap_or_else(IntoResponse::into_response);
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), MCP_TOOL_ANSWER_BYTES_MAX)
        .await
        .map_err(|_| {
            ApiError::upstream(format!(
                "the answer is larger than {MCP_TOOL_ANSWER_BYTES_MAX} bytes"
            ))
        })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::upstream(format!("the answer is not JSON: {e}")))?;
    if !status.is_success() {
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        return Err(ApiError::new(status, "tool_error", None, message));
    }
    Ok(value)
}

/// The vectors of `texts` from an embedding request paid by the caller's key, in order.
pub(crate) async fn embed(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    model: &str,
    texts: &[&str],
) -> Result<Vec<Vec<f32>>, ApiError> {
    let body = json!({"model": model, "input": texts});
    let answer = run_route(gw, forwarded(headers, false), Route::Embeddings, Some(body)).await?;
    let data = answer["data"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if data.len() != texts.len() {
        return Err(ApiError::upstream(format!(
            "{} embeddings for {} inputs",
            data.len(),
            texts.len()
        )));
    }
    Ok(data
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(Value::as_f64)
                        .map(|x| x as f32)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect())
}

async fn submit_job(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    args: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let model = args
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(Some("model"), "`model` must be a model's name"))?;
    let input = args.get("input").cloned().unwrap_or(Value::Null);
    let kind = gw.market.model(model).await?.info.kind;
    let (route, mut body) = if kind == "embedding" {
        (Route::Embeddings, json!({"model": model, "input": input}))
    } else {
        (Route::Completions, json!({"model": model, "prompt": input}))
    };
    if let (Route::Completions, Some(max)) = (&route, args.get("max_tokens")) {
        body["max_tokens"] = max.clone();
    }
    run_route(gw, forwarded(headers, true), route, Some(body)).await
}

fn u64_arg(args: &Map<String, Value>, name: &'static str) -> Result<u64, ApiError> {
    args.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::invalid(Some(name), format!("`{name}` must be an integer ≥ 0")))
}

/// The tools that only read the chain, holding the key's slot while they ask the node.
async fn read_tool(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let caller = gw.admit(headers).await?;
    let client = &gw.market.client;
    let node = |e: piazza_client::ClientError| ApiError::upstream(format!("the node: {e}"));
    let json =
        |v: Result<Value, serde_json::Error>| v.map_err(|e| ApiError::internal(e.to_string()));
    match name {
        "show_job" => {
            let id = u64_arg(args, "id")?;
            let job = client.job(id).await.map_err(node)?;
            json(serde_json::to_value(job))
        }
        "balance" => {
            let address = match args.get("address").and_then(Value::as_str) {
                Some(text) => text
                    .parse::<Address>()
                    .map_err(|e| ApiError::invalid(Some("address"), format!("`address`: {e}")))?,
                None => gw
                    .signer(&caller.key.signer)
                    .await?
                    .key()
                    .public_key()
                    .address(),
            };
            let account = client.account(&address).await.map_err(node)?;
            Ok(json!({
                "address": account.address,
                "balance": account.balance,
                "nonce": account.nonce,
                "height": account.proof.height,
            }))
        }
        "find_agents" => {
            let tag = args
                .get("tag")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(Some("tag"), "`tag` must be a string"))?;
            let limit = match args.get("limit") {
                None => 20,
                Some(_) => u64_arg(args, "limit")?.clamp(1, MCP_AGENTS_LIMIT_MAX),
            };
            let agents: Value = client
                .call("piazza_findAgents", json!([tag, limit]))
                .await
                .map_err(node)?;
            Ok(json!({ "agents": agents }))
        }
        _ => {
            let id = u64_arg(args, "id")?;
            let agent: Value = client
                .call("piazza_getAgent", json!([id]))
                .await
                .map_err(node)?;
            Ok(json!({ "agent": agent }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialize_answers_a_served_version_or_the_newest() {
        let answer = initialize(&json!({"protocolVersion": "2025-03-26"}));
        assert_eq!(answer["protocolVersion"], "2025-03-26");
        let answer = initialize(&json!({"protocolVersion": "1999-01-01"}));
        assert_eq!(answer["protocolVersion"], "2025-11-25");
        assert_eq!(answer["capabilities"]["tools"]["listChanged"], false);
    }

    #[test]
    fn every_tool_has_an_object_schema_naming_its_required_arguments() {
        let tools = tools();
        let mut names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), tools.len(), "tool names are unique");
        for t in &tools {
            let schema = &t["inputSchema"];
            assert_eq!(schema["type"], "object", "{t}");
            for required in schema["required"].as_array().unwrap() {
                let required = required.as_str().unwrap();
                assert!(schema["properties"].get(required).is_some(), "{t}");
            }
        }
    }

    #[test]
    fn a_tool_answer_is_structured_and_an_error_is_flagged() {
        let answer = tool_answer(json!([1, 2]));
        assert_eq!(answer["structuredContent"]["result"], json!([1, 2]));
        assert_eq!(answer["content"][0]["text"], "[1,2]");
        assert_eq!(tool_error("no")["isError"], true);
    }
}

//! `POST /v1/chat/completions` and `POST /v1/completions`: one generation job each, answered
//! whole or as server-sent events. Both endpoints share one path: the request becomes a prompt
//! (chat messages in the canonical chat encoding for the model's own template, or the text
//! prompt), the prompt one job, and the settled job one answer in the endpoint's shape.

use crate::errors::ApiError;
use crate::market::JobOutcome;
use crate::openai::{ChatRequest, CompletionRequest, Sampling};
use crate::params::Endpoint;
use crate::server::{now_s, receipt_headers, receipts_json, Caller, Gateway};
use crate::{CHAT_MAX_TOKENS_DEFAULT, CHAT_MESSAGES_MAX, COMPLETION_MAX_TOKENS_DEFAULT};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use piazza_ledger::compute::{JobParams, STOP_SEQUENCES_MAX, STOP_SEQUENCE_BYTES_MAX};
use piazza_primitives::chat::{ChatInput, ChatMessage, ChatRole};
use serde_json::{json, Value};
use std::sync::Arc;

/// Which OpenAI answer a generation becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Chat,
    Text,
}

impl Shape {
    fn default_max_tokens(self) -> u64 {
        match self {
            Shape::Chat => CHAT_MAX_TOKENS_DEFAULT,
            Shape::Text => COMPLETION_MAX_TOKENS_DEFAULT,
        }
    }
}

pub(crate) async fn chat(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, request) = gw
        .request::<ChatRequest>(Endpoint::Chat, &headers, body)
        .await?;
    let input = chat_input(&request)?;
    generate(
        gw,
        caller,
        Shape::Chat,
        &request.model,
        input,
        &request.sampling,
    )
    .await
}

pub(crate) async fn completions(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, request) = gw
        .request::<CompletionRequest>(Endpoint::Completions, &headers, body)
        .await?;
    let mut prompts = request.prompt.strings("prompt")?;
    if prompts.len() != 1 {
        return Err(ApiError::invalid(
            Some("prompt"),
            "Exactly one prompt per request is supported",
        ));
    }
    let prompt = prompts.pop().unwrap_or_default();
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            Some("prompt"),
            "`prompt` is an empty string (a job needs some input)",
        ));
    }
    generate(
        gw,
        caller,
        Shape::Text,
        &request.model,
        prompt.into_bytes(),
        &request.sampling,
    )
    .await
}

/// Chat messages as the job's input, in the canonical chat encoding
/// ([`piazza_primitives::chat::ChatInput`]) the provider renders with the model's own template
/// (the job's `chat` flag). OpenAI's `developer` role is a system message; other roles are
/// refused.
fn chat_input(request: &ChatRequest) -> Result<Vec<u8>, ApiError> {
    if request.messages.is_empty() || request.messages.len() > CHAT_MESSAGES_MAX {
        return Err(ApiError::invalid(
            Some("messages"),
            format!("`messages` must hold 1 to {CHAT_MESSAGES_MAX} messages"),
        ));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for m in &request.messages {
        let role = match m.role.as_str() {
            "developer" => ChatRole::System,
            name => ChatRole::from_name(name).ok_or_else(|| {
                ApiError::invalid(Some("messages"), format!("role `{name}` is not supported"))
            })?,
        };
        let content = m
            .content
            .as_ref()
            .map(|c| c.text())
            .transpose()?
            .unwrap_or_default();
        messages.push(ChatMessage::new(role, content));
    }
    let chat =
        ChatInput::new(messages).map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
    Ok(chat.encode())
}

/// The shared path: one job for `input`, answered in `shape`.
async fn generate(
    gw: Arc<Gateway>,
    caller: Caller,
    shape: Shape,
    model: &str,
    input: Vec<u8>,
    sampling: &Sampling,
) -> Result<Response, ApiError> {
    let (mut params, max_tokens) = job_params(
        sampling,
        shape.default_max_tokens(),
        gw.limits.max_tokens_max,
    )?;
    params.chat = shape == Shape::Chat;
    let (served, price) = gw.served_model(model, "generation").await?;
    let mut outcomes = gw
        .run_jobs(
            caller,
            &served.info.name,
            vec![input],
            params.clone(),
            max_tokens,
            price,
        )
        .await?;
    let outcome = outcomes
        .pop()
        .ok_or_else(|| ApiError::internal("no job outcome"))?;
    Ok(answer(shape, model, sampling, &outcome, &params))
}

/// Sampling fields → job parameters and the token budget.
fn job_params(
    sampling: &Sampling,
    default_max_tokens: u64,
    max_tokens_max: u64,
) -> Result<(JobParams, u64), ApiError> {
    if sampling.n.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported("n", "Only `n: 1` is supported"));
    }
    let max_tokens = sampling
        .max_completion_tokens
        .or(sampling.max_tokens)
        .unwrap_or(default_max_tokens);
    if max_tokens == 0 || max_tokens > max_tokens_max {
        return Err(ApiError::invalid(
            Some("max_tokens"),
            format!("`max_tokens` must be between 1 and {max_tokens_max}"),
        ));
    }
    let temperature = sampling.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::invalid(
            Some("temperature"),
            "`temperature` must be between 0 and 2",
        ));
    }
    let top_p = sampling.top_p.unwrap_or(1.0);
    if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            Some("top_p"),
            "`top_p` must be in (0, 1]",
        ));
    }
    let stop = match &sampling.stop {
        None => Vec::new(),
        Some(s) => s.strings("stop")?,
    };
    if stop.len() > STOP_SEQUENCES_MAX
        || stop
            .iter()
            .any(|s| s.is_empty() || s.len() > STOP_SEQUENCE_BYTES_MAX)
    {
        return Err(ApiError::invalid(Some("stop"), format!("At most {STOP_SEQUENCES_MAX} non-empty stop sequences of at most {STOP_SEQUENCE_BYTES_MAX} bytes")));
    }
    let params = JobParams {
        max_tokens: max_tokens as u32,
        temperature_milli: (temperature * 1000.0).round() as u32,
        top_p_milli: (top_p * 1000.0).round() as u32,
        // Negative seeds keep their bits.
        seed: sampling.seed.unwrap_or(0) as u64,
        stop,
        ..JobParams::default()
    };
    Ok((params, max_tokens))
}

/// The generated text cut at the first stop sequence, and OpenAI's finish reason.
fn finish(outcome: &JobOutcome, params: &JobParams) -> (String, &'static str) {
    let mut text = String::from_utf8_lossy(&outcome.output).into_owned();
    if let Some(cut) = params
        .stop
        .iter()
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        text.truncate(cut);
        return (text, "stop");
    }
    let reason = if outcome.work_units >= u64::from(params.max_tokens) {
        "length"
    } else {
        "stop"
    };
    (text, reason)
}

/// OpenAI's `usage`: generated tokens are the job's units; prompt tokens are what the chain
/// records for the job (`input_units`), 0 on a chain that records none.
fn usage(outcome: &JobOutcome) -> Value {
    let prompt = outcome.input_units.unwrap_or(0);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": outcome.work_units,
        "total_tokens": prompt.saturating_add(outcome.work_units),
    })
}

/// The settled job as the endpoint's answer, whole or streamed.
fn answer(
    shape: Shape,
    model: &str,
    sampling: &Sampling,
    outcome: &JobOutcome,
    params: &JobParams,
) -> Response {
    let (text, reason) = finish(outcome, params);
    let receipts = [&outcome.receipt];
    let (id, object, chunk_object) = match shape {
        Shape::Chat => (
            format!("chatcmpl-{}", outcome.receipt.job),
            "chat.completion",
            "chat.completion.chunk",
        ),
        Shape::Text => (
            format!("cmpl-{}", outcome.receipt.job),
            "text_completion",
            "text_completion",
        ),
    };
    let created = now_s();
    let usage = usage(outcome);
    let piazza = receipts_json(&receipts);
    let headers = receipt_headers(&receipts);
    if !sampling.stream {
        let choice = match shape {
            Shape::Chat => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": reason})
            }
            Shape::Text => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason})
            }
        };
        let body = json!({
            "id": id, "object": object, "created": created, "model": model,
            "choices": [choice], "usage": usage, "piazza": piazza,
        });
        return (headers, Json(body)).into_response();
    }
    let chunk = |piece: Option<&str>, reason: Option<&str>| {
        let choice = match shape {
            Shape::Chat => {
                let delta = piece.map_or(json!({}), |p| json!({"content": p}));
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason})
            }
            Shape::Text => {
                json!({"index": 0, "text": piece.unwrap_or(""), "logprobs": null, "finish_reason": reason})
            }
        };
        json!({"id": id, "object": chunk_object, "created": created, "model": model, "choices": [choice]})
    };
    let mut chunks = Vec::new();
    if shape == Shape::Chat {
        let mut first = chunk(None, None);
        first["choices"][0]["delta"] = json!({"role": "assistant", "content": ""});
        chunks.push(first);
    }
    chunks.extend(pieces(&text).into_iter().map(|p| chunk(Some(p), None)));
    // The last chunk (with the finish reason) carries the receipts.
    let mut last = chunk(None, Some(reason));
    last["piazza"] = piazza.clone();
    chunks.push(last);
    // With `stream_options.include_usage`, a final chunk with no choices carries the usage.
    if sampling
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage)
    {
        chunks.push(
            json!({"id": id, "object": chunk_object, "created": created, "model": model,
                           "choices": [], "usage": usage, "piazza": piazza}),
        );
    }
    sse(headers, chunks)
}

/// Streamed answers: the settled job's text as OpenAI chunks, then `data: [DONE]`. The whole
/// output settles at once, so the chunks follow each other immediately.
fn sse(headers: HeaderMap, chunks: Vec<Value>) -> Response {
    let events: Vec<Result<Event, std::convert::Infallible>> = chunks
        .into_iter()
        .map(|c| Ok(Event::default().data(c.to_string())))
        .chain(std::iter::once(Ok(Event::default().data("[DONE]"))))
        .collect();
    (
        headers,
        Sse::new(futures_util::stream::iter(events)).keep_alive(KeepAlive::default()),
    )
        .into_response()
}

/// Pieces of `text` for streaming: words with their following whitespace.
fn pieces(text: &str) -> Vec<&str> {
    text.split_inclusive(char::is_whitespace).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tests::outcome;
    use axum::http::StatusCode;

    fn sampling(v: Value) -> Sampling {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn sampling_maps_to_integer_job_params() {
        let (p, max) = job_params(&sampling(json!({"max_tokens": 12, "temperature": 0.7, "top_p": 0.9, "seed": -1, "stop": "\n"})), 16, 2048).unwrap();
        assert_eq!(
            (
                max,
                p.max_tokens,
                p.temperature_milli,
                p.top_p_milli,
                p.seed
            ),
            (12, 12, 700, 900, u64::MAX)
        );
        assert_eq!(p.stop, ["\n"]);
        let (p, max) = job_params(&sampling(json!({})), 16, 2048).unwrap();
        assert_eq!((max, p.temperature_milli, p.top_p_milli), (16, 1000, 1000));
    }

    #[test]
    fn out_of_range_sampling_is_a_400_naming_the_param() {
        for (body, param) in [
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": 5000}), "max_tokens"),
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"temperature": -1}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"n": 2}), "n"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": [""]}), "stop"),
        ] {
            let e = job_params(&sampling(body.clone()), 16, 2048).unwrap_err();
            assert_eq!(
                (e.status, e.param),
                (StatusCode::BAD_REQUEST, Some(param)),
                "{body}"
            );
        }
    }

    fn chat_request(messages: Value) -> ChatRequest {
        serde_json::from_value(json!({"model": "m", "messages": messages})).unwrap()
    }

    #[test]
    fn chat_messages_become_the_canonical_chat_input() {
        let request = chat_request(json!([
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]},
            {"role": "assistant", "content": null},
            {"role": "user", "content": "Again"},
        ]));
        let input = chat_input(&request).unwrap();
        let want = ChatInput::new(vec![
            ChatMessage::new(ChatRole::System, "Be brief."),
            ChatMessage::new(ChatRole::User, "Hi!"),
            ChatMessage::new(ChatRole::Assistant, ""),
            ChatMessage::new(ChatRole::User, "Again"),
        ])
        .unwrap();
        assert_eq!(ChatInput::decode(&input), Ok(want));
        // One user message: the same bytes `piazza job submit --chat` sends.
        let one = chat_input(&chat_request(json!([{"role": "user", "content": "Hi"}]))).unwrap();
        assert_eq!(one, ChatInput::user("Hi").unwrap().encode());
        for (messages, says) in [
            (json!([{"role": "tool", "content": "x"}]), "role `tool`"),
            (json!([{"role": "System", "content": "x"}]), "role `System`"),
            (json!([]), "1 to 256 messages"),
        ] {
            let e = chat_input(&chat_request(messages)).unwrap_err();
            assert_eq!(
                (e.status, e.param),
                (StatusCode::BAD_REQUEST, Some("messages"))
            );
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn finish_cuts_at_stop_and_reports_length() {
        let params = JobParams {
            max_tokens: 4,
            stop: vec!["END".into()],
            ..JobParams::default()
        };
        assert_eq!(
            finish(&outcome("one two END three", 4), &params),
            ("one two ".to_string(), "stop")
        );
        assert_eq!(
            finish(&outcome("one two", 4), &params),
            ("one two".to_string(), "length")
        );
        assert_eq!(
            finish(&outcome("one", 2), &params),
            ("one".to_string(), "stop")
        );
    }

    #[test]
    fn usage_reports_the_prompt_tokens_the_chain_records() {
        let mut o = outcome("four words of text", 4);
        o.input_units = Some(23);
        assert_eq!(
            usage(&o),
            json!({"prompt_tokens": 23, "completion_tokens": 4, "total_tokens": 27})
        );
        o.input_units = None;
        assert_eq!(usage(&o)["total_tokens"], 4);
    }

    async fn events(response: Response) -> Vec<Value> {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap_or(Value::String(d.into())))
            .collect()
    }

    #[tokio::test]
    async fn both_shapes_stream_the_same_text_with_receipts_and_usage() {
        let mut o = outcome("Paris is the capital", 4);
        o.input_units = Some(9);
        let params = JobParams {
            max_tokens: 4,
            ..JobParams::default()
        };
        let streamed = sampling(json!({"stream": true, "stream_options": {"include_usage": true}}));
        for (shape, text_at) in [
            (Shape::Chat, "/choices/0/delta/content"),
            (Shape::Text, "/choices/0/text"),
        ] {
            let events = events(answer(shape, "m", &streamed, &o, &params)).await;
            assert_eq!(events.last(), Some(&Value::String("[DONE]".into())));
            let text: String = events
                .iter()
                .filter_map(|e| e.pointer(text_at).and_then(Value::as_str))
                .collect();
            assert_eq!(text, "Paris is the capital", "{shape:?}");
            let finish = &events[events.len() - 3];
            assert_eq!(finish["choices"][0]["finish_reason"], "length");
            assert_eq!(finish["piazza"][0]["job"], 1);
            let usage = &events[events.len() - 2];
            assert_eq!(usage["usage"]["prompt_tokens"], 9, "{shape:?}");
            assert_eq!(usage["choices"], json!([]));
        }
        let whole = answer(Shape::Chat, "m", &sampling(json!({})), &o, &params);
        let body: Value = serde_json::from_slice(
            &axum::body::to_bytes(whole.into_body(), 1 << 20)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "Paris is the capital"
        );
        assert_eq!(body["usage"]["total_tokens"], 13);
    }
}

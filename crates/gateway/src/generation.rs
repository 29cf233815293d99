//! `POST /v1/chat/completions` and `POST /v1/completions`: one generation each, answered
//! whole or as server-sent events. Both endpoints share one path: the request becomes a prompt
//! (chat messages in the canonical chat encoding for the model's own template, or the text
//! prompt), the prompt one request over a session (its text relayed as the provider streams
//! it, the receipt on the last chunk) or, with `x-piazza-mode: job` or when no provider serves
//! the model's sessions, one job, whose settled output becomes one answer.

use crate::errors::ApiError;
use crate::live::{self, Underway};
use crate::market::JobOutcome;
use crate::openai::{ChatRequest, CompletionRequest, Sampling};
use crate::params::Endpoint;
use crate::server::{now_s, receipt_headers, receipts_json, Caller, Gateway};
use crate::sessions::Mode;
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

mod structured;
use structured::Output;

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
    let max_tokens = request
        .sampling
        .max_completion_tokens
        .or(request.sampling.max_tokens)
        .unwrap_or(CHAT_MAX_TOKENS_DEFAULT);
    let structured = structured::from_request(
        request.response_format.as_ref(),
        request.tools.as_ref(),
        request.tool_choice.as_ref(),
        max_tokens,
    )?;
    let instruction = structured.as_ref().map(|s| s.instruction.as_str());
    let mut input = chat_input(&request, instruction)?;
    if let Some(s) = &structured {
        input = s.constraint.wrap(&input);
    }
    generate(
        gw,
        (caller, Mode::of(&headers)?),
        (Shape::Chat, structured.map(|s| s.output)),
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
        (caller, Mode::of(&headers)?),
        (Shape::Text, None),
        &request.model,
        prompt.into_bytes(),
        &request.sampling,
    )
    .await
}

/// Chat messages as the job's input, in the canonical chat encoding
/// ([`piazza_primitives::chat::ChatInput`]) the provider renders with the model's own template
/// (the job's `chat` flag). OpenAI's `developer` role is a system message; other roles are
/// refused. `instruction` (what a structured output must be) opens the conversation as a system
/// message.
fn chat_input(request: &ChatRequest, instruction: Option<&str>) -> Result<Vec<u8>, ApiError> {
    if request.messages.is_empty() || request.messages.len() > CHAT_MESSAGES_MAX {
        return Err(ApiError::invalid(
            Some("messages"),
            format!("`messages` must hold 1 to {CHAT_MESSAGES_MAX} messages"),
        ));
    }
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(instruction) = instruction {
        messages.push(ChatMessage::new(ChatRole::System, instruction));
    }
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

/// The shared path: one session request or job for `input`, answered in `shape`.
async fn generate(
    gw: Arc<Gateway>,
    (caller, mode): (Caller, Mode),
    (shape, output): (Shape, Option<Output>),
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
    let caller = match mode {
        Mode::Job => caller,
        Mode::Session => {
            let ask = live::Ask {
                input: input.clone(),
                params: params.clone(),
                max_units: max_tokens,
            };
            match live::start(&gw, caller, &served, price, vec![ask]).await? {
                Ok(underway) => {
                    let mut reply = Chunks::new(
                        shape,
                        model,
                        format!("s{}-{}", underway.session, underway.seq),
                    );
                    reply.tool_call = output == Some(Output::ToolCall);
                    return Ok(if sampling.stream {
                        stream_live(reply, sampling, params, underway)
                    } else {
                        whole_live(reply, &params, underway).await?
                    });
                }
                Err(caller) => caller,
            }
        }
    };
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
    Ok(answer((shape, output), model, sampling, &outcome, &params))
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

/// Where the first stop sequence starts in `text`.
fn first_stop(text: &str, params: &JobParams) -> Option<usize> {
    params
        .stop
        .iter()
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// OpenAI's finish reason of a generation of `units` tokens not cut at a stop sequence.
fn reason(units: u64, params: &JobParams) -> &'static str {
    if units >= u64::from(params.max_tokens) {
        "length"
    } else {
        "stop"
    }
}

/// The generated text cut at the first stop sequence, and OpenAI's finish reason.
fn finish(output: &[u8], units: u64, params: &JobParams) -> (String, &'static str) {
    let mut text = String::from_utf8_lossy(output).into_owned();
    if let Some(cut) = first_stop(&text, params) {
        text.truncate(cut);
        return (text, "stop");
    }
    (text, reason(units, params))
}

/// OpenAI's `usage`: generated tokens are the units; prompt tokens are what the chain records
/// for the job (`input_units`), or what a session's provider counted (its receipt event's
/// `input_units`), 0 where none is recorded (a chain without it).
fn usage(input_units: Option<u64>, units: u64) -> Value {
    let prompt = input_units.unwrap_or(0);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": units,
        "total_tokens": prompt.saturating_add(units),
    })
}

/// The chunks and answers of one generation in its endpoint's shape.
struct Chunks {
    shape: Shape,
    id: String,
    created: u64,
    model: String,
    /// The text is one tool call (`{"name", "arguments"}`), answered as OpenAI's `tool_calls`.
    tool_call: bool,
}

impl Chunks {
    fn new(shape: Shape, model: &str, id: String) -> Chunks {
        let id = match shape {
            Shape::Chat => format!("chatcmpl-{id}"),
            Shape::Text => format!("cmpl-{id}"),
        };
        Chunks {
            shape,
            id,
            created: now_s(),
            model: model.to_string(),
            tool_call: false,
        }
    }

    /// OpenAI's `tool_calls` entry of the call `text` writes (`None` when it is not one: a
    /// stop sequence cut it).
    fn tool_calls(&self, text: &str) -> Option<Value> {
        let (name, arguments) = structured::tool_call(text)?;
        Some(
            json!([{"index": 0, "id": format!("call_{}", self.id), "type": "function",
                     "function": {"name": name, "arguments": arguments}}]),
        )
    }

    /// A tool call's streamed chunk and finish reason, or the text's own.
    fn streamed_call(&self, text: &str) -> Option<Value> {
        let calls = self.tool_calls(text).filter(|_| self.tool_call)?;
        let mut chunk = self.chunk(None, None);
        chunk["choices"][0]["delta"] = json!({"tool_calls": calls});
        Some(chunk)
    }

    fn chunk_object(&self) -> &'static str {
        match self.shape {
            Shape::Chat => "chat.completion.chunk",
            Shape::Text => "text_completion",
        }
    }

    fn chunk(&self, piece: Option<&str>, reason: Option<&str>) -> Value {
        let choice = match self.shape {
            Shape::Chat => {
                let delta = piece.map_or(json!({}), |p| json!({"content": p}));
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason})
            }
            Shape::Text => {
                json!({"index": 0, "text": piece.unwrap_or(""), "logprobs": null, "finish_reason": reason})
            }
        };
        json!({"id": self.id, "object": self.chunk_object(), "created": self.created, "model": self.model, "choices": [choice]})
    }

    /// The chunk that opens a stream (chat only: the assistant's role).
    fn opening(&self) -> Option<Value> {
        (self.shape == Shape::Chat).then(|| {
            let mut first = self.chunk(None, None);
            first["choices"][0]["delta"] = json!({"role": "assistant", "content": ""});
            first
        })
    }

    /// The chunks that close a stream: the finish reason with the receipts, then (with
    /// `stream_options.include_usage`) a chunk with no choices carrying the usage.
    fn closing(
        &self,
        include_usage: bool,
        reason: &str,
        usage: Value,
        piazza: Value,
    ) -> Vec<Value> {
        let mut last = self.chunk(None, Some(reason));
        last["piazza"] = piazza.clone();
        let mut chunks = vec![last];
        if include_usage {
            chunks.push(json!({"id": self.id, "object": self.chunk_object(), "created": self.created, "model": self.model,
                               "choices": [], "usage": usage, "piazza": piazza}));
        }
        chunks
    }

    /// The whole answer.
    fn whole(&self, text: &str, reason: &str, usage: Value, piazza: Value) -> Value {
        let calls = self.tool_calls(text).filter(|_| self.tool_call);
        let (object, choice) = match self.shape {
            Shape::Chat if calls.is_some() => (
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": calls},
                       "logprobs": null, "finish_reason": "tool_calls"}),
            ),
            Shape::Chat => (
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": reason}),
            ),
            Shape::Text => (
                "text_completion",
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason}),
            ),
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "usage": usage, "piazza": piazza,
        })
    }
}

/// A session's answer, whole.
async fn whole_live(
    reply: Chunks,
    params: &JobParams,
    underway: Underway,
) -> Result<Response, ApiError> {
    let answers = underway.finish().await?;
    let answer = answers
        .first()
        .ok_or_else(|| ApiError::internal("no session answer"))?;
    let units = answer.receipt.receipt.units;
    let (text, reason) = finish(&answer.output, units, params);
    let body = reply.whole(
        &text,
        reason,
        usage(Some(answer.input_units), units),
        live::receipts_json(&answers),
    );
    Ok((live::receipt_headers(&answers), Json(body)).into_response())
}

/// Text as it streams, held back only as far as a stop sequence could still begin in it.
struct Cutter {
    text: String,
    sent: usize,
    stopped: bool,
    holdback: usize,
}

impl Cutter {
    fn new(params: &JobParams) -> Cutter {
        let longest = params.stop.iter().map(String::len).max().unwrap_or(0);
        Cutter {
            text: String::new(),
            sent: 0,
            stopped: false,
            holdback: longest.saturating_sub(1),
        }
    }

    /// What of the text so far may go out now.
    fn push(&mut self, piece: &str, params: &JobParams) -> String {
        if self.stopped {
            return String::new();
        }
        self.text.push_str(piece);
        let mut until = match first_stop(&self.text, params) {
            Some(cut) => {
                self.stopped = true;
                cut
            }
            None => self.text.len().saturating_sub(self.holdback),
        };
        while !self.text.is_char_boundary(until) {
            until -= 1;
        }
        let out = self
            .text
            .get(self.sent..until.max(self.sent))
            .unwrap_or("")
            .to_string();
        self.sent = until.max(self.sent);
        out
    }

    /// The rest once the text is complete.
    fn rest(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let out = self.text.get(self.sent..).unwrap_or("").to_string();
        self.sent = self.text.len();
        out
    }
}

/// A session's answer as it streams: each piece of text as the provider sends it, the finish
/// reason and receipts once its receipt is checked, then `data: [DONE]`.
fn stream_live(
    reply: Chunks,
    sampling: &Sampling,
    params: JobParams,
    underway: Underway,
) -> Response {
    let mut queue: std::collections::VecDeque<String> =
        reply.opening().map(|c| c.to_string()).into_iter().collect();
    let mut headers = HeaderMap::new();
    if let Ok(v) = axum::http::HeaderValue::from_str(&underway.session.to_string()) {
        headers.insert("x-piazza-session", v);
    }
    let state = LiveStream {
        cutter: Cutter::new(&params),
        reply,
        include_usage: include_usage(sampling),
        params,
        deltas: underway.deltas,
        answers: Some(underway.answers),
        queue: std::mem::take(&mut queue),
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(data) = st.queue.pop_front() {
                return Some((
                    Ok::<_, std::convert::Infallible>(Event::default().data(data)),
                    st,
                ));
            }
            let answers = st.answers.take()?;
            match st.deltas.recv().await {
                Some(piece) => {
                    st.answers = Some(answers);
                    let out = st.cutter.push(&piece, &st.params);
                    // A tool call goes out whole, once complete.
                    if !out.is_empty() && !st.reply.tool_call {
                        st.queue
                            .push_back(st.reply.chunk(Some(&out), None).to_string());
                    }
                }
                None => st.end(answers).await,
            }
        }
    });
    (headers, Sse::new(events).keep_alive(KeepAlive::default())).into_response()
}

struct LiveStream {
    reply: Chunks,
    include_usage: bool,
    params: JobParams,
    cutter: Cutter,
    deltas: tokio::sync::mpsc::UnboundedReceiver<String>,
    answers: Option<
        tokio::sync::oneshot::Receiver<Result<Vec<piazza_client::session::Answer>, ApiError>>,
    >,
    queue: std::collections::VecDeque<String>,
}

impl LiveStream {
    /// The closing chunks (or the error), then `[DONE]`.
    async fn end(
        &mut self,
        answers: tokio::sync::oneshot::Receiver<
            Result<Vec<piazza_client::session::Answer>, ApiError>,
        >,
    ) {
        let result = answers.await.unwrap_or_else(|_| {
            Err(ApiError::internal(
                "the session task ended without an answer",
            ))
        });
        match result {
            Ok(answers) => {
                let call = self.reply.streamed_call(&self.cutter.text);
                let rest = self.cutter.rest();
                if let Some(call) = &call {
                    self.queue.push_back(call.to_string());
                } else if !rest.is_empty() {
                    self.queue
                        .push_back(self.reply.chunk(Some(&rest), None).to_string());
                }
                let units = answers.first().map_or(0, |a| a.receipt.receipt.units);
                let input_units = answers.first().map(|a| a.input_units);
                let reason = if call.is_some() {
                    "tool_calls"
                } else if self.cutter.stopped {
                    "stop"
                } else {
                    reason(units, &self.params)
                };
                for chunk in self.reply.closing(
                    self.include_usage,
                    reason,
                    usage(input_units, units),
                    live::receipts_json(&answers),
                ) {
                    self.queue.push_back(chunk.to_string());
                }
            }
            Err(e) => self.queue.push_back(e.body().to_string()),
        }
        self.queue.push_back("[DONE]".into());
    }
}

/// The settled job as the endpoint's answer, whole or streamed.
fn answer(
    (shape, output): (Shape, Option<Output>),
    model: &str,
    sampling: &Sampling,
    outcome: &JobOutcome,
    params: &JobParams,
) -> Response {
    let (text, reason) = finish(&outcome.output, outcome.work_units, params);
    let receipts = [&outcome.receipt];
    let mut reply = Chunks::new(shape, model, outcome.receipt.job.to_string());
    reply.tool_call = output == Some(Output::ToolCall);
    let usage = usage(outcome.input_units, outcome.work_units);
    let piazza = receipts_json(&receipts);
    let headers = receipt_headers(&receipts);
    if !sampling.stream {
        return (headers, Json(reply.whole(&text, reason, usage, piazza))).into_response();
    }
    let mut chunks: Vec<Value> = reply.opening().into_iter().collect();
    let call = reply.streamed_call(&text);
    let reason = if call.is_some() { "tool_calls" } else { reason };
    match call {
        Some(call) => chunks.push(call),
        None => chunks.extend(
            pieces(&text)
                .into_iter()
                .map(|p| reply.chunk(Some(p), None)),
        ),
    }
    // The last chunk (with the finish reason) carries the receipts.
    chunks.extend(reply.closing(include_usage(sampling), reason, usage, piazza));
    sse(headers, chunks)
}

/// Whether the stream ends with a chunk carrying the usage (`stream_options.include_usage`).
fn include_usage(sampling: &Sampling) -> bool {
    sampling
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage)
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
        let input = chat_input(&request, None).unwrap();
        let want = ChatInput::new(vec![
            ChatMessage::new(ChatRole::System, "Be brief."),
            ChatMessage::new(ChatRole::User, "Hi!"),
            ChatMessage::new(ChatRole::Assistant, ""),
            ChatMessage::new(ChatRole::User, "Again"),
        ])
        .unwrap();
        assert_eq!(ChatInput::decode(&input), Ok(want));
        // One user message: the same bytes `piazza job submit --chat` sends.
        let one = chat_input(
            &chat_request(json!([{"role": "user", "content": "Hi"}])),
            None,
        )
        .unwrap();
        assert_eq!(one, ChatInput::user("Hi").unwrap().encode());
        for (messages, says) in [
            (json!([{"role": "tool", "content": "x"}]), "role `tool`"),
            (json!([{"role": "System", "content": "x"}]), "role `System`"),
            (json!([]), "1 to 256 messages"),
        ] {
            let e = chat_input(&chat_request(messages), None).unwrap_err();
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
            finish(b"one two END three", 4, &params),
            ("one two ".to_string(), "stop")
        );
        assert_eq!(
            finish(b"one two", 4, &params),
            ("one two".to_string(), "length")
        );
        assert_eq!(finish(b"one", 2, &params), ("one".to_string(), "stop"));
    }

    #[test]
    fn usage_reports_the_prompt_tokens_the_chain_records() {
        let mut o = outcome("four words of text", 4);
        o.input_units = Some(23);
        assert_eq!(
            usage(o.input_units, o.work_units),
            json!({"prompt_tokens": 23, "completion_tokens": 4, "total_tokens": 27})
        );
        o.input_units = None;
        assert_eq!(usage(o.input_units, o.work_units)["total_tokens"], 4);
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
            let events = events(answer((shape, None), "m", &streamed, &o, &params)).await;
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
        let whole = answer((Shape::Chat, None), "m", &sampling(json!({})), &o, &params);
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

    #[test]
    fn streamed_text_is_cut_at_a_stop_sequence_split_across_pieces() {
        let params = JobParams {
            stop: vec!["END".into()],
            ..JobParams::default()
        };
        let mut cutter = Cutter::new(&params);
        let sent: Vec<String> = ["one E", "N", "D two"]
            .iter()
            .map(|p| cutter.push(p, &params))
            .collect();
        // The last two bytes (as long as the stop sequence less one) are held back until
        // they turn out not to begin it; what begins it never goes out.
        assert_eq!(sent, ["one", " ", ""]);
        assert_eq!(cutter.rest(), "");
        assert!(cutter.stopped);
        // Held-back text that is not a stop sequence goes out, all of it by the end.
        let mut cutter = Cutter::new(&params);
        let mut text = cutter.push("abcE", &params);
        text += &cutter.push("é", &params);
        text += &cutter.rest();
        assert_eq!(text, "abcEé");
        // No stop sequence: nothing is held back.
        let plain = JobParams::default();
        let mut cutter = Cutter::new(&plain);
        assert_eq!(cutter.push("Paris", &plain), "Paris");
    }

    #[test]
    fn the_mode_header_picks_session_or_job() {
        let mut headers = HeaderMap::new();
        assert_eq!(Mode::of(&headers).unwrap(), Mode::Session);
        headers.insert("x-piazza-mode", "job".parse().unwrap());
        assert_eq!(Mode::of(&headers).unwrap(), Mode::Job);
        headers.insert("x-piazza-mode", "chain".parse().unwrap());
        assert_eq!(
            Mode::of(&headers).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}

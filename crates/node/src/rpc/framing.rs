//! HTTP framing: the body read under a size and time limit, the large-body budget, the JSON
//! pre-scan, one call or a batch, and the error shapes (which never echo more than a short
//! prefix of any input).

use super::methods::{dispatch, submitted, submitted_bytes};
use super::server::Peer;
use super::{
    RpcLimits, RpcState, RPC_BATCH_MAX, RPC_BODY_BYTES_MAX, RPC_JSON_VALUES_MAX, SERVER_BUSY,
};
use crate::app::App;
use crate::metrics::ServerMetrics;
use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use piazza_api::{error_code, method, RpcError};
use piazza_ledger::error::TxError;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Most bytes of any client input quoted back in an error message.
pub const ERROR_ECHO_BYTES_MAX: usize = 64;
/// Longest error message the node sends.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 512;
/// The large-body budget is counted in units of this many bytes.
const BUDGET_UNIT_BYTES: usize = 1024;
/// A large answer is handed to the connection in chunks of this size.
const RESPONSE_CHUNK_BYTES: usize = 64 * 1024;

/// Quotes client input in an error: at most [`ERROR_ECHO_BYTES_MAX`] bytes, then its length.
pub fn clip(text: &str) -> String {
    if text.len() <= ERROR_ECHO_BYTES_MAX {
        return text.to_string();
    }
    format!(
        "{}… ({} bytes)",
        prefix(text, ERROR_ECHO_BYTES_MAX),
        text.len()
    )
}

/// The longest prefix of `text` of at most `bytes_max` bytes that ends on a char boundary.
fn prefix(text: &str, bytes_max: usize) -> &str {
    let mut end = bytes_max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(super) fn rpc_error(code: i64, message: impl Into<String>, data: Option<Value>) -> RpcError {
    let mut message = message.into();
    if message.len() > ERROR_MESSAGE_BYTES_MAX {
        message = format!("{}…", prefix(&message, ERROR_MESSAGE_BYTES_MAX));
    }
    RpcError {
        code,
        message,
        data,
    }
}

pub(super) fn tx_error(e: TxError) -> RpcError {
    rpc_error(
        e.code.code() as i64,
        e.to_string(),
        Some(json!({"name": e.code.name(), "code": e.code.code()})),
    )
}

pub(super) fn internal(e: impl std::fmt::Display) -> RpcError {
    rpc_error(error_code::INTERNAL_ERROR, e.to_string(), None)
}

pub(super) fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    }
}

/// Server-wide budgets shared by every connection: large bodies and large answers share one.
pub(crate) struct Budgets {
    /// Large bodies being read or handled, in [`BUDGET_UNIT_BYTES`] units.
    large: Arc<Semaphore>,
    large_units: usize,
    /// Request handlers running.
    handlers: Arc<Semaphore>,
}

impl Budgets {
    pub(crate) fn new(limits: &RpcLimits) -> Budgets {
        let large_units = units(limits.large_bodies_bytes_max).min(Semaphore::MAX_PERMITS);
        Budgets {
            large: Arc::new(Semaphore::new(large_units)),
            large_units,
            handlers: Arc::new(Semaphore::new(limits.handlers_max.max(1))),
        }
    }

    /// A place among the running request handlers.
    pub(crate) async fn handler(&self) -> Result<OwnedSemaphorePermit, tokio::sync::AcquireError> {
        self.handlers.clone().acquire_owned().await
    }

    /// Reserves `bytes` of the large-body budget, waiting at most `wait`.
    async fn reserve(&self, bytes: usize, wait: Duration) -> Result<OwnedSemaphorePermit, Refusal> {
        let need = units(bytes);
        if need > self.large_units {
            return Err(Refusal::Busy);
        }
        let need = u32::try_from(need).map_err(|_| Refusal::Busy)?;
        match tokio::time::timeout(wait, self.large.clone().acquire_many_owned(need)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Refusal::Busy),
        }
    }

    /// Grows a reservation to cover an answer of `bytes`, waiting at most `large_body_wait_ms`;
    /// an answer up to `small_body_bytes_max` needs none.
    pub(crate) async fn cover(
        &self,
        held: &mut Option<OwnedSemaphorePermit>,
        bytes: usize,
        limits: &RpcLimits,
    ) -> Result<(), Refusal> {
        if bytes <= limits.small_body_bytes_max {
            return Ok(());
        }
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        let need = units(bytes);
        if need <= have {
            return Ok(());
        }
        let wait = Duration::from_millis(limits.large_body_wait_ms);
        let permit = self
            .reserve((need - have) * BUDGET_UNIT_BYTES, wait)
            .await?;
        match held {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    /// Grows a reservation to cover `bytes` without waiting (a body longer than it declared or
    /// sent without a length).
    fn grow(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> Result<(), Refusal> {
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        let need = units(bytes);
        if need <= have {
            return Ok(());
        }
        let more = u32::try_from(need - have).map_err(|_| Refusal::Busy)?;
        let permit = self
            .large
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| Refusal::Busy)?;
        match held {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(BUDGET_UNIT_BYTES)
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooLarge,
    Busy,
    TimedOut,
    Broken,
}

impl Refusal {
    fn answer(self, limits: &RpcLimits, metrics: &ServerMetrics) -> Response {
        let (status, code, message) = match self {
            Refusal::TooLarge => {
                metrics.bodies_too_large.fetch_add(1, Relaxed);
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    error_code::BODY_TOO_LARGE,
                    format!("request body exceeds {RPC_BODY_BYTES_MAX} bytes"),
                )
            }
            Refusal::Busy => {
                metrics.bodies_busy.fetch_add(1, Relaxed);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVER_BUSY,
                    format!(
                        "bodies and answers over {} bytes share a budget of {} bytes, in use now; retry later",
                        limits.small_body_bytes_max, limits.large_bodies_bytes_max
                    ),
                )
            }
            Refusal::TimedOut => {
                metrics.bodies_timed_out.fetch_add(1, Relaxed);
                (
                    StatusCode::REQUEST_TIMEOUT,
                    error_code::INVALID_REQUEST,
                    format!(
                        "request body not received in time ({} ms, {} ms for large bodies)",
                        limits.body_read_timeout_ms, limits.large_body_read_timeout_ms
                    ),
                )
            }
            Refusal::Broken => (
                StatusCode::BAD_REQUEST,
                error_code::INVALID_REQUEST,
                "the request body could not be read".to_string(),
            ),
        };
        let body = response(Value::Null, Err(rpc_error(code, message, None)));
        (status, [(header::CONNECTION, "close")], axum::Json(body)).into_response()
    }
}

/// `POST /`: one JSON-RPC call or a batch.
pub(super) async fn http_rpc(
    State(state): State<Arc<RpcState>>,
    peer: Option<Extension<Peer>>,
    request: Request,
) -> Response {
    let limits = &state.limits;
    let metrics = &state.app.metrics.server;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut stream = request.into_body().into_data_stream();
    let (bytes, large_permit) = match read_body(&state, &mut stream, declared).await {
        Ok(read) => read,
        Err(refusal) => {
            state.app.metrics.record_rpc(false);
            if matches!(refusal, Refusal::TooLarge | Refusal::Busy) {
                // Answer at once, and discard what the client is still sending (for at most the
                // body timeout) so that it reads the answer instead of a reset connection.
                let discard = Duration::from_millis(limits.body_read_timeout_ms);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(discard, async {
                        while let Some(Ok(_)) = stream.next().await {}
                    })
                    .await;
                });
            }
            return refusal.answer(limits, metrics);
        }
    };
    if let Some(Extension(peer)) = &peer {
        peer.processing();
    }
    let Ok(handler) = state.bodies.handler().await else {
        return Refusal::Busy.answer(limits, metrics);
    };
    let app = state.app.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let answer = handle_body(&app, &bytes);
        drop(bytes);
        answer.map(|value| serde_json::to_vec(&value))
    })
    .await;
    drop(handler);
    let json = match answer {
        Ok(Some(Ok(json))) => json,
        Ok(None) => return StatusCode::NO_CONTENT.into_response(),
        Ok(Some(Err(_))) | Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "request handler failed").into_response()
        }
    };
    // A large answer holds the budget until it is written (or the connection drops).
    let mut permit = large_permit;
    if let Err(refusal) = state.bodies.cover(&mut permit, json.len(), limits).await {
        return refusal.answer(limits, metrics);
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        budgeted_body(json, permit),
    )
        .into_response()
}

/// A response body sent in chunks that keeps `permit` until the last chunk is taken (hyper
/// takes more only as it writes) or the body is dropped.
fn budgeted_body(json: Vec<u8>, permit: Option<OwnedSemaphorePermit>) -> Body {
    if permit.is_none() {
        return Body::from(json);
    }
    let json = Bytes::from(json);
    let chunks = (0..json.len())
        .step_by(RESPONSE_CHUNK_BYTES)
        .map(move |at| {
            let end = (at + RESPONSE_CHUNK_BYTES).min(json.len());
            Ok::<_, std::convert::Infallible>(json.slice(at..end))
        });
    Body::from_stream(futures_util::stream::iter(chunks).map(move |chunk| {
        let _held = &permit;
        chunk
    }))
}

/// Reads a body: at most [`RPC_BODY_BYTES_MAX`] bytes, within its read timeout; past
/// `small_body_bytes_max` only with room in the large-body budget (the permit comes back and is
/// held until the request is answered).
async fn read_body(
    state: &RpcState,
    stream: &mut BodyDataStream,
    declared: Option<usize>,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Refusal> {
    let limits = &state.limits;
    if declared.is_some_and(|n| n > RPC_BODY_BYTES_MAX) {
        return Err(Refusal::TooLarge);
    }
    let started = Instant::now();
    let small_deadline = started + Duration::from_millis(limits.body_read_timeout_ms);
    let large_deadline = started + Duration::from_millis(limits.large_body_read_timeout_ms);
    let mut permit = None;
    let mut deadline = small_deadline;
    if let Some(declared) = declared.filter(|n| *n > limits.small_body_bytes_max) {
        let wait = Duration::from_millis(limits.large_body_wait_ms);
        permit = Some(state.bodies.reserve(declared, wait).await?);
        deadline = large_deadline;
    }
    let expected = declared.unwrap_or(0).min(limits.small_body_bytes_max);
    let mut bytes = Vec::with_capacity(if permit.is_some() {
        declared.unwrap_or(0)
    } else {
        expected
    });
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| Refusal::TimedOut)?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| Refusal::Broken)?;
        let length = bytes.len().saturating_add(chunk.len());
        if length > RPC_BODY_BYTES_MAX {
            return Err(Refusal::TooLarge);
        }
        if length > limits.small_body_bytes_max {
            state.bodies.grow(&mut permit, length)?;
            deadline = large_deadline;
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, permit))
}

/// Counts a body's JSON values and, for a batch, its calls, before anything is parsed: a body
/// over [`RPC_JSON_VALUES_MAX`] values or [`RPC_BATCH_MAX`] calls is refused without building a
/// `serde_json::Value` tree (which costs tens of bytes per value).
pub(crate) fn scan(bytes: &[u8]) -> Result<(), RpcError> {
    let is_batch = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let (mut in_string, mut escaped) = (false, false);
    let (mut depth, mut values, mut calls) = (0usize, 1usize, 1usize);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                values += 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => {
                values += 1;
                if is_batch && depth == 1 {
                    calls += 1;
                }
            }
            _ => {}
        }
        if values > RPC_JSON_VALUES_MAX {
            return Err(rpc_error(
                error_code::INVALID_REQUEST,
                format!("a request holds at most {RPC_JSON_VALUES_MAX} JSON values"),
                None,
            ));
        }
        if calls > RPC_BATCH_MAX {
            return Err(batch_too_long());
        }
    }
    Ok(())
}

fn batch_too_long() -> RpcError {
    rpc_error(
        error_code::INVALID_REQUEST,
        format!("a batch holds at most {RPC_BATCH_MAX} calls"),
        None,
    )
}

/// Parses and answers a request body: one call or a batch. `None` for notifications only.
pub(crate) fn handle_body(app: &App, bytes: &[u8]) -> Option<Value> {
    if let Err(error) = scan(bytes) {
        app.metrics.record_rpc(false);
        app.metrics
            .server
            .bodies_refused_shape
            .fetch_add(1, Relaxed);
        return Some(response(Value::Null, Err(error)));
    }
    let parsed: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            app.metrics.record_rpc(false);
            return Some(response(
                Value::Null,
                Err(rpc_error(
                    error_code::PARSE_ERROR,
                    format!("invalid JSON: {e}"),
                    None,
                )),
            ));
        }
    };
    match parsed {
        Value::Array(calls) if calls.is_empty() => Some(response(
            Value::Null,
            Err(rpc_error(error_code::INVALID_REQUEST, "empty batch", None)),
        )),
        Value::Array(calls) if calls.len() > RPC_BATCH_MAX => {
            Some(response(Value::Null, Err(batch_too_long())))
        }
        Value::Array(calls) => {
            let answers = handle_batch(app, calls);
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        call => handle_call(app, call),
    }
}

/// Answers a batch's calls in order, each as if it came alone, except that a run of
/// consecutive `piazza_submitTransaction` calls is admitted together ([`App::submit_batch`]:
/// signatures verified across the cores, one durable journal write for the run). Each
/// submission still gets its own answer, the same as alone.
fn handle_batch(app: &App, calls: Vec<Value>) -> Vec<Value> {
    let mut calls = calls.into_iter().map(read_call).peekable();
    let mut answers = Vec::new();
    while let Some(call) = calls.next() {
        if !call.is_submission() {
            answers.extend(call.answer(app, |name, params| dispatch(app, name, params)));
            continue;
        }
        let mut run = vec![call];
        while let Some(next) = calls.next_if(Call::is_submission) {
            run.push(next);
        }
        answers.extend(submit_run(app, run));
    }
    answers
}

/// Admits a run of submission calls together and answers each.
fn submit_run(app: &App, run: Vec<Call>) -> Vec<Value> {
    let mut decoded: Vec<Result<Vec<u8>, RpcError>> = run
        .iter()
        .map(|call| match &call.request {
            Ok((_, params)) => submitted_bytes(params),
            Err(e) => Err(e.clone()),
        })
        .collect();
    let bytes: Vec<Vec<u8>> = decoded
        .iter_mut()
        .filter_map(|d| d.as_mut().ok().map(std::mem::take))
        .collect();
    let mut admitted = app.submit_batch(bytes).into_iter();
    run.into_iter()
        .zip(decoded)
        .filter_map(|(call, bytes)| {
            let result = bytes.map(|_| {
                admitted
                    .next()
                    .expect("one admission result per decoded submission")
            });
            call.answer(app, |_, _| result.and_then(submitted))
        })
        .collect()
}

/// One call object as read: its id, whether it is a notification, and its method and
/// parameters (or why it is not a valid call).
struct Call {
    id: Value,
    notification: bool,
    request: Result<(String, Vec<Value>), RpcError>,
}

impl Call {
    fn is_submission(&self) -> bool {
        matches!(&self.request, Ok((name, _)) if name == method::SUBMIT_TRANSACTION)
    }

    /// Runs the call with `run` (unless it is invalid) and counts it; `None` for a
    /// notification.
    fn answer(
        self,
        app: &App,
        run: impl FnOnce(&str, &[Value]) -> Result<Value, RpcError>,
    ) -> Option<Value> {
        let result = self.request.and_then(|(name, params)| run(&name, &params));
        app.metrics.record_rpc(result.is_ok());
        (!self.notification).then(|| response(self.id, result))
    }
}

/// Answers one call object; `None` for a notification (no `id`).
fn handle_call(app: &App, call: Value) -> Option<Value> {
    read_call(call).answer(app, |name, params| dispatch(app, name, params))
}

/// Reads one call object. A call that is not an object or whose `id` is malformed is answered
/// (with a null id) even without an `id`.
fn read_call(call: Value) -> Call {
    let invalid = |message: String| Call {
        id: Value::Null,
        notification: false,
        request: Err(rpc_error(error_code::INVALID_REQUEST, message, None)),
    };
    let Value::Object(mut call) = call else {
        return invalid("a call must be a JSON object".into());
    };
    let id = call.remove("id");
    let notification = id.is_none();
    let id = match id {
        None => Value::Null,
        Some(id @ (Value::Null | Value::Number(_))) => id,
        Some(Value::String(text)) if text.len() <= ERROR_ECHO_BYTES_MAX => Value::String(text),
        Some(_) => {
            return invalid(format!(
                "`id` must be a number, null or a string of at most {ERROR_ECHO_BYTES_MAX} bytes"
            ))
        }
    };
    let request = (|| {
        if call.get("jsonrpc") != Some(&json!("2.0")) {
            return Err(rpc_error(
                error_code::INVALID_REQUEST,
                "`jsonrpc` must be \"2.0\"",
                None,
            ));
        }
        let Some(Value::String(name)) = call.remove("method") else {
            return Err(rpc_error(
                error_code::INVALID_REQUEST,
                "`method` must be a string",
                None,
            ));
        };
        let params = match call.remove("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(params)) => params,
            Some(_) => {
                return Err(rpc_error(
                    error_code::INVALID_PARAMS,
                    "`params` must be an array",
                    None,
                ))
            }
        };
        Ok((name, params))
    })();
    Call {
        id,
        notification,
        request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expect: Result<(), &str>) {
        let got = scan(body.as_bytes()).map_err(|e| e.message);
        match expect {
            Ok(()) => assert!(got.is_ok(), "{body}: {got:?}"),
            Err(part) => assert!(
                got.as_ref().is_err_and(|m| m.contains(part)),
                "{body}: {got:?}"
            ),
        }
    }

    #[test]
    fn scan_counts_values_and_calls_outside_strings() {
        check(
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1,2]}"#,
            Ok(()),
        );
        let commas_in_a_string = format!(r#"["{}"]"#, ",".repeat(RPC_JSON_VALUES_MAX * 2));
        check(&commas_in_a_string, Ok(()));
        let escaped_quote = format!(r#"["\"{}"]"#, ",".repeat(RPC_JSON_VALUES_MAX * 2));
        check(&escaped_quote, Ok(()));
        let many = format!("{{\"params\":[{}1]}}", "1,".repeat(RPC_JSON_VALUES_MAX));
        check(&many, Err("JSON values"));
        let nested = format!("{{\"a\":[{}]}}", "[],".repeat(RPC_JSON_VALUES_MAX / 2));
        check(&nested, Err("JSON values"));
        let batch = |n: usize| format!("[{}]", vec!["{}"; n].join(","));
        check(&batch(RPC_BATCH_MAX), Ok(()));
        check(&batch(RPC_BATCH_MAX + 1), Err("at most 100 calls"));
    }

    #[test]
    fn clip_keeps_a_short_prefix_on_a_char_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(10_000);
        let clipped = clip(&long);
        assert!(clipped.len() < ERROR_ECHO_BYTES_MAX + 32, "{clipped}");
        assert!(clipped.ends_with("(20000 bytes)"), "{clipped}");
        let message = rpc_error(0, "x".repeat(1_000_000), None).message;
        assert!(message.len() <= ERROR_MESSAGE_BYTES_MAX + 4);
    }
}

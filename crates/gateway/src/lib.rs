//! piazza-gateway: an OpenAI-compatible HTTP API in front of Piazza's compute market.
//!
//! Any OpenAI client (its base URL set to the gateway, its API key one the gateway issued) gets
//! `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/completions` and
//! `POST /v1/chat/completions` (with `stream: true`). Each request becomes paid jobs on chain,
//! signed by the keystore key its API key is bound to, and each answer carries the receipts of
//! its jobs — job id, provider, trace root, submitting transaction — in a `piazza` field (a list,
//! one per job, in input order) and in `x-piazza-job`, `x-piazza-provider`,
//! `x-piazza-trace-root` and `x-piazza-tx` headers (comma-separated, same order).
//!
//! **Invariants.**
//! - A key never spends past its limit: a request reserves its worst case (escrow plus fee cap
//!   per job) before anything is signed and is refused with 429 `insufficient_quota` when that
//!   would pass the limit; on settlement the chain's actual charge replaces the reservation.
//! - Only a hash of each API key is stored (`DATA_DIR/api_keys.json`, written atomically).
//! - No request body can panic the gateway or make it allocate without bound: bodies are read
//!   up to [`Limits::body_bytes_max`] (413 beyond), then parsed into typed requests (400 on any
//!   mismatch); batches, token counts and stop sequences have named limits; requests in flight
//!   are bounded by a semaphore (429 `rate_limit_exceeded` when it stays full) and every job by a
//!   timeout (504).
//! - Errors are OpenAI-shaped: `{"error":{"message","type","param","code"}}`.
//! - The gateway holds no model and runs no inference; answers are exactly the settled jobs'
//!   outputs (chat output is only cut at a stop sequence, as OpenAI does).
//!
//! ```no_run
//! # async fn example() -> Result<(), piazza_gateway::GatewayError> {
//! use piazza_gateway::{start, GatewayConfig};
//! let config = GatewayConfig::new(
//!     "127.0.0.1:8080".parse().unwrap(),
//!     "http://127.0.0.1:8545",
//!     "./devnet/gateway".into(),
//!     "./devnet/keys".into(),
//! );
//! let gateway = start(config).await?;
//! let api_key = gateway.create_key("dev", "10".parse().unwrap())?;
//! println!("OPENAI_BASE_URL={}/v1 OPENAI_API_KEY={api_key}", gateway.url());
//! # gateway.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod cli;
pub mod keys;
pub mod market;
pub mod openai;

pub use cli::{run, GatewayCommand};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keys::{KeyRecord, KeyStore, KeyStoreError};
use market::{JobFailure, JobOutcome, JobReceipt, Market, Model, Signer};
use openai::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest, Sampling};
use piazza_keystore::Keystore;
use piazza_ledger::compute::{
    JobParams, JOB_INPUT_BYTES_MAX, STOP_SEQUENCES_MAX, STOP_SEQUENCE_BYTES_MAX,
};
use piazza_primitives::Amount;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Units (input tokens) escrowed per embedding job: the embedding engine's token limit.
pub const EMBEDDING_UNITS_MAX: u64 = 256;
/// The OpenAI default `max_tokens` for chat when the request names none.
pub const CHAT_MAX_TOKENS_DEFAULT: u64 = 256;
/// The OpenAI default `max_tokens` for text completions.
pub const COMPLETION_MAX_TOKENS_DEFAULT: u64 = 16;
/// How long a request body may take to arrive (408 beyond).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages in one chat request.
pub const CHAT_MESSAGES_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("node: {0}")]
    Node(#[from] piazza_client::ClientError),
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    #[error("keystore: {0}")]
    Keystore(#[from] piazza_keystore::KeystoreError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// How the inputs of one embeddings request are submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSubmission {
    /// All at once, consecutive nonces, settling in the same blocks.
    Concurrent,
    /// One job after the other.
    Sequential,
}

/// Bounds on what one gateway takes on.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (413 beyond).
    pub body_bytes_max: usize,
    /// Requests handled at once.
    pub requests_in_flight_max: NonZeroUsize,
    /// How long a request waits for a free slot before 429.
    pub queue_wait: Duration,
    /// From submission to settlement, per job (504 beyond).
    pub job_timeout: Duration,
    /// Inputs in one embeddings request.
    pub batch_inputs_max: usize,
    /// Largest `max_tokens` a generation request may ask for.
    pub max_tokens_max: u64,
    pub batch_submission: BatchSubmission,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 1024 * 1024,
            requests_in_flight_max: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            queue_wait: Duration::from_secs(10),
            job_timeout: Duration::from_secs(120),
            batch_inputs_max: 64,
            max_tokens_max: 2048,
            batch_submission: BatchSubmission::Concurrent,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub node_url: String,
    /// Holds `api_keys.json`.
    pub data_dir: PathBuf,
    /// The keystore of the paying keys.
    pub keystore_dir: PathBuf,
    /// Unlocks the paying keys.
    pub password: String,
    pub limits: Limits,
}

impl GatewayConfig {
    pub fn new(
        listen: SocketAddr,
        node_url: &str,
        data_dir: PathBuf,
        keystore_dir: PathBuf,
    ) -> Self {
        GatewayConfig {
            listen,
            node_url: node_url.to_string(),
            data_dir,
            keystore_dir,
            password: String::new(),
            limits: Limits::default(),
        }
    }
}

struct Gateway {
    market: Market,
    keys: KeyStore,
    keystore: Keystore,
    password: String,
    signers: tokio::sync::Mutex<BTreeMap<String, Arc<Signer>>>,
    limits: Limits,
    slots: Arc<Semaphore>,
}

/// A running gateway.
pub struct GatewayHandle {
    /// Where it listens (the real port when asked for port 0).
    pub addr: SocketAddr,
    gateway: Arc<Gateway>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl GatewayHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Issues an API key paid by the keystore key `signer`; returns the key (shown once).
    pub fn create_key(&self, signer: &str, spend_limit: Amount) -> Result<String, GatewayError> {
        self.gateway.keystore.info(signer)?;
        Ok(self.gateway.keys.create(signer, spend_limit)?.0)
    }

    pub fn keys(&self) -> Vec<KeyRecord> {
        self.gateway.keys.list()
    }

    /// Stops accepting requests and waits for the server to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Connects to the node, opens the key files and serves until [`GatewayHandle::shutdown`].
pub async fn start(config: GatewayConfig) -> Result<GatewayHandle, GatewayError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        GatewayError::Config(format!("creating {}: {e}", config.data_dir.display()))
    })?;
    let market = Market::connect(&config.node_url, config.limits.job_timeout).await?;
    let gateway = Arc::new(Gateway {
        market,
        keys: KeyStore::open(&config.data_dir)?,
        keystore: Keystore::open(&config.keystore_dir)?,
        password: config.password,
        signers: tokio::sync::Mutex::new(BTreeMap::new()),
        slots: Arc::new(Semaphore::new(config.limits.requests_in_flight_max.get())),
        limits: config.limits,
    });
    let app = router(gateway.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen {
            addr: config.listen,
            source,
        })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "gateway server stopped");
        }
    });
    tracing::info!(%addr, "OpenAI-compatible gateway listening");
    Ok(GatewayHandle {
        addr,
        gateway,
        stop,
        task,
    })
}

fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(unknown_url)
        .with_state(gateway)
}

async fn unknown_url(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("unknown_url"),
        format!("Unknown request URL: {method} {}", uri.path()),
    )
}

/// An authenticated request holding one of the in-flight slots.
struct Caller {
    key: KeyRecord,
    _slot: OwnedSemaphorePermit,
}

impl Gateway {
    async fn admit(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let api_key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::bad_key(
                    "You didn't provide an API key: send `Authorization: Bearer pz-...`",
                )
            })?;
        let key = self
            .keys
            .authenticate(api_key)
            .map_err(|_| ApiError::bad_key("Incorrect API key provided"))?;
        let slot = tokio::time::timeout(self.limits.queue_wait, self.slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "requests",
                    Some("rate_limit_exceeded"),
                    "The gateway is at its limit of requests in flight; retry shortly",
                )
            })?;
        Ok(Caller { key, _slot: slot })
    }

    /// Authenticates, then reads and parses a bounded JSON body.
    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(Caller, T), ApiError> {
        let caller = self.admit(headers).await?;
        let limit = self.limits.body_bytes_max;
        let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    Some("timeout"),
                    "The request body did not arrive in time",
                )
            })?
            .map_err(|_| {
                ApiError::too_large(format!(
                    "The request body is larger than {limit} bytes (or was cut off)"
                ))
            })?;
        let request = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid(None, format!("Invalid request body: {e}")))?;
        Ok((caller, request))
    }

    async fn signer(&self, name: &str) -> Result<Arc<Signer>, ApiError> {
        let mut signers = self.signers.lock().await;
        if let Some(s) = signers.get(name) {
            return Ok(s.clone());
        }
        let (keystore_dir, name_owned, password) = (
            self.keystore.dir().to_path_buf(),
            name.to_string(),
            self.password.clone(),
        );
        // argon2: off the async threads.
        let key = tokio::task::spawn_blocking(move || {
            Keystore::open(&keystore_dir)?.unlock(&name_owned, &password)
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("cannot unlock the paying key `{name}`: {e}")))?;
        let signer = Arc::new(Market::signer(key));
        signers.insert(name.to_string(), signer.clone());
        Ok(signer)
    }

    /// The model, checked to be of `kind` and served by some provider.
    async fn served_model(&self, name: &str, kind: &str) -> Result<(Model, Amount), ApiError> {
        let model = self.market.model(name).await?;
        if model.info.kind != kind {
            return Err(ApiError::invalid(
                Some("model"),
                format!(
                    "`{name}` is a {} model; this endpoint needs a {kind} model",
                    model.info.kind
                ),
            ));
        }
        let price = model.price_per_unit.ok_or_else(|| {
            ApiError::unavailable(
                "no_provider",
                format!("No provider serves `{name}` right now; retry later"),
            )
        })?;
        Ok((model, price))
    }

    /// Runs `inputs` as jobs of one request against one reservation; the outcomes in order.
    async fn run_jobs(
        &self,
        caller: &Caller,
        model: &str,
        inputs: Vec<Vec<u8>>,
        params: JobParams,
        max_units: u64,
        price_per_unit: Amount,
    ) -> Result<Vec<JobOutcome>, ApiError> {
        for input in &inputs {
            if input.len() > JOB_INPUT_BYTES_MAX {
                return Err(ApiError::too_large(format!(
                    "An input is {} bytes; a job takes at most {JOB_INPUT_BYTES_MAX}",
                    input.len()
                )));
            }
        }
        let overflow = || ApiError::invalid(None, "the request's price overflows");
        let escrow = price_per_unit
            .checked_mul(max_units as u128)
            .ok_or_else(overflow)?;
        let per_job = escrow
            .checked_add(market::JOB_MAX_FEE)
            .ok_or_else(overflow)?;
        let worst = per_job
            .checked_mul(inputs.len() as u128)
            .ok_or_else(overflow)?;
        let reservation = self
            .keys
            .reserve(&caller.key.key_hash, worst)
            .map_err(|e| match e {
                KeyStoreError::LimitReached { .. } => {
                    ApiError::quota(format!("You exceeded your spend limit: {e}"))
                }
                other => ApiError::internal(other.to_string()),
            })?;
        let signer = match self.signer(&caller.key.signer).await {
            Ok(s) => s,
            Err(e) => {
                let _ = self.keys.settle(reservation, Amount::ZERO);
                return Err(e);
            }
        };
        let job = |input: Vec<u8>| {
            self.market
                .run_job(&signer, model, input, params.clone(), max_units, escrow)
        };
        let results: Vec<Result<JobOutcome, JobFailure>> = match self.limits.batch_submission {
            BatchSubmission::Concurrent => {
                futures_util::future::join_all(inputs.into_iter().map(job)).await
            }
            BatchSubmission::Sequential => {
                let mut results = Vec::new();
                for input in inputs {
                    results.push(job(input).await);
                }
                results
            }
        };
        let charged = results
            .iter()
            .map(|r| match r {
                Ok(o) => o.charged,
                Err(f) => f.charged,
            })
            .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap_or(a));
        if let Err(e) = self.keys.settle(reservation, charged) {
            tracing::error!(error = %e, key = %caller.key.id, "could not record a charge");
        }
        results
            .into_iter()
            .map(|r| r.map_err(|f| f.error))
            .collect()
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn receipts_json(receipts: &[&JobReceipt]) -> Value {
    serde_json::to_value(receipts).unwrap_or(Value::Null)
}

/// The receipts' `x-piazza-*` headers: comma-separated, in job order.
fn receipt_headers(receipts: &[&JobReceipt]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let join = |f: &dyn Fn(&JobReceipt) -> String| {
        receipts.iter().map(|r| f(r)).collect::<Vec<_>>().join(",")
    };
    for (name, value) in [
        ("x-piazza-job", join(&|r| r.job.to_string())),
        ("x-piazza-provider", join(&|r| r.provider.clone())),
        ("x-piazza-trace-root", join(&|r| r.trace_root.clone())),
        ("x-piazza-tx", join(&|r| r.tx.clone())),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

async fn models(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _caller = gw.admit(&headers).await?;
    let catalogue = gw.market.catalogue().await?;
    let data: Vec<Value> = catalogue
        .values()
        .map(|m| {
            json!({
                "id": m.info.name,
                "object": "model",
                "created": 0,
                "owned_by": m.info.owner,
                "piazza": {
                    "kind": m.info.kind,
                    "architecture": m.info.architecture,
                    "weights_commitment": m.info.weights_commitment,
                    "tokenizer_hash": m.info.tokenizer_hash,
                    "config_hash": m.info.config_hash,
                    "license": m.info.license,
                    "providers": m.info.providers,
                    "price_per_unit": m.price_per_unit.map(|p| p.base_units().to_string()),
                }
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn embeddings(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, request) = gw.request::<EmbeddingsRequest>(&headers, body).await?;
    let inputs = request.input.strings("input")?;
    if inputs.is_empty() {
        return Err(ApiError::invalid(
            Some("input"),
            "`input` must not be empty",
        ));
    }
    if inputs.len() > gw.limits.batch_inputs_max {
        return Err(ApiError::invalid(
            Some("input"),
            format!("At most {} inputs per request", gw.limits.batch_inputs_max),
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("encoding_format"),
                format!("`encoding_format` must be `float` or `base64`, not `{other}`"),
            ))
        }
    };
    let (model, price) = gw.served_model(&request.model, "embedding").await?;
    let outcomes = gw
        .run_jobs(
            &caller,
            &model.info.name,
            inputs.into_iter().map(String::into_bytes).collect(),
            JobParams::default(),
            EMBEDDING_UNITS_MAX,
            price,
        )
        .await?;
    let mut data = Vec::with_capacity(outcomes.len());
    let mut tokens = 0u64;
    for (index, outcome) in outcomes.iter().enumerate() {
        if outcome.output.len() % 4 != 0 {
            return Err(ApiError::upstream(format!(
                "job {}: an embedding of {} bytes",
                outcome.receipt.job,
                outcome.output.len()
            )));
        }
        let dims = outcome.output.len() / 4;
        if let Some(asked) = request.dimensions {
            if asked != dims as u64 {
                return Err(ApiError::invalid(
                    Some("dimensions"),
                    format!(
                        "`{}` has {dims} dimensions; other sizes are not supported",
                        model.info.name
                    ),
                ));
            }
        }
        let embedding = if base64 {
            Value::String(openai::base64(&outcome.output))
        } else {
            let floats: Vec<f32> = outcome
                .output
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            json!(floats)
        };
        tokens = tokens.saturating_add(outcome.work_units);
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    let receipts: Vec<&JobReceipt> = outcomes.iter().map(|o| &o.receipt).collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model.info.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "piazza": receipts_json(&receipts),
    });
    Ok((receipt_headers(&receipts), Json(body)).into_response())
}

/// Sampling fields → job parameters and the token budget.
fn job_params(
    sampling: &Sampling,
    default_max_tokens: u64,
    max_tokens_max: u64,
) -> Result<(JobParams, u64), ApiError> {
    if sampling.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(Some("n"), "Only `n: 1` is supported"));
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

/// One generation job for a chat or text completion.
async fn generate(
    gw: &Gateway,
    caller: &Caller,
    model: &str,
    input: Vec<u8>,
    sampling: &Sampling,
    default_max_tokens: u64,
    chat: bool,
) -> Result<(JobOutcome, JobParams, u64), ApiError> {
    let (mut params, max_tokens) =
        job_params(sampling, default_max_tokens, gw.limits.max_tokens_max)?;
    params.chat = chat;
    let (model, price) = gw.served_model(model, "generation").await?;
    let mut outcomes = gw
        .run_jobs(
            caller,
            &model.info.name,
            vec![input],
            params.clone(),
            max_tokens,
            price,
        )
        .await?;
    let outcome = outcomes
        .pop()
        .ok_or_else(|| ApiError::internal("no job outcome"))?;
    Ok((outcome, params, max_tokens))
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

/// Ends a stream: the last chunk (with the finish reason) carries the receipts; then the usage
/// chunk, when asked for.
fn end_stream(
    headers: HeaderMap,
    mut chunks: Vec<Value>,
    mut last: Value,
    piazza: &Value,
    usage: Option<Value>,
) -> Response {
    last["piazza"] = piazza.clone();
    chunks.push(last);
    chunks.extend(usage);
    sse(headers, chunks)
}

/// With `stream_options.include_usage`, a final chunk with no choices that carries the usage
/// (`fields`: id, object, created, model, usage) and the receipts.
fn usage_chunk(sampling: &Sampling, mut fields: Value, piazza: &Value) -> Option<Value> {
    let wanted = sampling
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    wanted.then(|| {
        fields["choices"] = json!([]);
        fields["piazza"] = piazza.clone();
        fields
    })
}

/// Pieces of `text` for streaming: words with their following whitespace.
fn pieces(text: &str) -> Vec<&str> {
    text.split_inclusive(char::is_whitespace).collect()
}

async fn chat_completions(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, request) = gw.request::<ChatRequest>(&headers, body).await?;
    if request.messages.is_empty() || request.messages.len() > CHAT_MESSAGES_MAX {
        return Err(ApiError::invalid(
            Some("messages"),
            format!("`messages` must hold 1 to {CHAT_MESSAGES_MAX} messages"),
        ));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for m in &request.messages {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::invalid(
                    Some("messages"),
                    format!("role `{other}` is not supported"),
                ))
            }
        };
        let content = m
            .content
            .as_ref()
            .map(|c| c.text())
            .transpose()?
            .unwrap_or_default();
        messages.push(json!({"role": role, "content": content}));
    }
    // The chat flag: the provider renders these messages with the model's own template.
    let input = serde_json::to_vec(&messages).map_err(|e| ApiError::internal(e.to_string()))?;
    let (outcome, params, _) = generate(
        &gw,
        &caller,
        &request.model,
        input,
        &request.sampling,
        CHAT_MAX_TOKENS_DEFAULT,
        true,
    )
    .await?;
    let (text, reason) = finish(&outcome, &params);
    let receipts = [&outcome.receipt];
    let id = format!("chatcmpl-{}", outcome.receipt.job);
    let created = now_s();
    let usage = json!({"prompt_tokens": 0, "completion_tokens": outcome.work_units, "total_tokens": outcome.work_units});
    let piazza = receipts_json(&receipts);
    if request.sampling.stream {
        let chunk = |delta: Value, reason: Option<&str>| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": request.model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason}]})
        };
        let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        chunks.extend(
            pieces(&text)
                .into_iter()
                .map(|p| chunk(json!({"content": p}), None)),
        );
        let last = chunk(json!({}), Some(reason));
        let usage_chunk = usage_chunk(
            &request.sampling,
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": request.model, "usage": usage}),
            &piazza,
        );
        return Ok(end_stream(
            receipt_headers(&receipts),
            chunks,
            last,
            &piazza,
            usage_chunk,
        ));
    }
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": reason}],
        "usage": usage,
        "piazza": piazza,
    });
    Ok((receipt_headers(&receipts), Json(body)).into_response())
}

async fn completions(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, request) = gw.request::<CompletionRequest>(&headers, body).await?;
    let mut prompts = request.prompt.strings("prompt")?;
    if prompts.len() != 1 {
        return Err(ApiError::invalid(
            Some("prompt"),
            "Exactly one prompt per request is supported",
        ));
    }
    let prompt = prompts.pop().unwrap_or_default();
    let (outcome, params, _) = generate(
        &gw,
        &caller,
        &request.model,
        prompt.into_bytes(),
        &request.sampling,
        COMPLETION_MAX_TOKENS_DEFAULT,
        false,
    )
    .await?;
    let (text, reason) = finish(&outcome, &params);
    let receipts = [&outcome.receipt];
    let id = format!("cmpl-{}", outcome.receipt.job);
    let created = now_s();
    let usage = json!({"prompt_tokens": 0, "completion_tokens": outcome.work_units, "total_tokens": outcome.work_units});
    let piazza = receipts_json(&receipts);
    if request.sampling.stream {
        let chunk = |text: &str, reason: Option<&str>| {
            json!({"id": id, "object": "text_completion", "created": created, "model": request.model,
                   "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": reason}]})
        };
        let chunks: Vec<Value> = pieces(&text).into_iter().map(|p| chunk(p, None)).collect();
        let last = chunk("", Some(reason));
        let usage_chunk = usage_chunk(
            &request.sampling,
            json!({"id": id, "object": "text_completion", "created": created, "model": request.model, "usage": usage}),
            &piazza,
        );
        return Ok(end_stream(
            receipt_headers(&receipts),
            chunks,
            last,
            &piazza,
            usage_chunk,
        ));
    }
    let body = json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": request.model,
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": reason}],
        "usage": usage,
        "piazza": piazza,
    });
    Ok((receipt_headers(&receipts), Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn outcome(text: &str, work_units: u64) -> JobOutcome {
        JobOutcome {
            output: text.as_bytes().to_vec(),
            work_units,
            charged: Amount::ZERO,
            receipt: JobReceipt {
                job: 1,
                model: "m".into(),
                provider: "pz1p".into(),
                trace_root: "aa".into(),
                tx: "bb".into(),
                input_hash: String::new(),
                output_hash: String::new(),
                price: "0".into(),
                fee: "0".into(),
                height: 1,
            },
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
    fn receipt_headers_list_jobs_in_order() {
        let (a, mut b) = (outcome("", 0), outcome("", 0));
        b.receipt.job = 2;
        let h = receipt_headers(&[&a.receipt, &b.receipt]);
        assert_eq!(h["x-piazza-job"], "1,2");
        assert_eq!(h["x-piazza-tx"], "bb,bb");
    }
}

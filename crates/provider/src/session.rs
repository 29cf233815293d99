//! The provider's session endpoint (DESIGN.md §3.1), on the server of [`crate::server`]:
//!
//! - `POST /v1/sessions/{id}/requests` — a signed request (and the voucher paying the previous
//!   one): answered with server-sent events, `delta`s of text as the generation produces them
//!   (an embedding: one `embedding` event), then the signed `receipt`; or an `error`.
//! - `POST /v1/sessions/{id}/vouchers` — a voucher on its own; answers the provider's view.
//! - `GET /v1/sessions/{id}` — the provider's view: next seq, paid, owed, the last receipt.
//!
//! The rules are [`piazza_session::ProviderChannel`]'s: request `n + 1` is served only once
//! request `n` is paid. Each admitted request is stored (for audits) before it runs; each
//! receipt and voucher is stored with the channel before the answer goes out.
//!
//! **Invariants:** one request runs per session at a time and at most
//! `ServerLimits::runs_max` on the engine (one more is refused with `busy`, never queued); a
//! request whose reader hangs up or stalls is cancelled at its next token and costs the client
//! nothing (no receipt is issued for it); hostile bodies get a JSON error, never a panic.

use crate::models::{self, LoadedModel, Streaming};
use crate::server::{read_body, BodyError, ServerLimits};
use crate::session_store::SessionStore;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use piazza_api::JobParamsInfo;
use piazza_codec::Encode;
use piazza_ledger::job::JobParams;
use piazza_ledger::sessions::{Msg, SignedReceipt, SignedRequest, SignedVoucher};
use piazza_primitives::{Address, Amount, SecretKey};
use piazza_session::wire::{ErrorView, Event, RequestBody, SessionView, VoucherBody, WireError};
use piazza_session::{ProviderChannel, Refusal, Served, Terms};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// A session as the chain assigned it: its terms and the model it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub terms: Terms,
    pub model: String,
}

/// Where the endpoint reads sessions (the node, in the daemon).
pub trait SessionSource: Send + Sync + 'static {
    /// The session `id`; `Ok(None)` when the chain has none (or none assigned yet).
    fn session(
        &self,
        id: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Assigned>, String>> + Send + '_>>;
}

/// Sessions as the node reports them (`piazza_getSession`).
pub struct NodeSessions(pub piazza_client::Client);

impl SessionSource for NodeSessions {
    fn session(
        &self,
        id: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Assigned>, String>> + Send + '_>> {
        Box::pin(async move {
            let Some(info) = self.0.session(id).await.map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let terms = piazza_client::session::terms(&info).map_err(|e| e.to_string())?;
            Ok(terms.map(|terms| Assigned {
                terms,
                model: info.model,
            }))
        })
    }
}

/// What the endpoint needs to serve.
pub struct EndpointConfig {
    pub key: SecretKey,
    /// This provider's price (a receipt charges it, capped at the session's maximum).
    pub price_per_unit: Amount,
    pub models: Arc<BTreeMap<String, LoadedModel>>,
    pub threads: usize,
    pub limits: ServerLimits,
    pub store: SessionStore,
    pub source: Arc<dyn SessionSource>,
}

/// A session's channel and the model it runs.
struct Entry {
    channel: ProviderChannel,
    model: String,
}

/// The endpoint's state, shared by its handlers.
pub struct Endpoint {
    config: EndpointConfig,
    me: Address,
    channels: Mutex<BTreeMap<u64, Arc<tokio::sync::Mutex<Entry>>>>,
    runs: Arc<Semaphore>,
}

/// An error answer: its HTTP status and wire body.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    error: ErrorView,
}

impl Failure {
    fn new(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Failure {
        Failure {
            status,
            error: ErrorView {
                code: code.into(),
                message: message.to_string(),
            },
        }
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Failure {
        let status = match &refusal {
            Refusal::NotAssigned { .. } => StatusCode::NOT_FOUND,
            Refusal::Unpaid { .. } => StatusCode::PAYMENT_REQUIRED,
            Refusal::Busy { .. } => StatusCode::CONFLICT,
            Refusal::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Signature(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure::new(status, refusal.code(), &refusal)
    }
}

impl From<WireError> for Failure {
    fn from(e: WireError) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, e.code(), &e)
    }
}

impl From<BodyError> for Failure {
    fn from(e: BodyError) -> Failure {
        let (status, code) = match e {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            BodyError::TooSlow { .. } => (StatusCode::REQUEST_TIMEOUT, "too_slow"),
            BodyError::Broken(_) => (StatusCode::BAD_REQUEST, "malformed"),
        };
        Failure::new(status, code, &e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error });
        (self.status, axum::Json(body)).into_response()
    }
}

/// The endpoint's routes over `config`.
pub fn router(config: EndpointConfig) -> (Router, Arc<Endpoint>) {
    let endpoint = Arc::new(Endpoint {
        me: config.key.public_key().address(),
        runs: Arc::new(Semaphore::new(config.limits.runs_max.max(1))),
        channels: Mutex::new(BTreeMap::new()),
        config,
    });
    let router = Router::new()
        .route("/v1/sessions/{id}", get(show))
        .route("/v1/sessions/{id}/requests", post(request))
        .route("/v1/sessions/{id}/vouchers", post(voucher))
        .fallback(|| async {
            Failure::new(StatusCode::NOT_FOUND, "unknown_url", "no such endpoint")
        })
        .with_state(endpoint.clone());
    (router, endpoint)
}

fn session_id(text: &str) -> Result<u64, Failure> {
    text.parse().map_err(|_| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the session id is not a number",
        )
    })
}

fn io_failure(e: std::io::Error) -> Failure {
    tracing::error!(error = %e, "session store write failed");
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage",
        "the provider cannot store session state",
    )
}

impl Endpoint {
    /// Session `id`'s channel: kept, restored from the store, or new from the chain's record.
    async fn entry(&self, id: u64) -> Result<Arc<tokio::sync::Mutex<Entry>>, Failure> {
        if let Some(entry) = self.lock_channels().get(&id) {
            return Ok(entry.clone());
        }
        let assigned = self
            .config
            .source
            .session(id)
            .await
            .map_err(|e| Failure::new(StatusCode::BAD_GATEWAY, "node", e))?
            .ok_or_else(|| {
                Failure::new(
                    StatusCode::NOT_FOUND,
                    "unknown_session",
                    format!("the chain has no assigned session {id}"),
                )
            })?;
        if !self.config.models.contains_key(&assigned.model) {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "not_assigned",
                format!("this provider does not serve `{}`", assigned.model),
            ));
        }
        let channel = match self.config.store.channel(id) {
            Some(snapshot) => ProviderChannel::restore(assigned.terms, self.me, &snapshot)
                .map_err(|e| Failure::new(StatusCode::NOT_FOUND, "not_assigned", e))?,
            None => ProviderChannel::new(assigned.terms, self.me)?,
        };
        let mut channels = self.lock_channels();
        if !channels.contains_key(&id) && channels.len() >= self.config.limits.sessions_max {
            return Err(Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!(
                    "this provider already serves {} sessions",
                    self.config.limits.sessions_max
                ),
            ));
        }
        Ok(channels
            .entry(id)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Entry {
                    channel,
                    model: assigned.model,
                }))
            })
            .clone())
    }

    fn lock_channels(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<tokio::sync::Mutex<Entry>>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, channel: &ProviderChannel) -> Result<(), Failure> {
        self.config
            .store
            .save_channel(channel.terms().session, &channel.snapshot())
            .map_err(io_failure)
    }

    /// Takes `voucher` unless it is the one already held.
    fn pay(&self, entry: &mut Entry, voucher: &SignedVoucher) -> Result<(), Failure> {
        let view = entry.channel.view();
        let held = view.paid_seq == voucher.voucher.seq && view.paid == voucher.voucher.total;
        if !held {
            entry.channel.pay(voucher)?;
            self.save(&entry.channel)?;
        }
        Ok(())
    }

    fn view(&self, channel: &ProviderChannel) -> SessionView {
        SessionView {
            channel: channel.view(),
            last_receipt: channel
                .last_receipt()
                .map(|r| piazza_session::wire::to_hex(&r.clone().sign(&self.config.key))),
        }
    }

    /// Sessions with a channel here.
    pub fn sessions(&self) -> Vec<u64> {
        self.lock_channels().keys().copied().collect()
    }

    /// Reads every session again from the chain: takes newer terms (top-ups), and drops the
    /// channels of sessions no longer open here that hold no paid receipt still to commit, so
    /// `sessions_max` counts live sessions only. Their stored state stays for audits.
    pub async fn prune(&self) {
        for id in self.sessions() {
            let Ok(assigned) = self.config.source.session(id).await else {
                continue;
            };
            let Some(entry) = self.lock_channels().get(&id).cloned() else {
                continue;
            };
            let mut guard = entry.lock().await;
            let open = match assigned {
                Some(assigned) if assigned.terms.open && assigned.terms.provider == self.me => {
                    guard.channel.refresh(assigned.terms);
                    true
                }
                _ => false,
            };
            // Receipts not paid by a voucher can no longer be committed: nothing to keep.
            let idle = guard.channel.view().in_flight.is_none() && guard.channel.commit().is_none();
            if !open && idle {
                drop(guard);
                self.lock_channels().remove(&id);
                tracing::info!(session = id, "session no longer open here; channel dropped");
            }
        }
    }

    /// Channels with receipts their latest voucher pays, not yet committed.
    pub async fn commits(&self) -> Vec<piazza_session::Commit> {
        let entries: Vec<_> = self.lock_channels().values().cloned().collect();
        let mut commits = Vec::new();
        for entry in entries {
            if let Some(commit) = entry.lock().await.channel.commit() {
                commits.push(commit);
            }
        }
        commits
    }

    /// Records `commit`'s receipts for its audits and drops them from the channel (the commit
    /// landed).
    pub async fn committed(&self, commit: &piazza_session::Commit) -> Result<(), Failure> {
        let (id, seq) = (commit.voucher.voucher.session, commit.voucher.voucher.seq);
        let mut w = piazza_codec::Writer::new();
        w.seq(&commit.receipts);
        self.config
            .store
            .save_commit(id, seq, &w.into_bytes())
            .map_err(io_failure)?;
        let entry = self.lock_channels().get(&id).cloned();
        if let Some(entry) = entry {
            let mut entry = entry.lock().await;
            entry.channel.committed(seq);
            self.save(&entry.channel)?;
        }
        Ok(())
    }

    /// The reveals owed for the stored commits (audited receipts not yet revealed); forgets
    /// the commits whose audits are over. `sent` holds when each reveal was last sent: one
    /// not shown on chain [`REVEAL_RETRY_BLOCKS`] later is sent again.
    async fn reveals(
        &self,
        client: &piazza_client::Client,
        sent: &mut BTreeMap<(u64, u64), u64>,
        height: u64,
    ) -> Vec<(piazza_ledger::sessions::Msg, bool)> {
        let mut reveals = Vec::new();
        for (session, voucher_seq) in self.config.store.commits() {
            let Ok(Some(commits)) = client.session_commits(session, None).await else {
                continue;
            };
            let Some(info) = commits.iter().find(|c| c.voucher_seq == voucher_seq) else {
                continue;
            };
            if info.audits_closed || (info.paid && info.audited.is_empty()) {
                self.config.store.forget_commit(session, voucher_seq);
                sent.retain(|(commit, _), _| *commit != info.id);
                continue;
            }
            let Some(receipts) = self.stored_receipts(session, voucher_seq) else {
                tracing::error!(
                    session,
                    voucher_seq,
                    "stored commit unreadable: its audits cannot be answered"
                );
                continue;
            };
            for &index in info.audited.iter().filter(|i| !info.revealed.contains(i)) {
                let last = sent.get(&(info.id, index)).copied();
                if last.is_some_and(|last| height < last.saturating_add(REVEAL_RETRY_BLOCKS)) {
                    continue;
                }
                sent.insert((info.id, index), height);
                match self.reveal(session, info.id, index, &receipts) {
                    Some(reveal) => reveals.push((reveal, last.is_none())),
                    None => tracing::error!(
                        session,
                        index,
                        "an audited receipt or its request is missing"
                    ),
                }
            }
        }
        reveals
    }

    fn stored_receipts(
        &self,
        session: u64,
        voucher_seq: u64,
    ) -> Option<Vec<piazza_ledger::sessions::Receipt>> {
        let bytes = self.config.store.commit(session, voucher_seq)?;
        let mut r = piazza_codec::Reader::new(&bytes);
        let receipts = r
            .seq(piazza_ledger::sessions::RECEIPTS_PER_COMMIT_MAX as usize)
            .ok()?;
        r.finish().ok()?;
        Some(receipts)
    }

    /// The reveal of receipt `index` of commit `commit`.
    fn reveal(
        &self,
        session: u64,
        commit: u64,
        index: u64,
        receipts: &[piazza_ledger::sessions::Receipt],
    ) -> Option<piazza_ledger::sessions::Msg> {
        let receipt = receipts.get(usize::try_from(index).ok()?)?;
        let bytes = self.config.store.request(session, receipt.seq)?;
        let request = <SignedRequest as piazza_codec::Decode>::from_bytes(&bytes).ok()?;
        let proof = piazza_ledger::sessions::prove_receipt(receipts, index as usize)?;
        Some(piazza_ledger::sessions::Msg::Reveal {
            session,
            commit,
            index,
            receipt: Box::new(receipt.clone()),
            proof,
            request: Box::new(request),
        })
    }
}

async fn show(State(endpoint): State<Arc<Endpoint>>, Path(id): Path<String>) -> Response {
    let answer = async {
        let entry = endpoint.entry(session_id(&id)?).await?;
        let entry = entry.lock().await;
        Ok::<_, Failure>(axum::Json(endpoint.view(&entry.channel)))
    };
    answer.await.into_response()
}

async fn voucher(
    State(endpoint): State<Arc<Endpoint>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let answer = async {
        let id = session_id(&id)?;
        let body = read_body(body, &endpoint.config.limits).await?;
        let voucher = VoucherBody::parse(&body)?;
        let entry = endpoint.entry(id).await?;
        let mut entry = entry.lock().await;
        endpoint.pay(&mut entry, &voucher)?;
        Ok::<_, Failure>(axum::Json(endpoint.view(&entry.channel)))
    };
    answer.await.into_response()
}

async fn request(
    State(endpoint): State<Arc<Endpoint>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    match admit(&endpoint, &id, body).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

/// A generation's units are its new tokens: a request must ask for at most `max_units` of
/// them (and an auditor re-runs exactly its parameters, so the provider cannot cut them).
fn check_params(model: &LoadedModel, request: &SignedRequest) -> Result<(), Failure> {
    let body = &request.request;
    let tokens = u64::from(body.params.max_tokens);
    if matches!(model, LoadedModel::Generation(_)) && (tokens == 0 || tokens > body.max_units) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "max_units",
            format!(
                "max_tokens must be between 1 and max_units ({}), not {tokens}",
                body.max_units
            ),
        ));
    }
    Ok(())
}

async fn admit(endpoint: &Arc<Endpoint>, id: &str, body: Body) -> Result<Response, Failure> {
    let id = session_id(id)?;
    let body = read_body(body, &endpoint.config.limits).await?;
    let (request, voucher) = RequestBody::parse(&body)?;
    if request.request.session != id {
        return Err(
            Refusal::Signature(piazza_ledger::sessions::SignatureError::WrongSession {
                expected: id,
                found: request.request.session,
            })
            .into(),
        );
    }
    let entry = endpoint.entry(id).await?;
    let mut guard = entry.lock().await;
    if let Some(voucher) = &voucher {
        endpoint.pay(&mut guard, voucher)?;
    }
    let model = endpoint
        .config
        .models
        .get(&guard.model)
        .cloned()
        .ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, "not_assigned", "model not loaded"))?;
    check_params(&model, &request)?;
    if let Err(refusal) = guard.channel.admit(&request) {
        // The chain may know more (a top-up): read the session again once.
        if !matches!(refusal, Refusal::OverDeposit { .. }) {
            return Err(refusal.into());
        }
        if let Ok(Some(assigned)) = endpoint.config.source.session(id).await {
            guard.channel.refresh(assigned.terms);
        }
        guard.channel.admit(&request)?;
    }
    let seq = request.request.seq;
    let Ok(permit) = endpoint.runs.clone().try_acquire_owned() else {
        guard.channel.abandon(seq);
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "the provider runs {} requests already; retry shortly",
                endpoint.config.limits.runs_max
            ),
        ));
    };
    if let Err(e) = endpoint
        .config
        .store
        .save_request(id, seq, &request.to_bytes())
    {
        guard.channel.abandon(seq);
        return Err(io_failure(e));
    }
    drop(guard);
    let (events, reader) = mpsc::channel(endpoint.config.limits.stream_events_max.max(1));
    tokio::spawn(serve(
        endpoint.clone(),
        entry,
        request,
        model,
        permit,
        events,
    ));
    let stream = futures_util::stream::unfold(reader, |mut reader| async move {
        let event: Event = reader.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(event.to_sse())),
            reader,
        ))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Sends `event` unless the reader is gone or takes none for `stall`.
async fn send(events: &mpsc::Sender<Event>, event: Event, stall: Duration) -> bool {
    matches!(
        tokio::time::timeout(stall, events.send(event)).await,
        Ok(Ok(()))
    )
}

/// A request's parameters as the job path reads them: `JobParamsInfo` is `JobParams`'s JSON
/// view, field for field.
fn job_params(params: &JobParams) -> Result<JobParamsInfo, crate::ProviderError> {
    serde_json::to_value(params)
        .and_then(serde_json::from_value)
        .map_err(|e| crate::ProviderError::Model(format!("request parameters: {e}")))
}

/// Runs an admitted request, streams it, and ends with its receipt (or abandons it).
async fn serve(
    endpoint: Arc<Endpoint>,
    entry: Arc<tokio::sync::Mutex<Entry>>,
    request: SignedRequest,
    model: LoadedModel,
    _permit: OwnedSemaphorePermit,
    events: mpsc::Sender<Event>,
) {
    let body = request.request;
    let (seq, session) = (body.seq, body.session);
    let stall = Duration::from_millis(endpoint.config.limits.stream_stall_ms);
    let embedding = matches!(model, LoadedModel::Embedding(_));
    let params = match job_params(&body.params) {
        Ok(params) => params,
        Err(e) => {
            entry.lock().await.channel.abandon(seq);
            let _ = send(&events, Event::error("model", &e), stall).await;
            return;
        }
    };
    let prompt = match &model {
        LoadedModel::Generation(generator) => {
            Some((generator.clone(), body.input.clone(), params.clone()))
        }
        LoadedModel::Embedding(_) => None,
    };
    let mut run = models::stream(model, body.input, params, endpoint.config.threads);
    let (mut sent_bytes, mut reader_gone) = (0, false);
    while let Some(text) = run.deltas.recv().await {
        if reader_gone {
            continue;
        }
        sent_bytes += text.len();
        if !send(&events, Event::Delta { text }, stall).await {
            reader_gone = true;
            run.cancel.store(true, Ordering::Relaxed);
        }
    }
    let result = match run.done.await {
        Ok(result) => result,
        Err(e) => Err(crate::ProviderError::Model(e.to_string())),
    };
    // An embedding's units are its input's tokens; a generation's prompt is counted apart
    // (its units are the tokens it generated), off the path to the first token.
    let input_units = match prompt {
        None => 0,
        Some((generator, input, params)) => tokio::task::spawn_blocking(move || {
            let text = String::from_utf8_lossy(&input);
            piazza_arbiter::prompt_ids(&generator, &models::job_spec(&input, &params), &text)
                .map_or(0, |ids| ids.len() as u64)
        })
        .await
        .unwrap_or(0),
    };
    let mut guard = entry.lock().await;
    let execution = match result {
        Ok(execution) if !reader_gone && !events.is_closed() => execution,
        Ok(_) => {
            tracing::info!(
                session,
                seq,
                "reader gone before the receipt; request abandoned"
            );
            guard.channel.abandon(seq);
            return;
        }
        Err(e) => {
            guard.channel.abandon(seq);
            let _ = send(&events, Event::error("model", &e), stall).await;
            return;
        }
    };
    let input_units = if embedding {
        execution.work_units
    } else {
        input_units
    };
    let served = Served {
        output: &execution.output,
        trace_root: execution.trace_root,
        units: execution.work_units,
        input_units,
        price_per_unit: endpoint.config.price_per_unit,
    };
    let receipt = match guard.channel.complete(served) {
        Ok(receipt) => receipt.sign(&endpoint.config.key),
        Err(refusal) => {
            guard.channel.abandon(seq);
            let _ = send(&events, Event::error(refusal.code(), &refusal), stall).await;
            return;
        }
    };
    if let Err(failure) = endpoint.save(&guard.channel) {
        let _ = send(&events, Event::Error(failure.error), stall).await;
        return;
    }
    drop(guard);
    let last = if embedding {
        Event::Embedding {
            vector: models::embedding_from_bytes(&execution.output).unwrap_or_default(),
        }
    } else {
        Event::Delta {
            text: Streaming::tail(&execution.output, sent_bytes),
        }
    };
    if !matches!(&last, Event::Delta { text } if text.is_empty()) {
        send(&events, last, stall).await;
    }
    send(&events, Event::receipt(receipt), stall).await;
}

/// When the daemon posts a session's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPolicy {
    /// Commit once this many paid receipts wait.
    pub receipts: u64,
    /// Commit whatever is paid at least once every this many blocks.
    pub interval_blocks: u64,
}

impl Default for CommitPolicy {
    fn default() -> CommitPolicy {
        // Commits follow time, not traffic: one per session per interval, or sooner only when
        // half of a commit's bound of receipts waits.
        CommitPolicy {
            receipts: piazza_ledger::sessions::RECEIPTS_PER_COMMIT_MAX / 2,
            interval_blocks: 60,
        }
    }
}

/// Blocks after which a reveal not yet shown on chain is sent again.
const REVEAL_RETRY_BLOCKS: u64 = 5;
/// The commit loop reads every session again from the chain once in this many of its ticks.
const PRUNE_EVERY_TICKS: u64 = 60;
/// How often the commit loop looks at the sessions.
const COMMIT_CHECK_MS: u64 = 500;
/// How long a commit's transaction is waited for before the next try.
const COMMIT_RECEIPT_TIMEOUT_MS: u64 = 60_000;

/// Posts `sessions::Msg::Commit` for each session whose paid receipts reach
/// `policy.receipts`, or have waited `policy.interval_ms`, until `shutdown` turns true.
/// A commit that lands drops its receipts from the channel; one refused is tried again.
pub async fn commit_loop(
    endpoint: Arc<Endpoint>,
    client: piazza_client::Client,
    poster: Arc<crate::Poster>,
    policy: CommitPolicy,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // One clock for the provider: the height its receipts started waiting (none waiting: none),
    // so every session's commit of an interval shares its transactions.
    let mut since: Option<u64> = None;
    // Sessions whose commit was in a refused transaction: their next try goes alone.
    let mut alone: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    let mut revealed = BTreeMap::new();
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(COMMIT_CHECK_MS)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        ticks += 1;
        if ticks.is_multiple_of(PRUNE_EVERY_TICKS) {
            endpoint.prune().await;
        }
        let commits = endpoint.commits().await;
        let now = match client.status().await {
            Ok(status) => status.height,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the height; commits wait");
                continue;
            }
        };
        if commits.is_empty() {
            since = None;
        }
        let interval_due = now.saturating_sub(*since.get_or_insert(now)) >= policy.interval_blocks;
        let due: Vec<piazza_session::Commit> = commits
            .into_iter()
            .filter(|c| interval_due || c.count >= policy.receipts)
            .collect();
        if interval_due {
            since = Some(now);
        }
        let messages = due
            .iter()
            .map(|c| {
                let session = c.voucher.voucher.session;
                (commit_message(c), !alone.contains(&session))
            })
            .collect();
        for batch in reveal_batches(messages) {
            let sessions: Vec<u64> = batch.iter().filter_map(commit_session).collect();
            match post_batch(&client, &poster, batch).await {
                Ok(hash) => {
                    for commit in due
                        .iter()
                        .filter(|c| sessions.contains(&c.voucher.voucher.session))
                    {
                        let (session, seq) =
                            (commit.voucher.voucher.session, commit.voucher.voucher.seq);
                        alone.remove(&session);
                        tracing::info!(session, tx = %hash, count = commit.count, "session receipts committed");
                        if let Err(e) = endpoint.committed(commit).await {
                            tracing::warn!(session, seq, error = %e.error.message, "commit landed; state not saved");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(?sessions, error = %e, "session commits refused; each tries again alone");
                    alone.extend(sessions);
                }
            }
        }
        for batch in reveal_batches(endpoint.reveals(&client, &mut revealed, now).await) {
            let count = batch.len();
            match poster.send(batch, None).await {
                Ok(hash) => tracing::info!(tx = %hash, count, "session audits revealed"),
                Err(e) => tracing::warn!(error = %e, count, "session reveals refused"),
            }
        }
    }
}

/// Bytes of reveals one transaction carries, leaving room for its envelope.
const REVEAL_BATCH_BYTES_MAX: usize = piazza_ledger::tx::TX_BYTES_MAX - 4 * 1024;

/// Groups reveals (or commits) into transactions: first tries go together, as many to a
/// transaction as its message and byte bounds allow, so the chain sees a transaction per batch
/// rather than per audited request (or per session); a retry goes alone, so one message that
/// cannot land never holds up others.
fn reveal_batches(
    reveals: Vec<(piazza_ledger::sessions::Msg, bool)>,
) -> Vec<Vec<piazza_ledger::tx::Message>> {
    let mut batches: Vec<Vec<piazza_ledger::tx::Message>> = Vec::new();
    let mut open: Vec<piazza_ledger::tx::Message> = Vec::new();
    let mut open_bytes = 0;
    for (reveal, first) in reveals {
        let message = piazza_ledger::tx::Message::Sessions(reveal);
        if !first {
            batches.push(vec![message]);
            continue;
        }
        let bytes = piazza_codec::Encode::to_bytes(&message).len();
        if !open.is_empty()
            && (open.len() == piazza_ledger::tx::TX_MESSAGES_MAX
                || open_bytes + bytes > REVEAL_BATCH_BYTES_MAX)
        {
            batches.push(std::mem::take(&mut open));
            open_bytes = 0;
        }
        open_bytes += bytes;
        open.push(message);
    }
    if !open.is_empty() {
        batches.push(open);
    }
    batches
}

/// The `Commit` message of `commit`.
fn commit_message(commit: &piazza_session::Commit) -> piazza_ledger::sessions::Msg {
    piazza_ledger::sessions::Msg::Commit {
        session: commit.voucher.voucher.session,
        root: commit.root,
        count: commit.count,
        units: commit.units,
        voucher: commit.voucher.clone(),
    }
}

/// The session a batched `Commit` message is for.
fn commit_session(message: &piazza_ledger::tx::Message) -> Option<u64> {
    match message {
        piazza_ledger::tx::Message::Sessions(Msg::Commit { session, .. }) => Some(*session),
        _ => None,
    }
}

/// Sends one transaction of `messages` and waits until it is in a block without error.
async fn post_batch(
    client: &piazza_client::Client,
    poster: &crate::Poster,
    messages: Vec<piazza_ledger::tx::Message>,
) -> Result<piazza_primitives::Hash, crate::ProviderError> {
    let hash = poster.send(messages, None).await?;
    let receipt = client
        .wait_for_receipt(&hash, Duration::from_millis(COMMIT_RECEIPT_TIMEOUT_MS))
        .await?;
    if let Some(error) = receipt.error {
        return Err(crate::ProviderError::Config(format!(
            "{hash}: {} {}",
            error.name, error.message
        )));
    }
    Ok(hash)
}

/// The address to listen on for a registered endpoint `http://IP:PORT[/...]`; `None` for an
/// empty endpoint or one that names a host (put a proxy in front, or register the address).
pub fn listen_address(endpoint: &str) -> Option<std::net::SocketAddr> {
    let rest = endpoint.strip_prefix("http://")?;
    rest.split('/').next()?.parse().ok()
}

/// The daemon's session endpoint and its commit loop.
pub struct Daemon {
    pub server: crate::server::ServerHandle,
    commits: tokio::task::JoinHandle<()>,
}

impl Daemon {
    pub async fn shutdown(self) {
        self.server.shutdown().await;
        let _ = self.commits.await;
    }
}

/// Starts the session endpoint on the provider's registered endpoint, and its commit loop;
/// `None` when the endpoint is not an `http://IP:PORT` address.
pub async fn start_daemon(
    config: &crate::ProviderConfig,
    models: Arc<BTreeMap<String, LoadedModel>>,
    poster: Arc<crate::Poster>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Daemon>, crate::ProviderError> {
    let Some(listen) = listen_address(&config.endpoint) else {
        if !config.endpoint.is_empty() {
            tracing::warn!(endpoint = %config.endpoint, "not an http://IP:PORT endpoint: sessions are not served");
        }
        return Ok(None);
    };
    let client = piazza_client::Client::new(&config.node_url);
    let limits = ServerLimits {
        runs_max: config.concurrency.max(1),
        ..ServerLimits::default()
    };
    let (router, endpoint) = router(EndpointConfig {
        key: config.key.clone(),
        price_per_unit: config.price_per_unit,
        models,
        threads: config.threads,
        limits: limits.clone(),
        store: SessionStore::open(&config.journal_dir.join("sessions"))?,
        source: Arc::new(NodeSessions(client.clone())),
    });
    let server = crate::server::start(listen, router, limits)
        .await
        .map_err(|e| crate::ProviderError::Config(format!("session endpoint {listen}: {e}")))?;
    tracing::info!(addr = %server.addr, "session endpoint listening");
    let commits = tokio::spawn(commit_loop(
        endpoint,
        client,
        poster,
        CommitPolicy::default(),
        shutdown,
    ));
    Ok(Some(Daemon { server, commits }))
}

/// The owner's challenge of `receipt`, committed in `commit`, with the trace of its own honest
/// run of `request` on `model` (what `piazza session challenge` sends): the trace root, step
/// count and token ids the bisection game starts from.
pub fn owner_challenge(
    model: &LoadedModel,
    commit: u64,
    request: &SignedRequest,
    receipt: &SignedReceipt,
    threads: usize,
) -> Result<Msg, crate::ProviderError> {
    let asked = &request.request;
    let spec = models::job_spec(&asked.input, &job_params(&asked.params)?);
    let run =
        crate::dispute::run_with_fault(model, &spec, threads, &crate::dispute::Fault::default())?;
    Ok(Msg::Challenge {
        session: receipt.receipt.session,
        commit,
        receipt: Box::new(receipt.clone()),
        request: Box::new(request.clone()),
        trace_root: piazza_primitives::Hash(run.trace_root),
        step_count: run.step_count(),
        ids: piazza_primitives::Hash(run.ids_commitment()),
    })
}

/// The commit among `commits` that pays request `seq`.
pub fn commit_paying(commits: &[piazza_api::SessionCommitInfo], seq: u64) -> Option<u64> {
    commits
        .iter()
        .find(|c| c.from_seq < seq && seq <= c.voucher_seq)
        .map(|c| c.id)
}

/// How long [`challenge_and_play`] plays at most.
pub const CHALLENGE_PLAY_MS_MAX: u64 = 30 * 60 * 1000;

/// Sends `challenge` from `key` (the session's owner), then plays the dispute it opens with
/// `models` until its job ends (or [`CHALLENGE_PLAY_MS_MAX`] passes); returns the job and how
/// it ended.
pub async fn challenge_and_play(
    client: &piazza_client::Client,
    key: &SecretKey,
    models: Arc<BTreeMap<String, LoadedModel>>,
    challenge: Msg,
    threads: usize,
    poll: Duration,
) -> Result<(u64, piazza_api::JobState), crate::ProviderError> {
    let hash = client
        .send_message(key, piazza_ledger::tx::Message::Sessions(challenge))
        .await?;
    let receipt = client
        .wait_for_receipt(&hash, Duration::from_millis(COMMIT_RECEIPT_TIMEOUT_MS))
        .await?;
    if let Some(e) = receipt.error {
        return Err(crate::ProviderError::Config(format!(
            "the challenge {hash} was refused: {} ({})",
            e.name, e.message
        )));
    }
    let job: u64 = receipt
        .events
        .iter()
        .find(|e| e.kind == "sessions.challenged")
        .and_then(|e| e.attributes.get("job")?.parse().ok())
        .ok_or_else(|| crate::ProviderError::Config(format!("no job in {hash}'s events")))?;
    let me = key.public_key().address();
    let chain_id = client.status().await?.chain_id;
    let poster = crate::Poster::new(client.clone(), key.clone(), chain_id);
    let player = crate::dispute::Player::new(me, models, threads, crate::dispute::Fault::default());
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CHALLENGE_PLAY_MS_MAX);
    loop {
        crate::play(client, &player, &poster, &me).await;
        let state = client.job(job).await?.map(|j| j.status);
        if let Some(state @ (piazza_api::JobState::Settled | piazza_api::JobState::Failed)) = state
        {
            return Ok((job, state));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(crate::ProviderError::Config(format!(
                "job {job}'s dispute did not end within {CHALLENGE_PLAY_MS_MAX} ms"
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_ledger::sessions::{Msg, Receipt, ReceiptProof, Request};
    use piazza_primitives::{Amount, Hash, SecretKey};

    fn reveal(seq: u64, input_bytes: usize) -> Msg {
        let request = Request {
            session: 1,
            seq,
            input: vec![b'x'; input_bytes],
            params: Default::default(),
            max_units: 8,
        }
        .sign(&SecretKey::from_seed([3; 32]));
        Msg::Reveal {
            session: 1,
            commit: 0,
            index: seq,
            receipt: Box::new(Receipt {
                session: 1,
                seq,
                input_hash: Hash::ZERO,
                output_hash: Hash::ZERO,
                trace_root: Hash::ZERO,
                units: 8,
                input_units: 3,
                price: Amount::new(8),
            }),
            proof: ReceiptProof { siblings: vec![] },
            request: Box::new(request),
        }
    }

    #[test]
    fn every_sessions_commit_shares_transactions_and_a_refused_one_retries_alone() {
        let key = SecretKey::from_seed([3; 32]);
        let commit = |session: u64| piazza_session::Commit {
            root: Hash::ZERO,
            count: 3,
            units: 9,
            voucher: piazza_ledger::sessions::Voucher {
                session,
                seq: 3,
                total: Amount::new(9),
            }
            .sign(&key),
            receipts: Vec::new(),
        };
        // Twenty sessions due in one interval; session 5's last try was refused.
        let due: Vec<_> = (1..=20)
            .map(|session| (commit_message(&commit(session)), session != 5))
            .collect();
        let batches = reveal_batches(due);
        let sessions: Vec<Vec<u64>> = batches
            .iter()
            .map(|b| b.iter().filter_map(commit_session).collect())
            .collect();
        assert_eq!(
            sessions.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1, 16, 3]
        );
        assert_eq!(sessions[0], vec![5]);
        let mut all: Vec<u64> = sessions.concat();
        all.sort_unstable();
        assert_eq!(all, (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn reveals_share_transactions_within_their_bounds_and_retries_go_alone() {
        let sizes = |batches: &[Vec<piazza_ledger::tx::Message>]| {
            batches.iter().map(Vec::len).collect::<Vec<_>>()
        };
        // Small reveals: as many to a transaction as it may hold messages.
        let small: Vec<_> = (1..=40).map(|seq| (reveal(seq, 100), true)).collect();
        assert_eq!(sizes(&reveal_batches(small)), vec![16, 16, 8]);
        // Large ones: as many as fit in a transaction's bytes.
        let large: Vec<_> = (1..=9).map(|seq| (reveal(seq, 16 * 1024), true)).collect();
        let batches = reveal_batches(large);
        assert_eq!(sizes(&batches), vec![3, 3, 3]);
        for batch in &batches {
            let bytes: usize = batch
                .iter()
                .map(|m| piazza_codec::Encode::to_bytes(m).len())
                .sum();
            assert!(bytes <= REVEAL_BATCH_BYTES_MAX, "{bytes}");
        }
        // A retry goes in a transaction of its own.
        let mixed = vec![
            (reveal(1, 100), true),
            (reveal(2, 100), false),
            (reveal(3, 100), true),
        ];
        assert_eq!(sizes(&reveal_batches(mixed)), vec![1, 2]);
    }
}

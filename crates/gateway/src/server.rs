//! The gateway's state and the path every paid request takes: authenticate, take the key's
//! share of the slots, read and check the body, reserve the worst case against the key's
//! spend limit, then run the jobs and settle the charge in a task of its own.

use crate::errors::ApiError;
use crate::fees::JobFees;
use crate::keys::{KeyRecord, KeyStore, KeyStoreError, Reservation};
use crate::market::{JobFailure, JobOutcome, JobReceipt, Market, Model, Signer};
use crate::params::{self, Endpoint};
use crate::slots::{Slot, Slots};
use crate::{BatchSubmission, GatewayConfig, GatewayError, Limits, BODY_READ_TIMEOUT};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::routing::{get, post};
use axum::Router;
use piazza_keystore::Keystore;
use piazza_ledger::compute::{self, JobParams, JOB_INPUT_BYTES_MAX};
use piazza_primitives::Amount;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) struct Gateway {
    pub(crate) market: Market,
    keys: Arc<KeyStore>,
    keystore: Keystore,
    password: String,
    signers: tokio::sync::Mutex<BTreeMap<String, Arc<Signer>>>,
    pub(crate) limits: Limits,
    slots: Slots,
    pub(crate) sessions: crate::sessions::Sessions,
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

    /// What requests in flight hold against the key with this hash.
    pub fn reserved(&self, key_hash: &str) -> Amount {
        self.gateway.keys.reserved(key_hash)
    }

    /// Requests holding one of the gateway's slots (jobs still settling included).
    pub fn requests_in_flight(&self) -> usize {
        self.gateway.slots.in_flight()
    }

    /// Session transactions (opens, top-ups, closes) the gateway has sent.
    pub fn session_transactions(&self) -> u64 {
        self.gateway.sessions.transactions()
    }

    /// The fees the gateway's session transactions paid, in base units (each charged to the
    /// API key whose request sent it).
    pub fn session_fees_paid(&self) -> u64 {
        self.gateway.sessions.fees_paid()
    }

    /// The chain's job fees as the gateway measured them.
    pub fn job_fees(&self) -> JobFees {
        self.gateway.market.fees()
    }

    /// What an embeddings request for `inputs` reserves against a key: the escrow and the
    /// exact fee of each job.
    pub async fn embedding_worst_case(
        &self,
        model: &str,
        inputs: &[&str],
    ) -> Result<Amount, ApiError> {
        let (model, price) = self.gateway.served_model(model, "embedding").await?;
        let jobs = self.gateway.jobs(
            &model.info.name,
            inputs.iter().map(|i| i.as_bytes().to_vec()).collect(),
            JobParams::default(),
            crate::EMBEDDING_UNITS_MAX,
            price,
        )?;
        Ok(jobs.worst_case)
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
        keys: Arc::new(KeyStore::open(&config.data_dir)?),
        keystore: Keystore::open(&config.keystore_dir)?,
        password: config.password,
        signers: tokio::sync::Mutex::new(BTreeMap::new()),
        slots: Slots::new(
            config.limits.requests_in_flight_max,
            config.limits.requests_in_flight_per_key_max,
        ),
        limits: config.limits,
        sessions: Default::default(),
    });
    let paywall = match config.paywall {
        Some(paywall) => Some(Arc::new(
            crate::x402::Paywall::new(paywall, gateway.market.client.clone())
                .await
                .map_err(GatewayError::Config)?,
        )),
        None => None,
    };
    let app = crate::x402::mount(router(gateway.clone()), paywall);
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
    // Each SSE event goes out when written, not held for the previous one's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
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
        .route("/v1/models", get(crate::models::list))
        .route("/v1/embeddings", post(crate::embeddings::create))
        .route("/v1/completions", post(crate::generation::completions))
        .route("/v1/chat/completions", post(crate::generation::chat))
        .route(
            "/mcp",
            post(crate::mcp::post)
                .get(crate::mcp::not_offered)
                .delete(crate::mcp::not_offered),
        )
        .route(
            "/agents/{agent}/.well-known/agent-card.json",
            get(crate::agents::card),
        )
        .route(
            "/agents/{agent}/registration.json",
            get(crate::agents::registration),
        )
        .route("/v1/agents/search", get(crate::agents::search_route))
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

/// An authenticated request holding its key's slot and one of the gateway's.
pub(crate) struct Caller {
    pub(crate) key: KeyRecord,
    pub(crate) slot: Slot,
}

/// The jobs of one request, priced.
pub(crate) struct Jobs {
    /// Each job's submission and the exact fee of its transaction.
    jobs: Vec<(compute::Msg, Amount)>,
    escrow: Amount,
    fees: Amount,
    max_units: u64,
    price_per_unit: Amount,
    /// Escrow and fee of every job.
    worst_case: Amount,
}

/// A reservation that is given back when dropped unless settled first, so no path (an error,
/// a hung-up client, a cancelled task) leaves it held.
pub(crate) struct Held {
    keys: Arc<KeyStore>,
    key_id: String,
    reservation: Option<Reservation>,
}

impl Held {
    pub(crate) fn settle(mut self, charged: Amount) {
        if let Some(reservation) = self.reservation.take() {
            if let Err(e) = self.keys.settle(reservation, charged) {
                tracing::error!(error = %e, key = %self.key_id, %charged, "could not record a charge");
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            tracing::warn!(key = %self.key_id, "a reservation was released without a settlement");
            let _ = self.keys.settle(reservation, Amount::ZERO);
        }
    }
}

/// The 429 for a request whose worst case the key's remaining limit cannot cover.
fn quota_error(e: KeyStoreError, jobs: &Jobs) -> ApiError {
    match e {
        KeyStoreError::LimitReached {
            asked,
            remaining,
            spent,
            reserved,
            limit,
        } => ApiError::quota(format!(
            "This request's worst-case cost is {asked} PZA ({n} job(s), each escrowing up to {units} units at {price} PZA, {escrow} PZA, plus {fees} PZA of transaction fees in all), more than the {remaining} PZA left of this API key's spend limit ({limit} PZA; {spent} PZA spent, {reserved} PZA held by requests in flight). Raise the key's limit or ask for fewer tokens.",
            n = jobs.jobs.len(),
            units = jobs.max_units,
            price = jobs.price_per_unit,
            escrow = jobs.escrow,
            fees = jobs.fees,
        )),
        other => ApiError::internal(other.to_string()),
    }
}

impl Gateway {
    fn authenticate(&self, headers: &HeaderMap) -> Result<KeyRecord, ApiError> {
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
        self.keys
            .authenticate(api_key)
            .map_err(|_| ApiError::bad_key("Incorrect API key provided"))
    }

    /// Authenticates and takes the key's slot, then one of the gateway's.
    pub(crate) async fn admit(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let key = self.authenticate(headers)?;
        let wait = self.limits.queue_wait;
        let key_slot = self
            .slots
            .key_slot(&key.key_hash, wait)
            .await
            .map_err(|busy| ApiError::busy(busy.to_string()))?;
        let slot = self
            .slots
            .slot(key_slot, wait)
            .await
            .map_err(|busy| ApiError::busy(busy.to_string()))?;
        Ok(Caller { key, slot })
    }

    /// Authenticates, takes the key's slot, reads the bounded body, refuses fields `endpoint`
    /// cannot honour, parses it, and only then takes one of the gateway's slots: a key whose
    /// clients send slowly holds only its own share.
    pub(crate) async fn request<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(Caller, T), ApiError> {
        let key = self.authenticate(headers)?;
        let wait = self.limits.queue_wait;
        let key_slot = self
            .slots
            .key_slot(&key.key_hash, wait)
            .await
            .map_err(|busy| ApiError::busy(busy.to_string()))?;
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
        let request = parse(endpoint, &bytes)?;
        let slot = self
            .slots
            .slot(key_slot, wait)
            .await
            .map_err(|busy| ApiError::busy(busy.to_string()))?;
        Ok((Caller { key, slot }, request))
    }

    /// Reserves `worst_case` against `key`'s spend limit (429 when it would pass it).
    pub(crate) fn reserve(&self, key: &KeyRecord, worst_case: Amount) -> Result<Held, ApiError> {
        let reservation = self.keys.reserve(&key.key_hash, worst_case).map_err(|e| match e {
            KeyStoreError::LimitReached { remaining, limit, .. } => ApiError::quota(format!(
                "This request's worst-case cost is {worst_case} PZA, more than the {remaining} PZA left of this API key's spend limit ({limit} PZA). Raise the key's limit or ask for fewer tokens."
            )),
            other => ApiError::internal(other.to_string()),
        })?;
        Ok(Held {
            keys: self.keys.clone(),
            key_id: key.id.clone(),
            reservation: Some(reservation),
        })
    }

    pub(crate) async fn signer(&self, name: &str) -> Result<Arc<Signer>, ApiError> {
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
        // The key's own password file (`NAME.password` beside it) first, else the gateway's.
        let key = tokio::task::spawn_blocking(move || {
            let keystore = Keystore::open(&keystore_dir)?;
            let password = keystore.stored_password(&name_owned)?.unwrap_or(password);
            keystore.unlock(&name_owned, &password)
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("cannot unlock the paying key `{name}`: {e}")))?;
        let signer = Arc::new(Market::signer(key));
        signers.insert(name.to_string(), signer.clone());
        Ok(signer)
    }

    /// The model, checked to be of `kind` and served by some provider.
    pub(crate) async fn served_model(
        &self,
        name: &str,
        kind: &str,
    ) -> Result<(Model, Amount), ApiError> {
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

    /// The submissions for `inputs`, each with its exact fee, and their worst case.
    fn jobs(
        &self,
        model: &str,
        inputs: Vec<Vec<u8>>,
        params: JobParams,
        max_units: u64,
        price_per_unit: Amount,
    ) -> Result<Jobs, ApiError> {
        let overflow = || ApiError::invalid(None, "the request's price overflows");
        let escrow = price_per_unit
            .checked_mul(u128::from(max_units))
            .ok_or_else(overflow)?;
        let (mut jobs, mut fees, mut worst_case) =
            (Vec::with_capacity(inputs.len()), Amount::ZERO, Amount::ZERO);
        for input in inputs {
            if input.len() > JOB_INPUT_BYTES_MAX {
                return Err(ApiError::too_large(format!(
                    "An input is {} bytes; a job takes at most {JOB_INPUT_BYTES_MAX}",
                    input.len()
                )));
            }
            let job = compute::Msg::SubmitJob {
                model: model.to_string(),
                input,
                params: params.clone(),
                max_units,
                max_price: escrow,
            };
            let fee = self.market.fee(&job)?;
            fees = fees.checked_add(fee).ok_or_else(overflow)?;
            worst_case = worst_case
                .checked_add(escrow)
                .and_then(|w| w.checked_add(fee))
                .ok_or_else(overflow)?;
            jobs.push((job, fee));
        }
        Ok(Jobs {
            jobs,
            escrow,
            fees,
            max_units,
            price_per_unit,
            worst_case,
        })
    }

    /// Runs `inputs` as jobs of one request against one reservation; the outcomes in order.
    ///
    /// The jobs run and their charge settles in a task of their own that holds the caller's
    /// slots and reservation: a client that hangs up after its jobs are signed still has them
    /// charged to its key, and the reservation and slots are given back on every path.
    pub(crate) async fn run_jobs(
        self: &Arc<Self>,
        caller: Caller,
        model: &str,
        inputs: Vec<Vec<u8>>,
        params: JobParams,
        max_units: u64,
        price_per_unit: Amount,
    ) -> Result<Vec<JobOutcome>, ApiError> {
        let jobs = self.jobs(model, inputs, params, max_units, price_per_unit)?;
        let reservation = self
            .keys
            .reserve(&caller.key.key_hash, jobs.worst_case)
            .map_err(|e| quota_error(e, &jobs))?;
        let held = Held {
            keys: self.keys.clone(),
            key_id: caller.key.id.clone(),
            reservation: Some(reservation),
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let gateway = self.clone();
        tokio::spawn(async move {
            let results = gateway.settle(caller, held, jobs.jobs).await;
            // The client may be gone; the charge is recorded either way.
            let _ = answer.send(results);
        });
        answered
            .await
            .map_err(|_| ApiError::internal("the job task ended without an answer"))?
    }

    /// Signs and runs the jobs, then charges what the chain took. Owns the caller's slots.
    async fn settle(
        &self,
        caller: Caller,
        held: Held,
        jobs: Vec<(compute::Msg, Amount)>,
    ) -> Result<Vec<JobOutcome>, ApiError> {
        let _slot = caller.slot;
        let signer = match self.signer(&caller.key.signer).await {
            Ok(signer) => signer,
            Err(e) => {
                held.settle(Amount::ZERO);
                return Err(e);
            }
        };
        let run = |(job, fee): (compute::Msg, Amount)| self.market.run_job(&signer, job, fee);
        let results: Vec<Result<JobOutcome, JobFailure>> = match self.limits.batch_submission {
            BatchSubmission::Concurrent => {
                futures_util::future::join_all(jobs.into_iter().map(run)).await
            }
            BatchSubmission::Sequential => {
                let mut results = Vec::new();
                for job in jobs {
                    results.push(run(job).await);
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
        held.settle(charged);
        results
            .into_iter()
            .map(|r| r.map_err(|f| f.error))
            .collect()
    }
}

/// A body as JSON, its fields checked against what `endpoint` honours, then typed.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    endpoint: Endpoint,
    bytes: &[u8],
) -> Result<T, ApiError> {
    let invalid =
        |e: serde_json::Error| ApiError::invalid(None, format!("Invalid request body: {e}"));
    let body: Value = serde_json::from_slice(bytes).map_err(invalid)?;
    let Value::Object(fields) = &body else {
        return Err(ApiError::invalid(
            None,
            "Invalid request body: expected a JSON object",
        ));
    };
    params::check(endpoint, fields)?;
    serde_json::from_value(body).map_err(invalid)
}

pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn receipts_json(receipts: &[&JobReceipt]) -> Value {
    serde_json::to_value(receipts).unwrap_or(Value::Null)
}

/// The receipts' `x-piazza-*` headers: comma-separated, in job order.
pub(crate) fn receipt_headers(receipts: &[&JobReceipt]) -> HeaderMap {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn outcome(text: &str, work_units: u64) -> JobOutcome {
        JobOutcome {
            output: text.as_bytes().to_vec(),
            work_units,
            input_units: None,
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
    fn receipt_headers_list_jobs_in_order() {
        let (a, mut b) = (outcome("", 0), outcome("", 0));
        b.receipt.job = 2;
        let h = receipt_headers(&[&a.receipt, &b.receipt]);
        assert_eq!(h["x-piazza-job"], "1,2");
        assert_eq!(h["x-piazza-tx"], "bb,bb");
    }

    #[test]
    fn a_limit_below_one_request_is_a_429_naming_the_worst_case() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(dir.path()).unwrap();
        let (_, record) = keys.create("dev", Amount::new(1_000)).unwrap();
        let jobs = Jobs {
            jobs: vec![],
            escrow: Amount::new(256_000),
            fees: Amount::new(450_000),
            max_units: 256,
            price_per_unit: Amount::new(1_000),
            worst_case: Amount::new(706_000),
        };
        let e = keys
            .reserve(&record.key_hash, jobs.worst_case)
            .map(|_| ())
            .unwrap_err();
        let e = quota_error(e, &jobs);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::TOO_MANY_REQUESTS, Some("insufficient_quota"))
        );
        assert!(
            e.message
                .starts_with("This request's worst-case cost is 0.000706 PZA")
                && e.message.contains("more than the 0.000001 PZA left"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("spent 0,"), "{}", e.message);
    }

    #[test]
    fn bodies_are_checked_before_they_are_typed() {
        let e =
            parse::<crate::openai::EmbeddingsRequest>(Endpoint::Embeddings, b"[1]").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse::<crate::openai::ChatRequest>(
            Endpoint::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param, Some("tools"));
        let ok = parse::<crate::openai::ChatRequest>(
            Endpoint::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"user":"u","n":1}"#,
        )
        .unwrap();
        assert_eq!(ok.messages.len(), 1);
    }
}

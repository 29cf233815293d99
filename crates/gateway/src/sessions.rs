//! The gateway's sessions (DESIGN.md §3.1): per paying key and model, a bounded pool of open
//! sessions that requests borrow one at a time. A session is opened (one transaction) when a
//! request finds none idle and the pool has room, topped up (one transaction) when what its
//! deposit has left cannot cover the next request's worst case, and rotated (closed, a new
//! one opened when next needed) once it comes within [`SESSION_ROTATE_BEFORE_BLOCKS`] of its
//! expiry. Requests go through [`piazza_client::session::SessionClient`], which checks each
//! receipt before it signs the voucher paying it.
//!
//! Every session transaction is paid for by the request that sends it: a request reserves a
//! [`FeeBudget`] (an open and two closes at their exact fees) with its worst case, the fees
//! its transactions paid are charged to its API key, and a session near its expiry is rotated
//! only while the budget still covers a close and an open. All sessions share one HTTP
//! connection pool.
//!
//! **Invariants:** at most [`SESSIONS_PER_MODEL_MAX`] sessions per key and model; one request
//! per session at a time (a [`Lease`]); a session whose request failed is retired, never
//! reused; a model no provider serves sessions for is answered with `None` (the caller runs
//! the request as a job), so no transaction is sent for it; a request's session transactions
//! never pay more than its budget.

use crate::errors::ApiError;
use crate::market::{Market, Signer};
use piazza_api::SessionState;
use piazza_client::session::SessionClient;
use piazza_ledger::sessions::Msg;
use piazza_ledger::tx::Message;
use piazza_primitives::Amount;
use piazza_session::ClientChannel;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Sessions one paying key keeps open per model (the ledger allows 16 per account in all).
pub const SESSIONS_PER_MODEL_MAX: usize = 8;
/// A session's deposit (and each top-up), in requests at their worst case, by default
/// ([`crate::Limits::session_deposit_requests`]).
pub const SESSION_DEPOSIT_REQUESTS: u128 = 256;
/// How long a session is opened for, in blocks, by default
/// ([`crate::Limits::session_expiry_blocks`]).
pub const SESSION_EXPIRY_BLOCKS: u64 = 50_000;
/// A session this close to its expiry is closed and replaced.
pub const SESSION_ROTATE_BEFORE_BLOCKS: u64 = 500;
/// How long an opened session may wait for its provider's assignment.
pub const SESSION_ASSIGN_WAIT_MS: u64 = 30_000;
/// After a model is found without a session endpoint, how long requests go straight to jobs.
pub const SESSION_UNAVAILABLE_RETRY_MS: u64 = 10_000;
/// How long the chain height read for the expiry checks is reused.
const HEIGHT_TTL_MS: u64 = 1_000;
/// The fee cap of a session transaction (open, top-up, close).
pub const SESSION_TX_FEE_MAX: Amount = piazza_client::DEFAULT_MAX_FEE;
/// The request header that picks the path: `session` (the default) or `job` (an on-chain job).
pub const MODE_HEADER: &str = "x-piazza-mode";

/// How a request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Over a session when a provider serves the model's sessions, else as a job.
    Session,
    /// As an on-chain job.
    Job,
}

impl Mode {
    /// The mode `headers` ask for.
    pub fn of(headers: &axum::http::HeaderMap) -> Result<Mode, ApiError> {
        match headers.get(MODE_HEADER).map(|v| v.to_str()) {
            None => Ok(Mode::Session),
            Some(Ok(v)) if v.eq_ignore_ascii_case("session") => Ok(Mode::Session),
            Some(Ok(v)) if v.eq_ignore_ascii_case("job") => Ok(Mode::Job),
            Some(_) => Err(ApiError::invalid(
                None,
                format!("`{MODE_HEADER}` must be `session` or `job`"),
            )),
        }
    }
}

/// One open session and its client.
pub(crate) struct Live {
    pub(crate) client: SessionClient,
    endpoint: String,
    expiry_height: u64,
    /// Its place in the pool, given back when the session is retired.
    _place: OwnedSemaphorePermit,
}

impl Live {
    pub(crate) fn id(&self) -> u64 {
        self.client.channel().terms().session
    }

    /// What the deposit has left once everything signed is paid.
    fn left(&self) -> Amount {
        let terms = self.client.channel().terms();
        terms
            .deposit
            .checked_sub(self.client.paid())
            .unwrap_or(Amount::ZERO)
    }
}

/// The sessions of one paying key for one model.
struct Pool {
    idle: Mutex<Vec<Live>>,
    returned: Notify,
    places: Arc<Semaphore>,
    /// Until when requests for the model go to jobs (no provider serves its sessions).
    unavailable_until: Mutex<Option<Instant>>,
}

/// A session lent to one request; back in its pool when dropped, unless retired.
pub(crate) struct Lease {
    live: Option<Live>,
    pool: Arc<Pool>,
}

impl Lease {
    pub(crate) fn live(&mut self) -> &mut Live {
        self.live
            .as_mut()
            .expect("a lease holds its session until dropped or retired")
    }

    /// Drops the session from the pool (its request failed): a later request opens another.
    pub(crate) fn retire(mut self) -> Option<u64> {
        let id = self.live.take().map(|l| l.id());
        self.pool.returned.notify_one();
        id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            lock(&self.pool.idle).push(live);
            self.pool.returned.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one request may pay in session transaction fees, and what it paid.
#[derive(Debug)]
pub(crate) struct FeeBudget {
    left: Amount,
    paid: Amount,
}

impl FeeBudget {
    pub(crate) fn new(reserved: Amount) -> FeeBudget {
        FeeBudget {
            left: reserved,
            paid: Amount::ZERO,
        }
    }

    /// The fees paid so far.
    pub(crate) fn paid(&self) -> Amount {
        self.paid
    }

    fn allows(&self, fee: Amount) -> bool {
        fee <= self.left
    }

    fn spend(&mut self, fee: Amount) {
        self.left = self.left.checked_sub(fee).unwrap_or(Amount::ZERO);
        self.paid = self.paid.checked_add(fee).unwrap_or(self.paid);
    }
}

/// Every pool of the gateway, by paying key and model.
#[derive(Default)]
pub(crate) struct Sessions {
    pools: Mutex<BTreeMap<(String, String), Arc<Pool>>>,
    height: tokio::sync::Mutex<Option<(Instant, u64)>>,
    /// Session transactions sent (opens, top-ups, closes), for the chain-load measurement.
    transactions: std::sync::atomic::AtomicU64,
    /// Their fees, in base units.
    fees_paid: std::sync::atomic::AtomicU64,
    /// The connection pool every session's client shares.
    http: piazza_client::session::HttpClient,
}

/// What a request needs of a session.
pub(crate) struct Need<'a> {
    pub signer_name: &'a str,
    pub signer: &'a Signer,
    pub model: &'a str,
    pub max_price_per_unit: Amount,
    /// The request's worst case (`max_units × max_price_per_unit`).
    pub worst_case: Amount,
    pub wait: Duration,
    /// The deposit (and each top-up) in requests at `worst_case`.
    pub deposit_requests: u128,
    pub expiry_blocks: u64,
    /// The exact fees of an open and of a close of this session.
    pub open_fee: Amount,
    pub close_fee: Amount,
}

impl Need<'_> {
    /// What a request's session transactions may cost: a rotation's close, an open, and the
    /// close of a session retired by its failure.
    pub(crate) fn fee_reserve(&self) -> Option<Amount> {
        self.close_fee.checked_mul(2)?.checked_add(self.open_fee)
    }
}

impl Sessions {
    pub(crate) fn transactions(&self) -> u64 {
        self.transactions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The fees of every session transaction sent, in base units.
    pub(crate) fn fees_paid(&self) -> u64 {
        self.fees_paid.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn pool(&self, signer: &str, model: &str) -> Arc<Pool> {
        lock(&self.pools)
            .entry((signer.to_string(), model.to_string()))
            .or_insert_with(|| {
                Arc::new(Pool {
                    idle: Mutex::new(Vec::new()),
                    returned: Notify::new(),
                    places: Arc::new(Semaphore::new(SESSIONS_PER_MODEL_MAX)),
                    unavailable_until: Mutex::new(None),
                })
            })
            .clone()
    }

    async fn height(&self, market: &Market) -> Result<u64, ApiError> {
        let mut cached = self.height.lock().await;
        if let Some((at, height)) = *cached {
            if at.elapsed() < Duration::from_millis(HEIGHT_TTL_MS) {
                return Ok(height);
            }
        }
        let height = market
            .client
            .status()
            .await
            .map_err(|e| ApiError::upstream(e.to_string()))?
            .height;
        *cached = Some((Instant::now(), height));
        Ok(height)
    }

    /// A session ready for a request of `need`, or `None` when no provider serves the
    /// model's sessions (the request is then a job). Waits up to `need.wait` for a session of
    /// a full pool (429 beyond).
    pub(crate) async fn lease(
        &self,
        market: &Market,
        need: &Need<'_>,
        session_endpoint: bool,
        budget: &mut FeeBudget,
    ) -> Result<Option<Lease>, ApiError> {
        let pool = self.pool(need.signer_name, need.model);
        if !session_endpoint {
            return Ok(None);
        }
        if lock(&pool.unavailable_until).is_some_and(|until| Instant::now() < until) {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + need.wait;
        loop {
            let returned = pool.returned.notified();
            let idle = lock(&pool.idle).pop();
            if let Some(live) = idle {
                let lease = Lease {
                    live: Some(live),
                    pool: pool.clone(),
                };
                if let Some(lease) = self.ready(market, need, lease, budget).await? {
                    return Ok(Some(lease));
                }
                continue;
            }
            if let Ok(place) = pool.places.clone().try_acquire_owned() {
                return match self.open(market, need, place, budget).await? {
                    Some(live) => Ok(Some(Lease {
                        live: Some(live),
                        pool: pool.clone(),
                    })),
                    None => {
                        *lock(&pool.unavailable_until) = Some(
                            Instant::now() + Duration::from_millis(SESSION_UNAVAILABLE_RETRY_MS),
                        );
                        Ok(None)
                    }
                };
            }
            if tokio::time::timeout_at(deadline, returned).await.is_err() {
                return Err(ApiError::busy(format!(
                    "all {SESSIONS_PER_MODEL_MAX} sessions for `{}` are busy",
                    need.model
                )));
            }
        }
    }

    /// `lease` rotated out if it nears its expiry and `budget` still pays a close and an open
    /// (`None`), else topped up if its deposit cannot cover `need`.
    async fn ready(
        &self,
        market: &Market,
        need: &Need<'_>,
        mut lease: Lease,
        budget: &mut FeeBudget,
    ) -> Result<Option<Lease>, ApiError> {
        let height = self.height(market).await?;
        let live = lease.live();
        let rotation = need.close_fee.checked_add(need.open_fee);
        if live.expiry_height <= height.saturating_add(SESSION_ROTATE_BEFORE_BLOCKS)
            && rotation.is_some_and(|fee| budget.allows(fee))
        {
            let id = live.id();
            // The last voucher goes out before the close, so the provider can commit it.
            let _ = live.client.pay().await;
            lease.retire();
            self.close(market, need.signer, id, budget).await;
            return Ok(None);
        }
        if live.left() < need.worst_case {
            self.top_up(market, need, live, budget).await?;
        }
        Ok(Some(lease))
    }

    async fn send(
        &self,
        market: &Market,
        signer: &Signer,
        message: Msg,
        budget: &mut FeeBudget,
    ) -> Result<piazza_api::ReceiptInfo, ApiError> {
        let hash = market
            .post_message(signer, Message::Sessions(message), SESSION_TX_FEE_MAX)
            .await?;
        self.transactions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let receipt = market
            .client
            .wait_for_receipt(&hash, market.job_timeout)
            .await
            .map_err(|e| ApiError::upstream(format!("session transaction {hash}: {e}")))?;
        // A transaction included pays its fee, refused or not.
        let fee = Amount::new(receipt.fee_paid.parse().unwrap_or(0));
        budget.spend(fee);
        self.fees_paid.fetch_add(
            u64::try_from(fee.base_units()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(error) = &receipt.error {
            return Err(match error.name.as_str() {
                "insufficient_funds" => ApiError::quota(format!(
                    "the paying account cannot fund a session: {}",
                    error.message
                )),
                _ => ApiError::upstream(format!(
                    "the chain refused a session transaction: {} ({})",
                    error.name, error.message
                )),
            });
        }
        Ok(receipt)
    }

    /// Opens a session for `need` and waits for its provider; `None` when the provider the
    /// chain assigned names no endpoint (the session is closed again).
    async fn open(
        &self,
        market: &Market,
        need: &Need<'_>,
        place: OwnedSemaphorePermit,
        budget: &mut FeeBudget,
    ) -> Result<Option<Live>, ApiError> {
        let deposit = need
            .worst_case
            .checked_mul(need.deposit_requests)
            .ok_or_else(|| ApiError::invalid(None, "the session's deposit overflows"))?;
        let key = need.signer.key();
        let receipt = self
            .send(
                market,
                need.signer,
                Msg::Open {
                    model: need.model.to_string(),
                    owner_key: key.public_key(),
                    authorised: None,
                    deposit,
                    max_price_per_unit: need.max_price_per_unit,
                    expiry_blocks: need.expiry_blocks,
                },
                budget,
            )
            .await?;
        let id = receipt
            .events
            .iter()
            .find(|e| e.kind == "sessions.opened")
            .and_then(|e| e.attributes.get("session")?.parse::<u64>().ok())
            .ok_or_else(|| ApiError::upstream("no session id in the open receipt"))?;
        let info = market
            .client
            .wait_for_session(id, Duration::from_millis(SESSION_ASSIGN_WAIT_MS))
            .await
            .map_err(|e| ApiError::upstream(format!("session {id}: {e}")))?;
        if info.state != SessionState::Open {
            return Err(ApiError::upstream(format!(
                "session {id} is {:?} before it served anything",
                info.state
            )));
        }
        let Some(endpoint) = info.endpoint.clone().filter(|e| !e.trim().is_empty()) else {
            tracing::warn!(session = id, "the assigned provider names no endpoint");
            self.close(market, need.signer, id, budget).await;
            return Ok(None);
        };
        let terms = piazza_client::session::terms(&info)
            .map_err(|e| ApiError::upstream(e.to_string()))?
            .ok_or_else(|| ApiError::upstream(format!("session {id} has no provider")))?;
        let channel = ClientChannel::new(terms, key.clone())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        tracing::info!(session = id, %endpoint, model = need.model, "session opened");
        Ok(Some(Live {
            client: SessionClient::new(&endpoint, channel).with_http(self.http.clone()),
            endpoint,
            expiry_height: info.expiry_height,
            _place: place,
        }))
    }

    /// Adds a deposit's worth to `live`'s session and continues its channel with the larger
    /// deposit (the voucher not yet sent goes out first).
    async fn top_up(
        &self,
        market: &Market,
        need: &Need<'_>,
        live: &mut Live,
        budget: &mut FeeBudget,
    ) -> Result<(), ApiError> {
        let amount = need
            .worst_case
            .checked_mul(need.deposit_requests)
            .ok_or_else(|| ApiError::invalid(None, "the session's deposit overflows"))?;
        let session = live.id();
        self.send(market, need.signer, Msg::TopUp { session, amount }, budget)
            .await?;
        live.client
            .pay()
            .await
            .map_err(|e| ApiError::upstream(format!("session {session}: {e}")))?;
        let channel = live.client.channel();
        let mut terms = channel.terms().clone();
        terms.deposit = terms
            .deposit
            .checked_add(amount)
            .ok_or_else(|| ApiError::invalid(None, "the session's deposit overflows"))?;
        let channel = ClientChannel::resume(
            terms,
            need.signer.key().clone(),
            channel.next_seq(),
            channel.paid(),
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
        live.client = SessionClient::new(&live.endpoint, channel).with_http(self.http.clone());
        tracing::info!(session, %amount, "session topped up");
        Ok(())
    }

    /// Closes session `id` (its unspent deposit returns after the last commit's window).
    pub(crate) async fn close(
        &self,
        market: &Market,
        signer: &Signer,
        session: u64,
        budget: &mut FeeBudget,
    ) {
        if let Err(e) = self
            .send(market, signer, Msg::Close { session }, budget)
            .await
        {
            tracing::warn!(session, error = %e.message, "could not close a session");
        }
    }
}

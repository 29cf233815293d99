//! The provider daemon: loads the models it serves, each found by its chain record (a local
//! file with the record's commitments, else its blobs fetched from storage; see
//! [`models::resolve`]) in the record's numeric profile, registers with stake if it has not,
//! watches the chain for jobs assigned to it, runs them on the deterministic engine and posts
//! the results.
//!
//! Invariants:
//! - At most `concurrency` jobs run at once; each runs once per process.
//! - A result is journaled (signed transaction, fsynced) before it is sent; after a restart a
//!   journaled job is re-sent byte for byte, never re-executed into a second, different result.
//! - The daemon holds no chain state of its own: what is assigned comes from the node.
//! - A model record registered after the daemon started and naming its files' blobs is picked
//!   up while it runs ([`ModelFollower`]): resolved like the ones it started with, added to its
//!   offer; at most
//!   [`MODELS_SERVED_MAX`] models are served, and a record that fails to resolve waits
//!   [`MODEL_RETRY_MS`] before it is tried again.
//!
//! ```no_run
//! # async fn run(config: piazza_provider::ProviderConfig) {
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! let daemon = tokio::spawn(piazza_provider::run(config, stopped));
//! // ... later:
//! stop.send(true).unwrap();
//! daemon.await.unwrap().unwrap();
//! # }
//! ```

pub mod auditor;
pub mod chain;
pub mod dispute;
pub mod journal;
pub mod models;
pub mod server;
pub mod session;
pub mod session_store;
pub mod speed;

use dispute::{Fault, Player};
use journal::Journal;
use models::{Execution, LoadedModel};
use piazza_api::JobState;
use piazza_client::{Client, ClientError};
use piazza_codec::Encode;
use piazza_ledger::compute::{self, Offer};
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Address, Amount, SecretKey};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{watch, Semaphore};

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProviderError {
    #[error("node: {0}")]
    Client(#[from] ClientError),
    #[error("model: {0}")]
    Model(String),
    #[error("journal: {0}")]
    Journal(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub node_url: String,
    pub key: SecretKey,
    pub models_dir: PathBuf,
    /// Model names (as registered on chain) to serve.
    pub serve: Vec<String>,
    pub price_per_unit: Amount,
    pub capacity: u32,
    /// Bonded when registering.
    pub stake: Amount,
    pub endpoint: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Threads per job.
    pub threads: usize,
    pub journal_dir: PathBuf,
    pub poll_interval: Duration,
    /// Deliberate misbehaviour for tests and demos (see [`Fault`]); none in production.
    pub fault: Fault,
}

impl ProviderConfig {
    pub fn address(&self) -> Address {
        self.key.public_key().address()
    }
}

/// Loads every served model, checked against the chain.
pub async fn load_models(
    client: &Client,
    config: &ProviderConfig,
) -> Result<BTreeMap<String, LoadedModel>, ProviderError> {
    load_named(client, &config.models_dir, &config.serve).await
}

/// Loads the named models, each found by its on-chain record ([`models::resolve`]: a local
/// file with the record's commitments, else its blobs fetched from storage into the cache
/// under `models_dir`) in the numeric profile the record names.
pub async fn load_named(
    client: &Client,
    models_dir: &std::path::Path,
    names: &[String],
) -> Result<BTreeMap<String, LoadedModel>, ProviderError> {
    let records = client.models().await?;
    let mut loaded = BTreeMap::new();
    for name in names {
        let record = records
            .iter()
            .find(|r| &r.name == name)
            .ok_or_else(|| ProviderError::Config(format!("the chain has no model `{name}`")))?
            .clone();
        let model = models::resolve(client, models_dir, &record).await?;
        tracing::info!(model = %name, numeric = %record.numeric, "model loaded and matches its on-chain commitment");
        loaded.insert(name.clone(), model);
    }
    Ok(loaded)
}

/// Registers the provider (bonding `config.stake`) unless it already is one.
/// Its declared speed is measured on `models` (see [`speed`]).
pub async fn ensure_registered(
    client: &Client,
    config: &ProviderConfig,
    models: &BTreeMap<String, LoadedModel>,
) -> Result<(), ProviderError> {
    if let Some(registered) = client.provider(&config.address()).await? {
        return update_endpoint(client, config, registered).await;
    }
    let measured = {
        let (models, threads) = (models.clone(), config.threads);
        tokio::task::spawn_blocking(move || speed::measure_units_per_second(&models, threads))
            .await
            .map_err(|e| ProviderError::Model(e.to_string()))??
    };
    let interval_ms = speed::block_interval_ms(client).await?;
    let units_per_block =
        speed::units_per_block(measured, interval_ms, config.concurrency, config.capacity);
    tracing::info!(
        units_per_second = measured,
        block_interval_ms = interval_ms,
        units_per_block,
        "declaring speed"
    );
    let offer = Offer {
        models: config.serve.clone(),
        price_per_unit: config.price_per_unit,
        capacity: config.capacity,
        endpoint: config.endpoint.clone(),
        units_per_block,
    };
    register(
        client,
        &config.key,
        Message::Compute(compute::Msg::RegisterProvider {
            offer,
            stake: config.stake,
        }),
        "provider",
    )
    .await
}

/// A registered provider whose endpoint moved (a session endpoint on a fresh port after a
/// restart) announces the new one, keeping the rest of its offer.
async fn update_endpoint(
    client: &Client,
    config: &ProviderConfig,
    registered: piazza_api::ProviderInfo,
) -> Result<(), ProviderError> {
    if registered.endpoint == config.endpoint {
        return Ok(());
    }
    let models = registered.models.clone();
    tracing::info!(endpoint = %config.endpoint, "announcing the provider's new endpoint");
    let message = offer_update(registered, models, config.endpoint.clone())?;
    register(client, &config.key, message, "provider endpoint update").await
}

/// The update of the registered offer to `models` and `endpoint` (its other terms kept).
fn offer_update(
    registered: piazza_api::ProviderInfo,
    models: Vec<String>,
    endpoint: String,
) -> Result<Message, ProviderError> {
    let price_per_unit = registered
        .price_per_unit
        .parse::<u128>()
        .map(Amount::new)
        .map_err(|e| ProviderError::Config(format!("registered price is not a number: {e}")))?;
    let offer = Offer {
        models,
        price_per_unit,
        capacity: registered.capacity,
        endpoint,
        units_per_block: registered.units_per_block,
    };
    Ok(Message::Compute(compute::Msg::UpdateProvider { offer }))
}

/// Most models one provider serves (the most an offer names): records registered later are
/// not picked up past it.
pub const MODELS_SERVED_MAX: usize = compute::PROVIDER_MODELS_MAX;
/// Time between looks for model records registered since the provider started.
pub const MODEL_REFRESH_MS: u64 = 1_000;
/// Time a record that failed to resolve waits before it is tried again.
pub const MODEL_RETRY_MS: u64 = 60_000;

/// A new record's name and what resolving it gave.
type Resolved = (String, Result<LoadedModel, String>);

/// Picks up model records registered after the provider started that name their files' blobs
/// (published for any provider to fetch): each is resolved like the models it started with
/// ([`models::resolve`]: a local file with the record's commitments, else its blobs fetched
/// from storage), then served and added to the provider's offer. Records already on chain at
/// start are left alone (the operator chose among them), and so are records without blobs
/// (only an operator who holds their files can choose to serve them).
pub struct ModelFollower {
    /// Records on chain when the provider started.
    known: BTreeSet<String>,
    /// Records that failed to resolve, with when they may be tried again.
    failed: BTreeMap<String, tokio::time::Instant>,
    last_look: Option<tokio::time::Instant>,
    resolving: Option<tokio::task::JoinHandle<Vec<Resolved>>>,
}

impl ModelFollower {
    /// Follows records not among `known` (the records on chain at start).
    pub fn new(known: BTreeSet<String>) -> ModelFollower {
        ModelFollower {
            known,
            failed: BTreeMap::new(),
            last_look: None,
            resolving: None,
        }
    }

    /// The new records worth resolving now, at most `room` of them, in name order.
    pub fn due(
        &self,
        records: &[piazza_api::ModelInfo],
        served: &BTreeMap<String, LoadedModel>,
        room: usize,
        now: tokio::time::Instant,
    ) -> Vec<piazza_api::ModelInfo> {
        let mut due: Vec<_> = records
            .iter()
            .filter(|r| r.files.is_some())
            .filter(|r| !self.known.contains(&r.name) && !served.contains_key(&r.name))
            .filter(|r| self.failed.get(&r.name).is_none_or(|&after| now >= after))
            .cloned()
            .collect();
        due.sort_by(|a, b| a.name.cmp(&b.name));
        due.truncate(room);
        due
    }

    /// One step, called on each poll: starts a look (every [`MODEL_REFRESH_MS`], one at a
    /// time, off the poll loop) and returns the models a finished one resolved.
    pub async fn step(
        &mut self,
        node_url: &str,
        models_dir: &std::path::Path,
        served: &BTreeMap<String, LoadedModel>,
    ) -> BTreeMap<String, LoadedModel> {
        let now = tokio::time::Instant::now();
        let mut added = BTreeMap::new();
        // Kept only while they wait: bounded by the records one look resolves per retry time.
        self.failed.retain(|_, after| *after > now);
        if let Some(task) = self.resolving.take_if(|task| task.is_finished()) {
            for (name, resolved) in task.await.unwrap_or_default() {
                match resolved {
                    Ok(model) => {
                        tracing::info!(model = %name, "new model record resolved; serving it");
                        added.insert(name, model);
                    }
                    Err(e) => {
                        tracing::warn!(model = %name, error = %e, "new model record not served");
                        let after = now + Duration::from_millis(MODEL_RETRY_MS);
                        self.failed.insert(name, after);
                    }
                }
            }
        }
        let look_due = self
            .last_look
            .is_none_or(|last| now >= last + Duration::from_millis(MODEL_REFRESH_MS));
        if self.resolving.is_none() && look_due {
            self.last_look = Some(now);
            let room = MODELS_SERVED_MAX.saturating_sub(served.len() + added.len());
            let client = Client::new(node_url);
            let records = match client.models().await {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list model records");
                    return added;
                }
            };
            let mut due = self.due(&records, served, room, now);
            due.retain(|r| !added.contains_key(&r.name));
            if !due.is_empty() {
                let models_dir = models_dir.to_path_buf();
                self.resolving = Some(tokio::spawn(async move {
                    let mut out = Vec::new();
                    for record in due {
                        let resolved = models::resolve(&client, &models_dir, &record).await;
                        out.push((record.name, resolved.map_err(|e| e.to_string())));
                    }
                    out
                }));
            }
        }
        added
    }
}

/// Longest wait for the receipt of the offer's update.
const OFFER_UPDATE_WAIT_MS: u64 = 60_000;

/// Adds `added` to the provider's offer on chain (its other terms kept), sent by `poster` in
/// nonce order with the provider's other transactions.
async fn announce_models(
    client: &Client,
    poster: &Poster,
    me: &Address,
    added: &BTreeMap<String, LoadedModel>,
) -> Result<(), ProviderError> {
    let registered = client
        .provider(me)
        .await?
        .ok_or_else(|| ProviderError::Config("this provider is not registered".into()))?;
    let mut models = registered.models.clone();
    models.extend(
        added
            .keys()
            .filter(|n| !registered.models.contains(n))
            .cloned(),
    );
    let endpoint = registered.endpoint.clone();
    let message = offer_update(registered, models, endpoint)?;
    let hash = poster.send(vec![message], None).await?;
    let wait = Duration::from_millis(OFFER_UPDATE_WAIT_MS);
    let receipt = client.wait_for_receipt(&hash, wait).await?;
    match receipt.error {
        Some(e) => Err(ProviderError::Config(format!(
            "offer update refused: {} {}",
            e.name, e.message
        ))),
        None => Ok(()),
    }
}

/// Sends a registration message and waits for it to be committed without error.
pub async fn register(
    client: &Client,
    key: &SecretKey,
    message: Message,
    role: &str,
) -> Result<(), ProviderError> {
    let tx = client
        .build(key, vec![message], piazza_client::DEFAULT_MAX_FEE)
        .await?;
    let hash = client.submit(&tx).await?;
    let receipt = client
        .wait_for_receipt(&hash, Duration::from_secs(60))
        .await?;
    if let Some(error) = receipt.error {
        return Err(ProviderError::Config(format!(
            "{role} registration failed: {} {}",
            error.name, error.message
        )));
    }
    tracing::info!(address = %key.public_key().address(), "registered as {role}");
    Ok(())
}

/// Sends this key's transactions in nonce order.
pub struct Poster {
    client: Client,
    key: SecretKey,
    chain_id: String,
    next_nonce: tokio::sync::Mutex<Option<u64>>,
}

impl Poster {
    pub fn new(client: Client, key: SecretKey, chain_id: String) -> Poster {
        Poster {
            client,
            key,
            chain_id,
            next_nonce: tokio::sync::Mutex::new(None),
        }
    }

    /// Signs `messages` with the next nonce and sends them; with `journal`, the signed bytes
    /// are journaled (fsynced) for `job` first.
    async fn send(
        &self,
        messages: Vec<Message>,
        journal: Option<(&Journal, u64)>,
    ) -> Result<piazza_primitives::Hash, ProviderError> {
        let mut next = self.next_nonce.lock().await;
        for attempt in 0..2 {
            let nonce = match *next {
                Some(n) => n,
                None => {
                    self.client
                        .account(&self.key.public_key().address())
                        .await?
                        .nonce
                }
            };
            let tx = Transaction {
                chain_id: self.chain_id.clone(),
                sender: self.key.public_key(),
                nonce,
                max_fee: max_fee(&messages),
                messages: messages.clone(),
            }
            .sign(&self.key);
            let bytes = tx.to_bytes();
            if let Some((journal, job)) = journal {
                journal.record(job, &bytes)?;
            }
            match self.client.submit_raw(&bytes).await {
                Ok(hash) => {
                    *next = Some(nonce + 1);
                    return Ok(hash);
                }
                Err(e)
                    if attempt == 0
                        && matches!(
                            e.ledger_error_name(),
                            Some("nonce_replayed" | "nonce_gap")
                        ) =>
                {
                    *next = None
                }
                Err(e) => {
                    *next = None;
                    return Err(e.into());
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Posts `execution` with the input tokens it read (`input_units`, see [`input_units`]).
    async fn post(
        &self,
        journal: &Journal,
        job: u64,
        execution: &Execution,
        input_units: u64,
    ) -> Result<(), ProviderError> {
        let message = compute::Msg::PostResult {
            job,
            output: execution.output.clone(),
            output_hash: compute::output_hash(&execution.output),
            trace_root: execution.trace_root,
            work_units: execution.work_units,
            input_units,
        };
        let hash = self
            .send(vec![Message::Compute(message)], Some((journal, job)))
            .await?;
        tracing::info!(job, tx = %hash, units = execution.work_units, "result posted");
        Ok(())
    }

    /// Declines an assigned job this provider cannot serve, saying why. The decline is
    /// journaled like a result, so a poll that still lists the job before the decline is in a
    /// block resends the same transaction instead of running the job again.
    async fn decline(
        &self,
        journal: &Journal,
        job: u64,
        reason: &str,
    ) -> Result<(), ProviderError> {
        let mut reason = reason.to_string();
        if reason.len() > compute::DECLINE_REASON_BYTES_MAX {
            let mut end = compute::DECLINE_REASON_BYTES_MAX;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        let hash = self
            .send(
                vec![Message::Compute(compute::Msg::DeclineJob {
                    job,
                    reason: reason.clone(),
                })],
                Some((journal, job)),
            )
            .await?;
        tracing::warn!(job, tx = %hash, %reason, "job declined");
        Ok(())
    }
}

/// The fee ceiling for `messages`: evidence pays by the byte, up to a few PZA.
fn max_fee(messages: &[Message]) -> Amount {
    match messages {
        [Message::Verify(piazza_ledger::verify::Msg::Arbitrate { .. })] => Amount::pza(50),
        _ => piazza_client::DEFAULT_MAX_FEE,
    }
}

/// Plays this address's audits and disputes once: every move goes out through `poster`.
pub async fn play(client: &Client, player: &Player, poster: &Poster, me: &Address) {
    dispute::play(&chain::Rpc { client, poster }, player, me).await;
}

/// Runs until `shutdown` turns true: finishes the jobs in flight, then returns.
pub async fn run(
    config: ProviderConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProviderError> {
    let mut config = config;
    let client = Client::new(&config.node_url);
    let known: BTreeSet<String> = client.models().await?.into_iter().map(|r| r.name).collect();
    let mut follower = ModelFollower::new(known);
    let mut models = Arc::new(load_models(&client, &config).await?);
    let journal = Arc::new(Journal::open(&config.journal_dir)?);
    let chain_id = client.status().await?.chain_id;
    let poster = Arc::new(Poster {
        client: Client::new(&config.node_url),
        key: config.key.clone(),
        chain_id,
        next_nonce: tokio::sync::Mutex::new(None),
    });
    let me = config.address();
    // The session endpoint listens before the offer is registered, so the offer names the
    // address it really has (port 0 becomes the port the system gave).
    let sessions =
        session::start_daemon(&config, models.clone(), poster.clone(), shutdown.clone()).await?;
    if let Some(daemon) = &sessions {
        config.endpoint = format!("http://{}", daemon.server.addr);
    }
    ensure_registered(&client, &config, &models).await?;
    forget_finished(&client, &journal, &me).await;
    let player = Arc::new(Player::new(
        me,
        models.clone(),
        config.threads,
        config.fault.clone(),
    ));
    if !config.fault.is_none() {
        tracing::warn!(fault = ?config.fault, "FAULT INJECTION: this provider misbehaves on purpose");
    }
    let mut playing: Option<tokio::task::JoinHandle<()>> = None;

    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let in_flight: Arc<Mutex<BTreeSet<u64>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tasks = tokio::task::JoinSet::new();
    tracing::info!(provider = %me, models = ?config.serve, "provider running");
    loop {
        match client.provider_jobs(&me).await {
            Ok(jobs) => {
                for id in jobs {
                    if !in_flight.lock().expect("in-flight lock").insert(id) {
                        continue;
                    }
                    let (client, models, journal, poster, in_flight, permits, threads, me, fault) = (
                        Client::new(&config.node_url),
                        models.clone(),
                        journal.clone(),
                        poster.clone(),
                        in_flight.clone(),
                        permits.clone(),
                        config.threads,
                        me,
                        config.fault.clone(),
                    );
                    tasks.spawn(async move {
                        let _permit = permits.acquire().await.expect("the semaphore is never closed");
                        if let Err(e) = process(&client, &models, &journal, &poster, &me, id, threads, &fault).await {
                            tracing::warn!(job = id, error = %e, "job failed; will retry while it stays assigned");
                        }
                        in_flight.lock().expect("in-flight lock").remove(&id);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list assigned jobs"),
        }
        while tasks.try_join_next().is_some() {}
        let added = follower
            .step(&config.node_url, &config.models_dir, &models)
            .await;
        if !added.is_empty() {
            match announce_models(&client, &poster, &me, &added).await {
                Ok(()) => {
                    let mut served = (*models).clone();
                    served.extend(added);
                    models = Arc::new(served);
                    // Disputes on the new models are played with them too, by the same player
                    // (its runs and sent moves kept); the session endpoint keeps the models it
                    // started with.
                    player.set_models(models.clone());
                }
                Err(e) => tracing::warn!(error = %e, "new models not added to the offer"),
            }
        }
        // Disputes are played on their own task so a long re-execution never holds up jobs.
        if playing.as_ref().is_none_or(|task| task.is_finished()) {
            let (client, player, poster) = (
                Client::new(&config.node_url),
                player.clone(),
                poster.clone(),
            );
            playing = Some(tokio::spawn(async move {
                play(&client, &player, &poster, &me).await
            }));
        }
        tokio::select! {
            _ = tokio::time::sleep(config.poll_interval) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
    tracing::info!(
        jobs = tasks.len(),
        "provider stopping; finishing jobs in flight"
    );
    while tasks.join_next().await.is_some() {}
    if let Some(sessions) = sessions {
        sessions.shutdown().await;
    }
    Ok(())
}

/// How often a running job's assignment is checked.
const ASSIGNMENT_POLL: Duration = Duration::from_secs(1);

/// Sets `cancel` once job `id` is no longer assigned to `me`.
async fn watch_assignment(
    client: Client,
    me: Address,
    id: u64,
    cancel: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        tokio::time::sleep(ASSIGNMENT_POLL).await;
        if let Ok(Some(job)) = client.job(id).await {
            if !(job.status == JobState::Assigned
                && job.provider.as_deref() == Some(&me.to_string()))
            {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Drops journal entries of jobs no longer assigned to this provider.
async fn forget_finished(client: &Client, journal: &Journal, me: &Address) {
    for id in journal.jobs() {
        if let Ok(Some(job)) = client.job(id).await {
            if !(job.status == JobState::Assigned
                && job.provider.as_deref() == Some(&me.to_string()))
            {
                journal.forget(id);
            }
        }
    }
}

/// Whether the journaled transaction `bytes` is in a block.
async fn journaled_is_committed(client: &Client, bytes: &[u8]) -> Result<bool, ProviderError> {
    match piazza_ledger::tx::SignedTransaction::decode_bytes(bytes) {
        Ok(tx) => Ok(client.receipt(&tx.hash()).await?.is_some()),
        Err(_) => Ok(false),
    }
}

/// Whether job `id` is still assigned to `me`.
async fn assigned_to(client: &Client, id: u64, me: &Address) -> Result<bool, ProviderError> {
    Ok(client.job(id).await?.is_some_and(|job| {
        job.status == JobState::Assigned && job.provider.as_deref() == Some(&me.to_string())
    }))
}

#[allow(clippy::too_many_arguments)] // the job's context, passed whole to one spawned task
async fn process(
    client: &Client,
    models: &BTreeMap<String, LoadedModel>,
    journal: &Journal,
    poster: &Poster,
    me: &Address,
    id: u64,
    threads: usize,
    fault: &Fault,
) -> Result<(), ProviderError> {
    let Some(job) = client.job(id).await? else {
        return Ok(());
    };
    if job.status != JobState::Assigned || job.provider.as_deref() != Some(&me.to_string()) {
        journal.forget(id);
        return Ok(());
    }
    if let Some(bytes) = journal.get(id) {
        match client.submit_raw(&bytes).await {
            Ok(_) => return Ok(()),
            Err(e) if e.ledger_error_name() == Some("duplicate_tx") => return Ok(()),
            Err(e) => {
                // A poll can list the job just before the block holding the journaled
                // transaction is applied; by the resend its nonce is spent by that very
                // transaction. Then the job is done: running it again would spend another
                // nonce on a result the ledger refuses.
                if journaled_is_committed(client, &bytes).await?
                    || !assigned_to(client, id, me).await?
                {
                    journal.forget(id);
                    return Ok(());
                }
                tracing::info!(job = id, error = %e, "journaled result not accepted; executing again")
            }
        }
    }
    let model = models
        .get(&job.model)
        .ok_or_else(|| {
            ProviderError::Config(format!(
                "job {id} is for `{}`, which this provider does not load",
                job.model
            ))
        })?
        .clone();
    let input = hex::decode(&job.input)
        .map_err(|e| ProviderError::Model(format!("job input is not hex: {e}")))?;
    let input_units = {
        let (model, spec) = (model.clone(), models::job_spec(&input, &job.params));
        tokio::task::spawn_blocking(move || input_units(&model, &spec))
            .await
            .map_err(|e| ProviderError::Model(e.to_string()))?
    };
    let execution = if fault.is_none() {
        let params = job.params.clone();
        // Work on a job that is no longer ours (expired, reassigned) stops at the next token.
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = tokio::spawn(watch_assignment(client.clone(), *me, id, cancel.clone()));
        let flag = cancel.clone();
        let run = tokio::task::spawn_blocking(move || {
            models::execute_until(&model, &input, &params, threads, &flag)
        })
        .await
        .map_err(|e| ProviderError::Model(e.to_string()));
        watcher.abort();
        let run = run?;
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                job = id,
                "job no longer assigned to this provider; work abandoned"
            );
            journal.forget(id);
            return Ok(());
        }
        match run {
            Ok(execution) => execution,
            // The model cannot run this input (too long for its context, nothing to
            // tokenize, ...): the same input fails the same way every time, so decline it
            // rather than retry it until the deadline slashes this provider.
            Err(ProviderError::Model(reason)) => {
                return poster.decline(journal, id, &reason).await;
            }
            Err(e) => return Err(e),
        }
    } else {
        let (spec, fault) = (dispute::job_spec(&job)?, fault.clone());
        let run = tokio::task::spawn_blocking(move || {
            dispute::run_with_fault(&model, &spec, threads, &fault)
        })
        .await
        .map_err(|e| ProviderError::Model(e.to_string()))??;
        Execution {
            output: run.output.clone(),
            trace_root: piazza_primitives::Hash(run.trace_root),
            work_units: run.work_units,
        }
    };
    poster.post(journal, id, &execution, input_units).await
}

/// The tokens `job`'s input turns into under `model`, counted exactly as the ledger's
/// tokenization arbiter counts them in an input dispute (`arbitrate_ids` with the model's own
/// tokenizer as evidence): a generation's prompt tokens, an embedding's input tokens. 0 when
/// the input cannot be tokenized (the run then fails alike). About 50 ms for a SmolLM2 chat
/// prompt and 15 ms for a MiniLM sentence (the tokenizer is rebuilt from its evidence).
fn input_units(model: &LoadedModel, job: &piazza_arbiter::JobSpec) -> u64 {
    let evidence = piazza_arbiter::input_evidence(model);
    piazza_arbiter::arbitrate_ids(&model.commitments(), job, &evidence)
        .map_or(0, |verdict| verdict.ids.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> piazza_api::ModelInfo {
        serde_json::from_value(serde_json::json!({
            "name": name, "kind": "embedding", "architecture": "bert", "config_hash": "",
            "weights_commitment": "", "tokenizer_hash": "", "owner": "", "license": "",
            "price_floor": "0", "providers": [], "numeric": "f32",
            "files": { "weights": "", "tokenizer": "", "config": "" },
        }))
        .unwrap()
    }

    fn names(records: &[piazza_api::ModelInfo]) -> Vec<&str> {
        records.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn only_records_registered_later_with_blobs_are_due_within_the_room_left() {
        let mut follower = ModelFollower::new(BTreeSet::from(["at-start".to_string()]));
        let mut records: Vec<_> = ["later-c", "at-start", "later-a", "later-b", "no-blobs"]
            .into_iter()
            .map(record)
            .collect();
        records[4].files = None;
        let served = BTreeMap::new();
        let now = tokio::time::Instant::now();
        let due = follower.due(&records, &served, MODELS_SERVED_MAX, now);
        assert_eq!(names(&due), ["later-a", "later-b", "later-c"]);
        // The bound: no room, nothing picked up; some room, the first names.
        assert!(follower.due(&records, &served, 0, now).is_empty());
        assert_eq!(
            names(&follower.due(&records, &served, 2, now)),
            ["later-a", "later-b"]
        );
        // A record that failed waits for its retry time.
        let retry = now + Duration::from_millis(MODEL_RETRY_MS);
        follower.failed.insert("later-a".into(), retry);
        let due = follower.due(&records, &served, MODELS_SERVED_MAX, now);
        assert_eq!(names(&due), ["later-b", "later-c"]);
        let due = follower.due(&records, &served, MODELS_SERVED_MAX, retry);
        assert_eq!(names(&due), ["later-a", "later-b", "later-c"]);
    }
}

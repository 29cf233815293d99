//! The gateway's side of the compute market: the model catalogue, the paying keys and their
//! nonces, and one job from submission to settlement.

use crate::errors::ApiError;
use crate::fees::{self, JobFees};
use piazza_api::{JobInfo, ModelInfo};
use piazza_client::{Client, ClientError};
use piazza_ledger::compute;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Amount, Hash, SecretKey};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Submissions retried after a stale nonce, and the wait before each retry.
const NONCE_RETRIES: u32 = 3;
const NONCE_RETRY_WAIT: Duration = Duration::from_millis(500);
/// How long the model catalogue (models and their providers' prices) is reused.
const CATALOGUE_TTL: Duration = Duration::from_secs(2);
/// How often a job's state is read while waiting for it to settle.
const JOB_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A model as the gateway prices it.
#[derive(Debug, Clone)]
pub struct Model {
    pub info: ModelInfo,
    /// The highest price per unit among the providers serving it: an escrow at this price
    /// makes every one of them eligible. `None` when no provider serves it.
    pub price_per_unit: Option<Amount>,
    /// Whether some provider serving it names an endpoint (where sessions are served).
    pub session_endpoint: bool,
}

impl Model {
    pub fn is_generation(&self) -> bool {
        self.info.kind == "generation"
    }
}

/// A keystore key that signs the gateway's transactions, with its next nonce.
pub struct Signer {
    key: SecretKey,
    /// `None` until read from the chain, and again after a refused submission.
    next_nonce: Mutex<Option<u64>>,
}

impl Signer {
    pub(crate) fn key(&self) -> &SecretKey {
        &self.key
    }
}

/// What a settled job gives back.
#[derive(Debug, Clone, Serialize)]
pub struct JobReceipt {
    pub job: u64,
    pub model: String,
    pub provider: String,
    pub trace_root: String,
    pub tx: String,
    pub input_hash: String,
    pub output_hash: String,
    pub price: String,
    pub fee: String,
    pub height: u64,
}

pub struct JobOutcome {
    pub output: Vec<u8>,
    pub work_units: u64,
    /// Prompt tokens of a generation job, when the chain records them (`result.input_units`);
    /// `None` on chains that record only the generated tokens.
    pub input_units: Option<u64>,
    pub receipt: JobReceipt,
    /// What the account paid: the price plus the transaction fee.
    pub charged: Amount,
}

/// Why a job did not settle, with what the chain charged anyway.
pub struct JobFailure {
    pub error: ApiError,
    pub charged: Amount,
}

/// Models by name.
pub type Catalogue = Arc<BTreeMap<String, Model>>;

pub struct Market {
    pub client: Client,
    chain_id: String,
    /// Measured at connection, measured again if the node ever finds a fee too low.
    fees: std::sync::RwLock<JobFees>,
    catalogue: Mutex<Option<(Instant, Catalogue)>>,
    pub job_timeout: Duration,
}

fn node_error(e: ClientError) -> ApiError {
    match e {
        ClientError::Timeout(t) => {
            ApiError::timeout(format!("the job did not settle within {t:?}"))
        }
        ClientError::Rpc(_) => match e.ledger_error_name() {
            Some("insufficient_funds") => {
                ApiError::quota(format!("the paying account cannot cover this request: {e}"))
            }
            Some("input_too_large") => ApiError::too_large(e.to_string()),
            Some("no_provider") => ApiError::unavailable("no_provider", e.to_string()),
            _ => ApiError::upstream(e.to_string()),
        },
        other => ApiError::upstream(other.to_string()),
    }
}

fn amount(text: &str) -> Amount {
    text.parse::<u128>()
        .map(Amount::new)
        .unwrap_or(Amount::ZERO)
}

impl Market {
    pub async fn connect(node_url: &str, job_timeout: Duration) -> Result<Market, ClientError> {
        let client = Client::new(node_url);
        let chain_id = client.status().await?.chain_id;
        let fees = fees::learn(&client).await.map_err(|e| match e {
            fees::FeeError::Node(e) => e,
            other => ClientError::Decode(other.to_string()),
        })?;
        tracing::info!(fixed = %fees.fixed, per_byte = %fees.per_byte, "job fees measured");
        Ok(Market {
            client,
            chain_id,
            fees: std::sync::RwLock::new(fees),
            catalogue: Mutex::new(None),
            job_timeout,
        })
    }

    /// Models by name, with their providers' prices (cached for [`CATALOGUE_TTL`]).
    pub async fn catalogue(&self) -> Result<Catalogue, ApiError> {
        let mut cached = self.catalogue.lock().await;
        if let Some((at, models)) = cached.as_ref() {
            if at.elapsed() < CATALOGUE_TTL {
                return Ok(models.clone());
            }
        }
        let mut models = BTreeMap::new();
        for info in self.client.models().await.map_err(node_error)? {
            let (mut price, mut session_endpoint): (Option<Amount>, bool) = (None, false);
            for address in &info.providers {
                let Ok(address) = address.parse() else {
                    continue;
                };
                if let Some(p) = self.client.provider(&address).await.map_err(node_error)? {
                    let offer = amount(&p.price_per_unit);
                    price = Some(price.map_or(offer, |best| best.max(offer)));
                    session_endpoint |= !p.endpoint.trim().is_empty();
                }
            }
            models.insert(
                info.name.clone(),
                Model {
                    info,
                    price_per_unit: price,
                    session_endpoint,
                },
            );
        }
        let models = Arc::new(models);
        *cached = Some((Instant::now(), models.clone()));
        Ok(models)
    }

    pub async fn model(&self, name: &str) -> Result<Model, ApiError> {
        self.catalogue()
            .await?
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::model_not_found(name))
    }

    /// The chain's job fees as last measured.
    pub fn fees(&self) -> JobFees {
        *self.fees.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The exact fee of a transaction carrying `message` alone (a session's open or close).
    pub fn message_fee(&self, message: Message) -> Result<Amount, ApiError> {
        self.fees()
            .message_fee(&self.chain_id, message)
            .ok_or_else(|| ApiError::invalid(None, "the transaction's fee overflows"))
    }

    /// The exact fee of the transaction that submits `job`.
    pub fn fee(&self, job: &compute::Msg) -> Result<Amount, ApiError> {
        self.fees()
            .fee(fees::job_tx_bytes(&self.chain_id, job.clone()))
            .ok_or_else(|| ApiError::invalid(None, "the request's fee overflows"))
    }

    async fn measure_fees_again(&self) {
        match fees::learn(&self.client).await {
            Ok(fees) => *self.fees.write().unwrap_or_else(|p| p.into_inner()) = fees,
            Err(e) => tracing::warn!(error = %e, "cannot measure the chain's fees"),
        }
    }

    pub fn signer(key: SecretKey) -> Signer {
        Signer {
            key,
            next_nonce: Mutex::new(None),
        }
    }

    /// Signs and posts one job submission at the signer's next nonce.
    async fn post(
        &self,
        signer: &Signer,
        job: compute::Msg,
        fee: Amount,
    ) -> Result<Hash, ApiError> {
        self.post_message(signer, Message::Compute(job), fee).await
    }

    /// Signs and posts one message at the signer's next nonce, its transaction paying at most
    /// `fee`. The nonce lock is held only while posting, so concurrent requests of one account
    /// (jobs and session transactions alike) get consecutive nonces.
    pub(crate) async fn post_message(
        &self,
        signer: &Signer,
        message: Message,
        fee: Amount,
    ) -> Result<Hash, ApiError> {
        let mut next = signer.next_nonce.lock().await;
        let mut attempt = 0;
        loop {
            let nonce = match *next {
                Some(n) => n,
                None => {
                    self.client
                        .account(&signer.key.public_key().address())
                        .await
                        .map_err(node_error)?
                        .nonce
                }
            };
            let tx = Transaction {
                chain_id: self.chain_id.clone(),
                sender: signer.key.public_key(),
                nonce,
                max_fee: fee,
                messages: vec![message.clone()],
            }
            .sign(&signer.key);
            match self.client.submit(&tx).await {
                Ok(hash) => {
                    *next = Some(nonce + 1);
                    return Ok(hash);
                }
                Err(e) => {
                    *next = None;
                    if e.ledger_error_name() == Some("fee_too_low") {
                        // The fees changed since they were measured: measure again for the
                        // next request (this one reserved too little to retry).
                        self.measure_fees_again().await;
                        return Err(node_error(e));
                    }
                    // Another signer of the same key (or a transaction that left the mempool)
                    // moved the nonce: read it again once the pending ones have had a block.
                    let stale =
                        matches!(e.ledger_error_name(), Some("nonce_replayed" | "nonce_gap"));
                    attempt += 1;
                    if !stale || attempt > NONCE_RETRIES {
                        return Err(node_error(e));
                    }
                    tokio::time::sleep(NONCE_RETRY_WAIT).await;
                }
            }
        }
    }

    /// Polls a job until it is settled, expired or failed; with the prompt tokens its result
    /// records, if any.
    async fn wait_for_job(&self, id: u64) -> Result<(JobInfo, Option<u64>), ClientError> {
        let deadline = tokio::time::Instant::now() + self.job_timeout;
        loop {
            let job: Value = self
                .client
                .call(piazza_api::compute_method::GET_JOB, json!([id]))
                .await?;
            if !job.is_null() {
                let input_units = job.pointer("/result/input_units").and_then(Value::as_u64);
                let job: JobInfo =
                    serde_json::from_value(job).map_err(|e| ClientError::Decode(e.to_string()))?;
                if job.status.is_final() {
                    return Ok((job, input_units));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Timeout(self.job_timeout));
            }
            tokio::time::sleep(JOB_POLL_INTERVAL).await;
        }
    }

    /// One job, from submission to settlement, its transaction paying `fee`.
    pub async fn run_job(
        &self,
        signer: &Signer,
        job: compute::Msg,
        fee: Amount,
    ) -> Result<JobOutcome, JobFailure> {
        let nothing = |error| JobFailure {
            error,
            charged: Amount::ZERO,
        };
        let compute::Msg::SubmitJob {
            model, max_price, ..
        } = &job
        else {
            return Err(nothing(ApiError::internal("not a job submission")));
        };
        let (model, max_price) = (model.clone(), *max_price);
        let worst = max_price.checked_add(fee).unwrap_or(max_price);
        let hash = self.post(signer, job, fee).await.map_err(nothing)?;
        let receipt = self
            .client
            .wait_for_receipt(&hash, self.job_timeout)
            .await
            .map_err(|e| JobFailure {
                // Unknown whether it was included: count the worst case.
                charged: worst,
                error: node_error(e),
            });
        let receipt = match receipt {
            Ok(r) => r,
            Err(failure) => {
                // The transaction may have left the mempool: read the nonce from the chain again.
                *signer.next_nonce.lock().await = None;
                return Err(failure);
            }
        };
        let fee = amount(&receipt.fee_paid);
        let failed = |error| JobFailure {
            error,
            charged: fee,
        };
        if let Some(error) = &receipt.error {
            let message = format!(
                "the chain refused the job: {} ({})",
                error.name, error.message
            );
            return Err(failed(match error.name.as_str() {
                "insufficient_funds" => ApiError::quota(message),
                "input_too_large" => ApiError::too_large(message),
                "no_provider" => ApiError::unavailable("no_provider", message),
                "unknown_model" => ApiError::model_not_found(&model),
                _ => ApiError::upstream(message),
            }));
        }
        let id = *receipt
            .job_ids()
            .first()
            .ok_or_else(|| failed(ApiError::upstream("no job id in the submission receipt")))?;
        let (job, input_units) = self.wait_for_job(id).await.map_err(|e| JobFailure {
            charged: max_price.checked_add(fee).unwrap_or(max_price),
            error: node_error(e),
        })?;
        if job.status == piazza_api::JobState::Failed {
            return Err(failed(ApiError::unavailable(
                "result_rejected",
                format!(
                    "job {id} failed: its result was proven wrong in a dispute; the escrow was refunded"
                ),
            )));
        }
        if job.status != piazza_api::JobState::Settled {
            return Err(failed(ApiError::unavailable(
                "no_provider",
                format!(
                    "job {id} {}: no provider executed it; the escrow was refunded",
                    job.status
                ),
            )));
        }
        let (Some(result), Some(r)) = (job.result, job.receipt) else {
            return Err(failed(ApiError::upstream(format!(
                "settled job {id} has no result"
            ))));
        };
        let output = hex::decode(&result.output)
            .map_err(|_| failed(ApiError::upstream(format!("job {id}: output is not hex"))))?;
        let price = amount(&r.price);
        Ok(JobOutcome {
            output,
            work_units: result.work_units,
            input_units,
            charged: price.checked_add(fee).unwrap_or(price),
            receipt: JobReceipt {
                job: id,
                model: r.model,
                provider: r.provider,
                trace_root: r.trace_root,
                tx: receipt.tx_hash,
                input_hash: r.input_hash,
                output_hash: r.output_hash,
                price: r.price,
                fee: receipt.fee_paid,
                height: r.height,
            },
        })
    }
}

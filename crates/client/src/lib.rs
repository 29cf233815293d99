//! A Rust client for a Piazza node: JSON-RPC over HTTP, block subscriptions over WebSocket,
//! transaction building and signing, and state-proof checking.
//!
//! Invariants:
//! - The client trusts nothing it can check: [`Client::verified_account`] verifies the state
//!   proof against the state root of a block whose proposer signature it checks and, on a
//!   network of validators, whose commit certificate carries more than two thirds of the
//!   height's voting power ([`verify_certificate`]); [`Client::verified_job`] does the same for
//!   a job's record ([`verify_job_proof`]). Given the network's genesis
//!   ([`Client::with_trust_anchor`]), the height's validator set is proven too, as a light
//!   client ([`light`]); without it, it is the set the node names.
//! - It speaks only the shapes in `piazza_api`; it knows no node internals.
//!
//! ```no_run
//! # async fn demo(key: piazza_primitives::SecretKey) -> Result<(), piazza_client::ClientError> {
//! use piazza_client::Client;
//! use piazza_primitives::{Address, Amount};
//! let client = Client::new("http://127.0.0.1:8545");
//! let to: Address = "pz1...".parse().unwrap();
//! let hash = client.transfer(&key, to, Amount::pza(5)).await?;
//! let receipt = client.wait_for_receipt(&hash, std::time::Duration::from_secs(10)).await?;
//! println!("{}", receipt.status);
//! # Ok(()) }
//! ```

use piazza_api::{
    compute_method, method, AccountInfo, BlockInfo, CommitCertificateInfo, JobProofInfo,
    ReceiptInfo, RpcError, StakeInfo, StateProofInfo, Status, Submitted, TxInfo, ValidatorSetInfo,
};
use piazza_codec::{Decode, Encode};
use piazza_consensus::certificate::{self, CertifiedPower};
use piazza_ledger::bank;
use piazza_ledger::block::Block;
use piazza_ledger::compute::{self, Job};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_merkle::StateProof;
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

mod agents;
pub mod economy;
pub mod light;
pub mod session;
pub mod storage;

pub use light::{LightClient, LightConfig, TrustAnchor};

/// The most a transaction built by this client lets the ledger charge, unless told otherwise.
pub const DEFAULT_MAX_FEE: Amount = Amount::pza(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most calls in one JSON-RPC batch this client sends (a node answers at most 100 a request).
pub const BATCH_CALLS_MAX: usize = 100;

/// A JSON-RPC answer object's result, or its error.
fn result_of<T: DeserializeOwned>(answer: Value) -> Result<T, ClientError> {
    if let Some(error) = answer.get("error") {
        let error: RpcError = serde_json::from_value(error.clone())
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        return Err(ClientError::Rpc(error));
    }
    let result = answer
        .get("result")
        .cloned()
        .ok_or_else(|| ClientError::Decode("no result".into()))?;
    serde_json::from_value(result).map_err(|e| ClientError::Decode(e.to_string()))
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach the node: {0}")]
    Http(#[from] reqwest::Error),
    #[error("node refused: {} (code {})", .0.message, .0.code)]
    Rpc(RpcError),
    #[error("unexpected answer from the node: {0}")]
    Decode(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("verification failed: {0}")]
    Verification(String),
    #[error("websocket: {0}")]
    WebSocket(String),
}

impl ClientError {
    /// The ledger's stable error name, when the node refused a transaction.
    pub fn ledger_error_name(&self) -> Option<&str> {
        match self {
            ClientError::Rpc(e) => e.data.as_ref()?.get("name")?.as_str(),
            _ => None,
        }
    }
}

pub struct Client {
    url: String,
    http: reqwest::Client,
    next_id: AtomicU64,
    /// The trusted heights of the network, when the client was given a trust anchor; shared by
    /// its clones.
    light: Option<Arc<tokio::sync::Mutex<LightClient>>>,
}

impl Clone for Client {
    /// Another handle on the same node, sharing the connection pool.
    fn clone(&self) -> Client {
        Client {
            url: self.url.clone(),
            http: self.http.clone(),
            next_id: AtomicU64::new(self.next_id.load(std::sync::atomic::Ordering::Relaxed)),
            light: self.light.clone(),
        }
    }
}

impl Client {
    pub fn new(url: &str) -> Client {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a plain HTTP client builds");
        Client {
            url: url.trim_end_matches('/').to_string(),
            http,
            next_id: AtomicU64::new(1),
            light: None,
        }
    }

    /// This client, checking commit certificates from `anchor` (usually
    /// [`TrustAnchor::from_genesis`]) as a light client: [`Client::certified_block`] then trusts
    /// no validator set the node names without a proof (see [`light`]).
    pub fn with_trust_anchor(mut self, anchor: TrustAnchor, config: LightConfig) -> Client {
        self.light = Some(Arc::new(tokio::sync::Mutex::new(LightClient::new(
            anchor, config,
        ))));
        self
    }

    /// Whether certificates are checked from a trust anchor; without one, against the validator
    /// set the node reports, unproven.
    pub fn has_trust_anchor(&self) -> bool {
        self.light.is_some()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One JSON-RPC call.
    pub async fn call<T: DeserializeOwned>(
        &self,
        name: &str,
        params: Value,
    ) -> Result<T, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": name, "params": params});
        result_of(self.post(&body).await?)
    }

    /// Posts a JSON-RPC body (one call or a batch) and reads the answer.
    async fn post(&self, body: &Value) -> Result<Value, ClientError> {
        Ok(self
            .http
            .post(format!("{}/", self.url))
            .json(body)
            .send()
            .await?
            .json()
            .await?)
    }

    /// Sends `calls` (method, parameters) as JSON-RPC batches of at most [`BATCH_CALLS_MAX`]
    /// calls; one result per call, in order. `Err` of the whole only when a request fails
    /// (calls of the batches before it have run).
    pub async fn call_batch<T: DeserializeOwned>(
        &self,
        calls: Vec<(&str, Value)>,
    ) -> Result<Vec<Result<T, ClientError>>, ClientError> {
        let mut results = Vec::with_capacity(calls.len());
        let mut calls = calls.into_iter().peekable();
        while calls.peek().is_some() {
            let chunk: Vec<(&str, Value)> = calls.by_ref().take(BATCH_CALLS_MAX).collect();
            let first = self
                .next_id
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let body: Vec<Value> = (first..)
                .zip(chunk)
                .map(|(id, (name, params))| {
                    json!({"jsonrpc": "2.0", "id": id, "method": name, "params": params})
                })
                .collect();
            let count = body.len();
            let answer = self.post(&Value::Array(body)).await?;
            // A batch is answered with an array in any order; a refused request with one error.
            let Value::Array(answers) = answer else {
                return Err(result_of::<Value>(answer).err().unwrap_or_else(|| {
                    ClientError::Decode("a batch answered with one result".into())
                }));
            };
            let mut by_id: std::collections::HashMap<u64, Value> = answers
                .into_iter()
                .filter_map(|a| Some((a.get("id")?.as_u64()?, a)))
                .collect();
            for id in (first..).take(count) {
                let answer = by_id
                    .remove(&id)
                    .ok_or_else(|| ClientError::Decode(format!("no answer to call {id}")))?;
                results.push(result_of(answer));
            }
        }
        Ok(results)
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(method::STATUS, json!([])).await
    }

    pub async fn submit(&self, tx: &SignedTransaction) -> Result<Hash, ClientError> {
        self.submit_raw(&tx.to_bytes()).await
    }

    pub async fn submit_raw(&self, bytes: &[u8]) -> Result<Hash, ClientError> {
        let submitted: Submitted = self
            .call(method::SUBMIT_TRANSACTION, json!([hex::encode(bytes)]))
            .await?;
        submitted
            .hash
            .parse()
            .map_err(|_| ClientError::Decode("bad hash".into()))
    }

    /// Submits signed transactions in JSON-RPC batches ([`Client::call_batch`]; a node admits
    /// a batch's submissions together, in one durable journal write). One result per
    /// transaction, in order.
    pub async fn submit_batch(
        &self,
        txs: &[SignedTransaction],
    ) -> Result<Vec<Result<Hash, ClientError>>, ClientError> {
        let calls = txs
            .iter()
            .map(|tx| {
                (
                    method::SUBMIT_TRANSACTION,
                    json!([hex::encode(tx.to_bytes())]),
                )
            })
            .collect();
        let answers: Vec<Result<Submitted, ClientError>> = self.call_batch(calls).await?;
        Ok(answers
            .into_iter()
            .map(|answer| {
                answer?
                    .hash
                    .parse()
                    .map_err(|_| ClientError::Decode("bad hash".into()))
            })
            .collect())
    }

    pub async fn transaction(&self, hash: &Hash) -> Result<Option<TxInfo>, ClientError> {
        self.call(method::GET_TRANSACTION, json!([hash.to_hex()]))
            .await
    }

    /// What became of a transaction this node acknowledged (pending, included, dropped).
    pub async fn transaction_status(
        &self,
        hash: &Hash,
    ) -> Result<piazza_api::TxStatusInfo, ClientError> {
        self.call(method::GET_TRANSACTION_STATUS, json!([hash.to_hex()]))
            .await
    }

    pub async fn receipt(&self, hash: &Hash) -> Result<Option<ReceiptInfo>, ClientError> {
        self.call(method::GET_RECEIPT, json!([hash.to_hex()])).await
    }

    pub async fn block(&self, height: u64) -> Result<Option<BlockInfo>, ClientError> {
        self.call(method::GET_BLOCK, json!([height])).await
    }

    pub async fn block_by_hash(&self, hash: &Hash) -> Result<Option<BlockInfo>, ClientError> {
        self.call(method::GET_BLOCK, json!([hash.to_hex()])).await
    }

    /// The full block, decoded from its canonical bytes, with its proposer signature checked.
    pub async fn raw_block(&self, height: u64) -> Result<Option<Block>, ClientError> {
        let info: Option<BlockInfo> = self.call(method::GET_BLOCK, json!([height, true])).await?;
        let Some(raw) = info.and_then(|i| i.raw) else {
            return Ok(None);
        };
        let bytes = hex::decode(raw).map_err(|e| ClientError::Decode(e.to_string()))?;
        let block = Block::decode_bytes(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        block
            .verify_signature()
            .map_err(|e| ClientError::Verification(e.to_string()))?;
        Ok(Some(block))
    }

    pub async fn account(&self, address: &Address) -> Result<AccountInfo, ClientError> {
        self.call(method::GET_ACCOUNT, json!([address.to_string()]))
            .await
    }

    /// The account with its state proof checked against the state root of the block at the
    /// same height, whose proposer signature is checked too. Returns the account and the
    /// block's proposer so the caller can compare it with the validator it trusts.
    pub async fn verified_account(
        &self,
        address: &Address,
    ) -> Result<(AccountInfo, Block), ClientError> {
        let info = self.account(address).await?;
        let block = self
            .block_with_root(info.proof.height, &info.proof.state_root)
            .await?;
        verify_account_proof(&info, address)?;
        self.certified_block(&block).await?;
        Ok((info, block))
    }

    /// The state proof of job `id`'s record at `height` (default: the head), unchecked.
    pub async fn job_proof(
        &self,
        id: u64,
        height: Option<u64>,
    ) -> Result<JobProofInfo, ClientError> {
        self.call(compute_method::GET_JOB_PROOF, json!([id, height]))
            .await
    }

    /// Job `id`'s record (`None`: no such job) with its state proof checked against the state
    /// root of the block at the same height, whose proposer signature (and, on a network of
    /// validators, commit certificate) is checked too. Returns the record and the block.
    pub async fn verified_job(&self, id: u64) -> Result<(Option<Job>, Block), ClientError> {
        let info = self.job_proof(id, None).await?;
        let block = self
            .block_with_root(info.proof.height, &info.proof.state_root)
            .await?;
        let job = verify_job_proof(&info, id)?;
        self.certified_block(&block).await?;
        Ok((job, block))
    }

    /// The signed block at `height`, refused unless its state root is `state_root` (hex).
    async fn block_with_root(&self, height: u64, state_root: &str) -> Result<Block, ClientError> {
        let block = self
            .raw_block(height)
            .await?
            .ok_or_else(|| ClientError::Verification(format!("no block at height {height}")))?;
        let root: Hash = state_root
            .parse()
            .map_err(|_| ClientError::Decode("bad state root".into()))?;
        if block.header.state_root != root {
            return Err(ClientError::Verification(
                "the proof's state root is not the block's".into(),
            ));
        }
        Ok(block)
    }

    /// The validator set of `height` from the node's committed state; `None` on a chain whose
    /// genesis names no validators (a solo devnet).
    pub async fn validators(&self, height: u64) -> Result<Option<ValidatorSetInfo>, ClientError> {
        self.call(method::GET_VALIDATORS, json!([height])).await
    }

    /// The commit certificate that finalized `height`, as the node stores it (unchecked).
    pub async fn commit_certificate(
        &self,
        height: u64,
    ) -> Result<Option<CommitCertificateInfo>, ClientError> {
        self.call(method::GET_COMMIT_CERTIFICATE, json!([height]))
            .await
    }

    /// On a network of validators, the block's commit certificate checked: more than two thirds
    /// of its height's power precommitted this block. With a trust anchor
    /// ([`Client::with_trust_anchor`]) the height's set is proven from the anchor by the light
    /// client ([`light`]); without one it is the set the node names, unproven, and `None` on a
    /// solo devnet (the node names no set), whose blocks only their proposer signs.
    pub async fn certified_block(
        &self,
        block: &Block,
    ) -> Result<Option<CertifiedPower>, ClientError> {
        let height = block.header.height;
        if let Some(light) = &self.light {
            return light.lock().await.certify(self, block).await.map(Some);
        }
        let Some(set) = self.validators(height).await? else {
            return Ok(None);
        };
        let certificate = self.commit_certificate(height).await?.ok_or_else(|| {
            ClientError::Verification(format!(
                "the node runs a network of validators but has no commit certificate for height {height}"
            ))
        })?;
        verify_certificate(&certificate, block, &set).map(Some)
    }

    pub async fn stake(&self, address: &Address) -> Result<StakeInfo, ClientError> {
        self.call(method::GET_STAKE, json!([address.to_string()]))
            .await
    }

    /// Polls for a receipt until `timeout`.
    pub async fn wait_for_receipt(
        &self,
        hash: &Hash,
        timeout: Duration,
    ) -> Result<ReceiptInfo, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(receipt) = self.receipt(hash).await? {
                return Ok(receipt);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Builds and signs a transaction from `key` at its next nonce.
    pub async fn build(
        &self,
        key: &SecretKey,
        messages: Vec<Message>,
        max_fee: Amount,
    ) -> Result<SignedTransaction, ClientError> {
        let status = self.status().await?;
        let account = self.account(&key.public_key().address()).await?;
        Ok(Transaction {
            chain_id: status.chain_id,
            sender: key.public_key(),
            nonce: account.nonce,
            max_fee,
            messages,
        }
        .sign(key))
    }

    /// Builds, signs and submits one message from `key` with the default fee cap.
    pub async fn send_message(
        &self,
        key: &SecretKey,
        message: Message,
    ) -> Result<Hash, ClientError> {
        let tx = self.build(key, vec![message], DEFAULT_MAX_FEE).await?;
        self.submit(&tx).await
    }

    pub async fn transfer(
        &self,
        key: &SecretKey,
        to: Address,
        amount: Amount,
    ) -> Result<Hash, ClientError> {
        self.send_message(key, Message::Bank(bank::Msg::Send { to, amount }))
            .await
    }

    pub async fn bond(
        &self,
        key: &SecretKey,
        role: Role,
        amount: Amount,
    ) -> Result<Hash, ClientError> {
        self.send_message(key, Message::Staking(staking::Msg::Bond { role, amount }))
            .await
    }

    pub async fn unbond(
        &self,
        key: &SecretKey,
        role: Role,
        amount: Amount,
    ) -> Result<Hash, ClientError> {
        self.send_message(key, Message::Staking(staking::Msg::Unbond { role, amount }))
            .await
    }

    /// Subscribes over WebSocket to `"newBlocks"` or `"events"`; each item is a notification's
    /// `result`.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, ClientError> {
        use futures_util::{SinkExt, StreamExt};
        let ws_url = format!("{}/ws", self.url.replacen("http", "ws", 1));
        let (mut socket, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        let call =
            json!({"jsonrpc": "2.0", "id": 1, "method": method::SUBSCRIBE, "params": [topic]});
        socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                call.to_string().into(),
            ))
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        while let Some(message) = socket.next().await {
            let message = message.map_err(|e| ClientError::WebSocket(e.to_string()))?;
            let Ok(answer) = serde_json::from_str::<Value>(message.to_text().unwrap_or("")) else {
                continue;
            };
            if let Some(error) = answer.get("error") {
                return Err(ClientError::Rpc(
                    serde_json::from_value(error.clone())
                        .map_err(|e| ClientError::Decode(e.to_string()))?,
                ));
            }
            if answer.get("id") == Some(&json!(1)) {
                return Ok(Subscription { socket });
            }
        }
        Err(ClientError::WebSocket(
            "closed before the subscription was confirmed".into(),
        ))
    }
}

/// Checks `info`'s state proof of `key` against the root it names; returns the proven value
/// (`None`: the key is proven absent).
pub(crate) fn verify_state_proof(
    key: &[u8],
    info: &StateProofInfo,
) -> Result<Option<Vec<u8>>, ClientError> {
    let StateProofInfo {
        key: key_hex,
        value: value_hex,
        proof: proof_hex,
        state_root: root_hex,
        ..
    } = info;
    let bad = |what: &str| ClientError::Verification(what.to_string());
    if hex::decode(key_hex).map_err(|_| bad("key is not hex"))? != key {
        return Err(bad("the proof is for another key"));
    }
    let value = value_hex
        .as_ref()
        .map(hex::decode)
        .transpose()
        .map_err(|_| bad("value is not hex"))?;
    let proof =
        StateProof::from_bytes(&hex::decode(proof_hex).map_err(|_| bad("proof is not hex"))?)
            .map_err(|e| ClientError::Verification(e.to_string()))?;
    let root: Hash = root_hex.parse().map_err(|_| bad("bad state root"))?;
    proof
        .verify(root, key, value.as_deref())
        .map_err(|e| ClientError::Verification(e.to_string()))?;
    Ok(value)
}

/// Checks a job record's state proof against the root it names; returns the proven record
/// (`None`: no job `id` at that height).
pub fn verify_job_proof(info: &JobProofInfo, id: u64) -> Result<Option<Job>, ClientError> {
    if info.id != id {
        return Err(ClientError::Verification(format!(
            "the proof is for job {}, not {id}",
            info.id
        )));
    }
    let key = compute::state_key::job(id);
    let value = verify_state_proof(&key, &info.proof)?;
    value
        .map(|bytes| Job::from_bytes(&bytes).map_err(|e| ClientError::Verification(e.to_string())))
        .transpose()
}

/// Checks an account's state proof against the root it names.
pub fn verify_account_proof(info: &AccountInfo, address: &Address) -> Result<(), ClientError> {
    let bad = |what: &str| ClientError::Verification(what.to_string());
    let key = bank::state_key::account(address);
    let value = verify_state_proof(&key, &info.proof)?;
    let account = match &value {
        Some(bytes) => bank::Account::from_bytes(bytes)
            .map_err(|e| ClientError::Verification(e.to_string()))?,
        None => bank::Account::default(),
    };
    if account.balance.base_units().to_string() != info.balance || account.nonce != info.nonce {
        return Err(bad("balance or nonce differ from the proven value"));
    }
    Ok(())
}

/// A live WebSocket subscription.
pub struct Subscription {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Subscription {
    /// The next notification's `result`, or `None` when the connection closes.
    pub async fn next(&mut self) -> Option<Value> {
        use futures_util::StreamExt;
        while let Some(Ok(message)) = self.socket.next().await {
            let Ok(value) = serde_json::from_str::<Value>(message.to_text().unwrap_or("")) else {
                continue;
            };
            if value.get("method").and_then(Value::as_str) == Some(method::SUBSCRIPTION) {
                return value.get("params").and_then(|p| p.get("result")).cloned();
            }
        }
        None
    }
}

/// The compute market.
impl Client {
    pub async fn models(&self) -> Result<Vec<piazza_api::ModelInfo>, ClientError> {
        self.call(piazza_api::compute_method::GET_MODELS, json!([]))
            .await
    }

    pub async fn job(&self, id: u64) -> Result<Option<piazza_api::JobInfo>, ClientError> {
        self.call(piazza_api::compute_method::GET_JOB, json!([id]))
            .await
    }

    pub async fn provider(
        &self,
        address: &Address,
    ) -> Result<Option<piazza_api::ProviderInfo>, ClientError> {
        self.call(
            piazza_api::compute_method::GET_PROVIDER,
            json!([address.to_string()]),
        )
        .await
    }

    pub async fn dispute(&self, job: u64) -> Result<Option<piazza_api::DisputeInfo>, ClientError> {
        self.call(piazza_api::verify_method::GET_DISPUTE, json!([job]))
            .await
    }

    /// The open audits and disputes `address` takes part in.
    pub async fn verify_tasks(
        &self,
        address: &Address,
    ) -> Result<piazza_api::VerifyTasks, ClientError> {
        self.call(
            piazza_api::verify_method::GET_VERIFY_TASKS,
            json!([address.to_string()]),
        )
        .await
    }

    pub async fn auditor(
        &self,
        address: &Address,
    ) -> Result<Option<piazza_api::AuditorInfo>, ClientError> {
        self.call(
            piazza_api::verify_method::GET_AUDITOR,
            json!([address.to_string()]),
        )
        .await
    }

    pub async fn provider_jobs(&self, address: &Address) -> Result<Vec<u64>, ClientError> {
        self.call(
            piazza_api::compute_method::GET_PROVIDER_JOBS,
            json!([address.to_string()]),
        )
        .await
    }

    /// Submits a job and returns its id (read from the committed receipt).
    pub async fn submit_job(
        &self,
        key: &SecretKey,
        job: piazza_ledger::compute::Msg,
        timeout: Duration,
    ) -> Result<(u64, ReceiptInfo), ClientError> {
        let tx = self
            .build(key, vec![Message::Compute(job)], DEFAULT_MAX_FEE)
            .await?;
        let hash = self.submit(&tx).await?;
        let receipt = self.wait_for_receipt(&hash, timeout).await?;
        if let Some(error) = &receipt.error {
            return Err(ClientError::Rpc(RpcError {
                code: error.code as i64,
                message: format!("{}: {}", error.name, error.message),
                data: Some(json!({"name": error.name, "code": error.code})),
            }));
        }
        let id = *receipt
            .job_ids()
            .first()
            .ok_or_else(|| ClientError::Decode("no job id in the receipt".into()))?;
        Ok((id, receipt))
    }

    /// Polls a job until it is settled, expired or failed.
    pub async fn wait_for_job(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<piazza_api::JobInfo, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(job) = self.job(id).await? {
                if job.status.is_final() {
                    return Ok(job);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex_array<const N: usize>(text: &str, what: &str) -> Result<[u8; N], ClientError> {
    let bytes = hex::decode(text).map_err(|e| ClientError::Decode(format!("{what}: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| ClientError::Decode(format!("{what}: not {N} bytes")))
}

/// Checks that `certificate` proves `block` final: it names `block`'s height and hash, and its
/// precommits (ed25519 under the ZIP-215 rule, over Piazza's vote bytes on the block's chain)
/// come from distinct members of `validators` (the height's set) holding more than two thirds of
/// its power.
pub fn verify_certificate(
    certificate: &CommitCertificateInfo,
    block: &Block,
    validators: &ValidatorSetInfo,
) -> Result<CertifiedPower, ClientError> {
    if validators.validators.len() > certificate::VALIDATORS_MAX {
        return Err(ClientError::Verification(format!(
            "more than {} validators",
            certificate::VALIDATORS_MAX
        )));
    }
    let members = validators
        .validators
        .iter()
        .map(|v| {
            Ok(certificate::Member {
                public_key: piazza_primitives::PublicKey(hex_array(
                    &v.consensus_key,
                    "consensus key",
                )?),
                voting_power: v.voting_power,
            })
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    verify_commit(&decode_certificate(certificate)?, block, &members)
}

/// [`verify_certificate`] against members already decoded.
fn verify_commit(
    certificate: &certificate::CommitCertificate,
    block: &Block,
    members: &[certificate::Member],
) -> Result<CertifiedPower, ClientError> {
    certificate::verify_commit(
        &block.header.chain_id,
        certificate,
        block.header.height,
        &block.hash(),
        members,
    )
    .map_err(|e| ClientError::Verification(format!("commit certificate: {e}")))
}

/// A certificate as the node sends it, decoded (its signatures unchecked); at most
/// `certificate::VALIDATORS_MAX` signatures.
fn decode_certificate(
    certificate: &CommitCertificateInfo,
) -> Result<certificate::CommitCertificate, ClientError> {
    if certificate.signatures.len() > certificate::VALIDATORS_MAX {
        return Err(ClientError::Verification(format!(
            "more than {} signatures",
            certificate::VALIDATORS_MAX
        )));
    }
    let signatures = certificate
        .signatures
        .iter()
        .map(|s| {
            Ok(certificate::CommitSignature {
                validator: s
                    .validator
                    .parse()
                    .map_err(|e| ClientError::Decode(format!("signer `{}`: {e}", s.validator)))?,
                signature: piazza_primitives::Signature(hex_array(&s.signature, "signature")?),
            })
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    Ok(certificate::CommitCertificate {
        height: certificate.height,
        round: certificate.round,
        block: certificate
            .block_hash
            .parse()
            .map_err(|_| ClientError::Decode("bad certificate block hash".into()))?,
        signatures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_ledger::compute::{JobParams, JobResult, JobStatus};
    use piazza_merkle::{key_hash, MemoryTreeStore, Tree};

    fn job(id: u64) -> Job {
        let output = b"Paris".to_vec();
        Job {
            id,
            client: SecretKey::from_seed([1; 32]).public_key().address(),
            model: "smollm2-135m".into(),
            input: b"The capital of France is".to_vec(),
            params: JobParams::default(),
            max_units: 16,
            max_price: Amount::pza(1),
            submitted_height: 3,
            group: id,
            queued_height: 3,
            price_per_unit: Amount::new(10),
            status: JobStatus::Settled,
            missed: Vec::new(),
            result: Some(JobResult {
                output_hash: compute::output_hash(&output),
                output,
                trace_root: Hash([7; 32]),
                work_units: 5,
                posted_height: 4,
                input_units: 6,
            }),
            receipt: None,
        }
    }

    /// A state of two jobs (and another key) and the node's answer for job `id` in it.
    fn proof_of(id: u64) -> JobProofInfo {
        let store = MemoryTreeStore::default();
        let values = [
            (
                key_hash(&compute::state_key::job(1)),
                Some(job(1).to_bytes()),
            ),
            (
                key_hash(&compute::state_key::job(2)),
                Some(job(2).to_bytes()),
            ),
            (key_hash(b"bank/other"), Some(b"x".to_vec())),
        ];
        let (root, batch) = Tree::new(&store).put_value_set(values, 9).unwrap();
        store.write(batch.node_batch);
        let key = compute::state_key::job(id);
        let (value, proof) = Tree::new(&store).get_with_proof(key_hash(&key), 9).unwrap();
        JobProofInfo {
            id,
            proof: StateProofInfo {
                height: 9,
                state_root: Hash(root.0).to_hex(),
                key: hex::encode(&key),
                value: value.map(hex::encode),
                proof: hex::encode(StateProof::new(proof).to_bytes()),
            },
        }
    }

    #[test]
    fn a_job_proof_verifies_and_returns_the_record() {
        assert_eq!(verify_job_proof(&proof_of(2), 2).unwrap(), Some(job(2)));
        // A job that does not exist is proven absent.
        assert_eq!(verify_job_proof(&proof_of(5), 5).unwrap(), None);
    }

    #[test]
    fn a_tampered_job_proof_or_record_fails() {
        // The record with another output: its hash is not the one the root commits to.
        let mut tampered = proof_of(2);
        let mut record = job(2);
        record.result.as_mut().unwrap().output = b"Lyon".to_vec();
        tampered.proof.value = Some(hex::encode(record.to_bytes()));
        assert!(verify_job_proof(&tampered, 2).is_err());
        // A record proven absent claimed to exist, and one that exists claimed absent.
        let mut absent = proof_of(5);
        absent.proof.value = Some(hex::encode(job(5).to_bytes()));
        assert!(verify_job_proof(&absent, 5).is_err());
        let mut hidden = proof_of(2);
        hidden.proof.value = None;
        assert!(verify_job_proof(&hidden, 2).is_err());
        // One flipped byte of the proof, another root, another job's proof.
        let mut proof = proof_of(2);
        let mut bytes = hex::decode(&proof.proof.proof).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        proof.proof.proof = hex::encode(bytes);
        assert!(verify_job_proof(&proof, 2).is_err());
        let mut root = proof_of(2);
        root.proof.state_root = Hash([3; 32]).to_hex();
        assert!(verify_job_proof(&root, 2).is_err());
        assert!(verify_job_proof(&proof_of(1), 2).is_err());
        let mut key = proof_of(1);
        key.id = 2;
        assert!(verify_job_proof(&key, 2).is_err());
    }
}

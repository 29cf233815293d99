//! A session's client (DESIGN.md §3.1): requests to the provider's endpoint with their
//! answers streamed back as server-sent events, each receipt checked before its voucher is
//! signed ([`piazza_session::ClientChannel`]), the voucher sent with the next request or on
//! its own.
//!
//! ```no_run
//! # async fn demo(channel: piazza_session::ClientChannel) -> Result<(), piazza_client::session::SessionError> {
//! use piazza_client::session::SessionClient;
//! let mut session = SessionClient::new("http://127.0.0.1:9000", channel);
//! let answer = session
//!     .request(b"Hello".to_vec(), Default::default(), 16, |text| print!("{text}"))
//!     .await?;
//! println!("\n{} units, {} paid in all", answer.receipt.receipt.units, session.paid());
//! # Ok(()) }
//! ```

use crate::{Client, ClientError};
use piazza_api::{session_method, SessionCommitInfo, SessionInfo, SessionState};
use piazza_ledger::job::JobParams;
use piazza_ledger::sessions::{self, SignedReceipt, SignedVoucher};
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, Hash, PublicKey, SecretKey};
use piazza_session::wire::{
    ErrorView, Event, EventReader, RequestBody, SessionView, VoucherBody, WireError,
};
use piazza_session::Terms;
use piazza_session::{ClientChannel, ReceiptRefusal};
use std::time::Duration;

/// How long the client waits for the provider's next bytes before giving up on a request.
pub const STREAM_IDLE_TIMEOUT_MS: u64 = 120_000;
/// Largest answer the client reads: a job output's bound, with room for the events' JSON.
pub const ANSWER_BYTES_MAX: usize = 4 * piazza_ledger::compute::JOB_OUTPUT_BYTES_MAX + 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error("cannot reach the provider: {0}")]
    Http(#[from] reqwest::Error),
    #[error("provider refused ({status}): {} ({})", .error.message, .error.code)]
    Refused { status: u16, error: ErrorView },
    #[error("provider sent something unreadable: {0}")]
    Wire(#[from] WireError),
    #[error("receipt refused: {0}")]
    Receipt(#[from] ReceiptRefusal),
    #[error("the answer ended without a receipt")]
    NoReceipt,
    #[error("the provider sent nothing for {0} ms")]
    Stalled(u64),
    #[error("the answer passed {0} bytes")]
    TooLarge(usize),
}

impl SessionError {
    /// The provider's error code, when it refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            SessionError::Refused { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

/// One answered request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The output the receipt's hash covers (text as UTF-8, an embedding as little-endian
    /// f32s).
    pub output: Vec<u8>,
    /// The embedding, for an embedding model.
    pub embedding: Option<Vec<f32>>,
    pub receipt: SignedReceipt,
    /// The voucher paying it (sent with the next request, or by [`SessionClient::pay`]).
    pub voucher: SignedVoucher,
}

/// A session's client side, talking to its provider's endpoint.
pub struct SessionClient {
    endpoint: String,
    http: reqwest::Client,
    channel: ClientChannel,
    /// The voucher for the latest receipt, not yet sent.
    unsent: Option<SignedVoucher>,
}

impl SessionClient {
    pub fn new(endpoint: &str, channel: ClientChannel) -> SessionClient {
        SessionClient {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            channel,
            unsent: None,
        }
    }

    pub fn channel(&self) -> &ClientChannel {
        &self.channel
    }

    /// Everything the vouchers signed so far pay.
    pub fn paid(&self) -> Amount {
        self.channel.paid()
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/v1/sessions/{}{tail}",
            self.endpoint,
            self.channel.terms().session
        )
    }

    /// Sends the next request (with the voucher for the previous one), hands each piece of
    /// text to `on_delta` as it arrives, checks the receipt and signs its voucher. A request
    /// that fails before its receipt is abandoned: nothing is signed for it.
    pub async fn request(
        &mut self,
        input: Vec<u8>,
        params: JobParams,
        max_units: u64,
        on_delta: impl FnMut(&str),
    ) -> Result<Answer, SessionError> {
        let request = self.channel.request(input, params, max_units)?;
        let body = RequestBody::new(&request, self.unsent.as_ref());
        let answer = self.answer(&body, on_delta).await;
        match answer {
            Ok((output, embedding, receipt)) => {
                let voucher = self.channel.accept(&receipt, &output)?;
                self.unsent = Some(voucher.clone());
                Ok(Answer {
                    output,
                    embedding,
                    receipt,
                    voucher,
                })
            }
            Err(e) => {
                self.channel.abandon();
                Err(e)
            }
        }
    }

    async fn answer(
        &mut self,
        body: &RequestBody,
        mut on_delta: impl FnMut(&str),
    ) -> Result<(Vec<u8>, Option<Vec<f32>>, SignedReceipt), SessionError> {
        let response = self
            .http
            .post(self.url("/requests"))
            .json(body)
            .send()
            .await?;
        let mut response = refused(response).await?;
        // The voucher went out with a request the provider took.
        self.unsent = None;
        let (mut reader, mut text, mut embedding, mut read) =
            (EventReader::new(), Vec::new(), None, 0usize);
        let idle = Duration::from_millis(STREAM_IDLE_TIMEOUT_MS);
        loop {
            let chunk = tokio::time::timeout(idle, response.chunk())
                .await
                .map_err(|_| SessionError::Stalled(STREAM_IDLE_TIMEOUT_MS))??;
            let Some(chunk) = chunk else {
                return Err(SessionError::NoReceipt);
            };
            read += chunk.len();
            if read > ANSWER_BYTES_MAX {
                return Err(SessionError::TooLarge(ANSWER_BYTES_MAX));
            }
            for event in reader.push(&chunk)? {
                match event {
                    Event::Delta { text: piece } => {
                        on_delta(&piece);
                        text.extend_from_slice(piece.as_bytes());
                    }
                    Event::Embedding { vector } => {
                        text = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                        embedding = Some(vector);
                    }
                    Event::Receipt { receipt, .. } => return Ok((text, embedding, *receipt)),
                    Event::Error(error) => {
                        return Err(SessionError::Refused { status: 200, error })
                    }
                }
            }
        }
    }

    /// Sends the voucher for the latest receipt now (it otherwise goes with the next request).
    pub async fn pay(&mut self) -> Result<Option<SessionView>, SessionError> {
        let Some(voucher) = self.unsent.clone() else {
            return Ok(None);
        };
        let response = self
            .http
            .post(self.url("/vouchers"))
            .json(&VoucherBody::new(&voucher))
            .send()
            .await?;
        let view = refused(response).await?.json().await?;
        self.unsent = None;
        Ok(Some(view))
    }

    /// The provider's view of the session.
    pub async fn view(&self) -> Result<SessionView, SessionError> {
        let response = self.http.get(self.url("")).send().await?;
        Ok(refused(response).await?.json().await?)
    }
}

/// `response` if it succeeded, else the provider's error.
async fn refused(response: reqwest::Response) -> Result<reqwest::Response, SessionError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let error = match response.json::<serde_json::Value>().await {
        Ok(body) => serde_json::from_value(body["error"].clone()).unwrap_or(ErrorView {
            code: "unknown".into(),
            message: body.to_string(),
        }),
        Err(e) => ErrorView {
            code: "unknown".into(),
            message: e.to_string(),
        },
    };
    Err(SessionError::Refused { status, error })
}

/// What `sessions::Msg::Open` asks for.
#[derive(Debug, Clone)]
pub struct OpenSession {
    pub model: String,
    pub deposit: Amount,
    pub max_price_per_unit: Amount,
    pub expiry_blocks: u64,
    /// A second key that may sign requests and vouchers.
    pub authorised: Option<PublicKey>,
}

/// How long opening a session waits for its transaction.
pub const OPEN_TIMEOUT_MS: u64 = 60_000;

impl Client {
    /// The chain's record of session `id`.
    pub async fn session(&self, id: u64) -> Result<Option<SessionInfo>, ClientError> {
        self.call(session_method::GET_SESSION, serde_json::json!([id]))
            .await
    }

    /// The newest page of session `id`'s commits (or the page from commit index `first`).
    pub async fn session_commits(
        &self,
        id: u64,
        first: Option<u64>,
    ) -> Result<Option<Vec<SessionCommitInfo>>, ClientError> {
        self.call(
            session_method::GET_SESSION_COMMITS,
            serde_json::json!([id, first]),
        )
        .await
    }

    /// Opens a session from `key` (its owner key) and returns its id once the transaction is
    /// in a block.
    pub async fn open_session(
        &self,
        key: &SecretKey,
        open: OpenSession,
    ) -> Result<u64, ClientError> {
        let message = Message::Sessions(sessions::Msg::Open {
            model: open.model,
            owner_key: key.public_key(),
            authorised: open.authorised,
            deposit: open.deposit,
            max_price_per_unit: open.max_price_per_unit,
            expiry_blocks: open.expiry_blocks,
        });
        let hash = self.send_message(key, message).await?;
        let receipt = self
            .wait_for_receipt(&hash, Duration::from_millis(OPEN_TIMEOUT_MS))
            .await?;
        if let Some(error) = receipt.error {
            return Err(ClientError::Decode(format!(
                "session not opened: {} {}",
                error.name, error.message
            )));
        }
        receipt
            .events
            .iter()
            .find(|e| e.kind == "sessions.opened")
            .and_then(|e| e.attributes.get("session")?.parse().ok())
            .ok_or_else(|| ClientError::Decode("no sessions.opened event".into()))
    }

    /// Waits until session `id` has a provider; returns its record.
    pub async fn wait_for_session(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<SessionInfo, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(info) = self.session(id).await? {
                if info.state != SessionState::Pending {
                    return Ok(info);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The terms of a session from its RPC record; `None` while it has no provider.
pub fn terms(info: &SessionInfo) -> Result<Option<Terms>, ClientError> {
    let bad =
        |what: &str, e: String| ClientError::Decode(format!("session {}: {what}: {e}", info.id));
    let key = |what: &str, text: &str| -> Result<PublicKey, ClientError> {
        let bytes: Hash = text
            .parse()
            .map_err(|e: hex::FromHexError| bad(what, e.to_string()))?;
        Ok(PublicKey(bytes.0))
    };
    let amount = |what: &str, text: &str| -> Result<Amount, ClientError> {
        text.parse::<u128>()
            .map(Amount::new)
            .map_err(|e| bad(what, e.to_string()))
    };
    let Some(provider) = &info.provider else {
        return Ok(None);
    };
    let provider: Address = provider
        .parse()
        .map_err(|e: piazza_primitives::AddressError| bad("provider", e.to_string()))?;
    let escrowed = amount("deposit", &info.deposit)?
        .checked_add(amount("paid", &info.paid)?)
        .ok_or_else(|| bad("deposit", "overflow".into()))?;
    Ok(Some(Terms {
        session: info.id,
        owner_key: key("owner_key", &info.owner_key)?,
        authorised: info
            .authorised
            .as_deref()
            .map(|k| key("authorised", k))
            .transpose()?,
        provider,
        deposit: escrowed,
        max_price_per_unit: amount("max_price_per_unit", &info.max_price_per_unit)?,
        committed_seq: info.committed_seq,
        committed_total: amount("committed_total", &info.committed_total)?,
        open: info.state == SessionState::Open,
    }))
}

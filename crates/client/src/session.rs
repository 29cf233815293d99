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
use piazza_ledger::sessions::{self, SignedReceipt, SignedRequest, SignedVoucher};
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, Hash, PublicKey, SecretKey};
use piazza_session::wire::{
    ErrorView, Event, EventReader, RequestBody, SessionView, VoucherBody, WireError,
};
use piazza_session::Terms;
use piazza_session::{ClientChannel, ReceiptRefusal};
use std::time::Duration;

/// The HTTP client (and connection pool) a [`SessionClient`] sends through; one can serve
/// many sessions ([`SessionClient::with_http`]).
pub use reqwest::Client as HttpClient;

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
    /// The request as signed and sent (what a challenge of the receipt carries).
    pub request: SignedRequest,
    pub receipt: SignedReceipt,
    /// The input's tokens as the provider counted them: the signed receipt's `input_units`.
    pub input_units: u64,
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

    /// The same client on `http`'s connection pool (shared with other sessions to the same
    /// providers) instead of a pool of its own.
    pub fn with_http(mut self, http: HttpClient) -> SessionClient {
        self.http = http;
        self
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
                let voucher = if embedding.is_some() {
                    self.channel.accept_embedding(&receipt, &output)?
                } else {
                    self.channel.accept(&receipt, &output)?
                };
                let input_units = receipt.receipt.input_units;
                self.unsent = Some(voucher.clone());
                Ok(Answer {
                    output,
                    embedding,
                    request,
                    receipt,
                    input_units,
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

/// Most lines a [`ReceiptBook`] reads: a session's requests, well past a day of chat.
pub const RECEIPT_BOOK_ENTRIES_MAX: usize = 100_000;
/// Longest line of a [`ReceiptBook`]: a request of the largest input and its receipt, as hex.
pub const RECEIPT_BOOK_LINE_BYTES_MAX: usize =
    2 * piazza_ledger::compute::JOB_INPUT_BYTES_MAX + 4096;

/// The requests a client sent and the receipts it got for them, kept in a file (one line per
/// answer: the signed request and the signed receipt, as hex of their canonical bytes) so the
/// owner can later challenge a receipt on chain with the request it answers.
pub struct ReceiptBook {
    path: std::path::PathBuf,
}

/// Why a receipt book could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptBookError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {detail}")]
    Corrupt {
        path: std::path::PathBuf,
        line: usize,
        detail: String,
    },
}

impl ReceiptBook {
    /// The book at `path` (created on the first answer).
    pub fn at(path: impl Into<std::path::PathBuf>) -> ReceiptBook {
        ReceiptBook { path: path.into() }
    }

    /// Session `session`'s book under `dir`: `dir/sessions/SESSION.receipts`.
    pub fn in_dir(dir: &std::path::Path, session: u64) -> ReceiptBook {
        ReceiptBook::at(dir.join("sessions").join(format!("{session}.receipts")))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> ReceiptBookError {
        ReceiptBookError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends a request and the receipt that answers it (one line, written whole, then
    /// synced).
    pub fn record(
        &self,
        request: &SignedRequest,
        receipt: &SignedReceipt,
    ) -> Result<(), ReceiptBookError> {
        use std::io::Write;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let line = format!(
            "{} {}\n",
            piazza_session::wire::to_hex(request),
            piazza_session::wire::to_hex(receipt)
        );
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        file.write_all(line.as_bytes()).map_err(|e| self.io(e))?;
        file.sync_data().map_err(|e| self.io(e))
    }

    /// The request and receipt of request `seq` of `session` (the last one written, if a
    /// seq was written twice); `None` when the book has none.
    pub fn find(
        &self,
        session: u64,
        seq: u64,
    ) -> Result<Option<(SignedRequest, SignedReceipt)>, ReceiptBookError> {
        use std::io::{BufRead, Read};
        let file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let mut reader = std::io::BufReader::new(file);
        let mut found = None;
        let mut line = String::new();
        for number in 1..=RECEIPT_BOOK_ENTRIES_MAX {
            line.clear();
            let read = std::io::Read::by_ref(&mut reader)
                .take(RECEIPT_BOOK_LINE_BYTES_MAX as u64 + 1)
                .read_line(&mut line)
                .map_err(|e| self.io(e))?;
            if read == 0 {
                return Ok(found);
            }
            let corrupt = |detail: String| ReceiptBookError::Corrupt {
                path: self.path.clone(),
                line: number,
                detail,
            };
            if read > RECEIPT_BOOK_LINE_BYTES_MAX {
                return Err(corrupt(format!(
                    "longer than {RECEIPT_BOOK_LINE_BYTES_MAX} bytes"
                )));
            }
            let (request, receipt) = line
                .trim_end()
                .split_once(' ')
                .ok_or_else(|| corrupt("not `REQUEST RECEIPT`".into()))?;
            let request: SignedRequest = piazza_session::wire::from_hex("request", request)
                .map_err(|e| corrupt(e.to_string()))?;
            let receipt: SignedReceipt = piazza_session::wire::from_hex("receipt", receipt)
                .map_err(|e| corrupt(e.to_string()))?;
            if receipt.receipt.session == session && receipt.receipt.seq == seq {
                found = Some((request, receipt));
            }
        }
        Err(ReceiptBookError::Corrupt {
            path: self.path.clone(),
            line: RECEIPT_BOOK_ENTRIES_MAX + 1,
            detail: format!("more than {RECEIPT_BOOK_ENTRIES_MAX} lines"),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_ledger::sessions::{Receipt, Request, Voucher};

    fn answer(session: u64, seq: u64, key: &SecretKey) -> Answer {
        let request = Request {
            session,
            seq,
            input: format!("question {seq}").into_bytes(),
            params: JobParams::default(),
            max_units: 8,
        }
        .sign(key);
        let receipt = Receipt {
            session,
            seq,
            input_hash: piazza_ledger::compute::input_hash(&request.request.input),
            output_hash: Hash::ZERO,
            trace_root: Hash::ZERO,
            units: 8,
            input_units: 3,
            price: Amount::new(8),
        }
        .sign(key);
        Answer {
            output: Vec::new(),
            embedding: None,
            request,
            receipt,
            input_units: 3,
            voucher: Voucher {
                session,
                seq,
                total: Amount::new(8 * seq as u128),
            }
            .sign(key),
        }
    }

    #[test]
    fn a_receipt_book_keeps_each_request_and_receipt_and_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!(
            "piazza-receipt-book-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let key = SecretKey::from_seed([4; 32]);
        let book = ReceiptBook::in_dir(&dir, 7);
        assert!(book.find(7, 1).unwrap().is_none(), "no file yet");
        for seq in 1..=3 {
            let answer = answer(7, seq, &key);
            book.record(&answer.request, &answer.receipt).unwrap();
        }
        let (request, receipt) = book.find(7, 2).unwrap().expect("request 2");
        assert_eq!(request, answer(7, 2, &key).request);
        assert_eq!(receipt, answer(7, 2, &key).receipt);
        assert!(book.find(7, 4).unwrap().is_none());
        assert!(book.find(8, 2).unwrap().is_none(), "another session's seq");

        std::fs::write(book.path(), "zz 00\n").unwrap();
        assert!(matches!(
            book.find(7, 1),
            Err(ReceiptBookError::Corrupt { line: 1, .. })
        ));
        std::fs::write(book.path(), "a".repeat(RECEIPT_BOOK_LINE_BYTES_MAX + 10)).unwrap();
        assert!(matches!(
            book.find(7, 1),
            Err(ReceiptBookError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

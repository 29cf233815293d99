//! What travels between client and provider over HTTP: JSON bodies carrying each signed
//! object as hex of its canonical bytes, and the server-sent events of one request.
//!
//! A request's answer is a stream of events, each `event: NAME\ndata: JSON\n\n`:
//! `delta` `{"text"}` (generation text as it is produced), `embedding` `{"vector"}`,
//! then one `receipt` `{"receipt": hex, "view": {...}}`, or an `error` `{"code", "message"}`.

use piazza_codec::{Decode, Encode};
use piazza_ledger::sessions::{Receipt, SignedReceipt, SignedRequest, SignedVoucher};
use piazza_primitives::Amount;
use serde::{Deserialize, Serialize};

/// Largest JSON body a client may send: a request with the largest input, as hex, and a
/// voucher.
pub const BODY_BYTES_MAX: usize = 2 * piazza_ledger::compute::JOB_INPUT_BYTES_MAX + 4096;
/// Largest single event a client reads (an embedding of 384 floats as JSON is ~8 KiB).
pub const EVENT_BYTES_MAX: usize = 256 * 1024;

/// Why bytes from the other side were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("body is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("{what} is not hex: {detail}")]
    Hex { what: &'static str, detail: String },
    #[error("{what} does not decode: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("event of more than {max} bytes")]
    EventTooLarge { max: usize },
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
}

impl WireError {
    pub fn code(&self) -> &'static str {
        match self {
            WireError::EventTooLarge { .. } => "too_large",
            _ => "malformed",
        }
    }
}

/// Hex of a value's canonical bytes.
pub fn to_hex<T: Encode>(value: &T) -> String {
    hex::encode(value.to_bytes())
}

/// A value from hex of its canonical bytes (bounded by the type's own decoder).
pub fn from_hex<T: Decode>(what: &'static str, text: &str) -> Result<T, WireError> {
    let bytes = hex::decode(text).map_err(|e| WireError::Hex {
        what,
        detail: e.to_string(),
    })?;
    T::from_bytes(&bytes).map_err(|e| WireError::Decode {
        what,
        detail: e.to_string(),
    })
}

/// `POST /v1/sessions/{id}/requests`: the signed request and, for every request after the
/// first, the voucher paying the previous one (it may also have been sent on its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher: Option<String>,
}

impl RequestBody {
    pub fn new(request: &SignedRequest, voucher: Option<&SignedVoucher>) -> RequestBody {
        RequestBody {
            request: to_hex(request),
            voucher: voucher.map(to_hex),
        }
    }

    /// Parses a body: JSON, then each object's canonical bytes.
    pub fn parse(body: &[u8]) -> Result<(SignedRequest, Option<SignedVoucher>), WireError> {
        let body: RequestBody =
            serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        let request = from_hex("request", &body.request)?;
        let voucher = body
            .voucher
            .as_deref()
            .map(|v| from_hex("voucher", v))
            .transpose()?;
        Ok((request, voucher))
    }
}

/// `POST /v1/sessions/{id}/vouchers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoucherBody {
    pub voucher: String,
}

impl VoucherBody {
    pub fn new(voucher: &SignedVoucher) -> VoucherBody {
        VoucherBody {
            voucher: to_hex(voucher),
        }
    }

    pub fn parse(body: &[u8]) -> Result<SignedVoucher, WireError> {
        let body: VoucherBody =
            serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        from_hex("voucher", &body.voucher)
    }
}

/// A receipt's fields for people and scripts (the signed hex is what counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptView {
    pub session: u64,
    pub seq: u64,
    pub input_hash: String,
    pub output_hash: String,
    pub trace_root: String,
    pub units: u64,
    pub price: Amount,
    pub provider: String,
    /// The input's tokens (a generation's prompt, an embedding's text) as the provider counted
    /// them: the signed receipt's `input_units`.
    #[serde(default)]
    pub input_units: u64,
}

impl ReceiptView {
    pub fn of(signed: &SignedReceipt) -> ReceiptView {
        let r: &Receipt = &signed.receipt;
        ReceiptView {
            session: r.session,
            seq: r.seq,
            input_hash: r.input_hash.to_hex(),
            output_hash: r.output_hash.to_hex(),
            trace_root: r.trace_root.to_hex(),
            units: r.units,
            price: r.price,
            provider: signed.signer.address().to_string(),
            input_units: r.input_units,
        }
    }
}

/// `GET /v1/sessions/{id}`: the provider's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    #[serde(flatten)]
    pub channel: crate::ProviderView,
    /// The latest signed receipt (hex), for a client that lost its connection before it.
    pub last_receipt: Option<String>,
}

/// A wire error body: `{"error": {"code", "message"}}` (HTTP errors) or an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
}

/// One server-sent event of a request's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Delta {
        text: String,
    },
    Embedding {
        vector: Vec<f32>,
    },
    Receipt {
        receipt: Box<SignedReceipt>,
        view: ReceiptView,
    },
    Error(ErrorView),
}

#[derive(Serialize, Deserialize)]
struct DeltaData {
    text: String,
}

#[derive(Serialize, Deserialize)]
struct EmbeddingData {
    vector: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct ReceiptData {
    receipt: String,
    view: ReceiptView,
}

impl Event {
    /// The receipt event of `receipt`.
    pub fn receipt(receipt: SignedReceipt) -> Event {
        Event::Receipt {
            view: ReceiptView::of(&receipt),
            receipt: Box::new(receipt),
        }
    }

    pub fn error(code: &str, message: impl std::fmt::Display) -> Event {
        Event::Error(ErrorView {
            code: code.into(),
            message: message.to_string(),
        })
    }

    /// The event as `event: NAME\ndata: JSON\n\n` (JSON has no raw newline).
    pub fn to_sse(&self) -> String {
        let (name, data) = match self {
            Event::Delta { text } => ("delta", json(&DeltaData { text: text.clone() })),
            Event::Embedding { vector } => (
                "embedding",
                json(&EmbeddingData {
                    vector: vector.clone(),
                }),
            ),
            Event::Receipt { receipt, view } => (
                "receipt",
                json(&ReceiptData {
                    receipt: to_hex(receipt.as_ref()),
                    view: view.clone(),
                }),
            ),
            Event::Error(error) => ("error", json(error)),
        };
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn parse(name: &str, data: &str) -> Result<Event, WireError> {
        let bad = |e: serde_json::Error| WireError::Json(e.to_string());
        Ok(match name {
            "delta" => Event::Delta {
                text: serde_json::from_str::<DeltaData>(data).map_err(bad)?.text,
            },
            "embedding" => Event::Embedding {
                vector: serde_json::from_str::<EmbeddingData>(data)
                    .map_err(bad)?
                    .vector,
            },
            "receipt" => {
                let data: ReceiptData = serde_json::from_str(data).map_err(bad)?;
                Event::Receipt {
                    receipt: Box::new(from_hex("receipt", &data.receipt)?),
                    view: data.view,
                }
            }
            "error" => Event::Error(serde_json::from_str(data).map_err(bad)?),
            other => {
                let mut name = other.to_string();
                name.truncate(64);
                return Err(WireError::UnknownEvent(name));
            }
        })
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Reads events from a byte stream in pieces of any size, holding at most
/// [`EVENT_BYTES_MAX`] of an unfinished event.
#[derive(Debug, Default)]
pub struct EventReader {
    buffer: Vec<u8>,
}

impl EventReader {
    pub fn new() -> EventReader {
        EventReader::default()
    }

    /// Adds `bytes` and returns every event they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, WireError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = find(&self.buffer, b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            if let Some(event) = parse_block(&block[..end])? {
                events.push(event);
            }
        }
        if self.buffer.len() > EVENT_BYTES_MAX {
            return Err(WireError::EventTooLarge {
                max: EVENT_BYTES_MAX,
            });
        }
        Ok(events)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One `event:`/`data:` block; comments and blocks without data are skipped.
fn parse_block(block: &[u8]) -> Result<Option<Event>, WireError> {
    if block.len() > EVENT_BYTES_MAX {
        return Err(WireError::EventTooLarge {
            max: EVENT_BYTES_MAX,
        });
    }
    let text = std::str::from_utf8(block).map_err(|e| WireError::Json(e.to_string()))?;
    let (mut name, mut data) = ("message", None::<String>);
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value)
                }
                None => data = Some(value.to_string()),
            }
        }
    }
    data.map(|data| Event::parse(name, &data)).transpose()
}

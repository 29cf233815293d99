//! x402 v2 on Piazza: paid HTTP endpoints and a facilitator.
//!
//! A paid route ([`require_payment`]) answers a request without payment `402` with a
//! `PAYMENT-REQUIRED` header (base64 of the JSON `PaymentRequired`: scheme `exact` on network
//! `piazza:<chain-id>`, the amount in base units of PZA, `payTo` a `pz1…` address). The client
//! signs a `bank::authorization::TransferAuthorization` and retries with `PAYMENT-SIGNATURE`
//! (base64 of the JSON `PaymentPayload`). The route **settles before serving**: the facilitator
//! submits `bank::Msg::SettleAuthorization` and waits for its receipt, then the handler runs
//! and the answer carries `PAYMENT-RESPONSE` (base64 of the `SettleResponse`, with the
//! settling transaction's hash). The ledger settles an authorization at most once; the
//! facilitator also remembers each settled authorization under an idempotency key (the hash of
//! the authorization), so a client that timed out and retries with the same payment is served
//! without a second settlement. The facilitator endpoints `POST /verify`, `POST /settle` and
//! `GET /supported` ([`facilitator_router`]) speak the same JSON.
//!
//! Piazza's `exact` payload: `{signature: hex(64), authorization: {from: hex(ed25519 public
//! key), to: pz1…, value, validAfter, validBefore (unix seconds, decimal strings), nonce:
//! hex(32)}}`; `from` is a public key rather than an address because ed25519 signatures do not
//! recover their signer.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use piazza_client::Client;
use piazza_ledger::agents;
use piazza_ledger::bank::{self, authorization::TransferAuthorization};
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, Hash, PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The protocol version spoken here.
pub const X402_VERSION: u64 = 2;
/// The only scheme: a signed transfer of exactly the asked amount.
pub const SCHEME: &str = "exact";
/// The asset named in requirements: the native token, in base units.
pub const ASSET: &str = "PZA";
pub const PAYMENT_REQUIRED: HeaderName = HeaderName::from_static("payment-required");
pub const PAYMENT_SIGNATURE: HeaderName = HeaderName::from_static("payment-signature");
pub const PAYMENT_RESPONSE: HeaderName = HeaderName::from_static("payment-response");
/// Longest `PAYMENT-SIGNATURE` header accepted, in bytes (a payload is well under 2 KiB).
pub const PAYMENT_HEADER_BYTES_MAX: usize = 8 * 1024;
/// Largest facilitator request body, in bytes.
pub const FACILITATOR_BODY_BYTES_MAX: usize = 16 * 1024;
/// Most settled authorizations remembered for idempotent retries; entries leave once their
/// `validBefore` has passed, and a full memory refuses new settlements rather than forget.
pub const SETTLED_REMEMBERED_MAX: usize = 10_000;
/// How long a settlement waits for its transaction's receipt.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The x402 network name of a Piazza chain.
pub fn network(chain_id: &str) -> String {
    format!("piazza:{chain_id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    pub network: String,
    /// Base units of PZA, as a decimal string.
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: ResourceInfo,
    pub accepts: Vec<PaymentRequirements>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationJson {
    pub from: String,
    pub to: String,
    pub value: String,
    pub valid_after: String,
    pub valid_before: String,
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactPayload {
    pub signature: String,
    pub authorization: AuthorizationJson,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    pub accepted: PaymentRequirements,
    pub payload: ExactPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    pub transaction: String,
    pub network: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// The body of `POST /verify` and `POST /settle`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    pub payment_payload: PaymentPayload,
    pub payment_requirements: PaymentRequirements,
}

impl ExactPayload {
    /// Signs `authorization` for `chain_id` with `key` (which must be `authorization.from`).
    pub fn sign(authorization: &TransferAuthorization, key: &SecretKey, chain_id: &str) -> Self {
        ExactPayload {
            signature: hex::encode(authorization.sign(key, chain_id).0),
            authorization: AuthorizationJson {
                from: authorization.from.to_hex(),
                to: authorization.to.to_string(),
                value: authorization.amount.base_units().to_string(),
                valid_after: authorization.valid_after.to_string(),
                valid_before: authorization.valid_before.to_string(),
                nonce: authorization.nonce.to_hex(),
            },
        }
    }

    /// The ledger's authorization and signature, or why the JSON does not hold one.
    pub fn parse(&self) -> Result<(TransferAuthorization, Signature), &'static str> {
        const INVALID: &str = "invalid_payload";
        let a = &self.authorization;
        let from: [u8; 32] = fixed_hex(&a.from).ok_or(INVALID)?;
        let signature: [u8; 64] = fixed_hex(&self.signature).ok_or(INVALID)?;
        let nonce: [u8; 32] = fixed_hex(&a.nonce).ok_or(INVALID)?;
        let authorization = TransferAuthorization {
            from: PublicKey(from),
            to: a.to.parse().map_err(|_| INVALID)?,
            amount: Amount::new(a.value.parse().map_err(|_| INVALID)?),
            valid_after: a.valid_after.parse().map_err(|_| INVALID)?,
            valid_before: a.valid_before.parse().map_err(|_| INVALID)?,
            nonce: Hash(nonce),
        };
        Ok((authorization, Signature(signature)))
    }
}

impl PaymentPayload {
    /// The payment of `amount` by `key` for `required`'s first offer (to its `payTo`), valid
    /// in the unix-second window `(valid_after, valid_before)`, under `nonce`. `None` when the
    /// offer is missing or its `payTo` is not an address.
    pub fn pay_first_offer(
        required: &PaymentRequired,
        key: &SecretKey,
        chain_id: &str,
        amount: Amount,
        window_s: (u64, u64),
        nonce: Hash,
    ) -> Option<Self> {
        let accepted = required.accepts.first()?;
        let authorization = TransferAuthorization {
            from: key.public_key(),
            to: accepted.pay_to.parse().ok()?,
            amount,
            valid_after: window_s.0,
            valid_before: window_s.1,
            nonce,
        };
        Some(PaymentPayload {
            x402_version: X402_VERSION,
            resource: Some(required.resource.clone()),
            accepted: accepted.clone(),
            payload: ExactPayload::sign(&authorization, key, chain_id),
        })
    }
}

/// How long a payment signed by [`pay_for`] stays valid, in seconds.
pub const CLIENT_PAYMENT_VALIDITY_S: u64 = 300;

/// A client's answer to a `402`: `required`'s first offer, checked to be Piazza's `exact`
/// scheme on `chain_id` and to ask at most `max_price`, paid by `key` (valid from a minute ago
/// for [`CLIENT_PAYMENT_VALIDITY_S`]; its nonce hashes the time with `nonce_seed`). The payment
/// and its amount, or why it is refused.
pub fn pay_for(
    required: &PaymentRequired,
    key: &SecretKey,
    chain_id: &str,
    max_price: Amount,
    nonce_seed: &[u8],
) -> Result<(PaymentPayload, Amount), String> {
    let accepted = required
        .accepts
        .first()
        .ok_or("the 402 accepts no payment")?;
    if accepted.scheme != SCHEME || accepted.network != network(chain_id) {
        return Err(format!(
            "the endpoint asks {} on {}; this chain is {}",
            accepted.scheme,
            accepted.network,
            network(chain_id)
        ));
    }
    let amount = Amount::new(
        accepted
            .amount
            .parse()
            .map_err(|_| format!("the asked amount `{}` is not a number", accepted.amount))?,
    );
    if amount > max_price {
        return Err(format!(
            "the endpoint asks {amount} PZA, more than the most this call pays ({max_price} PZA)"
        ));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let nonce = Hash::of("piazza/x402-nonce", &[&nanos.to_le_bytes(), nonce_seed]);
    let now = now_s();
    let window_s = (now.saturating_sub(60), now + CLIENT_PAYMENT_VALIDITY_S);
    let payment = PaymentPayload::pay_first_offer(required, key, chain_id, amount, window_s, nonce)
        .ok_or("the payee is not an address")?;
    Ok((payment, amount))
}

fn fixed_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    if text.len() != 2 * N {
        return None;
    }
    hex::decode(text).ok()?.try_into().ok()
}

/// Standard base64 (RFC 4648, padded) of the JSON of `value`.
pub fn encode_header<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).expect("x402 types serialize");
    crate::openai::base64(&json)
}

/// The JSON value in a standard base64 header, bounded by [`PAYMENT_HEADER_BYTES_MAX`].
pub fn decode_header<T: for<'de> Deserialize<'de>>(text: &str) -> Option<T> {
    if text.len() > PAYMENT_HEADER_BYTES_MAX {
        return None;
    }
    serde_json::from_slice(&base64_decode(text.trim())?).ok()
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (index, chunk) in bytes.chunks(4).enumerate() {
        let last = index + 1 == bytes.len() / 4;
        let padding = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut word = 0u32;
        for c in &chunk[..4 - padding] {
            word = (word << 6) | value(*c)?;
        }
        word <<= 6 * padding as u32;
        let decoded = [(word >> 16) as u8, (word >> 8) as u8, word as u8];
        out.extend_from_slice(&decoded[..3 - padding]);
    }
    Some(out)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a settlement submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// `bank::Msg::SettleAuthorization`: the amount moves, nothing else is recorded.
    Transfer,
    /// `agents::Msg::PaidCall`: the amount pays `agent`'s owner and the chain records a
    /// settled call for `request_hash`, which counts in the agent's reputation and which the
    /// payer may rate.
    AgentCall { agent: u64, request_hash: Hash },
}

/// Verifies and settles payments on one chain, submitting with its own key (which pays the
/// transaction fees).
pub struct Facilitator {
    client: Client,
    chain_id: String,
    submitter: SecretKey,
    settled: Mutex<Settled>,
    /// One submission at a time, so the submitter's nonces stay in order.
    submitting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Settled {
    /// Idempotency key → (the authorization's `valid_before`, what it settled, the answer).
    done: BTreeMap<Hash, (u64, Settlement, SettleResponse)>,
    in_flight: BTreeSet<Hash>,
}

/// A verified payment: the ledger's authorization and signature, and its payer.
struct Verified {
    authorization: TransferAuthorization,
    signature: Signature,
    payer: Address,
}

impl Facilitator {
    pub fn new(client: Client, chain_id: String, submitter: SecretKey) -> Self {
        Facilitator {
            client,
            chain_id,
            submitter,
            settled: Mutex::new(Settled::default()),
            submitting: tokio::sync::Mutex::new(()),
        }
    }

    pub fn network(&self) -> String {
        network(&self.chain_id)
    }

    /// Requirements for `amount` paid to `pay_to`.
    pub fn requirements(&self, amount: Amount, pay_to: Address) -> PaymentRequirements {
        PaymentRequirements {
            scheme: SCHEME.into(),
            network: self.network(),
            amount: amount.base_units().to_string(),
            asset: ASSET.into(),
            pay_to: pay_to.to_string(),
            max_timeout_seconds: SETTLE_TIMEOUT.as_secs(),
            extra: None,
        }
    }

    async fn check(
        &self,
        payment: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<Verified, String> {
        if payment.x402_version != X402_VERSION {
            return Err("invalid_x402_version".into());
        }
        if requirements.scheme != SCHEME || payment.accepted.scheme != SCHEME {
            return Err("unsupported_scheme".into());
        }
        if requirements.network != self.network() || payment.accepted.network != self.network() {
            return Err("invalid_network".into());
        }
        if payment.accepted != *requirements || requirements.asset != ASSET {
            return Err("invalid_payment_requirements".into());
        }
        let (authorization, signature) = payment.payload.parse()?;
        let payer = authorization.from.address();
        let reject = |reason: &str| Err(format!("invalid_exact_piazza_payload_{reason}"));
        if authorization.to.to_string() != requirements.pay_to {
            return reject("recipient_mismatch");
        }
        if authorization.amount.base_units().to_string() != requirements.amount {
            return reject("authorization_value");
        }
        if authorization.check_stateless().is_err() {
            return Err("invalid_payload".into());
        }
        let now = now_s();
        if now <= authorization.valid_after {
            return reject("authorization_valid_after");
        }
        if authorization.check_time(now).is_err() {
            return reject("authorization_valid_before");
        }
        if authorization.verify(&self.chain_id, &signature).is_err() {
            return reject("signature");
        }
        let account = self
            .client
            .account(&payer)
            .await
            .map_err(|_| "unexpected_verify_error".to_string())?;
        let balance: u128 = account
            .balance
            .parse()
            .map_err(|_| "unexpected_verify_error".to_string())?;
        if balance < authorization.amount.base_units() {
            return Err("insufficient_funds".into());
        }
        Ok(Verified {
            authorization,
            signature,
            payer,
        })
    }

    /// `POST /verify`: whether the payment would settle now.
    pub async fn verify(
        &self,
        payment: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> VerifyResponse {
        match self.check(payment, requirements).await {
            Ok(verified) => VerifyResponse {
                is_valid: true,
                invalid_reason: None,
                payer: Some(verified.payer.to_string()),
            },
            Err(reason) => VerifyResponse {
                is_valid: false,
                invalid_reason: Some(reason),
                payer: payment
                    .payload
                    .parse()
                    .ok()
                    .map(|(a, _)| a.from.address().to_string()),
            },
        }
    }

    fn failed(&self, reason: String, payer: Option<String>) -> SettleResponse {
        SettleResponse {
            success: false,
            error_reason: Some(reason),
            payer,
            transaction: String::new(),
            network: self.network(),
        }
    }

    /// `POST /settle`: settles the payment once, as a plain transfer. A payment already
    /// settled here answers its first settlement again (same transaction), without a second
    /// one.
    pub async fn settle(
        &self,
        payment: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> SettleResponse {
        self.settle_as(payment, requirements, Settlement::Transfer)
            .await
    }

    /// Settles the payment once, as `settlement` says (a transfer, or an agent's paid call
    /// recorded on chain); idempotent as [`Facilitator::settle`].
    pub async fn settle_as(
        &self,
        payment: &PaymentPayload,
        requirements: &PaymentRequirements,
        settlement: Settlement,
    ) -> SettleResponse {
        let key = match payment.payload.parse() {
            Ok((authorization, _)) => Hash::of(
                "piazza/x402-idempotency",
                &[&authorization.sign_bytes(&self.chain_id)],
            ),
            Err(reason) => return self.failed(reason.into(), None),
        };
        {
            let mut settled = self.settled.lock().expect("settled lock");
            if let Some((_, first, answer)) = settled.done.get(&key) {
                // A retry of the same request is answered the first settlement; the same
                // payment offered for another request (another agent call) is refused.
                if *first != settlement {
                    return self.failed("payment_already_used".into(), answer.payer.clone());
                }
                return answer.clone();
            }
            let now = now_s();
            settled
                .done
                .retain(|_, (valid_before, _, _)| *valid_before > now);
            if settled.done.len() + settled.in_flight.len() >= SETTLED_REMEMBERED_MAX {
                return self.failed("facilitator_busy".into(), None);
            }
            if !settled.in_flight.insert(key) {
                return self.failed("settlement_in_progress".into(), None);
            }
        }
        let answer = self.settle_new(payment, requirements, settlement).await;
        let mut settled = self.settled.lock().expect("settled lock");
        settled.in_flight.remove(&key);
        if let (true, Ok((authorization, _))) = (answer.success, payment.payload.parse()) {
            settled.done.insert(
                key,
                (authorization.valid_before, settlement, answer.clone()),
            );
        }
        answer
    }

    async fn settle_new(
        &self,
        payment: &PaymentPayload,
        requirements: &PaymentRequirements,
        settlement: Settlement,
    ) -> SettleResponse {
        let verified = match self.check(payment, requirements).await {
            Ok(verified) => verified,
            Err(reason) => {
                let payer = payment
                    .payload
                    .parse()
                    .ok()
                    .map(|(a, _)| a.from.address().to_string());
                return self.failed(reason, payer);
            }
        };
        let payer = Some(verified.payer.to_string());
        let message = match settlement {
            Settlement::Transfer => Message::Bank(bank::Msg::SettleAuthorization {
                authorization: verified.authorization,
                signature: verified.signature,
            }),
            Settlement::AgentCall {
                agent,
                request_hash,
            } => Message::Agents(agents::Msg::PaidCall {
                agent,
                request_hash,
                authorization: verified.authorization,
                signature: verified.signature,
            }),
        };
        let submitted = {
            let _turn = self.submitting.lock().await;
            self.client.send_message(&self.submitter, message).await
        };
        let hash = match submitted {
            Ok(hash) => hash,
            Err(e) => {
                let reason = e.ledger_error_name().unwrap_or("unexpected_settle_error");
                return self.failed(reason.to_string(), payer);
            }
        };
        match self.client.wait_for_receipt(&hash, SETTLE_TIMEOUT).await {
            Ok(receipt) if receipt.status == "ok" => SettleResponse {
                success: true,
                error_reason: None,
                payer,
                transaction: hash.to_hex(),
                network: self.network(),
            },
            Ok(_) => self.failed("invalid_transaction_state".into(), payer),
            Err(_) => self.failed("unexpected_settle_error".into(), payer),
        }
    }
}

/// The facilitator's endpoints: `POST /verify`, `POST /settle`, `GET /supported`.
pub fn facilitator_router(facilitator: Arc<Facilitator>) -> Router {
    Router::new()
        .route("/verify", post(verify_handler))
        .route("/settle", post(settle_handler))
        .route("/supported", get(supported_handler))
        .layer(DefaultBodyLimit::max(FACILITATOR_BODY_BYTES_MAX))
        .with_state(facilitator)
}

async fn verify_handler(
    State(facilitator): State<Arc<Facilitator>>,
    Json(request): Json<FacilitatorRequest>,
) -> Json<VerifyResponse> {
    Json(
        facilitator
            .verify(&request.payment_payload, &request.payment_requirements)
            .await,
    )
}

async fn settle_handler(
    State(facilitator): State<Arc<Facilitator>>,
    Json(request): Json<FacilitatorRequest>,
) -> Json<SettleResponse> {
    Json(
        facilitator
            .settle(&request.payment_payload, &request.payment_requirements)
            .await,
    )
}

async fn supported_handler(State(facilitator): State<Arc<Facilitator>>) -> Json<serde_json::Value> {
    let mut signers = serde_json::Map::new();
    signers.insert(
        facilitator.network(),
        serde_json::json!([facilitator.submitter.public_key().address().to_string()]),
    );
    Json(serde_json::json!({
        "kinds": [{"x402Version": X402_VERSION, "scheme": SCHEME, "network": facilitator.network()}],
        "extensions": [],
        "signers": signers,
    }))
}

/// A route's price: what [`require_payment`] asks before the handler runs.
pub struct PaidRoute {
    pub facilitator: Arc<Facilitator>,
    pub resource: ResourceInfo,
    pub requirements: PaymentRequirements,
    /// The agent whose paid calls these are (each settles as `agents::Msg::PaidCall` for the
    /// request's hash); `None` settles a plain transfer.
    pub agent: Option<u64>,
}

fn payment_required(route: &PaidRoute, error: &str) -> Response {
    let required = PaymentRequired {
        x402_version: X402_VERSION,
        error: Some(error.to_string()),
        resource: route.resource.clone(),
        accepts: vec![route.requirements.clone()],
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&encode_header(&required)) {
        headers.insert(PAYMENT_REQUIRED, value);
    }
    (StatusCode::PAYMENT_REQUIRED, headers, Json(required)).into_response()
}

/// Largest request body a paid agent route hashes into its call's `request_hash`, in bytes.
pub const PAID_REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// The hash an agent's paid call records: of the request's method, path and query, and body.
pub fn request_hash(method: &str, path_and_query: &str, body: &[u8]) -> Hash {
    Hash::of(
        "piazza/x402-request",
        &[method.as_bytes(), path_and_query.as_bytes(), body],
    )
}

/// Middleware for a paid route (`axum::middleware::from_fn_with_state`): a request without a
/// valid `PAYMENT-SIGNATURE` gets `402` and `PAYMENT-REQUIRED`; a valid one is settled first,
/// then served with `PAYMENT-RESPONSE`.
pub async fn require_payment(
    State(route): State<Arc<PaidRoute>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    charge(&route, request, next, None).await
}

/// Settles `request`'s payment for `route`, then runs it (with `serve_as` as its
/// `Authorization` when given).
async fn charge(
    route: &PaidRoute,
    request: Request<Body>,
    next: Next,
    serve_as: Option<&HeaderValue>,
) -> Response {
    let Some(header) = request.headers().get(&PAYMENT_SIGNATURE) else {
        return payment_required(route, "PAYMENT-SIGNATURE header is required");
    };
    let Some(payment) = header
        .to_str()
        .ok()
        .and_then(decode_header::<PaymentPayload>)
    else {
        return payment_required(route, "invalid_payload");
    };
    let (mut request, settlement) = match route.agent {
        None => (request, Settlement::Transfer),
        Some(agent) => {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, PAID_REQUEST_BYTES_MAX).await else {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a paid request's body is at most {PAID_REQUEST_BYTES_MAX} bytes"),
                )
                    .into_response();
            };
            let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
            let request_hash = request_hash(parts.method.as_str(), path, &bytes);
            (
                Request::from_parts(parts, Body::from(bytes)),
                Settlement::AgentCall {
                    agent,
                    request_hash,
                },
            )
        }
    };
    let settled = route
        .facilitator
        .settle_as(&payment, &route.requirements, settlement)
        .await;
    if !settled.success {
        let reason = settled
            .error_reason
            .as_deref()
            .unwrap_or("settlement failed");
        return payment_required(route, reason);
    }
    if let Some(value) = serve_as {
        request
            .headers_mut()
            .insert(axum::http::header::AUTHORIZATION, value.clone());
    }
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&encode_header(&settled)) {
        response.headers_mut().insert(PAYMENT_RESPONSE, value);
    }
    response
}

/// What `piazza gateway run --x402-*` charges for: off unless configured.
#[derive(Clone)]
pub struct PaywallConfig {
    /// Paths (exact) that a request without an API key pays for, one payment per request.
    pub routes: Vec<String>,
    /// The agent (by name) whose paid calls these are: paid to its owner, at least its price,
    /// each recorded on chain so its payer can rate it. `None`: plain transfers to `pay_to`.
    pub agent: Option<String>,
    /// Asked per request; without it, the agent's own price.
    pub price: Option<Amount>,
    /// The payee; with an agent it must be the agent's owner (the default).
    pub pay_to: Option<Address>,
    /// Submits the settlements and pays their fees.
    pub submitter: SecretKey,
    /// The API key (of this gateway) a paid request is served with: its paying key pays the
    /// network for the work, within the key's spend limit.
    pub api_key: String,
}

impl std::fmt::Debug for PaywallConfig {
    /// Names the submitter by address and hides the API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaywallConfig")
            .field("routes", &self.routes)
            .field("agent", &self.agent)
            .field("price", &self.price)
            .field("pay_to", &self.pay_to)
            .field("submitter", &self.submitter.public_key().address())
            .finish_non_exhaustive()
    }
}

/// A gateway's paid routes ([`paywall`]), built from a [`PaywallConfig`] against the chain.
pub struct Paywall {
    routes: BTreeMap<String, Arc<PaidRoute>>,
    serve_as: HeaderValue,
}

/// Most paths one paywall charges for.
pub const PAID_ROUTES_MAX: usize = 32;

impl Paywall {
    /// Reads the chain id and the named agent's record from the node; refuses a price below
    /// the agent's or a payee other than its owner.
    pub async fn new(config: PaywallConfig, client: Client) -> Result<Paywall, String> {
        if config.routes.is_empty() || config.routes.len() > PAID_ROUTES_MAX {
            return Err(format!(
                "a paywall charges for 1..={PAID_ROUTES_MAX} routes"
            ));
        }
        if let Some(route) = config.routes.iter().find(|r| !r.starts_with('/')) {
            return Err(format!(
                "a paid route is a path starting with `/`, not `{route}`"
            ));
        }
        let serve_as = HeaderValue::from_str(&format!("Bearer {}", config.api_key))
            .map_err(|_| "the paywall's API key is not a header value".to_string())?;
        let chain_id = client
            .status()
            .await
            .map_err(|e| format!("the node: {e}"))?
            .chain_id;
        let (agent, pay_to, price, description) = match &config.agent {
            Some(name) => {
                let record = client
                    .agent_by_name(name)
                    .await
                    .map_err(|e| format!("the node: {e}"))?;
                let fields = (
                    record["id"].as_u64(),
                    record["owner"]
                        .as_str()
                        .and_then(|o| o.parse::<Address>().ok()),
                    record["price"]
                        .as_str()
                        .and_then(|p| p.parse::<u128>().ok()),
                );
                let (Some(id), Some(owner), Some(asked)) = fields else {
                    return Err(format!("no agent `{name}` on chain {chain_id}"));
                };
                if record["active"] != serde_json::Value::Bool(true) {
                    return Err(format!("agent `{name}` is deactivated"));
                }
                if config.pay_to.is_some_and(|to| to != owner) {
                    return Err(format!("agent `{name}` is paid to its owner {owner}"));
                }
                let price = config.price.unwrap_or(Amount::new(asked));
                if price.base_units() < asked {
                    return Err(format!(
                        "agent `{name}` asks at least {} PZA a call",
                        Amount::new(asked)
                    ));
                }
                let description = record["description"].as_str().unwrap_or("").to_string();
                (Some(id), owner, price, format!("{name}: {description}"))
            }
            None => {
                let pay_to = config
                    .pay_to
                    .ok_or("a paywall without an agent needs a payee")?;
                let price = config
                    .price
                    .ok_or("a paywall without an agent needs a price")?;
                (None, pay_to, price, "a paid route".to_string())
            }
        };
        if price.is_zero() {
            return Err("a paid route asks a positive price".into());
        }
        let facilitator = Arc::new(Facilitator::new(client, chain_id, config.submitter));
        let routes = config
            .routes
            .iter()
            .map(|path| {
                let route = PaidRoute {
                    facilitator: facilitator.clone(),
                    resource: ResourceInfo {
                        url: path.clone(),
                        description: Some(description.clone()),
                        mime_type: Some("application/json".into()),
                    },
                    requirements: facilitator.requirements(price, pay_to),
                    agent,
                };
                (path.clone(), Arc::new(route))
            })
            .collect();
        Ok(Paywall { routes, serve_as })
    }

    /// The requirements of a paid path, if it is one.
    pub fn requirements(&self, path: &str) -> Option<&PaymentRequirements> {
        self.routes.get(path).map(|route| &route.requirements)
    }
}

/// The gateway's paywall middleware: a request for a paid path that carries no API key pays
/// with x402 ([`require_payment`]) and is then served with the paywall's own API key; every
/// other request passes untouched.
pub async fn paywall(
    State(paywall): State<Arc<Paywall>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let route = paywall.routes.get(request.uri().path()).cloned();
    match route {
        Some(route)
            if !request
                .headers()
                .contains_key(axum::http::header::AUTHORIZATION) =>
        {
            charge(&route, request, next, Some(&paywall.serve_as)).await
        }
        _ => next.run(request).await,
    }
}

/// Mounts `paywall` over `app` (the gateway's router) when one is configured.
pub fn mount(app: Router, paywall: Option<Arc<Paywall>>) -> Router {
    match paywall {
        Some(paywall) => app.layer(axum::middleware::from_fn_with_state(paywall, self::paywall)),
        None => app,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_malformed_text() {
        for input in ["", "f", "fo", "foo", "foob", "fooba", "foobar", "{\"a\":1}"] {
            let encoded = crate::openai::base64(input.as_bytes());
            assert_eq!(base64_decode(&encoded).unwrap(), input.as_bytes());
        }
        for bad in ["Zg", "Zm9v=", "Zg==Zg==", "Z===", "Zm9*"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
        assert!(
            decode_header::<PaymentPayload>(&"A".repeat(PAYMENT_HEADER_BYTES_MAX + 4)).is_none()
        );
    }

    #[test]
    fn a_payload_parses_back_to_the_signed_authorization() {
        let key = SecretKey::from_seed([4; 32]);
        let authorization = TransferAuthorization {
            from: key.public_key(),
            to: Address([9; 20]),
            amount: Amount::new(12_345),
            valid_after: 10,
            valid_before: 100,
            nonce: Hash([7; 32]),
        };
        let payload = ExactPayload::sign(&authorization, &key, "c");
        let (parsed, signature) = payload.parse().unwrap();
        assert_eq!(parsed, authorization);
        assert!(parsed.verify("c", &signature).is_ok());
        let mut short = payload.clone();
        short.signature.pop();
        assert_eq!(short.parse().unwrap_err(), "invalid_payload");
    }
}

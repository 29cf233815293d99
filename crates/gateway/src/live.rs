//! One OpenAI request over a session: the request's worst case (its asks at the session's
//! price and the fees of the session transactions it may send) reserved against the API key
//! before anything is sent, a session leased from [`crate::sessions`], then the requests sent
//! through [`piazza_client::session::SessionClient`] in a task of its own that relays each
//! piece of text as it arrives and charges the receipts' prices and the fees its session
//! transactions paid, as a job is charged its price and fee. A client that hangs up
//! mid-answer is still charged for what its receipts price, and the reservation is given back
//! on every path.

use crate::errors::ApiError;
use crate::market::Model;
use crate::server::{Caller, Gateway};
use crate::sessions::{FeeBudget, Need};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use piazza_client::session::Answer;
use piazza_ledger::job::JobParams;
use piazza_ledger::sessions::{Msg, SignedReceipt};
use piazza_ledger::tx::Message;
use piazza_primitives::Amount;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// One request of a session: input, parameters and the units it may use.
pub(crate) struct Ask {
    pub input: Vec<u8>,
    pub params: JobParams,
    pub max_units: u64,
}

/// Requests under way over a session: the text as it arrives, then the answers in order.
pub(crate) struct Underway {
    /// Pieces of text as the provider streams them. Unbounded, but bounded in total: the
    /// session client reads at most `ANSWER_BYTES_MAX` per answer.
    pub deltas: mpsc::UnboundedReceiver<String>,
    pub answers: oneshot::Receiver<Result<Vec<Answer>, ApiError>>,
    pub session: u64,
    /// The sequence number of the (first) request.
    pub seq: u64,
}

impl Underway {
    /// Every answer, once all are in (the deltas are not read).
    pub(crate) async fn finish(self) -> Result<Vec<Answer>, ApiError> {
        self.answers
            .await
            .map_err(|_| ApiError::internal("the session task ended without an answer"))?
    }
}

/// Starts `asks` over one of the key's sessions for `model`; gives the caller back when no
/// provider serves the model's sessions (the request is then run as jobs).
pub(crate) async fn start(
    gw: &Arc<Gateway>,
    caller: Caller,
    model: &Model,
    price_per_unit: Amount,
    asks: Vec<Ask>,
) -> Result<Result<Underway, Caller>, ApiError> {
    if !model.session_endpoint {
        return Ok(Err(caller));
    }
    let overflow = || ApiError::invalid(None, "the request's price overflows");
    let mut worst_case = Amount::ZERO;
    let mut worst_one = Amount::ZERO;
    for ask in &asks {
        let worst = price_per_unit
            .checked_mul(u128::from(ask.max_units))
            .ok_or_else(overflow)?;
        worst_one = worst_one.max(worst);
        worst_case = worst_case.checked_add(worst).ok_or_else(overflow)?;
    }
    let signer = gw.signer(&caller.key.signer).await?;
    let fee_of = |message: Msg| gw.market.message_fee(Message::Sessions(message));
    let open_fee = fee_of(Msg::Open {
        model: model.info.name.clone(),
        owner_key: signer.key().public_key(),
        authorised: None,
        deposit: Amount::ZERO,
        max_price_per_unit: price_per_unit,
        expiry_blocks: gw.limits.session_expiry_blocks,
    })?;
    let close_fee = fee_of(Msg::Close { session: 0 })?;
    let need = Need {
        signer_name: &caller.key.signer,
        signer: &signer,
        model: &model.info.name,
        max_price_per_unit: price_per_unit,
        worst_case: worst_one,
        wait: gw.limits.queue_wait,
        deposit_requests: gw.limits.session_deposit_requests,
        expiry_blocks: gw.limits.session_expiry_blocks,
        open_fee,
        close_fee,
    };
    // Refused here, before any transaction or request is sent, when the key cannot cover it.
    let fee_reserve = need.fee_reserve().ok_or_else(overflow)?;
    let held = gw.reserve(
        &caller.key,
        worst_case.checked_add(fee_reserve).ok_or_else(overflow)?,
    )?;
    let mut budget = FeeBudget::new(fee_reserve);
    let leased = gw
        .sessions
        .lease(&gw.market, &need, model.session_endpoint, &mut budget)
        .await;
    let mut lease = match leased {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            // The job path reserves for itself; what a session attempt paid is charged.
            held.settle(budget.paid());
            return Ok(Err(caller));
        }
        Err(e) => {
            held.settle(budget.paid());
            return Err(e);
        }
    };
    let session = lease.live().id();
    let seq = lease.live().client.channel().next_seq();
    let (delta_out, deltas) = mpsc::unbounded_channel();
    let (answer, answers) = oneshot::channel();
    let gw = gw.clone();
    tokio::spawn(async move {
        let _slot = caller.slot;
        let (mut done, mut charged) = (Vec::with_capacity(asks.len()), Amount::ZERO);
        let mut failure = None;
        for ask in asks {
            let sent = lease
                .live()
                .client
                .request(ask.input, ask.params, ask.max_units, |piece| {
                    // The reader may be gone; the answer is still completed and charged.
                    let _ = delta_out.send(piece.to_string());
                })
                .await;
            match sent {
                Ok(a) => {
                    charged = charged
                        .checked_add(a.receipt.receipt.price)
                        .unwrap_or(charged);
                    done.push(a);
                }
                Err(e) if e.code() == Some("busy") => {
                    // Refused before it ran: the session stays good for the next request.
                    failure = Some((false, ApiError::busy(format!("session {session}: {e}"))));
                    break;
                }
                Err(e) => {
                    failure = Some((true, ApiError::upstream(format!("session {session}: {e}"))));
                    break;
                }
            }
        }
        let broken = failure.as_ref().is_some_and(|(broken, _)| *broken);
        // The session goes back before the answer does, so the client's next request finds
        // it idle (one that failed while it ran is retired, and closed below).
        let retired = if broken {
            lease.retire()
        } else {
            drop(lease);
            None
        };
        let _ = answer.send(match failure {
            None => Ok(done),
            Some((_, e)) => Err(e),
        });
        // Off the answer's path: a retired session is closed, then the charge is written
        // (until then the reservation holds at least as much against the limit).
        if let Some(id) = retired {
            gw.sessions
                .close(&gw.market, &signer, id, &mut budget)
                .await;
        }
        held.settle(charged.checked_add(budget.paid()).unwrap_or(charged));
    });
    Ok(Ok(Underway {
        deltas,
        answers,
        session,
        seq,
    }))
}

/// A session receipt as JSON: its fields, and the signed receipt as hex of its canonical
/// bytes (what a challenge on chain carries).
pub(crate) fn receipt_json(receipt: &SignedReceipt) -> Value {
    let r = &receipt.receipt;
    json!({
        "session": r.session,
        "seq": r.seq,
        "provider": receipt.signer.address().to_string(),
        "trace_root": r.trace_root.to_hex(),
        "input_hash": r.input_hash.to_hex(),
        "output_hash": r.output_hash.to_hex(),
        "units": r.units,
        "price": r.price.base_units().to_string(),
        "receipt": piazza_session::wire::to_hex(receipt),
    })
}

pub(crate) fn receipts_json(answers: &[Answer]) -> Value {
    Value::Array(answers.iter().map(|a| receipt_json(&a.receipt)).collect())
}

/// The receipts in `x-piazza-receipt` (hex of each signed receipt), `x-piazza-session`,
/// `x-piazza-provider` and `x-piazza-trace-root`: comma-separated, in request order.
pub(crate) fn receipt_headers(answers: &[Answer]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let join = |f: &dyn Fn(&SignedReceipt) -> String| {
        answers
            .iter()
            .map(|a| f(&a.receipt))
            .collect::<Vec<_>>()
            .join(",")
    };
    for (name, value) in [
        (
            "x-piazza-receipt",
            join(&|r| piazza_session::wire::to_hex(r)),
        ),
        ("x-piazza-session", join(&|r| r.receipt.session.to_string())),
        (
            "x-piazza-provider",
            join(&|r| r.signer.address().to_string()),
        ),
        (
            "x-piazza-trace-root",
            join(&|r| r.receipt.trace_root.to_hex()),
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

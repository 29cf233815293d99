//! Transfer authorizations (the `exact` scheme of x402 on Piazza): `from` signs
//! `{from, to, amount, valid_after, valid_before, nonce}` off chain; any account submits it in
//! `bank::Msg::SettleAuthorization` and the ledger moves the amount once.
//!
//! Validity is in unix seconds, as x402 states it: an authorization settles only in a block
//! whose time `t` (the header's `time_ms / 1000`) has `valid_after < t < valid_before`, and at
//! most [`AUTHORIZATION_LIFETIME_MAX_S`] before `valid_before`, so no authorization stays open
//! for long. Each settled nonce is kept in `from`'s bounded list until its `valid_before` has
//! passed (it can never settle again after that); the list is pruned whenever `from` settles
//! another, and a full list refuses (`queue_full`) rather than forgetting a live nonce.
//!
//! The signature covers a domain tag, the chain id and the canonical bytes, so an
//! authorization for one chain never settles on another.

use super::{state_key, transfer};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::TxContext;
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash, PublicKey, SecretKey, Signature};

/// The longest an authorization may still be open when it settles, in seconds (a day).
pub const AUTHORIZATION_LIFETIME_MAX_S: u64 = 24 * 60 * 60;
/// Most settled nonces one account keeps whose `valid_before` has not passed.
pub const AUTHORIZATION_NONCES_MAX: usize = 256;

const SIGN_DOMAIN: &[u8] = b"piazza/transfer-authorization/v1\0";

/// What `from` signs to let anyone move `amount` to `to`, once, inside its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferAuthorization {
    pub from: PublicKey,
    pub to: Address,
    pub amount: Amount,
    /// Unix seconds: settles only in a block strictly after it.
    pub valid_after: u64,
    /// Unix seconds: settles only in a block strictly before it.
    pub valid_before: u64,
    /// Chosen by `from`; each settles at most once.
    pub nonce: Hash,
}

impl Encode for TransferAuthorization {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.from);
        w.value(&self.to);
        w.value(&self.amount);
        w.u64(self.valid_after);
        w.u64(self.valid_before);
        w.value(&self.nonce);
    }
}

impl Decode for TransferAuthorization {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(TransferAuthorization {
            from: r.value()?,
            to: r.value()?,
            amount: r.value()?,
            valid_after: r.u64()?,
            valid_before: r.u64()?,
            nonce: r.value()?,
        })
    }
}

impl TransferAuthorization {
    /// The bytes `from` signs for `chain_id`.
    pub fn sign_bytes(&self, chain_id: &str) -> Vec<u8> {
        let mut w = Writer::new();
        w.str(chain_id);
        w.value(self);
        let mut bytes = SIGN_DOMAIN.to_vec();
        bytes.extend_from_slice(&w.into_bytes());
        bytes
    }

    pub fn sign(&self, key: &SecretKey, chain_id: &str) -> Signature {
        key.sign(&self.sign_bytes(chain_id))
    }

    pub fn verify(&self, chain_id: &str, signature: &Signature) -> Result<(), TxError> {
        self.from
            .verify(&self.sign_bytes(chain_id), signature)
            .map_err(|e| refused(format!("the authorization's signature: {e}")))
    }

    /// Rules that need no state: a signer key not of small order, a positive amount, a window
    /// that is not empty and not longer than [`AUTHORIZATION_LIFETIME_MAX_S`].
    pub fn check_stateless(&self) -> Result<(), TxError> {
        crate::error::refuse_small_order(&self.from, "an authorization's signer")?;
        if self.amount.is_zero() {
            return Err(TxError::new(
                ErrorCode::InvalidMessage,
                "an authorization needs a positive amount",
            ));
        }
        if self.valid_before <= self.valid_after.saturating_add(1) {
            return Err(TxError::new(
                ErrorCode::InvalidMessage,
                "an authorization's validity window is empty",
            ));
        }
        Ok(())
    }

    /// Whether it may settle at block time `now_s` (seconds): inside its window and not open
    /// for longer than the lifetime bound.
    pub fn check_time(&self, now_s: u64) -> Result<(), TxError> {
        if now_s <= self.valid_after {
            return Err(refused(format!(
                "the authorization is valid after {}, the block time is {now_s}",
                self.valid_after
            )));
        }
        if now_s >= self.valid_before {
            return Err(refused(format!(
                "the authorization expired at {}, the block time is {now_s}",
                self.valid_before
            )));
        }
        if self.valid_before - now_s > AUTHORIZATION_LIFETIME_MAX_S {
            return Err(refused(format!(
                "the authorization stays valid until {}, more than {AUTHORIZATION_LIFETIME_MAX_S} s after the block time {now_s}",
                self.valid_before
            )));
        }
        Ok(())
    }
}

fn refused(message: String) -> TxError {
    TxError::new(ErrorCode::AuthorizationRefused, message)
}

/// A settled nonce and the time after which it can be forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UsedNonce {
    nonce: Hash,
    valid_before: u64,
}

impl Encode for UsedNonce {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.nonce);
        w.u64(self.valid_before);
    }
}

impl Decode for UsedNonce {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(UsedNonce {
            nonce: r.value()?,
            valid_before: r.u64()?,
        })
    }
}

struct UsedNonces(Vec<UsedNonce>);

impl Encode for UsedNonces {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.0)
    }
}

impl Decode for UsedNonces {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(UsedNonces(r.seq(AUTHORIZATION_NONCES_MAX)?))
    }
}

/// The nonces `from` settled that could still be inside their validity at `now_s`.
fn live_nonces(state: &StateDelta<'_>, from: &Address, now_s: u64) -> Vec<UsedNonce> {
    let mut used = state
        .get::<UsedNonces>(&state_key::authorization_nonces(from))
        .map(|list| list.0)
        .unwrap_or_default();
    used.retain(|entry| entry.valid_before > now_s);
    used
}

/// Whether `nonce` of `from` has settled and may not settle again.
pub fn nonce_used(state: &StateDelta<'_>, from: &Address, nonce: &Hash, now_s: u64) -> bool {
    live_nonces(state, from, now_s)
        .iter()
        .any(|entry| entry.nonce == *nonce)
}

pub(super) fn fee_units() -> u64 {
    // A signature verification on top of a transfer.
    60
}

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    authorization: &TransferAuthorization,
    signature: &Signature,
) -> Result<(), TxError> {
    let now_s = ctx.block.time_ms / 1000;
    authorization.check_time(now_s)?;
    authorization.verify(&ctx.block.chain_id, signature)?;
    let from = authorization.from.address();
    let live = live_nonces(state, &from, now_s);
    if live.iter().any(|entry| entry.nonce == authorization.nonce) {
        return Err(refused(format!(
            "authorization nonce {} of {from} has settled",
            authorization.nonce
        )));
    }
    if live.len() >= AUTHORIZATION_NONCES_MAX {
        return Err(TxError::new(
            ErrorCode::QueueFull,
            format!(
                "{from} has {AUTHORIZATION_NONCES_MAX} settled authorizations still inside their validity"
            ),
        ));
    }
    Ok(())
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    authorization: &TransferAuthorization,
) -> Result<(), TxError> {
    let now_s = ctx.block.time_ms / 1000;
    let from = authorization.from.address();
    let mut live = live_nonces(state, &from, now_s);
    live.push(UsedNonce {
        nonce: authorization.nonce,
        valid_before: authorization.valid_before,
    });
    state.put(state_key::authorization_nonces(&from), &UsedNonces(live));
    transfer(state, &from, &authorization.to, authorization.amount)?;
    ctx.emit(Event::new(
        "bank.authorization_settled",
        &[
            ("from", from.to_string()),
            ("to", authorization.to.to_string()),
            ("amount", authorization.amount.base_units().to_string()),
            ("nonce", authorization.nonce.to_hex()),
            ("submitter", ctx.sender.to_string()),
        ],
    ));
    Ok(())
}

//! `grants`: scoped session keys (DESIGN.md §7). An owner grants an ed25519 key a [`Scope`]:
//! the message kinds it may send, a per-message amount limit, the recipients and agents it may
//! pay, a total spend cap (fees included), a rate (messages per a number of blocks) and an
//! expiry height. A transaction signed by that key names the owner as its sender
//! (`tx::SignedTransaction::sign_as_grantee`) and acts for the owner's account only within the
//! grant: the executor checks it at admission and before and after execution
//! ([`check`], [`record`]). `Revoke` deletes the grant, so the next transaction signed by the key
//! is refused, even in the same block.
//!
//! Invariants: a grant is only ever written by its owner's own signature (a grantee can never
//! send a `grants` message); `spent` never exceeds `spend_cap`; the messages counted in the
//! current rate window never exceed `messages_max`.

mod scope;
pub mod state_key;

pub use scope::{MessageKind, Party, Rate, Scope, Use};

use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::{GenesisError, Module, TxContext};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, PublicKey};

/// Most live grants one owner may hold (a further `Grant` to a new key is refused).
pub const GRANTS_PER_OWNER_MAX: u32 = 64;
/// The module tag `tx::Message` gives this module's messages; a grantee may never send them.
pub const MODULE_TAG: u8 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Grants (or replaces, with fresh counters) `grantee`'s scope over the sender's account.
    Grant { grantee: PublicKey, scope: Scope },
    /// Deletes the grant: from the next transaction on, `grantee` cannot act for the sender.
    Revoke { grantee: PublicKey },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::Grant { grantee, scope } => {
                w.u8(0);
                w.value(grantee);
                w.value(scope);
            }
            Msg::Revoke { grantee } => {
                w.u8(1);
                w.value(grantee);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Msg::Grant {
                grantee: r.value()?,
                scope: r.value()?,
            }),
            1 => Ok(Msg::Revoke {
                grantee: r.value()?,
            }),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "grants message",
            }),
        }
    }
}

/// A live grant: its scope and what the grantee has used of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub scope: Scope,
    /// Fees and outflows charged so far, never above `scope.spend_cap`.
    pub spent: Amount,
    /// First height of the current rate window.
    pub window_start: u64,
    /// Messages sent in the current rate window.
    pub window_messages: u32,
}

impl Encode for Grant {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.scope);
        w.value(&self.spent);
        w.u64(self.window_start);
        w.u32(self.window_messages);
    }
}

impl Decode for Grant {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Grant {
            scope: r.value()?,
            spent: r.value()?,
            window_start: r.u64()?,
            window_messages: r.u32()?,
        })
    }
}

impl Grant {
    /// The messages already counted in the window that contains `height`.
    fn messages_in_window(&self, height: u64) -> u32 {
        if height >= self.window_start.saturating_add(self.scope.rate.per_blocks) {
            0
        } else {
            self.window_messages
        }
    }
}

pub fn grant(state: &StateDelta<'_>, owner: &Address, grantee: &PublicKey) -> Option<Grant> {
    state.get(&state_key::grant(owner, grantee))
}

fn refused(message: String) -> TxError {
    TxError::new(ErrorCode::GrantRefused, message)
}

fn exceeded(message: String) -> TxError {
    TxError::new(ErrorCode::GrantExceeded, message)
}

/// Whether `grantee` may send, for `owner` at `height`, messages used as `uses` with `fee`: the
/// grant is live and not expired, every use is of an allowed kind, within the per-message
/// amount and to an allowed recipient or agent, the rate window has room for every message,
/// and the cap covers the fee and the uses' amounts.
pub fn check(
    state: &StateDelta<'_>,
    owner: &Address,
    grantee: &PublicKey,
    height: u64,
    uses: &[Use],
    fee: Amount,
) -> Result<Grant, TxError> {
    let grant = grant(state, owner, grantee)
        .ok_or_else(|| refused(format!("{grantee} holds no grant from {owner}")))?;
    let scope = &grant.scope;
    if height >= scope.expiry_height {
        return Err(refused(format!(
            "the grant of {grantee} expired at height {}",
            scope.expiry_height
        )));
    }
    let mut total = fee;
    for one in uses {
        scope.allows(one)?;
        total = total
            .checked_add(one.amount)
            .ok_or_else(|| exceeded("amounts overflow".into()))?;
    }
    let messages = u32::try_from(uses.len()).unwrap_or(u32::MAX);
    let used = grant.messages_in_window(height);
    if used.saturating_add(messages) > scope.rate.messages_max {
        return Err(exceeded(format!(
            "the grant allows {} messages per {} blocks; {used} are used",
            scope.rate.messages_max, scope.rate.per_blocks
        )));
    }
    charge_within_cap(&grant, total)?;
    Ok(grant)
}

fn charge_within_cap(grant: &Grant, amount: Amount) -> Result<Amount, TxError> {
    grant
        .spent
        .checked_add(amount)
        .filter(|spent| *spent <= grant.scope.spend_cap)
        .ok_or_else(|| {
            exceeded(format!(
                "the grant's cap is {} PZA, {} PZA is spent, this needs {amount} PZA",
                grant.scope.spend_cap, grant.spent
            ))
        })
}

/// Counts `messages` sent at `height` and `amount` spent against the grant. Refuses (and
/// changes nothing) when the cap cannot cover `amount`.
pub fn record(
    state: &mut StateDelta<'_>,
    owner: &Address,
    grantee: &PublicKey,
    height: u64,
    messages: u32,
    amount: Amount,
) -> Result<(), TxError> {
    let mut grant = grant(state, owner, grantee)
        .ok_or_else(|| refused(format!("{grantee} holds no grant from {owner}")))?;
    grant.spent = charge_within_cap(&grant, amount)?;
    if height
        >= grant
            .window_start
            .saturating_add(grant.scope.rate.per_blocks)
    {
        grant.window_start = height;
        grant.window_messages = 0;
    }
    grant.window_messages = grant.window_messages.saturating_add(messages);
    state.put(state_key::grant(owner, grantee), &grant);
    Ok(())
}

/// Checks an amount one message moved out of the owner's account against the per-message
/// limit (the executor measures it after the message ran).
pub fn check_message_amount(scope: &Scope, amount: Amount) -> Result<(), TxError> {
    if amount > scope.amount_per_message_max {
        return Err(exceeded(format!(
            "a message moved {amount} PZA; the grant allows {} PZA per message",
            scope.amount_per_message_max
        )));
    }
    Ok(())
}

fn grant_count(state: &StateDelta<'_>, owner: &Address) -> u32 {
    state.get(&state_key::count(owner)).unwrap_or(0)
}

fn set_grant_count(state: &mut StateDelta<'_>, owner: &Address, count: u32) {
    if count == 0 {
        state.delete(state_key::count(owner));
    } else {
        state.put(state_key::count(owner), &count);
    }
}

pub struct Grants;

impl Module for Grants {
    type Msg = Msg;
    type Genesis = ();
    const NAME: &'static str = "grants";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::Grant { scope, .. } => {
                50 + 2 * (scope.kinds.len() + scope.recipients_len() + scope.agents_len()) as u64
            }
            Msg::Revoke { .. } => 20,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::Grant { grantee, scope } => {
                crate::error::refuse_small_order(grantee, "a grantee's key")?;
                scope.validate()
            }
            Msg::Revoke { .. } => Ok(()),
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Grant { grantee, scope } => {
                if scope.expiry_height <= ctx.block.height {
                    return Err(TxError::new(
                        ErrorCode::InvalidMessage,
                        format!(
                            "the grant would expire at {}, the chain is at {}",
                            scope.expiry_height, ctx.block.height
                        ),
                    ));
                }
                let replaces = grant(state, &ctx.sender, grantee).is_some();
                if !replaces && grant_count(state, &ctx.sender) >= GRANTS_PER_OWNER_MAX {
                    return Err(TxError::new(
                        ErrorCode::QueueFull,
                        format!("an account may hold at most {GRANTS_PER_OWNER_MAX} grants"),
                    ));
                }
                Ok(())
            }
            Msg::Revoke { grantee } => match grant(state, &ctx.sender, grantee) {
                Some(_) => Ok(()),
                None => Err(refused(format!(
                    "{grantee} holds no grant from {}",
                    ctx.sender
                ))),
            },
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        let owner = ctx.sender;
        match msg {
            Msg::Grant { grantee, scope } => {
                if grant(state, &owner, grantee).is_none() {
                    let count = grant_count(state, &owner) + 1;
                    set_grant_count(state, &owner, count);
                }
                let record = Grant {
                    scope: scope.clone(),
                    spent: Amount::ZERO,
                    window_start: ctx.block.height,
                    window_messages: 0,
                };
                state.put(state_key::grant(&owner, grantee), &record);
                ctx.emit(Event::new(
                    "grants.granted",
                    &[
                        ("owner", owner.to_string()),
                        ("grantee", grantee.to_hex()),
                        ("spend_cap", scope.spend_cap.base_units().to_string()),
                        ("expiry_height", scope.expiry_height.to_string()),
                    ],
                ));
            }
            Msg::Revoke { grantee } => {
                state.delete(state_key::grant(&owner, grantee));
                let count = grant_count(state, &owner).saturating_sub(1);
                set_grant_count(state, &owner, count);
                ctx.emit(Event::new(
                    "grants.revoked",
                    &[("owner", owner.to_string()), ("grantee", grantee.to_hex())],
                ));
            }
        }
        Ok(())
    }

    fn init_chain(_state: &mut StateDelta<'_>, _genesis: &()) -> Result<(), GenesisError> {
        Ok(())
    }
}

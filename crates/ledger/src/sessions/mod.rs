//! `sessions`: interactive serving settled on chain (DESIGN.md §3.1). A client escrows a
//! deposit for a model; a later block's randomness assigns a provider (compute's choice);
//! requests, receipts and vouchers travel off chain ([`types`]); the provider commits the
//! root of its receipts with the latest cumulative voucher, and the voucher's new money is paid
//! out after the commit's challenge window by compute's fee split. Committed receipts are drawn
//! for audit with a later block's randomness; an audited request the provider reveals (or one
//! the owner challenges) becomes a compute job holding the receipt as its posted result, so the
//! verify module audits or disputes it as any job. Closing returns the unspent deposit once the
//! last commit's window has passed.
//!
//! Invariants:
//! - The escrow account holds exactly the `deposit` of every session not closed; a session's
//!   deposit only leaves it as payouts (fee split), moves into compute jobs, or the refund.
//! - A committed voucher's seq and total never go back; its total is at most what the session
//!   escrowed and at most the committed units at the session's maximum price.
//! - Assignment and audit draws use the randomness of a block after the transaction.
//! - Every list and queue is bounded; a full one refuses the transaction.

mod challenge;
mod close;
mod commit;
mod fraud;
mod lifecycle;
mod msg;
mod open;
mod reveal;
pub mod state_key;
mod top_up;
pub mod types;

pub use fraud::fraud_slash;
pub use msg::Msg;
pub use types::*;

use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::list::List;
use crate::module::{BlockContext, GenesisError, Module, TxContext};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::Address;

/// Most sessions one client may have that are not closed.
pub const SESSIONS_PER_CLIENT_MAX: usize = 16;
/// Most sessions one provider may serve that are not closed.
pub const SESSIONS_PER_PROVIDER_MAX: usize = 64;
/// Most entries in one per-block queue (assignments, draws, deadlines, payouts, expiries).
pub const SESSIONS_PER_QUEUE_MAX: usize = 100_000;

/// Most receipts of one commit drawn for audit ([`Params::audits_per_commit`]'s bound): their
/// reveals fit one transaction.
pub const AUDITS_PER_COMMIT_MAX: u64 = 16;
/// Blocks between two looks at a commit's jobs (revealed or challenged requests) while one is
/// still posted or disputed, to slash its provider once if one is proven wrong.
pub const FRAUD_CHECK_BLOCKS: u64 = 10;

/// The account that escrows every session's deposit.
pub fn escrow() -> Address {
    Address::module("sessions")
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// The longest session a client may open, in blocks.
    pub expiry_blocks_max: u64,
    /// Blocks between a commit and its payout, for audit draws and the owner's challenges;
    /// also the grace a closing session gives its provider to commit.
    pub challenge_window_blocks: u64,
    /// Blocks a provider has to reveal an audited receipt's request once drawn.
    pub reveal_blocks: u64,
    /// Receipts of each commit drawn for audit (`A`, uniformly over the commit's receipts, with
    /// replacement; every receipt of a commit of at most `A`), whatever the commit's size: the
    /// chain load of audits follows commits, not requests. A commit proven to hold a wrong
    /// receipt costs its provider [`fraud_slash`], which grows with the commit's size so
    /// that cheating loses in expectation (DESIGN.md §3.1). A model audited at rate 0 draws none.
    #[serde(default = "default_audits_per_commit")]
    pub audits_per_commit: u64,
}

fn default_audits_per_commit() -> u64 {
    4
}

impl Default for Params {
    fn default() -> Self {
        Params {
            expiry_blocks_max: 100_000,
            challenge_window_blocks: 20,
            reveal_blocks: 50,
            audits_per_commit: default_audits_per_commit(),
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), String> {
        if self.expiry_blocks_max == 0
            || self.challenge_window_blocks == 0
            || self.reveal_blocks == 0
        {
            return Err(
                "session expiry, challenge window and reveal blocks must be positive".into(),
            );
        }
        if self.audits_per_commit == 0 || self.audits_per_commit > AUDITS_PER_COMMIT_MAX {
            return Err(format!(
                "audits per commit must be 1 to {AUDITS_PER_COMMIT_MAX}"
            ));
        }
        Ok(())
    }
}

impl Encode for Params {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.expiry_blocks_max);
        w.u64(self.challenge_window_blocks);
        w.u64(self.reveal_blocks);
        w.u64(self.audits_per_commit);
    }
}

impl Decode for Params {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Params {
            expiry_blocks_max: r.u64()?,
            challenge_window_blocks: r.u64()?,
            reveal_blocks: r.u64()?,
            audits_per_commit: r.u64()?,
        })
    }
}

pub fn params(state: &StateDelta<'_>) -> Params {
    state
        .get(&state_key::params())
        .expect("session params are written at genesis")
}

pub fn session(state: &StateDelta<'_>, id: u64) -> Option<Session> {
    state.get(&state_key::session(id))
}

pub fn commit(state: &StateDelta<'_>, id: u64) -> Option<CommitRecord> {
    state.get(&state_key::commit(id))
}

/// The id of commit number `index` of `session`.
pub fn session_commit(state: &StateDelta<'_>, session: u64, index: u64) -> Option<u64> {
    state.get(&state_key::session_commit(session, index))
}

/// The sessions of `client` that are not closed.
pub fn sessions_of_client(state: &StateDelta<'_>, client: &Address) -> Vec<u64> {
    state
        .get::<List<u64, SESSIONS_PER_CLIENT_MAX>>(&state_key::of_client(client))
        .unwrap_or_default()
        .0
}

/// The sessions `provider` serves that are not closed.
pub fn sessions_of_provider(state: &StateDelta<'_>, provider: &Address) -> Vec<u64> {
    state
        .get::<List<u64, SESSIONS_PER_PROVIDER_MAX>>(&state_key::of_provider(provider))
        .unwrap_or_default()
        .0
}

fn error(code: ErrorCode, message: impl Into<String>) -> TxError {
    TxError::new(code, message)
}

fn invalid(message: impl Into<String>) -> TxError {
    error(ErrorCode::InvalidMessage, message)
}

/// The session `id`, or `unknown_session`.
fn existing(state: &StateDelta<'_>, id: u64) -> Result<Session, TxError> {
    session(state, id).ok_or_else(|| error(ErrorCode::UnknownSession, format!("no session {id}")))
}

/// The session `id` if `sender` owns it.
fn owned(state: &StateDelta<'_>, id: u64, sender: &Address) -> Result<Session, TxError> {
    let session = existing(state, id)?;
    if session.owner != *sender {
        return Err(error(
            ErrorCode::NotSessionParty,
            format!("{sender} does not own session {id}"),
        ));
    }
    Ok(session)
}

/// The session `id` if `sender` owns it and it is not closing or closed.
fn owned_and_open(state: &StateDelta<'_>, id: u64, sender: &Address) -> Result<Session, TxError> {
    let session = owned(state, id, sender)?;
    if !matches!(session.status, SessionStatus::Pending | SessionStatus::Open) {
        return Err(error(
            ErrorCode::SessionNotOpen,
            format!("session {id} is closing or closed"),
        ));
    }
    Ok(session)
}

/// The commit `id` of `session`.
fn commit_of(state: &StateDelta<'_>, session: u64, id: u64) -> Result<CommitRecord, TxError> {
    commit(state, id)
        .filter(|c| c.session == session)
        .ok_or_else(|| {
            error(
                ErrorCode::BadReceipt,
                format!("session {session} has no commit {id}"),
            )
        })
}

fn put_session(state: &mut StateDelta<'_>, session: &Session) {
    state.put(state_key::session(session.id), session);
}

fn put_commit(state: &mut StateDelta<'_>, commit: &CommitRecord) {
    state.put(state_key::commit(commit.id), commit);
}

fn amount_text(amount: piazza_primitives::Amount) -> String {
    amount.base_units().to_string()
}

pub struct Sessions;

impl Module for Sessions {
    type Msg = Msg;
    type Genesis = Params;
    const NAME: &'static str = "sessions";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::Open { .. } => 200,
            Msg::TopUp { .. } | Msg::Close { .. } => 50,
            // A unit per audit draw in a later block: at most `AUDITS_PER_COMMIT_MAX`, whatever
            // the commit's size.
            Msg::Commit { .. } => 150 + AUDITS_PER_COMMIT_MAX,
            Msg::Reveal { .. } => 200,
            Msg::Challenge { .. } => 300,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::Open {
                model,
                owner_key,
                authorised,
                deposit,
                max_price_per_unit,
                expiry_blocks,
                ..
            } => {
                crate::error::refuse_small_order(owner_key, "a session's owner key")?;
                if let Some(authorised) = authorised {
                    crate::error::refuse_small_order(authorised, "a session's authorised key")?;
                }
                open::check_stateless(model, deposit, max_price_per_unit, expiry_blocks)
            }
            Msg::TopUp { amount, .. } => top_up::check_stateless(amount),
            Msg::Commit {
                session,
                count,
                voucher,
                ..
            } => commit::check_stateless(session, count, voucher),
            Msg::Reveal {
                session,
                index,
                receipt,
                request,
                ..
            } => reveal::check_stateless(session, index, receipt, request),
            Msg::Challenge {
                session,
                receipt,
                request,
                step_count,
                ..
            } => challenge::check_stateless(session, receipt, request, step_count),
            Msg::Close { .. } => Ok(()),
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Open {
                model,
                owner_key,
                expiry_blocks,
                ..
            } => open::check_stateful(state, ctx, model, owner_key, expiry_blocks),
            Msg::TopUp { session, .. } | Msg::Close { session } => {
                owned_and_open(state, *session, &ctx.sender).map(|_| ())
            }
            Msg::Commit {
                session,
                count,
                units,
                voucher,
                ..
            } => commit::check_stateful(state, ctx, session, count, units, voucher).map(|_| ()),
            Msg::Reveal {
                session,
                commit,
                index,
                receipt,
                proof,
                request,
            } => {
                reveal::check_stateful(state, ctx, session, commit, index, receipt, proof, request)
                    .map(|_| ())
            }
            Msg::Challenge {
                session,
                commit,
                receipt,
                request,
                ..
            } => {
                challenge::check_stateful(state, ctx, session, commit, receipt, request).map(|_| ())
            }
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Open {
                model,
                owner_key,
                authorised,
                deposit,
                max_price_per_unit,
                expiry_blocks,
            } => open::execute(
                state,
                ctx,
                open::Opening {
                    model,
                    owner_key,
                    authorised,
                    deposit,
                    max_price_per_unit,
                    expiry_blocks,
                },
            ),
            Msg::TopUp { session, amount } => top_up::execute(state, ctx, session, amount),
            Msg::Commit {
                session,
                root,
                count,
                units,
                voucher,
            } => commit::execute(state, ctx, session, root, count, units, voucher),
            Msg::Reveal {
                session,
                commit,
                index,
                receipt,
                proof,
                request,
            } => reveal::execute(state, ctx, session, commit, index, receipt, proof, request),
            Msg::Challenge {
                session,
                commit,
                receipt,
                request,
                trace_root,
                step_count,
                ids,
            } => challenge::execute(
                state,
                ctx,
                challenge::Challenge {
                    session,
                    commit,
                    receipt,
                    request,
                    trace_root,
                    step_count,
                    ids,
                },
            ),
            Msg::Close { session } => close::execute(state, ctx, session),
        }
    }

    fn init_chain(state: &mut StateDelta<'_>, params: &Params) -> Result<(), GenesisError> {
        params.validate().map_err(GenesisError::Invalid)?;
        state.put(state_key::params(), params);
        Ok(())
    }

    /// Assigns the sessions opened in earlier blocks, then draws audits over the receipts
    /// committed in earlier blocks, both with this block's randomness.
    fn begin_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        lifecycle::assign_pending(state, block, events);
        lifecycle::draw_audits(state, block, events);
    }

    /// Slashes missed reveals and commits proven to hold a wrong receipt, pays out commits whose
    /// window ends here, and closes sessions that expire or whose closing grace ends here.
    fn end_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        lifecycle::reveal_deadlines(state, block, events);
        fraud::checks(state, block, events);
        lifecycle::payouts(state, block, events);
        lifecycle::expiries(state, block, events);
    }
}

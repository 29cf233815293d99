//! `Open`: a client escrows a deposit for a model; the session waits for a later block's
//! randomness to assign its provider.

use super::*;
use crate::bank;
use crate::compute;
use crate::list;
use crate::models;
use piazza_primitives::{Amount, PublicKey};

pub(super) fn check_stateless(
    model: &str,
    deposit: &Amount,
    max_price_per_unit: &Amount,
    expiry_blocks: &u64,
) -> Result<(), TxError> {
    if model.is_empty() {
        return Err(invalid("a session names its model"));
    }
    if deposit.is_zero() || max_price_per_unit.is_zero() {
        return Err(invalid(
            "a session's deposit and maximum price per unit are positive",
        ));
    }
    if *expiry_blocks == 0 {
        return Err(invalid("a session lasts at least one block"));
    }
    Ok(())
}

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    model: &str,
    owner_key: &PublicKey,
    expiry_blocks: &u64,
) -> Result<(), TxError> {
    if owner_key.address() != ctx.sender {
        return Err(invalid(format!(
            "the owner key must be the sender's own ({} is not {})",
            owner_key.address(),
            ctx.sender
        )));
    }
    if models::record(state, model).is_none() {
        return Err(error(
            ErrorCode::UnknownModel,
            format!("no model `{model}`"),
        ));
    }
    if compute::providers_serving(state, model).is_empty() {
        return Err(error(
            ErrorCode::NoProvider,
            format!("no provider serves `{model}`"),
        ));
    }
    let max = params(state).expiry_blocks_max;
    if *expiry_blocks > max {
        return Err(invalid(format!(
            "a session lasts at most {max} blocks, not {expiry_blocks}"
        )));
    }
    if sessions_of_client(state, &ctx.sender).len() >= SESSIONS_PER_CLIENT_MAX {
        return Err(error(
            ErrorCode::QueueFull,
            format!(
                "{} already has {SESSIONS_PER_CLIENT_MAX} sessions open; close one first",
                ctx.sender
            ),
        ));
    }
    Ok(())
}

/// The fields of an `Open` message.
pub(super) struct Opening<'a> {
    pub model: &'a str,
    pub owner_key: &'a PublicKey,
    pub authorised: &'a Option<PublicKey>,
    pub deposit: &'a Amount,
    pub max_price_per_unit: &'a Amount,
    pub expiry_blocks: &'a u64,
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    open: Opening<'_>,
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let height = ctx.block.height;
    let id: u64 = state.get(&state_key::next_session()).unwrap_or(0);
    bank::transfer(state, &sender, &escrow(), *open.deposit)?;
    list::push::<SESSIONS_PER_QUEUE_MAX>(state, state_key::pending(), id)
        .map_err(|full| full.refusal("the session assignment queue"))?;
    let expiry_height = list::schedule::<SESSIONS_PER_QUEUE_MAX>(
        state,
        state_key::expiries,
        height.saturating_add(*open.expiry_blocks),
        id,
    )
    .map_err(|full| full.refusal("the session expiry queue"))?;
    let mut mine: List<u64, SESSIONS_PER_CLIENT_MAX> = List(sessions_of_client(state, &sender));
    mine.insert_sorted(id)
        .map_err(|full| full.refusal("the client's session list"))?;
    state.put(state_key::of_client(&sender), &mine);
    state.put(state_key::next_session(), &(id + 1));
    let session = Session {
        id,
        owner: sender,
        owner_key: *open.owner_key,
        authorised: *open.authorised,
        model: open.model.to_owned(),
        provider: None,
        deposit: *open.deposit,
        max_price_per_unit: *open.max_price_per_unit,
        expiry_height,
        opened_height: height,
        status: SessionStatus::Pending,
        paid: Amount::ZERO,
        committed_total: Amount::ZERO,
        committed_seq: 0,
        commit_height: 0,
        committed_units: 0,
        commits: 0,
        pending_commits: 0,
        closing_height: 0,
    };
    put_session(state, &session);
    ctx.emit(Event::new(
        "sessions.opened",
        &[
            ("session", id.to_string()),
            ("owner", sender.to_string()),
            ("model", open.model.to_owned()),
            ("deposit", amount_text(*open.deposit)),
            ("max_price_per_unit", amount_text(*open.max_price_per_unit)),
            ("expiry_height", expiry_height.to_string()),
        ],
    ));
    Ok(())
}

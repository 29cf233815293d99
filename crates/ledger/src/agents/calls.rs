//! Paid calls: escrow, answer, release (by the payer or after the window), refund on a missed
//! deadline, and the payer's rating of a settled call.

use super::CALLS_PER_HEIGHT_MAX;
use super::{agent, call, escrow, params, put_agent, state_key, Call, CallStatus, Msg};
use crate::bank;
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::list;
use crate::module::{BlockContext, Module, TxContext};
use crate::state::StateDelta;

fn unknown(id: u64) -> TxError {
    TxError::new(ErrorCode::UnknownCall, format!("no call {id}"))
}

fn closed(record: &Call, what: &str) -> TxError {
    TxError::new(
        ErrorCode::CallClosed,
        format!("call {} is {:?}; {what}", record.id, record.status),
    )
}

fn not_party(message: String) -> TxError {
    TxError::new(ErrorCode::NotAgentParty, message)
}

fn active_agent(state: &StateDelta<'_>, id: u64) -> Result<super::Agent, TxError> {
    agent(state, id)
        .filter(|a| a.active)
        .ok_or_else(|| TxError::new(ErrorCode::UnknownAgent, format!("no active agent {id}")))
}

/// The bank message that settles a paid call's authorization.
fn settlement(
    authorization: &bank::authorization::TransferAuthorization,
    signature: &piazza_primitives::Signature,
) -> bank::Msg {
    bank::Msg::SettleAuthorization {
        authorization: authorization.clone(),
        signature: *signature,
    }
}

/// The call `id` in `status`.
fn call_in(state: &StateDelta<'_>, id: u64, status: CallStatus) -> Result<Call, TxError> {
    let record = call(state, id).ok_or_else(|| unknown(id))?;
    if record.status != status {
        return Err(closed(&record, &format!("this needs {status:?}")));
    }
    Ok(record)
}

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    msg: &Msg,
) -> Result<(), TxError> {
    match msg {
        Msg::Call {
            agent: id, amount, ..
        } => {
            let record = active_agent(state, *id)?;
            if *amount < record.profile.price {
                return Err(TxError::new(
                    ErrorCode::EscrowTooLow,
                    format!("agent {id} asks {} PZA a call", record.profile.price),
                ));
            }
            Ok(())
        }
        Msg::PaidCall {
            agent: id,
            authorization,
            signature,
            ..
        } => {
            let record = active_agent(state, *id)?;
            if authorization.to != record.owner {
                return Err(not_party(format!(
                    "a paid call to agent {id} pays its owner {}",
                    record.owner
                )));
            }
            if authorization.amount < record.profile.price {
                return Err(TxError::new(
                    ErrorCode::EscrowTooLow,
                    format!("agent {id} asks {} PZA a call", record.profile.price),
                ));
            }
            bank::Bank::check_stateful(state, ctx, &settlement(authorization, signature))
        }
        Msg::Answer { call: id, .. } => {
            let record = call_in(state, *id, CallStatus::Open)?;
            let owner = agent(state, record.agent).map(|a| a.owner);
            if owner != Some(ctx.sender) {
                return Err(not_party(format!(
                    "only the agent's owner answers call {id}"
                )));
            }
            if ctx.block.height > record.deadline {
                return Err(closed(&record, "its deadline has passed"));
            }
            Ok(())
        }
        Msg::Release { call: id } => {
            let record = call_in(state, *id, CallStatus::Answered)?;
            if record.payer != ctx.sender {
                return Err(not_party(format!("only the payer releases call {id}")));
            }
            Ok(())
        }
        Msg::Rate { call: id, .. } => {
            let record = call_in(state, *id, CallStatus::Settled)?;
            if record.payer != ctx.sender {
                return Err(not_party(format!("only the payer rates call {id}")));
            }
            if agent(state, record.agent).is_some_and(|a| a.owner == ctx.sender) {
                return Err(not_party(
                    "an agent's owner cannot rate its own agent".into(),
                ));
            }
            if record.rating.is_some() {
                return Err(closed(&record, "it is rated already"));
            }
            Ok(())
        }
        _ => unreachable!("agents routes only call messages here"),
    }
}

fn schedule(state: &mut StateDelta<'_>, height: u64, id: u64) -> Result<u64, TxError> {
    list::schedule::<CALLS_PER_HEIGHT_MAX>(state, state_key::due, height, id)
        .map_err(|full| full.refusal("the queue of calls due at that height"))
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    msg: &Msg,
) -> Result<(), TxError> {
    let height = ctx.block.height;
    match msg {
        Msg::Call {
            agent: agent_id,
            request_hash,
            amount,
            timeout_blocks,
        } => {
            let id: u64 = state.get(&state_key::next_call()).unwrap_or(0);
            state.put(state_key::next_call(), &(id + 1));
            bank::transfer(state, &ctx.sender, &escrow(), *amount)?;
            let deadline = schedule(state, height.saturating_add(*timeout_blocks), id)?;
            let record = Call {
                id,
                agent: *agent_id,
                payer: ctx.sender,
                amount: *amount,
                request_hash: *request_hash,
                result_hash: None,
                status: CallStatus::Open,
                deadline,
                release_at: 0,
                rating: None,
            };
            state.put(state_key::call(id), &record);
            emit(ctx, "agents.call_opened", &record);
        }
        Msg::PaidCall {
            agent: agent_id,
            request_hash,
            authorization,
            signature,
        } => {
            bank::Bank::execute(state, ctx, &settlement(authorization, signature))?;
            let id: u64 = state.get(&state_key::next_call()).unwrap_or(0);
            state.put(state_key::next_call(), &(id + 1));
            let record = Call {
                id,
                agent: *agent_id,
                payer: authorization.from.address(),
                amount: authorization.amount,
                request_hash: *request_hash,
                result_hash: None,
                status: CallStatus::Settled,
                deadline: height,
                release_at: height,
                rating: None,
            };
            let mut subject = agent(state, *agent_id).ok_or_else(|| unknown(*agent_id))?;
            record_completion(state, &mut subject, &record);
            state.put(state_key::call(id), &record);
            emit(ctx, "agents.call_settled", &record);
        }
        Msg::Answer {
            call: id,
            result_hash,
        } => {
            let mut record = call_in(state, *id, CallStatus::Open)?;
            let window = params(state).release_window_blocks;
            record.release_at = schedule(state, height.saturating_add(window), *id)?;
            record.result_hash = Some(*result_hash);
            record.status = CallStatus::Answered;
            state.put(state_key::call(*id), &record);
            emit(ctx, "agents.call_answered", &record);
        }
        Msg::Release { call: id } => {
            let record = call_in(state, *id, CallStatus::Answered)?;
            let event = settle(state, record)?;
            ctx.emit(event);
        }
        Msg::Rate { call: id, rating } => {
            let mut record = call_in(state, *id, CallStatus::Settled)?;
            record.rating = Some(*rating);
            state.put(state_key::call(*id), &record);
            let mut subject = agent(state, record.agent).ok_or_else(|| unknown(record.agent))?;
            let history = &mut subject.history;
            history.rating_points = history
                .rating_points
                .saturating_add(u128::from(*rating).saturating_mul(record.amount.base_units()));
            history.rated_paid = history
                .rated_paid
                .checked_add(record.amount)
                .unwrap_or(history.rated_paid);
            put_agent(state, &subject);
            ctx.emit(Event::new(
                "agents.call_rated",
                &[
                    ("call", id.to_string()),
                    ("agent", record.agent.to_string()),
                    ("rating", rating.to_string()),
                    ("weight", record.amount.base_units().to_string()),
                ],
            ));
        }
        _ => unreachable!("agents routes only call messages here"),
    }
    Ok(())
}

/// Whether a call counts toward its agent's reputation: not paid by the agent's own owner.
fn counts(record: &Call, owner: &piazza_primitives::Address) -> bool {
    record.payer != *owner
}

/// Pays an answered call to the agent's owner and records the completion.
fn settle(state: &mut StateDelta<'_>, mut record: Call) -> Result<Event, TxError> {
    let mut subject = agent(state, record.agent).ok_or_else(|| unknown(record.agent))?;
    bank::transfer(state, &escrow(), &subject.owner, record.amount)?;
    record_completion(state, &mut subject, &record);
    record.status = CallStatus::Settled;
    state.put(state_key::call(record.id), &record);
    Ok(call_event("agents.call_settled", &record))
}

/// Counts a paid call in its agent's history (unless the agent's owner paid it).
fn record_completion(state: &mut StateDelta<'_>, subject: &mut super::Agent, record: &Call) {
    if counts(record, &subject.owner) {
        subject.history.completed += 1;
        subject.history.paid = subject
            .history
            .paid
            .checked_add(record.amount)
            .unwrap_or(subject.history.paid);
        put_agent(state, subject);
    }
}

/// Refunds a call its agent did not answer in time and records the timeout.
fn refund(state: &mut StateDelta<'_>, mut record: Call) -> Result<Event, TxError> {
    bank::transfer(state, &escrow(), &record.payer, record.amount)?;
    if let Some(mut subject) = agent(state, record.agent) {
        if counts(&record, &subject.owner) {
            subject.history.timeouts += 1;
            put_agent(state, &subject);
        }
    }
    record.status = CallStatus::Refunded;
    state.put(state_key::call(record.id), &record);
    Ok(call_event("agents.call_refunded", &record))
}

fn call_event(kind: &str, record: &Call) -> Event {
    Event::new(
        kind,
        &[
            ("call", record.id.to_string()),
            ("agent", record.agent.to_string()),
            ("payer", record.payer.to_string()),
            ("amount", record.amount.base_units().to_string()),
        ],
    )
}

fn emit(ctx: &mut TxContext<'_>, kind: &str, record: &Call) {
    ctx.emit(call_event(kind, record));
}

/// Refunds the calls whose deadline is this block and releases the answered calls whose window
/// ends here (an entry for a call already settled by its payer is stale and skipped).
pub(super) fn end_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
    let due = list::take::<CALLS_PER_HEIGHT_MAX>(state, state_key::due(block.height));
    for id in due {
        let Some(record) = call(state, id) else {
            continue;
        };
        let outcome = match record.status {
            CallStatus::Open if record.deadline == block.height => refund(state, record),
            CallStatus::Answered if record.release_at == block.height => settle(state, record),
            _ => continue,
        };
        match outcome {
            Ok(event) => events.push(event),
            Err(error) => unreachable!("the escrow holds every open call: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{reputation_bps, History, Params};
    use piazza_primitives::Amount;

    #[test]
    fn reputation_grows_with_paid_completions_and_falls_with_timeouts_and_low_ratings() {
        let params = Params::default();
        let base = History {
            completed: 10,
            paid: Amount::pza(100),
            ..History::default()
        };
        let with_timeouts = History {
            timeouts: 10,
            ..base
        };
        let well_rated = History {
            rating_points: 5 * Amount::pza(100).base_units(),
            rated_paid: Amount::pza(100),
            ..base
        };
        let badly_rated = History {
            rating_points: Amount::pza(100).base_units(),
            rated_paid: Amount::pza(100),
            ..base
        };
        assert_eq!(reputation_bps(&History::default(), &params), 0);
        assert!(reputation_bps(&with_timeouts, &params) < reputation_bps(&base, &params));
        assert!(reputation_bps(&well_rated, &params) > reputation_bps(&base, &params));
        assert!(reputation_bps(&badly_rated, &params) < reputation_bps(&base, &params));
        // A perfect history at paid = paid_half: experience 1/2 × (11/12 + 1) / 2.
        assert_eq!(
            reputation_bps(&well_rated, &params),
            5_000 * (9_166 + 10_000) / 20_000
        );
    }
}

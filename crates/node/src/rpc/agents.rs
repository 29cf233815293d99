//! The agents side of the ledger over JSON-RPC: discovery (`piazza_findAgents`), records
//! (`piazza_getAgent`), paid calls (`piazza_getAgentCall`), and the JSON of agents, grants and
//! x402 transfer-authorization messages. Shapes in `docs/agents.md`.

use super::framing::{internal, rpc_error};
use super::methods::param;
use crate::app::App;
use piazza_api::{error_code, RpcError};
use piazza_ledger::agents;
use piazza_ledger::bank::authorization::TransferAuthorization;
use piazza_ledger::grants;
use piazza_ledger::state::StateDelta;
use piazza_primitives::Amount;
use serde_json::{json, Value};

pub(super) fn agents_json(message: &agents::Msg) -> Value {
    match message {
        agents::Msg::Register {
            name,
            profile,
            stake,
            ..
        } => json!({"type": "agents.register",
            "name": name, "tags": profile.tags, "price": amount(profile.price), "stake": amount(*stake)}),
        agents::Msg::Update { agent, profile } => json!({"type": "agents.update", "agent": agent,
            "tags": profile.tags, "price": amount(profile.price)}),
        agents::Msg::Deactivate { agent } => json!({"type": "agents.deactivate", "agent": agent}),
        agents::Msg::Call {
            agent,
            request_hash,
            amount: paid,
            timeout_blocks,
        } => json!({
            "type": "agents.call", "agent": agent, "request_hash": request_hash.to_hex(),
            "amount": amount(*paid), "timeout_blocks": timeout_blocks}),
        agents::Msg::Answer { call, result_hash } => json!({"type": "agents.answer", "call": call,
            "result_hash": result_hash.to_hex()}),
        agents::Msg::Release { call } => json!({"type": "agents.release", "call": call}),
        agents::Msg::Rate { call, rating } => {
            json!({"type": "agents.rate", "call": call, "rating": rating})
        }
        agents::Msg::PaidCall {
            agent,
            request_hash,
            authorization,
            ..
        } => {
            let mut value = authorization_json(authorization);
            value["type"] = json!("agents.paid_call");
            value["agent"] = json!(agent);
            value["request_hash"] = json!(request_hash.to_hex());
            value
        }
    }
}

pub(super) fn grants_json(message: &grants::Msg) -> Value {
    match message {
        grants::Msg::Grant { grantee, scope } => json!({
            "type": "grants.grant",
            "grantee": grantee.to_hex(),
            "kinds": scope.kinds.iter().map(|k| format!("{}/{}", k.module, k.message)).collect::<Vec<_>>(),
            "amount_per_message_max": scope.amount_per_message_max.base_units().to_string(),
            "recipients": scope.recipients.as_ref().map(|list| list.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            "agents": scope.agents,
            "spend_cap": scope.spend_cap.base_units().to_string(),
            "messages_max": scope.rate.messages_max,
            "per_blocks": scope.rate.per_blocks,
            "expiry_height": scope.expiry_height,
        }),
        grants::Msg::Revoke { grantee } => {
            json!({"type": "grants.revoke", "grantee": grantee.to_hex()})
        }
    }
}

pub(super) fn authorization_json(authorization: &TransferAuthorization) -> Value {
    json!({
        "type": "bank.settle_authorization",
        "from": authorization.from.address().to_string(),
        "to": authorization.to.to_string(),
        "amount": authorization.amount.base_units().to_string(),
        "valid_after": authorization.valid_after,
        "valid_before": authorization.valid_before,
        "nonce": authorization.nonce.to_hex(),
    })
}

/// The agents methods' names (one table, in `piazza-api`).
pub use piazza_api::agents_method as method;

/// Every agents method, for the dispatcher.
pub(super) const METHODS: [&str; 4] = [
    method::FIND_AGENTS,
    method::GET_AGENT,
    method::GET_AGENT_CALL,
    method::GET_AGENT_BY_NAME,
];

/// How many agents `piazza_findAgents` returns when the caller names no limit.
const FIND_LIMIT_DEFAULT: usize = 20;

fn amount(value: Amount) -> String {
    value.base_units().to_string()
}

fn invalid(message: String) -> RpcError {
    rpc_error(error_code::INVALID_PARAMS, message, None)
}

fn id_param(params: &[Value], what: &str) -> Result<u64, RpcError> {
    param(params, 0, what)?
        .as_u64()
        .ok_or_else(|| invalid(format!("{what} must be a non-negative integer")))
}

fn tag_param(params: &[Value]) -> Result<&str, RpcError> {
    let tag = param(params, 0, "capability tag")?
        .as_str()
        .ok_or_else(|| invalid("the capability tag must be a string".into()))?;
    if tag.len() > agents::TAG_BYTES_MAX {
        return Err(invalid(format!(
            "a capability tag is at most {} bytes",
            agents::TAG_BYTES_MAX
        )));
    }
    Ok(tag)
}

fn limit_param(params: &[Value]) -> Result<usize, RpcError> {
    match params.get(1) {
        None | Some(Value::Null) => Ok(FIND_LIMIT_DEFAULT),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=agents::FIND_RESULTS_MAX as u64).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| {
                invalid(format!(
                    "the limit is 1..={} agents",
                    agents::FIND_RESULTS_MAX
                ))
            }),
    }
}

/// An agent as JSON: its record, history, reputation and discovery score.
pub(super) fn agent_json(record: &agents::Agent, params: &agents::Params) -> Value {
    let history = &record.history;
    json!({
        "id": record.id,
        "owner": record.owner.to_string(),
        "name": record.name,
        "description": record.profile.description,
        "endpoints": record.profile.endpoints.iter()
            .map(|e| json!({"protocol": e.protocol.name(), "url": e.url}))
            .collect::<Vec<_>>(),
        "tags": record.profile.tags,
        "price": amount(record.profile.price),
        "stake": amount(record.stake),
        "share_asset": record.share_asset.as_ref().map(|_| record.name.clone()),
        "active": record.active,
        "registered_height": record.registered_height,
        "history": {
            "completed": history.completed,
            "timeouts": history.timeouts,
            "paid": amount(history.paid),
            "rated_paid": amount(history.rated_paid),
            "rating_points": history.rating_points.to_string(),
        },
        "reputation_bps": agents::reputation_bps(history, params).to_string(),
        "score": agents::score(record, params).to_string(),
    })
}

fn call_json(call: &agents::Call) -> Value {
    let status = match call.status {
        agents::CallStatus::Open => "open",
        agents::CallStatus::Answered => "answered",
        agents::CallStatus::Settled => "settled",
        agents::CallStatus::Refunded => "refunded",
    };
    json!({
        "id": call.id,
        "agent": call.agent,
        "payer": call.payer.to_string(),
        "amount": amount(call.amount),
        "request_hash": call.request_hash.to_hex(),
        "result_hash": call.result_hash.map(|h| h.to_hex()),
        "status": status,
        "deadline": call.deadline,
        "release_at": call.release_at,
        "rating": call.rating,
    })
}

/// Answers an agents method (see [`METHODS`]).
pub(super) fn dispatch(app: &App, name: &str, params: &[Value]) -> Result<Value, RpcError> {
    let snapshot = app.store().snapshot().map_err(internal)?;
    let view = StateDelta::new(&snapshot);
    let agent_params = agents::params(&view);
    match name {
        method::FIND_AGENTS => {
            let tag = tag_param(params)?;
            let limit = limit_param(params)?;
            let found: Vec<Value> = agents::find_by_tag(&view, tag, limit)
                .iter()
                .map(|(record, _)| agent_json(record, &agent_params))
                .collect();
            Ok(Value::Array(found))
        }
        method::GET_AGENT => {
            let id = id_param(params, "agent id")?;
            Ok(agents::agent(&view, id).map_or(Value::Null, |a| agent_json(&a, &agent_params)))
        }
        method::GET_AGENT_CALL => {
            let id = id_param(params, "call id")?;
            Ok(agents::call(&view, id).map_or(Value::Null, |c| call_json(&c)))
        }
        method::GET_AGENT_BY_NAME => {
            let name = param(params, 0, "agent name")?
                .as_str()
                .filter(|name| name.len() <= agents::NAME_BYTES_MAX)
                .ok_or_else(|| {
                    invalid(format!(
                        "an agent's name is a string of at most {} bytes",
                        agents::NAME_BYTES_MAX
                    ))
                })?;
            let record = view
                .get::<u64>(&agents::state_key::name(name))
                .and_then(|id| agents::agent(&view, id));
            Ok(record.map_or(Value::Null, |a| agent_json(&a, &agent_params)))
        }
        other => unreachable!("`{other}` is not an agents method"),
    }
}

//! JSON-RPC 2.0 over HTTP (`POST /`) and WebSocket (`GET /ws`), plus `/metrics` and `/health`.
//! This module is the node's only JSON: it maps domain types to `piazza_api` shapes here.

use crate::app::{App, CommittedBlock};
use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use piazza_api::{
    compute_method, error_code, method, verify_method, AccountInfo, AuditInfo, AuditorInfo,
    BlockInfo, DisputeInfo, EventInfo, JobInfo, JobParamsInfo, JobReceiptInfo, JobResultInfo,
    ModelInfo, PartyInfo, ProviderInfo, ReceiptInfo, RpcError, StakeInfo, Status, Submitted,
    TxFailure, TxInfo, VerifyTasks,
};
use piazza_codec::Encode;
use piazza_ledger::bank::{self, Msg as BankMsg};
use piazza_ledger::block::{Block, Event, Receipt, TxStatus};
use piazza_ledger::compute::{self, Job, JobStatus};
use piazza_ledger::error::{ErrorCode, TxError};
use piazza_ledger::executor;
use piazza_ledger::models;
use piazza_ledger::staking::{self, Msg as StakingMsg, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, SignedTransaction};
use piazza_ledger::verify;
use piazza_primitives::{Address, Hash};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest JSON-RPC request body, over HTTP or as one WebSocket message.
pub const RPC_BODY_BYTES_MAX: usize = 2 * piazza_ledger::tx::EVIDENCE_TX_BYTES_MAX + 64 * 1024;
/// Most calls in one JSON-RPC batch.
pub const RPC_BATCH_MAX: usize = 100;
/// Most subscriptions one WebSocket may hold.
pub const SUBSCRIPTIONS_PER_SOCKET_MAX: usize = 16;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", post(http_rpc))
        .route("/ws", get(ws_upgrade))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = app.metrics.render(app.mempool_size());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn http_rpc(State(app): State<Arc<App>>, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, RPC_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(_) => {
            let error = rpc_error(
                error_code::BODY_TOO_LARGE,
                format!("request body exceeds {RPC_BODY_BYTES_MAX} bytes"),
                None,
            );
            app.metrics.record_rpc(false);
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(response(Value::Null, Err(error))),
            )
                .into_response();
        }
    };
    let answer = tokio::task::spawn_blocking(move || handle_body(&app, &bytes)).await;
    match answer {
        Ok(Some(value)) => axum::Json(value).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "request handler failed").into_response(),
    }
}

/// Parses and answers a request body: one call or a batch. `None` for notifications only.
fn handle_body(app: &App, bytes: &[u8]) -> Option<Value> {
    let parsed: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            app.metrics.record_rpc(false);
            return Some(response(
                Value::Null,
                Err(rpc_error(
                    error_code::PARSE_ERROR,
                    format!("invalid JSON: {e}"),
                    None,
                )),
            ));
        }
    };
    match parsed {
        Value::Array(calls) if calls.is_empty() => Some(response(
            Value::Null,
            Err(rpc_error(error_code::INVALID_REQUEST, "empty batch", None)),
        )),
        Value::Array(calls) if calls.len() > RPC_BATCH_MAX => Some(response(
            Value::Null,
            Err(rpc_error(
                error_code::INVALID_REQUEST,
                format!("a batch holds at most {RPC_BATCH_MAX} calls"),
                None,
            )),
        )),
        Value::Array(calls) => {
            let answers: Vec<Value> = calls
                .into_iter()
                .filter_map(|c| handle_call(app, c))
                .collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        call => handle_call(app, call),
    }
}

/// Answers one call object; `None` for a notification (no `id`).
fn handle_call(app: &App, call: Value) -> Option<Value> {
    let Value::Object(mut call) = call else {
        app.metrics.record_rpc(false);
        return Some(response(
            Value::Null,
            Err(rpc_error(
                error_code::INVALID_REQUEST,
                "a call must be a JSON object",
                None,
            )),
        ));
    };
    let id = call.remove("id");
    let is_notification = id.is_none();
    let id = id.unwrap_or(Value::Null);
    let result = (|| {
        if call.get("jsonrpc") != Some(&json!("2.0")) {
            return Err(rpc_error(
                error_code::INVALID_REQUEST,
                "`jsonrpc` must be \"2.0\"",
                None,
            ));
        }
        let Some(Value::String(name)) = call.remove("method") else {
            return Err(rpc_error(
                error_code::INVALID_REQUEST,
                "`method` must be a string",
                None,
            ));
        };
        let params = match call.remove("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(params)) => params,
            Some(_) => {
                return Err(rpc_error(
                    error_code::INVALID_PARAMS,
                    "`params` must be an array",
                    None,
                ))
            }
        };
        dispatch(app, &name, &params)
    })();
    app.metrics.record_rpc(result.is_ok());
    (!is_notification).then(|| response(id, result))
}

fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    }
}

fn rpc_error(code: i64, message: impl Into<String>, data: Option<Value>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
        data,
    }
}

fn tx_error(e: TxError) -> RpcError {
    rpc_error(
        e.code.code() as i64,
        e.to_string(),
        Some(json!({"name": e.code.name(), "code": e.code.code()})),
    )
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    rpc_error(error_code::INTERNAL_ERROR, e.to_string(), None)
}

fn param<'a>(params: &'a [Value], index: usize, what: &str) -> Result<&'a Value, RpcError> {
    params.get(index).ok_or_else(|| {
        rpc_error(
            error_code::INVALID_PARAMS,
            format!("missing parameter {index}: {what}"),
            None,
        )
    })
}

fn string_param<'a>(params: &'a [Value], index: usize, what: &str) -> Result<&'a str, RpcError> {
    param(params, index, what)?.as_str().ok_or_else(|| {
        rpc_error(
            error_code::INVALID_PARAMS,
            format!("parameter {index} ({what}) must be a string"),
            None,
        )
    })
}

fn hash_param(params: &[Value], index: usize) -> Result<Hash, RpcError> {
    let text = string_param(params, index, "hash")?;
    text.parse().map_err(|e| {
        rpc_error(
            error_code::INVALID_PARAMS,
            format!("`{text}` is not a 32-byte hex hash: {e}"),
            None,
        )
    })
}

fn address_param(params: &[Value], index: usize) -> Result<Address, RpcError> {
    let text = string_param(params, index, "address")?;
    text.parse()
        .map_err(|e| rpc_error(error_code::INVALID_PARAMS, format!("`{text}`: {e}"), None))
}

fn to_value<T: serde::Serialize>(value: T) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(internal)
}

fn dispatch(app: &App, name: &str, params: &[Value]) -> Result<Value, RpcError> {
    match name {
        method::STATUS => to_value(status(app)?),
        method::SUBMIT_TRANSACTION => {
            let text = string_param(params, 0, "signed transaction hex")?;
            let text = text.strip_prefix("0x").unwrap_or(text);
            let bytes = hex::decode(text).map_err(|e| {
                tx_error(TxError::new(
                    ErrorCode::MalformedBytes,
                    format!("not hex: {e}"),
                ))
            })?;
            let hash = app.submit(&bytes).map_err(tx_error)?;
            to_value(Submitted {
                hash: hash.to_hex(),
            })
        }
        method::GET_TRANSACTION => {
            let hash = hash_param(params, 0)?;
            match app.store().tx(&hash).map_err(internal)? {
                None => Ok(Value::Null),
                Some((location, tx)) => to_value(tx_info(&tx, location.height, location.index)),
            }
        }
        method::GET_RECEIPT => {
            let hash = hash_param(params, 0)?;
            match app.store().receipt(&hash).map_err(internal)? {
                None => Ok(Value::Null),
                Some(receipt) => to_value(receipt_info(&receipt)),
            }
        }
        method::GET_BLOCK => {
            let with_raw = params.get(1).and_then(Value::as_bool).unwrap_or(false);
            let height = match param(params, 0, "height or hash")? {
                Value::Number(n) => n.as_u64().ok_or_else(|| {
                    rpc_error(
                        error_code::INVALID_PARAMS,
                        "height must be a non-negative integer",
                        None,
                    )
                })?,
                Value::String(_) => match app
                    .store()
                    .block_height(&hash_param(params, 0)?)
                    .map_err(internal)?
                {
                    Some(h) => h,
                    None => return Ok(Value::Null),
                },
                _ => {
                    return Err(rpc_error(
                        error_code::INVALID_PARAMS,
                        "parameter 0 must be a height or a block hash",
                        None,
                    ))
                }
            };
            match app.store().block(height).map_err(internal)? {
                None => Ok(Value::Null),
                Some(block) => to_value(block_info(&block, with_raw)),
            }
        }
        method::GET_ACCOUNT => {
            let address = address_param(params, 0)?;
            let head = app.head().map_err(internal)?;
            let height = match params.get(1) {
                None | Some(Value::Null) => head.height,
                Some(v) => v.as_u64().filter(|h| *h <= head.height).ok_or_else(|| {
                    rpc_error(
                        error_code::INVALID_PARAMS,
                        format!("height must be at most {}", head.height),
                        None,
                    )
                })?,
            };
            let key = bank::state_key::account(&address);
            let (value, proof) = app.store().get_with_proof(&key, height).map_err(internal)?;
            let state_root = app
                .store()
                .state_root(height)
                .map_err(internal)?
                .ok_or_else(|| internal("missing state root"))?;
            let account = match &value {
                None => bank::Account::default(),
                Some(bytes) => {
                    <bank::Account as piazza_codec::Decode>::from_bytes(bytes).map_err(internal)?
                }
            };
            to_value(AccountInfo {
                address: address.to_string(),
                balance: account.balance.base_units().to_string(),
                nonce: account.nonce,
                height,
                state_root: state_root.to_hex(),
                key: hex::encode(&key),
                value: value.map(hex::encode),
                proof: hex::encode(proof.to_bytes()),
            })
        }
        method::GET_STAKE => {
            let address = address_param(params, 0)?;
            let snapshot = app.store().snapshot().map_err(internal)?;
            let view = StateDelta::new(&snapshot);
            let bonds: BTreeMap<String, String> = Role::ALL
                .into_iter()
                .map(|role| {
                    (
                        role.name().to_string(),
                        staking::bonded(&view, &address, role),
                    )
                })
                .filter(|(_, amount)| !amount.is_zero())
                .map(|(role, amount)| (role, amount.base_units().to_string()))
                .collect();
            to_value(StakeInfo {
                address: address.to_string(),
                bonds,
                unbonding: staking::unbonding(&view, &address).base_units().to_string(),
            })
        }
        compute_method::GET_MODELS => {
            let snapshot = app.store().snapshot().map_err(internal)?;
            let view = StateDelta::new(&snapshot);
            let models: Vec<ModelInfo> = models::all(&view)
                .into_iter()
                .map(|m| ModelInfo {
                    providers: compute::providers_serving(&view, &m.name)
                        .iter()
                        .map(|a| a.to_string())
                        .collect(),
                    name: m.name,
                    kind: m.kind.name().to_string(),
                    architecture: m.architecture,
                    config_hash: m.config_hash.to_hex(),
                    weights_commitment: m.weights_commitment.to_hex(),
                    tokenizer_hash: m.tokenizer_hash.to_hex(),
                    owner: m.owner.to_string(),
                    license: m.license,
                    price_floor: m.price_floor.base_units().to_string(),
                })
                .collect();
            to_value(models)
        }
        compute_method::GET_JOB => {
            let id = param(params, 0, "job id")?.as_u64().ok_or_else(|| {
                rpc_error(
                    error_code::INVALID_PARAMS,
                    "job id must be a non-negative integer",
                    None,
                )
            })?;
            let snapshot = app.store().snapshot().map_err(internal)?;
            let view = StateDelta::new(&snapshot);
            match compute::job(&view, id) {
                None => Ok(Value::Null),
                Some(job) => {
                    let mut info = job_info(&job);
                    info.hold = verify::hold(&view, id).map(|h| {
                        match h {
                            verify::Hold::Audit { .. } => "audit",
                            verify::Hold::Dispute => "dispute",
                            verify::Hold::Group => "group",
                        }
                        .to_string()
                    });
                    to_value(info)
                }
            }
        }
        compute_method::GET_PROVIDER => {
            let address = address_param(params, 0)?;
            let snapshot = app.store().snapshot().map_err(internal)?;
            let view = StateDelta::new(&snapshot);
            match compute::provider(&view, &address) {
                None => Ok(Value::Null),
                Some(p) => to_value(ProviderInfo {
                    address: address.to_string(),
                    models: p.offer.models,
                    price_per_unit: p.offer.price_per_unit.base_units().to_string(),
                    capacity: p.offer.capacity,
                    endpoint: p.offer.endpoint,
                    active_jobs: p.active_jobs,
                    jobs_completed: p.jobs_completed,
                    deadlines_missed: p.deadlines_missed,
                    frauds: p.frauds,
                    stake: staking::bonded(&view, &address, Role::Provider)
                        .base_units()
                        .to_string(),
                }),
            }
        }
        compute_method::GET_PROVIDER_JOBS => {
            let address = address_param(params, 0)?;
            let snapshot = app.store().snapshot().map_err(internal)?;
            to_value(compute::assigned_jobs(
                &StateDelta::new(&snapshot),
                &address,
            ))
        }
        verify_method::GET_DISPUTE => {
            let id = param(params, 0, "job id")?.as_u64().ok_or_else(|| {
                rpc_error(
                    error_code::INVALID_PARAMS,
                    "job id must be a non-negative integer",
                    None,
                )
            })?;
            let snapshot = app.store().snapshot().map_err(internal)?;
            match verify::dispute(&StateDelta::new(&snapshot), id) {
                None => Ok(Value::Null),
                Some(d) => to_value(dispute_info(&d)),
            }
        }
        verify_method::GET_VERIFY_TASKS => {
            let address = address_param(params, 0)?;
            let snapshot = app.store().snapshot().map_err(internal)?;
            let view = StateDelta::new(&snapshot);
            let mut tasks = VerifyTasks::default();
            for job in verify::tasks(&view, &address) {
                if let Some(d) = verify::dispute(&view, job) {
                    tasks.disputes.push(dispute_info(&d));
                } else if let Some(verify::Hold::Audit { auditor, deadline }) =
                    verify::hold(&view, job)
                {
                    tasks.audits.push(AuditInfo {
                        job,
                        auditor: auditor.to_string(),
                        deadline_height: deadline,
                    });
                }
            }
            to_value(tasks)
        }
        verify_method::GET_AUDITOR => {
            let address = address_param(params, 0)?;
            let snapshot = app.store().snapshot().map_err(internal)?;
            let view = StateDelta::new(&snapshot);
            match verify::auditor(&view, &address) {
                None => Ok(Value::Null),
                Some(a) => to_value(AuditorInfo {
                    address: address.to_string(),
                    models: a.models,
                    attested: a.attested,
                    challenged: a.challenged,
                    missed: a.missed,
                    stake: staking::bonded(&view, &address, Role::Auditor)
                        .base_units()
                        .to_string(),
                }),
            }
        }
        method::SUBSCRIBE | method::UNSUBSCRIBE => Err(rpc_error(
            error_code::METHOD_NOT_FOUND,
            "subscriptions need a WebSocket connection (GET /ws)",
            None,
        )),
        other => Err(rpc_error(
            error_code::METHOD_NOT_FOUND,
            format!("unknown method `{other}`"),
            None,
        )),
    }
}

fn status(app: &App) -> Result<Status, RpcError> {
    let head = app.head().map_err(internal)?;
    let snapshot = app.store().snapshot().map_err(internal)?;
    let time_ms = executor::chain_head(&snapshot)
        .map(|h| h.time_ms)
        .unwrap_or(0);
    Ok(Status {
        chain_id: app.chain_id().to_string(),
        height: head.height,
        block_hash: head.block_hash.to_hex(),
        state_root: head.state_root.to_hex(),
        time_ms,
        mempool_size: app.mempool_size(),
        validator: app.validator().to_string(),
    })
}

pub fn message_json(message: &Message) -> Value {
    match message {
        Message::Bank(BankMsg::Send { to, amount }) => {
            json!({"type": "bank.send", "to": to.to_string(), "amount": amount.base_units().to_string()})
        }
        Message::Staking(StakingMsg::Bond { role, amount }) => {
            json!({"type": "staking.bond", "role": role.name(), "amount": amount.base_units().to_string()})
        }
        Message::Staking(StakingMsg::Unbond { role, amount }) => {
            json!({"type": "staking.unbond", "role": role.name(), "amount": amount.base_units().to_string()})
        }
        Message::Models(models::Msg::Register(record)) => {
            json!({"type": "models.register", "name": record.name, "kind": record.kind.name()})
        }
        Message::Compute(m) => match m {
            compute::Msg::RegisterProvider { offer, stake } => {
                json!({"type": "compute.register_provider", "models": offer.models, "price_per_unit": offer.price_per_unit.base_units().to_string(), "capacity": offer.capacity, "stake": stake.base_units().to_string()})
            }
            compute::Msg::UpdateProvider { offer } => {
                json!({"type": "compute.update_provider", "models": offer.models, "price_per_unit": offer.price_per_unit.base_units().to_string(), "capacity": offer.capacity})
            }
            compute::Msg::ExitProvider => json!({"type": "compute.exit_provider"}),
            compute::Msg::SubmitJob {
                model,
                input,
                max_units,
                max_price,
                ..
            } => {
                json!({"type": "compute.submit_job", "model": model, "input_bytes": input.len(), "max_units": max_units, "max_price": max_price.base_units().to_string()})
            }
            compute::Msg::PostResult {
                job,
                output_hash,
                trace_root,
                work_units,
                ..
            } => {
                json!({"type": "compute.post_result", "job": job, "output_hash": output_hash.to_hex(), "trace_root": trace_root.to_hex(), "work_units": work_units})
            }
        },
        Message::Verify(m) => match m {
            verify::Msg::RegisterAuditor { models, stake } => {
                json!({"type": "verify.register_auditor", "models": models, "stake": stake.base_units().to_string()})
            }
            verify::Msg::ExitAuditor => json!({"type": "verify.exit_auditor"}),
            verify::Msg::Attest { job } => json!({"type": "verify.attest", "job": job}),
            verify::Msg::Challenge {
                job,
                trace_root,
                step_count,
                ids,
            } => {
                json!({"type": "verify.challenge", "job": job, "trace_root": trace_root.to_hex(), "step_count": step_count, "ids": ids.to_hex()})
            }
            verify::Msg::Reveal {
                job,
                round,
                left,
                right,
                ..
            } => {
                json!({"type": "verify.reveal", "job": job, "round": round, "left": left.to_hex(), "right": right.to_hex()})
            }
            verify::Msg::Arbitrate { job, evidence } => {
                json!({"type": "verify.arbitrate", "job": job, "evidence_bytes": evidence.len()})
            }
        },
    }
}

fn party_info(p: &verify::Party) -> PartyInfo {
    PartyInfo {
        address: p.address.to_string(),
        job: p.job,
        root: p.root.to_hex(),
        step_count: p.step_count,
        ids: p.ids.to_hex(),
        bond: p.bond.base_units().to_string(),
        is_provider: p.is_provider,
    }
}

fn dispute_info(d: &verify::Dispute) -> DisputeInfo {
    let (phase, step, leaves) = match &d.phase {
        verify::Phase::Bisect => ("bisect", None, Vec::new()),
        verify::Phase::Input => ("input", None, Vec::new()),
        verify::Phase::Step { step, leaves } => (
            "step",
            Some(*step),
            leaves.iter().map(|l| l.to_hex()).collect(),
        ),
    };
    DisputeInfo {
        job: d.job,
        defendant: party_info(&d.parties[verify::DEFENDANT]),
        claimant: party_info(&d.parties[verify::CLAIMANT]),
        round: d.round,
        node_level: d.node.level,
        node_index: d.node.index,
        phase: phase.to_string(),
        step,
        leaves,
        revealed: d.reveals.iter().map(Option::is_some).collect(),
        deadline_height: d.deadline,
        opened_height: d.opened_height,
    }
}

fn job_info(job: &Job) -> JobInfo {
    let (provider, deadline_height, settle_height) = match &job.status {
        JobStatus::Assigned {
            provider,
            deadline_height,
        } => (Some(provider.to_string()), Some(*deadline_height), None),
        JobStatus::Posted {
            provider,
            settle_height,
        } => (Some(provider.to_string()), None, Some(*settle_height)),
        JobStatus::Settled => (
            job.receipt.as_ref().map(|r| r.provider.to_string()),
            None,
            None,
        ),
        JobStatus::Pending | JobStatus::Expired => (None, None, None),
        JobStatus::Failed => (None, None, None),
    };
    let p = &job.params;
    JobInfo {
        id: job.id,
        client: job.client.to_string(),
        model: job.model.clone(),
        input: hex::encode(&job.input),
        params: JobParamsInfo {
            max_tokens: p.max_tokens,
            temperature_milli: p.temperature_milli,
            top_k: p.top_k,
            top_p_milli: p.top_p_milli,
            repetition_penalty_milli: p.repetition_penalty_milli,
            seed: p.seed,
            chat: p.chat,
            stop: p.stop.clone(),
            deadline_blocks: p.deadline_blocks,
            redundancy: p.redundancy,
        },
        max_units: job.max_units,
        max_price: job.max_price.base_units().to_string(),
        submitted_height: job.submitted_height,
        status: job.status.name().to_string(),
        group: job.group,
        hold: None,
        provider,
        deadline_height,
        settle_height,
        missed: job.missed.iter().map(|a| a.to_string()).collect(),
        result: job.result.as_ref().map(|r| JobResultInfo {
            output: hex::encode(&r.output),
            output_hash: r.output_hash.to_hex(),
            trace_root: r.trace_root.to_hex(),
            work_units: r.work_units,
            posted_height: r.posted_height,
        }),
        receipt: job.receipt.as_ref().map(|r| JobReceiptInfo {
            job: r.job,
            model: r.model.clone(),
            input_hash: r.input_hash.to_hex(),
            output_hash: r.output_hash.to_hex(),
            trace_root: r.trace_root.to_hex(),
            provider: r.provider.to_string(),
            price: r.price.base_units().to_string(),
            refund: r.refund.base_units().to_string(),
            height: r.height,
        }),
    }
}

fn tx_info(tx: &SignedTransaction, height: u64, index: u32) -> TxInfo {
    TxInfo {
        hash: tx.hash().to_hex(),
        height,
        index,
        sender: tx.sender().to_string(),
        nonce: tx.tx.nonce,
        max_fee: tx.tx.max_fee.base_units().to_string(),
        messages: tx.tx.messages.iter().map(message_json).collect(),
        raw: hex::encode(tx.to_bytes()),
    }
}

fn event_info(event: &Event, height: u64, tx_hash: Option<Hash>) -> EventInfo {
    EventInfo {
        kind: event.kind.clone(),
        attributes: event.attributes.iter().cloned().collect(),
        tx_hash: tx_hash.map(|h| h.to_hex()),
        height,
    }
}

fn receipt_info(receipt: &Receipt) -> ReceiptInfo {
    let (status, error) = match &receipt.status {
        TxStatus::Ok => ("ok", None),
        TxStatus::Failed { code, message } => (
            "failed",
            Some(TxFailure {
                code: *code,
                name: ErrorCode::from_code(*code)
                    .map_or("unknown", |c| c.name())
                    .to_string(),
                message: message.clone(),
            }),
        ),
    };
    ReceiptInfo {
        tx_hash: receipt.tx_hash.to_hex(),
        height: receipt.height,
        index: receipt.index,
        status: status.to_string(),
        error,
        fee_paid: receipt.fee_paid.base_units().to_string(),
        events: receipt
            .events
            .iter()
            .map(|e| event_info(e, receipt.height, Some(receipt.tx_hash)))
            .collect(),
    }
}

fn block_info(block: &Block, with_raw: bool) -> BlockInfo {
    let h = &block.header;
    BlockInfo {
        hash: block.hash().to_hex(),
        height: h.height,
        parent_hash: h.parent_hash.to_hex(),
        time_ms: h.time_ms,
        proposer: h.proposer.address().to_string(),
        tx_root: h.tx_root.to_hex(),
        state_root: h.state_root.to_hex(),
        randomness: h.randomness.to_hex(),
        tx_hashes: block.txs.iter().map(|t| t.hash().to_hex()).collect(),
        raw: with_raw.then(|| hex::encode(block.to_bytes())),
    }
}

async fn ws_upgrade(State(app): State<Arc<App>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(RPC_BODY_BYTES_MAX)
        .on_upgrade(move |socket| serve_socket(app, socket))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Topic {
    NewBlocks,
    Events,
}

/// One WebSocket: JSON-RPC calls in, answers and subscription notifications out.
async fn serve_socket(app: Arc<App>, mut socket: WebSocket) {
    let mut committed = app.subscribe();
    let mut subscriptions: BTreeMap<u64, Topic> = BTreeMap::new();
    let mut next_id = 1u64;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(WsMessage::Text(text))) => text.to_string(),
                    Some(Ok(WsMessage::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                };
                let answer = match socket_call(&text, &mut subscriptions, &mut next_id) {
                    Some(answer) => Some(answer),
                    None => {
                        let app = app.clone();
                        tokio::task::spawn_blocking(move || handle_body(&app, text.as_bytes())).await.ok().flatten()
                    }
                };
                if let Some(answer) = answer {
                    if socket.send(WsMessage::Text(answer.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
            block = committed.recv() => {
                let block = match block {
                    Ok(block) => block,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a WebSocket subscriber fell behind");
                        continue;
                    }
                    Err(_) => return,
                };
                for notification in notifications(&block, &subscriptions) {
                    if socket.send(WsMessage::Text(notification.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Handles subscribe/unsubscribe calls; `None` for anything else (answered like HTTP).
fn socket_call(
    text: &str,
    subscriptions: &mut BTreeMap<u64, Topic>,
    next_id: &mut u64,
) -> Option<Value> {
    let call: Value = serde_json::from_str(text).ok()?;
    let name = call.get("method")?.as_str()?;
    if name != method::SUBSCRIBE && name != method::UNSUBSCRIBE {
        return None;
    }
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let first = call.get("params").and_then(|p| p.get(0));
    let result = if name == method::SUBSCRIBE {
        match first.and_then(Value::as_str) {
            Some(topic @ ("newBlocks" | "events")) => {
                if subscriptions.len() >= SUBSCRIPTIONS_PER_SOCKET_MAX {
                    Err(rpc_error(
                        error_code::INVALID_REQUEST,
                        format!(
                            "at most {SUBSCRIPTIONS_PER_SOCKET_MAX} subscriptions per connection"
                        ),
                        None,
                    ))
                } else {
                    let sub = *next_id;
                    *next_id += 1;
                    subscriptions.insert(
                        sub,
                        if topic == "newBlocks" {
                            Topic::NewBlocks
                        } else {
                            Topic::Events
                        },
                    );
                    Ok(json!(sub.to_string()))
                }
            }
            _ => Err(rpc_error(
                error_code::INVALID_PARAMS,
                "subscribe to \"newBlocks\" or \"events\"",
                None,
            )),
        }
    } else {
        let sub = first
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok());
        Ok(json!(
            sub.is_some_and(|s| subscriptions.remove(&s).is_some())
        ))
    };
    Some(response(id, result))
}

fn notifications(block: &CommittedBlock, subscriptions: &BTreeMap<u64, Topic>) -> Vec<Value> {
    let mut out = Vec::new();
    let height = block.block.header.height;
    for (sub, topic) in subscriptions {
        let results: Vec<Value> = match topic {
            Topic::NewBlocks => {
                vec![serde_json::to_value(block_info(&block.block, false)).unwrap_or(Value::Null)]
            }
            Topic::Events => block
                .receipts
                .iter()
                .flat_map(|r| {
                    r.events
                        .iter()
                        .map(move |e| event_info(e, height, Some(r.tx_hash)))
                })
                .chain(block.events.iter().map(|e| event_info(e, height, None)))
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect(),
        };
        for result in results {
            out.push(json!({"jsonrpc": "2.0", "method": method::SUBSCRIPTION, "params": {"subscription": sub.to_string(), "result": result}}));
        }
    }
    out
}

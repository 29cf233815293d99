//! The typed methods: parameters checked, the app asked, the answer shaped by [`super::convert`].

use super::convert::{block_info, dispute_info, job_info, model_info, receipt_info, tx_info};
use super::framing::{clip, internal, rpc_error, tx_error};
use crate::app::{App, TransactionStatus};
use piazza_api::{
    compute_method, error_code, method, session_method, verify_method, AccountInfo, AuditInfo,
    AuditorInfo, JobProofInfo, ModelInfo, ProviderInfo, RpcError, StakeInfo, StateProofInfo,
    Status, Submitted, TxStatusInfo, ValidatorInfo, ValidatorSetInfo, VerifyTasks,
};
use piazza_ledger::bank;
use piazza_ledger::compute;
use piazza_ledger::error::{ErrorCode, TxError};
use piazza_ledger::executor;
use piazza_ledger::models;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::verify;
use piazza_primitives::{Address, Hash};
use serde_json::Value;
use std::collections::BTreeMap;

/// Longest text accepted where a hash is expected (64 hex digits and a `0x`, with room).
const HASH_TEXT_BYTES_MAX: usize = 128;
/// Longest text accepted where an address is expected (a bech32m `pz1…` is about 42 bytes).
const ADDRESS_TEXT_BYTES_MAX: usize = 128;

pub(super) fn param<'a>(
    params: &'a [Value],
    index: usize,
    what: &str,
) -> Result<&'a Value, RpcError> {
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

pub(super) fn hash_param(params: &[Value], index: usize) -> Result<Hash, RpcError> {
    let text = string_param(params, index, "hash")?;
    if text.len() > HASH_TEXT_BYTES_MAX {
        return Err(too_long(index, "hash", text, HASH_TEXT_BYTES_MAX));
    }
    text.parse().map_err(|e| {
        rpc_error(
            error_code::INVALID_PARAMS,
            format!("`{}` is not a 32-byte hex hash: {e}", clip(text)),
            None,
        )
    })
}

pub(super) fn address_param(params: &[Value], index: usize) -> Result<Address, RpcError> {
    let text = string_param(params, index, "address")?;
    if text.len() > ADDRESS_TEXT_BYTES_MAX {
        return Err(too_long(index, "address", text, ADDRESS_TEXT_BYTES_MAX));
    }
    text.parse().map_err(|e| {
        rpc_error(
            error_code::INVALID_PARAMS,
            format!("`{}`: {e}", clip(text)),
            None,
        )
    })
}

/// Parameter 0 as a job id.
fn job_id_param(params: &[Value]) -> Result<u64, RpcError> {
    param(params, 0, "job id")?.as_u64().ok_or_else(|| {
        rpc_error(
            error_code::INVALID_PARAMS,
            "job id must be a non-negative integer",
            None,
        )
    })
}

/// The value under `key` at `height` (default: the head), raw, with its state proof (the
/// value hex there too) and the state root it is checked against.
fn proven(
    app: &App,
    height: Option<&Value>,
    key: &[u8],
) -> Result<(Option<Vec<u8>>, StateProofInfo), RpcError> {
    let head = app.head().map_err(internal)?;
    let height = match height {
        None | Some(Value::Null) => head.height,
        Some(v) => v.as_u64().filter(|h| *h <= head.height).ok_or_else(|| {
            rpc_error(
                error_code::INVALID_PARAMS,
                format!("height must be at most {}", head.height),
                None,
            )
        })?,
    };
    let (value, proof) = app.store().get_with_proof(key, height).map_err(internal)?;
    let state_root = app
        .store()
        .state_root(height)
        .map_err(internal)?
        .ok_or_else(|| internal("missing state root"))?;
    let info = StateProofInfo {
        height,
        state_root: state_root.to_hex(),
        key: hex::encode(key),
        value: value.as_ref().map(hex::encode),
        proof: hex::encode(proof.to_bytes()),
    };
    Ok((value, info))
}

/// Refuses a string parameter longer than its shape allows, before any parser sees it.
fn too_long(index: usize, what: &str, text: &str, bytes_max: usize) -> RpcError {
    rpc_error(
        error_code::INVALID_PARAMS,
        format!(
            "parameter {index} ({what}) is {} bytes, at most {bytes_max}: `{}`",
            text.len(),
            clip(text)
        ),
        None,
    )
}

pub(super) fn to_value<T: serde::Serialize>(value: T) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(internal)
}

/// The signed transaction of a `piazza_submitTransaction` call: its one parameter, hex (with
/// or without `0x`).
pub(super) fn submitted_bytes(params: &[Value]) -> Result<Vec<u8>, RpcError> {
    let text = string_param(params, 0, "signed transaction hex")?;
    let text = text.strip_prefix("0x").unwrap_or(text);
    hex::decode(text).map_err(|e| {
        tx_error(TxError::new(
            ErrorCode::MalformedBytes,
            format!("not hex: {e}"),
        ))
    })
}

/// The answer to a `piazza_submitTransaction` call.
pub(super) fn submitted(admitted: Result<Hash, TxError>) -> Result<Value, RpcError> {
    let hash = admitted.map_err(tx_error)?;
    to_value(Submitted {
        hash: hash.to_hex(),
    })
}

pub(super) fn dispatch(app: &App, name: &str, params: &[Value]) -> Result<Value, RpcError> {
    match name {
        method::STATUS => to_value(status(app)?),
        method::SUBMIT_TRANSACTION => submitted(app.submit(&submitted_bytes(params)?)),
        method::GET_TRANSACTION => {
            let hash = hash_param(params, 0)?;
            match app.store().tx(&hash).map_err(internal)? {
                None => Ok(Value::Null),
                Some((location, tx)) => to_value(tx_info(&tx, location.height, location.index)),
            }
        }
        method::GET_TRANSACTION_STATUS => {
            let hash = hash_param(params, 0)?;
            let status = match app.transaction_status(&hash).map_err(internal)? {
                TransactionStatus::Pending => TxStatusInfo::Pending,
                TransactionStatus::Included { height } => TxStatusInfo::Included { height },
                TransactionStatus::Dropped { code, reason } => TxStatusInfo::Dropped {
                    code: code.code(),
                    name: code.name().to_string(),
                    reason,
                },
                TransactionStatus::Unknown => TxStatusInfo::Unknown,
            };
            to_value(status)
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
            let key = bank::state_key::account(&address);
            let (value, proof) = proven(app, params.get(1), &key)?;
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
                proof,
            })
        }
        compute_method::GET_JOB_PROOF => {
            let id = job_id_param(params)?;
            let key = compute::state_key::job(id);
            let (_, proof) = proven(app, params.get(1), &key)?;
            to_value(JobProofInfo { id, proof })
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
        GET_VALIDATORS => validators(app, params),
        method::GET_COMMIT_CERTIFICATE => super::consensus::commit_certificate(app, params),
        compute_method::GET_MODELS => {
            let snapshot = app.store().snapshot().map_err(internal)?;
            let view = StateDelta::new(&snapshot);
            let models: Vec<ModelInfo> = models::all(&view)
                .into_iter()
                .map(|m| {
                    let providers = compute::providers_serving(&view, &m.name)
                        .iter()
                        .map(|a| a.to_string())
                        .collect();
                    model_info(m, providers)
                })
                .collect();
            to_value(models)
        }
        compute_method::GET_JOB => {
            let id = job_id_param(params)?;
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
                    units_per_block: p.offer.units_per_block,
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
            let id = job_id_param(params)?;
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
        session_method::GET_SESSION
        | session_method::GET_SESSION_COMMITS
        | session_method::GET_ACCOUNT_SESSIONS => super::sessions::dispatch(app, name, params),
        name if super::storage::METHODS.contains(&name) => {
            super::storage::dispatch(app, name, params)
        }
        name if super::agents::METHODS.contains(&name) => {
            super::agents::dispatch(app, name, params)
        }
        name if super::economy::METHODS.contains(&name) => {
            super::economy::dispatch(app, name, params)
        }
        method::SUBSCRIBE | method::UNSUBSCRIBE => Err(rpc_error(
            error_code::METHOD_NOT_FOUND,
            "subscriptions need a WebSocket connection (GET /ws)",
            None,
        )),
        other => Err(rpc_error(
            error_code::METHOD_NOT_FOUND,
            format!("unknown method `{}`", clip(other)),
            None,
        )),
    }
}

/// `piazza_getValidators [height?]`: the validator set of `height` (default: the next block's)
/// from committed state, `null` on a chain whose genesis names no validators, with the state
/// proof of the schedule it was read from: at `height - 1` (at the head for a height past the
/// next block's), so a light client checks the set against block `height - 1`'s state root.
pub use piazza_api::method::GET_VALIDATORS;

fn validators(app: &App, params: &[Value]) -> Result<Value, RpcError> {
    let head = app.head().map_err(internal)?;
    let height = match params.first() {
        None | Some(Value::Null) => head.height + 1,
        Some(v) => v.as_u64().filter(|h| *h >= 1).ok_or_else(|| {
            rpc_error(
                error_code::INVALID_PARAMS,
                "height must be a block height (1 or more)".to_string(),
                None,
            )
        })?,
    };
    let set = app
        .validator_set(height)
        .map_err(|e| rpc_error(error_code::INVALID_PARAMS, e.0, None))?;
    let Some(set) = set else {
        return Ok(Value::Null);
    };
    let key = staking::state_key::validator_schedule();
    let proof_height = (height - 1).min(head.height);
    let (_, schedule_proof) = proven(app, Some(&Value::from(proof_height)), &key)?;
    to_value(ValidatorSetInfo {
        height,
        total_voting_power: set
            .iter()
            .map(|v| v.voting_power)
            .fold(0, u64::saturating_add),
        validators: set
            .iter()
            .map(|v| ValidatorInfo {
                operator: v.operator.to_string(),
                consensus_key: v.consensus_key.to_hex(),
                voting_power: v.voting_power,
            })
            .collect(),
        schedule_proof: Some(schedule_proof),
    })
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
        fees: Some({
            let fees = executor::fee_params(&snapshot);
            piazza_api::FeeInfo {
                unit_price: fees.unit_price.base_units().to_string(),
                tx_base_units: fees.tx_base_units,
                byte_units: fees.byte_units,
            }
        }),
    })
}

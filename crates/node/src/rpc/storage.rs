//! Storage methods and the JSON of storage messages: the ledger's `storage` records (deals,
//! blobs, shards, challenges, providers) as JSON. The shapes are documented in
//! `docs/storage.md` and read by `piazza_client::storage`.

use super::framing::internal;
use super::methods::{address_param, hash_param};
use super::sessions::u64_param;
use crate::app::App;
use piazza_api::RpcError;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::storage;
use piazza_primitives::{Amount, Hash};
use serde_json::{json, Value};

fn amount(value: Amount) -> String {
    value.base_units().to_string()
}

/// A storage message as JSON (an answer by its chunk's length, never its bytes).
pub fn message_json(message: &storage::Msg) -> Value {
    match message {
        storage::Msg::RegisterProvider {
            stake,
            capacity_bytes,
            endpoint,
        } => json!({"type": "storage.register_provider", "stake": amount(*stake),
            "capacity_bytes": capacity_bytes, "endpoint": endpoint}),
        storage::Msg::UpdateProvider {
            capacity_bytes,
            endpoint,
        } => json!({"type": "storage.update_provider", "capacity_bytes": capacity_bytes,
            "endpoint": endpoint}),
        storage::Msg::ExitProvider => json!({"type": "storage.exit_provider"}),
        storage::Msg::OpenDeal { blob, epochs } => json!({"type": "storage.open_deal",
            "blob": blob.id.to_hex(), "len_bytes": blob.len_bytes, "k": blob.k, "m": blob.m,
            "shard_len": blob.shard_len, "epochs": epochs}),
        storage::Msg::EndDeal { deal } => json!({"type": "storage.end_deal", "deal": deal}),
        storage::Msg::ConfirmUpload { deal } => {
            json!({"type": "storage.confirm_upload", "deal": deal})
        }
        storage::Msg::AnswerChallenge {
            deal,
            shard,
            chunk_index,
            chunk,
            path,
        } => json!({"type": "storage.answer_challenge", "deal": deal, "shard": shard,
            "chunk_index": chunk_index, "chunk_bytes": chunk.len(),
            "path_siblings": path.siblings.len()}),
    }
}

/// The storage methods' names (one table, in `piazza-api`).
pub use piazza_api::storage_method as method;

/// Every storage method, for the dispatcher.
pub(super) const METHODS: [&str; 7] = [
    method::GET_STORAGE_PARAMS,
    method::GET_BLOB,
    method::GET_STORAGE_DEAL,
    method::GET_STORAGE_DEALS,
    method::GET_STORAGE_CHALLENGES,
    method::GET_STORAGE_PROVIDER,
    method::GET_STORAGE_PROVIDERS,
];

fn hash(value: &Hash) -> String {
    value.to_hex()
}

fn params_json(p: &storage::Params) -> Value {
    json!({
        "min_provider_stake": amount(p.min_provider_stake),
        "price_per_byte_epoch": amount(p.price_per_byte_epoch),
        "epoch_blocks": p.epoch_blocks,
        "answer_blocks": p.answer_blocks,
        "upload_blocks": p.upload_blocks,
        "repair_blocks": p.repair_blocks,
        "missed_proof_slash": amount(p.missed_proof_slash),
    })
}

fn kind(kind: storage::ChallengeKind) -> &'static str {
    match kind {
        storage::ChallengeKind::Epoch => "epoch",
        storage::ChallengeKind::Repair => "repair",
    }
}

fn challenge_json(c: &storage::Challenge) -> Value {
    json!({"kind": kind(c.kind), "chunk_index": c.chunk_index,
        "issued_height": c.issued_height, "deadline_height": c.deadline_height})
}

fn deal_json(view: &StateDelta<'_>, d: &storage::Deal) -> Value {
    let shards: Vec<Value> = d
        .shards
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let endpoint = s
                .provider
                .and_then(|p| storage::provider(view, &p))
                .map(|p| p.endpoint);
            json!({"index": index, "provider": s.provider.map(|p| p.to_string()),
                "endpoint": endpoint, "root": d.blob.shard_roots.get(index).map(hash),
                "proven": s.proven, "challenge": s.challenge.as_ref().map(challenge_json),
                "bounty": amount(s.bounty), "assignments": s.assignments,
                "waiting": s.waiting})
        })
        .collect();
    json!({
        "id": d.id,
        "owner": d.owner.to_string(),
        "blob": &d.blob,
        "epochs": d.epochs,
        "price_per_byte_epoch": amount(d.price_per_byte_epoch),
        "escrow": amount(d.escrow),
        "paid": amount(d.paid),
        "refunded": amount(d.refunded),
        "opened_height": d.opened_height,
        "epochs_done": d.epochs_done,
        "next_epoch_height": d.next_epoch_height,
        "end_requested": d.end_requested,
        "status": match d.status {
            storage::DealStatus::Pending => "pending",
            storage::DealStatus::Active => "active",
            storage::DealStatus::Ended => "ended",
        },
        "shards": shards,
    })
}

fn provider_json(view: &StateDelta<'_>, p: &storage::StorageProvider, with_shards: bool) -> Value {
    let shards = with_shards.then(|| {
        storage::provider_shards(view, &p.address)
            .into_iter()
            .map(|s| json!({"deal": s.deal, "shard": s.shard}))
            .collect::<Vec<_>>()
    });
    json!({
        "address": p.address.to_string(),
        "capacity_bytes": p.capacity_bytes,
        "used_bytes": p.used_bytes,
        "endpoint": p.endpoint,
        "proofs": p.proofs,
        "failures": p.failures,
        "stake": amount(staking::bonded(view, &p.address, Role::Storage)),
        "shards": shards,
    })
}

/// Answers a storage method (see [`METHODS`]).
pub(super) fn dispatch(app: &App, name: &str, params: &[Value]) -> Result<Value, RpcError> {
    let snapshot = app.store().snapshot().map_err(internal)?;
    let view = StateDelta::new(&snapshot);
    match name {
        method::GET_STORAGE_PARAMS => Ok(params_json(&storage::params(&view))),
        method::GET_BLOB => {
            let id = hash_param(params, 0)?;
            let Some(deal) =
                storage::deal_of_blob(&view, &id).and_then(|d| storage::deal(&view, d))
            else {
                return Ok(Value::Null);
            };
            Ok(json!({"blob": &deal.blob, "deal": deal_json(&view, &deal)}))
        }
        method::GET_STORAGE_DEAL => {
            let id = u64_param(params, 0, "deal id")?;
            Ok(storage::deal(&view, id).map_or(Value::Null, |d| deal_json(&view, &d)))
        }
        method::GET_STORAGE_DEALS => {
            let owner = address_param(params, 0)?;
            Ok(json!(storage::deals_of_owner(&view, &owner)))
        }
        method::GET_STORAGE_CHALLENGES => {
            let provider = address_param(params, 0)?;
            let open: Vec<Value> = storage::challenges_of(&view, &provider)
                .iter()
                .map(|c| {
                    json!({"deal": c.deal, "shard": c.shard, "blob": hash(&c.blob),
                        "shard_root": hash(&c.shard_root), "shard_len": c.shard_len,
                        "kind": kind(c.challenge.kind), "chunk_index": c.challenge.chunk_index,
                        "issued_height": c.challenge.issued_height,
                        "deadline_height": c.challenge.deadline_height})
                })
                .collect();
            Ok(json!(open))
        }
        method::GET_STORAGE_PROVIDER => {
            let address = address_param(params, 0)?;
            Ok(storage::provider(&view, &address)
                .map_or(Value::Null, |p| provider_json(&view, &p, true)))
        }
        _ => {
            let all: Vec<Value> = storage::providers(&view)
                .into_iter()
                .filter_map(|a| storage::provider(&view, &a))
                .map(|p| provider_json(&view, &p, false))
                .collect();
            Ok(json!(all))
        }
    }
}

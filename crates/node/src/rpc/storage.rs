//! Storage methods and the JSON of storage messages: the ledger's `storage` records (deals,
//! blobs, shards, challenges, providers) as JSON. The shapes are documented in
//! `docs/storage.md` and read by `piazza_client::storage`.

use piazza_ledger::storage;
use piazza_primitives::Amount;
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

//! The JSON-RPC 2.0 API of a Piazza node: method names, error codes and result shapes.
//!
//! Invariants:
//! - This is the only place the wire format of the API is written down; the node maps its domain
//!   types into these, clients read these. Amounts are decimal strings of base units (JSON numbers
//!   cannot hold a `u128`); hashes, keys and raw bytes are lowercase hex; addresses are bech32m.
//! - No domain logic here: plain data.
//!
//! Methods (params are positional arrays):
//! - `piazza_status []` → [`Status`]
//! - `piazza_submitTransaction [tx_hex]` → [`Submitted`]
//! - `piazza_getTransaction [hash]` → [`TxInfo`] or `null`
//! - `piazza_getReceipt [hash]` → [`ReceiptInfo`] or `null`
//! - `piazza_getBlock [height | hash]` → [`BlockInfo`] or `null`
//! - `piazza_getAccount [address, height?]` → [`AccountInfo`] (with a state proof)
//! - `piazza_getStake [address]` → [`StakeInfo`]
//! - `piazza_subscribe ["newBlocks" | "events"]` (WebSocket only) → subscription id; then
//!   notifications `piazza_subscription {subscription, result}` with a [`BlockInfo`] or an
//!   [`EventInfo`]. `piazza_unsubscribe [id]` → `true`.

use serde::{Deserialize, Serialize};

pub mod method {
    pub const STATUS: &str = "piazza_status";
    pub const SUBMIT_TRANSACTION: &str = "piazza_submitTransaction";
    pub const GET_TRANSACTION: &str = "piazza_getTransaction";
    pub const GET_RECEIPT: &str = "piazza_getReceipt";
    pub const GET_BLOCK: &str = "piazza_getBlock";
    pub const GET_ACCOUNT: &str = "piazza_getAccount";
    pub const GET_STAKE: &str = "piazza_getStake";
    pub const SUBSCRIBE: &str = "piazza_subscribe";
    pub const UNSUBSCRIBE: &str = "piazza_unsubscribe";
    pub const SUBSCRIPTION: &str = "piazza_subscription";
}

/// JSON-RPC error codes. Transaction refusals use the ledger's stable code (1..=999) as the
/// JSON-RPC code, with its name in `data.name`.
pub mod error_code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The request body is larger than the node accepts.
    pub const BODY_TOO_LARGE: i64 = -32001;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub chain_id: String,
    pub height: u64,
    pub block_hash: String,
    pub state_root: String,
    pub time_ms: u64,
    pub mempool_size: usize,
    pub validator: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Submitted {
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TxInfo {
    pub hash: String,
    pub height: u64,
    pub index: u32,
    pub sender: String,
    pub nonce: u64,
    pub max_fee: String,
    pub messages: Vec<serde_json::Value>,
    /// The signed transaction's canonical bytes.
    pub raw: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TxFailure {
    pub code: u16,
    pub name: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventInfo {
    pub kind: String,
    pub attributes: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    pub height: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptInfo {
    pub tx_hash: String,
    pub height: u64,
    pub index: u32,
    /// `"ok"` or `"failed"`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TxFailure>,
    pub fee_paid: String,
    pub events: Vec<EventInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockInfo {
    pub hash: String,
    pub height: u64,
    pub parent_hash: String,
    pub time_ms: u64,
    pub proposer: String,
    pub tx_root: String,
    pub state_root: String,
    pub randomness: String,
    pub tx_hashes: Vec<String>,
    /// The block's canonical bytes, when asked for (`piazza_getBlock [h, true]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountInfo {
    pub address: String,
    pub balance: String,
    pub nonce: u64,
    /// The state version (block height) the values and proof are for.
    pub height: u64,
    pub state_root: String,
    /// The state key, its raw value (absent for an empty account) and the proof, all hex.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub proof: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StakeInfo {
    pub address: String,
    /// Role name → bonded base units.
    pub bonds: std::collections::BTreeMap<String, String>,
    pub unbonding: String,
}

//! One module per ledger module; each page asks the node's methods and renders escaped HTML.

pub mod agents;
pub mod bank;
pub mod chain;
pub mod compute;
pub mod data;
pub mod models;
pub mod search;
pub mod storage;
pub mod verify;

use crate::{PageError, Source};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Calls a method whose answer is `null` when nothing has the id.
pub(crate) fn lookup<T: DeserializeOwned>(
    source: &dyn Source,
    method: &str,
    params: &[Value],
) -> Result<Option<T>, PageError> {
    let value = source.call(method, params)?;
    if value.is_null() {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| PageError::Unavailable(format!("{method} answered an unexpected shape: {e}")))
}

/// A method that always answers (no `null`).
pub(crate) fn fetch<T: DeserializeOwned>(
    source: &dyn Source,
    method: &str,
    params: &[Value],
) -> Result<T, PageError> {
    lookup(source, method, params)?
        .ok_or_else(|| PageError::Unavailable(format!("{method} answered null")))
}

/// A non-negative integer id (a height or a job id).
pub(crate) fn integer(text: &str, what: &str) -> Result<u64, PageError> {
    text.parse().map_err(|_| {
        PageError::BadRequest(format!(
            "`{}` is not a {what} (a non-negative integer)",
            crate::html::short(text)
        ))
    })
}

/// Whether `text` has the shape of a 32-byte hash: 64 hex digits, with or without `0x`.
pub(crate) fn is_hash(text: &str) -> bool {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    digits.len() == 64 && digits.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `text` if it looks like an address, else a 400.
pub(crate) fn address(text: &str) -> Result<&str, PageError> {
    if !is_address(text) {
        return Err(PageError::BadRequest(format!(
            "`{}` is not an address (pz1…)",
            crate::html::short(text)
        )));
    }
    Ok(text)
}

/// Whether `text` looks like an address (`pz1…`); the node checks the checksum.
pub(crate) fn is_address(text: &str) -> bool {
    text.starts_with("pz1") && text.len() <= 90 && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Fields whose values are amounts in base units (shown in PZA).
const AMOUNT_FIELDS: &[&str] = &[
    "amount",
    "bounty",
    "claimable",
    "escrow",
    "min_provider_stake",
    "missed_proof_slash",
    "paid",
    "price",
    "price_per_byte_epoch",
    "rated_paid",
    "refunded",
    "reserve",
    "revenue",
    "reward_per_label",
    "stake",
];

/// One JSON value as a table cell: addresses link to their account, amounts show in PZA,
/// nested values as escaped JSON; `null` as a dash.
pub(crate) fn cell(field: &str, value: &Value) -> String {
    match value {
        Value::Null => "–".into(),
        Value::String(s) if is_address(s) => crate::html::account_link(s),
        Value::String(s) if AMOUNT_FIELDS.contains(&field) => crate::html::pza(s),
        Value::String(s) => crate::html::escape(s),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        Value::Array(_) | Value::Object(_) => {
            crate::html::escape(&serde_json::to_string(value).unwrap_or_default())
        }
    }
}

/// A JSON object's fields as a two-column table, leaving out `skip` (shown elsewhere).
pub(crate) fn object_facts(value: &Value, skip: &[&str]) -> String {
    let rows: Vec<(&str, String)> = value
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), cell(k, v)))
                .collect()
        })
        .unwrap_or_default();
    crate::html::facts(&rows)
}

/// A list of JSON objects as a table of the named `columns`; `link(column, item)` may render a
/// column's cell itself (a link), else [`cell`] does.
pub(crate) fn object_table(
    id: &str,
    items: &[Value],
    columns: &[&str],
    link: impl Fn(&str, &Value) -> Option<String>,
) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|c| link(c, item).unwrap_or_else(|| cell(c, &item[*c])))
                .collect()
        })
        .collect();
    crate::html::table(id, columns, &rows)
}

/// Calls a method whose answer is `null` when nothing has the id, as raw JSON.
pub(crate) fn lookup_value(
    source: &dyn Source,
    method: &str,
    params: &[Value],
) -> Result<Option<Value>, PageError> {
    let value = source.call(method, params)?;
    Ok((!value.is_null()).then_some(value))
}

/// A method's list answer for an extra section of a page; a node without the method, or one
/// that refuses the parameters, gives an empty list (the section is left out).
pub(crate) fn optional_list(source: &dyn Source, method: &str, params: &[Value]) -> Vec<Value> {
    match source.call(method, params) {
        Ok(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// The state root of the block at `height`, as the block itself names it (empty when the node
/// has no such block: the browser check then fails, saying the roots differ).
pub(crate) fn block_root(source: &dyn Source, height: u64) -> Result<String, PageError> {
    let block: Option<piazza_api::BlockInfo> = lookup(
        source,
        piazza_api::method::GET_BLOCK,
        &[serde_json::json!(height)],
    )?;
    Ok(block.map(|b| b.state_root).unwrap_or_default())
}

/// A state proof as data for `assets/proof.js`, which checks it in the browser (BLAKE3 and the
/// Jellyfish Merkle proof) against the state root of the block it names, and the button that
/// runs the check again. The proof's key, value, proof and root become `data-` attributes,
/// beside `data` (names and unescaped values) of `kind`.
pub(crate) fn proof_box(
    what: &str,
    kind: &str,
    proof: &piazza_api::StateProofInfo,
    data: &[(&str, &str)],
) -> String {
    let proven = [
        ("key", proof.key.as_str()),
        ("value", proof.value.as_deref().unwrap_or("")),
        ("proof", proof.proof.as_str()),
        ("root", proof.state_root.as_str()),
    ];
    let attributes: String = proven
        .iter()
        .chain(data)
        .map(|(name, value)| format!(" data-{name}=\"{}\"", crate::html::escape(value)))
        .collect();
    let height = proof.height;
    format!(
        "<p>Your browser checks {what} against the state root of block {height}: \
<strong id=\"proof-result\">not checked</strong> \
<button id=\"verify-proof\" type=\"button\">Verify again</button></p>\
<div id=\"proof\" data-kind=\"{kind}\"{attributes}></div>\
<script src=\"{base}/assets/proof.js\"></script>",
        base = crate::BASE_PATH,
    )
}

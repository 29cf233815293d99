//! One module per ledger module; each page asks the node's methods and renders escaped HTML.

pub mod bank;
pub mod chain;
pub mod compute;
pub mod models;
pub mod search;
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

//! Storage: providers (bond, capacity, proofs and failures, the shards they hold and their open
//! challenges), deals (escrow, shards and who holds them, each shard's challenge and repair
//! bounty) and blobs (layout and shard roots).

use super::{integer, is_hash, lookup_value, object_facts, object_table};
use crate::html::{self, escape, link};
use crate::{Html, PageError, PageResult, Source};
use piazza_api::storage_method::*;
use serde_json::{json, Value};

pub fn deal_link(id: u64) -> String {
    link(&format!("storage/deal/{id}"), &format!("deal {id}"))
}

fn storage_provider_link(address: &str) -> String {
    link(
        &format!("storage/provider/{}", html::url_segment(address)),
        &html::short(address),
    )
}

pub fn blob_link(id: &str) -> String {
    link(&format!("blob/{}", html::url_segment(id)), &html::short(id))
}

/// Renders deal, provider and blob columns as explorer links.
fn links(column: &str, item: &Value) -> Option<String> {
    match (column, &item[column]) {
        ("deal", Value::Number(n)) => n.as_u64().map(deal_link),
        ("address" | "provider", Value::String(a)) => Some(storage_provider_link(a)),
        ("blob", Value::String(b)) => Some(blob_link(b)),
        _ => None,
    }
}

pub fn overview(source: &dyn Source) -> PageResult {
    let params = source.call(GET_STORAGE_PARAMS, &[])?;
    let providers = source.call(GET_STORAGE_PROVIDERS, &[])?;
    let providers = providers.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut body = String::from("<h2>Parameters</h2>");
    body.push_str(&object_facts(&params, &[]));
    body.push_str(&format!("<h2>Providers ({})</h2>", providers.len()));
    body.push_str(&object_table(
        "storage-providers",
        providers,
        &[
            "address",
            "stake",
            "capacity_bytes",
            "used_bytes",
            "proofs",
            "failures",
        ],
        links,
    ));
    Ok(Html(html::layout("Storage", &body)))
}

pub fn provider(source: &dyn Source, address: &str) -> PageResult {
    let address = super::address(address)?;
    let p = lookup_value(source, GET_STORAGE_PROVIDER, &[json!(address)])?
        .ok_or_else(|| PageError::NotFound(format!("{address} is not a storage provider")))?;
    let mut body = object_facts(&p, &["shards"]);
    let shards = p["shards"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    body.push_str(&format!("<h2>Shards held ({})</h2>", shards.len()));
    body.push_str(&object_table("shards", shards, &["deal", "shard"], links));
    let open = source.call(GET_STORAGE_CHALLENGES, &[json!(address)])?;
    let open = open.as_array().map(Vec::as_slice).unwrap_or_default();
    body.push_str(&format!("<h2>Open challenges ({})</h2>", open.len()));
    body.push_str(&object_table(
        "challenges",
        open,
        &[
            "deal",
            "shard",
            "blob",
            "kind",
            "chunk_index",
            "issued_height",
            "deadline_height",
        ],
        links,
    ));
    Ok(Html(html::layout("Storage provider", &body)))
}

pub fn deal(source: &dyn Source, id: &str) -> PageResult {
    let id = integer(id, "deal id")?;
    let deal = lookup_value(source, GET_STORAGE_DEAL, &[json!(id)])?
        .ok_or_else(|| PageError::NotFound(format!("no storage deal {id}")))?;
    Ok(Html(html::layout(
        &format!("Storage deal {id}"),
        &deal_body(&deal),
    )))
}

fn deal_body(deal: &Value) -> String {
    let mut body = object_facts(deal, &["blob", "shards"]);
    if let Some(blob) = deal["blob"]["id"].as_str() {
        body.push_str(&format!("<p>Blob: {}</p>", blob_link(blob)));
    }
    let shards = deal["shards"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    body.push_str(&format!("<h2>Shards ({})</h2>", shards.len()));
    body.push_str(&object_table(
        "deal-shards",
        shards,
        &[
            "index",
            "provider",
            "proven",
            "challenge",
            "bounty",
            "assignments",
            "waiting",
            "root",
        ],
        links,
    ));
    body
}

pub fn blob(source: &dyn Source, id: &str) -> PageResult {
    if !is_hash(id) {
        return Err(PageError::BadRequest(format!(
            "`{}` is not a blob id (64 hex digits)",
            html::short(id)
        )));
    }
    let id = id.strip_prefix("0x").unwrap_or(id).to_ascii_lowercase();
    let found = lookup_value(source, GET_BLOB, &[json!(id)])?
        .ok_or_else(|| PageError::NotFound(format!("no blob {}", html::short(&id))))?;
    let mut body = object_facts(&found["blob"], &["shard_roots"]);
    if let Some(deal) = found["deal"]["id"].as_u64() {
        body.push_str(&format!("<p>Stored under {}</p>", deal_link(deal)));
    }
    body.push_str("<h2>Shard roots</h2><ol class=\"roots\">");
    for root in found["blob"]["shard_roots"]
        .as_array()
        .into_iter()
        .flatten()
    {
        body.push_str(&format!("<li>{}</li>", escape(root.as_str().unwrap_or(""))));
    }
    body.push_str("</ol>");
    Ok(Html(html::layout("Blob", &body)))
}

/// The deals an account owns, as links (for its account page).
pub fn deals_of(source: &dyn Source, owner: &str) -> Vec<String> {
    super::optional_list(source, GET_STORAGE_DEALS, &[json!(owner)])
        .iter()
        .filter_map(Value::as_u64)
        .map(deal_link)
        .collect()
}

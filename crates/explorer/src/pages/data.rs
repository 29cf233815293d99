//! Data: datasets (record, access price, share asset), contribution pools (validation rule,
//! contributions with the job that weighed each, the pool's weight holders) and labelling
//! tasks; share assets (holders, revenue) shared with models and agents.

use super::{integer, lookup_value, object_facts, object_table};
use crate::html::{self, link};
use crate::{Html, PageError, PageResult, Source};
use piazza_api::economy_method::{GET_ASSET, GET_DATASET, GET_LABEL_TASK, GET_POOL};
use serde_json::{json, Value};

fn links(column: &str, item: &Value) -> Option<String> {
    match (column, &item[column]) {
        ("job", Value::Number(n)) => n.as_u64().map(html::job_link),
        ("pool", Value::Number(n)) => n
            .as_u64()
            .map(|p| link(&format!("pool/{p}"), &format!("pool {p}"))),
        ("dataset", Value::Number(n)) => n
            .as_u64()
            .map(|d| link(&format!("dataset/{d}"), &format!("dataset {d}"))),
        _ => None,
    }
}

pub fn dataset(source: &dyn Source, id: &str) -> PageResult {
    let id = integer(id, "dataset id")?;
    let d = lookup_value(source, GET_DATASET, &[json!(id)])?
        .ok_or_else(|| PageError::NotFound(format!("no dataset {id}")))?;
    let mut body = object_facts(&d, &["pool", "access"]);
    if let Some(pool) = links("pool", &d) {
        body.push_str(&format!("<p>Contribution pool: {pool}</p>"));
    }
    body.push_str(&shares(source, &format!("dataset:{id}"))?);
    Ok(Html(html::layout(&format!("Dataset {id}"), &body)))
}

pub fn pool(source: &dyn Source, id: &str) -> PageResult {
    let id = integer(id, "pool id")?;
    let p = lookup_value(source, GET_POOL, &[json!(id)])?
        .ok_or_else(|| PageError::NotFound(format!("no pool {id}")))?;
    let mut body = object_facts(&p, &["items", "weights", "dataset"]);
    if let Some(dataset) = links("dataset", &p) {
        body.push_str(&format!("<p>Published as {dataset}</p>"));
    }
    let items = p["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    body.push_str(&format!("<h2>Contributions ({})</h2>", items.len()));
    body.push_str(&object_table(
        "contributions",
        items,
        &["contributor", "hash", "job"],
        links,
    ));
    body.push_str(&holders_section(&p["weights"]));
    Ok(Html(html::layout(&format!("Pool {id}"), &body)))
}

pub fn label_task(source: &dyn Source, id: &str) -> PageResult {
    let id = integer(id, "labelling task id")?;
    let t = lookup_value(source, GET_LABEL_TASK, &[json!(id)])?
        .ok_or_else(|| PageError::NotFound(format!("no labelling task {id}")))?;
    let body = object_facts(&t, &[]);
    Ok(Html(html::layout(&format!("Labelling task {id}"), &body)))
}

/// A share asset's section (`model:NAME`, `dataset:ID`, `agent:NAME`): supply, revenue and
/// holders; empty when the asset was never issued.
pub fn shares(source: &dyn Source, asset: &str) -> Result<String, PageError> {
    // A node without the economy module has no such method: no section.
    let Ok(value) = source.call(GET_ASSET, &[json!(asset)]) else {
        return Ok(String::new());
    };
    Ok(holders_section(&value))
}

fn holders_section(asset: &Value) -> String {
    if asset.is_null() {
        return String::new();
    }
    let mut body = String::from("<h2>Shares and royalties</h2>");
    body.push_str(&object_facts(asset, &["holders", "carry_scaled"]));
    let holders = asset["holders"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    body.push_str(&object_table(
        "holders",
        holders,
        &["address", "units", "locked", "claimable"],
        |_, _| None,
    ));
    body
}

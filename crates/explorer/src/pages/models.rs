//! Models: the registry, each record's commitments, its providers and its lineage.

use super::fetch;
use crate::html::{self, account_link, escape, facts, model_link, pza, table};
use crate::{Html, PageError, PageResult, Source};
use piazza_api::economy_method::GET_LINEAGE;
use piazza_api::{compute_method, ModelInfo};
use serde_json::{json, Value};

pub fn list(source: &dyn Source) -> PageResult {
    let models: Vec<ModelInfo> = fetch(source, compute_method::GET_MODELS, &[])?;
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            vec![
                model_link(&m.name),
                escape(&m.kind),
                escape(&m.architecture),
                account_link(&m.owner),
                m.providers.len().to_string(),
            ]
        })
        .collect();
    let body = table(
        "models",
        &["Name", "Kind", "Architecture", "Owner", "Providers"],
        &rows,
    );
    Ok(Html(html::layout("Models", &body)))
}

/// Finds a model record by exact name.
pub(crate) fn find(source: &dyn Source, name: &str) -> Result<Option<ModelInfo>, PageError> {
    let models: Vec<ModelInfo> = fetch(source, compute_method::GET_MODELS, &[])?;
    Ok(models.into_iter().find(|m| m.name == name))
}

/// Most lineage levels drawn (the ledger bounds a lineage to depth 4).
const LINEAGE_DEPTH_MAX: u32 = 8;

/// A lineage tree's parents as nested list items: each a model (linked) or a dataset, with
/// its weight.
fn parents(node: &Value, depth_left: u32) -> String {
    let mut out = String::new();
    for parent in node["parents"].as_array().into_iter().flatten() {
        let source = &parent["source"];
        let label = if let Some(model) = source["model"].as_str() {
            model_link(model)
        } else if let Some(dataset) = source["dataset"].as_u64() {
            html::link(&format!("dataset/{dataset}"), &format!("dataset {dataset}"))
        } else {
            escape(&source.to_string())
        };
        out.push_str(&format!(
            "<li>{label} <small>weight {} bps</small>",
            parent["weight_bps"].as_u64().unwrap_or(0)
        ));
        if depth_left > 1 && parent["lineage"].is_object() {
            out.push_str(&format!(
                "<ul>{}</ul>",
                parents(&parent["lineage"], depth_left - 1)
            ));
        }
        out.push_str("</li>");
    }
    out
}

pub fn model(source: &dyn Source, name: &str) -> PageResult {
    let model = find(source, name)?
        .ok_or_else(|| PageError::NotFound(format!("no model named `{}`", html::short(name))))?;
    let providers: Vec<String> = model
        .providers
        .iter()
        .map(|p| html::provider_link(p))
        .collect();
    let mut body = facts(&[
        ("Name", escape(&model.name)),
        ("Kind", escape(&model.kind)),
        ("Architecture", escape(&model.architecture)),
        ("Owner", account_link(&model.owner)),
        ("License", escape(&model.license)),
        ("Price floor (per unit)", pza(&model.price_floor)),
        ("Weights commitment", escape(&model.weights_commitment)),
        ("Config hash", escape(&model.config_hash)),
        ("Tokenizer hash", escape(&model.tokenizer_hash)),
        ("Providers", providers.join(", ")),
    ]);
    // The lineage method exists once the economy module is in the node; without it, no section.
    if let Ok(lineage) = source.call(GET_LINEAGE, &[json!(model.name)]) {
        if lineage != Value::Null {
            body.push_str(&format!(
                "<h2>Lineage</h2><p>Royalty to parents: <span id=\"royalty\">{}</span> basis \
points of its revenue.</p><ul class=\"lineage\">{}</ul>",
                lineage["royalty_bps"].as_u64().unwrap_or(0),
                parents(&lineage, LINEAGE_DEPTH_MAX)
            ));
        }
    }
    body.push_str(&super::data::shares(
        source,
        &format!("model:{}", model.name),
    )?);
    Ok(Html(html::layout(&format!("Model {}", model.name), &body)))
}

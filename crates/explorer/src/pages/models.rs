//! Models: the registry, each record's commitments, its providers and its lineage.

use super::fetch;
use crate::html::{self, account_link, escape, facts, json_block, model_link, pza, table};
use crate::{Html, PageError, PageResult, Source};
use piazza_api::{compute_method, ModelInfo};
use serde_json::{json, Value};

/// The economy module's lineage method (`[model]` → tree or null).
const GET_LINEAGE: &str = "piazza_getLineage";

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
            body.push_str("<h2>Lineage</h2>");
            body.push_str(&json_block(&lineage));
        }
    }
    Ok(Html(html::layout(&format!("Model {}", model.name), &body)))
}

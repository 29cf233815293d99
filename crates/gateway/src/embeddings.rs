//! `POST /v1/embeddings`: one job per input, submitted together; vectors as floats or base64.

use crate::errors::ApiError;
use crate::market::JobReceipt;
use crate::openai::{self, EmbeddingsRequest};
use crate::params::Endpoint;
use crate::server::{receipt_headers, receipts_json, Gateway};
use crate::EMBEDDING_UNITS_MAX;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use piazza_ledger::compute::JobParams;
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) async fn create(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, request) = gw
        .request::<EmbeddingsRequest>(Endpoint::Embeddings, &headers, body)
        .await?;
    let inputs = request.input.strings("input")?;
    if inputs.is_empty() {
        return Err(ApiError::invalid(
            Some("input"),
            "`input` must not be empty",
        ));
    }
    if inputs.len() > gw.limits.batch_inputs_max {
        return Err(ApiError::invalid(
            Some("input"),
            format!("At most {} inputs per request", gw.limits.batch_inputs_max),
        ));
    }
    // As OpenAI does (and the ledger refuses an empty job input).
    if let Some(i) = inputs.iter().position(String::is_empty) {
        return Err(ApiError::invalid(
            Some("input"),
            format!("`input[{i}]` is an empty string; every input must hold some text"),
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("encoding_format"),
                format!("`encoding_format` must be `float` or `base64`, not `{other}`"),
            ))
        }
    };
    let (model, price) = gw.served_model(&request.model, "embedding").await?;
    let outcomes = gw
        .run_jobs(
            caller,
            &model.info.name,
            inputs.into_iter().map(String::into_bytes).collect(),
            JobParams::default(),
            EMBEDDING_UNITS_MAX,
            price,
        )
        .await?;
    let mut data = Vec::with_capacity(outcomes.len());
    // An embedding job's units are its input tokens.
    let mut tokens = 0u64;
    for (index, outcome) in outcomes.iter().enumerate() {
        if !outcome.output.len().is_multiple_of(4) {
            return Err(ApiError::upstream(format!(
                "job {}: an embedding of {} bytes",
                outcome.receipt.job,
                outcome.output.len()
            )));
        }
        let dims = outcome.output.len() / 4;
        if let Some(asked) = request.dimensions {
            if asked != dims as u64 {
                return Err(ApiError::invalid(
                    Some("dimensions"),
                    format!(
                        "`{}` has {dims} dimensions; other sizes are not supported",
                        model.info.name
                    ),
                ));
            }
        }
        let embedding = if base64 {
            Value::String(openai::base64(&outcome.output))
        } else {
            let floats: Vec<f32> = outcome
                .output
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            json!(floats)
        };
        tokens = tokens.saturating_add(outcome.work_units);
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    let receipts: Vec<&JobReceipt> = outcomes.iter().map(|o| &o.receipt).collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model.info.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "piazza": receipts_json(&receipts),
    });
    Ok((receipt_headers(&receipts), Json(body)).into_response())
}

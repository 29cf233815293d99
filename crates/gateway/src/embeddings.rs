//! `POST /v1/embeddings`: over a session (one request per input, in order) when a provider
//! serves the model's sessions and the request does not ask for jobs (`x-piazza-mode: job`);
//! else one job per input, submitted together. Vectors as floats or base64.

use crate::errors::ApiError;
use crate::market::JobReceipt;
use crate::openai::{self, EmbeddingsRequest};
use crate::params::Endpoint;
use crate::server::{receipt_headers, receipts_json, Gateway};
use crate::sessions::Mode;
use crate::{live, EMBEDDING_UNITS_MAX};
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
    let caller = match Mode::of(&headers)? {
        Mode::Job => caller,
        Mode::Session => {
            let asks = inputs
                .iter()
                .map(|i| live::Ask {
                    input: i.as_bytes().to_vec(),
                    params: JobParams::default(),
                    max_units: EMBEDDING_UNITS_MAX,
                })
                .collect();
            match live::start(&gw, caller, &model, price, asks).await? {
                Ok(underway) => {
                    let answers = underway.finish().await?;
                    let outputs: Vec<_> = answers
                        .iter()
                        .map(|a| {
                            let r = &a.receipt.receipt;
                            (
                                a.output.as_slice(),
                                r.units,
                                format!("session {} request {}", r.session, r.seq),
                            )
                        })
                        .collect();
                    let vectors = vectors(&outputs, request.dimensions, base64, &model.info.name)?;
                    let receipts = (
                        live::receipts_json(&answers),
                        live::receipt_headers(&answers),
                    );
                    return Ok(respond(vectors, &model.info.name, receipts));
                }
                Err(caller) => caller,
            }
        }
    };
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
    let outputs: Vec<_> = outcomes
        .iter()
        .map(|o| {
            (
                o.output.as_slice(),
                o.work_units,
                format!("job {}", o.receipt.job),
            )
        })
        .collect();
    let vectors = vectors(&outputs, request.dimensions, base64, &model.info.name)?;
    let receipts: Vec<&JobReceipt> = outcomes.iter().map(|o| &o.receipt).collect();
    let receipts = (receipts_json(&receipts), receipt_headers(&receipts));
    Ok(respond(vectors, &model.info.name, receipts))
}

/// Each answer `(output, units, what answered it)` as an OpenAI embedding, and the tokens
/// (units) of all of them.
fn vectors(
    outputs: &[(&[u8], u64, String)],
    dimensions: Option<u64>,
    base64: bool,
    model: &str,
) -> Result<(Vec<Value>, u64), ApiError> {
    let mut data = Vec::with_capacity(outputs.len());
    // An embedding's units are its input tokens.
    let mut tokens = 0u64;
    for (index, (output, units, what)) in outputs.iter().enumerate() {
        if !output.len().is_multiple_of(4) {
            return Err(ApiError::upstream(format!(
                "{what}: an embedding of {} bytes",
                output.len()
            )));
        }
        let dims = output.len() / 4;
        if let Some(asked) = dimensions {
            if asked != dims as u64 {
                return Err(ApiError::invalid(
                    Some("dimensions"),
                    format!("`{model}` has {dims} dimensions; other sizes are not supported"),
                ));
            }
        }
        let embedding = if base64 {
            Value::String(openai::base64(output))
        } else {
            let floats: Vec<f32> = output
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            json!(floats)
        };
        tokens = tokens.saturating_add(*units);
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    Ok((data, tokens))
}

/// The OpenAI answer: the vectors, their tokens, and the receipts (JSON and headers).
fn respond(
    (data, tokens): (Vec<Value>, u64),
    model: &str,
    (piazza, headers): (Value, HeaderMap),
) -> Response {
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "piazza": piazza,
    });
    (headers, Json(body)).into_response()
}

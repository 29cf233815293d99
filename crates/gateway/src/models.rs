//! `GET /v1/models`: the chain's models, with their records and providers in `piazza`.

use crate::errors::ApiError;
use crate::server::Gateway;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) async fn list(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _caller = gw.admit(&headers).await?;
    let catalogue = gw.market.catalogue().await?;
    let data: Vec<Value> = catalogue
        .values()
        .map(|m| {
            json!({
                "id": m.info.name,
                "object": "model",
                "created": 0,
                "owned_by": m.info.owner,
                "piazza": {
                    "kind": m.info.kind,
                    "architecture": m.info.architecture,
                    "weights_commitment": m.info.weights_commitment,
                    "tokenizer_hash": m.info.tokenizer_hash,
                    "config_hash": m.info.config_hash,
                    "license": m.info.license,
                    "providers": m.info.providers,
                    "price_per_unit": m.price_per_unit.map(|p| p.base_units().to_string()),
                }
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

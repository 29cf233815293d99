//! Semantic search latency with the real MiniLM from the models directory: the first request
//! (model load and `RECORDS_EMBEDDED_MAX` record embeddings), the next (the rest), then a fully
//! cached one (only the query is embedded). Prints milliseconds; asserts nothing.

use axum::body::Body;
use axum::http::Request;
use piazza_api::compute_method;
use piazza_explorer::{router_with, Embedding, Source, SourceError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt;

/// Agents on the chain searched.
const AGENTS: u64 = 100;

struct Chain;

impl Source for Chain {
    fn call(&self, name: &str, params: &[Value]) -> Result<Value, SourceError> {
        let id = params.first().and_then(Value::as_u64);
        Ok(match (name, id) {
            (compute_method::GET_MODELS, _) => json!([]),
            ("piazza_getAgent", Some(n)) if n < AGENTS => json!({"id": n,
                "name": format!("agent-{n}"),
                "description": format!("answers questions about topic number {n} in detail"),
                "tags": ["questions"]}),
            _ => Value::Null,
        })
    }
}

#[tokio::main]
async fn main() {
    let dir = piazza_engine::models_dir().join("minilm");
    let embedding = piazza_node::rpc::minilm::embedding_from(&dir);
    if let Embedding::Unavailable(why) = &embedding {
        println!("skipped: {why}");
        return;
    }
    let app = router_with(Arc::new(Chain), embedding);
    for label in [
        "first (load + embed)",
        "second (the rest)",
        "cached (query only)",
    ] {
        let start = Instant::now();
        let response = app
            .clone()
            .oneshot(
                Request::get("/semantic?q=who%20knows%20about%20topic%207")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await;
        println!(
            "{label}: {} ms ({status}, {AGENTS} agents)",
            start.elapsed().as_millis()
        );
    }
}

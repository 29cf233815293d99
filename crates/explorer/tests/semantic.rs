//! Semantic search: with the network's MiniLM from the models directory a query finds the
//! record closest in meaning, not by shared words; without the model the page says why; the
//! query and the records embedded per request are bounded.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use piazza_api::{compute_method, ModelInfo};
use piazza_explorer::semantic::{RECORDS_EMBEDDED_MAX, SEMANTIC_MODEL};
use piazza_explorer::{
    router, router_with, Embed, Embedding, Source, SourceError, QUERY_BYTES_MAX,
};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

/// A chain of two models, one dataset and `agents` agents (the first two described below).
struct Chain {
    agents: u64,
}

fn model(name: &str, kind: &str, architecture: &str) -> ModelInfo {
    ModelInfo {
        name: name.into(),
        kind: kind.into(),
        architecture: architecture.into(),
        config_hash: "33".repeat(32),
        weights_commitment: "44".repeat(32),
        tokenizer_hash: "55".repeat(32),
        owner: "pz1alice".into(),
        license: "apache-2.0".into(),
        price_floor: "1000".into(),
        providers: vec![],
        numeric: "f32".into(),
        files: None,
    }
}

impl Source for Chain {
    fn call(&self, name: &str, params: &[Value]) -> Result<Value, SourceError> {
        let id = params.first().and_then(Value::as_u64);
        Ok(match (name, id) {
            (compute_method::GET_MODELS, _) => json!([
                model(SEMANTIC_MODEL, "embedding", "bert"),
                model("smollm2", "generation", "llama")
            ]),
            ("piazza_getDataset", Some(0)) => json!({"id": 0, "schema": "text/csv",
                "description": "weather station temperature readings", "license": "cc-by-4.0"}),
            ("piazza_getAgent", Some(0)) => json!({"id": 0, "name": "lingua",
                "description": "translates French text", "tags": ["translation"]}),
            ("piazza_getAgent", Some(1)) => json!({"id": 1, "name": "digest",
                "description": "summarises PDFs", "tags": ["documents"]}),
            ("piazza_getAgent", Some(n)) if n < self.agents => json!({"id": n,
                "name": format!("agent-{n}"), "description": "does chores", "tags": []}),
            _ => Value::Null,
        })
    }
}

async fn get(app: axum::Router, path: &str) -> (StatusCode, String) {
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn query_path(q: &str) -> String {
    let encoded: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/semantic?q={encoded}")
}

/// The names in the results table, best first.
fn ranked(page: &str, names: &[&str]) -> Vec<String> {
    let mut found: Vec<(usize, String)> = names
        .iter()
        .filter_map(|n| Some((page.find(&format!(">{n}</a>"))?, n.to_string())))
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

fn minilm() -> Option<Embedding> {
    let dir = piazza_engine::models_dir().join("minilm");
    match piazza_node::rpc::minilm::embedding_from(&dir) {
        Embedding::Unavailable(why) => {
            eprintln!("SKIPPED: the real MiniLM is absent: {why}");
            None
        }
        available => Some(available),
    }
}

/// Checks that `query` ranks `best` first among the records.
async fn check(embedding: &Embedding, query: &str, best: &str) {
    let app = router_with(Arc::new(Chain { agents: 2 }), embedding.clone());
    let (status, page) = get(app, &query_path(query)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let order = ranked(
        &page,
        &["lingua", "digest", "dataset 0", SEMANTIC_MODEL, "smollm2"],
    );
    assert_eq!(order.len(), 5, "{page}");
    assert_eq!(order[0], best, "query {query:?} ranked {order:?}");
    assert!(page.contains("<td>agent</td>"), "{page}");
}

#[tokio::test]
async fn the_real_minilm_finds_records_by_meaning() {
    let Some(embedding) = minilm() else { return };
    // The query shares no word with the winning record's name, and is no substring of it.
    check(
        &embedding,
        "convert this into English from French",
        "lingua",
    )
    .await;
    check(
        &embedding,
        "condense a long report into a few lines",
        "digest",
    )
    .await;
    check(&embedding, "how hot was it outside yesterday", "dataset 0").await;
}

#[tokio::test]
async fn without_a_model_the_page_says_why_and_key_search_still_works() {
    let (status, page) = get(router(Arc::new(Chain { agents: 2 })), &query_path("French")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("Semantic search is unavailable"), "{page}");
    assert!(page.contains(piazza_explorer::NO_EMBEDDER), "{page}");

    let missing = std::env::temp_dir().join("piazza-explorer-no-such-minilm");
    let embedding = piazza_node::rpc::minilm::embedding_from(&missing);
    let app = router_with(Arc::new(Chain { agents: 2 }), embedding);
    let (status, page) = get(app.clone(), &query_path("French")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("model.safetensors is missing"), "{page}");
    let (status, _) = get(app, &format!("/search?q={SEMANTIC_MODEL}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

/// Counts the texts it is asked to embed; every vector points the same way.
struct Counting(AtomicUsize);

impl Embed for Counting {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self.0.fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
    }
}

#[tokio::test]
async fn records_embedded_per_request_and_query_bytes_are_bounded() {
    let counting = Arc::new(Counting(AtomicUsize::new(0)));
    let records = 2 + 1 + 100usize; // models, dataset, agents
    let app = router_with(
        Arc::new(Chain { agents: 100 }),
        Embedding::Available(counting.clone()),
    );
    let (status, page) = get(app.clone(), &query_path("chores")).await;
    assert_eq!(status, StatusCode::OK);
    // The records one request embeds, and the query.
    assert_eq!(counting.0.load(Ordering::SeqCst), RECORDS_EMBEDDED_MAX + 1);
    let waiting = records - RECORDS_EMBEDDED_MAX;
    assert!(
        page.contains(&format!("{waiting} records are not embedded yet")),
        "{page}"
    );
    // The next request embeds the rest (the first ones are cached), then nothing waits.
    let (_, page) = get(app.clone(), &query_path("chores")).await;
    assert_eq!(counting.0.load(Ordering::SeqCst), records + 2);
    assert!(!page.contains("not embedded yet"), "{page}");

    let long = "a".repeat(QUERY_BYTES_MAX + 1);
    let (status, page) = get(app, &query_path(&long)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains(&format!("at most {QUERY_BYTES_MAX}")),
        "{page}"
    );
}

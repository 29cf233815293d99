//! Piazza's block explorer: HTML pages for the chain, its accounts, models, providers, jobs and
//! disputes, served by the node at [`BASE_PATH`].
//!
//! The pages are rendered on the server from the node's own JSON-RPC methods, called in process
//! through [`Source`] (no HTTP round trip); the only script is a small embedded file that
//! subscribes to new blocks over the node's WebSocket. Nothing is fetched from another origin.
//!
//! Invariants:
//! - Every value from the chain is HTML-escaped ([`html::escape`]) before it reaches a page.
//! - Untrusted path and query text is bounded ([`QUERY_BYTES_MAX`]) and parsed before any call;
//!   an unknown id answers 404, a malformed one 400, a node that cannot answer 503 — never 500.
//! - One page module per ledger module (`pages::chain`, `pages::bank`, `pages::models`,
//!   `pages::compute`, `pages::verify`, `pages::storage`, `pages::data`, `pages::agents`), so a
//!   new module adds a file and a route.
//! - Semantic search ([`semantic`]) reaches an embedding model only through [`Embed`], supplied
//!   by whoever mounts the explorer ([`mounted_with`]); without one its page says why.
//! - The account page's state proof is checked in the browser (`assets/proof.js`: BLAKE3 and
//!   the Jellyfish Merkle proof, as `piazza_client::verify_account_proof` checks it in Rust).
//!
//! ```no_run
//! # fn mount(source: std::sync::Arc<dyn piazza_explorer::Source>) -> axum::Router {
//! axum::Router::new().merge(piazza_explorer::mounted(source))
//! # }
//! ```

pub mod html;
mod pages;
pub mod semantic;

pub use semantic::{Embed, Embedding};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use std::sync::Arc;

/// Where the node mounts the explorer.
pub const BASE_PATH: &str = "/explorer";
/// Longest search query or path id accepted; longer ones answer 400 before any lookup.
pub const QUERY_BYTES_MAX: usize = 256;
/// Blocks listed on the status page (and used for its block rate).
pub const RECENT_BLOCKS_MAX: u64 = 20;

/// The node's RPC methods, called in process. `params` are the JSON-RPC parameters.
pub trait Source: Send + Sync + 'static {
    fn call(&self, method: &str, params: &[Value]) -> Result<Value, SourceError>;
}

/// A method's refusal: its JSON-RPC error code and message.
#[derive(Debug, Clone)]
pub struct SourceError {
    pub code: i64,
    pub message: String,
}

/// Why a page is not shown.
#[derive(Debug)]
pub enum PageError {
    /// The id is well formed but nothing has it.
    NotFound(String),
    /// The id or query is malformed or too long.
    BadRequest(String),
    /// The node could not answer.
    Unavailable(String),
}

impl From<SourceError> for PageError {
    fn from(e: SourceError) -> Self {
        if e.code == piazza_api::error_code::INVALID_PARAMS {
            PageError::BadRequest(e.message)
        } else {
            PageError::Unavailable(e.message)
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            PageError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The node could not answer",
                m,
            ),
        };
        let body = format!("<p class=\"error\">{}</p>", html::escape(&message));
        (status, Html(html::layout(title, &body))).into_response()
    }
}

/// A rendered page (already a whole document).
pub struct Html(pub String);

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self'; img-src 'self' data:",
                ),
            ],
            self.0,
        )
            .into_response()
    }
}

pub(crate) type PageResult = Result<Html, PageError>;

type Shared = Arc<dyn Source>;

/// Why [`router`] and [`mounted`] have no semantic search.
pub const NO_EMBEDDER: &str = "this server was started without an embedding model";

/// The explorer's routes, relative to where they are mounted ([`BASE_PATH`]), without semantic
/// search (its page says why).
pub fn router(source: Arc<dyn Source>) -> Router {
    router_with(source, Embedding::Unavailable(NO_EMBEDDER.into()))
}

/// The explorer's routes with semantic search over `embedding`.
pub fn router_with(source: Arc<dyn Source>, embedding: Embedding) -> Router {
    let semantic: semantic::SharedSemantic =
        Arc::new((source.clone(), semantic::Semantic::new(embedding)));
    let semantic_route = Router::new()
        .route("/semantic", get(semantic_search))
        .with_state(semantic);
    Router::new()
        .route("/", get(status))
        .route("/assets/style.css", get(style))
        .route("/assets/explorer.js", get(script))
        .route("/assets/proof.js", get(proof_script))
        .route("/block/{id}", get(block))
        .route("/tx/{hash}", get(tx))
        .route("/account/{address}", get(account))
        .route("/models", get(models))
        .route("/model/{name}", get(model))
        .route("/provider/{address}", get(provider))
        .route("/job/{id}", get(job))
        .route("/dispute/{id}", get(dispute))
        .route("/search", get(search))
        .route("/storage", get(storage))
        .route("/storage/provider/{address}", get(storage_provider))
        .route("/storage/deal/{id}", get(storage_deal))
        .route("/blob/{id}", get(blob))
        .route("/dataset/{id}", get(dataset))
        .route("/pool/{id}", get(pool))
        .route("/label-task/{id}", get(label_task))
        .route("/agents", get(agents))
        .route("/agent/{id}", get(agent))
        .route("/agent-call/{id}", get(agent_call))
        .fallback(|| async { PageError::NotFound("no such explorer page".into()) })
        .with_state(source)
        .merge(semantic_route)
}

/// The explorer mounted at [`BASE_PATH`], answering `BASE_PATH/` (with a trailing slash) too:
/// a nested router answers only the bare path. Merge it into the node's router.
pub fn mounted(source: Arc<dyn Source>) -> Router {
    mounted_with(source, Embedding::Unavailable(NO_EMBEDDER.into()))
}

/// [`mounted`] with semantic search over `embedding`.
pub fn mounted_with(source: Arc<dyn Source>, embedding: Embedding) -> Router {
    Router::new()
        .route(&format!("{BASE_PATH}/"), get(status))
        .with_state(source.clone())
        .nest(BASE_PATH, router_with(source, embedding))
}

/// Refuses path or query text over [`QUERY_BYTES_MAX`].
pub(crate) fn bounded(text: &str) -> Result<&str, PageError> {
    if text.len() > QUERY_BYTES_MAX {
        return Err(PageError::BadRequest(format!(
            "{} bytes given, at most {QUERY_BYTES_MAX}",
            text.len()
        )));
    }
    Ok(text.trim())
}

async fn status(State(s): State<Shared>) -> PageResult {
    pages::chain::status(s.as_ref())
}

async fn block(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::chain::block(s.as_ref(), bounded(&id)?)
}

async fn tx(State(s): State<Shared>, Path(hash): Path<String>) -> PageResult {
    pages::chain::tx(s.as_ref(), bounded(&hash)?)
}

async fn account(State(s): State<Shared>, Path(address): Path<String>) -> PageResult {
    pages::bank::account(s.as_ref(), bounded(&address)?)
}

async fn models(State(s): State<Shared>) -> PageResult {
    pages::models::list(s.as_ref())
}

async fn model(State(s): State<Shared>, Path(name): Path<String>) -> PageResult {
    pages::models::model(s.as_ref(), bounded(&name)?)
}

async fn provider(State(s): State<Shared>, Path(address): Path<String>) -> PageResult {
    pages::compute::provider(s.as_ref(), bounded(&address)?)
}

async fn job(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::compute::job(s.as_ref(), bounded(&id)?)
}

async fn dispute(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::verify::dispute(s.as_ref(), bounded(&id)?)
}

async fn storage(State(s): State<Shared>) -> PageResult {
    pages::storage::overview(s.as_ref())
}

async fn storage_provider(State(s): State<Shared>, Path(address): Path<String>) -> PageResult {
    pages::storage::provider(s.as_ref(), bounded(&address)?)
}

async fn storage_deal(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::storage::deal(s.as_ref(), bounded(&id)?)
}

async fn blob(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::storage::blob(s.as_ref(), bounded(&id)?)
}

async fn dataset(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::data::dataset(s.as_ref(), bounded(&id)?)
}

async fn pool(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::data::pool(s.as_ref(), bounded(&id)?)
}

async fn label_task(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::data::label_task(s.as_ref(), bounded(&id)?)
}

async fn agent(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::agents::agent(s.as_ref(), bounded(&id)?)
}

async fn agent_call(State(s): State<Shared>, Path(id): Path<String>) -> PageResult {
    pages::agents::call(s.as_ref(), bounded(&id)?)
}

#[derive(serde::Deserialize)]
struct TagQuery {
    #[serde(default)]
    tag: String,
}

async fn agents(
    State(s): State<Shared>,
    query: Result<Query<TagQuery>, QueryRejection>,
) -> PageResult {
    let tag = query
        .map_err(|e| PageError::BadRequest(e.body_text()))?
        .0
        .tag;
    pages::agents::find(s.as_ref(), &tag)
}

#[derive(serde::Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn search(
    State(s): State<Shared>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q.q,
        Err(e) => return PageError::BadRequest(e.body_text()).into_response(),
    };
    match pages::search::search(s.as_ref(), &q) {
        Ok(pages::search::Found::Page(path)) => {
            Redirect::to(&format!("{BASE_PATH}/{path}")).into_response()
        }
        Ok(pages::search::Found::Choices(page)) => page.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn semantic_search(
    State(s): State<semantic::SharedSemantic>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> PageResult {
    let q = query.map_err(|e| PageError::BadRequest(e.body_text()))?.0.q;
    // Embedding is CPU work (a first search loads the model): off the async workers.
    tokio::task::spawn_blocking(move || semantic::search(s.0.as_ref(), &s.1, &q))
        .await
        .map_err(|e| PageError::Unavailable(format!("the semantic search stopped: {e}")))?
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/style.css"),
    )
        .into_response()
}

async fn script() -> Response {
    javascript(include_str!("../assets/explorer.js"))
}

async fn proof_script() -> Response {
    javascript(include_str!("../assets/proof.js"))
}

fn javascript(source: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        source,
    )
        .into_response()
}

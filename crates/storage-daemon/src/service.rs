//! The shard service's routes.
//!
//! - `PUT /v1/deals/{deal}/shards/{index}`: the body is shard `index` of the deal's blob. Taken
//!   only when the chain assigns that shard to this provider ([`Assignments`]), of exactly the
//!   record's `shard_len` bytes and hashing to the record's root; durable when answered `201`.
//! - `GET /v1/shards/{blob}/{index}`: a stored shard, re-hashed against its root before it is
//!   sent (`x-piazza-root` names it); a corrupted copy is refused (`500`), never sent.
//! - `GET /v1/status`: bytes used and offered, shards held.
//!
//! Errors are JSON `{"error": "..."}` with a status that says whose fault it was.

use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use piazza_blob::erasure::SHARD_BYTES_MAX;
use piazza_blob::store::{ShardKey, ShardStore, StoreError};
use piazza_primitives::Hash;
use tokio::sync::Semaphore;

use crate::server::{read_body, BodyError, ServerLimits};

/// The header naming a served shard's root.
pub const ROOT_HEADER: &str = "x-piazza-root";

/// A shard the chain assigns to this provider: which blob, what it must hash to, how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub blob: Hash,
    pub root: Hash,
    pub shard_len: u64,
}

/// What the shard service asks the chain before it takes an upload.
#[async_trait::async_trait]
pub trait Assignments: Send + Sync + 'static {
    /// Shard `shard` of deal `deal`, when the chain assigns it to this provider now.
    async fn assigned(&self, deal: u64, shard: u16) -> Result<Option<Assigned>, String>;
}

/// The service's state.
pub struct ShardService {
    pub store: Arc<ShardStore>,
    pub assignments: Arc<dyn Assignments>,
    pub limits: ServerLimits,
    in_memory: Semaphore,
}

impl ShardService {
    pub fn new(
        store: Arc<ShardStore>,
        assignments: Arc<dyn Assignments>,
        limits: ServerLimits,
    ) -> Arc<ShardService> {
        let in_memory = Semaphore::new(limits.shards_in_memory_max);
        Arc::new(ShardService {
            store,
            assignments,
            limits,
            in_memory,
        })
    }

    /// Binds `listen` and serves this service's routes under its limits.
    pub async fn start(
        self: &Arc<ShardService>,
        listen: std::net::SocketAddr,
    ) -> std::io::Result<crate::server::ServerHandle> {
        crate::server::start(listen, self.router(), self.limits.clone()).await
    }

    /// The routes, on this service.
    pub fn router(self: &Arc<ShardService>) -> Router {
        Router::new()
            .route("/v1/deals/{deal}/shards/{index}", put(put_shard))
            .route("/v1/shards/{blob}/{index}", get(get_shard))
            .route("/v1/status", get(status))
            .with_state(Arc::clone(self))
    }
}

/// A refusal: its status and one line.
#[derive(Debug)]
pub struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Refusal {
    Refusal(status, message.to_string())
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        let status = match &e {
            StoreError::Missing { .. } | StoreError::ChunkIndex { .. } => StatusCode::NOT_FOUND,
            StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::RootMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        refuse(status, e)
    }
}

fn parse<T: FromStr>(what: &str, text: &str) -> Result<T, Refusal> {
    text.parse()
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, format!("bad {what}: {text:?}")))
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?
        .map_err(Refusal::from)
}

fn room(service: &ShardService) -> Result<tokio::sync::SemaphorePermit<'_>, Refusal> {
    service.in_memory.try_acquire().map_err(|_| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many shards in flight, retry later",
        )
    })
}

async fn put_shard(
    State(service): State<Arc<ShardService>>,
    Path((deal, index)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, Refusal> {
    let deal: u64 = parse("deal", &deal)?;
    let index: u16 = parse("shard index", &index)?;
    let assigned = service
        .assignments
        .assigned(deal, index)
        .await
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, format!("chain: {e}")))?
        .ok_or_else(|| {
            refuse(
                StatusCode::FORBIDDEN,
                format!("shard {index} of deal {deal} is not assigned to this provider"),
            )
        })?;
    if assigned.shard_len > SHARD_BYTES_MAX {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "shard over the limit",
        ));
    }
    let _permit = room(&service)?;
    let bytes = read_body(body, assigned.shard_len, &service.limits)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { .. } => refuse(StatusCode::PAYLOAD_TOO_LARGE, e),
            BodyError::TooSlow { .. } => refuse(StatusCode::REQUEST_TIMEOUT, e),
            BodyError::Broken(_) => refuse(StatusCode::BAD_REQUEST, e),
        })?;
    if bytes.len() as u64 != assigned.shard_len {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "shard of {} bytes, the deal's shards have {}",
                bytes.len(),
                assigned.shard_len
            ),
        ));
    }
    let store = Arc::clone(&service.store);
    let key = ShardKey {
        blob: assigned.blob,
        index,
    };
    blocking(move || store.put(&key, &assigned.root, &bytes)).await?;
    Ok(StatusCode::CREATED)
}

async fn get_shard(
    State(service): State<Arc<ShardService>>,
    Path((blob, index)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let key = ShardKey {
        blob: parse("blob id", &blob)?,
        index: parse("shard index", &index)?,
    };
    let _permit = room(&service)?;
    let store = Arc::clone(&service.store);
    let (root, bytes) = blocking(move || store.get(&key)).await?;
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&root.to_hex()) {
        headers.insert(ROOT_HEADER, value);
    }
    Ok(response)
}

async fn status(State(service): State<Arc<ShardService>>) -> Result<Response, Refusal> {
    let store = Arc::clone(&service.store);
    let shards = blocking(move || store.list()).await?.len();
    Ok(Json(serde_json::json!({
        "used_bytes": service.store.used_bytes(),
        "bytes_max": service.store.bytes_max(),
        "shards": shards,
    }))
    .into_response())
}

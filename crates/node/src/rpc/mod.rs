//! JSON-RPC 2.0 over HTTP (`POST /`) and WebSocket (`GET /ws`), plus `/metrics` and `/health`.
//! This module is the node's only JSON: it maps domain types to `piazza_api` shapes here.
//!
//! - [`server`]: the accept loop: connection caps (total and per source address), header and
//!   idle timeouts, eviction of idle connections when full.
//! - [`framing`]: HTTP bodies read under a size and time limit, the large-body budget, batches,
//!   the JSON pre-scan that refuses oversized shapes before any `serde_json::Value` is built.
//! - `methods`: the typed methods; `convert`: domain → `piazza_api` shapes.
//! - `ws`: WebSocket sockets; each block's notifications are rendered once and shared.
//!
//! Every limit is a field of [`RpcLimits`]; the threat model is in `docs/threat-model.md`.

mod agents;
mod consensus;
mod convert;
mod economy;
pub mod framing;
mod methods;
pub mod minilm;
pub mod server;
mod sessions;
mod storage;
mod ws;

pub use convert::message_json;
pub use framing::clip;
/// Where the explorer's pages are served on the RPC address.
pub use piazza_explorer::BASE_PATH as EXPLORER_PATH;

use crate::app::App;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// Largest JSON-RPC request body over HTTP: twice the evidence size class as hex, plus framing.
/// Bodies above [`RpcLimits::small_body_bytes_max`] need room in the large-body budget.
pub const RPC_BODY_BYTES_MAX: usize = 2 * piazza_ledger::tx::EVIDENCE_TX_BYTES_MAX + 64 * 1024;
/// Most calls in one JSON-RPC batch.
pub const RPC_BATCH_MAX: usize = 100;
/// Most subscriptions one WebSocket may hold.
pub const SUBSCRIPTIONS_PER_SOCKET_MAX: usize = 16;
/// Most JSON values (scalars, arrays, objects) in one request body, counted before parsing.
pub const RPC_JSON_VALUES_MAX: usize = 20_000;
/// JSON-RPC error code for a request refused because a server-wide budget is in use (retry later).
pub const SERVER_BUSY: i64 = -32005;

/// The server's limits. Defaults suit a public node; tests shrink them.
#[derive(Debug, Clone)]
pub struct RpcLimits {
    /// Open HTTP connections (not counting upgraded WebSockets). When full, the oldest idle
    /// connection is closed to admit a new one; with none idle, the new one is refused.
    pub connections_max: usize,
    /// Open HTTP connections from one IP address.
    pub connections_per_address_max: usize,
    /// Time to receive a request's headers, counted from when the connection is idle (so it also
    /// bounds an idle keep-alive connection).
    pub header_read_timeout_ms: u64,
    /// Time to receive a small body.
    pub body_read_timeout_ms: u64,
    /// Time to receive a large body (one admitted through the large-body budget).
    pub large_body_read_timeout_ms: u64,
    /// Bodies up to this size are read without the large-body budget.
    pub small_body_bytes_max: usize,
    /// Bytes of large bodies being read or answered at once, all connections together.
    pub large_bodies_bytes_max: usize,
    /// How long a large body may wait for room in the budget before it is refused.
    pub large_body_wait_ms: u64,
    /// Request handlers running at once (each holds a parsed body).
    pub handlers_max: usize,
    /// Open WebSockets.
    pub sockets_max: usize,
    /// Open WebSockets from one IP address.
    pub sockets_per_address_max: usize,
    /// Largest message a client may send on a WebSocket.
    pub socket_message_bytes_max: usize,
    /// Notification bytes published after the block a socket is sending that may wait for it;
    /// past this the socket is closed as too slow (one block, however large, always fits).
    pub socket_queue_bytes_max: usize,
    /// Time one outgoing WebSocket message may take to be written before the socket is closed.
    pub socket_send_timeout_ms: u64,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            connections_max: 512,
            connections_per_address_max: 256,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            large_body_read_timeout_ms: 60_000,
            small_body_bytes_max: 1024 * 1024,
            large_bodies_bytes_max: 4 * RPC_BODY_BYTES_MAX,
            large_body_wait_ms: 2_000,
            handlers_max: 32,
            sockets_max: 512,
            sockets_per_address_max: 64,
            socket_message_bytes_max: 256 * 1024,
            socket_queue_bytes_max: 16 * 1024 * 1024,
            socket_send_timeout_ms: 10_000,
        }
    }
}

/// What every handler shares.
pub(crate) struct RpcState {
    pub app: Arc<App>,
    pub limits: RpcLimits,
    pub bodies: framing::Budgets,
    pub hub: Arc<ws::Hub>,
    pub sockets: ws::SocketCaps,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl RpcState {
    pub(crate) fn new(
        app: Arc<App>,
        limits: RpcLimits,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<RpcState> {
        let hub = ws::Hub::start(&app, shutdown.clone());
        Arc::new(RpcState {
            bodies: framing::Budgets::new(&limits),
            sockets: ws::SocketCaps::default(),
            hub,
            app,
            limits,
            shutdown,
        })
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

pub(crate) fn router(state: Arc<RpcState>) -> Router {
    let explorer = piazza_explorer::mounted_with(
        Arc::new(ExplorerSource(state.app.clone())),
        minilm::embedding(),
    );
    Router::new()
        .route("/", post(framing::http_rpc))
        .route("/ws", get(ws::upgrade))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .with_state(state)
        .merge(explorer)
}

/// The explorer's pages read through the same typed methods as JSON-RPC, in process; only
/// reading methods (`piazza_status`, `piazza_get…`, `piazza_find…`) are reachable from it.
struct ExplorerSource(Arc<App>);

impl piazza_explorer::Source for ExplorerSource {
    fn call(
        &self,
        name: &str,
        params: &[serde_json::Value],
    ) -> Result<serde_json::Value, piazza_explorer::SourceError> {
        let reading = name == piazza_api::method::STATUS
            || name.starts_with("piazza_get")
            || name.starts_with("piazza_find");
        if !reading {
            return Err(piazza_explorer::SourceError {
                code: piazza_api::error_code::METHOD_NOT_FOUND,
                message: format!("the explorer only reads: `{}`", clip(name)),
            });
        }
        methods::dispatch(&self.0, name, params).map_err(|e| piazza_explorer::SourceError {
            code: e.code,
            message: e.message,
        })
    }
}

async fn metrics(State(state): State<Arc<RpcState>>) -> Response {
    let body = state.app.metrics.render(state.app.mempool_size());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

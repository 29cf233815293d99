//! The provider's HTTP server: the storage daemon's accept loop
//! (`piazza_storage_daemon::server::serve`) under connection caps and timeouts, serving an
//! axum router (the session endpoint, `crate::session`).
//!
//! - At most [`ServerLimits::connections_max`] connections, and
//!   [`ServerLimits::connections_per_address_max`] from one IP address; a connection over
//!   either cap is closed at once (refused, never queued).
//! - hyper closes a connection that takes longer than `header_read_timeout_ms` to send a
//!   request's headers (a new one or a keep-alive one between requests).
//! - Bodies are read by [`read_body`] under a size limit and a time limit.
//! - Streamed answers are written through a bounded channel; a reader that takes no event for
//!   `stream_stall_ms` is dropped (see `crate::session`).

use axum::body::{Body, Bytes};
use piazza_storage_daemon::server::ConnectionLimits;
use std::net::SocketAddr;
use std::time::Duration;

/// Every bound of the provider's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    pub connections_max: usize,
    pub connections_per_address_max: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub body_bytes_max: usize,
    /// Requests running on the engine at once; one more is refused (`busy`), never queued.
    pub runs_max: usize,
    /// Sessions this provider keeps channels for; a new one past it is refused.
    pub sessions_max: usize,
    /// Events queued for one streamed answer.
    pub stream_events_max: usize,
    /// How long a streamed answer waits for its reader to take an event before giving up.
    pub stream_stall_ms: u64,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            connections_max: 256,
            connections_per_address_max: 16,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            body_bytes_max: piazza_session::wire::BODY_BYTES_MAX,
            runs_max: 2,
            sessions_max: 4_096,
            stream_events_max: 64,
            stream_stall_ms: 30_000,
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body over {max} bytes")]
    TooLarge { max: usize },
    #[error("body not received within {ms} ms")]
    TooSlow { ms: u64 },
    #[error("body could not be read: {0}")]
    Broken(String),
}

/// Reads `body` whole, at most `limits.body_bytes_max` bytes within
/// `limits.body_read_timeout_ms`.
pub async fn read_body(body: Body, limits: &ServerLimits) -> Result<Bytes, BodyError> {
    use futures_util::StreamExt;
    let max = limits.body_bytes_max;
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
            if bytes.len() + chunk.len() > max {
                return Err(BodyError::TooLarge { max });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    };
    let ms = limits.body_read_timeout_ms;
    tokio::time::timeout(Duration::from_millis(ms), read)
        .await
        .unwrap_or(Err(BodyError::TooSlow { ms }))
}

/// A running server (the storage daemon's accept loop, shared).
pub use piazza_storage_daemon::server::ServerHandle;

/// Binds `listen` and serves `router` under `limits` until [`ServerHandle::shutdown`], on
/// the accept loop the storage daemon's shard service also runs on.
pub async fn start(
    listen: SocketAddr,
    router: axum::Router,
    limits: ServerLimits,
) -> std::io::Result<ServerHandle> {
    let connections = ConnectionLimits {
        connections_max: limits.connections_max,
        connections_per_address_max: limits.connections_per_address_max,
        header_read_timeout_ms: limits.header_read_timeout_ms,
    };
    piazza_storage_daemon::server::serve(listen, router, connections).await
}

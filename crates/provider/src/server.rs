//! The provider's HTTP server: an accept loop on hyper under connection caps and timeouts,
//! serving an axum router (the session endpoint, `crate::session`).
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
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Pause after a failed accept (for instance out of file descriptors) before the next one.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 20;
/// How long shutdown waits for open connections to finish.
const SHUTDOWN_DRAIN_MS: u64 = 2_000;

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

/// Open connections, per address, under the caps.
#[derive(Default)]
struct Connections {
    open: usize,
    per_address: BTreeMap<IpAddr, usize>,
}

/// A connection's place; given back when dropped.
struct Place {
    connections: Arc<Mutex<Connections>>,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut c = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        c.open -= 1;
        if let Some(n) = c.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_address.remove(&self.ip);
            }
        }
    }
}

fn admit(
    connections: &Arc<Mutex<Connections>>,
    ip: IpAddr,
    limits: &ServerLimits,
) -> Option<Place> {
    let mut c = connections.lock().unwrap_or_else(|e| e.into_inner());
    let from_address = c.per_address.get(&ip).copied().unwrap_or(0);
    if c.open >= limits.connections_max || from_address >= limits.connections_per_address_max {
        return None;
    }
    c.open += 1;
    *c.per_address.entry(ip).or_insert(0) += 1;
    Some(Place {
        connections: connections.clone(),
        ip,
    })
}

/// A running server.
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops at once, closing every connection mid-answer (what a crash looks like to clients).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Stops accepting, lets open connections finish for a moment, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds `listen` and serves `router` under `limits` until [`ServerHandle::shutdown`].
pub async fn start(
    listen: SocketAddr,
    router: axum::Router,
    limits: ServerLimits,
) -> std::io::Result<ServerHandle> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(listener, router, limits, stopped));
    Ok(ServerHandle { addr, stop, task })
}

async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ServerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                continue;
            }
        };
        let Some(place) = admit(&connections, addr.ip(), &limits) else {
            tracing::debug!(%addr, "connection refused: at the connection cap");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let header_read_timeout = Duration::from_millis(limits.header_read_timeout_ms);
        let mut stopping = shutdown.clone();
        tasks.spawn(async move {
            let _place = place;
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(request.map(Body::new))
                },
            );
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(true);
            let served = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(served);
            tokio::select! {
                _ = &mut served => {}
                _ = stopping.changed() => {
                    served.as_mut().graceful_shutdown();
                    let drain = Duration::from_millis(SHUTDOWN_DRAIN_MS);
                    let _ = tokio::time::timeout(drain, served).await;
                }
            }
        });
    }
    let drain = Duration::from_millis(SHUTDOWN_DRAIN_MS);
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
}

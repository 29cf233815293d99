//! The shard service's HTTP server: hyper's HTTP/1 driver under connection caps and timeouts,
//! serving an axum router.
//!
//! - At most [`ServerLimits::connections_max`] connections in all and
//!   [`ServerLimits::connections_per_address_max`] from one IP address; one more is closed at
//!   once, never queued.
//! - A request's headers must arrive within `header_read_timeout_ms`; a body is read by
//!   [`read_body`] under a size limit and a deadline that grows with the size (a floor rate of
//!   `body_bytes_per_s_min`), so a slow sender cannot hold a connection forever.
//! - At most `shards_in_memory_max` shards are held in memory at once by requests (uploads
//!   being checked, downloads being sent); one more is refused with 503.
//!
//! The accept loop and its connection caps ([`serve`] under [`ConnectionLimits`]) are shared:
//! the provider daemon's session endpoint runs on the same function.

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
/// How long a stop waits for open connections to finish.
const STOP_DRAIN_MS: u64 = 2_000;

/// Every bound of the shard service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    pub connections_max: usize,
    pub connections_per_address_max: usize,
    pub header_read_timeout_ms: u64,
    /// A body may always take this long, plus its size at `body_bytes_per_s_min`.
    pub body_read_base_ms: u64,
    pub body_bytes_per_s_min: u64,
    /// Shards held in memory by requests at once.
    pub shards_in_memory_max: usize,
}

impl ServerLimits {
    /// The bounds the accept loop enforces.
    pub fn connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            connections_max: self.connections_max,
            connections_per_address_max: self.connections_per_address_max,
            header_read_timeout_ms: self.header_read_timeout_ms,
        }
    }
}

/// What an accept loop bounds: connections in all and from one IP address (one more is closed
/// at once, never queued), and the time a request's headers may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub connections_max: usize,
    pub connections_per_address_max: usize,
    pub header_read_timeout_ms: u64,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            connections_max: 256,
            connections_per_address_max: 32,
            header_read_timeout_ms: 5_000,
            body_read_base_ms: 10_000,
            body_bytes_per_s_min: 1 << 20,
            shards_in_memory_max: 8,
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body over {max} bytes")]
    TooLarge { max: u64 },
    #[error("body not received within {ms} ms")]
    TooSlow { ms: u64 },
    #[error("body could not be read: {0}")]
    Broken(String),
}

/// Reads `body` whole: at most `bytes_max` bytes, within the deadline `limits` give that size.
pub async fn read_body(
    body: Body,
    bytes_max: u64,
    limits: &ServerLimits,
) -> Result<Bytes, BodyError> {
    use futures_util::StreamExt;
    let read = async {
        let mut pieces = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(piece) = pieces.next().await {
            let piece = piece.map_err(|e| BodyError::Broken(e.to_string()))?;
            if (bytes.len() + piece.len()) as u64 > bytes_max {
                return Err(BodyError::TooLarge { max: bytes_max });
            }
            bytes.extend_from_slice(&piece);
        }
        Ok(Bytes::from(bytes))
    };
    let rate = limits.body_bytes_per_s_min.max(1);
    let ms = limits
        .body_read_base_ms
        .saturating_add(bytes_max.saturating_mul(1_000) / rate);
    tokio::time::timeout(Duration::from_millis(ms), read)
        .await
        .unwrap_or(Err(BodyError::TooSlow { ms }))
}

/// Connections open now, in all and per address.
#[derive(Default)]
struct Gate {
    open: usize,
    per_address: BTreeMap<IpAddr, usize>,
}

/// A connection's ticket through the gate, handed back when dropped.
struct Ticket {
    gate: Arc<Mutex<Gate>>,
    ip: IpAddr,
}

impl Ticket {
    fn take(gate: &Arc<Mutex<Gate>>, ip: IpAddr, limits: &ConnectionLimits) -> Option<Ticket> {
        let mut g = gate.lock().unwrap_or_else(|e| e.into_inner());
        let here = g.per_address.get(&ip).copied().unwrap_or(0);
        if g.open >= limits.connections_max || here >= limits.connections_per_address_max {
            return None;
        }
        g.open += 1;
        g.per_address.insert(ip, here + 1);
        Some(Ticket {
            gate: Arc::clone(gate),
            ip,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut g = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        g.open = g.open.saturating_sub(1);
        let left = g
            .per_address
            .get(&self.ip)
            .map_or(0, |n| n.saturating_sub(1));
        if left == 0 {
            g.per_address.remove(&self.ip);
        } else {
            g.per_address.insert(self.ip, left);
        }
    }
}

/// A running shard server.
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops at once, closing every connection mid-answer (what a crash looks like to peers).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Stops accepting, lets open connections finish for a moment, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// [`ServerHandle::shutdown`].
    pub async fn stop(self) {
        self.shutdown().await
    }
}

/// Binds `listen` and serves `router` under `limits` until stopped.
pub async fn start(
    listen: SocketAddr,
    router: axum::Router,
    limits: ServerLimits,
) -> std::io::Result<ServerHandle> {
    serve(listen, router, limits.connections()).await
}

/// Binds `listen` and serves `router` on hyper's HTTP/1 driver under `limits` until stopped:
/// the accept loop of every HTTP server of the daemons.
pub async fn serve(
    listen: SocketAddr,
    router: axum::Router,
    limits: ConnectionLimits,
) -> std::io::Result<ServerHandle> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, router, limits, stopped));
    Ok(ServerHandle { addr, stop, task })
}

async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
) {
    let gate = Arc::new(Mutex::new(Gate::default()));
    let mut connections = tokio::task::JoinSet::new();
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "http server: accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Some(ticket) = Ticket::take(&gate, peer.ip(), &limits) else {
            tracing::debug!(%peer, "http server: connection over the cap closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut stopping = stopped.clone();
        connections.spawn(async move {
            let _ticket = ticket;
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                router.clone().oneshot(request.map(Body::new))
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = &mut connection => {}
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let drain = Duration::from_millis(STOP_DRAIN_MS);
                    let _ = tokio::time::timeout(drain, connection).await;
                }
            }
        });
    }
    let drain = Duration::from_millis(STOP_DRAIN_MS);
    let _ = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

//! The accept loop: HTTP/1.1 connections under caps and timeouts.
//!
//! - At most `connections_max` connections, `connections_per_address_max` from one IP address.
//! - A connection is *idle* while it waits for a request's headers (a new connection, or a
//!   keep-alive one between requests); hyper's header read timeout closes it after
//!   `header_read_timeout_ms` of that. A full server makes room by closing an idle connection
//!   (first those that never completed a request, oldest first; then keep-alive ones; then
//!   those still sending a body), so a client that trickles bytes cannot keep out one that
//!   sends its request at once: `/health` and the node's own in-process roles (which reach it
//!   over loopback, like any local client) are served while slow connections are turned over.
//! - A connection whose request is being handled is never closed to make room; when every
//!   connection is busy the new one is refused (closed at once).
//! - Upgraded WebSockets leave this registry and count against the socket caps instead.

use super::{router, stopped, RpcLimits, RpcState};
use crate::app::App;
use crate::metrics::ServerMetrics;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// Pause after a failed accept (for instance out of file descriptors) before the next one.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 20;
/// How long shutdown waits for open connections to finish their request.
const SHUTDOWN_DRAIN_MS: u64 = 2_000;

const IDLE: u8 = 0;
const READING_BODY: u8 = 1;
const PROCESSING: u8 = 2;

/// One open connection, as the registry sees it.
pub(crate) struct Slot {
    id: u64,
    ip: IpAddr,
    phase: AtomicU8,
    /// When the connection entered its phase, in ms since the registry started.
    since_ms: AtomicU64,
    /// Requests answered on this connection.
    served: AtomicU64,
    evicted: AtomicBool,
    close: Notify,
    clock: tokio::time::Instant,
}

impl Slot {
    fn enter(&self, phase: u8) {
        self.phase.store(phase, Relaxed);
        self.since_ms
            .store(self.clock.elapsed().as_millis() as u64, Relaxed);
    }

    /// Eviction rank: lower goes first; `None` for a connection that must not be closed.
    fn rank(&self) -> Option<(u8, u64)> {
        let since = self.since_ms.load(Relaxed);
        match self.phase.load(Relaxed) {
            IDLE if self.served.load(Relaxed) == 0 => Some((0, since)),
            IDLE => Some((1, since)),
            READING_BODY => Some((2, since)),
            _ => None,
        }
    }
}

/// What a request handler knows of its connection.
#[derive(Clone)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    slot: Arc<Slot>,
}

impl Peer {
    /// The request's body is read; from now on the connection is not closed to make room.
    pub(crate) fn processing(&self) {
        self.slot.enter(PROCESSING);
    }
}

#[derive(Default)]
struct Open {
    slots: HashMap<u64, Arc<Slot>>,
    per_address: HashMap<IpAddr, usize>,
    next_id: u64,
}

struct Registry {
    open: Mutex<Open>,
    clock: tokio::time::Instant,
}

impl Registry {
    /// Admits a connection from `ip`, closing an idle one if a cap is reached; `None` when full.
    fn admit(&self, ip: IpAddr, limits: &RpcLimits, metrics: &ServerMetrics) -> Option<Arc<Slot>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_address = open.per_address.get(&ip).copied().unwrap_or(0);
        let victim = if from_address >= limits.connections_per_address_max {
            Some(Self::victim(&open, Some(ip))?)
        } else if open.slots.len() >= limits.connections_max {
            Some(Self::victim(&open, None)?)
        } else {
            None
        };
        if let Some(victim) = victim {
            if let Some(slot) = open.slots.remove(&victim) {
                Self::release(&mut open, slot.ip);
                slot.evicted.store(true, Relaxed);
                slot.close.notify_one();
                metrics.connections_evicted.fetch_add(1, Relaxed);
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let slot = Arc::new(Slot {
            id,
            ip,
            phase: AtomicU8::new(IDLE),
            since_ms: AtomicU64::new(self.clock.elapsed().as_millis() as u64),
            served: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
            clock: self.clock,
        });
        open.slots.insert(id, slot.clone());
        *open.per_address.entry(ip).or_insert(0) += 1;
        Some(slot)
    }

    /// The connection to close to make room: among those from `ip` (or from the address with
    /// the most connections when `ip` is `None`), the lowest eviction rank.
    fn victim(open: &Open, ip: Option<IpAddr>) -> Option<u64> {
        let busiest = open
            .per_address
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(ip, _)| *ip);
        let pick = |from: Option<IpAddr>| {
            open.slots
                .values()
                .filter(|s| from.is_none_or(|ip| s.ip == ip))
                .filter_map(|s| s.rank().map(|rank| (rank, s.id)))
                .min()
                .map(|(_, id)| id)
        };
        match ip {
            Some(ip) => pick(Some(ip)),
            None => pick(busiest).or_else(|| pick(None)),
        }
    }

    fn release(open: &mut Open, ip: IpAddr) {
        if let Some(n) = open.per_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.per_address.remove(&ip);
            }
        }
    }

    fn close(&self, slot: &Slot) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.slots.remove(&slot.id).is_some() {
            Self::release(&mut open, slot.ip);
        }
    }

    fn close_all(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for slot in open.slots.values() {
            slot.close.notify_one();
        }
    }

    fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slots
            .len()
    }
}

/// Serves JSON-RPC on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limits: RpcLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = RpcState::new(app.clone(), limits.clone(), shutdown.clone());
    let router = router(state);
    let registry = Arc::new(Registry {
        open: Mutex::new(Open::default()),
        clock: tokio::time::Instant::now(),
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                continue;
            }
        };
        let metrics = &app.metrics.server;
        let Some(slot) = registry.admit(addr.ip(), &limits, metrics) else {
            metrics.connections_refused.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            Peer { addr, slot },
            router.clone(),
            registry.clone(),
            app.clone(),
            limits.header_read_timeout_ms,
        ));
    }
    registry.close_all();
    let drained = tokio::time::Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MS);
    while registry.len() > 0 && tokio::time::Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: Peer,
    router: axum::Router,
    registry: Arc<Registry>,
    app: Arc<App>,
    header_read_timeout_ms: u64,
) {
    let metrics = &app.metrics.server;
    metrics.connections_open.fetch_add(1, Relaxed);
    let slot = peer.slot.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let first = if request.method() == hyper::Method::POST {
                READING_BODY
            } else {
                PROCESSING
            };
            peer.slot.enter(first);
            request.extensions_mut().insert(peer.clone());
            let slot = peer.slot.clone();
            let answer = router.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let response = answer.await;
                slot.served.fetch_add(1, Relaxed);
                slot.enter(IDLE);
                response
            }
        });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(header_read_timeout_ms))
        .keep_alive(true);
    let served = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(served);
    tokio::select! {
        _ = &mut served => {}
        _ = slot.close.notified() => {
            if !slot.evicted.load(Relaxed) {
                // Shutdown: let a request in flight finish.
                served.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_millis(SHUTDOWN_DRAIN_MS), served).await;
            }
        }
    }
    registry.close(&slot);
    metrics.connections_open.fetch_sub(1, Relaxed);
}

//! Prometheus metrics, rendered in the text exposition format on `/metrics`.

use piazza_ledger::error::{ErrorCode, TxError};
use piazza_primitives::Hash;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const CODES_MAX: usize = 64;

pub struct Metrics {
    height: AtomicU64,
    blocks_committed: AtomicU64,
    txs_committed: AtomicU64,
    commit_micros_total: AtomicU64,
    txs_admitted: AtomicU64,
    txs_refused: [AtomicU64; CODES_MAX],
    rpc_requests: AtomicU64,
    rpc_errors: AtomicU64,
    /// Transaction signatures of other validators' blocks verified when validating them.
    block_signatures_verified: AtomicU64,
    /// Transaction signatures of other validators' blocks not verified again: the same
    /// transaction (same bytes, same hash) passed admission here and was still pending.
    block_signatures_reused: AtomicU64,
    /// The JSON-RPC server's own counters (connections, bodies, sockets).
    pub server: ServerMetrics,
}

/// Counters of the network-facing server: what it admitted, refused and closed.
#[derive(Default)]
pub struct ServerMetrics {
    /// HTTP connections open now.
    pub connections_open: AtomicU64,
    /// Connections closed at accept because every slot was busy.
    pub connections_refused: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub connections_evicted: AtomicU64,
    /// Bodies refused for their size (over the hard limit).
    pub bodies_too_large: AtomicU64,
    /// Large bodies refused because the large-body budget was in use.
    pub bodies_busy: AtomicU64,
    /// Bodies not received within their read timeout.
    pub bodies_timed_out: AtomicU64,
    /// Requests refused before parsing for their JSON shape (too many values or calls).
    pub bodies_refused_shape: AtomicU64,
    /// WebSockets open now.
    pub sockets_open: AtomicU64,
    /// WebSocket upgrades refused by the socket caps.
    pub sockets_refused: AtomicU64,
    /// WebSockets closed because they fell behind or stopped reading.
    pub sockets_closed_slow: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            height: AtomicU64::new(0),
            blocks_committed: AtomicU64::new(0),
            txs_committed: AtomicU64::new(0),
            commit_micros_total: AtomicU64::new(0),
            txs_admitted: AtomicU64::new(0),
            txs_refused: std::array::from_fn(|_| AtomicU64::new(0)),
            rpc_requests: AtomicU64::new(0),
            rpc_errors: AtomicU64::new(0),
            block_signatures_verified: AtomicU64::new(0),
            block_signatures_reused: AtomicU64::new(0),
            server: ServerMetrics::default(),
        }
    }
}

impl Metrics {
    pub fn set_height(&self, height: u64) {
        self.height.store(height, Relaxed);
    }

    pub fn record_commit(&self, height: u64, txs: usize, took: Duration) {
        self.height.store(height, Relaxed);
        self.blocks_committed.fetch_add(1, Relaxed);
        self.txs_committed.fetch_add(txs as u64, Relaxed);
        self.commit_micros_total
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn record_admission(&self, result: &Result<Hash, TxError>) {
        match result {
            Ok(_) => self.txs_admitted.fetch_add(1, Relaxed),
            Err(e) => {
                self.txs_refused[(e.code.code() as usize).min(CODES_MAX - 1)].fetch_add(1, Relaxed)
            }
        };
    }

    /// Counts the transaction signatures of another validator's block: `verified` here,
    /// `reused` from admission.
    pub fn record_block_signatures(&self, verified: usize, reused: usize) {
        self.block_signatures_verified
            .fetch_add(verified as u64, Relaxed);
        self.block_signatures_reused
            .fetch_add(reused as u64, Relaxed);
    }

    /// `(verified, reused)` signatures of other validators' blocks so far (see
    /// [`Metrics::record_block_signatures`]).
    pub fn block_signatures(&self) -> (u64, u64) {
        (
            self.block_signatures_verified.load(Relaxed),
            self.block_signatures_reused.load(Relaxed),
        )
    }

    pub fn record_rpc(&self, ok: bool) {
        self.rpc_requests.fetch_add(1, Relaxed);
        if !ok {
            self.rpc_errors.fetch_add(1, Relaxed);
        }
    }

    pub fn render(&self, mempool_size: usize) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "piazza_block_height",
            "gauge",
            "Height of the last committed block.",
            self.height.load(Relaxed),
        );
        metric(
            "piazza_blocks_committed_total",
            "counter",
            "Blocks committed by this process.",
            self.blocks_committed.load(Relaxed),
        );
        metric(
            "piazza_txs_committed_total",
            "counter",
            "Transactions committed by this process.",
            self.txs_committed.load(Relaxed),
        );
        metric(
            "piazza_commit_micros_total",
            "counter",
            "Microseconds spent committing blocks.",
            self.commit_micros_total.load(Relaxed),
        );
        metric(
            "piazza_txs_admitted_total",
            "counter",
            "Transactions admitted to the mempool.",
            self.txs_admitted.load(Relaxed),
        );
        metric(
            "piazza_mempool_size",
            "gauge",
            "Transactions waiting in the mempool.",
            mempool_size as u64,
        );
        metric(
            "piazza_rpc_requests_total",
            "counter",
            "JSON-RPC calls served.",
            self.rpc_requests.load(Relaxed),
        );
        metric(
            "piazza_rpc_errors_total",
            "counter",
            "JSON-RPC calls answered with an error.",
            self.rpc_errors.load(Relaxed),
        );
        metric(
            "piazza_block_signatures_verified_total",
            "counter",
            "Transaction signatures of other validators' blocks verified here.",
            self.block_signatures_verified.load(Relaxed),
        );
        metric(
            "piazza_block_signatures_reused_total",
            "counter",
            "Transaction signatures of other validators' blocks already verified at admission.",
            self.block_signatures_reused.load(Relaxed),
        );
        let server = &self.server;
        for (name, kind, help, value) in [
            (
                "piazza_rpc_connections_open",
                "gauge",
                "HTTP connections open.",
                &server.connections_open,
            ),
            (
                "piazza_rpc_connections_refused_total",
                "counter",
                "Connections refused at accept: every slot busy.",
                &server.connections_refused,
            ),
            (
                "piazza_rpc_connections_evicted_total",
                "counter",
                "Idle connections closed to admit a new one.",
                &server.connections_evicted,
            ),
            (
                "piazza_rpc_bodies_too_large_total",
                "counter",
                "Request bodies refused for their size.",
                &server.bodies_too_large,
            ),
            (
                "piazza_rpc_bodies_busy_total",
                "counter",
                "Large bodies refused: the large-body budget was in use.",
                &server.bodies_busy,
            ),
            (
                "piazza_rpc_bodies_timed_out_total",
                "counter",
                "Request bodies not received in time.",
                &server.bodies_timed_out,
            ),
            (
                "piazza_rpc_bodies_refused_shape_total",
                "counter",
                "Requests refused before parsing: too many JSON values or calls.",
                &server.bodies_refused_shape,
            ),
            (
                "piazza_ws_sockets_open",
                "gauge",
                "WebSockets open.",
                &server.sockets_open,
            ),
            (
                "piazza_ws_sockets_refused_total",
                "counter",
                "WebSocket upgrades refused by the socket caps.",
                &server.sockets_refused,
            ),
            (
                "piazza_ws_sockets_closed_slow_total",
                "counter",
                "WebSockets closed for falling behind or not reading.",
                &server.sockets_closed_slow,
            ),
        ] {
            metric(name, kind, help, value.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP piazza_txs_refused_total Transactions refused at admission, by error code.\n# TYPE piazza_txs_refused_total counter");
        for code in ErrorCode::ALL {
            let n = self.txs_refused[(code.code() as usize).min(CODES_MAX - 1)].load(Relaxed);
            let _ = writeln!(
                out,
                "piazza_txs_refused_total{{code=\"{}\"}} {n}",
                code.name()
            );
        }
        out
    }
}

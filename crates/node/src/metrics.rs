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

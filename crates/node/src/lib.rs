//! A Piazza validator node: the application behind the consensus boundary, the mempool, the
//! JSON-RPC server (HTTP and WebSocket), and Prometheus metrics.
//!
//! Invariants:
//! - The node is the IO shell around the pure ledger: it reads the clock only to propose a block
//!   time, and everything it commits goes through `piazza_store` one block per transaction.
//! - Only this crate (and clients) speak JSON; [`rpc`] maps domain types into `piazza_api`.
//! - Every queue is bounded: the mempool, the consensus channel, subscriber buffers, request
//!   bodies and batches; the server caps connections and sockets and times out slow clients
//!   ([`rpc::RpcLimits`], `docs/threat-model.md`).
//!
//! ```no_run
//! # async fn run(genesis: piazza_ledger::genesis::Genesis, key: piazza_primitives::SecretKey) {
//! let config = piazza_node::NodeConfig::new("./data".into(), "127.0.0.1:0".parse().unwrap());
//! let node = piazza_node::start(config, Some(genesis), key).await.unwrap();
//! println!("rpc on {}", node.rpc_addr);
//! node.shutdown().await;
//! # }
//! ```

pub mod app;
pub mod arbitration;
pub mod metrics;
pub mod rpc;
pub mod verified;

pub use app::{App, CommittedBlock, NodeError};

pub use malachitebft_app_channel::app::net::Multiaddr;
pub use piazza_bft as bft;

use piazza_bft::BftConfig;
use piazza_consensus::{SoloProducer, APP_CHANNEL_CAPACITY};
use piazza_ledger::genesis::{Genesis, NetworkGenesis};
use piazza_mempool::MempoolConfig;
use piazza_primitives::SecretKey;
use piazza_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The database file inside a node's data directory.
pub const CHAIN_DB_FILE: &str = "chain.redb";

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub rpc_addr: SocketAddr,
    pub block_interval: Duration,
    pub mempool: MempoolConfig,
    /// The JSON-RPC server's connection, body and socket limits.
    pub rpc: rpc::RpcLimits,
}

impl NodeConfig {
    pub fn new(data_dir: PathBuf, rpc_addr: SocketAddr) -> Self {
        NodeConfig {
            data_dir,
            rpc_addr,
            block_interval: Duration::from_millis(1000),
            mempool: MempoolConfig::default(),
            rpc: rpc::RpcLimits::default(),
        }
    }
}

/// A running node.
pub struct NodeHandle {
    /// Where the JSON-RPC server listens (the real port when asked for port 0).
    pub rpc_addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    producer: JoinHandle<()>,
    server: JoinHandle<()>,
}

impl NodeHandle {
    /// Stops producing blocks after the one in flight, then stops serving RPC.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.producer.await;
        let _ = self.server.await;
    }

    /// Waits until the block producer stops (on shutdown or a fatal commit error).
    pub async fn stopped(&mut self) {
        let _ = (&mut self.producer).await;
    }
}

/// Opens the chain in `config.data_dir` (writing `genesis` if it is new), starts the
/// single-validator producer and the RPC server.
pub async fn start(
    config: NodeConfig,
    genesis: Option<Genesis>,
    key: SecretKey,
) -> Result<NodeHandle, NodeError> {
    let app = open_app(&config, genesis.as_ref(), key)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (app_tx, app_rx) = mpsc::channel(APP_CHANNEL_CAPACITY);
    tokio::spawn(app.clone().serve(app_rx));
    let producer = SoloProducer {
        app: app_tx,
        block_interval: config.block_interval,
    };
    let producer_shutdown = shutdown_rx.clone();
    let producer = tokio::spawn(async move {
        if let Err(e) = producer.run(producer_shutdown).await {
            tracing::error!(error = %e, "block production stopped");
        }
    });
    serve_rpc(config, app, shutdown, shutdown_rx, producer).await
}

/// How often a BFT node checks whether its consensus app loop stopped by itself.
pub const BFT_WATCH_INTERVAL_MS: u64 = 200;

/// Opens a network's chain (`App::open_network`: the genesis validators' records written at
/// genesis) and joins it on Malachite (`piazza_bft::start_node`) instead of producing blocks
/// alone: the validator set of each height comes from the ledger, so the node votes at the
/// heights its key is in the set and follows the chain at the others; transactions it admits
/// are gossiped to its peers and theirs reach it. `consensus` says where the WAL lives, which
/// address to listen on, which peers to dial and the round timeouts. [`NodeHandle::stopped`]
/// returns when consensus stops.
pub async fn start_bft(
    config: NodeConfig,
    genesis: Option<NetworkGenesis>,
    key: SecretKey,
    consensus: BftConfig,
) -> Result<NodeHandle, NodeError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| NodeError::Io(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let store = Store::open(&config.data_dir.join(CHAIN_DB_FILE))?;
    let app = Arc::new(App::open_network(
        store,
        genesis.as_ref(),
        key.clone(),
        config.mempool,
    )?);
    log_opened(&app)?;
    if consensus.chain_id != app.chain_id() {
        return Err(NodeError::ChainMismatch {
            stored: app.chain_id().to_string(),
            given: consensus.chain_id,
        });
    }
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let (app_tx, app_rx) = mpsc::channel(APP_CHANNEL_CAPACITY);
    let gossip = app.gossip();
    tokio::spawn(app.clone().serve(app_rx));
    let bft = piazza_bft::start_node(consensus, key, app_tx, gossip)
        .await
        .map_err(|e| NodeError::Io(format!("consensus: {e}")))?;
    tracing::info!(address = %bft.address, "consensus started");
    app.set_consensus_store(bft.store());
    let watch_shutdown = shutdown_rx.clone();
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(BFT_WATCH_INTERVAL_MS));
        loop {
            tokio::select! {
                _ = shutdown_rx.changed() => break,
                _ = tick.tick() => {
                    if bft.app_loop_finished() {
                        tracing::error!("consensus stopped");
                        break;
                    }
                }
            }
        }
        bft.shutdown().await;
    });
    serve_rpc(config, app, shutdown, watch_shutdown, producer).await
}

fn open_app(
    config: &NodeConfig,
    genesis: Option<&Genesis>,
    key: SecretKey,
) -> Result<Arc<App>, NodeError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| NodeError::Io(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let store = Store::open(&config.data_dir.join(CHAIN_DB_FILE))?;
    let app = Arc::new(App::open(store, genesis, key, config.mempool)?);
    log_opened(&app)?;
    Ok(app)
}

fn log_opened(app: &App) -> Result<(), NodeError> {
    let head = app.head()?;
    tracing::info!(chain_id = app.chain_id(), height = head.height, state_root = %head.state_root, "chain opened");
    Ok(())
}

/// Starts the JSON-RPC server next to a running block producer (solo or consensus).
async fn serve_rpc(
    config: NodeConfig,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    producer: JoinHandle<()>,
) -> Result<NodeHandle, NodeError> {
    let listener = match tokio::net::TcpListener::bind(config.rpc_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = shutdown.send(true);
            let _ = producer.await;
            return Err(NodeError::Io(format!(
                "cannot listen on {}: {e}",
                config.rpc_addr
            )));
        }
    };
    let rpc_addr = listener
        .local_addr()
        .map_err(|e| NodeError::Io(e.to_string()))?;
    let server = tokio::spawn(rpc::server::serve(
        listener,
        app.clone(),
        config.rpc.clone(),
        shutdown_rx,
    ));
    tracing::info!(%rpc_addr, "JSON-RPC listening");
    Ok(NodeHandle {
        rpc_addr,
        app,
        shutdown,
        producer,
        server,
    })
}

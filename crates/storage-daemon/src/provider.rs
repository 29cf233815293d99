//! A whole storage provider: the shard store, the shard service on its listen address, its
//! registration on chain (or a changed endpoint announced), and the daemon's passes, until
//! stopped. `piazza storage run` and `piazza devnet` run this.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use piazza_blob::store::ShardStore;
use piazza_client::Client;
use piazza_primitives::{Address, Amount, SecretKey};
use tokio::sync::watch;

use crate::daemon::{ChainAssignments, Daemon, DaemonConfig};
use crate::rpc::RpcChain;
use crate::server::{ServerHandle, ServerLimits};
use crate::service::ShardService;

/// Longest wait for the registration's receipt.
const REGISTER_WAIT_MS: u64 = 60_000;

/// What a storage provider needs.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub node_url: String,
    pub key: SecretKey,
    /// The shard store's directory.
    pub dir: PathBuf,
    /// Where the shard service listens (port 0: one the system picks).
    pub listen: SocketAddr,
    /// The endpoint registered on chain [default: `http://` + the bound address].
    pub endpoint: Option<String>,
    pub capacity_bytes: u64,
    pub stake: Amount,
    pub limits: ServerLimits,
    pub daemon: DaemonConfig,
}

impl ProviderConfig {
    pub fn address(&self) -> Address {
        self.key.public_key().address()
    }
}

/// A started provider: its service runs; [`Running::run`] drives its duties.
pub struct Running {
    pub address: Address,
    pub endpoint: String,
    pub server: ServerHandle,
    daemon: Daemon<RpcChain>,
}

/// Opens the store, starts the shard service and registers (or announces a moved endpoint).
pub async fn start(config: ProviderConfig) -> Result<Running, String> {
    let store = ShardStore::open(&config.dir, config.capacity_bytes)
        .map_err(|e| format!("opening the shard store {}: {e}", config.dir.display()))?;
    let store = Arc::new(store);
    let client = Client::new(&config.node_url);
    let chain = Arc::new(RpcChain {
        client: client.clone(),
        key: config.key.clone(),
    });
    let assignments = Arc::new(ChainAssignments(Arc::clone(&chain)));
    let service = ShardService::new(Arc::clone(&store), assignments, config.limits.clone());
    let server = service
        .start(config.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", config.listen))?;
    let endpoint = config.endpoint.clone().unwrap_or_else(|| server.url());
    let address = config.address();
    let registered = client
        .storage_provider(&address)
        .await
        .map_err(|e| format!("reading this provider's record: {e}"))?;
    let hash = match registered {
        None => Some(
            client
                .register_storage_provider(
                    &config.key,
                    config.stake,
                    config.capacity_bytes,
                    &endpoint,
                )
                .await,
        ),
        Some(p) if p.endpoint != endpoint || p.capacity_bytes != config.capacity_bytes => Some(
            client
                .update_storage_provider(&config.key, config.capacity_bytes, &endpoint)
                .await,
        ),
        Some(_) => None,
    };
    if let Some(hash) = hash {
        let hash = hash.map_err(|e| format!("registering: {e}"))?;
        let receipt = client
            .wait_for_receipt(&hash, Duration::from_millis(REGISTER_WAIT_MS))
            .await
            .map_err(|e| format!("registering: {e}"))?;
        if let Some(e) = receipt.error {
            return Err(format!(
                "registration refused: {} ({}): {}",
                e.name, e.code, e.message
            ));
        }
    }
    tracing::info!(%address, %endpoint, "storage provider serving shards");
    Ok(Running {
        address,
        endpoint,
        server,
        daemon: Daemon::new(chain, store, config.daemon.clone()),
    })
}

impl Running {
    /// Runs the daemon's passes until `stop`, then stops the service.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        self.daemon.run(stop).await;
        self.server.stop().await;
    }
}

/// Starts and runs a provider until `stop`.
pub async fn run(config: ProviderConfig, stop: watch::Receiver<bool>) -> Result<(), String> {
    start(config).await?.run(stop).await;
    Ok(())
}

//! The in-process devnet the market benchmarks run on: one validator node and one provider
//! daemon in a temporary directory, with funded client keys and fixed seeds (the same chain
//! every run).

use anyhow::Result;
use piazza_client::Client;
use piazza_ledger::compute;
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::models::ModelRecord;
use piazza_ledger::staking::{self, Role};
use piazza_primitives::{Address, Amount, SecretKey};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the provider may take to load its model, measure its speed and register.
const REGISTER_WAIT: Duration = Duration::from_secs(120);
/// What the provider charges per unit of work (the devnet's price).
pub const PRICE_PER_UNIT: u128 = 1_000;
/// Most clients a benchmark devnet funds (their key seeds are 210 + i).
const CLIENTS_MAX: usize = 32;

/// The owner of the benchmark's model record (receives the model's share of fees).
pub fn model_owner() -> Address {
    SecretKey::from_seed([203; 32]).public_key().address()
}

/// What differs between the benchmarks' devnets.
pub struct BenchNetConfig {
    pub chain_id: &'static str,
    pub model: ModelRecord,
    pub block_interval_ms: u64,
    pub compute: compute::Params,
    /// Funded client keys.
    pub clients: usize,
    /// Jobs the provider holds at once.
    pub provider_capacity: u32,
    /// Jobs the provider runs at once.
    pub provider_concurrency: usize,
}

/// A running benchmark devnet; [`BenchNet::stop`] ends it.
pub struct BenchNet {
    pub node: piazza_node::NodeHandle,
    pub url: String,
    pub provider: Address,
    pub clients: Vec<SecretKey>,
    stop: tokio::sync::watch::Sender<bool>,
    daemon: tokio::task::JoinHandle<Result<(), piazza_provider::ProviderError>>,
    _dir: tempfile::TempDir,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A benchmark chain: `validator` bonded, `accounts` funded, `models` registered.
pub fn genesis(
    chain_id: &str,
    genesis_time_ms: u64,
    accounts: Vec<GenesisAccount>,
    validator: Address,
    models: Vec<ModelRecord>,
    compute: compute::Params,
) -> Genesis {
    Genesis {
        chain_id: chain_id.into(),
        genesis_time_ms,
        fees: FeeParams::default(),
        staking: staking::Params::default(),
        accounts,
        bonds: vec![GenesisBond {
            address: validator,
            role: Role::Validator,
            amount: Amount::pza(10_000),
        }],
        models,
        compute,
        verify: Default::default(),
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    }
}

impl BenchNet {
    /// Starts the node and the provider and waits until the provider is registered.
    pub async fn start(config: BenchNetConfig) -> Result<BenchNet> {
        anyhow::ensure!(
            config.clients <= CLIENTS_MAX,
            "at most {CLIENTS_MAX} clients"
        );
        let dir = tempfile::tempdir()?;
        let validator = SecretKey::from_seed([201; 32]);
        let provider = SecretKey::from_seed([202; 32]);
        let clients: Vec<SecretKey> = (0..config.clients)
            .map(|i| SecretKey::from_seed([210 + i as u8; 32]))
            .collect();
        let mut accounts: Vec<GenesisAccount> = clients
            .iter()
            .chain([&validator, &provider])
            .map(|k| GenesisAccount {
                address: k.public_key().address(),
                balance: Amount::pza(100_000),
            })
            .collect();
        accounts.sort_by_key(|a| a.address);
        let genesis = genesis(
            config.chain_id,
            now_ms(),
            accounts,
            validator.public_key().address(),
            vec![config.model.clone()],
            config.compute,
        );
        let mut node_config =
            piazza_node::NodeConfig::new(dir.path().join("node"), "127.0.0.1:0".parse()?);
        node_config.block_interval = Duration::from_millis(config.block_interval_ms);
        let node = piazza_node::start(node_config, Some(genesis), validator).await?;
        let url = format!("http://{}", node.rpc_addr);
        let provider_config = piazza_provider::ProviderConfig {
            node_url: url.clone(),
            key: provider,
            models_dir: piazza_engine::models_dir(),
            serve: vec![config.model.name.clone()],
            price_per_unit: Amount::new(PRICE_PER_UNIT),
            capacity: config.provider_capacity,
            stake: Amount::pza(1_000),
            endpoint: String::new(),
            concurrency: config.provider_concurrency,
            threads: 1,
            journal_dir: dir.path().join("journal"),
            poll_interval: Duration::from_millis(10),
            fault: Default::default(),
        };
        let provider = provider_config.address();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let daemon = tokio::spawn(piazza_provider::run(provider_config, stopped));
        let net = BenchNet {
            node,
            url,
            provider,
            clients,
            stop,
            daemon,
            _dir: dir,
        };
        let client = Client::new(&net.url);
        let started = Instant::now();
        while client.provider(&net.provider).await?.is_none() {
            anyhow::ensure!(
                !net.daemon.is_finished(),
                "the provider stopped before it registered"
            );
            anyhow::ensure!(
                started.elapsed() < REGISTER_WAIT,
                "the provider did not register in {REGISTER_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(net)
    }

    /// The provider's declared speed, read from the node's latest state.
    pub fn declared_units_per_block(&self) -> Result<u32> {
        let snapshot = self.node.app.store().snapshot()?;
        let state = piazza_ledger::state::StateDelta::new(&snapshot);
        compute::provider(&state, &self.provider)
            .map(|p| p.offer.units_per_block)
            .ok_or_else(|| anyhow::anyhow!("the provider is not registered"))
    }

    /// Stops the provider (after its jobs in flight) and the node.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.daemon.await;
        self.node.shutdown().await;
    }
}

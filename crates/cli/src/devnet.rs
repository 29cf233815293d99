//! `piazza devnet` and `piazza node`.

use crate::config;
use anyhow::{Context, Result};
use clap::Args;
use piazza_keystore::Keystore;
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::staking::{self, Role};
use piazza_mempool::MempoolConfig;
use piazza_primitives::{Address, Amount};
use std::path::PathBuf;
use std::time::Duration;

pub const DEVNET_CHAIN_ID: &str = "piazza-devnet";
pub const DEFAULT_RPC_ADDR: &str = "127.0.0.1:8545";
/// The development key's name in the devnet keystore.
pub const DEV_KEY: &str = "dev";
pub const VALIDATOR_KEY: &str = "validator";
/// The devnet's in-process provider.
pub const PROVIDER_KEY: &str = "provider";
pub const AUDITOR_KEY: &str = "auditor";
/// Owner of the bundled models' records (receives their share of fees).
pub const MODELS_KEY: &str = "models";
/// Where the devnet's provider serves sessions: loopback, on a port the system picks.
const DEVNET_SESSION_ENDPOINT: &str = "http://127.0.0.1:0";
/// The devnet's storage providers' keys: `storage-0`, `storage-1`, ...
const STORAGE_KEY_PREFIX: &str = "storage-";
/// Shard bytes each devnet storage provider offers.
const DEVNET_STORAGE_CAPACITY_BYTES: u64 = 4 << 30;
/// What each devnet storage provider is funded with at genesis and bonds.
const DEVNET_STORAGE_FUNDS_PZA: u64 = 1_000;
const DEVNET_STORAGE_STAKE_PZA: u64 = 100;
/// What the bundled models' owner is funded with at genesis: it pays the storage deals that
/// keep the models' files.
const DEVNET_MODELS_FUNDS_PZA: u64 = 100_000;
/// Epochs the devnet's storage deals keep the bundled models' files (≈ 11 days at the default
/// 10-block epoch and 1 s blocks; escrow ≈ 28,500 PZA for the three bundled files).
const DEVNET_MODEL_DEAL_EPOCHS: u64 = 100_000;
/// Longest wait for enough storage providers to hold a blob's `k + m` shards.
const DEVNET_PUBLISH_WAIT_MS: u64 = 120_000;

#[derive(Args)]
pub struct NodeArgs {
    /// TOML config file (flags and PIAZZA_* variables override it).
    #[arg(long, env = "PIAZZA_CONFIG")]
    config: Option<PathBuf>,
    /// Where the chain, keys and genesis live [default: ~/.piazza/devnet or ~/.piazza/node;
    /// ~/.piazza is $PIAZZA_HOME].
    #[arg(long, env = "PIAZZA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// JSON-RPC listen address [default: 127.0.0.1:8545].
    #[arg(long, env = "PIAZZA_RPC_ADDR")]
    rpc_addr: Option<String>,
    /// Block interval [default: 1000].
    #[arg(long, env = "PIAZZA_BLOCK_INTERVAL_MS")]
    block_interval_ms: Option<u64>,
    /// Genesis document (JSON), needed the first time a node starts (`piazza node`).
    #[arg(long, env = "PIAZZA_GENESIS")]
    genesis: Option<PathBuf>,
    /// Keystore name of the validator key [default: validator].
    #[arg(long, env = "PIAZZA_VALIDATOR_KEY")]
    validator_key: Option<String>,
    /// Keystore directory [default: DATA_DIR/keys].
    #[arg(long, env = "PIAZZA_KEYSTORE")]
    keystore: Option<PathBuf>,
    /// Devnet: serve the OpenAI-compatible gateway here (API keys in DATA_DIR/gateway).
    #[arg(long, env = "PIAZZA_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    gateway_addr: std::net::SocketAddr,
    /// Devnet: do not run the in-process provider.
    #[arg(long)]
    no_provider: bool,
    /// Run without the devnet's auditor.
    #[arg(long)]
    no_auditor: bool,
    /// Devnet: bundled models to register at genesis and serve (comma-separated). With
    /// storage providers, their records name their files' blob ids and the devnet stores the
    /// files through storage right after it starts.
    #[arg(long, value_delimiter = ',', default_values_t = [piazza_provider::models::MINILM.to_string(), piazza_provider::models::SMOLLM2.to_string(), piazza_provider::models::SMOLLM2_QUANTIZED.to_string()])]
    models: Vec<String>,
    /// Devnet: storage providers to run in-process, each with its shard service on a loopback
    /// port (6 hold the k + m shards of the default 4 + 2 layout).
    #[arg(long, default_value_t = 6)]
    storage_providers: usize,
}

/// How often the devnet checks whether its in-process roles are registered.
const READY_POLL_MS: u64 = 100;

/// The password of a key the devnet unlocks: its `NAME.password` file, else PIAZZA_PASSWORD,
/// else empty (the devnet never asks).
fn devnet_password(keystore: &Keystore, name: &str) -> Result<String> {
    let sources = crate::password::Sources {
        file: None,
        env: std::env::var(crate::password::PASSWORD_ENV).ok(),
        terminal: false,
    };
    Ok(crate::password::for_key(keystore, name, &sources)?.0)
}

fn unlock(keystore: &Keystore, name: &str) -> Result<piazza_primitives::SecretKey> {
    let password = devnet_password(keystore, name)?;
    keystore
        .unlock(name, &password)
        .with_context(|| format!("unlocking key `{name}` in {}", keystore.dir().display()))
}

fn devnet_genesis(
    dev: Address,
    validator: Address,
    provider: Address,
    auditor: Address,
    models: Vec<piazza_ledger::models::ModelRecord>,
) -> Genesis {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Genesis {
        chain_id: DEVNET_CHAIN_ID.into(),
        genesis_time_ms: now_ms,
        fees: FeeParams::default(),
        staking: staking::Params::default(),
        accounts: vec![
            GenesisAccount {
                address: dev,
                balance: Amount::pza(1_000_000),
            },
            GenesisAccount {
                address: validator,
                balance: Amount::pza(100_000),
            },
            GenesisAccount {
                address: provider,
                balance: Amount::pza(10_000),
            },
            GenesisAccount {
                address: auditor,
                balance: Amount::pza(10_000),
            },
        ],
        bonds: vec![GenesisBond {
            address: validator,
            role: Role::Validator,
            amount: Amount::pza(10_000),
        }],
        models,
        compute: Default::default(),
        // Every result of a provider with fewer than 20 completed jobs is audited; then 10 %.
        verify: piazza_ledger::verify::Params {
            new_provider_audit_rate_bps: 10_000,
            ..Default::default()
        },
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    }
}

pub async fn run(args: NodeArgs, devnet: bool) -> Result<()> {
    let file = config::load(args.config.as_deref())?;
    let role = if devnet { "devnet" } else { "node" };
    let home = config::home();
    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| {
        if devnet {
            config::devnet_dir(&home)
        } else {
            home.join(role)
        }
    });
    let rpc_addr = args
        .rpc_addr
        .or(file.rpc_addr)
        .unwrap_or_else(|| DEFAULT_RPC_ADDR.into());
    let rpc_addr = rpc_addr
        .parse()
        .with_context(|| format!("--rpc-addr `{rpc_addr}` is not HOST:PORT"))?;
    let block_interval_ms = args
        .block_interval_ms
        .or(file.block_interval_ms)
        .unwrap_or(1000);
    anyhow::ensure!(block_interval_ms > 0, "block interval must be positive");
    let keystore_dir = args
        .keystore
        .or(file.keystore)
        .unwrap_or_else(|| data_dir.join("keys"));
    let validator_name = args
        .validator_key
        .or(file.validator_key)
        .unwrap_or_else(|| VALIDATOR_KEY.into());
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let keystore = Keystore::open(&keystore_dir)?;

    let genesis_path = data_dir.join("genesis.json");
    let fresh = !data_dir.join(piazza_node::CHAIN_DB_FILE).exists();
    let storage_keys: Vec<String> = (0..args.storage_providers)
        .map(|i| format!("{STORAGE_KEY_PREFIX}{i}"))
        .collect();
    let genesis = if devnet {
        // Sealed with PIAZZA_PASSWORD if set; else with the empty password, kept in
        // NAME.password so every command unlocks it whatever PIAZZA_PASSWORD says.
        let create_missing = |name: &str| -> Result<()> {
            if keystore.info(name).is_err() {
                let password = std::env::var(crate::password::PASSWORD_ENV).unwrap_or_default();
                let info = keystore.create(name, &password)?;
                if password.is_empty() {
                    keystore.store_password(name, "")?;
                }
                tracing::info!(name, address = %info.address, "created devnet key");
            }
            Ok(())
        };
        for name in [
            DEV_KEY,
            validator_name.as_str(),
            PROVIDER_KEY,
            AUDITOR_KEY,
            MODELS_KEY,
        ] {
            create_missing(name)?;
        }
        if fresh {
            let models_dir = piazza_engine::models_dir();
            let owner = keystore.info(MODELS_KEY)?.address;
            let mut records = Vec::new();
            for name in &args.models {
                let mut record = piazza_provider::models::bundled_record(&models_dir, name, owner)?;
                if args.storage_providers > 0 {
                    record.files = Some(bundled_files(&models_dir, name)?);
                }
                records.push(record);
            }
            // The storage providers' keys, funded at genesis (a chain made before they
            // existed runs none).
            for name in &storage_keys {
                create_missing(name)?;
            }
            let mut genesis = devnet_genesis(
                keystore.info(DEV_KEY)?.address,
                keystore.info(&validator_name)?.address,
                keystore.info(PROVIDER_KEY)?.address,
                keystore.info(AUDITOR_KEY)?.address,
                records,
            );
            // Uploads, answers and repairs keep their time however fast the blocks are.
            genesis.storage =
                piazza_ledger::storage::Params::for_block_interval_ms(block_interval_ms);
            genesis.accounts.push(GenesisAccount {
                address: owner,
                balance: Amount::pza(DEVNET_MODELS_FUNDS_PZA),
            });
            for name in &storage_keys {
                genesis.accounts.push(GenesisAccount {
                    address: keystore.info(name)?.address,
                    balance: Amount::pza(DEVNET_STORAGE_FUNDS_PZA),
                });
            }
            std::fs::write(&genesis_path, serde_json::to_vec_pretty(&genesis)?)?;
            Some(genesis)
        } else {
            None
        }
    } else {
        match args.genesis.or(file.genesis) {
            Some(path) => {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("reading genesis {}", path.display()))?;
                anyhow::ensure!(
                    bytes.len() <= 16 * 1024 * 1024,
                    "genesis is larger than 16 MiB"
                );
                Some(
                    serde_json::from_slice(&bytes)
                        .with_context(|| format!("parsing genesis {}", path.display()))?,
                )
            }
            None if fresh => anyhow::bail!(
                "{} holds no chain yet: pass --genesis FILE",
                data_dir.display()
            ),
            None => None,
        }
    };
    let key = unlock(&keystore, &validator_name)?;

    let mut node_config = piazza_node::NodeConfig::new(data_dir.clone(), rpc_addr);
    node_config.block_interval = Duration::from_millis(block_interval_ms);
    if let Some(capacity) = file.mempool_capacity {
        node_config.mempool = MempoolConfig {
            capacity,
            ..MempoolConfig::default()
        };
    }
    let mut node = piazza_node::start(node_config, genesis, key).await?;
    let head = node.app.head()?;
    outln!(
        "piazza {role}: chain {} at height {}, JSON-RPC on http://{}",
        node.app.chain_id(),
        head.height,
        node.rpc_addr
    );
    outln!(
        "piazza {role}: explorer on http://{}{}",
        node.rpc_addr,
        piazza_node::rpc::EXPLORER_PATH
    );
    if devnet {
        let dev = keystore.info(DEV_KEY)?;
        outln!(
            "piazza devnet: funded key `{DEV_KEY}` = {} in keystore {}",
            dev.address,
            keystore_dir.display()
        );
    }
    let (stop_provider, provider_stopped) = tokio::sync::watch::channel(false);
    // The in-process roles that must be registered before the devnet says it is ready.
    let mut roles: Vec<(InProcess, Address)> = Vec::new();
    let mut provider = if devnet && !args.no_provider {
        let config = piazza_provider::ProviderConfig {
            node_url: format!("http://{}", node.rpc_addr),
            key: unlock(&keystore, PROVIDER_KEY)?,
            models_dir: piazza_engine::models_dir(),
            serve: {
                // Serve what was asked for and is registered (an older chain may lack some).
                let snapshot = node.app.store().snapshot()?;
                let registered =
                    piazza_ledger::models::all(&piazza_ledger::state::StateDelta::new(&snapshot));
                args.models
                    .iter()
                    .filter(|m| registered.iter().any(|r| &r.name == *m))
                    .cloned()
                    .collect()
            },
            price_per_unit: Amount::new(1_000),
            capacity: 16,
            stake: Amount::pza(1_000),
            // Sessions are served on a port the system picks; the offer on chain names it.
            endpoint: DEVNET_SESSION_ENDPOINT.to_string(),
            concurrency: 2,
            threads: 1,
            journal_dir: data_dir.join("provider-journal"),
            poll_interval: Duration::from_millis(100),
            fault: Default::default(),
        };
        roles.push((InProcess::Provider, config.address()));
        outln!(
            "piazza devnet: provider `{PROVIDER_KEY}` = {} serves {:?}",
            config.address(),
            config.serve
        );
        Some(tokio::spawn(piazza_provider::run(config, provider_stopped)))
    } else {
        None
    };
    let registered_models: Vec<String> = {
        let snapshot = node.app.store().snapshot()?;
        piazza_ledger::models::all(&piazza_ledger::state::StateDelta::new(&snapshot))
            .into_iter()
            .map(|r| r.name)
            .filter(|name| args.models.contains(name))
            .collect()
    };
    let auditor = if devnet && !args.no_auditor && keystore.info(AUDITOR_KEY).is_ok() {
        let config = piazza_provider::auditor::AuditorConfig {
            node_url: format!("http://{}", node.rpc_addr),
            key: unlock(&keystore, AUDITOR_KEY)?,
            models_dir: piazza_engine::models_dir(),
            audit: registered_models,
            stake: Amount::pza(1_000),
            threads: 1,
            poll_interval: Duration::from_millis(100),
            fault: Default::default(),
        };
        roles.push((InProcess::Auditor, config.address()));
        outln!(
            "piazza devnet: auditor `{AUDITOR_KEY}` = {} audits {:?}",
            config.address(),
            config.audit
        );
        Some(tokio::spawn(piazza_provider::auditor::run(
            config,
            stop_provider.subscribe(),
        )))
    } else {
        None
    };
    let mut storage_tasks = Vec::new();
    let storage_run = storage_keys
        .iter()
        .filter(|name| devnet && keystore.info(name).is_ok());
    for name in storage_run {
        let config = piazza_storage_daemon::provider::ProviderConfig {
            node_url: format!("http://{}", node.rpc_addr),
            key: unlock(&keystore, name)?,
            dir: data_dir.join("storage").join(name),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            endpoint: None,
            capacity_bytes: DEVNET_STORAGE_CAPACITY_BYTES,
            stake: Amount::pza(DEVNET_STORAGE_STAKE_PZA),
            limits: Default::default(),
            daemon: Default::default(),
        };
        roles.push((InProcess::Storage, config.address()));
        let stopped = stop_provider.subscribe();
        let name = name.clone();
        storage_tasks.push(tokio::spawn(async move {
            if let Err(e) = piazza_storage_daemon::provider::run(config, stopped).await {
                tracing::error!(storage = %name, error = %e, "devnet storage provider stopped");
            }
        }));
    }
    if !storage_tasks.is_empty() {
        outln!(
            "piazza devnet: {} storage providers (keys {STORAGE_KEY_PREFIX}0..) serve shards on loopback",
            storage_tasks.len()
        );
    }
    let publishing = (devnet && !storage_tasks.is_empty()).then(|| {
        let (node_url, keystore_dir) = (format!("http://{}", node.rpc_addr), keystore_dir.clone());
        tokio::spawn(async move {
            let published = match Keystore::open(&keystore_dir) {
                Ok(keystore) => publish_bundled(&node_url, &keystore).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = published {
                tracing::error!(error = %e, "the bundled models' files could not be stored");
            }
        })
    });
    let gateway = match devnet.then_some(args.gateway_addr) {
        Some(listen) => {
            let mut config = piazza_gateway::GatewayConfig::new(
                listen,
                &format!("http://{}", node.rpc_addr),
                data_dir.join("gateway"),
                keystore_dir.clone(),
            );
            // The gateway takes one password for every paying key: the `dev` key's.
            config.password = devnet_password(&keystore, DEV_KEY)?;
            let gateway = piazza_gateway::start(config).await?;
            outln!(
                "piazza devnet: OpenAI-compatible API on {}/v1 (API keys: piazza gateway key create --from {DEV_KEY} --spend-limit 10)",
                gateway.url()
            );
            Some(gateway)
        }
        None => None,
    };
    if devnet {
        let exports = config::client_exports(&home, &keystore_dir, &data_dir.join("gateway"));
        if !exports.is_empty() {
            outln!(
                "piazza devnet: in other shells: export {}",
                exports.join(" ")
            );
        }
    }
    let ready = tokio::spawn(announce_ready(
        format!("http://{}", node.rpc_addr),
        role,
        roles,
    ));
    let provider_failed = async {
        match provider.as_mut() {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            let _ = stop_provider.send(true);
            if let Some(task) = provider.take() {
                let _ = task.await;
            }
            if let Some(task) = auditor {
                let _ = task.await;
            }
            for task in storage_tasks {
                let _ = task.await;
            }
            if let Some(gateway) = gateway {
                gateway.shutdown().await;
            }
            node.shutdown().await;
            Ok(())
        }
        _ = node.stopped() => Err(anyhow::anyhow!("block production stopped; see the log above")),
        result = provider_failed => Err(anyhow::anyhow!("the devnet's provider stopped: {result:?}")),
    };
    ready.abort();
    if let Some(task) = publishing {
        task.abort();
    }
    outcome
}

/// The blob ids of the bundled model `name`'s files (a blob's id is its length and the root
/// over its bytes: known before it is stored).
fn bundled_files(
    models_dir: &std::path::Path,
    name: &str,
) -> Result<piazza_ledger::models::ModelFiles> {
    let paths = piazza_provider::models::bundled_paths(models_dir, name)
        .with_context(|| format!("no bundled model `{name}`"))?;
    let id = |path: &std::path::Path| -> Result<piazza_primitives::Hash> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(piazza_primitives::blob::blob_id(&bytes))
    };
    let weights = id(&paths.weights)?;
    let same = |path: &std::path::Path| -> Result<piazza_primitives::Hash> {
        if path == paths.weights {
            Ok(weights)
        } else {
            id(path)
        }
    };
    Ok(piazza_ledger::models::ModelFiles {
        weights,
        tokenizer: same(&paths.tokenizer)?,
        config: same(&paths.config)?,
    })
}

/// Stores the files of every registered model whose record names blobs no deal keeps yet, read
/// from the bundled files with those ids, paid by the models' owner: what lets a provider
/// without the files fetch them. Waits for enough storage providers to hold `k + m` shards.
async fn publish_bundled(node_url: &str, keystore: &Keystore) -> Result<()> {
    use piazza_blob::erasure::{DATA_SHARDS_DEFAULT, PARITY_SHARDS_DEFAULT};
    let client = piazza_client::Client::new(node_url);
    let key = unlock(keystore, MODELS_KEY)?;
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_millis(DEVNET_PUBLISH_WAIT_MS);
    let shards = usize::from(DATA_SHARDS_DEFAULT + PARITY_SHARDS_DEFAULT);
    while client.storage_providers().await.map_or(0, |p| p.len()) < shards {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "fewer than {shards} storage providers registered within {DEVNET_PUBLISH_WAIT_MS} ms"
        );
        tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
    }
    let models_dir = piazza_engine::models_dir();
    let mut files: Vec<(piazza_primitives::Hash, PathBuf)> = Vec::new();
    for record in client.models().await? {
        let (Some(blobs), Some(paths)) = (
            record.files,
            piazza_provider::models::bundled_paths(&models_dir, &record.name),
        ) else {
            continue;
        };
        for (id, path) in [
            (blobs.weights, paths.weights),
            (blobs.tokenizer, paths.tokenizer),
            (blobs.config, paths.config),
        ] {
            let id: piazza_primitives::Hash = id
                .parse()
                .map_err(|_| anyhow::anyhow!("`{id}` is not a blob id"))?;
            if !files.iter().any(|(have, _)| *have == id) {
                files.push((id, path));
            }
        }
    }
    let terms = crate::blob::Terms {
        epochs: DEVNET_MODEL_DEAL_EPOCHS,
        k: DATA_SHARDS_DEFAULT,
        m: PARITY_SHARDS_DEFAULT,
    };
    let (mut stored, mut len_bytes) = (0usize, 0u64);
    for (id, path) in &files {
        if client.blob(id).await?.is_some() {
            continue;
        }
        let blob = crate::blob::store(&client, &key, path, &terms)
            .await
            .with_context(|| format!("storing {}", path.display()))?;
        anyhow::ensure!(
            blob.id == *id,
            "{} changed since genesis: blob {} instead of {id}",
            path.display(),
            blob.id
        );
        stored += 1;
        len_bytes += blob.len_bytes;
    }
    outln!(
        "piazza devnet: bundled models published through storage ({} blobs, {stored} stored now, {:.1} MB in {:.1} s)",
        files.len(),
        len_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A role the devnet runs in its own process.
#[derive(Clone, Copy)]
enum InProcess {
    Provider,
    Auditor,
    Storage,
}

impl InProcess {
    fn name(self) -> &'static str {
        match self {
            InProcess::Provider => "provider",
            InProcess::Auditor => "auditor",
            InProcess::Storage => "storage",
        }
    }
}

/// Prints `piazza ROLE: ready` once every in-process role (provider, auditor) is registered on
/// chain, so the first job finds a provider. Scripts and tests wait for this line.
async fn announce_ready(node_url: String, role: &str, roles: Vec<(InProcess, Address)>) {
    let client = piazza_client::Client::new(&node_url);
    for (in_process, address) in &roles {
        loop {
            let registered = match in_process {
                InProcess::Provider => client.provider(address).await.map(|p| p.is_some()),
                InProcess::Auditor => client.auditor(address).await.map(|a| a.is_some()),
                InProcess::Storage => client.storage_provider(address).await.map(|s| s.is_some()),
            };
            if matches!(registered, Ok(true)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
        }
    }
    // Each kind of role once, with its count when there are several (`6 storage`).
    let mut names: Vec<String> = Vec::new();
    for (role, _) in &roles {
        let count = roles
            .iter()
            .filter(|(r, _)| r.name() == role.name())
            .count();
        let name = match count {
            1 => role.name().to_string(),
            n => format!("{n} {}", role.name()),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        outln!("piazza {role}: ready");
    } else {
        outln!("piazza {role}: ready ({} registered)", names.join(" and "));
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

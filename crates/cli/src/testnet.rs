//! `piazza testnet init|run`: a local network of validators on 127.0.0.1, one process each.
//!
//! `init` writes, under one directory: a keystore with every validator's key and the network's
//! `dev`, `provider`, `auditor` and `models` keys (empty passwords kept in `NAME.password`), one
//! shared `genesis.json` (the validators bonded, with their consensus keys) and one
//! `validator-I/node.toml` per validator (its RPC and consensus ports, every other validator
//! as a peer). `run` starts `piazza node --config` for each, then a provider, an auditor and a
//! gateway against different nodes, and stops them all on Ctrl-C.

use crate::node;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use piazza_keystore::Keystore;
use piazza_ledger::genesis::{
    FeeParams, Genesis, GenesisAccount, GenesisBond, GenesisValidator, NetworkGenesis,
};
use piazza_ledger::staking::{self, Role};
use piazza_primitives::{Address, Amount, PublicKey};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The most validators `init` writes (the consensus set's own bound is far above).
pub const VALIDATORS_MAX: usize = 64;
/// The first port `init` hands out: validator I listens for JSON-RPC on BASE + 2·I and for
/// consensus on BASE + 2·I + 1.
pub const DEFAULT_BASE_PORT: u16 = 26650;
pub const TESTNET_CHAIN_ID: &str = "piazza-testnet";
/// PZA each validator holds and bonds at genesis.
const VALIDATOR_BALANCE_PZA: u64 = 100_000;
const VALIDATOR_BOND_PZA: u64 = 10_000;
/// How long `run` lets its processes stop after a signal before killing them.
const SHUTDOWN_GRACE_MS: u64 = 5_000;
/// How often `run` checks whether a process it started has exited.
const CHILD_POLL_MS: u64 = 200;

#[derive(Subcommand)]
pub enum TestnetCommand {
    /// Write keys, configs and one genesis for N validators on 127.0.0.1.
    Init(InitArgs),
    /// Start every validator of a directory `init` wrote, plus a provider, an auditor and a
    /// gateway; Ctrl-C stops them all.
    Run(RunArgs),
    /// Benchmark: the devnet's solo producer, 1 and 4 Malachite validators (processes) under
    /// the same load: blocks/s, transfers/s finalized, submission → finality p50/p99.
    Bench(crate::bench_testnet::BenchArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// How many validators.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// The directory to write (must not hold a testnet yet).
    #[arg(long)]
    pub dir: PathBuf,
    /// Validator I: JSON-RPC on BASE + 2·I, consensus on BASE + 2·I + 1.
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// Bundled models to register at genesis (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', default_values_t = [piazza_provider::models::MINILM.to_string()])]
    pub models: Vec<String>,
    /// Each height's target time, written into every node's config (`block_interval_ms`).
    #[arg(long, default_value_t = node::DEFAULT_BLOCK_INTERVAL_MS)]
    pub block_interval_ms: u64,
}

#[derive(Args)]
pub struct RunArgs {
    /// The directory `piazza testnet init` wrote.
    #[arg(long)]
    pub dir: PathBuf,
    /// Where the gateway serves the OpenAI-compatible API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway_addr: std::net::SocketAddr,
    /// Run the validators only (no provider, auditor or gateway).
    #[arg(long)]
    pub validators_only: bool,
}

pub async fn run(command: TestnetCommand) -> Result<()> {
    match command {
        TestnetCommand::Init(args) => {
            let options = InitOptions {
                validators: args.validators,
                base_port: args.base_port,
                models: args.models,
                funded: Vec::new(),
            };
            let testnet = init_paced(&args.dir, &options, args.block_interval_ms)?;
            for v in &testnet.validators {
                outln!(
                    "piazza testnet: {} = {} (JSON-RPC {}, consensus {}) config {}",
                    v.name,
                    v.address,
                    v.rpc_url,
                    v.listen_addr,
                    v.config.display()
                );
            }
            outln!(
                "piazza testnet: genesis {}, keystore {}; start with: piazza testnet run --dir {}",
                args.dir.join(GENESIS_FILE).display(),
                args.dir.join(KEYS_DIR).display(),
                args.dir.display()
            );
            Ok(())
        }
        TestnetCommand::Run(args) => run_network(args).await,
        TestnetCommand::Bench(args) => crate::bench_testnet::run(args).await,
    }
}

pub const GENESIS_FILE: &str = "genesis.json";
pub const KEYS_DIR: &str = "keys";
pub const CONFIG_FILE: &str = "node.toml";

/// What `init` writes.
pub struct InitOptions {
    pub validators: usize,
    pub base_port: u16,
    pub models: Vec<String>,
    /// Further accounts funded at genesis (e.g. a benchmark's senders), 1,000 PZA each.
    pub funded: Vec<Address>,
}

/// One validator `init` wrote.
pub struct TestnetValidator {
    pub name: String,
    pub address: Address,
    pub config: PathBuf,
    pub rpc_url: String,
    pub listen_addr: String,
}

pub struct Testnet {
    pub validators: Vec<TestnetValidator>,
}

fn validator_name(index: usize) -> String {
    format!("validator-{index}")
}

/// The ports of validator `index`: (JSON-RPC, consensus).
fn ports(base_port: u16, index: usize) -> Result<(u16, u16)> {
    let rpc = u16::try_from(usize::from(base_port) + 2 * index)
        .ok()
        .filter(|p| *p < u16::MAX)
        .with_context(|| format!("--base-port {base_port} leaves no room for validator {index}"))?;
    Ok((rpc, rpc + 1))
}

/// A key of the testnet's keystore, made with the empty password kept beside it.
fn make_key(keystore: &Keystore, name: &str) -> Result<piazza_keystore::KeyInfo> {
    let info = keystore.create(name, "")?;
    keystore.store_password(name, "")?;
    Ok(info)
}

/// [`init_paced`] at the default block interval.
pub fn init(dir: &Path, options: &InitOptions) -> Result<Testnet> {
    init_paced(dir, options, node::DEFAULT_BLOCK_INTERVAL_MS)
}

/// Writes the keystore, genesis and configs of a local network under `dir`, each node pacing
/// its heights to `block_interval_ms`.
pub fn init_paced(dir: &Path, options: &InitOptions, block_interval_ms: u64) -> Result<Testnet> {
    anyhow::ensure!(
        block_interval_ms > 0,
        "--block-interval-ms must be positive"
    );
    anyhow::ensure!(
        (1..=VALIDATORS_MAX).contains(&options.validators),
        "--validators must be 1 to {VALIDATORS_MAX}"
    );
    anyhow::ensure!(
        !dir.join(GENESIS_FILE).exists(),
        "{} already holds a testnet",
        dir.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let keystore = Keystore::open(&dir.join(KEYS_DIR))?;
    let mut validator_keys: Vec<(String, PublicKey, Address)> = Vec::new();
    for index in 0..options.validators {
        let name = validator_name(index);
        let info = make_key(&keystore, &name)?;
        let key = piazza_keystore::parse_public_key(&info.public_key)
            .context("the keystore wrote a bad public key")?;
        validator_keys.push((name, key, info.address));
    }
    let dev = make_key(&keystore, crate::devnet::DEV_KEY)?.address;
    let provider = make_key(&keystore, crate::devnet::PROVIDER_KEY)?.address;
    let auditor = make_key(&keystore, crate::devnet::AUDITOR_KEY)?.address;
    let models_owner = make_key(&keystore, crate::devnet::MODELS_KEY)?.address;
    let models_dir = piazza_engine::models_dir();
    let models = options
        .models
        .iter()
        .filter(|name| !name.is_empty())
        .map(|name| model_record(&models_dir, name, models_owner))
        .collect::<Result<Vec<_>>>()?;

    let mut accounts = vec![
        funded(dev, 1_000_000),
        funded(provider, 10_000),
        funded(auditor, 10_000),
    ];
    accounts.extend(options.funded.iter().map(|a| funded(*a, 1_000)));
    accounts.extend(
        validator_keys
            .iter()
            .map(|(_, _, a)| funded(*a, VALIDATOR_BALANCE_PZA)),
    );
    let genesis = NetworkGenesis {
        genesis: Genesis {
            chain_id: TESTNET_CHAIN_ID.into(),
            genesis_time_ms: now_ms(),
            fees: FeeParams::default(),
            staking: staking::Params::default(),
            accounts,
            bonds: validator_keys
                .iter()
                .map(|(_, _, address)| GenesisBond {
                    address: *address,
                    role: Role::Validator,
                    amount: Amount::pza(VALIDATOR_BOND_PZA),
                })
                .collect(),
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
        },
        validators: validator_keys
            .iter()
            .map(|(_, key, _)| GenesisValidator {
                consensus_key: *key,
            })
            .collect(),
    };
    genesis
        .genesis
        .validate()
        .context("the testnet's genesis")?;
    std::fs::write(dir.join(GENESIS_FILE), serde_json::to_vec_pretty(&genesis)?)?;

    let all_ports = (0..options.validators)
        .map(|i| ports(options.base_port, i))
        .collect::<Result<Vec<_>>>()?;
    let mut validators = Vec::with_capacity(options.validators);
    for (index, (name, _, address)) in validator_keys.into_iter().enumerate() {
        let (rpc, p2p) = all_ports[index];
        let peers: Vec<String> = all_ports
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, (_, p))| format!("\"{}\"", multiaddr(*p)))
            .collect();
        let home = dir.join(&name);
        std::fs::create_dir_all(&home)?;
        let config = home.join(CONFIG_FILE);
        let text = format!(
            "# {name} of a local testnet (piazza testnet init); paths are relative to this file.\n\
             data_dir = \"data\"\n\
             rpc_addr = \"127.0.0.1:{rpc}\"\n\
             genesis = \"../{GENESIS_FILE}\"\n\
             keystore = \"../{KEYS_DIR}\"\n\
             validator_key = \"{name}\"\n\
             block_interval_ms = {block_interval_ms}\n\
             \n\
             [consensus]\n\
             listen_addr = \"{}\"\n\
             peers = [{}]\n\
             propose_timeout_ms = {}\n\
             prevote_timeout_ms = {}\n\
             precommit_timeout_ms = {}\n",
            multiaddr(p2p),
            peers.join(", "),
            node::DEFAULT_PROPOSE_TIMEOUT_MS,
            node::DEFAULT_PREVOTE_TIMEOUT_MS,
            node::DEFAULT_PRECOMMIT_TIMEOUT_MS,
        );
        std::fs::write(&config, text)?;
        validators.push(TestnetValidator {
            name,
            address,
            config,
            rpc_url: format!("http://127.0.0.1:{rpc}"),
            listen_addr: multiaddr(p2p),
        });
    }
    Ok(Testnet { validators })
}

/// The genesis record of a bundled model, owned by `owner`.
fn model_record(
    models_dir: &Path,
    name: &str,
    owner: Address,
) -> Result<piazza_ledger::models::ModelRecord> {
    use piazza_provider::models::{minilm_record, smollm2_record, MINILM, SMOLLM2};
    Ok(match name {
        MINILM => minilm_record(models_dir, owner)?,
        SMOLLM2 => smollm2_record(models_dir, owner)?,
        other => anyhow::bail!("no bundled model `{other}` (bundled: {MINILM}, {SMOLLM2})"),
    })
}

fn funded(address: Address, pza: u64) -> GenesisAccount {
    GenesisAccount {
        address,
        balance: Amount::pza(pza),
    }
}

fn multiaddr(port: u16) -> String {
    format!("/ip4/127.0.0.1/tcp/{port}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The validators' configs under `dir`, in index order.
pub fn configs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for index in 0..VALIDATORS_MAX {
        let config = dir.join(validator_name(index)).join(CONFIG_FILE);
        if !config.exists() {
            break;
        }
        found.push(config);
    }
    anyhow::ensure!(
        !found.is_empty(),
        "{} holds no testnet (run piazza testnet init --dir {} first)",
        dir.display(),
        dir.display()
    );
    Ok(found)
}

/// A process `run` started, its output in a log file.
struct Process {
    name: String,
    child: Child,
}

fn spawn(name: &str, args: &[String], log: &Path) -> Result<Process> {
    let program = std::env::current_exe()?;
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(program)
        .args(args)
        .env_remove("PIAZZA_CONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Process {
        name: name.to_string(),
        child,
    })
}

async fn run_network(args: RunArgs) -> Result<()> {
    let configs = configs(&args.dir)?;
    let keystore = args.dir.join(KEYS_DIR);
    let mut processes = Vec::new();
    let mut urls = Vec::new();
    for (index, config) in configs.iter().enumerate() {
        let file = node::load(config)?;
        let rpc = file
            .rpc_addr
            .with_context(|| format!("{} names no rpc_addr", config.display()))?;
        let name = validator_name(index);
        let log = args.dir.join(&name).join("node.log");
        let config_arg = config.display().to_string();
        processes.push(spawn(
            &name,
            &["node".into(), "--config".into(), config_arg],
            &log,
        )?);
        outln!(
            "piazza testnet: {name} JSON-RPC on http://{rpc} (log {})",
            log.display()
        );
        urls.push(format!("http://{rpc}"));
    }
    // The roles need the nodes' RPC: wait until every node answers (or one stops).
    let clients: Vec<_> = urls.iter().map(|u| piazza_client::Client::new(u)).collect();
    tokio::select! {
        _ = crate::devnet::shutdown_signal() => {
            stop(processes).await;
            return Ok(());
        }
        name = first_exit(&mut processes) => {
            stop(processes).await;
            anyhow::bail!("{name} stopped; see its log");
        }
        () = nodes_answer(&clients) => {}
    }
    let client = clients[0].clone();
    let genesis = node::read_genesis(&args.dir.join(GENESIS_FILE))?;
    let models: Vec<String> = genesis
        .genesis
        .models
        .iter()
        .map(|m| m.name.clone())
        .collect();
    if !args.validators_only {
        // Roles on different nodes: clients work against any node of the network.
        let node_of = |i: usize| urls[i % urls.len()].clone();
        let keystore_arg = keystore.display().to_string();
        if !models.is_empty() {
            let list = models.join(",");
            processes.push(spawn(
                "provider",
                &[
                    "provider",
                    "run",
                    "--node",
                    &node_of(0),
                    "--from",
                    crate::devnet::PROVIDER_KEY,
                    "--keystore",
                    &keystore_arg,
                    "--models",
                    &list,
                ]
                .map(String::from),
                &args.dir.join("provider.log"),
            )?);
            processes.push(spawn(
                "auditor",
                &[
                    "auditor",
                    "run",
                    "--node",
                    &node_of(1),
                    "--from",
                    crate::devnet::AUDITOR_KEY,
                    "--keystore",
                    &keystore_arg,
                    "--models",
                    &list,
                ]
                .map(String::from),
                &args.dir.join("auditor.log"),
            )?);
        }
        let gateway_dir = args.dir.join("gateway").display().to_string();
        processes.push(spawn(
            "gateway",
            &[
                "gateway",
                "run",
                "--listen",
                &args.gateway_addr.to_string(),
                "--node",
                &node_of(2),
                "--data-dir",
                &gateway_dir,
                "--keystore",
                &keystore_arg,
            ]
            .map(String::from),
            &args.dir.join("gateway.log"),
        )?);
        outln!(
            "piazza testnet: OpenAI-compatible API on http://{}/v1 (API keys: piazza gateway key create --data-dir {gateway_dir} --keystore {keystore_arg} --from {} --spend-limit 10)",
            args.gateway_addr,
            crate::devnet::DEV_KEY
        );
    }
    outln!(
        "piazza testnet: in other shells: export PIAZZA_NODE={} PIAZZA_KEYSTORE={} PIAZZA_GENESIS={}",
        urls[0],
        keystore.display(),
        args.dir.join(GENESIS_FILE).display()
    );
    let ready = tokio::spawn(announce_ready(client));
    let outcome = tokio::select! {
        _ = crate::devnet::shutdown_signal() => Ok(()),
        name = first_exit(&mut processes) => Err(anyhow::anyhow!("{name} stopped; see its log")),
    };
    ready.abort();
    stop(processes).await;
    outcome
}

/// Returns once every node answers `piazza_status`.
async fn nodes_answer(clients: &[piazza_client::Client]) {
    for client in clients {
        while client.status().await.is_err() {
            tokio::time::sleep(Duration::from_millis(CHILD_POLL_MS)).await;
        }
    }
}

/// Prints `piazza testnet: ready` once the network has finalized its first block.
async fn announce_ready(client: piazza_client::Client) {
    loop {
        if matches!(client.status().await, Ok(status) if status.height >= 1) {
            outln!("piazza testnet: ready");
            return;
        }
        tokio::time::sleep(Duration::from_millis(CHILD_POLL_MS)).await;
    }
}

/// The name of the first process that exits.
async fn first_exit(processes: &mut [Process]) -> String {
    loop {
        for process in processes.iter_mut() {
            if !matches!(process.child.try_wait(), Ok(None)) {
                return process.name.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(CHILD_POLL_MS)).await;
    }
}

/// Asks every process to stop (SIGTERM), then kills those still running after the grace.
async fn stop(mut processes: Vec<Process>) {
    let pids: Vec<String> = processes.iter().map(|p| p.child.id().to_string()).collect();
    let _ = Command::new("kill")
        .arg("-TERM")
        .args(&pids)
        .stderr(Stdio::null())
        .status();
    let deadline = std::time::Instant::now() + Duration::from_millis(SHUTDOWN_GRACE_MS);
    while std::time::Instant::now() < deadline
        && processes
            .iter_mut()
            .any(|p| matches!(p.child.try_wait(), Ok(None)))
    {
        tokio::time::sleep(Duration::from_millis(CHILD_POLL_MS)).await;
    }
    for process in &mut processes {
        let _ = process.child.kill();
        let _ = process.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        args: InitArgs,
    }

    fn options() -> InitOptions {
        InitOptions {
            validators: 2,
            base_port: 40_000,
            models: Vec::new(),
            funded: Vec::new(),
        }
    }

    /// The interval each written config gives its node.
    fn intervals(testnet: &Testnet) -> Vec<Option<u64>> {
        testnet
            .validators
            .iter()
            .map(|v| node::load(&v.config).unwrap().block_interval_ms)
            .collect()
    }

    #[test]
    fn init_writes_the_block_interval_into_every_config() {
        let dir = tempfile::tempdir().unwrap();
        let probe =
            Probe::try_parse_from(["probe", "--dir", "d", "--block-interval-ms", "250"]).unwrap();
        assert_eq!(probe.args.block_interval_ms, 250);
        let testnet = init_paced(&dir.path().join("paced"), &options(), 250).unwrap();
        assert_eq!(intervals(&testnet), vec![Some(250); 2]);

        let testnet = init(&dir.path().join("default"), &options()).unwrap();
        let default = Probe::try_parse_from(["probe", "--dir", "d"]).unwrap();
        assert_eq!(
            default.args.block_interval_ms,
            node::DEFAULT_BLOCK_INTERVAL_MS
        );
        assert_eq!(
            intervals(&testnet),
            vec![Some(node::DEFAULT_BLOCK_INTERVAL_MS); 2]
        );

        let Err(error) = init_paced(&dir.path().join("zero"), &options(), 0) else {
            panic!("a zero block interval was accepted");
        };
        assert!(error.to_string().contains("must be positive"), "{error}");
    }
}

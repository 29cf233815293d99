//! `piazza node`: a node from a config file. With a `[consensus]` section (or `--listen-addr`) it
//! joins a network of validators on Malachite (`piazza_node::start_bft`); without one it produces
//! blocks alone from its genesis (`piazza_node::start`). Flags override PIAZZA_* variables, which
//! override the file; relative paths in the file are relative to the file's directory.

use crate::config;
use anyhow::{Context, Result};
use clap::Args;
use piazza_keystore::Keystore;
use piazza_ledger::genesis::NetworkGenesis;
use piazza_mempool::MempoolConfig;
use piazza_node::bft::BftConfig;
use piazza_node::{Multiaddr, NodeHandle};
use piazza_primitives::SecretKey;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most bytes of a genesis document.
pub const GENESIS_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most bytes of a node config file.
pub const CONFIG_BYTES_MAX: usize = 64 * 1024;
/// The keystore name of a node's key unless told otherwise.
pub const DEFAULT_KEY: &str = "validator";
/// Round timeouts for validators on one machine or a LAN: a missed round costs little.
pub const DEFAULT_PROPOSE_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_PREVOTE_TIMEOUT_MS: u64 = 300;
pub const DEFAULT_PRECOMMIT_TIMEOUT_MS: u64 = 300;
/// The solo producer's interval, and on a network each height's target time, unless told.
pub const DEFAULT_BLOCK_INTERVAL_MS: u64 = 1_000;

/// `node.toml`: every field optional; `[consensus]` makes the node a validator of a network.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub data_dir: Option<PathBuf>,
    pub rpc_addr: Option<String>,
    pub genesis: Option<PathBuf>,
    pub keystore: Option<PathBuf>,
    /// The key's name in the keystore (its password in `KEYSTORE/NAME.password`, or
    /// PIAZZA_PASSWORD).
    pub validator_key: Option<String>,
    /// The solo producer's interval, or with `[consensus]` each height's target time (a
    /// decided block is committed no sooner after its height started).
    pub block_interval_ms: Option<u64>,
    pub mempool_capacity: Option<usize>,
    pub consensus: Option<ConsensusFile>,
}

/// `[consensus]`: where this validator listens, whom it dials and the round timeouts (the
/// validators and their consensus keys are the genesis's).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusFile {
    /// A libp2p address, e.g. `/ip4/127.0.0.1/tcp/27000`.
    pub listen_addr: Option<String>,
    #[serde(default)]
    pub peers: Vec<String>,
    pub moniker: Option<String>,
    pub propose_timeout_ms: Option<u64>,
    pub prevote_timeout_ms: Option<u64>,
    pub precommit_timeout_ms: Option<u64>,
}

#[derive(Args)]
pub struct NodeArgs {
    /// TOML config file (flags and PIAZZA_* variables override it).
    #[arg(long, env = "PIAZZA_CONFIG")]
    config: Option<PathBuf>,
    /// Where the chain and the consensus WAL live [default: ~/.piazza/node; ~/.piazza is
    /// $PIAZZA_HOME].
    #[arg(long, env = "PIAZZA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// JSON-RPC listen address [default: 127.0.0.1:8545].
    #[arg(long, env = "PIAZZA_RPC_ADDR")]
    rpc_addr: Option<String>,
    /// Genesis document (JSON): needed the first time, and always on a network (its bonds give
    /// the validators' power).
    #[arg(long, env = "PIAZZA_GENESIS")]
    genesis: Option<PathBuf>,
    /// Keystore directory [default: DATA_DIR/keys].
    #[arg(long, env = "PIAZZA_KEYSTORE")]
    keystore: Option<PathBuf>,
    /// Keystore name of this node's key [default: validator].
    #[arg(long, env = "PIAZZA_VALIDATOR_KEY")]
    validator_key: Option<String>,
    /// Consensus: libp2p listen address, e.g. /ip4/127.0.0.1/tcp/27000 (makes the node join a
    /// network instead of producing blocks alone).
    #[arg(long, env = "PIAZZA_LISTEN_ADDR")]
    listen_addr: Option<String>,
    /// Consensus: peers to dial (comma-separated libp2p addresses) [default: the file's].
    #[arg(long, env = "PIAZZA_PEERS", value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Block interval (solo producer) or each height's target time (consensus) [default: 1000].
    #[arg(long, env = "PIAZZA_BLOCK_INTERVAL_MS")]
    block_interval_ms: Option<u64>,
}

/// Everything `piazza node` needs, resolved and checked.
#[derive(Debug)]
pub struct NodePlan {
    pub data_dir: PathBuf,
    pub rpc_addr: std::net::SocketAddr,
    pub genesis: Option<PathBuf>,
    pub keystore: PathBuf,
    pub key_name: String,
    pub block_interval_ms: u64,
    pub mempool_capacity: Option<usize>,
    pub consensus: Option<ConsensusPlan>,
}

#[derive(Debug)]
pub struct ConsensusPlan {
    pub listen_addr: Multiaddr,
    pub peers: Vec<Multiaddr>,
    pub moniker: String,
    pub propose_timeout_ms: u64,
    pub prevote_timeout_ms: u64,
    pub precommit_timeout_ms: u64,
}

/// Reads a config file (at most [`CONFIG_BYTES_MAX`]); relative paths in it become relative to
/// its directory.
pub fn load(path: &Path) -> Result<NodeFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    anyhow::ensure!(
        text.len() <= CONFIG_BYTES_MAX,
        "config {} is larger than {CONFIG_BYTES_MAX} bytes",
        path.display()
    );
    let mut file: NodeFile =
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for field in [&mut file.data_dir, &mut file.genesis, &mut file.keystore] {
        if let Some(p) = field.as_mut() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
    Ok(file)
}

/// Flags (with their PIAZZA_* variables) over the file over the defaults, checked.
pub fn plan(args: NodeArgs) -> Result<NodePlan> {
    let file = match &args.config {
        Some(path) => load(path)?,
        None => NodeFile::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| config::home().join("node"));
    let rpc_addr = args
        .rpc_addr
        .or(file.rpc_addr)
        .unwrap_or_else(|| crate::devnet::DEFAULT_RPC_ADDR.into());
    let rpc_addr = rpc_addr
        .parse()
        .with_context(|| format!("rpc_addr `{rpc_addr}` is not HOST:PORT"))?;
    let block_interval_ms = args
        .block_interval_ms
        .or(file.block_interval_ms)
        .unwrap_or(DEFAULT_BLOCK_INTERVAL_MS);
    anyhow::ensure!(block_interval_ms > 0, "block interval must be positive");
    let keystore = args
        .keystore
        .or(file.keystore)
        .unwrap_or_else(|| data_dir.join("keys"));
    let key_name = args
        .validator_key
        .or(file.validator_key)
        .unwrap_or_else(|| DEFAULT_KEY.into());
    let genesis = args.genesis.or(file.genesis);
    let section = file.consensus;
    let listen_addr = args
        .listen_addr
        .or_else(|| section.as_ref().and_then(|c| c.listen_addr.clone()));
    let consensus = match listen_addr {
        None => {
            anyhow::ensure!(
                section.is_none(),
                "[consensus] needs listen_addr (or --listen-addr)"
            );
            None
        }
        Some(listen_addr) => {
            let section = section.unwrap_or_default();
            anyhow::ensure!(
                genesis.is_some(),
                "a node on a network needs its genesis (genesis = FILE or --genesis)"
            );
            let listen_addr = multiaddr("listen_addr", &listen_addr)?;
            let peers = args
                .peers
                .unwrap_or(section.peers)
                .iter()
                .map(|peer| multiaddr("peer", peer))
                .collect::<Result<Vec<_>>>()?;
            let timeout = |value: Option<u64>, default: u64, name: &str| -> Result<u64> {
                let ms = value.unwrap_or(default);
                anyhow::ensure!(ms > 0, "{name} must be positive");
                Ok(ms)
            };
            Some(ConsensusPlan {
                listen_addr,
                peers,
                moniker: section.moniker.unwrap_or_else(|| key_name.clone()),
                propose_timeout_ms: timeout(
                    section.propose_timeout_ms,
                    DEFAULT_PROPOSE_TIMEOUT_MS,
                    "propose_timeout_ms",
                )?,
                prevote_timeout_ms: timeout(
                    section.prevote_timeout_ms,
                    DEFAULT_PREVOTE_TIMEOUT_MS,
                    "prevote_timeout_ms",
                )?,
                precommit_timeout_ms: timeout(
                    section.precommit_timeout_ms,
                    DEFAULT_PRECOMMIT_TIMEOUT_MS,
                    "precommit_timeout_ms",
                )?,
            })
        }
    };
    Ok(NodePlan {
        data_dir,
        rpc_addr,
        genesis,
        keystore,
        key_name,
        block_interval_ms,
        mempool_capacity: file.mempool_capacity,
        consensus,
    })
}

fn multiaddr(what: &str, text: &str) -> Result<Multiaddr> {
    text.parse().with_context(|| {
        format!("{what} `{text}` is not a libp2p address like /ip4/127.0.0.1/tcp/27000")
    })
}

/// Reads a genesis document (JSON, at most [`GENESIS_BYTES_MAX`]): the ledger's genesis fields
/// and, for a network, beside them the consensus keys of the validators it bonds
/// (`"validators": [{"consensus_key": HEX}]`).
pub fn read_genesis(path: &Path) -> Result<NetworkGenesis> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading genesis {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() <= GENESIS_BYTES_MAX,
        "genesis {} is larger than {GENESIS_BYTES_MAX} bytes",
        path.display()
    );
    serde_json::from_slice(&bytes).with_context(|| format!("parsing genesis {}", path.display()))
}

/// Unlocks `name` with its `NAME.password` file, else PIAZZA_PASSWORD, else the empty password
/// (a daemon never asks on a terminal).
pub fn unlock(keystore: &Keystore, name: &str) -> Result<SecretKey> {
    let sources = crate::password::Sources {
        file: None,
        env: std::env::var(crate::password::PASSWORD_ENV).ok(),
        terminal: false,
    };
    let (password, _) = crate::password::for_key(keystore, name, &sources)?;
    keystore
        .unlock(name, &password)
        .with_context(|| format!("unlocking key `{name}` in {}", keystore.dir().display()))
}

/// Starts the node `plan` describes (solo or on the network).
pub async fn start(plan: &NodePlan) -> Result<NodeHandle> {
    let fresh = !plan.data_dir.join(piazza_node::CHAIN_DB_FILE).exists();
    let genesis = match &plan.genesis {
        Some(path) => Some(read_genesis(path)?),
        None if fresh => anyhow::bail!(
            "{} holds no chain yet: pass --genesis FILE",
            plan.data_dir.display()
        ),
        None => None,
    };
    let keystore = Keystore::open(&plan.keystore)
        .with_context(|| format!("opening keystore {}", plan.keystore.display()))?;
    let key = unlock(&keystore, &plan.key_name)?;
    let mut node_config = piazza_node::NodeConfig::new(plan.data_dir.clone(), plan.rpc_addr);
    node_config.block_interval = Duration::from_millis(plan.block_interval_ms);
    if let Some(capacity) = plan.mempool_capacity {
        node_config.mempool = MempoolConfig {
            capacity,
            ..MempoolConfig::default()
        };
    }
    let Some(consensus) = &plan.consensus else {
        return Ok(piazza_node::start(node_config, genesis.map(|g| g.genesis), key).await?);
    };
    let genesis = genesis.context("a node on a network needs its genesis")?;
    anyhow::ensure!(
        !genesis.validators.is_empty(),
        "the genesis names no validators' consensus keys (`validators`)"
    );
    let mut bft = BftConfig::new(
        plan.data_dir.join("consensus"),
        genesis.genesis.chain_id.clone(),
        consensus.listen_addr.clone(),
    );
    bft.moniker = consensus.moniker.clone();
    bft.block_interval = Some(Duration::from_millis(plan.block_interval_ms));
    bft.persistent_peers = consensus.peers.clone();
    bft.timeouts.propose = Duration::from_millis(consensus.propose_timeout_ms);
    bft.timeouts.prevote = Duration::from_millis(consensus.prevote_timeout_ms);
    bft.timeouts.precommit = Duration::from_millis(consensus.precommit_timeout_ms);
    bft.timeouts.rebroadcast = bft.timeouts.propose + bft.timeouts.prevote + bft.timeouts.precommit;
    Ok(piazza_node::start_bft(node_config, Some(genesis), key, bft).await?)
}

pub async fn run(args: NodeArgs) -> Result<()> {
    let plan = plan(args)?;
    let mut node = start(&plan).await?;
    let head = node.app.head()?;
    let mode = match &plan.consensus {
        Some(c) => format!("consensus on {}", c.listen_addr),
        None => "solo producer".to_string(),
    };
    outln!(
        "piazza node: chain {} at height {}, JSON-RPC on http://{} ({mode})",
        node.app.chain_id(),
        head.height,
        node.rpc_addr
    );
    tokio::select! {
        _ = crate::devnet::shutdown_signal() => {
            tracing::info!("shutting down");
            node.shutdown().await;
            Ok(())
        }
        _ = node.stopped() => Err(anyhow::anyhow!("block production stopped; see the log above")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        args: NodeArgs,
    }

    fn check(file: &str, flags: &[&str]) -> Result<NodePlan> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv = vec!["probe", "--config", path.to_str().unwrap()];
        argv.extend_from_slice(flags);
        let plan = plan(Probe::try_parse_from(argv)?.args)?;
        Ok(NodePlan {
            // Paths relative to the file's directory, made comparable across runs.
            data_dir: plan
                .data_dir
                .strip_prefix(dir.path())
                .map(Path::to_path_buf)
                .unwrap_or(plan.data_dir.clone()),
            ..plan
        })
    }

    #[test]
    fn flags_override_the_file_and_paths_follow_the_file() {
        let file = "data_dir = \"v0\"\nrpc_addr = \"127.0.0.1:1\"\ngenesis = \"g.json\"\n\
             [consensus]\nlisten_addr = \"/ip4/127.0.0.1/tcp/27000\"\n\
             peers = [\"/ip4/127.0.0.1/tcp/27001\"]\npropose_timeout_ms = 700\n";
        let plan = check(file, &[]).unwrap();
        assert_eq!(plan.data_dir, PathBuf::from("v0"));
        assert_eq!(plan.rpc_addr.port(), 1);
        let consensus = plan.consensus.unwrap();
        assert_eq!(
            consensus.peers,
            vec![multiaddr("", "/ip4/127.0.0.1/tcp/27001").unwrap()]
        );
        assert_eq!(consensus.propose_timeout_ms, 700);
        assert_eq!(consensus.prevote_timeout_ms, DEFAULT_PREVOTE_TIMEOUT_MS);
        let plan = check(
            file,
            &[
                "--rpc-addr",
                "127.0.0.1:2",
                "--peers",
                "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2",
            ],
        )
        .unwrap();
        assert_eq!(plan.rpc_addr.port(), 2);
        assert_eq!(plan.consensus.unwrap().peers.len(), 2);
    }

    #[test]
    fn a_bad_config_names_what_is_wrong() {
        let cases = [
            ("rpc_adr = 1\n", "unknown field"),
            ("rpc_addr = \"nowhere\"\n", "not HOST:PORT"),
            ("[consensus]\npeers = []\n", "needs listen_addr"),
            (
                "[consensus]\nlisten_addr = \"/ip4/127.0.0.1/tcp/1\"\n",
                "needs its genesis",
            ),
            (
                "genesis = \"g\"\n[consensus]\nlisten_addr = \"127.0.0.1:1\"\n",
                "not a libp2p address",
            ),
            (
                "genesis = \"g\"\n[consensus]\nlisten_addr = \"/ip4/127.0.0.1/tcp/1\"\nprevote_timeout_ms = 0\n",
                "must be positive",
            ),
        ];
        for (file, expected) in cases {
            let error = format!("{:#}", check(file, &[]).unwrap_err());
            assert!(error.contains(expected), "{file:?}: {error}");
        }
    }

    #[test]
    fn without_consensus_the_node_produces_alone() {
        let plan = check("block_interval_ms = 50\n", &[]).unwrap();
        assert!(plan.consensus.is_none());
        assert_eq!(plan.block_interval_ms, 50);
    }
}

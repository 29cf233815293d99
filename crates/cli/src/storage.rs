//! `piazza storage run|status`: a storage provider (the shard service, challenge answers and
//! repairs; `piazza_storage_daemon`) and its record on chain.

use crate::query::{pza, signer};
use crate::{ClientArgs, KeyArgs, NodeUrlArgs};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use piazza_client::Client;
use piazza_primitives::Address;
use piazza_storage_daemon::daemon::DaemonConfig;
use piazza_storage_daemon::provider::{self, ProviderConfig};
use piazza_storage_daemon::server::ServerLimits;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum StorageCommand {
    /// Run a storage provider: register (stake, capacity, endpoint), serve shards, answer every
    /// challenge, rebuild lost shards from the other holders.
    Run(RunArgs),
    /// A storage provider's record: capacity, bytes used, proofs, failures, stake, shards.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// Address (pz1...) or keystore key name.
        provider: String,
        /// Keystore to look key names up in [default: as for `keys`].
        #[arg(long, env = "PIAZZA_KEYSTORE")]
        keystore: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    node: NodeUrlArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// The shard store's directory [default: ~/.piazza/storage/ADDRESS].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the shard service listens.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: std::net::SocketAddr,
    /// The endpoint registered on chain [default: http:// and the listen address].
    #[arg(long)]
    endpoint: Option<String>,
    /// Shard bytes offered (and the store's bound).
    #[arg(long, default_value_t = 16 << 30)]
    capacity_bytes: u64,
    /// PZA bonded for the `storage` role when registering, e.g. `100`.
    #[arg(long, default_value = "100")]
    stake: String,
    /// Time between passes over this provider's duties.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
}

pub async fn run(command: StorageCommand) -> Result<()> {
    match command {
        StorageCommand::Run(args) => run_provider(args).await,
        StorageCommand::Status {
            client,
            provider,
            keystore,
        } => status(&client, &provider, keystore).await,
    }
}

async fn run_provider(args: RunArgs) -> Result<()> {
    let client = Client::new(&args.node.node);
    let key = signer(&client, &args.key).await?;
    let address = key.public_key().address();
    let dir = args.dir.unwrap_or_else(|| {
        crate::config::home()
            .join("storage")
            .join(address.to_string())
    });
    let config = ProviderConfig {
        node_url: args.node.node.clone(),
        key,
        dir,
        listen: args.listen,
        endpoint: args.endpoint,
        capacity_bytes: args.capacity_bytes,
        stake: args.stake.parse().context("--stake")?,
        limits: ServerLimits::default(),
        daemon: DaemonConfig {
            poll_ms: args.poll_ms,
            ..DaemonConfig::default()
        },
    };
    let running = provider::start(config)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    outln!(
        "piazza storage: provider {} serves shards on {}",
        running.address,
        running.endpoint
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(running.run(stopped));
    crate::devnet::shutdown_signal().await;
    let _ = stop.send(true);
    daemon.await?;
    Ok(())
}

fn address_of(text: &str, keystore: Option<PathBuf>) -> Result<Address> {
    match text.parse::<Address>() {
        Ok(address) => Ok(address),
        Err(_) => Ok(crate::query::keystore(keystore)?.info(text)?.address),
    }
}

async fn status(args: &ClientArgs, provider: &str, keystore: Option<PathBuf>) -> Result<()> {
    let client = Client::new(&args.node);
    let address = address_of(provider, keystore)?;
    let info = client
        .storage_provider(&address)
        .await?
        .with_context(|| format!("{address} is not a storage provider"))?;
    crate::query::print(args.json, &info, || {
        let shards = info.shards.clone().unwrap_or_default();
        format!(
            "storage provider: {}\nendpoint:  {}\ncapacity:  {} bytes ({} used)\nstake:     {}\nproofs:    {}\nfailures:  {}\nshards:    {}",
            info.address,
            info.endpoint,
            info.capacity_bytes,
            info.used_bytes,
            pza(&info.stake),
            info.proofs,
            info.failures,
            shards
                .iter()
                .map(|s| format!("{}/{}", s.deal, s.shard))
                .collect::<Vec<_>>()
                .join(" ")
        )
    });
    Ok(())
}

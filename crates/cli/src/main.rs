//! `piazza`: one program for every role of the Piazza network.

mod bench;
mod bench_jobs;
mod config;
mod devnet;
mod market;
mod query;
mod verify;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "piazza",
    version,
    about = "Piazza: an open network for verifiable AI"
)]
struct Cli {
    /// Log format on stderr: `text` or `json`. Levels come from RUST_LOG (default `info`).
    #[arg(long, global = true, env = "PIAZZA_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage encrypted keys (password from PIAZZA_PASSWORD; empty if unset).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[arg(long, global = true, env = "PIAZZA_KEYSTORE")]
        keystore: Option<PathBuf>,
    },
    /// Run a one-process development network: a validator with a funded `dev` key.
    Devnet(devnet::NodeArgs),
    /// Run a validator node from a genesis file.
    Node(devnet::NodeArgs),
    /// Chain status.
    Status(ClientArgs),
    /// Send PZA.
    Send {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
        /// Recipient address (pz1...) or a key name in the keystore.
        #[arg(long)]
        to: String,
        /// Amount in PZA, e.g. `1.5`.
        #[arg(long)]
        amount: String,
    },
    /// An account's balance and nonce (checked against a signed block's state root with --verify).
    Balance {
        #[command(flatten)]
        client: ClientArgs,
        /// Address (pz1...) or a key name in the keystore.
        account: String,
        #[arg(long)]
        verify: bool,
        #[arg(long, env = "PIAZZA_KEYSTORE")]
        keystore: Option<PathBuf>,
    },
    /// A block by height or hash.
    Block {
        #[command(flatten)]
        client: ClientArgs,
        /// Height, hash, or `latest`.
        id: String,
    },
    /// A transaction and its receipt by hash.
    Tx {
        #[command(flatten)]
        client: ClientArgs,
        hash: String,
    },
    /// Bond PZA for a role (validator, provider, auditor, storage).
    Stake {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[arg(long, default_value = "provider")]
        role: String,
        #[arg(long)]
        amount: String,
    },
    /// Start unbonding; the tokens return after the unbonding delay.
    Unstake {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[arg(long, default_value = "provider")]
        role: String,
        #[arg(long)]
        amount: String,
    },
    /// Registered models.
    Models(ClientArgs),
    /// Inference jobs: submit and inspect.
    Job {
        #[command(subcommand)]
        command: market::JobCommand,
    },
    /// Provider: register, status, and the daemon that runs jobs.
    Provider {
        #[command(subcommand)]
        command: market::ProviderCommand,
    },
    /// Auditor: register, status, and the daemon that re-executes sampled jobs and plays disputes.
    Auditor {
        #[command(subcommand)]
        command: verify::AuditorCommand,
    },
    /// A dispute's state: parties, round, node, phase.
    Dispute {
        #[command(flatten)]
        client: ClientArgs,
        job: u64,
    },
    /// Sentence embeddings with the local deterministic engine (MiniLM).
    Embed {
        texts: Vec<String>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Generate text with the local deterministic engine (SmolLM2), streamed as it is produced.
    Generate {
        prompt: String,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: u32,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        /// Wrap the prompt in the model's chat template as a user message.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// A traced run: operator count and trace root.
    Trace {
        #[arg(long, default_value = piazza_provider::models::MINILM)]
        model: String,
        text: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// OpenAI-compatible gateway: serve /v1 (embeddings, completions, chat) and manage API keys.
    Gateway {
        #[command(subcommand)]
        command: piazza_gateway::GatewayCommand,
    },
    /// Benchmarks that print comparable numbers.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new key.
    New { name: String },
    /// List keys.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a key's address and public key.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The node's JSON-RPC URL.
    #[arg(long, env = "PIAZZA_NODE", default_value = "http://127.0.0.1:8545")]
    pub node: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct SignerArgs {
    /// Key name in the keystore.
    #[arg(long, default_value = "dev")]
    pub from: String,
    #[arg(long, env = "PIAZZA_KEYSTORE")]
    pub keystore: Option<PathBuf>,
    /// Most PZA the transaction may pay in fees.
    #[arg(long, default_value = "1")]
    pub max_fee: String,
    /// Wait for the receipt.
    #[arg(long)]
    pub wait: bool,
}

fn init_logs(format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("unknown log format `{other}` (text or json)"),
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logs(&cli.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Keys { command, keystore } => query::keys(command, keystore),
        Command::Devnet(args) => devnet::run(args, true).await,
        Command::Node(args) => devnet::run(args, false).await,
        Command::Status(client) => query::status(&client).await,
        Command::Send {
            client,
            signer,
            to,
            amount,
        } => query::send(&client, &signer, &to, &amount).await,
        Command::Balance {
            client,
            account,
            verify,
            keystore,
        } => query::balance(&client, &account, verify, keystore).await,
        Command::Generate {
            prompt,
            max_tokens,
            seed,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            chat,
            threads,
        } => {
            let sampling = piazza_llm::SamplingParams {
                temperature,
                top_k,
                top_p,
                repetition_penalty,
                seed,
            };
            market::generate(&prompt, max_tokens, sampling, chat, threads)
        }
        Command::Block { client, id } => query::block(&client, &id).await,
        Command::Tx { client, hash } => query::tx(&client, &hash).await,
        Command::Stake {
            client,
            signer,
            role,
            amount,
        } => query::stake(&client, &signer, &role, &amount, true).await,
        Command::Unstake {
            client,
            signer,
            role,
            amount,
        } => query::stake(&client, &signer, &role, &amount, false).await,
        Command::Models(client) => market::models(&client).await,
        Command::Job { command } => market::job(command).await,
        Command::Provider { command } => market::provider(command).await,
        Command::Auditor { command } => verify::auditor(command).await,
        Command::Dispute { client, job } => verify::dispute(&client, job).await,
        Command::Embed {
            texts,
            threads,
            json,
        } => market::embed(&texts, threads, json),
        Command::Trace {
            model,
            text,
            threads,
            json,
        } => market::trace(&model, &text, threads, json),
        Command::Gateway { command } => piazza_gateway::run(command).await,
        Command::Bench { command } => {
            tokio::task::spawn_blocking(move || bench::run(command)).await?
        }
    }
}

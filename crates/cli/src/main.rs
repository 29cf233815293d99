//! `piazza`: one program for every role of the Piazza network.

/// Prints a line on stdout like `println!`; a closed pipe (`piazza ... | head`) ends the program
/// quietly instead of panicking.
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

mod agent;
mod bench;
mod bench_devnet;
mod bench_jobs;
mod bench_long;
mod bench_testnet;
mod blob;
mod config;
mod devnet;
mod economy;
mod job_verify;
mod market;
mod node;
mod out;
mod password;
mod query;
mod session;
mod storage;
mod testnet;
mod verify;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Manage encrypted keys (password: --password-file, PIAZZA_PASSWORD, or asked on a terminal).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        /// Keystore directory [default: ~/.piazza/devnet/keys if the devnet made it, else
        /// ~/.piazza/keys; ~/.piazza is $PIAZZA_HOME].
        #[arg(long, global = true, env = "PIAZZA_KEYSTORE")]
        keystore: Option<PathBuf>,
    },
    /// Run a one-process development network: a validator with a funded `dev` key.
    Devnet(devnet::NodeArgs),
    /// A local network of validators on 127.0.0.1: write its keys, configs and genesis, run it.
    Testnet {
        #[command(subcommand)]
        command: testnet::TestnetCommand,
    },
    /// Run a node from a config file: a validator of a network on Malachite (with
    /// `[consensus]`), or a single producer from a genesis file.
    Node(node::NodeArgs),
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
        /// Check the account against a signed block's state root (a state proof).
        #[arg(long)]
        verify: bool,
        /// With --verify: the network's genesis file (a testnet's `genesis.json`; `testnet run`
        /// prints it), from which the block's commit certificate is checked as a light client;
        /// without it, against the validator set the node names, unchecked.
        #[arg(long, env = "PIAZZA_GENESIS")]
        genesis: Option<PathBuf>,
        /// Keystore to look key names up in [default: as for `keys`].
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
        /// The transaction's hash (hex).
        hash: String,
    },
    /// Bond PZA for a role (validator, provider, auditor, storage).
    Stake {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
        /// The role to bond for: validator, provider, auditor or storage.
        #[arg(long, default_value = "provider")]
        role: String,
        /// Amount in PZA, e.g. `500`.
        #[arg(long)]
        amount: String,
    },
    /// Start unbonding; the tokens return after the unbonding delay (`--wait` waits for them).
    Unstake {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
        /// The role to unbond from: validator, provider, auditor or storage.
        #[arg(long, default_value = "provider")]
        role: String,
        /// Amount in PZA, e.g. `500`.
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
    /// A dispute's state: parties, round, node, phase; once it ended, the job's outcome.
    Dispute {
        #[command(flatten)]
        client: ClientArgs,
        /// The disputed job's id.
        job: u64,
    },
    /// Sentence embeddings with the local deterministic engine (MiniLM).
    Embed {
        /// Sentences to embed.
        texts: Vec<String>,
        /// CPU threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Generate text with the local deterministic engine (SmolLM2), streamed as it is produced.
    Generate {
        /// The prompt (or, with --chat, the user's message).
        prompt: String,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// Sampling seed (the same seed and input give the same text).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Sampling temperature; 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Sample among the k likeliest tokens only (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: u32,
        /// Sample among the likeliest tokens whose probabilities add up to p (1: all).
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Penalty for tokens already present (1: none).
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        /// Wrap the prompt in the model's chat template as a user message.
        #[arg(long)]
        chat: bool,
        /// CPU threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Machine-readable output (the whole text at the end instead of streamed).
        #[arg(long)]
        json: bool,
    },
    /// A traced run: operator count and trace root.
    Trace {
        /// The model to run (the bundled embedding model).
        #[arg(long, default_value = piazza_provider::models::MINILM)]
        model: String,
        /// The sentence to run.
        text: String,
        /// CPU threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// OpenAI-compatible gateway: serve /v1 (embeddings, completions, chat) and manage API keys.
    Gateway {
        #[command(subcommand)]
        command: piazza_gateway::GatewayCommand,
    },
    /// Agents: serve a paid capability over HTTP with x402, pay one, rate a paid call.
    Agent {
        #[command(subcommand)]
        command: agent::AgentCommand,
    },
    /// Sessions: open, show, top up, close (requests go to the provider's endpoint).
    Session {
        #[command(subcommand)]
        command: session::SessionCommand,
    },
    /// Chat with a model over a session: lines in, answers streamed, each receipt checked
    /// and paid.
    Chat(session::ChatArgs),
    /// Storage provider: run the daemon (shard service, challenge answers, repairs), status.
    Storage {
        #[command(subcommand)]
        command: storage::StorageCommand,
    },
    /// Blobs kept by storage providers: put a file, get it back by id, a blob's deal.
    Blob {
        #[command(subcommand)]
        command: blob::BlobCommand,
    },
    /// The economy: shares, offerings, models with lineage, datasets, pools, labelling.
    #[command(flatten)]
    Economy(economy::EconomyCommand),
    /// Benchmarks that print comparable numbers.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new key (sealed with the password from --password-file or PIAZZA_PASSWORD, or
    /// asked twice on a terminal).
    New {
        /// The key's name: letters, digits, `-` or `_`.
        name: String,
        /// Read the password from this file (one line).
        #[arg(long, env = "PIAZZA_PASSWORD_FILE")]
        password_file: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List keys.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a key's address and public key.
    Show {
        /// The key's name.
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// What a client command that reads the chain takes.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The node's JSON-RPC URL.
    #[arg(long, env = "PIAZZA_NODE", default_value = "http://127.0.0.1:8545")]
    pub node: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// The node a daemon talks to (daemons print no results, so no `--json`).
#[derive(Args, Clone)]
pub struct NodeUrlArgs {
    /// The node's JSON-RPC URL.
    #[arg(long, env = "PIAZZA_NODE", default_value = "http://127.0.0.1:8545")]
    pub node: String,
}

/// Which keystore key signs, and how to unlock it.
#[derive(Args, Clone)]
pub struct KeyArgs {
    /// Key name in the keystore that signs (and pays) [default on the devnet only: `dev`].
    #[arg(long)]
    pub from: Option<String>,
    /// Keystore directory [default: ~/.piazza/devnet/keys if the devnet made it, else
    /// ~/.piazza/keys; ~/.piazza is $PIAZZA_HOME].
    #[arg(long, env = "PIAZZA_KEYSTORE")]
    pub keystore: Option<PathBuf>,
    /// Read the key's password from this file [default: KEYSTORE/NAME.password if present,
    /// else PIAZZA_PASSWORD, else asked on a terminal, else empty].
    #[arg(long, env = "PIAZZA_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
}

/// What a command that sends one transaction takes.
#[derive(Args, Clone)]
pub struct SignerArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Most PZA the transaction may pay in fees.
    #[arg(long, default_value = "1")]
    pub max_fee: String,
    /// Wait for the receipt (`unstake`: until the tokens are back).
    #[arg(long)]
    pub wait: bool,
}

fn init_logs(format: &str) -> Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(log_colours(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").is_some(),
        ));
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("unknown log format `{other}` (text or json)"),
    }
    Ok(())
}

/// Colour codes only on a terminal, and never with NO_COLOR set (a log file stays plain text).
fn log_colours(stderr_is_terminal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !no_color
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = init_logs(&cli.log_format).and_then(|()| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run(cli.command))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with the causes; no backtrace for a user's mistake (RUST_BACKTRACE is for
            // panics).
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once (many errors repeat their source's text
/// in their own).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Keys { command, keystore } => query::keys(command, keystore),
        Command::Devnet(args) => devnet::run(args, true).await,
        Command::Node(args) => node::run(args).await,
        Command::Testnet { command } => testnet::run(command).await,
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
            genesis,
            keystore,
        } => {
            let verify = if verify {
                query::Verify::Certified { genesis }
            } else {
                query::Verify::No
            };
            query::balance(&client, &account, verify, keystore).await
        }
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
            json,
        } => {
            let sampling = piazza_llm::SamplingParams {
                temperature,
                top_k,
                top_p,
                repetition_penalty,
                seed,
            };
            market::generate(&prompt, max_tokens, sampling, chat, threads, json)
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
        Command::Gateway { command } => {
            piazza_gateway::run(config::gateway_defaults(command)).await
        }
        Command::Agent { command } => agent::run(command).await,
        Command::Session { command } => session::run(command).await,
        Command::Economy(command) => economy::run(command).await,
        Command::Chat(args) => session::chat(args).await,
        Command::Storage { command } => storage::run(command).await,
        Command::Blob { command } => blob::run(command).await,
        Command::Bench { command } => {
            tokio::task::spawn_blocking(move || bench::run(command)).await?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command, with the path of commands leading to it.
    fn arguments(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in command.get_arguments() {
            out.push((path.to_string(), arg.clone()));
        }
        for sub in command.get_subcommands() {
            arguments(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_says_what_it_is_for() {
        let mut all = Vec::new();
        arguments(&Cli::command(), "piazza", &mut all);
        let silent: Vec<String> = all
            .iter()
            .filter(|(_, arg)| !matches!(arg.get_id().as_str(), "help" | "version"))
            .filter(|(_, arg)| arg.get_help().is_none() && arg.get_long_help().is_none())
            .map(|(path, arg)| format!("{path} {}", arg.get_id()))
            .collect();
        assert!(silent.is_empty(), "arguments without help: {silent:?}");
    }

    #[test]
    fn daemons_take_no_flags_that_do_nothing() {
        let cli = Cli::command();
        for path in [["provider", "run"], ["auditor", "run"]] {
            let command = cli
                .find_subcommand(path[0])
                .and_then(|c| c.find_subcommand(path[1]))
                .unwrap();
            for useless in ["wait", "json", "max_fee"] {
                assert!(
                    command.get_arguments().all(|a| a.get_id() != useless),
                    "`piazza {} {}` lists --{useless}",
                    path[0],
                    path[1]
                );
            }
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn an_error_line_says_each_cause_once() {
        let inner = anyhow::anyhow!("connection refused");
        let repeated = inner
            .context("sending: connection refused")
            .context("no node");
        assert_eq!(one_line(&repeated), "no node: sending: connection refused");
        let distinct = anyhow::anyhow!("bad byte").context("parsing genesis");
        assert_eq!(one_line(&distinct), "parsing genesis: bad byte");
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, false));
        assert!(!log_colours(false, false));
        assert!(!log_colours(true, true));
    }
}

//! `piazza gateway ...`: the command surface, mounted by the `piazza` binary.

use crate::keys::KeyStore;
use crate::{start, GatewayConfig, Limits};
use anyhow::Context;
use clap::Subcommand;
use piazza_keystore::Keystore;
use piazza_primitives::Amount;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// `$PIAZZA_HOME` (default `~/.piazza`) joined with `leaf`, as the `piazza` command does.
fn default_dir(leaf: &str) -> PathBuf {
    let home = std::env::var_os("PIAZZA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".piazza")
        });
    home.join(leaf)
}

#[derive(Debug, Clone, clap::Args)]
pub struct Dirs {
    /// Where the gateway keeps its API keys [default: ~/.piazza/devnet/gateway, where the
    /// devnet's own gateway keeps them].
    #[arg(long, env = "PIAZZA_GATEWAY_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keystore of the paying keys [default: ~/.piazza/devnet/keys].
    #[arg(long, env = "PIAZZA_KEYSTORE")]
    pub keystore: Option<PathBuf>,
}

impl Dirs {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| default_dir("devnet").join("gateway"))
    }
    fn keystore(&self) -> PathBuf {
        self.keystore
            .clone()
            .unwrap_or_else(|| default_dir("devnet").join("keys"))
    }
}

/// x402: routes that a request without an API key pays for per request (off unless
/// `--x402-route` is given).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct X402Args {
    /// A path charged per request over x402, e.g. `/v1/embeddings` (repeat for more).
    #[arg(long = "x402-route", value_name = "PATH")]
    pub routes: Vec<String>,
    /// The agent (by name) whose paid calls these are: paid to its owner, at least its
    /// price, each recorded on chain so its payer can rate it.
    #[arg(long = "x402-agent", value_name = "NAME")]
    pub agent: Option<String>,
    /// PZA asked per request [default: the agent's price].
    #[arg(long = "x402-price", value_name = "PZA")]
    pub price: Option<String>,
    /// The payee, a `pz1…` address [default: the agent's owner].
    #[arg(long = "x402-pay-to", value_name = "ADDRESS")]
    pub pay_to: Option<String>,
    /// Keystore key that submits the settlements (and pays their fees).
    #[arg(long = "x402-submitter", value_name = "NAME", default_value = "dev")]
    pub submitter: String,
    /// API key of this gateway that serves the paid requests (its paying key pays the
    /// network for the work).
    #[arg(
        long = "x402-api-key",
        env = "PIAZZA_X402_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
}

impl X402Args {
    /// The paywall these arguments configure (`None` without routes).
    fn paywall(
        &self,
        keystore: &std::path::Path,
        password: &str,
    ) -> anyhow::Result<Option<crate::x402::PaywallConfig>> {
        if self.routes.is_empty() {
            return Ok(None);
        }
        let api_key = self
            .api_key
            .clone()
            .context("--x402-route needs --x402-api-key (or PIAZZA_X402_API_KEY)")?;
        let price = match &self.price {
            Some(text) => Some(
                text.parse::<Amount>()
                    .with_context(|| format!("--x402-price `{text}` is not a PZA amount"))?,
            ),
            None => None,
        };
        let pay_to = match &self.pay_to {
            Some(text) => Some(
                text.parse()
                    .map_err(|_| anyhow::anyhow!("--x402-pay-to `{text}` is not an address"))?,
            ),
            None => None,
        };
        let keys = Keystore::open(keystore)?;
        let password = keys
            .stored_password(&self.submitter)?
            .unwrap_or_else(|| password.to_string());
        let submitter = keys
            .unlock(&self.submitter, &password)
            .with_context(|| format!("unlocking --x402-submitter `{}`", self.submitter))?;
        Ok(Some(crate::x402::PaywallConfig {
            routes: self.routes.clone(),
            agent: self.agent.clone(),
            price,
            pay_to,
            submitter,
            api_key,
        }))
    }
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Serve the OpenAI-compatible API.
    Run {
        /// Listen address.
        #[arg(long, env = "PIAZZA_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The node's JSON-RPC URL.
        #[arg(long, env = "PIAZZA_NODE", default_value = "http://127.0.0.1:8545")]
        node: String,
        #[command(flatten)]
        dirs: Dirs,
        /// Requests handled at once.
        #[arg(long, default_value_t = 64)]
        max_in_flight: usize,
        /// Requests one API key may have in flight (its share of --max-in-flight).
        #[arg(long, default_value_t = 16)]
        max_in_flight_per_key: usize,
        /// Seconds a job may take from submission to settlement.
        #[arg(long, default_value_t = 120)]
        job_timeout_s: u64,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = 1024 * 1024)]
        body_bytes_max: usize,
        #[command(flatten)]
        x402: X402Args,
    },
    /// API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue an API key paid by a keystore key (the key is printed once and never stored).
    Create {
        /// Keystore name of the paying key.
        #[arg(long)]
        from: String,
        /// Most PZA the key may spend (prices and fees), e.g. `10` or `0.5`.
        #[arg(long)]
        spend_limit: String,
        #[command(flatten)]
        dirs: Dirs,
        /// Print `{"api_key", "id", "from", "spend_limit"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List API keys (ids, paying keys, limits, spending).
    List {
        #[command(flatten)]
        dirs: Dirs,
        /// Print the keys as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `piazza gateway` command.
pub async fn run(command: GatewayCommand) -> anyhow::Result<()> {
    match command {
        GatewayCommand::Run {
            listen,
            node,
            dirs,
            max_in_flight,
            max_in_flight_per_key,
            job_timeout_s,
            body_bytes_max,
            x402,
        } => {
            let mut config = GatewayConfig::new(listen, &node, dirs.data_dir(), dirs.keystore());
            config.password = std::env::var("PIAZZA_PASSWORD").unwrap_or_default();
            config.paywall = x402.paywall(&dirs.keystore(), &config.password)?;
            let paid_routes = x402.routes.clone();
            config.limits = Limits {
                requests_in_flight_max: NonZeroUsize::new(max_in_flight)
                    .context("--max-in-flight must be positive")?,
                requests_in_flight_per_key_max: NonZeroUsize::new(max_in_flight_per_key)
                    .context("--max-in-flight-per-key must be positive")?,
                job_timeout: Duration::from_secs(job_timeout_s),
                body_bytes_max,
                ..Limits::default()
            };
            let gateway = start(config)
                .await
                .with_context(|| format!("starting the gateway against {node}"))?;
            println!("OpenAI-compatible API on {}/v1", gateway.url());
            for route in paid_routes {
                println!("x402: {}{route} is paid per request", gateway.url());
            }
            tokio::signal::ctrl_c().await?;
            gateway.shutdown().await;
            Ok(())
        }
        GatewayCommand::Key(KeyCommand::Create {
            from,
            spend_limit,
            dirs,
            json,
        }) => {
            let limit: Amount = spend_limit
                .parse()
                .with_context(|| format!("--spend-limit `{spend_limit}` is not a PZA amount"))?;
            Keystore::open(&dirs.keystore())?
                .info(&from)
                .with_context(|| format!("no key `{from}` in {}", dirs.keystore().display()))?;
            let (api_key, record) = KeyStore::open(&dirs.data_dir())?.create(&from, limit)?;
            if json {
                let value = serde_json::json!({
                    "api_key": api_key,
                    "id": record.id,
                    "from": from,
                    "spend_limit": limit.to_string(),
                });
                return out(&format!("{value}\n"));
            }
            out(&format!("{api_key}\n"))?;
            eprintln!(
                "api key {} paid by `{from}`, spend limit {limit} PZA (shown once; only its hash is stored)",
                record.id
            );
            Ok(())
        }
        GatewayCommand::Key(KeyCommand::List { dirs, json }) => {
            let keys = KeyStore::open(&dirs.data_dir())?.list();
            let text: String = if json {
                let values: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "id": r.id,
                            "from": r.signer,
                            "spent": r.spent.to_string(),
                            "spend_limit": r.spend_limit.to_string(),
                        })
                    })
                    .collect();
                format!("{}\n", serde_json::Value::Array(values))
            } else {
                keys.iter()
                    .map(|r| {
                        format!(
                            "{}  from {}  spent {} of {} PZA\n",
                            r.id, r.signer, r.spent, r.spend_limit
                        )
                    })
                    .collect()
            };
            out(&text)
        }
    }
}

/// Writes to standard output; a closed pipe (`| head`) ends quietly instead of panicking.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Piazza {
        #[command(subcommand)]
        gateway: GatewayCommand,
    }

    #[test]
    fn the_command_surface_parses() {
        Piazza::command().debug_assert();
        let parsed = Piazza::try_parse_from([
            "piazza",
            "key",
            "create",
            "--from",
            "dev",
            "--spend-limit",
            "2.5",
        ])
        .unwrap();
        assert!(
            matches!(parsed.gateway, GatewayCommand::Key(KeyCommand::Create { ref from, ref spend_limit, .. }) if from == "dev" && spend_limit == "2.5")
        );
        let parsed = Piazza::try_parse_from([
            "piazza",
            "run",
            "--listen",
            "127.0.0.1:9000",
            "--node",
            "http://n:1",
        ])
        .unwrap();
        assert!(
            matches!(parsed.gateway, GatewayCommand::Run { ref node, .. } if node == "http://n:1")
        );
        assert!(Piazza::try_parse_from(["piazza", "key", "create", "--from", "dev"]).is_err());
    }

    #[test]
    fn the_paywall_is_off_by_default_and_needs_an_api_key_when_on() {
        let parsed = Piazza::try_parse_from(["piazza", "run"]).unwrap();
        let GatewayCommand::Run { x402, .. } = parsed.gateway else {
            panic!("run parses as Run");
        };
        let nowhere = std::path::Path::new("/nonexistent");
        assert!(x402.paywall(nowhere, "").unwrap().is_none());
        let parsed = Piazza::try_parse_from([
            "piazza",
            "run",
            "--x402-route",
            "/v1/embeddings",
            "--x402-agent",
            "embedder",
            "--x402-price",
            "0.5",
        ])
        .unwrap();
        let GatewayCommand::Run { mut x402, .. } = parsed.gateway else {
            panic!("run parses as Run");
        };
        assert_eq!(x402.routes, ["/v1/embeddings"]);
        assert_eq!(x402.agent.as_deref(), Some("embedder"));
        x402.api_key = None;
        let error = x402.paywall(nowhere, "").unwrap_err().to_string();
        assert!(error.contains("--x402-api-key"), "{error}");
        x402.api_key = Some("pk-test".into());
        x402.price = Some("lots".into());
        let error = x402.paywall(nowhere, "").unwrap_err().to_string();
        assert!(error.contains("--x402-price"), "{error}");
    }

    #[tokio::test]
    async fn key_create_writes_a_key_for_an_existing_keystore_key() {
        let dir = tempfile::tempdir().unwrap();
        let keystore = dir.path().join("keys");
        Keystore::open(&keystore)
            .unwrap()
            .create("dev", "")
            .unwrap();
        let dirs = Dirs {
            data_dir: Some(dir.path().join("gateway")),
            keystore: Some(keystore),
        };
        let create = |from: &str| {
            GatewayCommand::Key(KeyCommand::Create {
                from: from.into(),
                spend_limit: "1.5".into(),
                dirs: dirs.clone(),
                json: true,
            })
        };
        run(create("dev")).await.unwrap();
        assert!(run(create("nobody")).await.is_err());
        let keys = KeyStore::open(&dir.path().join("gateway")).unwrap().list();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].signer.as_str(), keys[0].spend_limit),
            ("dev", "1.5".parse().unwrap())
        );
    }
}

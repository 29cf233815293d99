//! `piazza agent ...`: an agent that registers itself and sells the network's embeddings over
//! HTTP, paid per request with x402 (`serve`); a client that pays such an endpoint (`call`);
//! the payer's rating of the paid call (`rate`). `docs/agents.md`.

use crate::query::{self, print};
use crate::{ClientArgs, KeyArgs, NodeUrlArgs, SignerArgs};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use piazza_client::Client;
use piazza_gateway::x402::{self, PaymentPayload, PaymentRequired, SettleResponse};
use piazza_ledger::agents::{self, Endpoint, Profile, Protocol};
use piazza_ledger::tx::Message;
use piazza_primitives::Amount;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The path an agent serves its paid embeddings at.
pub const PAID_PATH: &str = "/v1/embeddings";
/// How long `serve` and `call` wait for a transaction's receipt.
const RECEIPT_WAIT: Duration = Duration::from_secs(60);

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Register an agent (or update the one `--name` names, if it is yours) and serve the
    /// network's embeddings at LISTEN/v1/embeddings, paid per request with x402: each payment
    /// settles on chain as the agent's paid call before the embedding is computed by the
    /// network's providers (paid by an API key of `--from`).
    Serve {
        #[command(flatten)]
        node: NodeUrlArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// The agent's unique name.
        #[arg(long)]
        name: String,
        /// What the agent does (found by meaning).
        #[arg(long)]
        description: String,
        /// A capability tag (a-z 0-9 -; repeat for more).
        #[arg(long = "tag", required = true)]
        tags: Vec<String>,
        /// PZA asked per call.
        #[arg(long)]
        price: String,
        /// PZA staked at registration.
        #[arg(long, default_value = "10")]
        stake: String,
        /// Where to serve; the registered endpoint is http://LISTEN/v1/embeddings.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// Most PZA the agent spends on the network's work (its API key's limit).
        #[arg(long, default_value = "10")]
        spend_limit: String,
        /// Where the agent keeps its API key [default: ~/.piazza/agents/NAME].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// POST a JSON body to a paid endpoint: pay its 402 with a signed x402 authorization, then
    /// print the answer, the settling transaction and the paid call to rate.
    Call {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// The paid endpoint.
        url: String,
        /// The JSON request body.
        #[arg(long)]
        body: String,
        /// Most PZA to pay; a higher price is refused before anything is signed.
        #[arg(long)]
        max_price: String,
    },
    /// Rate a paid call you paid for, once it settled (1..=5).
    Rate {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
        /// The call's id (printed by `piazza agent call`).
        call: u64,
        /// 1 (worst) to 5 (best).
        rating: u8,
    },
}

pub async fn run(command: AgentCommand) -> Result<()> {
    match command {
        AgentCommand::Serve {
            node,
            key,
            name,
            description,
            tags,
            price,
            stake,
            listen,
            spend_limit,
            data_dir,
        } => {
            let serve = Serve {
                name,
                description,
                tags,
                price: parse_pza(&price, "--price")?,
                stake: parse_pza(&stake, "--stake")?,
                listen,
                spend_limit: parse_pza(&spend_limit, "--spend-limit")?,
                data_dir,
            };
            serve_agent(&node.node, &key, serve).await
        }
        AgentCommand::Call {
            client,
            key,
            url,
            body,
            max_price,
        } => {
            let body: Value = serde_json::from_str(&body).context("--body is not JSON")?;
            let max_price = parse_pza(&max_price, "--max-price")?;
            call(&client, &key, &url, &body, max_price).await
        }
        AgentCommand::Rate {
            client,
            signer,
            call,
            rating,
        } => {
            let message = Message::Agents(agents::Msg::Rate { call, rating });
            query::submit(&client, &signer, message).await
        }
    }
}

fn parse_pza(text: &str, flag: &str) -> Result<Amount> {
    text.parse()
        .with_context(|| format!("{flag} `{text}` is not a PZA amount"))
}

struct Serve {
    name: String,
    description: String,
    tags: Vec<String>,
    price: Amount,
    stake: Amount,
    listen: SocketAddr,
    spend_limit: Amount,
    data_dir: Option<PathBuf>,
}

async fn serve_agent(node: &str, key: &KeyArgs, serve: Serve) -> Result<()> {
    let client = Client::new(node);
    let chain_id = client.status().await?.chain_id;
    let from = query::signer_name(key.from.as_deref(), &chain_id)?;
    let keystore = query::keystore(key.keystore.clone())?;
    let owner = crate::password::unlock(&keystore, &from, key.password_file.as_deref())?;
    let mut tags = serve.tags.clone();
    tags.sort();
    tags.dedup();
    let profile = Profile {
        description: serve.description.clone(),
        endpoints: vec![Endpoint {
            protocol: Protocol::Http,
            url: format!("http://{}{PAID_PATH}", serve.listen),
        }],
        tags,
        price: serve.price,
    };
    let existing = client.agent_by_name(&serve.name).await?;
    let message = if existing.is_null() {
        Message::Agents(agents::Msg::Register {
            name: serve.name.clone(),
            profile,
            stake: serve.stake,
            share_asset: None,
        })
    } else {
        if existing["owner"] != json!(owner.public_key().address().to_string()) {
            bail!(
                "agent `{}` belongs to {}, not to `{from}`",
                serve.name,
                existing["owner"]
            );
        }
        let agent = existing["id"].as_u64().context("the node's agent record")?;
        Message::Agents(agents::Msg::Update { agent, profile })
    };
    let hash = client.send_message(&owner, message).await?;
    let receipt = client.wait_for_receipt(&hash, RECEIPT_WAIT).await?;
    if let Some(error) = receipt.error {
        bail!("registering agent `{}`: {}", serve.name, error.message);
    }
    let data_dir = serve
        .data_dir
        .unwrap_or_else(|| crate::config::home().join("agents").join(&serve.name));
    let (api_key, _) = piazza_gateway::keys::KeyStore::open(&data_dir)?
        .create(&from, serve.spend_limit)
        .context("creating the agent's API key")?;
    let mut config =
        piazza_gateway::GatewayConfig::new(serve.listen, node, data_dir, keystore.dir().into());
    config.password = std::env::var(crate::password::PASSWORD_ENV).unwrap_or_default();
    config.paywall = Some(x402::PaywallConfig {
        routes: vec![PAID_PATH.into()],
        agent: Some(serve.name.clone()),
        price: None,
        pay_to: None,
        submitter: owner,
        api_key,
    });
    let gateway = piazza_gateway::start(config)
        .await
        .with_context(|| format!("serving agent `{}` on {}", serve.name, serve.listen))?;
    outln!(
        "agent `{}` serves {}{PAID_PATH} at {} PZA a call (x402 on piazza:{chain_id})",
        serve.name,
        gateway.url(),
        serve.price
    );
    tokio::signal::ctrl_c().await?;
    gateway.shutdown().await;
    Ok(())
}

/// What a paid call answered.
#[derive(serde::Serialize)]
struct Paid {
    status: u16,
    answer: Value,
    transaction: Option<String>,
    call: Option<u64>,
}

async fn call(
    args: &ClientArgs,
    key: &KeyArgs,
    url: &str,
    body: &Value,
    max_price: Amount,
) -> Result<()> {
    let client = Client::new(&args.node);
    let payer = query::signer(&client, key).await?;
    let chain_id = client.status().await?.chain_id;
    let first = client.post_to_agent(url, body, None).await?;
    let answer = match (first.status, &first.payment_required) {
        (402, Some(header)) => {
            let required: PaymentRequired =
                x402::decode_header(header).context("PAYMENT-REQUIRED is not x402 JSON")?;
            let payment = pay(&required, &payer, &chain_id, max_price, url, body)?;
            let header = x402::encode_header(&payment);
            client.post_to_agent(url, body, Some(&header)).await?
        }
        _ => first,
    };
    let status = answer.status;
    let settled: Option<SettleResponse> = answer
        .payment_response
        .as_deref()
        .and_then(x402::decode_header);
    let text = String::from_utf8_lossy(&answer.body).to_string();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let transaction = settled.map(|s| s.transaction);
    let mut call = None;
    if let Some(hash) = &transaction {
        let receipt = client
            .wait_for_receipt(&hash.parse()?, RECEIPT_WAIT)
            .await?;
        call = receipt
            .events
            .iter()
            .find(|e| e.kind == "agents.call_settled")
            .and_then(|e| e.attributes.get("call")?.parse().ok());
    }
    let paid = Paid {
        status,
        answer,
        transaction,
        call,
    };
    print(args.json, &paid, || {
        let mut text = format!("{} {}", paid.status, paid.answer);
        if let Some(hash) = &paid.transaction {
            text.push_str(&format!("\npaid in transaction {hash}"));
        }
        if let Some(call) = paid.call {
            text.push_str(&format!(
                "\npaid call {call} (rate it: piazza agent rate {call} 5)"
            ));
        }
        text
    });
    if status >= 400 {
        bail!("the endpoint answered {status}");
    }
    Ok(())
}

/// The x402 payment for `required`'s first offer, at most `max_price`.
fn pay(
    required: &PaymentRequired,
    payer: &piazza_primitives::SecretKey,
    chain_id: &str,
    max_price: Amount,
    url: &str,
    body: &Value,
) -> Result<PaymentPayload> {
    let seed = format!("{url}\n{body}");
    x402::pay_for(required, payer, chain_id, max_price, seed.as_bytes())
        .map(|(payment, _)| payment)
        .map_err(|e| anyhow::anyhow!("{e} (--max-price {max_price})"))
}

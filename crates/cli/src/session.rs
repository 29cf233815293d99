//! `piazza session open|show|top-up|close|challenge` and `piazza chat`: sessions (DESIGN.md
//! §3.1) from the command line. A chat opens a session (or continues one), streams each answer
//! from the provider's endpoint, checks its receipt and pays it with the next request, and
//! keeps each request and receipt in the session's receipt book (`sessions/ID.receipts` beside
//! the keystore), from which `session challenge` challenges a receipt on chain.

use crate::query::{pza, signer};
use crate::{ClientArgs, KeyArgs};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use piazza_client::session::{terms, OpenSession, ReceiptBook, SessionClient};
use piazza_client::Client;
use piazza_ledger::job::JobParams;
use piazza_ledger::sessions;
use piazza_ledger::tx::Message;
use piazza_primitives::chat::{ChatInput, ChatMessage, ChatRole};
use piazza_primitives::{Amount, PublicKey, SecretKey};
use piazza_session::ClientChannel;
use std::path::PathBuf;
use std::time::Duration;

/// How long opening waits for a provider to be assigned.
const ASSIGN_WAIT: Duration = Duration::from_secs(60);

#[derive(Args, Clone)]
pub struct OpenArgs {
    /// The model's on-chain name.
    #[arg(long)]
    pub model: String,
    /// PZA escrowed for the session.
    #[arg(long, default_value = "1")]
    pub deposit: String,
    /// Most PZA a unit may cost.
    #[arg(long, default_value = "0.000002")]
    pub max_price: String,
    /// Blocks until the session expires.
    #[arg(long, default_value = "10000")]
    pub expiry_blocks: u64,
    /// A second key (hex) allowed to sign requests and vouchers.
    #[arg(long)]
    pub authorised: Option<String>,
}

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Escrows a deposit for a model; the chain assigns a provider.
    Open {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        open: OpenArgs,
    },
    /// A session's on-chain record.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        /// The session's id (as `session open` printed it).
        id: u64,
    },
    /// Adds PZA to a session's deposit.
    TopUp {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// The session's id.
        id: u64,
        /// PZA added to the deposit (e.g. `1.5`).
        #[arg(long)]
        amount: String,
    },
    /// Ends a session: the unspent deposit returns after the last commit's window.
    Close {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// The session's id.
        id: u64,
    },
    /// Challenges a receipt kept in the session's receipt book: runs its request on the model
    /// here, sends the owner's challenge (with a bond) and plays the dispute to its end; a
    /// wrong answer is refunded and its provider slashed.
    Challenge {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// The session's id.
        id: u64,
        /// The request's number in the session (as `piazza chat` printed it).
        #[arg(long)]
        seq: u64,
        #[command(flatten)]
        book: BookArgs,
        /// The models directory [default: the engine's].
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// Engine threads for the run.
        #[arg(long, default_value = "1")]
        threads: usize,
    },
}

/// Where a session's requests and receipts are kept.
#[derive(Args, Clone)]
pub struct BookArgs {
    /// The receipt book [default: sessions/ID.receipts beside the keystore directory].
    #[arg(long)]
    pub receipts: Option<PathBuf>,
}

impl BookArgs {
    fn book(&self, key: &KeyArgs, session: u64) -> Result<ReceiptBook> {
        if let Some(path) = &self.receipts {
            return Ok(ReceiptBook::at(path));
        }
        let keystore = crate::query::keystore(key.keystore.clone())?;
        let dir = keystore.dir();
        Ok(ReceiptBook::in_dir(dir.parent().unwrap_or(dir), session))
    }
}

/// `piazza chat`: lines from standard input, answers streamed.
#[derive(Args, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Continue this session instead of opening one.
    #[arg(long)]
    pub session: Option<u64>,
    #[command(flatten)]
    pub open: OpenArgs,
    /// Most new tokens per answer (the units each request may cost).
    #[arg(long, default_value = "128")]
    pub max_tokens: u32,
    #[command(flatten)]
    pub book: BookArgs,
}

pub async fn run(command: SessionCommand) -> Result<()> {
    match command {
        SessionCommand::Open { client, key, open } => {
            let node = Client::new(&client.node);
            let key = signer(&node, &key).await?;
            let id = open_session(&node, &key, &open).await?;
            show(&client, id).await
        }
        SessionCommand::Show { client, id } => show(&client, id).await,
        SessionCommand::TopUp {
            client,
            key,
            id,
            amount,
        } => {
            let amount: Amount = amount.parse()?;
            let message = sessions::Msg::TopUp {
                session: id,
                amount,
            };
            send(&client, &key, message).await?;
            show(&client, id).await
        }
        SessionCommand::Close { client, key, id } => {
            send(&client, &key, sessions::Msg::Close { session: id }).await?;
            show(&client, id).await
        }
        SessionCommand::Challenge {
            client,
            key,
            id,
            seq,
            book,
            models_dir,
            threads,
        } => {
            let book = book.book(&key, id)?;
            challenge(&client, &key, &book, (id, seq), models_dir, threads).await
        }
    }
}

/// Challenges receipt `seq` of session `id` from `book` and plays the dispute to its end.
async fn challenge(
    client: &ClientArgs,
    key: &KeyArgs,
    book: &ReceiptBook,
    (id, seq): (u64, u64),
    models_dir: Option<PathBuf>,
    threads: usize,
) -> Result<()> {
    let node = Client::new(&client.node);
    let signer = signer(&node, key).await?;
    let (request, receipt) = book.find(id, seq)?.with_context(|| {
        format!(
            "{} has no receipt for request {seq} of session {id}",
            book.path().display()
        )
    })?;
    let info = node
        .session(id)
        .await?
        .with_context(|| format!("no session {id}"))?;
    let commits = node.session_commits(id, None).await?.unwrap_or_default();
    let commit = piazza_provider::session::commit_paying(&commits, seq).with_context(|| {
        format!("no commit of session {id} pays request {seq} yet (commits follow an interval)")
    })?;
    let models_dir = models_dir.unwrap_or_else(piazza_engine::models_dir);
    let models = std::sync::Arc::new(
        piazza_provider::load_named(&node, &models_dir, std::slice::from_ref(&info.model)).await?,
    );
    let model = models[&info.model].clone();
    let message = tokio::task::spawn_blocking(move || {
        piazza_provider::session::owner_challenge(&model, commit, &request, &receipt, threads)
    })
    .await??;
    eprintln!("challenging request {seq} of session {id} (commit {commit}); playing the dispute");
    let (job, state) = piazza_provider::session::challenge_and_play(
        &node,
        &signer,
        models,
        message,
        threads,
        Duration::from_millis(500),
    )
    .await?;
    crate::out::text(&format!("job {job}: {state:?}\n"));
    Ok(())
}

async fn open_session(node: &Client, key: &SecretKey, open: &OpenArgs) -> Result<u64> {
    let authorised = open
        .authorised
        .as_deref()
        .map(|k| -> Result<PublicKey> {
            let hash: piazza_primitives::Hash =
                k.parse().context("--authorised is 32 bytes hex")?;
            Ok(PublicKey(hash.0))
        })
        .transpose()?;
    let id = node
        .open_session(
            key,
            OpenSession {
                model: open.model.clone(),
                deposit: open.deposit.parse()?,
                max_price_per_unit: open.max_price.parse()?,
                expiry_blocks: open.expiry_blocks,
                authorised,
            },
        )
        .await?;
    node.wait_for_session(id, ASSIGN_WAIT).await?;
    Ok(id)
}

async fn send(client: &ClientArgs, key: &KeyArgs, message: sessions::Msg) -> Result<()> {
    let node = Client::new(&client.node);
    let key = signer(&node, key).await?;
    let hash = node.send_message(&key, Message::Sessions(message)).await?;
    let receipt = node.wait_for_receipt(&hash, ASSIGN_WAIT).await?;
    if let Some(e) = receipt.error {
        anyhow::bail!("{hash} failed: {} ({}) {}", e.name, e.code, e.message);
    }
    Ok(())
}

async fn show(client: &ClientArgs, id: u64) -> Result<()> {
    let node = Client::new(&client.node);
    let info = node
        .session(id)
        .await?
        .with_context(|| format!("no session {id}"))?;
    crate::query::print(client.json, &info, || {
        format!(
            "session {} ({:?}) on {}\n  provider {} at {}\n  deposit {}, paid {}, max {} a unit\n  committed through request {} ({}), {} commits\n  expires at height {}",
            info.id,
            info.state,
            info.model,
            info.provider.as_deref().unwrap_or("(not yet assigned)"),
            info.endpoint.as_deref().unwrap_or("-"),
            pza(&info.deposit),
            pza(&info.paid),
            pza(&info.max_price_per_unit),
            info.committed_seq,
            pza(&info.committed_total),
            info.commits,
            info.expiry_height,
        )
    });
    Ok(())
}

pub async fn chat(args: ChatArgs) -> Result<()> {
    let node = Client::new(&args.client.node);
    let key = signer(&node, &args.key).await?;
    let id = match args.session {
        Some(id) => id,
        None => open_session(&node, &key, &args.open).await?,
    };
    let info = node
        .session(id)
        .await?
        .with_context(|| format!("no session {id}"))?;
    let endpoint = info
        .endpoint
        .clone()
        .context("the session's provider has no endpoint")?;
    let terms = terms(&info)?.context("the session has no provider yet")?;
    let mut session =
        SessionClient::new(&endpoint, ClientChannel::new(terms.clone(), key.clone())?);
    if args.session.is_some() {
        // Continue where the provider stands (every receipt must be paid already).
        let view = session.view().await?.channel;
        anyhow::ensure!(
            view.paid_seq == view.served_seq,
            "request {} of session {id} is not paid; it cannot be checked from here",
            view.served_seq
        );
        let channel = ClientChannel::resume(terms, key, view.next_seq, view.paid)?;
        session = SessionClient::new(&endpoint, channel);
    }
    let book = args.book.book(&args.key, id)?;
    eprintln!(
        "session {id} with {endpoint}; one message a line, end with Ctrl-D; receipts kept in {}",
        book.path().display()
    );
    let mut history: Vec<ChatMessage> = Vec::new();
    loop {
        let (read, line) = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|n| (n, line))
        })
        .await??;
        if read == 0 {
            break;
        }
        let line = line.trim_end().to_string();
        if line.trim().is_empty() {
            continue;
        }
        history.push(ChatMessage::new(ChatRole::User, line));
        let input = ChatInput::new(history.clone())?.encode();
        let params = JobParams {
            max_tokens: args.max_tokens,
            chat: true,
            ..JobParams::default()
        };
        let answer = session
            .request(input, params, u64::from(args.max_tokens), crate::out::text)
            .await?;
        crate::out::text("\n");
        book.record(&answer.request, &answer.receipt)?;
        let receipt = &answer.receipt.receipt;
        eprintln!(
            "[request {}: {} units, {}; {} paid in all]",
            receipt.seq,
            receipt.units,
            receipt.price,
            session.paid()
        );
        history.push(ChatMessage::new(
            ChatRole::Assistant,
            String::from_utf8_lossy(&answer.output),
        ));
    }
    session.pay().await?;
    Ok(())
}

//! `piazza blob put|get|status`: a file kept by storage providers under a deal, and back.
//!
//! put: encode into `k + m` shards, open a deal for the blob record, wait for its shards to be
//! assigned, upload each to its holder. get: any `k` shards from the holders the chain names,
//! each checked against its root, decoded and checked against the blob id.

use crate::query::{pza, signer};
use crate::{ClientArgs, KeyArgs};
use anyhow::{Context, Result};
use clap::Subcommand;
use piazza_blob::erasure::{self, Layout, DATA_SHARDS_DEFAULT, PARITY_SHARDS_DEFAULT};
use piazza_client::storage::{deal_id, DealInfo};
use piazza_client::Client;
use piazza_primitives::Hash;
use piazza_storage_daemon::fetch;
use piazza_storage_daemon::rpc::{holders_of, record_of};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest wait for a transaction's receipt.
const RECEIPT_WAIT_MS: u64 = 60_000;
/// Longest wait for a new deal's shards to be assigned.
const ASSIGN_WAIT_MS: u64 = 60_000;
/// Time between looks at a deal waiting for assignment.
const ASSIGN_POLL_MS: u64 = 200;

#[derive(Subcommand)]
pub enum BlobCommand {
    /// Store a file: encode it into k + m shards, open a deal, upload each shard to the
    /// provider the chain assigns it to. Prints the blob id.
    Put {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// The file to store.
        file: PathBuf,
        /// Epochs the deal keeps the blob (and pays for).
        #[arg(long, default_value_t = 100)]
        epochs: u64,
        /// Data shards (any k of k + m give the blob back).
        #[arg(long, default_value_t = DATA_SHARDS_DEFAULT)]
        k: u16,
        /// Parity shards (m may be lost).
        #[arg(long, default_value_t = PARITY_SHARDS_DEFAULT)]
        m: u16,
    },
    /// Fetch a blob by id from any k of its holders, checked against its id, into a file.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The blob id (hex).
        id: String,
        /// Where to write the blob (written whole, then renamed into place).
        #[arg(long)]
        out: PathBuf,
    },
    /// A blob's deal: its holders, proofs, open challenges, escrow and payments.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// The blob id (hex).
        id: String,
    },
}

pub async fn run(command: BlobCommand) -> Result<()> {
    match command {
        BlobCommand::Put {
            client,
            key,
            file,
            epochs,
            k,
            m,
        } => put(&client, &key, &file, epochs, k, m).await,
        BlobCommand::Get { client, id, out } => get(&client, &id, &out).await,
        BlobCommand::Status { client, id } => status(&client, &id).await,
    }
}

fn megabytes_per_s(len_bytes: u64, seconds: f64) -> f64 {
    len_bytes as f64 / 1e6 / seconds.max(1e-9)
}

async fn put(
    args: &ClientArgs,
    key: &KeyArgs,
    file: &Path,
    epochs: u64,
    k: u16,
    m: u16,
) -> Result<()> {
    let terms = Terms { epochs, k, m };
    // Refuses a file too large for the layout before asking the node anything.
    check_layout(file, &terms)?;
    let client = Client::new(&args.node);
    let key = signer(&client, key).await?;
    let stored = store(&client, &key, file, &terms).await?;
    let (len_bytes, seconds) = (stored.len_bytes, stored.seconds);
    let value = serde_json::json!({
        "blob": stored.id,
        "deal": stored.deal,
        "len_bytes": len_bytes,
        "k": k,
        "m": m,
        "shard_len": stored.shard_len,
        "escrow": stored.info.escrow,
        "holders": holders_of(&stored.info).iter().map(|h| serde_json::json!({"shard": h.index, "endpoint": h.endpoint})).collect::<Vec<_>>(),
        "seconds": seconds,
        "mb_per_s": megabytes_per_s(len_bytes, seconds),
        "already_kept": stored.already_kept,
    });
    crate::query::print(args.json, &value, || {
        if stored.already_kept {
            return format!(
                "blob {} is already kept by deal {} (owner {}): nothing uploaded",
                stored.id, stored.deal, stored.info.owner
            );
        }
        format!(
            "blob {} stored: {len_bytes} bytes in {k}+{m} shards of {} bytes, deal {} (escrow {}), {:.1} MB/s",
            stored.id,
            stored.shard_len,
            stored.deal,
            pza(&stored.info.escrow),
            megabytes_per_s(len_bytes, seconds)
        )
    });
    Ok(())
}

/// A deal's terms: epochs kept and paid, data and parity shards.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    pub epochs: u64,
    pub k: u16,
    pub m: u16,
}

/// A blob stored under a deal.
pub(crate) struct Stored {
    pub id: Hash,
    pub deal: u64,
    pub len_bytes: u64,
    pub shard_len: u64,
    pub info: DealInfo,
    pub seconds: f64,
    /// The blob was already kept by a live deal (`deal`): nothing was uploaded.
    pub already_kept: bool,
}

/// Refuses a missing file or one too large for the layout, without reading it.
pub(crate) fn check_layout(file: &Path, terms: &Terms) -> Result<u64> {
    let len_bytes = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    Layout::new(len_bytes, terms.k, terms.m)?;
    Ok(len_bytes)
}

/// Stores `file` as a blob: encodes it into `k + m` shards, opens a deal signed by `key`,
/// waits for its shards to be assigned and uploads each to its holder.
pub(crate) async fn store(
    client: &Client,
    key: &piazza_primitives::SecretKey,
    file: &Path,
    terms: &Terms,
) -> Result<Stored> {
    let len_bytes = check_layout(file, terms)?;
    let Terms { epochs, k, m } = *terms;
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let start = Instant::now();
    let encoded = tokio::task::spawn_blocking(move || erasure::encode(&data, k, m)).await??;
    let manifest = encoded.manifest();
    // One deal keeps a blob at a time: bytes already kept are not uploaded again.
    let kept = |info: DealInfo| Stored {
        id: manifest.id,
        deal: info.id,
        len_bytes,
        shard_len: manifest.layout.shard_len,
        info,
        seconds: start.elapsed().as_secs_f64(),
        already_kept: true,
    };
    if let Some(info) = live_deal(client, &manifest.id).await? {
        return Ok(kept(info));
    }
    let hash = client
        .open_deal(key, record_of(&manifest), epochs)
        .await
        .context("opening the deal")?;
    let receipt = client
        .wait_for_receipt(&hash, Duration::from_millis(RECEIPT_WAIT_MS))
        .await?;
    // Another owner's deal for the same bytes may have been opened since the check above.
    if receipt
        .error
        .as_ref()
        .is_some_and(|e| e.name == "blob_kept")
    {
        if let Some(info) = live_deal(client, &manifest.id).await? {
            return Ok(kept(info));
        }
    }
    accepted(&receipt, "the deal")?;
    let deal = deal_id(&receipt).context("the receipt names no deal")?;
    let info = wait_assigned(client, deal).await?;
    let holders = holders_of(&info);
    anyhow::ensure!(
        holders.len() == usize::from(k + m),
        "deal {deal} has {} of its {} shards assigned",
        holders.len(),
        k + m
    );
    let http = fetch::http_client();
    let mut uploads = tokio::task::JoinSet::new();
    for (holder, shard) in holders.iter().map(|h| {
        let shard = encoded.shards[usize::from(h.index)].clone();
        (h.clone(), shard)
    }) {
        let http = http.clone();
        uploads.spawn(async move {
            fetch::put_shard(&http, &holder.endpoint, deal, holder.index, shard).await
        });
    }
    while let Some(done) = uploads.join_next().await {
        done?.context("uploading a shard")?;
    }
    // Every holder has its shard: challenges may start now rather than at the window's end.
    let hash = client
        .confirm_upload(key, deal)
        .await
        .context("confirming the upload")?;
    let receipt = client
        .wait_for_receipt(&hash, Duration::from_millis(RECEIPT_WAIT_MS))
        .await?;
    accepted(&receipt, &format!("confirming deal {deal}'s upload"))?;
    Ok(Stored {
        id: manifest.id,
        deal,
        len_bytes,
        shard_len: manifest.layout.shard_len,
        info,
        seconds: start.elapsed().as_secs_f64(),
        already_kept: false,
    })
}

/// The deal that keeps blob `id`, unless none does or it has ended.
async fn live_deal(client: &Client, id: &Hash) -> Result<Option<DealInfo>> {
    Ok(client
        .blob(id)
        .await?
        .map(|kept| kept.deal)
        .filter(|deal| deal.status != "ended"))
}

/// Fails with the ledger's reason when `receipt` says `what` was refused.
fn accepted(receipt: &piazza_api::ReceiptInfo, what: &str) -> Result<()> {
    match &receipt.error {
        Some(e) => anyhow::bail!("{what} was refused: {} ({}): {}", e.name, e.code, e.message),
        None => Ok(()),
    }
}

/// The deal once its shards are assigned.
async fn wait_assigned(client: &Client, deal: u64) -> Result<DealInfo> {
    let deadline = Instant::now() + Duration::from_millis(ASSIGN_WAIT_MS);
    loop {
        let info = client
            .storage_deal(deal)
            .await?
            .with_context(|| format!("no deal {deal}"))?;
        match info.status.as_str() {
            "active" => return Ok(info),
            "ended" => anyhow::bail!(
                "deal {deal} ended before its shards were assigned (too few storage providers?)"
            ),
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "deal {deal} not assigned within {ASSIGN_WAIT_MS} ms"
        );
        tokio::time::sleep(Duration::from_millis(ASSIGN_POLL_MS)).await;
    }
}

fn blob_id(text: &str) -> Result<Hash> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a blob id (64 hex digits)"))
}

async fn get(args: &ClientArgs, id: &str, out: &Path) -> Result<()> {
    let client = Client::new(&args.node);
    let id = blob_id(id)?;
    let start = Instant::now();
    let data = piazza_storage_daemon::rpc::get_blob(&client, &id)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let seconds = start.elapsed().as_secs_f64();
    write_atomically(out, &data)?;
    let len_bytes = data.len() as u64;
    let value = serde_json::json!({
        "blob": id,
        "len_bytes": len_bytes,
        "out": out,
        "seconds": seconds,
        "mb_per_s": megabytes_per_s(len_bytes, seconds),
    });
    crate::query::print(args.json, &value, || {
        format!(
            "blob {id}: {len_bytes} bytes checked against its id, written to {} ({:.1} MB/s)",
            out.display(),
            megabytes_per_s(len_bytes, seconds)
        )
    });
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn status(args: &ClientArgs, id: &str) -> Result<()> {
    let client = Client::new(&args.node);
    let id = blob_id(id)?;
    let found = client
        .blob(&id)
        .await?
        .with_context(|| format!("no deal keeps blob {id}"))?;
    let deal = &found.deal;
    crate::query::print(args.json, &found, || {
        let shards: Vec<String> = deal
            .shards
            .iter()
            .map(|s| {
                format!(
                    "  shard {}: {} proven={} challenge={}",
                    s.index,
                    s.provider
                        .map_or("(unassigned)".to_string(), |p| p.to_string()),
                    s.proven,
                    s.challenge.as_ref().map_or("-".to_string(), |c| format!(
                        "chunk {} by {}",
                        c.chunk_index, c.deadline_height
                    ))
                )
            })
            .collect();
        format!(
            "blob {id}: {} bytes, {}+{} shards of {} bytes\ndeal {} ({}): epoch {}/{}, escrow {}, paid {}\n{}",
            found.blob.len_bytes,
            found.blob.k,
            found.blob.m,
            found.blob.shard_len,
            deal.id,
            deal.status,
            deal.epochs_done,
            deal.epochs,
            pza(&deal.escrow),
            pza(&deal.paid),
            shards.join("\n")
        )
    });
    Ok(())
}

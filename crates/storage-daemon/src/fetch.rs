//! The shard service's client side: upload a shard, fetch one checked against its root, fetch a
//! whole blob from any `k` holders checked against its id, rebuild a lost shard from any `k`
//! others. Used by `piazza blob put|get`, by repairs and by daemons that fetch models.

use std::time::Duration;

use piazza_blob::erasure::{self, Manifest, SHARD_BYTES_MAX};
use piazza_blob::BlobError;

/// Longest wait for one shard's transfer (each way).
pub const SHARD_TRANSFER_TIMEOUT_MS: u64 = 120_000;
/// Longest error body read from a refusing server.
const ERROR_BODY_BYTES_MAX: usize = 1024;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("{endpoint}: {message}")]
    Transport { endpoint: String, message: String },
    #[error("{endpoint}: refused ({status}): {message}")]
    Refused {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("{endpoint}: shard {index} does not match its root")]
    BadShard { endpoint: String, index: u16 },
    #[error("{endpoint}: shard {index} is longer than {max} bytes")]
    TooLarge {
        endpoint: String,
        index: u16,
        max: u64,
    },
    #[error("only {have} of the {need} shards needed could be fetched ({errors})")]
    TooFewShards {
        have: usize,
        need: usize,
        errors: String,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// One shard and the endpoint of the provider that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub index: u16,
    pub endpoint: String,
}

/// An HTTP client for the shard service, with the transfer timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(SHARD_TRANSFER_TIMEOUT_MS))
        .build()
        .unwrap_or_default()
}

fn transport(endpoint: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Transport {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    }
}

async fn refused(endpoint: &str, response: reqwest::Response) -> FetchError {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES_MAX)]);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.into_owned());
    FetchError::Refused {
        endpoint: endpoint.to_string(),
        status,
        message,
    }
}

/// Uploads shard `index` of deal `deal` to the provider at `endpoint`.
pub async fn put_shard(
    http: &reqwest::Client,
    endpoint: &str,
    deal: u64,
    index: u16,
    bytes: Vec<u8>,
) -> Result<(), FetchError> {
    let url = format!(
        "{}/v1/deals/{deal}/shards/{index}",
        endpoint.trim_end_matches('/')
    );
    let response = http
        .put(url)
        .body(bytes)
        .send()
        .await
        .map_err(|e| transport(endpoint, e))?;
    if !response.status().is_success() {
        return Err(refused(endpoint, response).await);
    }
    Ok(())
}

/// Shard `index` of `manifest`'s blob from `endpoint`, read under the shard's length and
/// checked against its root.
pub async fn get_shard(
    http: &reqwest::Client,
    endpoint: &str,
    manifest: &Manifest,
    index: u16,
) -> Result<Vec<u8>, FetchError> {
    let root = *manifest.root(index)?;
    let shard_len = manifest.layout.shard_len.min(SHARD_BYTES_MAX);
    let url = format!(
        "{}/v1/shards/{}/{index}",
        endpoint.trim_end_matches('/'),
        manifest.id
    );
    let mut response = http
        .get(url)
        .send()
        .await
        .map_err(|e| transport(endpoint, e))?;
    if !response.status().is_success() {
        return Err(refused(endpoint, response).await);
    }
    let mut bytes = Vec::with_capacity(shard_len as usize);
    while let Some(piece) = response.chunk().await.map_err(|e| transport(endpoint, e))? {
        if (bytes.len() + piece.len()) as u64 > shard_len {
            return Err(FetchError::TooLarge {
                endpoint: endpoint.to_string(),
                index,
                max: shard_len,
            });
        }
        bytes.extend_from_slice(&piece);
    }
    let checked = tokio::task::spawn_blocking(move || {
        erasure::verify_shard(&root, shard_len, &bytes).then_some(bytes)
    })
    .await
    .map_err(|e| transport(endpoint, e))?;
    checked.ok_or_else(|| FetchError::BadShard {
        endpoint: endpoint.to_string(),
        index,
    })
}

/// Any `k` distinct shards of `manifest`'s blob from `holders`, each checked against its root:
/// `k` transfers at a time, a failed one replaced by the next holder.
pub async fn get_shards(
    http: &reqwest::Client,
    manifest: &Manifest,
    holders: &[Holder],
) -> Result<Vec<(u16, Vec<u8>)>, FetchError> {
    manifest.check()?;
    let need = usize::from(manifest.layout.k);
    let mut pending = holders.iter();
    let mut running = tokio::task::JoinSet::new();
    let mut got: Vec<(u16, Vec<u8>)> = Vec::with_capacity(need);
    let mut errors: Vec<String> = Vec::new();
    loop {
        while got.len() + running.len() < need {
            let Some(holder) = pending.next() else { break };
            if got.iter().any(|(i, _)| *i == holder.index) {
                continue;
            }
            let (http, manifest, holder) = (http.clone(), manifest.clone(), holder.clone());
            running.spawn(async move {
                let shard = get_shard(&http, &holder.endpoint, &manifest, holder.index).await;
                (holder.index, shard)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done {
            Ok((index, Ok(bytes))) if !got.iter().any(|(i, _)| *i == index) => {
                got.push((index, bytes));
                if got.len() == need {
                    return Ok(got);
                }
            }
            Ok((_, Ok(_))) => {}
            Ok((_, Err(e))) => errors.push(e.to_string()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(FetchError::TooFewShards {
        have: got.len(),
        need,
        errors: errors.join("; "),
    })
}

/// The blob `manifest` names, from any `k` of `holders`, checked against its id.
pub async fn get_blob(
    http: &reqwest::Client,
    manifest: &Manifest,
    holders: &[Holder],
) -> Result<Vec<u8>, FetchError> {
    let shards = get_shards(http, manifest, holders).await?;
    let manifest = manifest.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let views: Vec<(u16, &[u8])> = shards.iter().map(|(i, s)| (*i, s.as_slice())).collect();
        erasure::decode(&manifest.layout, &manifest.id, &views)
    })
    .await
    .map_err(|e| transport("decode", e))?;
    Ok(decoded?)
}

/// Shard `index` rebuilt from any `k` other holders (a repair), checked against its root.
pub async fn rebuild_shard(
    http: &reqwest::Client,
    manifest: &Manifest,
    index: u16,
    holders: &[Holder],
) -> Result<Vec<u8>, FetchError> {
    let others: Vec<Holder> = holders
        .iter()
        .filter(|h| h.index != index)
        .cloned()
        .collect();
    let shards = get_shards(http, manifest, &others).await?;
    let manifest = manifest.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        let views: Vec<(u16, &[u8])> = shards.iter().map(|(i, s)| (*i, s.as_slice())).collect();
        let root = *manifest.root(index)?;
        erasure::rebuild(&manifest.layout, index, &root, &views)
    })
    .await
    .map_err(|e| transport("rebuild", e))?;
    Ok(rebuilt?)
}

//! The shard service on 127.0.0.1: uploads only what the chain assigns, with its length and
//! root; downloads checked against roots; a blob back from any k of k + m servers after m are
//! killed; a lost shard rebuilt; corrupted copies refused and routed around.

use std::collections::BTreeMap;
use std::sync::Arc;

use piazza_blob::erasure::{self, Encoded};
use piazza_blob::store::{ShardKey, ShardStore};
use piazza_storage_daemon::fetch::{self, FetchError, Holder};
use piazza_storage_daemon::server::{ServerHandle, ServerLimits};
use piazza_storage_daemon::service::{Assigned, Assignments, ShardService};

const DEAL: u64 = 7;
const LOOPBACK: &str = "127.0.0.1:0";

/// A chain where this provider holds the listed shards of deal [`DEAL`].
struct Fixed(BTreeMap<(u64, u16), Assigned>);

#[async_trait::async_trait]
impl Assignments for Fixed {
    async fn assigned(&self, deal: u64, shard: u16) -> Result<Option<Assigned>, String> {
        Ok(self.0.get(&(deal, shard)).copied())
    }
}

struct Provider {
    handle: ServerHandle,
    store: Arc<ShardStore>,
    _dir: tempfile::TempDir,
}

async fn provider(encoded: &Encoded, shards: &[u16], limits: ServerLimits) -> Provider {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ShardStore::open(dir.path(), 64 << 20).unwrap());
    let assigned = shards
        .iter()
        .map(|&i| {
            let a = Assigned {
                blob: encoded.id,
                root: encoded.roots[usize::from(i)],
                shard_len: encoded.layout.shard_len,
            };
            ((DEAL, i), a)
        })
        .collect();
    let service = ShardService::new(Arc::clone(&store), Arc::new(Fixed(assigned)), limits);
    let handle = service.start(LOOPBACK.parse().unwrap()).await.unwrap();
    Provider {
        handle,
        store,
        _dir: dir,
    }
}

fn blob(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(97) ^ (i >> 9) as u8)
        .collect()
}

fn refused_with(result: Result<(), FetchError>, status: u16) {
    match result {
        Err(FetchError::Refused { status: s, .. }) if s == status => {}
        other => panic!("expected a {status} refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn blob_survives_m_killed_servers_and_a_lost_shard_is_rebuilt() {
    let data = blob(1_000_003);
    let encoded = erasure::encode(&data, 4, 2).unwrap();
    let manifest = encoded.manifest();
    let http = fetch::http_client();
    let mut providers = Vec::new();
    for i in 0..6u16 {
        providers.push(provider(&encoded, &[i], ServerLimits::default()).await);
    }
    for (i, p) in providers.iter().enumerate() {
        let shard = encoded.shards[i].clone();
        fetch::put_shard(&http, &p.handle.url(), DEAL, i as u16, shard)
            .await
            .unwrap();
    }
    let holders: Vec<Holder> = providers
        .iter()
        .enumerate()
        .map(|(i, p)| Holder {
            index: i as u16,
            endpoint: p.handle.url(),
        })
        .collect();
    assert_eq!(
        fetch::get_blob(&http, &manifest, &holders).await.unwrap(),
        data
    );

    // Kill two (data shards 0 and 2): the other four still give the blob back.
    let killed_2 = providers.remove(2);
    let killed_0 = providers.remove(0);
    killed_0.handle.abort();
    killed_2.handle.abort();
    assert_eq!(
        fetch::get_blob(&http, &manifest, &holders).await.unwrap(),
        data
    );

    // A repairer rebuilds shard 0 from the live holders and stores it.
    let rebuilt = fetch::rebuild_shard(&http, &manifest, 0, &holders)
        .await
        .unwrap();
    assert_eq!(rebuilt, encoded.shards[0]);
    let repairer = provider(&encoded, &[0], ServerLimits::default()).await;
    fetch::put_shard(&http, &repairer.handle.url(), DEAL, 0, rebuilt)
        .await
        .unwrap();
    let key = ShardKey {
        blob: encoded.id,
        index: 0,
    };
    assert_eq!(repairer.store.get(&key).unwrap().1, encoded.shards[0]);

    // With a third holder gone, only three shards answer: refused, not wrong bytes.
    let killed = providers.remove(0);
    killed.handle.abort();
    let left: Vec<Holder> = holders.iter().filter(|h| h.index != 0).cloned().collect();
    match fetch::get_blob(&http, &manifest, &left).await {
        Err(FetchError::TooFewShards {
            have: 3, need: 4, ..
        }) => {}
        other => panic!("expected too few shards, got {:?}", other.map(|b| b.len())),
    }
}

#[tokio::test]
async fn uploads_must_be_assigned_of_the_right_length_and_root() {
    let data = blob(300_000);
    let encoded = erasure::encode(&data, 4, 2).unwrap();
    let http = fetch::http_client();
    let p = provider(&encoded, &[1], ServerLimits::default()).await;
    let url = p.handle.url();
    // Not assigned here.
    refused_with(
        fetch::put_shard(&http, &url, DEAL, 2, encoded.shards[2].clone()).await,
        403,
    );
    refused_with(
        fetch::put_shard(&http, &url, DEAL + 1, 1, encoded.shards[1].clone()).await,
        403,
    );
    // Another shard's bytes under this index: the root refuses it.
    refused_with(
        fetch::put_shard(&http, &url, DEAL, 1, encoded.shards[3].clone()).await,
        422,
    );
    // Truncated and oversized.
    let mut short = encoded.shards[1].clone();
    short.pop();
    refused_with(fetch::put_shard(&http, &url, DEAL, 1, short).await, 400);
    let mut long = encoded.shards[1].clone();
    long.push(0);
    refused_with(fetch::put_shard(&http, &url, DEAL, 1, long).await, 413);
    assert_eq!(p.store.used_bytes(), 0);
    // Bad path segments.
    let response = http
        .put(format!("{url}/v1/deals/x/shards/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // The right bytes are taken and served with their root.
    fetch::put_shard(&http, &url, DEAL, 1, encoded.shards[1].clone())
        .await
        .unwrap();
    let response = http
        .get(format!("{url}/v1/shards/{}/1", encoded.id))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-piazza-root"].to_str().unwrap(),
        encoded.roots[1].to_hex()
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), encoded.shards[1]);
    let status: serde_json::Value = http
        .get(format!("{url}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["shards"], 1);
    assert_eq!(status["used_bytes"], encoded.layout.shard_len);
}

#[tokio::test]
async fn a_corrupted_copy_is_refused_and_routed_around() {
    let data = blob(200_000);
    let encoded = erasure::encode(&data, 4, 2).unwrap();
    let manifest = encoded.manifest();
    let http = fetch::http_client();
    let p = provider(&encoded, &[0, 1, 2, 3, 4, 5], ServerLimits::default()).await;
    for i in 0..6u16 {
        let shard = encoded.shards[usize::from(i)].clone();
        fetch::put_shard(&http, &p.handle.url(), DEAL, i, shard)
            .await
            .unwrap();
    }
    // Flip a byte of shard 0 on disk.
    let blob_dir = p._dir.path().join(encoded.id.to_hex());
    let file = std::fs::read_dir(&blob_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.file_name().unwrap().to_string_lossy().starts_with("0."))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[5] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    match fetch::get_shard(&http, &p.handle.url(), &manifest, 0).await {
        Err(FetchError::Refused {
            status: 500,
            message,
            ..
        }) => {
            assert!(message.contains("corrupted"), "{message}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|b| b.len())),
    }
    // A liar that serves shard 1's bytes as shard 0 is caught by the root on the client side.
    let liar = provider(&encoded, &[], ServerLimits::default()).await;
    let key = ShardKey {
        blob: encoded.id,
        index: 0,
    };
    liar.store
        .put(&key, &encoded.roots[1], &encoded.shards[1])
        .unwrap();
    assert!(matches!(
        fetch::get_shard(&http, &liar.handle.url(), &manifest, 0).await,
        Err(FetchError::BadShard { index: 0, .. })
    ));
    // The blob still comes back: the bad copies are replaced by the next holders.
    let mut holders = vec![
        Holder {
            index: 0,
            endpoint: p.handle.url(),
        },
        Holder {
            index: 0,
            endpoint: liar.handle.url(),
        },
    ];
    holders.extend((1..6).map(|index| Holder {
        index,
        endpoint: p.handle.url(),
    }));
    assert_eq!(
        fetch::get_blob(&http, &manifest, &holders).await.unwrap(),
        data
    );
}

#[tokio::test]
async fn shards_in_memory_and_connections_are_capped() {
    let data = blob(100_000);
    let encoded = erasure::encode(&data, 4, 2).unwrap();
    let limits = ServerLimits {
        shards_in_memory_max: 0,
        connections_per_address_max: 1,
        ..ServerLimits::default()
    };
    let p = provider(&encoded, &[0], limits).await;
    let http = fetch::http_client();
    // No room for a shard in memory: refused as busy, not queued.
    refused_with(
        fetch::put_shard(&http, &p.handle.url(), DEAL, 0, encoded.shards[0].clone()).await,
        503,
    );
    // One connection is held open (accepted first, in order); a second from the same address is
    // closed at once.
    let _held = tokio::net::TcpStream::connect(p.handle.addr).await.unwrap();
    let other = reqwest::Client::new();
    assert!(other
        .get(format!("{}/v1/status", p.handle.url()))
        .send()
        .await
        .is_err());
}

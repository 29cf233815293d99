//! Put and get throughput of one blob through k + m shard services on 127.0.0.1.
//!
//! `cargo run --release -p piazza-storage-daemon --example bench_put_get [MB]` (default 100).
//! Put = encode + upload every shard (each service checks length and root and fsyncs); get =
//! fetch any k shards (each checked against its root) + decode + check the blob id, once with
//! every service up and once with `m` of them stopped. The chain is left out (a fixed
//! assignment), so this is the data plane alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use piazza_blob::erasure::{self, DATA_SHARDS_DEFAULT, PARITY_SHARDS_DEFAULT};
use piazza_blob::store::ShardStore;
use piazza_storage_daemon::fetch::{self, Holder};
use piazza_storage_daemon::server::ServerLimits;
use piazza_storage_daemon::service::{Assigned, Assignments, ShardService};

const DEAL: u64 = 1;

struct Fixed(BTreeMap<u16, Assigned>);

#[async_trait::async_trait]
impl Assignments for Fixed {
    async fn assigned(&self, deal: u64, shard: u16) -> Result<Option<Assigned>, String> {
        Ok((deal == DEAL)
            .then(|| self.0.get(&shard).copied())
            .flatten())
    }
}

#[tokio::main]
async fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let len = mb * 1_000_000;
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ (i >> 14) as u8)
        .collect();
    let (k, m) = (DATA_SHARDS_DEFAULT, PARITY_SHARDS_DEFAULT);
    let dir = tempfile::tempdir().expect("tempdir");

    // The shard roots are what the chain would record; computed once to set the services up.
    let manifest = erasure::encode(&data, k, m).expect("encode").manifest();
    let mut handles = Vec::new();
    let mut holders = Vec::new();
    for i in 0..k + m {
        let store = ShardStore::open(&dir.path().join(i.to_string()), u64::MAX).expect("store");
        let assigned = Assigned {
            blob: manifest.id,
            root: manifest.roots[usize::from(i)],
            shard_len: manifest.layout.shard_len,
        };
        let service = ShardService::new(
            Arc::new(store),
            Arc::new(Fixed(BTreeMap::from([(i, assigned)]))),
            ServerLimits::default(),
        );
        let handle = service
            .start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("start");
        holders.push(Holder {
            index: i,
            endpoint: handle.url(),
        });
        handles.push(handle);
    }
    let http = fetch::http_client();

    let start = Instant::now();
    let encoded = tokio::task::block_in_place(|| erasure::encode(&data, k, m)).expect("encode");
    let encode_s = start.elapsed().as_secs_f64();
    let mut uploads = tokio::task::JoinSet::new();
    for (holder, shard) in holders.iter().zip(encoded.shards) {
        let (http, holder) = (http.clone(), holder.clone());
        uploads.spawn(async move {
            fetch::put_shard(&http, &holder.endpoint, DEAL, holder.index, shard).await
        });
    }
    while let Some(done) = uploads.join_next().await {
        done.expect("join").expect("upload");
    }
    let put_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let got = fetch::get_blob(&http, &manifest, &holders)
        .await
        .expect("get");
    let get_s = start.elapsed().as_secs_f64();
    assert!(got == data);

    for handle in handles.drain(..usize::from(m)) {
        handle.stop().await;
    }
    let start = Instant::now();
    let got = fetch::get_blob(&http, &manifest, &holders)
        .await
        .expect("get degraded");
    let degraded_s = start.elapsed().as_secs_f64();
    assert!(got == data);

    let rate = |s: f64| mb as f64 / s;
    println!(
        "blob {mb} MB, k+m = {k}+{m}, shard {} bytes, 127.0.0.1",
        manifest.layout.shard_len
    );
    println!(
        "put (encode {encode_s:.2} s + upload, fsync): {:.0} MB/s",
        rate(put_s)
    );
    println!(
        "get (k shards, roots, decode, id):        {:.0} MB/s",
        rate(get_s)
    );
    println!(
        "get with {m} services stopped (rebuild):   {:.0} MB/s",
        rate(degraded_s)
    );
}

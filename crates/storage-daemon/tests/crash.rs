//! A storage provider SIGKILLed mid-upload and mid-repair, then restarted on the same data dir:
//! no partially received or partially rebuilt shard is ever served or counted as held, shards
//! stored before the kill are still served and answer challenges, the client's retried upload
//! is taken, and the repair resumes from the chain's assignment and completes.
//!
//! The provider runs in a child process (this test binary, run as `provider_child`): its shard
//! service and daemon over the on-disk store, its chain a JSON file the parent writes. Its
//! answers come back as stdout lines the parent checks against the shard roots.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use piazza_blob::erasure::{self, Encoded, Manifest};
use piazza_blob::store::{ShardKey, ShardStore};
use piazza_primitives::blob::{self as spec, MerklePath};
use piazza_primitives::Hash;
use piazza_storage_daemon::daemon::{
    Answer, ChainAssignments, Challenge, Daemon, DaemonConfig, Duty, StorageChain,
};
use piazza_storage_daemon::fetch::{self, FetchError, Holder};
use piazza_storage_daemon::server::{self, ServerLimits};
use piazza_storage_daemon::service::{Assigned, Assignments, ShardService};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

const DEAL: u64 = 9;
const DIR_ENV: &str = "PIAZZA_TEST_PROVIDER_DIR";
const CHAIN_ENV: &str = "PIAZZA_TEST_PROVIDER_CHAIN";
/// Bytes of the blob: 1.5 MiB shards at 4 + 2, so an upload's body takes more than one write.
const BLOB_BYTES: usize = 6 << 20;
/// Longest wait for one line from the child (its start, an answer).
const LINE_WAIT_MS: u64 = 20_000;
/// Time between the child's daemon passes.
const CHILD_POLL_MS: u64 = 50;
/// The shards the chain assigns to the provider under test: two uploaded, one repaired.
const UPLOADED: [u16; 2] = [0, 1];
const REPAIRED: u16 = 4;

fn blob() -> Encoded {
    let data: Vec<u8> = (0..BLOB_BYTES)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 10) as u8)
        .collect();
    erasure::encode(&data, 4, 2).unwrap()
}

/// The chain as the parent writes it: what the child is assigned, its open challenges and the
/// other shards' holders.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ChainFile {
    /// `(shard, chunk index, issued height)` for each challenged shard.
    challenges: Vec<(u16, u64, u64)>,
    /// `(shard, endpoint)`.
    holders: Vec<(u16, String)>,
}

fn write_chain(path: &Path, chain: &ChainFile) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(chain).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The child's chain: the file, read on every call; answers printed.
struct FileChain {
    path: PathBuf,
    manifest: Manifest,
}

#[async_trait::async_trait]
impl StorageChain for FileChain {
    async fn duties(&self) -> Result<Vec<Duty>, String> {
        let bytes = std::fs::read(&self.path).map_err(|e| e.to_string())?;
        let chain: ChainFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let holders: Vec<Holder> = chain
            .holders
            .iter()
            .map(|(index, endpoint)| Holder {
                index: *index,
                endpoint: endpoint.clone(),
            })
            .collect();
        Ok(UPLOADED
            .iter()
            .chain([REPAIRED].iter())
            .map(|&shard| Duty {
                deal: DEAL,
                shard,
                manifest: self.manifest.clone(),
                challenge: chain
                    .challenges
                    .iter()
                    .find(|c| c.0 == shard)
                    .map(|c| Challenge {
                        chunk_index: c.1,
                        issued_height: c.2,
                        deadline_height: c.2 + 100,
                    }),
                holders: holders.clone(),
            })
            .collect())
    }
    async fn answer(&self, answers: Vec<Answer>) -> Result<(), String> {
        let mut out = std::io::stdout().lock();
        for a in answers {
            let siblings: Vec<String> = a.path.siblings.iter().map(Hash::to_hex).collect();
            writeln!(
                out,
                "answer {} {} {} {}",
                a.shard,
                a.chunk_index,
                hex::encode(&a.chunk),
                siblings.join(",")
            )
            .map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())
    }
}

/// The provider under test, run as a child process by `a_provider_killed_mid_upload_and_mid_repair_loses_nothing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by a_provider_killed_mid_upload_and_mid_repair_loses_nothing"]
async fn provider_child() {
    let dir = std::env::var(DIR_ENV).expect("run by the parent test");
    let chain_path = std::env::var(CHAIN_ENV).expect("run by the parent test");
    let store = Arc::new(ShardStore::open(Path::new(&dir), 1 << 30).unwrap());
    let chain = Arc::new(FileChain {
        path: PathBuf::from(chain_path),
        manifest: blob().manifest(),
    });
    let assignments = Arc::new(ChainAssignments(Arc::clone(&chain)));
    let service = ShardService::new(Arc::clone(&store), assignments, ServerLimits::default());
    let handle = service.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    println!("listening {}", handle.url());
    let config = DaemonConfig {
        poll_ms: CHILD_POLL_MS,
        rebuild: true,
    };
    let (_stop, stopped) = watch::channel(false);
    Daemon::new(chain, store, config).run(stopped).await;
}

/// A started child with its stdout lines.
struct Provider {
    child: Child,
    url: String,
    lines: mpsc::Receiver<String>,
}

impl Provider {
    async fn start(dir: &Path, chain: &Path) -> Provider {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "provider_child", "--nocapture"])
            .env(DIR_ENV, dir)
            .env(CHAIN_ENV, chain)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel(64);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.blocking_send(line).is_err() {
                    return;
                }
            }
        });
        let mut provider = Provider {
            child,
            url: String::new(),
            lines,
        };
        let line = provider.line("listening ").await;
        provider.url = line.trim_start_matches("listening ").to_string();
        provider
    }

    /// The next line starting with `prefix` (others skipped).
    async fn line(&mut self, prefix: &str) -> String {
        let wait = Duration::from_millis(LINE_WAIT_MS);
        loop {
            let line = tokio::time::timeout(wait, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no `{prefix}` line from the provider in time"))
                .unwrap_or_else(|| panic!("the provider exited before a `{prefix}` line"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// The next answer on `shard`, checked against the manifest's root: its chunk index.
    async fn verified_answer(&mut self, manifest: &Manifest, shard: u16) -> u64 {
        let line = self.line(&format!("answer {shard} ")).await;
        let fields: Vec<&str> = line.split(' ').collect();
        let chunk_index: u64 = fields[2].parse().unwrap();
        let chunk = hex::decode(fields[3]).unwrap();
        let siblings = fields
            .get(4)
            .filter(|s| !s.is_empty())
            .map(|s| s.split(',').map(|h| h.parse().unwrap()).collect())
            .unwrap_or_default();
        assert!(
            spec::verify(
                manifest.root(shard).unwrap(),
                manifest.layout.shard_len,
                chunk_index,
                &chunk,
                &MerklePath { siblings },
            ),
            "shard {shard}'s answer does not verify"
        );
        chunk_index
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("{}/v1/status", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// No shard assignable: the holders' service takes no upload, it serves what the parent put in
/// its store.
struct NoUploads;

#[async_trait::async_trait]
impl Assignments for NoUploads {
    async fn assigned(&self, _deal: u64, _shard: u16) -> Result<Option<Assigned>, String> {
        Ok(None)
    }
}

/// Starts a service holding every shard but `REPAIRED` whose requests wait for `gate` to open;
/// `arrived` hears of each request.
async fn gated_holder(
    encoded: &Encoded,
    dir: &Path,
    gate: watch::Receiver<bool>,
    arrived: mpsc::Sender<()>,
) -> server::ServerHandle {
    let store = Arc::new(ShardStore::open(dir, 1 << 30).unwrap());
    for (index, shard) in encoded.shards.iter().enumerate() {
        if index as u16 != REPAIRED {
            let key = ShardKey {
                blob: encoded.id,
                index: index as u16,
            };
            store.put(&key, &spec::root_of(shard), shard).unwrap();
        }
    }
    let service = ShardService::new(store, Arc::new(NoUploads), ServerLimits::default());
    let router = service.router().layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let (mut gate, arrived) = (gate.clone(), arrived.clone());
            async move {
                let _ = arrived.try_send(());
                let _ = gate.wait_for(|open| *open).await;
                next.run(request).await
            }
        },
    ));
    server::start(
        "127.0.0.1:0".parse().unwrap(),
        router,
        ServerLimits::default(),
    )
    .await
    .unwrap()
}

/// Sends a PUT of shard `index` with its whole length announced but only half its body, and
/// returns the open connection (the upload is in flight).
async fn half_upload(url: &str, index: u16, shard: &[u8]) -> tokio::net::TcpStream {
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PUT /v1/deals/{DEAL}/shards/{index} HTTP/1.1\r\nhost: {address}\r\n\
         content-length: {}\r\n\r\n",
        shard.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&shard[..shard.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Every file under the store's directory: held shards and anything a killed write left.
fn files_on_disk(dir: &Path) -> u64 {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        files += if entry.file_type().unwrap().is_dir() {
            files_on_disk(&entry.path())
        } else {
            1
        };
    }
    files
}

async fn refused_status(http: &reqwest::Client, url: &str, manifest: &Manifest, index: u16) -> u16 {
    match fetch::get_shard(http, url, manifest, index).await {
        Err(FetchError::Refused { status, .. }) => status,
        other => panic!("shard {index} served or failed otherwise: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_upload_and_mid_repair_loses_nothing() {
    let encoded = blob();
    let manifest = encoded.manifest();
    let shard_len = manifest.layout.shard_len;
    let http = fetch::http_client();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("provider");
    let chain_path = work.path().join("chain.json");
    let (open_gate, gate) = watch::channel(false);
    let (arrived, mut arrivals) = mpsc::channel(64);
    let holder = gated_holder(&encoded, &work.path().join("holder"), gate, arrived).await;
    let holders: Vec<(u16, String)> = (0..6u16)
        .filter(|&i| i != REPAIRED)
        .map(|i| (i, holder.url()))
        .collect();
    let mut chain = ChainFile {
        challenges: Vec::new(),
        holders,
    };
    write_chain(&chain_path, &chain);

    // Shard 0 is uploaded whole (201: durable); shard 1's upload is cut by a SIGKILL.
    let provider = Provider::start(&dir, &chain_path).await;
    fetch::put_shard(&http, &provider.url, DEAL, 0, encoded.shards[0].clone())
        .await
        .unwrap();
    let in_flight = half_upload(&provider.url, 1, &encoded.shards[1]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    provider.kill();
    drop(in_flight);

    let provider = Provider::start(&dir, &chain_path).await;
    let status = provider.status().await;
    assert_eq!(status["shards"], 1, "{status}");
    assert_eq!(files_on_disk(&dir), 1, "a partial write is left on disk");
    assert_eq!(status["used_bytes"], shard_len, "{status}");
    assert_eq!(
        fetch::get_shard(&http, &provider.url, &manifest, 0)
            .await
            .unwrap(),
        encoded.shards[0]
    );
    assert_eq!(
        refused_status(&http, &provider.url, &manifest, 1).await,
        404
    );
    // The client retries the upload: taken now, and served whole.
    fetch::put_shard(&http, &provider.url, DEAL, 1, encoded.shards[1].clone())
        .await
        .unwrap();
    assert_eq!(
        fetch::get_shard(&http, &provider.url, &manifest, 1)
            .await
            .unwrap(),
        encoded.shards[1]
    );

    // Shard 4 was never uploaded: once challenged the daemon rebuilds it from the holders. It
    // is killed while the rebuild waits on their shards.
    let chunks = spec::chunk_count(shard_len);
    chain.challenges = vec![(REPAIRED, chunks - 1, 10)];
    write_chain(&chain_path, &chain);
    tokio::time::timeout(Duration::from_millis(LINE_WAIT_MS), arrivals.recv())
        .await
        .expect("the repair never asked the holders for shards")
        .unwrap();
    provider.kill();

    // Restarted with the holders still stalled: shard 4 is not held, the others are.
    let mut provider = Provider::start(&dir, &chain_path).await;
    let status = provider.status().await;
    assert_eq!(status["shards"], 2, "{status}");
    assert_eq!(files_on_disk(&dir), 2, "a partial write is left on disk");
    assert_eq!(status["used_bytes"], 2 * shard_len, "{status}");
    assert_eq!(
        refused_status(&http, &provider.url, &manifest, REPAIRED).await,
        404
    );
    // The holders answer: the repair resumes from the chain's assignment and its shard is proven.
    open_gate.send(true).unwrap();
    assert_eq!(
        provider.verified_answer(&manifest, REPAIRED).await,
        chunks - 1
    );
    assert_eq!(
        fetch::get_shard(&http, &provider.url, &manifest, REPAIRED)
            .await
            .unwrap(),
        encoded.shards[REPAIRED as usize]
    );
    // The shards stored before the kills answer challenges too.
    chain.challenges = vec![(0, 0, 20), (1, chunks / 2, 20), (REPAIRED, 1, 20)];
    write_chain(&chain_path, &chain);
    for (shard, chunk) in [(0, 0), (1, chunks / 2), (REPAIRED, 1)] {
        assert_eq!(provider.verified_answer(&manifest, shard).await, chunk);
    }
    provider.kill();
    holder.stop().await;
}

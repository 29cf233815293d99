//! The daemon's passes against a fake chain and real shard servers on 127.0.0.1: challenges
//! answered with proofs that verify, a lost shard rebuilt from the others then proven, a
//! provider that lost its shard (rebuilding off) sends no answer, corrupted copies healed.

use std::sync::{Arc, Mutex};

use piazza_blob::erasure::{self, Encoded, Manifest};
use piazza_blob::store::{ShardKey, ShardStore};
use piazza_primitives::blob as spec;
use piazza_storage_daemon::daemon::{
    Answer, ChainAssignments, Challenge, Daemon, DaemonConfig, Duty, StorageChain,
};
use piazza_storage_daemon::fetch::{self, Holder};
use piazza_storage_daemon::server::{ServerHandle, ServerLimits};
use piazza_storage_daemon::service::ShardService;

const DEAL: u64 = 3;

/// One provider's view of a chain: the shards it holds, their challenges, the answers it got.
struct FakeChain {
    manifest: Manifest,
    shards: Vec<u16>,
    holders: Mutex<Vec<Holder>>,
    challenge: Mutex<Option<Challenge>>,
    answers: Mutex<Vec<Answer>>,
}

#[async_trait::async_trait]
impl StorageChain for FakeChain {
    async fn duties(&self) -> Result<Vec<Duty>, String> {
        let holders = self.holders.lock().unwrap().clone();
        let challenge = *self.challenge.lock().unwrap();
        Ok(self
            .shards
            .iter()
            .map(|&shard| Duty {
                deal: DEAL,
                shard,
                manifest: self.manifest.clone(),
                challenge,
                holders: holders.clone(),
            })
            .collect())
    }
    async fn answer(&self, answers: Vec<Answer>) -> Result<(), String> {
        self.answers.lock().unwrap().extend(answers);
        Ok(())
    }
}

struct Node {
    chain: Arc<FakeChain>,
    store: Arc<ShardStore>,
    handle: ServerHandle,
    _dir: tempfile::TempDir,
}

async fn node(encoded: &Encoded, shards: &[u16]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ShardStore::open(dir.path(), 64 << 20).unwrap());
    let chain = Arc::new(FakeChain {
        manifest: encoded.manifest(),
        shards: shards.to_vec(),
        holders: Mutex::new(Vec::new()),
        challenge: Mutex::new(None),
        answers: Mutex::new(Vec::new()),
    });
    let assignments = Arc::new(ChainAssignments(Arc::clone(&chain)));
    let service = ShardService::new(Arc::clone(&store), assignments, ServerLimits::default());
    let handle = service.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    Node {
        chain,
        store,
        handle,
        _dir: dir,
    }
}

fn verifies(manifest: &Manifest, a: &Answer) -> bool {
    spec::verify(
        manifest.root(a.shard).unwrap(),
        manifest.layout.shard_len,
        a.chunk_index,
        &a.chunk,
        &a.path,
    )
}

#[tokio::test]
async fn challenges_are_answered_and_lost_shards_rebuilt() {
    let data: Vec<u8> = (0..700_000u32)
        .map(|i| (i % 241) as u8 ^ (i >> 12) as u8)
        .collect();
    let encoded = erasure::encode(&data, 4, 2).unwrap();
    let manifest = encoded.manifest();
    let http = fetch::http_client();
    let mut nodes = Vec::new();
    for i in 0..6u16 {
        nodes.push(node(&encoded, &[i]).await);
    }
    let holders: Vec<Holder> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Holder {
            index: i as u16,
            endpoint: n.handle.url(),
        })
        .collect();
    // The client uploads shards 0..5; shard 5 is never uploaded.
    for (i, n) in nodes.iter().enumerate().take(5) {
        let shard = encoded.shards[i].clone();
        fetch::put_shard(&http, &n.handle.url(), DEAL, i as u16, shard)
            .await
            .unwrap();
    }
    let chunks = spec::chunk_count(manifest.layout.shard_len);
    for (i, n) in nodes.iter().enumerate() {
        *n.chain.holders.lock().unwrap() = holders.clone();
        *n.chain.challenge.lock().unwrap() = Some(Challenge {
            chunk_index: (i as u64 * 7) % chunks,
            issued_height: 10,
            deadline_height: 20,
        });
    }
    // One pass each: shard 5's holder rebuilds it from the others, then every holder answers.
    for n in &nodes {
        let mut daemon = Daemon::new(
            Arc::clone(&n.chain),
            Arc::clone(&n.store),
            DaemonConfig::default(),
        );
        let report = daemon.pass().await.unwrap();
        assert_eq!(report.failures, Vec::<String>::new());
        assert_eq!(report.answered, 1);
        // A second pass does not answer the same challenge again.
        assert_eq!(daemon.pass().await.unwrap().answered, 0);
        let answers = n.chain.answers.lock().unwrap().clone();
        assert_eq!(answers.len(), 1);
        assert!(verifies(&manifest, &answers[0]));
    }
    let key5 = ShardKey {
        blob: encoded.id,
        index: 5,
    };
    assert_eq!(nodes[5].store.get(&key5).unwrap().1, encoded.shards[5]);

    // Node 1 loses its shard with rebuilding off: no answer to the next challenge.
    let key1 = ShardKey {
        blob: encoded.id,
        index: 1,
    };
    assert!(nodes[1].store.remove(&key1).unwrap());
    let careless = DaemonConfig {
        rebuild: false,
        ..DaemonConfig::default()
    };
    let mut daemon = Daemon::new(
        Arc::clone(&nodes[1].chain),
        Arc::clone(&nodes[1].store),
        careless,
    );
    *nodes[1].chain.challenge.lock().unwrap() = Some(Challenge {
        chunk_index: 0,
        issued_height: 30,
        deadline_height: 40,
    });
    let report = daemon.pass().await.unwrap();
    assert_eq!(report.answered, 0);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(nodes[1].chain.answers.lock().unwrap().len(), 1);

    // Node 2's copy is corrupted on disk: the pass rebuilds it, the next one proves it.
    let dir = nodes[2]._dir.path().join(encoded.id.to_hex());
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    *nodes[2].chain.challenge.lock().unwrap() = Some(Challenge {
        chunk_index: 0,
        issued_height: 30,
        deadline_height: 40,
    });
    let mut daemon = Daemon::new(
        Arc::clone(&nodes[2].chain),
        Arc::clone(&nodes[2].store),
        DaemonConfig::default(),
    );
    let first = daemon.pass().await.unwrap();
    assert_eq!(
        (first.rebuilt, first.answered),
        (1, 0),
        "{:?}",
        first.failures
    );
    let second = daemon.pass().await.unwrap();
    assert_eq!(second.answered, 1);
    let answers = nodes[2].chain.answers.lock().unwrap().clone();
    assert!(verifies(&manifest, answers.last().unwrap()));
    let key2 = ShardKey {
        blob: encoded.id,
        index: 2,
    };
    assert_eq!(nodes[2].store.get(&key2).unwrap().1, encoded.shards[2]);
}

//! The shard store: durable writes, corruption and truncation refused, bounds hit.

use std::fs;

use piazza_blob::erasure::{self, SHARD_BYTES_MAX};
use piazza_blob::store::{ShardKey, ShardStore, StoreError};
use piazza_primitives::blob as spec;
use piazza_primitives::Hash;

fn shard_file(dir: &std::path::Path, key: &ShardKey) -> std::path::PathBuf {
    let blob_dir = dir.join(key.blob.to_hex());
    fs::read_dir(&blob_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with(&format!("{}.", key.index)) && name.ends_with(".shard")
        })
        .unwrap()
}

fn sample() -> erasure::Encoded {
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 13 + i / 777) as u8).collect();
    erasure::encode(&data, 4, 2).unwrap()
}

#[test]
fn put_get_prove_remove_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let e = sample();
    let store = ShardStore::open(dir.path(), 1 << 20).unwrap();
    for (i, (shard, root)) in e.shards.iter().zip(&e.roots).enumerate() {
        let key = ShardKey {
            blob: e.id,
            index: i as u16,
        };
        store.put(&key, root, shard).unwrap();
    }
    let stored = e.layout.shard_len * 6;
    assert_eq!(store.used_bytes(), stored);
    let key = ShardKey {
        blob: e.id,
        index: 4,
    };
    let (root, bytes) = store.get(&key).unwrap();
    assert_eq!((root, &bytes), (e.roots[4], &e.shards[4]));
    // A challenge answer verifies against the shard root, for every chunk.
    for chunk in 0..spec::chunk_count(e.layout.shard_len) {
        let (bytes, path) = store.prove(&key, chunk).unwrap();
        assert!(spec::verify(
            &e.roots[4],
            e.layout.shard_len,
            chunk,
            &bytes,
            &path
        ));
    }
    let past = spec::chunk_count(e.layout.shard_len);
    assert!(matches!(
        store.prove(&key, past),
        Err(StoreError::ChunkIndex { .. })
    ));
    // Storing it again replaces it without counting it twice.
    store.put(&key, &e.roots[4], &e.shards[4]).unwrap();
    assert_eq!(store.used_bytes(), stored);
    // A file a killed writer left behind is removed on open; the shards are all there.
    let stale = dir.path().join(e.id.to_hex()).join("9.deadbeef.tmp");
    fs::write(&stale, b"half a shard").unwrap();
    drop(store);
    let store = ShardStore::open(dir.path(), 1 << 20).unwrap();
    assert!(!stale.exists());
    assert_eq!(store.used_bytes(), stored);
    assert_eq!(store.list().unwrap().len(), 6);
    assert!(store.remove(&key).unwrap());
    assert!(!store.remove(&key).unwrap());
    assert!(matches!(store.get(&key), Err(StoreError::Missing { .. })));
    assert_eq!(store.used_bytes(), stored - e.layout.shard_len);
}

#[test]
fn wrong_root_corruption_and_truncation_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = sample();
    let store = ShardStore::open(dir.path(), 1 << 20).unwrap();
    let key = ShardKey {
        blob: e.id,
        index: 0,
    };
    assert!(matches!(
        store.put(&key, &e.roots[1], &e.shards[0]),
        Err(StoreError::RootMismatch { .. })
    ));
    assert_eq!(store.used_bytes(), 0);
    store.put(&key, &e.roots[0], &e.shards[0]).unwrap();
    // One flipped bit on disk.
    let path = shard_file(dir.path(), &key);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        store.get(&key),
        Err(StoreError::Corrupt { index: 0, .. })
    ));
    assert!(matches!(
        store.prove(&key, 0),
        Err(StoreError::Corrupt { .. })
    ));
    // Truncated on disk.
    bytes[100] ^= 1;
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(store.get(&key), Err(StoreError::Corrupt { .. })));
    // Putting the good shard again heals it.
    store.put(&key, &e.roots[0], &e.shards[0]).unwrap();
    assert_eq!(store.get(&key).unwrap().1, e.shards[0]);
}

#[test]
fn a_full_store_and_an_oversized_shard_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = sample();
    let store = ShardStore::open(dir.path(), e.layout.shard_len * 2).unwrap();
    for i in 0..2u16 {
        let key = ShardKey {
            blob: e.id,
            index: i,
        };
        store
            .put(&key, &e.roots[usize::from(i)], &e.shards[usize::from(i)])
            .unwrap();
    }
    let key = ShardKey {
        blob: e.id,
        index: 2,
    };
    assert!(matches!(
        store.put(&key, &e.roots[2], &e.shards[2]),
        Err(StoreError::Full { .. })
    ));
    assert_eq!(store.list().unwrap().len(), 2);
    let big = vec![0u8; SHARD_BYTES_MAX as usize + 1];
    let store = ShardStore::open(dir.path(), u64::MAX).unwrap();
    assert!(matches!(
        store.put(&key, &Hash::ZERO, &big),
        Err(StoreError::TooLarge { .. })
    ));
}

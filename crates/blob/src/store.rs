//! The on-disk shard store of a storage provider.
//!
//! One file per shard, `DIR/<blob id>/<index>.<root>.shard`: the root is part of the name, so the
//! file and what it must hash to appear together. A shard is written to a `.tmp` name, synced,
//! renamed and its directory synced: a process killed at any instant leaves either the whole
//! shard under its final name or a `.tmp` file that the next [`ShardStore::open`] removes.
//! Every read re-hashes the shard and refuses one whose bytes no longer match its root (a
//! corrupted or truncated file), so nothing unchecked leaves the store.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use piazza_primitives::blob::{self as spec, MerklePath};
use piazza_primitives::Hash;

use crate::commit;
use crate::erasure::SHARD_BYTES_MAX;

const SHARD_SUFFIX: &str = ".shard";
const TMP_SUFFIX: &str = ".tmp";

/// One shard of one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardKey {
    pub blob: Hash,
    pub index: u16,
}

/// What the store refused or failed to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("shard store io: {0}")]
    Io(#[from] std::io::Error),
    #[error("shard of {len_bytes} bytes is over the {max} bytes limit")]
    TooLarge { len_bytes: u64, max: u64 },
    #[error("the store is full: {used} of {max} bytes used, {len_bytes} more asked")]
    Full { used: u64, max: u64, len_bytes: u64 },
    #[error("shard bytes do not hash to the root {root}")]
    RootMismatch { root: Hash },
    #[error(
        "stored shard {index} of blob {blob} is corrupted (its bytes no longer hash to its root)"
    )]
    Corrupt { blob: Hash, index: u16 },
    #[error("shard {index} of blob {blob} is not stored")]
    Missing { blob: Hash, index: u16 },
    #[error("chunk {chunk} is past the end of the shard")]
    ChunkIndex { chunk: u64 },
}

/// A bounded directory of shards, safe to share between threads.
#[derive(Debug)]
pub struct ShardStore {
    dir: PathBuf,
    bytes_max: u64,
    /// Bytes of the shards stored plus those being written.
    used_bytes: Mutex<u64>,
}

impl ShardStore {
    /// Opens (creating) the store in `dir`, holding at most `bytes_max` bytes of shards; removes
    /// the `.tmp` files a killed writer left behind.
    pub fn open(dir: &Path, bytes_max: u64) -> Result<ShardStore, StoreError> {
        fs::create_dir_all(dir)?;
        let mut used = 0u64;
        for blob_dir in fs::read_dir(dir)? {
            let blob_dir = blob_dir?;
            if !blob_dir.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(blob_dir.path())? {
                let file = file?;
                let name = file.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(TMP_SUFFIX) {
                    fs::remove_file(file.path())?;
                } else if name.ends_with(SHARD_SUFFIX) {
                    used = used.saturating_add(file.metadata()?.len());
                }
            }
        }
        Ok(ShardStore {
            dir: dir.to_path_buf(),
            bytes_max,
            used_bytes: Mutex::new(used),
        })
    }

    /// Bytes of shards stored.
    pub fn used_bytes(&self) -> u64 {
        *self.lock_used()
    }

    /// The most bytes of shards this store holds.
    pub fn bytes_max(&self) -> u64 {
        self.bytes_max
    }

    fn lock_used(&self) -> std::sync::MutexGuard<'_, u64> {
        // The guarded value is a counter: a panic elsewhere cannot leave it half-written.
        self.used_bytes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blob_dir(&self, blob: &Hash) -> PathBuf {
        self.dir.join(blob.to_hex())
    }

    /// The stored file and root of `key`, if any.
    fn find(&self, key: &ShardKey) -> Result<Option<(PathBuf, Hash)>, StoreError> {
        let dir = self.blob_dir(&key.blob);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let prefix = format!("{}.", key.index);
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(root) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(SHARD_SUFFIX))
                .and_then(|hex| hex.parse::<Hash>().ok())
            else {
                continue;
            };
            return Ok(Some((entry.path(), root)));
        }
        Ok(None)
    }

    /// The root shard `key` is stored under, if it is stored (its bytes are not read).
    pub fn stored_root(&self, key: &ShardKey) -> Result<Option<Hash>, StoreError> {
        Ok(self.find(key)?.map(|(_, root)| root))
    }

    /// Stores `bytes` as shard `key` after checking they hash to `root`; durable when it returns.
    /// Storing the same shard again replaces it (a copy that went bad is healed this way).
    pub fn put(&self, key: &ShardKey, root: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        let len_bytes = bytes.len() as u64;
        if len_bytes > SHARD_BYTES_MAX {
            return Err(StoreError::TooLarge {
                len_bytes,
                max: SHARD_BYTES_MAX,
            });
        }
        if commit::root_of(bytes) != *root {
            return Err(StoreError::RootMismatch { root: *root });
        }
        let previous = self.find(key)?;
        let freed = match &previous {
            Some((path, _)) => fs::metadata(path)?.len(),
            None => 0,
        };
        {
            let mut used = self.lock_used();
            let after = used.saturating_sub(freed).saturating_add(len_bytes);
            if after > self.bytes_max {
                return Err(StoreError::Full {
                    used: *used,
                    max: self.bytes_max,
                    len_bytes,
                });
            }
            *used = used.saturating_add(len_bytes);
        }
        let written = self.write(key, root, bytes);
        let mut used = self.lock_used();
        match written {
            Ok(path) => {
                if let Some((old, _)) = previous.filter(|(old, _)| *old != path) {
                    fs::remove_file(old)?;
                }
                *used = used.saturating_sub(freed);
                Ok(())
            }
            Err(e) => {
                *used = used.saturating_sub(len_bytes);
                Err(e)
            }
        }
    }

    fn write(&self, key: &ShardKey, root: &Hash, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let dir = self.blob_dir(&key.blob);
        fs::create_dir_all(&dir)?;
        let name = format!("{}.{}", key.index, root.to_hex());
        let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
        let path = dir.join(format!("{name}{SHARD_SUFFIX}"));
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    /// Shard `key` and its root, read back and checked; `Corrupt` when its bytes no longer hash
    /// to its root.
    pub fn get(&self, key: &ShardKey) -> Result<(Hash, Vec<u8>), StoreError> {
        let (path, root) = self.find(key)?.ok_or(StoreError::Missing {
            blob: key.blob,
            index: key.index,
        })?;
        let file = File::open(&path)?;
        let len_bytes = file.metadata()?.len();
        if len_bytes > SHARD_BYTES_MAX {
            return Err(StoreError::Corrupt {
                blob: key.blob,
                index: key.index,
            });
        }
        let mut bytes = Vec::with_capacity(len_bytes as usize);
        file.take(SHARD_BYTES_MAX).read_to_end(&mut bytes)?;
        if commit::root_of(&bytes) != root {
            return Err(StoreError::Corrupt {
                blob: key.blob,
                index: key.index,
            });
        }
        Ok((root, bytes))
    }

    /// Chunk `chunk` of shard `key` with its Merkle path: a challenge's answer, checked here
    /// against the shard's root before it is given.
    pub fn prove(&self, key: &ShardKey, chunk: u64) -> Result<(Vec<u8>, MerklePath), StoreError> {
        let (root, bytes) = self.get(key)?;
        let path = commit::prove(&bytes, chunk).ok_or(StoreError::ChunkIndex { chunk })?;
        let chunk_bytes = spec::chunk(&bytes, chunk)
            .ok_or(StoreError::ChunkIndex { chunk })?
            .to_vec();
        debug_assert!(spec::verify(
            &root,
            bytes.len() as u64,
            chunk,
            &chunk_bytes,
            &path
        ));
        Ok((chunk_bytes, path))
    }

    /// Removes shard `key`; whether it was stored.
    pub fn remove(&self, key: &ShardKey) -> Result<bool, StoreError> {
        let Some((path, _)) = self.find(key)? else {
            return Ok(false);
        };
        let len_bytes = fs::metadata(&path)?.len();
        fs::remove_file(&path)?;
        let mut used = self.lock_used();
        *used = used.saturating_sub(len_bytes);
        Ok(true)
    }

    /// Every stored shard with its root, in key order.
    pub fn list(&self) -> Result<Vec<(ShardKey, Hash)>, StoreError> {
        let mut out = Vec::new();
        for blob_dir in fs::read_dir(&self.dir)? {
            let blob_dir = blob_dir?;
            let Ok(blob) = blob_dir.file_name().to_string_lossy().parse::<Hash>() else {
                continue;
            };
            for file in fs::read_dir(blob_dir.path())? {
                let name = file?.file_name();
                let name = name.to_string_lossy();
                let Some((index, root)) = name
                    .strip_suffix(SHARD_SUFFIX)
                    .and_then(|stem| stem.split_once('.'))
                else {
                    continue;
                };
                if let (Ok(index), Ok(root)) = (index.parse::<u16>(), root.parse::<Hash>()) {
                    out.push((ShardKey { blob, index }, root));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

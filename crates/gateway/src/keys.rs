//! API keys: which keystore key pays for a request, and how much it may still spend.
//!
//! The file `DATA_DIR/api_keys.json` holds one record per key: the BLAKE3 hash of the key (never
//! the key), the keystore name of the paying account, the spend limit and what was spent. It is
//! rewritten whole and atomically (temporary file, fsync, rename) on every change.
//!
//! **Invariant:** for every record, `spent + reserved ≤ limit` at every instant. A request
//! reserves its worst case (the escrow plus the exact fee of its transaction) before it is signed, and
//! on settlement the reservation is replaced by what the chain actually charged.

use piazza_primitives::Amount;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The file of API keys inside the gateway's data directory.
pub const API_KEYS_FILE: &str = "api_keys.json";
/// Larger files are refused (about 10,000 keys).
pub const API_KEYS_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Every API key starts with this.
pub const API_KEY_PREFIX: &str = "pz-";
/// An unknown key re-reads the file (to see keys created by `piazza gateway key create`), at
/// most this often.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
const DOMAIN: &[u8] = b"piazza/gateway-api-key\0";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    #[error("api key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("api key file {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("the request's worst-case cost of {asked} PZA exceeds the {remaining} PZA left of this key's spend limit ({limit} PZA: {spent} PZA spent, {reserved} PZA reserved by requests in flight)")]
    LimitReached {
        /// The request's worst case.
        asked: Amount,
        /// `limit - spent - reserved`.
        remaining: Amount,
        spent: Amount,
        reserved: Amount,
        limit: Amount,
    },
    #[error("unknown api key")]
    UnknownKey,
}

/// One API key as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    /// A short public id (`key_` + the first 8 hex digits of the hash), for logs and listings.
    pub id: String,
    /// Hex of the BLAKE3 hash of the key.
    pub key_hash: String,
    /// The keystore key that signs and pays.
    pub signer: String,
    pub spend_limit: Amount,
    pub spent: Amount,
}

#[derive(Serialize, Deserialize, Default)]
struct KeyFile {
    keys: Vec<KeyRecord>,
}

struct Inner {
    /// By key hash.
    records: BTreeMap<String, KeyRecord>,
    /// Reserved and not yet settled, by key hash (kept in memory only).
    reserved: BTreeMap<String, Amount>,
    last_reload: Option<Instant>,
}

/// The API keys of one gateway data directory.
pub struct KeyStore {
    path: PathBuf,
    inner: Mutex<Inner>,
}

/// A reservation against a key's spend limit; give it back with [`KeyStore::settle`].
#[derive(Debug)]
pub struct Reservation {
    key_hash: String,
    amount: Amount,
}

impl Reservation {
    pub fn amount(&self) -> Amount {
        self.amount
    }
}

pub fn hash_key(api_key: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(DOMAIN);
    hasher.update(api_key.as_bytes());
    hasher.finalize().to_hex().to_string()
}

fn read_file(path: &Path) -> Result<KeyFile, KeyStoreError> {
    let io = |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyFile::default()),
        Err(e) => return Err(io(e)),
        Ok(m) if m.len() > API_KEYS_FILE_BYTES_MAX => {
            return Err(KeyStoreError::Corrupt {
                path: path.to_path_buf(),
                message: format!("larger than {API_KEYS_FILE_BYTES_MAX} bytes"),
            })
        }
        Ok(_) => {}
    }
    let bytes = std::fs::read(path).map_err(io)?;
    serde_json::from_slice(&bytes).map_err(|e| KeyStoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Temporary file, fsync, rename over, fsync the directory.
fn write_file(path: &Path, file: &KeyFile) -> Result<(), KeyStoreError> {
    use std::io::Write;
    let io = |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| KeyStoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl KeyStore {
    /// Opens (or starts) the key file in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<KeyStore, KeyStoreError> {
        let path = data_dir.join(API_KEYS_FILE);
        let file = read_file(&path)?;
        let records = file
            .keys
            .into_iter()
            .map(|r| (r.key_hash.clone(), r))
            .collect();
        Ok(KeyStore {
            path,
            inner: Mutex::new(Inner {
                records,
                reserved: BTreeMap::new(),
                last_reload: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a record half-written (every change is one
        // assignment), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Merges records other processes added to the file, then writes the whole set.
    fn persist(&self, inner: &mut Inner) -> Result<(), KeyStoreError> {
        if let Ok(on_disk) = read_file(&self.path) {
            for r in on_disk.keys {
                inner.records.entry(r.key_hash.clone()).or_insert(r);
            }
        }
        let file = KeyFile {
            keys: inner.records.values().cloned().collect(),
        };
        write_file(&self.path, &file)
    }

    /// Creates a key paid by `signer`; returns the key itself (shown once, never stored).
    pub fn create(
        &self,
        signer: &str,
        spend_limit: Amount,
    ) -> Result<(String, KeyRecord), KeyStoreError> {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let api_key = format!("{API_KEY_PREFIX}{}", hex::encode(secret));
        let key_hash = hash_key(&api_key);
        let record = KeyRecord {
            id: format!("key_{}", &key_hash[..8]),
            key_hash: key_hash.clone(),
            signer: signer.to_string(),
            spend_limit,
            spent: Amount::ZERO,
        };
        let mut inner = self.lock();
        inner.records.insert(key_hash, record.clone());
        self.persist(&mut inner)?;
        Ok((api_key, record))
    }

    pub fn list(&self) -> Vec<KeyRecord> {
        self.lock().records.values().cloned().collect()
    }

    /// The record of an API key, re-reading the file (rate-limited) when it is unknown.
    pub fn authenticate(&self, api_key: &str) -> Result<KeyRecord, KeyStoreError> {
        let key_hash = hash_key(api_key);
        let mut inner = self.lock();
        if let Some(r) = inner.records.get(&key_hash) {
            return Ok(r.clone());
        }
        if inner
            .last_reload
            .is_none_or(|t| t.elapsed() >= RELOAD_INTERVAL)
        {
            inner.last_reload = Some(Instant::now());
            if let Ok(file) = read_file(&self.path) {
                for r in file.keys {
                    inner.records.entry(r.key_hash.clone()).or_insert(r);
                }
            }
        }
        inner
            .records
            .get(&key_hash)
            .cloned()
            .ok_or(KeyStoreError::UnknownKey)
    }

    /// What requests in flight hold against the key's limit.
    pub fn reserved(&self, key_hash: &str) -> Amount {
        self.lock()
            .reserved
            .get(key_hash)
            .copied()
            .unwrap_or(Amount::ZERO)
    }

    /// Holds `amount` against the key's limit, or refuses when the limit would be passed.
    pub fn reserve(&self, key_hash: &str, amount: Amount) -> Result<Reservation, KeyStoreError> {
        let mut inner = self.lock();
        let record = inner
            .records
            .get(key_hash)
            .ok_or(KeyStoreError::UnknownKey)?;
        let (spent, limit) = (record.spent, record.spend_limit);
        let reserved = inner
            .reserved
            .get(key_hash)
            .copied()
            .unwrap_or(Amount::ZERO);
        let total = spent
            .checked_add(reserved)
            .and_then(|t| t.checked_add(amount));
        if total.is_none_or(|t| t > limit) {
            let remaining = spent
                .checked_add(reserved)
                .and_then(|used| limit.checked_sub(used))
                .unwrap_or(Amount::ZERO);
            return Err(KeyStoreError::LimitReached {
                asked: amount,
                remaining,
                spent,
                reserved,
                limit,
            });
        }
        // Cannot overflow: `reserved + amount ≤ total ≤ limit`.
        let new_reserved = reserved.checked_add(amount).unwrap_or(limit);
        inner.reserved.insert(key_hash.to_string(), new_reserved);
        Ok(Reservation {
            key_hash: key_hash.to_string(),
            amount,
        })
    }

    /// Releases a reservation and charges `charged` (what the chain took; at most the
    /// reservation), writing the file when something was charged.
    pub fn settle(&self, reservation: Reservation, charged: Amount) -> Result<(), KeyStoreError> {
        let charged = charged.min(reservation.amount);
        let mut inner = self.lock();
        if let Some(r) = inner.reserved.get_mut(&reservation.key_hash) {
            *r = r.checked_sub(reservation.amount).unwrap_or(Amount::ZERO);
        }
        if charged.is_zero() {
            return Ok(());
        }
        if let Some(record) = inner.records.get_mut(&reservation.key_hash) {
            record.spent = record
                .spent
                .checked_add(charged)
                .unwrap_or(record.spend_limit);
        }
        self.persist(&mut inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn only_the_hash_is_stored_and_keys_survive_a_reopen() {
        let (dir, store) = store();
        let (key, record) = store.create("dev", Amount::pza(2)).unwrap();
        let text = std::fs::read_to_string(dir.path().join(API_KEYS_FILE)).unwrap();
        assert!(!text.contains(&key), "the key itself is on disk");
        assert!(text.contains(&record.key_hash));
        let reopened = KeyStore::open(dir.path()).unwrap();
        assert_eq!(reopened.authenticate(&key).unwrap(), record);
        assert!(matches!(
            reopened.authenticate("pz-wrong"),
            Err(KeyStoreError::UnknownKey)
        ));
    }

    #[test]
    fn spend_limit_holds_over_reservations_and_charges() {
        let (dir, store) = store();
        let (key, record) = store.create("dev", Amount::new(100)).unwrap();
        let a = store.reserve(&record.key_hash, Amount::new(60)).unwrap();
        // 60 reserved: another 60 would pass the limit.
        assert!(matches!(
            store.reserve(&record.key_hash, Amount::new(60)),
            Err(KeyStoreError::LimitReached { .. })
        ));
        store.settle(a, Amount::new(30)).unwrap();
        assert_eq!(store.reserved(&record.key_hash), Amount::ZERO);
        let b = store.reserve(&record.key_hash, Amount::new(70)).unwrap();
        assert!(store.reserve(&record.key_hash, Amount::new(1)).is_err());
        // A charge never exceeds its reservation.
        store.settle(b, Amount::new(1_000)).unwrap();
        assert_eq!(store.authenticate(&key).unwrap().spent, Amount::new(100));
        assert!(store.reserve(&record.key_hash, Amount::new(1)).is_err());
        assert!(store.reserve(&record.key_hash, Amount::ZERO).is_ok());
        let reopened = KeyStore::open(dir.path()).unwrap();
        assert_eq!(reopened.authenticate(&key).unwrap().spent, Amount::new(100));
    }

    #[test]
    fn a_limit_below_one_request_names_the_worst_case_and_what_is_left() {
        let (_dir, store) = store();
        let (_, record) = store.create("dev", Amount::new(1_000)).unwrap();
        let held = store.reserve(&record.key_hash, Amount::new(100)).unwrap();
        let e = store
            .reserve(&record.key_hash, Amount::new(256_000))
            .unwrap_err();
        assert!(
            matches!(e, KeyStoreError::LimitReached { asked, remaining, .. }
                if asked == Amount::new(256_000) && remaining == Amount::new(900)),
            "{e:?}"
        );
        let message = e.to_string();
        assert!(
            message.contains("worst-case cost of 0.000256 PZA exceeds the 0.0000009 PZA left"),
            "{message}"
        );
        store.settle(held, Amount::ZERO).unwrap();
    }

    #[test]
    fn keys_created_by_another_process_are_found() {
        let (dir, store) = store();
        let other = KeyStore::open(dir.path()).unwrap();
        let (key, _) = other.create("dev", Amount::pza(1)).unwrap();
        assert!(store.authenticate(&key).is_ok());
        // And a write by the first store keeps the other's key.
        let (_, mine) = store.create("dev", Amount::pza(1)).unwrap();
        let reopened = KeyStore::open(dir.path()).unwrap();
        assert_eq!(reopened.list().len(), 2);
        assert!(reopened.list().contains(&mine));
    }

    #[test]
    fn hostile_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(API_KEYS_FILE), b"{not json").unwrap();
        assert!(matches!(
            KeyStore::open(dir.path()),
            Err(KeyStoreError::Corrupt { .. })
        ));
    }
}

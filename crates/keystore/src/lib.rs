//! Encrypted keys on disk, one JSON file per named key.
//!
//! Invariants:
//! - A secret key never touches the disk in the clear: it is sealed with XChaCha20-Poly1305 under
//!   a key derived from the password by argon2id, with the address as associated data, so a file
//!   whose address was edited does not open.
//! - Files are written whole (temporary file, fsync, rename) with mode 0600, and never
//!   overwritten.
//! - Key files are untrusted input: every field is checked and argon2 costs are bounded, so a
//!   hostile file cannot make the process allocate or spin without limit.
//! - A key may have a password file next to it (`NAME.password`, mode 0600), so keys sealed with
//!   different passwords live in one keystore; the devnet writes one only for keys it seals with
//!   an empty password, so such a file never reveals a secret.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! let keystore = piazza_keystore::Keystore::open(dir.path()).unwrap();
//! let info = keystore.create("alice", "hunter2").unwrap();
//! let key = keystore.unlock("alice", "hunter2").unwrap();
//! assert_eq!(key.public_key().address(), info.address);
//! assert!(keystore.unlock("alice", "wrong").is_err());
//! ```

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use piazza_primitives::{Address, PublicKey, SecretKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

const FILE_VERSION: u32 = 1;
/// Argon2id cost used for new keys (OWASP's recommended minimum).
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
/// Upper bounds accepted when reading a key file.
const M_COST_KIB_MAX: u32 = 1024 * 1024;
const T_COST_MAX: u32 = 16;
const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;
const NAME_BYTES_MAX: usize = 64;
/// Largest password file read (`NAME.password`, `--password-file`).
pub const PASSWORD_FILE_BYTES_MAX: u64 = 4 * 1024;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeystoreError {
    #[error("no key named `{0}`")]
    NotFound(String),
    #[error("a key named `{0}` already exists")]
    Exists(String),
    #[error("wrong password for key `{0}` (or the file was altered)")]
    WrongPassword(String),
    #[error("invalid key name `{0}`: use 1-{NAME_BYTES_MAX} letters, digits, `-` or `_`")]
    InvalidName(String),
    #[error("key file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The public part of a stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub address: Address,
    pub public_key: String,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    name: String,
    address: Address,
    public_key: String,
    kdf: Kdf,
    cipher: Cipher,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    algorithm: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    algorithm: String,
    nonce: String,
    ciphertext: String,
}

pub struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    /// Opens (creating if needed) a keystore directory.
    pub fn open(dir: &Path) -> Result<Keystore, KeystoreError> {
        fs::create_dir_all(dir).map_err(|error| KeystoreError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        Ok(Keystore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, KeystoreError> {
        self.named(name, "json")
    }

    /// Where the password of key `name` is kept, if it has one: `NAME.password`.
    pub fn password_path(&self, name: &str) -> Result<PathBuf, KeystoreError> {
        self.named(name, "password")
    }

    /// The password stored next to key `name`, if there is a `NAME.password` file.
    pub fn stored_password(&self, name: &str) -> Result<Option<String>, KeystoreError> {
        let path = self.password_path(name)?;
        match fs::metadata(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(KeystoreError::Io { path, error }),
            Ok(_) => read_password_file(&path).map(Some),
        }
    }

    /// Keeps `password` in `NAME.password` (mode 0600), so commands unlock key `name` without
    /// asking. Meant for keys sealed with an empty password (devnet keys).
    pub fn store_password(&self, name: &str, password: &str) -> Result<(), KeystoreError> {
        let path = self.password_path(name)?;
        write_atomic(&path, password.as_bytes())
    }

    fn named(&self, name: &str, extension: &str) -> Result<PathBuf, KeystoreError> {
        let valid = !name.is_empty()
            && name.len() <= NAME_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(KeystoreError::InvalidName(name.to_string()));
        }
        Ok(self.dir.join(format!("{name}.{extension}")))
    }

    /// Generates a new key.
    pub fn create(&self, name: &str, password: &str) -> Result<KeyInfo, KeystoreError> {
        self.import(name, &SecretKey::generate(), password)
    }

    /// Stores an existing key under `name`.
    pub fn import(
        &self,
        name: &str,
        key: &SecretKey,
        password: &str,
    ) -> Result<KeyInfo, KeystoreError> {
        let path = self.path(name)?;
        if path.exists() {
            return Err(KeystoreError::Exists(name.to_string()));
        }
        let public = key.public_key();
        let address = public.address();
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut nonce);
        let sealing_key = derive(password, &salt, M_COST_KIB, T_COST, 1).map_err(|reason| {
            KeystoreError::Corrupt {
                path: path.clone(),
                reason,
            }
        })?;
        let cipher = XChaCha20Poly1305::new(&sealing_key.into());
        let seed = key.seed();
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &seed,
                    aad: &address.0,
                },
            )
            .expect("encryption of 32 bytes cannot fail");
        let file = KeyFile {
            version: FILE_VERSION,
            name: name.to_string(),
            address,
            public_key: public.to_hex(),
            kdf: Kdf {
                algorithm: "argon2id".into(),
                m_cost_kib: M_COST_KIB,
                t_cost: T_COST,
                p_cost: 1,
                salt: hex::encode(salt),
            },
            cipher: Cipher {
                algorithm: "xchacha20poly1305".into(),
                nonce: hex::encode(nonce),
                ciphertext: hex::encode(ciphertext),
            },
        };
        let json = serde_json::to_vec_pretty(&file).expect("key files serialize");
        write_atomic(&path, &json)?;
        Ok(KeyInfo {
            name: name.to_string(),
            address,
            public_key: public.to_hex(),
        })
    }

    fn read(&self, name: &str) -> Result<(PathBuf, KeyFile), KeystoreError> {
        let path = self.path(name)?;
        let metadata = fs::metadata(&path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => KeystoreError::NotFound(name.to_string()),
            _ => KeystoreError::Io {
                path: path.clone(),
                error,
            },
        })?;
        if metadata.len() > KEY_FILE_BYTES_MAX {
            return Err(KeystoreError::Corrupt {
                path,
                reason: format!("larger than {KEY_FILE_BYTES_MAX} bytes"),
            });
        }
        let bytes = fs::read(&path).map_err(|error| KeystoreError::Io {
            path: path.clone(),
            error,
        })?;
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| KeystoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if file.version != FILE_VERSION {
            return Err(KeystoreError::Corrupt {
                path,
                reason: format!("unsupported version {}", file.version),
            });
        }
        Ok((path, file))
    }

    pub fn info(&self, name: &str) -> Result<KeyInfo, KeystoreError> {
        let (_, file) = self.read(name)?;
        Ok(KeyInfo {
            name: file.name,
            address: file.address,
            public_key: file.public_key,
        })
    }

    /// Every key, by name.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeystoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|error| KeystoreError::Io {
            path: self.dir.clone(),
            error,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names.iter().map(|n| self.info(n)).collect()
    }

    /// Decrypts a key.
    pub fn unlock(&self, name: &str, password: &str) -> Result<SecretKey, KeystoreError> {
        let (path, file) = self.read(name)?;
        let corrupt = |reason: String| KeystoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        if file.kdf.algorithm != "argon2id" || file.cipher.algorithm != "xchacha20poly1305" {
            return Err(corrupt("unknown algorithm".into()));
        }
        if file.kdf.m_cost_kib > M_COST_KIB_MAX
            || file.kdf.t_cost > T_COST_MAX
            || file.kdf.p_cost != 1
        {
            return Err(corrupt("argon2 costs out of bounds".into()));
        }
        let salt = hex::decode(&file.kdf.salt).map_err(|e| corrupt(e.to_string()))?;
        let nonce: [u8; 24] = hex::decode(&file.cipher.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| corrupt("nonce must be 24 bytes".into()))?;
        let ciphertext =
            hex::decode(&file.cipher.ciphertext).map_err(|e| corrupt(e.to_string()))?;
        let sealing_key = derive(
            password,
            &salt,
            file.kdf.m_cost_kib,
            file.kdf.t_cost,
            file.kdf.p_cost,
        )
        .map_err(corrupt)?;
        let cipher = XChaCha20Poly1305::new(&sealing_key.into());
        let seed = cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &file.address.0,
                },
            )
            .map_err(|_| KeystoreError::WrongPassword(name.to_string()))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| corrupt("sealed key must be 32 bytes".into()))?;
        let key = SecretKey::from_seed(seed);
        if key.public_key().address() != file.address
            || key.public_key().to_hex() != file.public_key
        {
            return Err(corrupt("the key does not match the file's address".into()));
        }
        Ok(key)
    }
}

fn derive(
    password: &str,
    salt: &[u8],
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
) -> Result<[u8; 32], String> {
    let params = Params::new(m_cost_kib, t_cost, p_cost, Some(32)).map_err(|e| e.to_string())?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A password from a file: at most [`PASSWORD_FILE_BYTES_MAX`] bytes of UTF-8, one trailing
/// line ending (`\n` or `\r\n`) removed.
pub fn read_password_file(path: &Path) -> Result<String, KeystoreError> {
    let io = |error| KeystoreError::Io {
        path: path.to_path_buf(),
        error,
    };
    let corrupt = |reason: &str| KeystoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if fs::metadata(path).map_err(io)?.len() > PASSWORD_FILE_BYTES_MAX {
        return Err(corrupt(&format!(
            "a password file is at most {PASSWORD_FILE_BYTES_MAX} bytes"
        )));
    }
    let text = String::from_utf8(fs::read(path).map_err(io)?)
        .map_err(|_| corrupt("a password file holds UTF-8 text"))?;
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(password.to_string())
}

/// Writes a whole file (temporary file, fsync, rename) readable by its owner only.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let io = |error| KeystoreError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(parent) = path.parent() {
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// The public key in a key file, for display.
pub fn parse_public_key(hex_key: &str) -> Option<PublicKey> {
    let bytes: [u8; 32] = hex::decode(hex_key).ok()?.try_into().ok()?;
    Some(PublicKey(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_refuse_misuse() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path()).unwrap();
        let key = SecretKey::from_seed([4; 32]);
        let info = ks.import("dev", &key, "").unwrap();
        assert_eq!(info.address, key.public_key().address());
        assert!(matches!(
            ks.import("dev", &key, ""),
            Err(KeystoreError::Exists(_))
        ));
        assert!(matches!(
            ks.import("../x", &key, ""),
            Err(KeystoreError::InvalidName(_))
        ));
        assert!(matches!(
            ks.unlock("nobody", ""),
            Err(KeystoreError::NotFound(_))
        ));
        assert_eq!(ks.unlock("dev", "").unwrap().seed(), key.seed());
        assert!(matches!(
            ks.unlock("dev", "x"),
            Err(KeystoreError::WrongPassword(_))
        ));
        assert_eq!(ks.list().unwrap(), vec![info]);
        let raw = fs::read_to_string(dir.path().join("dev.json")).unwrap();
        assert!(
            !raw.contains(&hex::encode(key.seed())),
            "the seed is never stored in the clear"
        );
    }

    #[test]
    fn altered_files_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path()).unwrap();
        ks.import("a", &SecretKey::from_seed([4; 32]), "pw")
            .unwrap();
        let path = dir.path().join("a.json");
        let original = fs::read_to_string(&path).unwrap();
        let other = SecretKey::from_seed([5; 32])
            .public_key()
            .address()
            .to_string();
        let edited = original.replace(
            &SecretKey::from_seed([4; 32])
                .public_key()
                .address()
                .to_string(),
            &other,
        );
        fs::write(&path, edited).unwrap();
        assert!(matches!(
            ks.unlock("a", "pw"),
            Err(KeystoreError::WrongPassword(_))
        ));
        let mut value: serde_json::Value = serde_json::from_str(&original).unwrap();
        value["kdf"]["m_cost_kib"] = serde_json::json!(u32::MAX);
        fs::write(&path, value.to_string()).unwrap();
        assert!(matches!(
            ks.unlock("a", "pw"),
            Err(KeystoreError::Corrupt { .. })
        ));
        fs::write(&path, "{").unwrap();
        assert!(matches!(
            ks.unlock("a", "pw"),
            Err(KeystoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn password_files_sit_next_to_their_keys_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path()).unwrap();
        ks.create("dev", "").unwrap();
        assert_eq!(ks.stored_password("dev").unwrap(), None);
        ks.store_password("dev", "").unwrap();
        assert_eq!(ks.stored_password("dev").unwrap().as_deref(), Some(""));
        let path = ks.password_path("dev").unwrap();
        assert_eq!(path, dir.path().join("dev.password"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Password files are not keys.
        assert_eq!(ks.list().unwrap().len(), 1);
        assert!(matches!(
            ks.password_path("../dev"),
            Err(KeystoreError::InvalidName(_))
        ));

        let file = dir.path().join("pw.txt");
        fs::write(&file, "hunter2\r\n").unwrap();
        assert_eq!(read_password_file(&file).unwrap(), "hunter2");
        fs::write(&file, "two\n\n").unwrap();
        assert_eq!(read_password_file(&file).unwrap(), "two\n");
        fs::write(&file, vec![b'x'; PASSWORD_FILE_BYTES_MAX as usize + 1]).unwrap();
        assert!(matches!(
            read_password_file(&file),
            Err(KeystoreError::Corrupt { .. })
        ));
        fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_password_file(&file),
            Err(KeystoreError::Corrupt { .. })
        ));
    }
}

//! What a provider keeps of its sessions, durably: each session's channel (receipts not yet
//! committed, the latest voucher; `ProviderChannel::snapshot`) and every signed request it
//! served (an audit asks the provider to reveal it). Files are written atomically (a
//! temporary file, fsync, rename, fsync of the directory), so a crash leaves the old or the
//! new bytes, never a mix.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct SessionStore {
    dir: PathBuf,
}

/// Writes `bytes` to `path` atomically and durably.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

impl SessionStore {
    pub fn open(dir: &Path) -> std::io::Result<SessionStore> {
        fs::create_dir_all(dir)?;
        Ok(SessionStore {
            dir: dir.to_path_buf(),
        })
    }

    fn channel_path(&self, session: u64) -> PathBuf {
        self.dir.join(format!("session-{session}.channel"))
    }

    fn request_path(&self, session: u64, seq: u64) -> PathBuf {
        self.dir
            .join(format!("session-{session}-request-{seq}.bin"))
    }

    /// Records session `session`'s channel snapshot.
    pub fn save_channel(&self, session: u64, snapshot: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.dir, &self.channel_path(session), snapshot)
    }

    pub fn channel(&self, session: u64) -> Option<Vec<u8>> {
        fs::read(self.channel_path(session)).ok()
    }

    /// Records the signed request `seq` of `session` (canonical bytes) before it is served.
    pub fn save_request(&self, session: u64, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.dir, &self.request_path(session, seq), bytes)
    }

    pub fn request(&self, session: u64, seq: u64) -> Option<Vec<u8>> {
        fs::read(self.request_path(session, seq)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_overwrite_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        store.save_channel(4, b"first, longer").unwrap();
        store.save_channel(4, b"second").unwrap();
        store.save_request(4, 1, b"req").unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        assert_eq!(store.channel(4).as_deref(), Some(&b"second"[..]));
        assert_eq!(store.request(4, 1).as_deref(), Some(&b"req"[..]));
        assert_eq!(store.channel(5), None);
        assert_eq!(store.request(4, 2), None);
    }
}

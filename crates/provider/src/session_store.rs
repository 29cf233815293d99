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

    fn commit_path(&self, session: u64, voucher_seq: u64) -> PathBuf {
        self.dir
            .join(format!("session-{session}-commit-{voucher_seq}.receipts"))
    }

    /// Records the receipts of a commit that landed (its audits may ask for any of them),
    /// keyed by the seq of its voucher.
    pub fn save_commit(&self, session: u64, voucher_seq: u64, bytes: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.dir, &self.commit_path(session, voucher_seq), bytes)
    }

    pub fn commit(&self, session: u64, voucher_seq: u64) -> Option<Vec<u8>> {
        fs::read(self.commit_path(session, voucher_seq)).ok()
    }

    /// Forgets a commit whose audits are over.
    pub fn forget_commit(&self, session: u64, voucher_seq: u64) {
        let _ = fs::remove_file(self.commit_path(session, voucher_seq));
    }

    /// The recorded commits, as `(session, voucher seq)`, in order.
    pub fn commits(&self) -> Vec<(u64, u64)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut commits: Vec<(u64, u64)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let rest = name.strip_prefix("session-")?.strip_suffix(".receipts")?;
                let (session, seq) = rest.split_once("-commit-")?;
                Some((session.parse().ok()?, seq.parse().ok()?))
            })
            .collect();
        commits.sort();
        commits
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
        store.save_commit(4, 9, b"receipts").unwrap();
        store.save_commit(10, 2, b"more").unwrap();
        assert_eq!(store.commits(), vec![(4, 9), (10, 2)]);
        assert_eq!(store.commit(4, 9).as_deref(), Some(&b"receipts"[..]));
        store.forget_commit(4, 9);
        assert_eq!(store.commits(), vec![(10, 2)]);
        assert_eq!(store.request(4, 2), None);
    }
}

//! What a provider has posted, so that a restart re-sends the same signed result instead of a
//! second one: one file per job holding the raw signed transaction, written atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        fs::create_dir_all(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, job: u64) -> PathBuf {
        self.dir.join(format!("job-{job}.tx"))
    }

    /// Records the signed answer for `job` (its result or its decline), durably, before it is
    /// sent.
    pub fn record(&self, job: u64, tx: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("job-{job}.tmp"));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(tx)?;
        file.sync_all()?;
        fs::rename(&tmp, self.path(job))?;
        fs::File::open(&self.dir)?.sync_all()
    }

    pub fn get(&self, job: u64) -> Option<Vec<u8>> {
        fs::read(self.path(job)).ok()
    }

    pub fn forget(&self, job: u64) {
        let _ = fs::remove_file(self.path(job));
    }

    /// Jobs with a recorded result.
    pub fn jobs(&self) -> Vec<u64> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut jobs: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("job-")?
                    .strip_suffix(".tx")?
                    .parse()
                    .ok()
            })
            .collect();
        jobs.sort();
        jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.record(7, b"tx").unwrap();
        journal.record(3, b"other").unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.jobs(), vec![3, 7]);
        assert_eq!(journal.get(7).as_deref(), Some(&b"tx"[..]));
        journal.forget(7);
        assert_eq!(journal.jobs(), vec![3]);
    }
}

//! One TOML file per role; environment variables and flags override it (flag > env > file >
//! default).

use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `devnet.toml` / `node.toml`: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub data_dir: Option<PathBuf>,
    pub rpc_addr: Option<String>,
    pub block_interval_ms: Option<u64>,
    pub mempool_capacity: Option<usize>,
    pub genesis: Option<PathBuf>,
    pub validator_key: Option<String>,
    pub keystore: Option<PathBuf>,
}

/// Bounded read of a config file.
pub fn load(path: Option<&Path>) -> Result<NodeFile> {
    let Some(path) = path else {
        return Ok(NodeFile::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    anyhow::ensure!(
        text.len() <= 64 * 1024,
        "config {} is larger than 64 KiB",
        path.display()
    );
    toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
}

/// `~/.piazza`, or `$PIAZZA_HOME`.
pub fn home() -> PathBuf {
    if let Some(home) = std::env::var_os("PIAZZA_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".piazza")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "rpc_addr = \"127.0.0.1:1\"\nblock_interval_ms = 5\n").unwrap();
        let file = load(Some(&path)).unwrap();
        assert_eq!(
            (file.rpc_addr.as_deref(), file.block_interval_ms),
            (Some("127.0.0.1:1"), Some(5))
        );
        std::fs::write(&path, "rpc_adr = 1\n").unwrap();
        assert!(load(Some(&path)).is_err());
    }
}

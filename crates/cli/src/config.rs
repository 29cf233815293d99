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

/// `~/.piazza`, or `$PIAZZA_HOME`: every default path of every command is under it.
pub fn home() -> PathBuf {
    if let Some(home) = std::env::var_os("PIAZZA_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".piazza")
}

/// The devnet's default data directory: `HOME/devnet` (HOME being [`home`]).
pub fn devnet_dir(home: &Path) -> PathBuf {
    home.join("devnet")
}

/// The keystore client commands use by default: the devnet's (`HOME/devnet/keys`) once a
/// devnet made it, so its `dev` key and keys made next to it are found; else `HOME/keys`.
pub fn default_keystore(home: &Path) -> PathBuf {
    let devnet = devnet_dir(home).join("keys");
    if devnet.is_dir() {
        devnet
    } else {
        home.join("keys")
    }
}

/// Where gateway commands keep API keys by default: the devnet's gateway's directory.
pub fn default_gateway_dir(home: &Path) -> PathBuf {
    devnet_dir(home).join("gateway")
}

/// `piazza gateway ...` with this command's defaults filled in, so the API keys it makes are the
/// ones the devnet's gateway reads, paid by keys of the keystore every other command uses.
pub fn gateway_defaults(
    mut command: piazza_gateway::GatewayCommand,
) -> piazza_gateway::GatewayCommand {
    use piazza_gateway::cli::KeyCommand;
    use piazza_gateway::GatewayCommand;
    let dirs = match &mut command {
        GatewayCommand::Run { dirs, .. }
        | GatewayCommand::Key(KeyCommand::Create { dirs, .. })
        | GatewayCommand::Key(KeyCommand::List { dirs, .. }) => dirs,
    };
    let home = home();
    dirs.data_dir
        .get_or_insert_with(|| default_gateway_dir(&home));
    dirs.keystore.get_or_insert_with(|| default_keystore(&home));
    command
}

/// What a client in another shell must set to find a devnet's keys and API keys, if the devnet
/// does not use the defaults (empty when it does).
pub fn client_exports(home: &Path, keystore: &Path, gateway_dir: &Path) -> Vec<String> {
    let mut exports = Vec::new();
    if keystore != default_keystore(home) {
        exports.push(format!("PIAZZA_KEYSTORE={}", keystore.display()));
    }
    if gateway_dir != default_gateway_dir(home) {
        exports.push(format!("PIAZZA_GATEWAY_DIR={}", gateway_dir.display()));
    }
    exports
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

    #[test]
    fn client_defaults_find_the_devnets_keys_and_api_keys() {
        let home = tempfile::tempdir().unwrap();
        let home = home.path();
        // Before any devnet: the personal keystore.
        assert_eq!(default_keystore(home), home.join("keys"));
        // A devnet in its default place: its keystore, with no variable to set.
        let data_dir = devnet_dir(home);
        std::fs::create_dir_all(data_dir.join("keys")).unwrap();
        assert_eq!(default_keystore(home), data_dir.join("keys"));
        assert_eq!(default_gateway_dir(home), data_dir.join("gateway"));
        assert!(client_exports(home, &data_dir.join("keys"), &data_dir.join("gateway")).is_empty());
        // A devnet elsewhere: the hint names both directories.
        let elsewhere = home.join("elsewhere");
        assert_eq!(
            client_exports(home, &elsewhere.join("keys"), &elsewhere.join("gateway")),
            vec![
                format!("PIAZZA_KEYSTORE={}", elsewhere.join("keys").display()),
                format!("PIAZZA_GATEWAY_DIR={}", elsewhere.join("gateway").display()),
            ]
        );
    }
}

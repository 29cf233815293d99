//! What the devnet tests share: a real devnet process and the CLI against it.
#![allow(dead_code)]

use piazza_client::Client;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const PIAZZA: &str = env!("CARGO_BIN_EXE_piazza");
pub const WAIT: Duration = Duration::from_secs(20);
/// How long a devnet may take from its RPC address to `ready` (models loaded, roles registered).
pub const READY_WAIT: Duration = Duration::from_secs(120);

pub struct Devnet {
    pub child: Child,
    pub url: String,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A devnet that said `ready` (every in-process role registered), with the embedding model only (loading SmolLM2 costs seconds a test need not pay).
pub fn start_devnet(dir: &Path) -> Devnet {
    start_devnet_with(dir, &["--models", "all-minilm-l6-v2"])
}

pub fn start_devnet_with(dir: &Path, extra: &[&str]) -> Devnet {
    // 100 ms blocks unless the test names its own interval.
    let interval: &[&str] = if extra.contains(&"--block-interval-ms") {
        &[]
    } else {
        &["--block-interval-ms", "100"]
    };
    // No storage providers unless the test asks: with them the devnet stores the bundled
    // models' files right after it starts, seconds of CPU that a 2-core box takes from the
    // test's own deadlines.
    let storage: &[&str] = if extra.contains(&"--storage-providers") {
        &[]
    } else {
        &["--storage-providers", "0"]
    };
    let mut child = Command::new(PIAZZA)
        .args([
            "devnet",
            "--rpc-addr",
            "127.0.0.1:0",
            "--gateway-addr",
            "127.0.0.1:0",
        ])
        .args(interval)
        .args(storage)
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .env_remove("PIAZZA_KEYSTORE")
        .env_remove("PIAZZA_PASSWORD")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("piazza starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.split("JSON-RPC on ").nth(1) {
                let _ = tx.send(Some(url.trim().to_string()));
            }
            if line.starts_with("piazza devnet: ready") {
                let _ = tx.send(None);
            }
        }
    });
    let url = rx
        .recv_timeout(WAIT)
        .expect("the devnet prints its RPC address")
        .expect("the RPC address comes first");
    let devnet = Devnet { child, url };
    assert_eq!(
        rx.recv_timeout(READY_WAIT)
            .expect("the devnet says it is ready"),
        None,
        "the devnet prints its RPC address once"
    );
    devnet
}

pub fn balance_of(client: &Client, runtime: &tokio::runtime::Runtime, address: &str) -> u128 {
    runtime
        .block_on(client.account(&address.parse().unwrap()))
        .unwrap()
        .balance
        .parse()
        .unwrap()
}

pub fn cli(devnet: &Devnet, dir: &Path, args: &[&str]) -> Value {
    let output = Command::new(PIAZZA)
        .args(args)
        .args(["--node", &devnet.url, "--json"])
        .env("PIAZZA_KEYSTORE", dir.join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "piazza {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "piazza {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A new keystore key funded by `dev` with `amount` PZA; returns its address.
pub fn funded_key(devnet: &Devnet, dir: &Path, name: &str, amount: &str) -> String {
    let keys = Command::new(PIAZZA)
        .args(["keys", "new", name])
        .env("PIAZZA_KEYSTORE", dir.join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .output()
        .unwrap();
    assert!(keys.status.success(), "keys new {name}");
    cli(
        devnet,
        dir,
        &[
            "send", "--from", "dev", "--to", name, "--amount", amount, "--wait",
        ],
    );
    piazza_keystore::Keystore::open(&dir.join("keys"))
        .unwrap()
        .info(name)
        .unwrap()
        .address
        .to_string()
}

/// A `piazza` daemon (`provider run`, `auditor run`) against the devnet, killed on drop.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn daemon(devnet: &Devnet, dir: &Path, args: &[&str]) -> Daemon {
    Daemon(
        Command::new(PIAZZA)
            .args(args)
            .args(["--node", &devnet.url, "--poll-ms", "50"])
            .env("PIAZZA_KEYSTORE", dir.join("keys"))
            .env_remove("PIAZZA_PASSWORD")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Polls `done` every 50 ms until it is true, failing the test with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

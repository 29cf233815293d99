//! The `piazza` binary as a user runs it: a real devnet process, the CLI against it, and a crash.

use piazza_client::Client;
use piazza_keystore::Keystore;
use piazza_ledger::bank;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Address, Amount, Hash};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PIAZZA: &str = env!("CARGO_BIN_EXE_piazza");
const WAIT: Duration = Duration::from_secs(20);

struct Devnet {
    child: Child,
    url: String,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_devnet(dir: &Path) -> Devnet {
    let mut child = Command::new(PIAZZA)
        .args(["devnet", "--rpc-addr", "127.0.0.1:0", "--block-interval-ms", "100", "--data-dir"])
        .arg(dir)
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
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx.recv_timeout(WAIT).expect("the devnet prints its RPC address");
    Devnet { child, url }
}

fn cli(devnet: &Devnet, dir: &Path, args: &[&str]) -> Value {
    let output = Command::new(PIAZZA)
        .args(args)
        .args(["--node", &devnet.url, "--json"])
        .env("PIAZZA_KEYSTORE", dir.join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "piazza {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("piazza {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn the_cli_drives_a_devnet_and_the_chain_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet(dir.path());
    let keys = Command::new(PIAZZA).args(["keys", "new", "bob"]).env("PIAZZA_KEYSTORE", dir.path().join("keys")).env_remove("PIAZZA_PASSWORD").output().unwrap();
    assert!(keys.status.success());
    let bob = Keystore::open(&dir.path().join("keys")).unwrap().info("bob").unwrap().address.to_string();

    let receipt = cli(&devnet, dir.path(), &["send", "--from", "dev", "--to", "bob", "--amount", "5.5", "--wait"]);
    assert_eq!(receipt["status"], "ok");
    let balance = cli(&devnet, dir.path(), &["balance", "bob", "--verify"]);
    assert_eq!(balance["account"]["balance"], Amount::new(5_500_000_000).base_units().to_string());
    assert_eq!(balance["account"]["address"], bob);
    assert!(balance["verified_against_block_of"].is_string());

    let tx_hash = receipt["tx_hash"].as_str().unwrap();
    let tx = cli(&devnet, dir.path(), &["tx", tx_hash]);
    assert_eq!(tx["transaction"]["messages"][0]["to"], bob);
    let block = cli(&devnet, dir.path(), &[&"block", &receipt["height"].to_string().as_str()]);
    assert!(block["tx_hashes"].as_array().unwrap().iter().any(|h| h == tx_hash));

    let staked = cli(&devnet, dir.path(), &["stake", "--from", "dev", "--role", "provider", "--amount", "250", "--wait"]);
    assert_eq!(staked["events"][0]["kind"], "staking.bond");
    let balance = cli(&devnet, dir.path(), &["balance", "dev"]);
    assert_eq!(balance["stake"]["bonds"]["provider"], Amount::pza(250).base_units().to_string());
    let unstaked = cli(&devnet, dir.path(), &["unstake", "--from", "dev", "--role", "provider", "--amount", "250", "--wait"]);
    assert_eq!(unstaked["events"][0]["kind"], "staking.unbond");

    // A refused transfer is a clear error on stderr and a failing exit code.
    let refused = Command::new(PIAZZA)
        .args(["send", "--from", "bob", "--to", "dev", "--amount", "1000", "--node", &devnet.url])
        .env("PIAZZA_KEYSTORE", dir.path().join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("insufficient_funds"), "{}", String::from_utf8_lossy(&refused.stderr));

    let before = cli(&devnet, dir.path(), &["status"]);
    drop(devnet);
    let devnet = start_devnet(dir.path());
    let after = cli(&devnet, dir.path(), &["status"]);
    assert_eq!(after["chain_id"], before["chain_id"]);
    assert!(after["height"].as_u64() >= before["height"].as_u64());
    let balance = cli(&devnet, dir.path(), &["balance", "bob", "--verify"]);
    assert_eq!(balance["account"]["balance"], Amount::new(5_500_000_000).base_units().to_string());
}

#[test]
fn sigkill_during_transfers_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut devnet = start_devnet(dir.path());
    let dev = Keystore::open(&dir.path().join("keys")).unwrap().unlock("dev", "").unwrap();
    let recipient = Address([0x5a; 20]);
    let client = Client::new(&devnet.url);
    let chain_id = runtime.block_on(client.status()).unwrap().chain_id;

    // Stream transfers (amount = nonce + 1 base units, so the recipient's balance names them)
    // and record every one whose receipt the node reported, until the kill.
    let mut reported: Vec<(Hash, u64)> = Vec::new();
    let mut sent: Vec<(Hash, u64)> = Vec::new();
    let kill_after = Duration::from_millis(1500 + (std::process::id() as u64 % 1000));
    let started = Instant::now();
    runtime.block_on(async {
        let mut nonce = 0u64;
        while started.elapsed() < kill_after {
            for _ in 0..20 {
                let tx = Transaction { chain_id: chain_id.clone(), sender: dev.public_key(), nonce, max_fee: Amount::pza(1), messages: vec![Message::Bank(bank::Msg::Send { to: recipient, amount: Amount::new(nonce as u128 + 1) })] }.sign(&dev);
                match client.submit(&tx).await {
                    Ok(hash) => {
                        sent.push((hash, nonce));
                        nonce += 1;
                    }
                    Err(_) => break, // the nonce window is full; let blocks catch up
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            for (hash, nonce) in &sent {
                if !reported.iter().any(|(h, _)| h == hash) && client.receipt(hash).await.unwrap().is_some() {
                    reported.push((*hash, *nonce));
                }
            }
        }
    });
    devnet.child.kill().unwrap(); // SIGKILL
    devnet.child.wait().unwrap();
    assert!(reported.len() >= 10, "only {} transfers were reported committed before the kill", reported.len());

    let devnet = start_devnet(dir.path());
    let client = Client::new(&devnet.url);
    runtime.block_on(async {
        for (hash, _) in &reported {
            let receipt = client.receipt(hash).await.unwrap().unwrap_or_else(|| panic!("reported transfer {hash} was lost"));
            assert_eq!(receipt.status, "ok");
        }
        // Committed transfers form a gap-free nonce prefix, and the balance is exactly theirs.
        let mut committed = 0u64;
        let mut expected = 0u128;
        for (hash, nonce) in &sent {
            if client.receipt(hash).await.unwrap().is_some() {
                assert_eq!(*nonce, committed, "committed nonces have no gap");
                committed += 1;
                expected += *nonce as u128 + 1;
            }
        }
        assert!(committed as usize >= reported.len());
        assert_eq!(client.account(&recipient).await.unwrap().balance, expected.to_string());
        assert_eq!(client.account(&dev.public_key().address()).await.unwrap().nonce, committed);
    });
    let head = runtime.block_on(client.status()).unwrap();
    drop(devnet);

    // Replay the stored blocks into a fresh store: the same state root at the same height.
    let stored = piazza_store::Store::open(&dir.path().join("chain.redb")).unwrap();
    let genesis: piazza_ledger::genesis::Genesis = serde_json::from_slice(&stored.genesis().unwrap().unwrap()).unwrap();
    let replay_store = piazza_store::Store::open(&dir.path().join("replay.redb")).unwrap();
    let replica = piazza_node::App::open(replay_store, Some(&genesis), piazza_primitives::SecretKey::from_seed([1; 32]), Default::default()).unwrap();
    let stored_head = stored.head().unwrap().unwrap();
    assert!(stored_head.height >= head.height);
    for height in 1..=stored_head.height {
        replica.commit(stored.block(height).unwrap().unwrap()).unwrap();
    }
    assert_eq!(replica.head().unwrap(), stored_head);
    assert_eq!(replica.store().state_root(head.height).unwrap().unwrap().to_hex(), head.state_root);
}

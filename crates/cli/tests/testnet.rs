//! A network of real `piazza node` processes on Malachite, written by `piazza testnet init`:
//! four validators agree on every block; one killed (SIGKILL), the other three keep finalizing;
//! restarted, it catches up by value sync; two killed, the chain halts without forking and
//! resumes when one returns.

use piazza_client::Client;
use piazza_ledger::bank;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Address, Amount, SecretKey};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PIAZZA: &str = env!("CARGO_BIN_EXE_piazza");
/// How long the network may take to reach a state a step waits for.
const STEP_WAIT: Duration = Duration::from_secs(45);
/// How long a halted network is watched for a block it must not make: several rounds of the
/// testnet's timeouts (1 s propose, 0.3 s prevote and precommit).
const HALT_WATCH: Duration = Duration::from_secs(4);
/// Time for a height that was in flight when validators died to finish.
const HALT_SETTLE: Duration = Duration::from_millis(1_500);
const VALIDATORS: usize = 4;

/// One `piazza node` process, killed on drop.
struct NodeProcess {
    child: Option<Child>,
    config: PathBuf,
    client: Client,
    url: String,
}

impl NodeProcess {
    fn start(config: &Path, url: &str) -> NodeProcess {
        let log = config.with_file_name("test-node.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(PIAZZA)
            .args(["node", "--config"])
            .arg(config)
            .env_remove("PIAZZA_PASSWORD")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("piazza node starts");
        NodeProcess {
            child: Some(child),
            config: config.to_path_buf(),
            client: Client::new(url),
            url: url.to_string(),
        }
    }

    /// SIGKILL: no shutdown path runs.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped node only");
        *self = NodeProcess::start(&self.config, &self.url);
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `count` consecutive ports on 127.0.0.1 that are free now, starting at an even offset.
fn free_port_run(count: u16) -> u16 {
    for _ in 0..50 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base.checked_add(count).is_none() {
            continue;
        }
        let held: Vec<_> = (base..base + count)
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
    panic!("no run of {count} free ports");
}

struct Network {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    nodes: Vec<NodeProcess>,
    runtime: tokio::runtime::Runtime,
}

impl Network {
    fn init(validators: usize) -> Network {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("testnet");
        let base = free_port_run(2 * validators as u16);
        let output = Command::new(PIAZZA)
            .args(["testnet", "init", "--models", ""])
            .args(["--validators", &validators.to_string()])
            .args(["--base-port", &base.to_string(), "--dir"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "testnet init: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let nodes = (0..validators)
            .map(|i| {
                let config = path.join(format!("validator-{i}")).join("node.toml");
                NodeProcess::start(
                    &config,
                    &format!("http://127.0.0.1:{}", base + 2 * i as u16),
                )
            })
            .collect();
        Network {
            _dir: dir,
            dir: path,
            nodes,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// The node's finalized height, or `None` while it does not answer.
    fn height(&self, i: usize) -> Option<u64> {
        self.runtime
            .block_on(self.nodes[i].client.status())
            .ok()
            .map(|s| s.height)
    }

    /// (hash, state root) of the block at `height` on node `i`.
    fn block(&self, i: usize, height: u64) -> Option<(String, String)> {
        self.runtime
            .block_on(self.nodes[i].client.block(height))
            .ok()
            .flatten()
            .map(|b| (b.hash, b.state_root))
    }

    /// Waits until each of `nodes` has finalized `height`, then checks that they hold the same
    /// block (hash and state root) there.
    fn agree_at(&self, nodes: &[usize], height: u64, what: &str) -> (String, String) {
        wait_until(what, || {
            nodes.iter().all(|&i| self.height(i) >= Some(height))
        });
        let blocks: Vec<_> = nodes
            .iter()
            .map(|&i| self.block(i, height).expect("a finalized block is served"))
            .collect();
        for (block, &i) in blocks.iter().zip(nodes) {
            assert_eq!(
                block, &blocks[0],
                "node {i} holds another block at height {height} than node {}",
                nodes[0]
            );
        }
        blocks[0].clone()
    }

    fn highest(&self, nodes: &[usize]) -> u64 {
        nodes
            .iter()
            .filter_map(|&i| self.height(i))
            .max()
            .unwrap_or(0)
    }

    fn dev_key(&self) -> SecretKey {
        let keystore = piazza_keystore::Keystore::open(&self.dir.join("keys")).unwrap();
        keystore.unlock("dev", "").unwrap()
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < STEP_WAIT, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn four_validator_processes_agree_survive_crashes_and_halt_without_forking() {
    let mut net = Network::init(VALIDATORS);
    let all: Vec<usize> = (0..VALIDATORS).collect();
    net.agree_at(&all, 2, "four validators finalize height 2");

    // Transfers, each sent to a different node first. Without transaction gossip between nodes
    // (not built yet) a transaction reaches the proposer only if it was sent to it, so each is
    // also sent to every other node; the nodes deduplicate it by hash.
    let dev = net.dev_key();
    let chain_id = net
        .runtime
        .block_on(net.nodes[0].client.status())
        .unwrap()
        .chain_id;
    let recipient = Address([7; 20]);
    let mut hashes = Vec::new();
    for nonce in 0..8u64 {
        let tx = Transaction {
            chain_id: chain_id.clone(),
            sender: dev.public_key(),
            nonce,
            max_fee: Amount::pza(1),
            messages: vec![Message::Bank(bank::Msg::Send {
                to: recipient,
                amount: Amount::pza(1),
            })],
        }
        .sign(&dev);
        let first = nonce as usize % VALIDATORS;
        for offset in 0..VALIDATORS {
            let node = &net.nodes[(first + offset) % VALIDATORS];
            let hash = net.runtime.block_on(node.client.submit(&tx)).unwrap();
            hashes.push(hash);
        }
    }
    let client = &net.nodes[0].client;
    for hash in &hashes {
        net.runtime
            .block_on(client.wait_for_receipt(hash, STEP_WAIT))
            .expect("every transfer is finalized");
    }
    let landed = net.highest(&[0]);
    net.agree_at(&all, landed, "every node finalizes the transfers' blocks");
    for i in &all {
        let account = net
            .runtime
            .block_on(net.nodes[*i].client.account(&recipient))
            .unwrap();
        assert_eq!(
            account.balance,
            Amount::pza(8).base_units().to_string(),
            "node {i} sees all 8 transfers"
        );
    }

    // One validator killed: the other three hold more than 2/3 of the power and keep going.
    net.nodes[3].kill();
    let killed_at = net.highest(&[0, 1, 2]);
    net.agree_at(
        &[0, 1, 2],
        killed_at + 3,
        "three validators keep finalizing",
    );

    // Restarted, it catches up by value sync and holds the same blocks.
    net.nodes[3].restart();
    let target = net.highest(&[0, 1, 2]) + 1;
    net.agree_at(&all, target, "the restarted validator catches up");

    // Two killed: half the power is left, the chain halts; no node finalizes another block.
    net.nodes[2].kill();
    net.nodes[3].kill();
    // A height in flight when they died may still finish; after it nothing does.
    std::thread::sleep(HALT_SETTLE);
    let halted = net.highest(&[0, 1]);
    std::thread::sleep(HALT_WATCH);
    assert_eq!(
        net.highest(&[0, 1]),
        halted,
        "two of four validators finalized a block"
    );
    net.agree_at(&[0, 1], halted, "the two left agree on the last block");

    // One returns: three of four again, the chain resumes on the same history.
    net.nodes[2].restart();
    let resumed = net.agree_at(&[0, 1, 2], halted + 2, "the chain resumes");
    let history = net.agree_at(&[0, 1, 2], halted, "no fork across the halt");
    assert_ne!(resumed, history);
}

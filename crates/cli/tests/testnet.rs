//! A network of real `piazza node` processes on Malachite, written by `piazza testnet init`:
//! transfers sent to different nodes reach the proposer by gossip; four validators agree on every
//! block; one killed (SIGKILL), the other three keep finalizing; restarted, it catches up by
//! value sync; two killed, the chain halts without forking and resumes when one returns; a node
//! that is not a validator, started last, syncs to the same state; an account is proven against
//! a block whose commit certificate the client checks (`balance --verify`); after a validator-set
//! change, `balance --verify --genesis` proves it from the network's genesis as a light client
//! and refuses it against another network's genesis.

mod common;

use piazza_client::Client;
use piazza_ledger::bank;
use piazza_ledger::staking::validators::VALIDATOR_SET_DELAY;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Address, Amount, SecretKey};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::PIAZZA;
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
    base: u16,
    _dir: tempfile::TempDir,
    dir: PathBuf,
    nodes: Vec<NodeProcess>,
    runtime: tokio::runtime::Runtime,
}

impl Network {
    fn init(validators: usize) -> Network {
        Network::init_with_models(validators, "")
    }

    /// A network whose genesis registers `models` (comma-separated bundled names).
    fn init_with_models(validators: usize, models: &str) -> Network {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("testnet");
        // The validators' ports, then a later node's.
        let base = free_port_run(2 * (validators as u16 + 1));
        let output = Command::new(PIAZZA)
            .args(["testnet", "init", "--models", models])
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
            base,
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
        common::wait_until(what, STEP_WAIT, || {
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

    /// Writes and starts a node that is not a validator: its own key, the ports after the
    /// validators', every validator as a peer. Returns its index.
    fn add_observer(&mut self) -> usize {
        let keystore = piazza_keystore::Keystore::open(&self.dir.join("keys")).unwrap();
        keystore.create("observer", "").unwrap();
        keystore.store_password("observer", "").unwrap();
        let rpc = self.base + 2 * VALIDATORS as u16;
        let peers: Vec<String> = (0..VALIDATORS)
            .map(|i| format!("\"/ip4/127.0.0.1/tcp/{}\"", self.base + 2 * i as u16 + 1))
            .collect();
        let home = self.dir.join("observer");
        std::fs::create_dir_all(&home).unwrap();
        let config = home.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\nrpc_addr = \"127.0.0.1:{rpc}\"\ngenesis = \"../genesis.json\"\n\
                 keystore = \"../keys\"\nvalidator_key = \"observer\"\n[consensus]\n\
                 listen_addr = \"/ip4/127.0.0.1/tcp/{}\"\npeers = [{}]\n",
                rpc + 1,
                peers.join(", ")
            ),
        )
        .unwrap();
        self.nodes.push(NodeProcess::start(
            &config,
            &format!("http://127.0.0.1:{rpc}"),
        ));
        self.nodes.len() - 1
    }

    fn dev_key(&self) -> SecretKey {
        let keystore = piazza_keystore::Keystore::open(&self.dir.join("keys")).unwrap();
        keystore.unlock("dev", "").unwrap()
    }

    fn validator_key(&self, index: usize) -> SecretKey {
        let keystore = piazza_keystore::Keystore::open(&self.dir.join("keys")).unwrap();
        keystore.unlock(&format!("validator-{index}"), "").unwrap()
    }
}

#[test]
fn four_validator_processes_agree_survive_crashes_and_halt_without_forking() {
    let mut net = Network::init(VALIDATORS);
    let all: Vec<usize> = (0..VALIDATORS).collect();
    net.agree_at(&all, 2, "four validators finalize height 2");

    // Transfers, each sent to one node, a different one each time: gossip carries them to the
    // proposer, whichever it is.
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
        let node = &net.nodes[nonce as usize % VALIDATORS].client;
        hashes.push(net.runtime.block_on(node.submit(&tx)).unwrap());
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

    // Proofs against the network: the recipient's account proven against a block whose commit
    // certificate carries more than two thirds of its height's power, by the client and by
    // `piazza balance --verify`.
    let client = &net.nodes[1].client;
    let (account, block) = net
        .runtime
        .block_on(client.verified_account(&recipient))
        .expect("the account verifies against the network's certificate");
    assert_eq!(account.balance, Amount::pza(8).base_units().to_string());
    let power = net
        .runtime
        .block_on(client.certified_block(&block))
        .unwrap()
        .expect("a network certifies its blocks");
    assert!(3 * power.signed > 2 * power.total, "{power:?}");
    let output = Command::new(PIAZZA)
        .args(["balance", "--verify", "--json", "--node", &net.nodes[1].url])
        .arg(recipient.to_string())
        .env_remove("PIAZZA_GENESIS")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "balance --verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Without the genesis the set is the node's word, and the answer says so.
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        answer["proof"]["validator_set"]
            .as_str()
            .unwrap()
            .contains("unchecked"),
        "{answer}"
    );

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

    // A fifth node, not a validator, started now: it syncs the whole chain and agrees.
    let observer = net.add_observer();
    net.nodes[3].restart();
    let target = net.highest(&[0, 1, 2]) + 1;
    net.agree_at(
        &[0, 1, 2, 3, observer],
        target,
        "a non-validator syncs to the same state",
    );
    // The synced node kept the certificates of the blocks it synced.
    net.runtime
        .block_on(net.nodes[observer].client.verified_account(&recipient))
        .expect("a synced node proves accounts against the network's certificates");

    // A validator-set change: validator 0 bonds more, so from two blocks after its bond the
    // set's powers differ from the genesis's. `balance --verify --genesis` then proves the
    // account as a light client: the set of the head proven against its parent's state root,
    // its certificate signed by more than a third of the genesis set's power.
    let validator = net.validator_key(0);
    let tx = Transaction {
        chain_id: chain_id.clone(),
        sender: validator.public_key(),
        nonce: 0,
        max_fee: Amount::pza(1),
        messages: vec![Message::Staking(staking::Msg::Bond {
            role: Role::Validator,
            amount: Amount::pza(5_000),
        })],
    }
    .sign(&validator);
    let client = &net.nodes[1].client;
    let receipt = net
        .runtime
        .block_on(async {
            let hash = client.submit(&tx).await?;
            client.wait_for_receipt(&hash, STEP_WAIT).await
        })
        .expect("the bond is finalized");
    assert!(receipt.error.is_none(), "{receipt:?}");
    let effective = receipt.height + VALIDATOR_SET_DELAY;
    net.agree_at(&all, effective + 1, "the new set signs");
    let powers = |height: u64| -> Vec<u64> {
        let set = net.runtime.block_on(client.validators(height)).unwrap();
        set.unwrap()
            .validators
            .iter()
            .map(|v| v.voting_power)
            .collect()
    };
    assert_ne!(powers(effective), powers(1), "the validator set changed");
    let output = Command::new(PIAZZA)
        .args(["balance", "--verify", "--json", "--node", &net.nodes[1].url])
        .arg("--genesis")
        .arg(net.dir.join("genesis.json"))
        .arg(recipient.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "balance --verify --genesis: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        answer["proof"]["block"].as_u64().unwrap() > effective,
        "{answer}"
    );
    assert!(
        answer["proof"]["validator_set"]
            .as_str()
            .unwrap()
            .starts_with("proven from the genesis"),
        "{answer}"
    );
    // The same network told by another genesis (other validators) is refused.
    let other = tempfile::tempdir().unwrap();
    let other_net = other.path().join("testnet");
    let init = Command::new(PIAZZA)
        .args(["testnet", "init", "--models", ""])
        .args(["--validators", "4", "--dir"])
        .arg(&other_net)
        .output()
        .unwrap();
    assert!(init.status.success());
    let refused = Command::new(PIAZZA)
        .args(["balance", "--verify", "--node", &net.nodes[1].url])
        .arg("--genesis")
        .arg(other_net.join("genesis.json"))
        .arg(recipient.to_string())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not in the height's validator set"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// How long the provider may take to load its model, measure its speed and register.
const REGISTER_WAIT: Duration = Duration::from_secs(120);

#[test]
fn a_job_sent_to_one_node_is_served_by_a_provider_on_another_and_settles_alike_everywhere() {
    let net = Network::init_with_models(VALIDATORS, "all-minilm-l6-v2");
    let all: Vec<usize> = (0..VALIDATORS).collect();
    net.agree_at(&all, 1, "four validators finalize height 1");
    let keys = net.dir.join("keys");
    // The provider talks to node 1 only.
    let _provider = common::Daemon(
        Command::new(PIAZZA)
            .args(["provider", "run", "--from", "provider", "--models"])
            .args([
                "all-minilm-l6-v2",
                "--poll-ms",
                "50",
                "--node",
                &net.nodes[1].url,
            ])
            .env("PIAZZA_KEYSTORE", &keys)
            .env_remove("PIAZZA_PASSWORD")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let provider = piazza_keystore::Keystore::open(&keys)
        .unwrap()
        .info("provider")
        .unwrap()
        .address;
    let registered = || {
        let found = net
            .runtime
            .block_on(net.nodes[0].client.provider(&provider));
        matches!(found, Ok(Some(_)))
    };
    common::wait_until("the provider registers", REGISTER_WAIT, registered);

    // The job goes to node 0.
    let output = Command::new(PIAZZA)
        .args([
            "job",
            "submit",
            "--model",
            "all-minilm-l6-v2",
            "--from",
            "dev",
        ])
        .args([
            "--input",
            "Piazza is the square beside the tower.",
            "--max-price",
            "0.01",
        ])
        .args(["--wait", "--json", "--node", &net.nodes[0].url])
        .env("PIAZZA_KEYSTORE", &keys)
        .env_remove("PIAZZA_PASSWORD")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "job submit: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(out["job"]["status"], "settled", "{out}");
    let id = out["job"]["id"].as_u64().unwrap();
    assert_eq!(out["job"]["receipt"]["provider"], provider.to_string());

    // Every node holds the same settled job and receipt.
    let receipt_on = |i: usize| {
        net.runtime
            .block_on(net.nodes[i].client.job(id))
            .ok()
            .flatten()
            .and_then(|job| job.receipt)
            .map(|receipt| serde_json::to_value(receipt).unwrap())
    };
    common::wait_until("every node records the receipt", STEP_WAIT, || {
        all.iter().all(|&i| receipt_on(i).is_some())
    });
    for i in &all {
        assert_eq!(
            receipt_on(*i).as_ref(),
            Some(&out["job"]["receipt"]),
            "node {i}"
        );
    }
}

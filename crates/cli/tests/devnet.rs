//! The `piazza` binary as a user runs it: a real devnet process, the CLI against it, and a crash.

use piazza_client::Client;
use piazza_keystore::Keystore;
use piazza_ledger::bank;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Address, Amount, Hash};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn the_cli_drives_a_devnet_and_the_chain_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet(dir.path());
    // `ready` means the in-process provider and auditor are registered: a job can run now.
    let status = cli(&devnet, dir.path(), &["status"]);
    assert_eq!(status["ready_for_jobs"], true, "{status}");
    let provider = cli(
        &devnet,
        dir.path(),
        &["provider", "status", "--from", "provider"],
    );
    assert_eq!(provider["provider"]["models"][0], "all-minilm-l6-v2");
    cli(
        &devnet,
        dir.path(),
        &["auditor", "status", "--from", "auditor"],
    );
    let keys = Command::new(PIAZZA)
        .args(["keys", "new", "bob"])
        .env("PIAZZA_KEYSTORE", dir.path().join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .output()
        .unwrap();
    assert!(keys.status.success());
    let bob = Keystore::open(&dir.path().join("keys"))
        .unwrap()
        .info("bob")
        .unwrap()
        .address
        .to_string();

    let receipt = cli(
        &devnet,
        dir.path(),
        &[
            "send", "--from", "dev", "--to", "bob", "--amount", "5.5", "--wait",
        ],
    );
    assert_eq!(receipt["status"], "ok");
    let balance = cli(&devnet, dir.path(), &["balance", "bob", "--verify"]);
    assert_eq!(
        balance["account"]["balance"],
        Amount::new(5_500_000_000).base_units().to_string()
    );
    assert_eq!(balance["account"]["address"], bob);
    assert!(balance["verified_against_block_of"].is_string());

    let tx_hash = receipt["tx_hash"].as_str().unwrap();
    let tx = cli(&devnet, dir.path(), &["tx", tx_hash]);
    assert_eq!(tx["transaction"]["messages"][0]["to"], bob);
    // A hash this node never acknowledged is said to be unknown, not merely "not found".
    let unknown = std::process::Command::new(common::PIAZZA)
        .args(["tx", &"ab".repeat(32), "--node", &devnet.url])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("never acknowledged"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let block = cli(
        &devnet,
        dir.path(),
        &["block", receipt["height"].to_string().as_str()],
    );
    assert!(block["tx_hashes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == tx_hash));

    let staked = cli(
        &devnet,
        dir.path(),
        &[
            "stake", "--from", "dev", "--role", "provider", "--amount", "250", "--wait",
        ],
    );
    assert_eq!(staked["events"][0]["kind"], "staking.bond");
    let balance = cli(&devnet, dir.path(), &["balance", "dev"]);
    assert_eq!(
        balance["stake"]["bonds"]["provider"],
        Amount::pza(250).base_units().to_string()
    );
    let unstaked = cli(
        &devnet,
        dir.path(),
        &[
            "unstake", "--from", "dev", "--role", "provider", "--amount", "250", "--wait",
        ],
    );
    assert_eq!(unstaked["receipt"]["events"][0]["kind"], "staking.unbond");
    // `--wait` returned once the unbonding delay ended: the tokens are back, none pending.
    let released: u64 = unstaked["released_height"].as_u64().unwrap();
    let balance = cli(&devnet, dir.path(), &["balance", "dev"]);
    assert!(balance["account"]["height"].as_u64().unwrap() >= released);
    assert_eq!(balance["stake"]["unbonding"], "0");

    // A refused transfer is a clear error on stderr and a failing exit code.
    let refused = Command::new(PIAZZA)
        .args([
            "send",
            "--from",
            "bob",
            "--to",
            "dev",
            "--amount",
            "1000",
            "--node",
            &devnet.url,
        ])
        .env("PIAZZA_KEYSTORE", dir.path().join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("insufficient_funds"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let before = cli(&devnet, dir.path(), &["status"]);
    drop(devnet);
    let devnet = start_devnet(dir.path());
    let after = cli(&devnet, dir.path(), &["status"]);
    assert_eq!(after["chain_id"], before["chain_id"]);
    assert!(after["height"].as_u64() >= before["height"].as_u64());
    let balance = cli(&devnet, dir.path(), &["balance", "bob", "--verify"]);
    assert_eq!(
        balance["account"]["balance"],
        Amount::new(5_500_000_000).base_units().to_string()
    );
}

#[test]
fn sigkill_during_transfers_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut devnet = start_devnet(dir.path());
    let dev = Keystore::open(&dir.path().join("keys"))
        .unwrap()
        .unlock("dev", "")
        .unwrap();
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
                let tx = Transaction {
                    chain_id: chain_id.clone(),
                    sender: dev.public_key(),
                    nonce,
                    max_fee: Amount::pza(1),
                    messages: vec![Message::Bank(bank::Msg::Send {
                        to: recipient,
                        amount: Amount::new(nonce as u128 + 1),
                    })],
                }
                .sign(&dev);
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
                if !reported.iter().any(|(h, _)| h == hash)
                    && client.receipt(hash).await.unwrap().is_some()
                {
                    reported.push((*hash, *nonce));
                }
            }
        }
    });
    devnet.child.kill().unwrap(); // SIGKILL
    devnet.child.wait().unwrap();
    assert!(
        reported.len() >= 10,
        "only {} transfers were reported committed before the kill",
        reported.len()
    );

    let devnet = start_devnet(dir.path());
    let client = Client::new(&devnet.url);
    runtime.block_on(async {
        for (hash, _) in &reported {
            let receipt = client
                .receipt(hash)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("reported transfer {hash} was lost"));
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
        assert_eq!(
            client.account(&recipient).await.unwrap().balance,
            expected.to_string()
        );
        assert_eq!(
            client
                .account(&dev.public_key().address())
                .await
                .unwrap()
                .nonce,
            committed
        );
    });
    let head = runtime.block_on(client.status()).unwrap();
    drop(devnet);

    // Replay the stored blocks into a fresh store: the same state root at the same height.
    let stored = piazza_store::Store::open(&dir.path().join("chain.redb")).unwrap();
    let genesis: piazza_ledger::genesis::Genesis =
        serde_json::from_slice(&stored.genesis().unwrap().unwrap()).unwrap();
    let replay_store = piazza_store::Store::open(&dir.path().join("replay.redb")).unwrap();
    let replica = piazza_node::App::open(
        replay_store,
        Some(&genesis),
        piazza_primitives::SecretKey::from_seed([1; 32]),
        Default::default(),
    )
    .unwrap();
    let stored_head = stored.head().unwrap().unwrap();
    assert!(stored_head.height >= head.height);
    for height in 1..=stored_head.height {
        replica
            .commit(stored.block(height).unwrap().unwrap())
            .unwrap();
    }
    assert_eq!(replica.head().unwrap(), stored_head);
    assert_eq!(
        replica
            .store()
            .state_root(head.height)
            .unwrap()
            .unwrap()
            .to_hex(),
        head.state_root
    );
}

#[test]
fn an_embedding_job_from_the_cli_settles_with_the_exact_fee_split_and_the_engines_output() {
    let dir = tempfile::tempdir().unwrap();
    // Without the devnet's auditor the pool keeps its share (an attesting auditor would get it;
    // that path is in tests/verify.rs).
    let devnet = start_devnet_with(
        dir.path(),
        &["--no-auditor", "--models", "all-minilm-l6-v2"],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let keystore = Keystore::open(&dir.path().join("keys")).unwrap();
    let address = |name: &str| keystore.info(name).unwrap().address.to_string();
    let (dev, provider, owner) = (address("dev"), address("provider"), address("models"));
    let pool = piazza_ledger::compute::auditor_pool().to_string();
    let treasury = piazza_ledger::bank::treasury().to_string();
    // Let the in-process provider register first.
    let started = Instant::now();
    while runtime
        .block_on(client.provider(&provider.parse().unwrap()))
        .unwrap()
        .is_none()
    {
        assert!(
            started.elapsed() < WAIT,
            "the devnet's provider did not register"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before: Vec<u128> = [&provider, &owner, &pool]
        .iter()
        .map(|a| balance_of(&client, &runtime, a))
        .collect();

    let text = "Piazza is the square beside the tower.";
    let out = cli(
        &devnet,
        dir.path(),
        &[
            "job",
            "submit",
            "--model",
            "all-minilm-l6-v2",
            "--input",
            text,
            "--max-price",
            "0.01",
            "--wait",
        ],
    );
    let job = &out["job"];
    assert_eq!(job["status"], "settled");
    let receipt = &job["receipt"];
    assert_eq!(receipt["provider"], provider.as_str());

    // The output is the engine's, bit for bit.
    let embedder =
        piazza_engine::Embedder::load(piazza_engine::models_dir().join("minilm")).unwrap();
    let expected = embedder.embed(&[text], 1).unwrap().remove(0);
    let output: Vec<f32> = out["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(output, expected);
    let raw = hex_decode(job["result"]["output"].as_str().unwrap());
    assert_eq!(
        raw,
        expected
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
    );
    let tokens = embedder.tokenize(&[text]).unwrap()[0].len() as u128;
    assert_eq!(
        job["result"]["work_units"].as_u64().unwrap() as u128,
        tokens
    );

    // The settlement event splits the price exactly; everything adds up to the escrow.
    let settled_height = receipt["height"].as_u64().unwrap();
    let escrow: u128 = job["max_price"].as_str().unwrap().parse().unwrap();
    let price: u128 = receipt["price"].as_str().unwrap().parse().unwrap();
    let refund: u128 = receipt["refund"].as_str().unwrap().parse().unwrap();
    assert_eq!(price, tokens * 1_000, "units × the provider's price");
    let block = runtime
        .block_on(client.raw_block(settled_height))
        .unwrap()
        .unwrap();
    assert_eq!(block.header.height, settled_height);
    // Genesis split: 15% model owner, 10% auditor pool, 5% treasury (rounded down), the rest
    // to the provider.
    let (to_owner, to_pool, to_treasury) = (
        price * 1_500 / 10_000,
        price * 1_000 / 10_000,
        price * 500 / 10_000,
    );
    let to_provider = price - to_owner - to_pool - to_treasury;
    assert_eq!(
        to_provider + to_owner + to_pool + to_treasury + refund,
        escrow,
        "provider + owner + pool + treasury + refund = escrow"
    );
    // The provider's balance moved by its share minus the fee of its result transaction.
    let after: Vec<u128> = [&provider, &owner, &pool]
        .iter()
        .map(|a| balance_of(&client, &runtime, a))
        .collect();
    assert_eq!(after[1] - before[1], to_owner);
    assert_eq!(after[2] - before[2], to_pool);
    let post_fee: u128 = {
        let tx_hash = runtime
            .block_on(client.block(job["result"]["posted_height"].as_u64().unwrap()))
            .unwrap()
            .unwrap()
            .tx_hashes
            .into_iter()
            .find(|h| {
                runtime
                    .block_on(client.transaction(&h.parse().unwrap()))
                    .unwrap()
                    .unwrap()
                    .sender
                    == provider
            })
            .unwrap();
        runtime
            .block_on(client.receipt(&tx_hash.parse().unwrap()))
            .unwrap()
            .unwrap()
            .fee_paid
            .parse()
            .unwrap()
    };
    assert_eq!(after[0] + post_fee - before[0], to_provider);
    let _ = (dev, treasury);

    // Refusals: clear errors, no escrow taken.
    let escrow_before = balance_of(
        &client,
        &runtime,
        &piazza_ledger::compute::escrow().to_string(),
    );
    for (args, name) in [
        (vec!["--model", "no-such-model"], "no model `no-such-model`"),
        (
            vec!["--model", "all-minilm-l6-v2", "--max-price", "0.000000001"],
            "escrow_too_low",
        ),
    ] {
        let output = Command::new(PIAZZA)
            .args(["job", "submit", "--input", "x", "--node", &devnet.url])
            .args(&args)
            .env("PIAZZA_KEYSTORE", dir.path().join("keys"))
            .env_remove("PIAZZA_PASSWORD")
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(name),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let big = "x".repeat(piazza_ledger::compute::JOB_INPUT_BYTES_MAX + 1);
    let output = Command::new(PIAZZA)
        .args([
            "job",
            "submit",
            "--model",
            "all-minilm-l6-v2",
            "--input",
            &big,
            "--node",
            &devnet.url,
        ])
        .env("PIAZZA_KEYSTORE", dir.path().join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .output()
        .unwrap();
    // Refused before signing, citing the input limit (not the transaction's).
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!(
            "at most {} bytes",
            piazza_ledger::compute::JOB_INPUT_BYTES_MAX
        )),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        balance_of(
            &client,
            &runtime,
            &piazza_ledger::compute::escrow().to_string()
        ),
        escrow_before
    );
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_provider_that_dies_holding_a_job_is_penalised_and_the_job_completes_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(
        dir.path(),
        &["--no-provider", "--models", "all-minilm-l6-v2"],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let keystore_dir = dir.path().join("keys");
    let keystore = Keystore::open(&keystore_dir).unwrap();
    let provider_a = keystore.info("provider").unwrap().address.to_string();
    // A second provider, funded by dev.
    let keys = Command::new(PIAZZA)
        .args(["keys", "new", "second"])
        .env("PIAZZA_KEYSTORE", &keystore_dir)
        .env_remove("PIAZZA_PASSWORD")
        .output()
        .unwrap();
    assert!(keys.status.success());
    let provider_b = keystore.info("second").unwrap().address.to_string();
    cli(
        &devnet,
        dir.path(),
        &[
            "send", "--from", "dev", "--to", "second", "--amount", "5000", "--wait",
        ],
    );

    let run_provider = |name: &str, journal: &Path| {
        Command::new(PIAZZA)
            .args([
                "provider",
                "run",
                "--from",
                name,
                "--node",
                &devnet.url,
                "--poll-ms",
                "50",
                "--journal",
            ])
            .arg(journal)
            .env("PIAZZA_KEYSTORE", &keystore_dir)
            .env_remove("PIAZZA_PASSWORD")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Provider A starts, registers, and dies (SIGKILL) before it can serve anything.
    let mut a = run_provider("provider", &dir.path().join("journal-a"));
    let started = Instant::now();
    while runtime
        .block_on(client.provider(&provider_a.parse().unwrap()))
        .unwrap()
        .is_none()
    {
        assert!(started.elapsed() < WAIT, "provider A did not register");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.kill().unwrap();
    a.wait().unwrap();
    let stake_before: u128 = runtime
        .block_on(client.provider(&provider_a.parse().unwrap()))
        .unwrap()
        .unwrap()
        .stake
        .parse()
        .unwrap();

    // The job can only go to A.
    let submitted = cli(
        &devnet,
        dir.path(),
        &[
            "job",
            "submit",
            "--model",
            "all-minilm-l6-v2",
            "--input",
            "who serves me?",
        ],
    );
    let id = submitted["job"].as_u64().unwrap();
    let started = Instant::now();
    loop {
        let job = runtime.block_on(client.job(id)).unwrap().unwrap();
        if job.status == piazza_api::JobState::Assigned {
            assert_eq!(job.provider.as_deref(), Some(provider_a.as_str()));
            break;
        }
        assert!(started.elapsed() < WAIT);
        std::thread::sleep(Duration::from_millis(50));
    }
    // B comes up; after A's deadline the job is reassigned to B and completes.
    let mut b = run_provider("second", &dir.path().join("journal-b"));
    let job = runtime
        .block_on(client.wait_for_job(id, Duration::from_secs(60)))
        .unwrap();
    let _ = b.kill();
    let _ = b.wait();
    assert_eq!(job.status, piazza_api::JobState::Settled);
    assert_eq!(job.missed, vec![provider_a.clone()]);
    assert_eq!(job.receipt.as_ref().unwrap().provider, provider_b);
    let info = runtime
        .block_on(client.provider(&provider_a.parse().unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(info.deadlines_missed, 1);
    let penalty = piazza_ledger::compute::Params::default()
        .missed_deadline_penalty
        .base_units();
    assert_eq!(info.stake.parse::<u128>().unwrap(), stake_before - penalty);
}

#[test]
fn a_generation_job_from_the_cli_settles_with_the_engines_greedy_text() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(dir.path(), &["--models", "smollm2-135m-instruct"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let provider = Keystore::open(&dir.path().join("keys"))
        .unwrap()
        .info("provider")
        .unwrap()
        .address;
    let started = Instant::now();
    while runtime
        .block_on(client.provider(&provider))
        .unwrap()
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the devnet's provider did not register"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let prompt = "The capital of France is";
    let out = cli(
        &devnet,
        dir.path(),
        &[
            "job",
            "submit",
            "--model",
            "smollm2-135m-instruct",
            "--input",
            prompt,
            "--max-tokens",
            "8",
            "--wait",
        ],
    );
    let job = &out["job"];
    assert_eq!(job["status"], "settled");

    let generator = piazza_llm::Generator::load(piazza_llm::default_model_path()).unwrap();
    let expected = generator
        .generate(
            &generator.tokenize(prompt).unwrap(),
            &piazza_llm::GenerateParams::greedy(8),
            1,
            |_| {},
        )
        .unwrap();
    assert_eq!(out["output"], expected.text.as_str());
    assert_eq!(
        job["result"]["trace_root"],
        piazza_primitives::Hash(expected.trace_root()).to_hex()
    );
    assert_eq!(
        job["result"]["work_units"].as_u64().unwrap(),
        expected.ids.len() as u64
    );
    let escrow: u128 = job["max_price"].as_str().unwrap().parse().unwrap();
    let price: u128 = job["receipt"]["price"].as_str().unwrap().parse().unwrap();
    let refund: u128 = job["receipt"]["refund"].as_str().unwrap().parse().unwrap();
    assert_eq!(price, expected.ids.len() as u128 * 1_000);
    assert_eq!(price + refund, escrow);
}

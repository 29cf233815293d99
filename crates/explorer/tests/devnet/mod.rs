//! A devnet node in process with activity made of real signed transactions: a transfer, a
//! provider, two jobs with posted results (one settles), and a challenge the provider never
//! answers, so it loses the dispute by timeout and is slashed.

#![allow(dead_code)]

use piazza_client::Client;
use piazza_ledger::compute::{self, JobParams, Offer};
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::models::{ModelKind, ModelRecord};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::Message;
use piazza_ledger::verify;
use piazza_node::{NodeConfig, NodeHandle};
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use std::time::{Duration, Instant};

pub const CHAIN_ID: &str = "piazza-explorer-test";
pub const MODEL: &str = "minilm-explorer";
/// Block interval of the test devnet.
pub const BLOCK_INTERVAL_MS: u64 = 100;
/// The validator's key seed.
const VALIDATOR_SEED: u8 = 42;
/// Longest wait for any one step of the scenario.
const STEP_WAIT_MS: u64 = 20_000;
/// The recipient of the transfer (an account with no key).
pub const RECIPIENT: Address = Address([9; 20]);
pub const TRANSFER_AMOUNT: u128 = 1_234_000;

pub struct Devnet {
    pub node: NodeHandle,
    pub client: Client,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub user: SecretKey,
    pub provider: SecretKey,
    pub challenger: SecretKey,
    /// The transfer's transaction hash and block height.
    pub transfer: (Hash, u64),
    /// A job that settled.
    pub settled_job: u64,
    /// A job whose provider lost the dispute (silent in round 0) and was slashed.
    pub failed_job: u64,
    _dir: tempfile::TempDir,
}

pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

pub fn genesis(validator: &SecretKey, users: &[&SecretKey]) -> Genesis {
    let validator = validator.public_key().address();
    let mut accounts = vec![GenesisAccount {
        address: validator,
        balance: Amount::pza(10_000),
    }];
    accounts.extend(users.iter().map(|k| GenesisAccount {
        address: k.public_key().address(),
        balance: Amount::pza(1_000),
    }));
    let owner = users[0].public_key().address();
    Genesis {
        chain_id: CHAIN_ID.into(),
        genesis_time_ms: 1_700_000_000_000,
        fees: FeeParams::default(),
        staking: staking::Params {
            unbonding_delay_blocks: 3,
            min_bond: [
                Amount::pza(1_000),
                Amount::pza(100),
                Amount::pza(100),
                Amount::pza(100),
            ],
        },
        accounts,
        bonds: vec![GenesisBond {
            address: validator,
            role: Role::Validator,
            amount: Amount::pza(1_000),
        }],
        models: vec![ModelRecord {
            name: MODEL.into(),
            kind: ModelKind::Embedding,
            architecture: "bert".into(),
            config_hash: Hash::of("explorer-test/config", &[]),
            weights_commitment: Hash::of("explorer-test/weights", &[]),
            tokenizer_hash: Hash::of("explorer-test/tokenizer", &[]),
            owner,
            license: "apache-2.0".into(),
            price_floor: Amount::new(1_000),
            numeric: Default::default(),
            files: None,
            lineage: Default::default(),
        }],
        compute: compute::Params {
            // Long enough for the challenge to land inside the window.
            challenge_window_blocks: 30,
            ..Default::default()
        },
        verify: verify::Params {
            audit_rate_bps: 0,
            new_provider_audit_rate_bps: 0,
            round_blocks: 5,
            ..Default::default()
        },
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    }
}

async fn wait<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_millis(STEP_WAIT_MS),
            "{what}: not within {STEP_WAIT_MS} ms"
        );
        tokio::time::sleep(Duration::from_millis(BLOCK_INTERVAL_MS / 2)).await;
    }
}

/// Sends one message and waits for its successful receipt.
async fn send(client: &Client, key: &SecretKey, message: Message) -> piazza_api::ReceiptInfo {
    let hash = client.send_message(key, message).await.unwrap();
    let receipt = client
        .wait_for_receipt(&hash, Duration::from_millis(STEP_WAIT_MS))
        .await
        .unwrap();
    assert!(receipt.error.is_none(), "{:?}", receipt.error);
    receipt
}

async fn submit_job(client: &Client, user: &SecretKey, input: &[u8]) -> u64 {
    let job = compute::Msg::SubmitJob {
        model: MODEL.into(),
        input: input.to_vec(),
        params: JobParams::default(),
        max_units: 64,
        max_price: Amount::pza(1),
    };
    let (id, _) = client
        .submit_job(user, job, Duration::from_millis(STEP_WAIT_MS))
        .await
        .unwrap();
    id
}

async fn post_result(client: &Client, provider: &SecretKey, job: u64) {
    let address = provider.public_key().address();
    wait(&format!("job {job} assigned"), async || {
        let jobs = client.provider_jobs(&address).await.unwrap();
        jobs.contains(&job).then_some(())
    })
    .await;
    let output = format!("embedding of job {job}").into_bytes();
    let message = compute::Msg::PostResult {
        job,
        output_hash: compute::output_hash(&output),
        output,
        trace_root: Hash::of("explorer-test/trace", &[&job.to_le_bytes()]),
        work_units: 8,
        input_units: 8,
    };
    send(client, provider, Message::Compute(message)).await;
}

/// A node on 127.0.0.1 with a fresh store, blocks every `block_interval_ms`, the first user
/// owning the genesis model; each user holds 1,000 PZA.
pub async fn node(
    block_interval_ms: u64,
    users: &[&SecretKey],
) -> (NodeHandle, String, tempfile::TempDir) {
    let validator = key(VALIDATOR_SEED);
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.block_interval = Duration::from_millis(block_interval_ms);
    let genesis = genesis(&validator, users);
    let node = piazza_node::start(config, Some(genesis), validator)
        .await
        .unwrap();
    let url = format!("http://{}", node.rpc_addr);
    (node, url, dir)
}

pub async fn start() -> Devnet {
    let (user, provider, challenger) = (key(1), key(2), key(3));
    let (node, url, dir) = node(BLOCK_INTERVAL_MS, &[&user, &provider, &challenger]).await;
    let client = Client::new(&url);

    let receipt = send(
        &client,
        &user,
        Message::Bank(piazza_ledger::bank::Msg::Send {
            to: RECIPIENT,
            amount: Amount::new(TRANSFER_AMOUNT),
        }),
    )
    .await;
    let transfer = (receipt.tx_hash.parse().unwrap(), receipt.height);

    let offer = Offer {
        models: vec![MODEL.into()],
        price_per_unit: Amount::new(2_000),
        capacity: 4,
        endpoint: "http://127.0.0.1:1".into(),
        units_per_block: 1_000,
    };
    let register = compute::Msg::RegisterProvider {
        offer,
        stake: Amount::pza(200),
    };
    send(&client, &provider, Message::Compute(register)).await;

    let settled_job = submit_job(&client, &user, b"a settled job").await;
    let failed_job = submit_job(&client, &user, b"a disputed job").await;
    post_result(&client, &provider, settled_job).await;
    post_result(&client, &provider, failed_job).await;
    let challenge = verify::Msg::Challenge {
        job: failed_job,
        trace_root: Hash::of("explorer-test/other-trace", &[]),
        step_count: 4,
        ids: Hash::of("explorer-test/ids", &[]),
    };
    send(&client, &challenger, Message::Verify(challenge)).await;
    for (job, status) in [(settled_job, "settled"), (failed_job, "failed")] {
        wait(&format!("job {job} {status}"), async || {
            let info = client.job(job).await.unwrap()?;
            (info.status.name() == status).then_some(())
        })
        .await;
    }
    Devnet {
        node,
        client,
        url,
        user,
        provider,
        challenger,
        transfer,
        settled_job,
        failed_job,
        _dir: dir,
    }
}

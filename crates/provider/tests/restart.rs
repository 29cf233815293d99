//! A provider restarted at any point neither loses a job nor posts a second result.

use piazza_client::Client;
use piazza_codec::Encode;
use piazza_ledger::compute::{self, JobParams};
use piazza_ledger::genesis::Genesis;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Amount, SecretKey};
use piazza_provider::{journal::Journal, models, ProviderConfig};
use std::time::Duration;

mod harness;

const WAIT: Duration = Duration::from_secs(60);

struct Net {
    node: piazza_node::NodeHandle,
    url: String,
    client: Client,
    provider: SecretKey,
    user: SecretKey,
    dir: tempfile::TempDir,
}

async fn start() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let validator = SecretKey::from_seed([31; 32]);
    let provider = SecretKey::from_seed([32; 32]);
    let user = SecretKey::from_seed([33; 32]);
    let genesis = Genesis {
        compute: compute::Params {
            challenge_window_blocks: 0,
            job_deadline_blocks: 1_000,
            ..compute::Params::default()
        },
        ..harness::minilm_genesis("provider-test", &validator, &[&provider, &user])
    };
    let mut config =
        piazza_node::NodeConfig::new(dir.path().join("node"), "127.0.0.1:0".parse().unwrap());
    config.block_interval = Duration::from_millis(50);
    let node = piazza_node::start(config, Some(genesis), validator)
        .await
        .unwrap();
    let url = format!("http://{}", node.rpc_addr);
    Net {
        client: Client::new(&url),
        url,
        node,
        provider,
        user,
        dir,
    }
}

fn provider_config(net: &Net) -> ProviderConfig {
    ProviderConfig {
        node_url: net.url.clone(),
        key: net.provider.clone(),
        models_dir: piazza_engine::models_dir(),
        serve: vec![models::MINILM.into()],
        price_per_unit: Amount::new(1_000),
        capacity: 4,
        stake: Amount::pza(1_000),
        endpoint: String::new(),
        concurrency: 2,
        threads: 1,
        journal_dir: net.dir.path().join("journal"),
        poll_interval: Duration::from_millis(20),
        fault: Default::default(),
    }
}

async fn submit(net: &Net, text: &str) -> u64 {
    let msg = compute::Msg::SubmitJob {
        model: models::MINILM.into(),
        input: text.as_bytes().to_vec(),
        params: JobParams::default(),
        max_units: 256,
        max_price: Amount::new(256_000),
    };
    net.client.submit_job(&net.user, msg, WAIT).await.unwrap().0
}

async fn wait_assigned(net: &Net, id: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while net.client.job(id).await.unwrap().unwrap().status != piazza_api::JobState::Assigned {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_result_is_resent_byte_for_byte_after_a_restart() {
    let net = start().await;
    let config = provider_config(&net);
    let client = &net.client;
    let embedder =
        piazza_engine::Embedder::load(piazza_engine::models_dir().join("minilm")).unwrap();
    let loaded = models::LoadedModel::Embedding(std::sync::Arc::new(embedder));
    let served = std::collections::BTreeMap::from([(models::MINILM.to_string(), loaded.clone())]);
    // Register (as the daemon would) without running it, so the job waits for us.
    piazza_provider::ensure_registered(client, &config, &served)
        .await
        .unwrap();
    let id = submit(&net, "journaled before the crash").await;
    wait_assigned(&net, id).await;

    // The process "crashed" right after journaling its signed result and before sending it.
    let execution = models::execute(
        &loaded,
        b"journaled before the crash",
        &Default::default(),
        1,
    )
    .unwrap();
    let nonce = client.account(&config.address()).await.unwrap().nonce;
    let message = compute::Msg::PostResult {
        job: id,
        output: execution.output.clone(),
        output_hash: compute::output_hash(&execution.output),
        trace_root: execution.trace_root,
        work_units: execution.work_units,
        // Stated, recorded, not billed: nothing here depends on it.
        input_units: 0,
    };
    let tx = Transaction {
        chain_id: "provider-test".into(),
        sender: config.key.public_key(),
        nonce,
        max_fee: Amount::pza(1),
        messages: vec![Message::Compute(message)],
    }
    .sign(&config.key);
    Journal::open(&config.journal_dir)
        .unwrap()
        .record(id, &tx.to_bytes())
        .unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(piazza_provider::run(config.clone(), stopped));
    let job = client.wait_for_job(id, WAIT).await.unwrap();
    assert_eq!(job.status, piazza_api::JobState::Settled);
    // The chain holds exactly the journaled transaction: same hash, one result.
    let receipt = client
        .receipt(&tx.hash())
        .await
        .unwrap()
        .expect("the journaled transaction was committed");
    assert_eq!(receipt.status, "ok");
    assert_eq!(
        job.result.unwrap().trace_root,
        execution.trace_root.to_hex()
    );
    assert_eq!(
        client.account(&config.address()).await.unwrap().nonce,
        nonce + 1,
        "no second result was sent"
    );

    // Another job after a clean restart: served once, nothing lost.
    stop.send(true).unwrap();
    daemon.await.unwrap().unwrap();
    let second = submit(&net, "after a restart").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(piazza_provider::run(config.clone(), stopped));
    let job = client.wait_for_job(second, WAIT).await.unwrap();
    assert_eq!(job.status, piazza_api::JobState::Settled);
    // Once the daemon has stopped (nothing of it is in flight), the chain holds exactly one
    // more transaction from it: the second job's result.
    stop.send(true).unwrap();
    daemon.await.unwrap().unwrap();
    let receipt_height = client
        .job(second)
        .await
        .unwrap()
        .unwrap()
        .receipt
        .unwrap()
        .height;
    let head = client.status().await.unwrap().height;
    assert!(head >= receipt_height);
    assert_eq!(
        client.account(&config.address()).await.unwrap().nonce,
        nonce + 2
    );
    net.node.shutdown().await;
}

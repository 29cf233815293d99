//! Sessions end to end on a real in-process node and provider daemon: open on chain, stream a
//! SmolLM2 chat from the provider's endpoint, check every receipt, pay, and see the
//! provider's commit land and pay out after its window; a client that stops paying is
//! refused at its next request.

use piazza_client::session::{terms, OpenSession, SessionClient};
use piazza_client::Client;
use piazza_ledger::compute;
use piazza_ledger::genesis::Genesis;
use piazza_ledger::job::JobParams;
use piazza_primitives::{Amount, SecretKey};
use piazza_provider::{models, ProviderConfig};
use piazza_session::ClientChannel;
use std::time::{Duration, Instant};

mod harness;

const WAIT: Duration = Duration::from_secs(120);
const PRICE: Amount = Amount::new(1_000);

/// A port free a moment ago on 127.0.0.1 (the provider registers its endpoint before binding).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it gives a value, at most [`WAIT`].
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_streams_pays_and_settles_on_chain() {
    run_session(0).await;
}

/// Every committed receipt is drawn for audit: the daemon reveals each one in time and is
/// not slashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audited_receipts_are_revealed_in_time() {
    run_session(10_000).await;
}

async fn run_session(audit_rate_bps: u16) {
    let dir = tempfile::tempdir().unwrap();
    let validator = SecretKey::from_seed([41; 32]);
    let provider = SecretKey::from_seed([42; 32]);
    let user = SecretKey::from_seed([43; 32]);
    let base = harness::minilm_genesis("session-test", &validator, &[&provider, &user]);
    let smollm2 = models::smollm2_record(
        &piazza_engine::models_dir(),
        validator.public_key().address(),
    )
    .unwrap();
    let genesis = Genesis {
        models: vec![smollm2],
        compute: compute::Params {
            job_deadline_blocks: 1_000,
            ..compute::Params::default()
        },
        verify: piazza_ledger::verify::Params {
            audit_rate_bps,
            ..piazza_ledger::verify::Params::default()
        },
        ..base
    };
    let mut node_config =
        piazza_node::NodeConfig::new(dir.path().join("node"), "127.0.0.1:0".parse().unwrap());
    node_config.block_interval = Duration::from_millis(50);
    let node = piazza_node::start(node_config, Some(genesis), validator)
        .await
        .unwrap();
    let url = format!("http://{}", node.rpc_addr);
    let client = Client::new(&url);

    let config = ProviderConfig {
        node_url: url.clone(),
        key: provider.clone(),
        models_dir: piazza_engine::models_dir(),
        serve: vec![models::SMOLLM2.into()],
        price_per_unit: PRICE,
        capacity: 4,
        stake: Amount::pza(1_000),
        endpoint: format!("http://127.0.0.1:{}", free_port()),
        concurrency: 1,
        threads: 2,
        journal_dir: dir.path().join("journal"),
        poll_interval: Duration::from_millis(50),
        fault: Default::default(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(piazza_provider::run(config.clone(), stopped));
    let me = provider.public_key().address();
    eventually("the provider registers", || async {
        client.provider(&me).await.unwrap()
    })
    .await;

    let id = client
        .open_session(
            &user,
            OpenSession {
                model: models::SMOLLM2.into(),
                deposit: Amount::pza(1),
                max_price_per_unit: PRICE,
                expiry_blocks: 10_000,
                authorised: None,
            },
        )
        .await
        .unwrap();
    let info = client.wait_for_session(id, WAIT).await.unwrap();
    let endpoint = info.endpoint.clone().expect("the provider's endpoint");
    assert_eq!(endpoint, config.endpoint);
    let session_terms = terms(&info).unwrap().unwrap();
    assert_eq!(session_terms.provider, me);
    let mut session = SessionClient::new(
        &endpoint,
        ClientChannel::new(session_terms.clone(), user.clone()).unwrap(),
    );
    // The endpoint may still be binding right after registration.
    eventually("the endpoint answers", || async {
        session.view().await.ok()
    })
    .await;

    let params = JobParams {
        max_tokens: 32,
        chat: true,
        ..JobParams::default()
    };
    let started = Instant::now();
    let mut first_delta = None;
    let answer = session
        .request(b"What is a river?".to_vec(), params.clone(), 32, |_| {
            first_delta.get_or_insert_with(|| started.elapsed());
        })
        .await
        .unwrap();
    println!(
        "time to first delta {:?}, total {:?}, {} units",
        first_delta.unwrap(),
        started.elapsed(),
        answer.receipt.receipt.units
    );
    let second = session
        .request(b"And a lake?".to_vec(), params.clone(), 32, |_| {})
        .await
        .unwrap();
    let paid = second.voucher.voucher.total;
    assert_eq!(
        paid,
        answer
            .receipt
            .receipt
            .price
            .checked_add(second.receipt.receipt.price)
            .unwrap()
    );
    let view = session.pay().await.unwrap().unwrap();
    assert_eq!((view.channel.paid_seq, view.channel.paid), (2, paid));

    // The provider commits both receipts with the voucher, and the voucher pays out after
    // the commit's window.
    let committed = eventually("the commit lands", || async {
        let info = client.session(id).await.unwrap().unwrap();
        (info.committed_seq == 2).then_some(info)
    })
    .await;
    assert_eq!(committed.committed_total, paid.base_units().to_string());
    assert_eq!(
        committed.committed_units,
        answer.receipt.receipt.units + second.receipt.receipt.units
    );
    let stake = client.provider(&me).await.unwrap().unwrap().stake;
    if audit_rate_bps == 10_000 {
        // The receipts may be in one commit or two (request 2 carried the voucher for 1).
        let commits = eventually("both receipts are revealed", || async {
            let commits = client.session_commits(id, None).await.unwrap().unwrap();
            let revealed: usize = commits.iter().map(|c| c.revealed.len()).sum();
            let closed = commits.iter().all(|c| c.audits_closed);
            (revealed == 2 || closed).then_some(commits)
        })
        .await;
        for commit in &commits {
            assert_eq!(commit.audited, (0..commit.count).collect::<Vec<_>>());
            assert_eq!(commit.revealed, commit.audited, "{commit:?}");
        }
        assert_eq!(commits.iter().map(|c| c.count).sum::<u64>(), 2);
        let jobs: Vec<u64> = commits.iter().flat_map(|c| c.jobs.clone()).collect();
        println!("revealed audits became jobs {jobs:?}");
    }
    eventually("the voucher pays out", || async {
        let info = client.session(id).await.unwrap().unwrap();
        (info.paid == paid.base_units().to_string()).then_some(())
    })
    .await;

    assert_eq!(
        client.provider(&me).await.unwrap().unwrap().stake,
        stake,
        "no slash"
    );

    // A client that takes a receipt and stops paying is refused at its next request.
    let third = session
        .request(b"And the sea?".to_vec(), params.clone(), 32, |_| {})
        .await
        .unwrap();
    let mut stingy = SessionClient::new(
        &endpoint,
        ClientChannel::resume(session_terms, user.clone(), 4, third.voucher.voucher.total).unwrap(),
    );
    let refused = stingy
        .request(b"For free?".to_vec(), params, 32, |_| {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("unpaid"), "{refused}");

    stop.send(true).unwrap();
    daemon.await.unwrap().unwrap();
    node.shutdown().await;
}

//! The session methods on a real node in this process: a session opened, assigned and
//! committed on chain reads back through `piazza_getSession`, `piazza_getSessionCommits` and
//! `piazza_getAccountSessions`; a drawn receipt's reveal is a mempool duty of its provider.

mod common;

use piazza_api::{session_method, AccountSessions, SessionCommitInfo, SessionInfo, SessionState};
use piazza_ledger::compute::{self, JobParams, Offer};
use piazza_ledger::models::{self, ModelKind, ModelRecord};
use piazza_ledger::sessions::{self, Receipt, Request, Voucher};
use piazza_ledger::tx::Message;
use piazza_mempool::Priority;
use piazza_node::app::priority;
use piazza_primitives::{Amount, Hash, SecretKey};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn send_ok(t: &common::TestNode, key: &SecretKey, message: Message) {
    let hash = t.client.send_message(key, message).await.unwrap();
    let receipt = t.client.wait_for_receipt(&hash, WAIT).await.unwrap();
    assert_eq!(receipt.status, "ok", "{receipt:?}");
}

async fn session(t: &common::TestNode, id: u64) -> Option<SessionInfo> {
    t.client
        .call(session_method::GET_SESSION, json!([id]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_back_through_the_session_methods_and_its_reveal_is_a_duty() {
    let client = common::user_key(1);
    let provider = common::user_key(2);
    let t = common::start(&[client.clone(), provider.clone()]).await;
    send_ok(
        &t,
        &client,
        Message::Models(models::Msg::Register(ModelRecord {
            name: "chat".into(),
            kind: ModelKind::Generation,
            architecture: "test".into(),
            config_hash: Hash([1; 32]),
            weights_commitment: Hash([2; 32]),
            tokenizer_hash: Hash([3; 32]),
            owner: client.public_key().address(),
            license: "apache-2.0".into(),
            price_floor: Amount::new(1),
            numeric: Default::default(),
            files: None,
            lineage: Default::default(),
        })),
    )
    .await;
    send_ok(
        &t,
        &provider,
        Message::Compute(compute::Msg::RegisterProvider {
            offer: Offer {
                models: vec!["chat".into()],
                price_per_unit: Amount::new(10),
                capacity: 4,
                endpoint: "http://127.0.0.1:1".into(),
                units_per_block: 1_000,
            },
            stake: Amount::pza(200),
        }),
    )
    .await;
    assert_eq!(session(&t, 0).await, None);
    send_ok(
        &t,
        &client,
        Message::Sessions(sessions::Msg::Open {
            model: "chat".into(),
            owner_key: client.public_key(),
            authorised: None,
            deposit: Amount::new(1_000_000),
            max_price_per_unit: Amount::new(100),
            expiry_blocks: 1_000,
        }),
    )
    .await;

    // A later block assigns the provider.
    let deadline = tokio::time::Instant::now() + WAIT;
    let info = loop {
        let info = session(&t, 0)
            .await
            .expect("the session exists once opened");
        if info.state == SessionState::Open {
            break info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never assigned: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let provider_address = provider.public_key().address().to_string();
    assert_eq!(info.provider.as_deref(), Some(provider_address.as_str()));
    assert_eq!(info.endpoint.as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(info.deposit, "1000000");
    assert_eq!(info.owner_key, client.public_key().to_hex());
    let owned: AccountSessions = t
        .client
        .call(
            session_method::GET_ACCOUNT_SESSIONS,
            json!([client.public_key().address().to_string()]),
        )
        .await
        .unwrap();
    assert_eq!(owned.owned, vec![0]);
    let served: AccountSessions = t
        .client
        .call(
            session_method::GET_ACCOUNT_SESSIONS,
            json!([provider_address]),
        )
        .await
        .unwrap();
    assert_eq!(served.served, vec![0]);

    // 200 receipts: at the default 10 % audit rate some are drawn (all escape with
    // probability 0.9^200, below 10^-9).
    let requests: Vec<Request> = (1..=200u64)
        .map(|seq| Request {
            session: 0,
            seq,
            input: format!("question {seq}").into_bytes(),
            params: JobParams::default(),
            max_units: 5,
        })
        .collect();
    let receipts: Vec<Receipt> = requests
        .iter()
        .map(|r| Receipt {
            session: 0,
            seq: r.seq,
            input_hash: compute::input_hash(&r.input),
            output_hash: compute::output_hash(&r.input),
            trace_root: Hash([9; 32]),
            units: 5,
            input_units: 2,
            price: Amount::new(50),
        })
        .collect();
    send_ok(
        &t,
        &provider,
        Message::Sessions(sessions::Msg::Commit {
            session: 0,
            root: sessions::receipts_root(&receipts),
            count: 200,
            units: 1_000,
            voucher: Voucher {
                session: 0,
                seq: 200,
                total: Amount::new(10_000),
            }
            .sign(&client),
        }),
    )
    .await;
    let commits: Vec<SessionCommitInfo> = t
        .client
        .call(session_method::GET_SESSION_COMMITS, json!([0]))
        .await
        .unwrap();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].total, "10000");
    assert_eq!(commits[0].root, sessions::receipts_root(&receipts).to_hex());
    assert_eq!(session(&t, 0).await.unwrap().committed_seq, 200);

    // A later block draws the audits; the provider's reveal is a mempool duty.
    let deadline = tokio::time::Instant::now() + WAIT;
    let audited = loop {
        let commits: Vec<SessionCommitInfo> = t
            .client
            .call(session_method::GET_SESSION_COMMITS, json!([0]))
            .await
            .unwrap();
        if let Some(index) = commits[0].audited.first() {
            break *index as usize;
        }
        assert!(tokio::time::Instant::now() < deadline, "no audit drawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reveal = Message::Sessions(sessions::Msg::Reveal {
        session: 0,
        commit: commits[0].id,
        index: audited as u64,
        receipt: Box::new(receipts[audited].clone()),
        proof: sessions::prove_receipt(&receipts, audited).unwrap(),
        request: Box::new(requests[audited].clone().sign(&client)),
    });
    let by_provider = t
        .client
        .build(&provider, vec![reveal.clone()], Amount::pza(1))
        .await
        .unwrap();
    let by_client = t
        .client
        .build(&client, vec![reveal], Amount::pza(1))
        .await
        .unwrap();
    {
        let snapshot = t.node.app.store().snapshot().unwrap();
        assert_eq!(priority(&snapshot, &by_provider), Priority::Duty);
        assert_eq!(priority(&snapshot, &by_client), Priority::Ordinary);
    }
    let hash = t.client.submit(&by_provider).await.unwrap();
    let included = t.client.wait_for_receipt(&hash, WAIT).await.unwrap();
    assert_eq!(included.status, "ok", "{included:?}");
    let commits: Vec<SessionCommitInfo> = t
        .client
        .call(session_method::GET_SESSION_COMMITS, json!([0]))
        .await
        .unwrap();
    assert_eq!(commits[0].revealed, vec![audited as u64]);
    assert_eq!(commits[0].jobs.len(), 1);
    // A malformed id is a parameter error, not a panic or a null.
    let refused = t
        .client
        .call::<Option<SessionInfo>>(session_method::GET_SESSION, json!(["zero"]))
        .await;
    assert!(refused.is_err());
    t.node.shutdown().await;
}

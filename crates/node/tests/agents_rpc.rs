//! Agents on a real node in this process: a grantee's transaction passes the node's admission
//! (signature and grant) and pays an agent from its owner's account; the settled, rated call
//! shows in `piazza_getAgent` and ranks the agent in `piazza_findAgents`; after revocation the
//! node refuses the grantee at submission.

mod common;

use piazza_ledger::agents::{self, Endpoint, Profile, Protocol};
use piazza_ledger::grants::{Rate, Scope};
use piazza_ledger::tx::Message;
use piazza_primitives::{Amount, Hash, SecretKey};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn ok(t: &common::TestNode, hash: Hash) {
    let receipt = t.client.wait_for_receipt(&hash, WAIT).await.unwrap();
    assert_eq!(receipt.status, "ok", "{receipt:?}");
}

async fn send_ok(t: &common::TestNode, key: &SecretKey, message: Message) {
    let hash = t.client.send_message(key, message).await.unwrap();
    ok(t, hash).await;
}

fn register(name: &str, stake: Amount) -> Message {
    Message::Agents(agents::Msg::Register {
        name: name.into(),
        profile: Profile {
            description: "ranks documents".into(),
            endpoints: vec![Endpoint {
                protocol: Protocol::A2a,
                url: "http://127.0.0.1:9/a2a".into(),
            }],
            tags: vec!["rank".into()],
            price: Amount::pza(1),
        },
        stake,
        share_asset: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grantee_pays_an_agent_and_its_reputation_ranks_it() {
    let owner = common::user_key(1);
    let worker = common::user_key(2);
    let idle = common::user_key(3);
    let grantee = SecretKey::from_seed([77; 32]);
    let t = common::start(&[owner.clone(), worker.clone(), idle.clone()]).await;
    send_ok(&t, &worker, register("worker", Amount::pza(10))).await;
    send_ok(&t, &idle, register("idle", Amount::pza(500))).await;
    let call_kind = Message::Agents(agents::Msg::Call {
        agent: 0,
        request_hash: Hash::ZERO,
        amount: Amount::pza(1),
        timeout_blocks: 1,
    })
    .kind();
    let scope = Scope {
        kinds: vec![call_kind],
        amount_per_message_max: Amount::pza(50),
        recipients: Some(vec![]),
        agents: Some(vec![0]),
        spend_cap: Amount::pza(60),
        rate: Rate {
            messages_max: 4,
            per_blocks: 100,
        },
        expiry_height: 10_000,
    };
    let hash = t
        .client
        .grant(&owner, grantee.public_key(), scope)
        .await
        .unwrap();
    ok(&t, hash).await;

    // The grantee pays agent 0 from the owner's account: the node admits its signature.
    let call = Message::Agents(agents::Msg::Call {
        agent: 0,
        request_hash: Hash([5; 32]),
        amount: Amount::pza(40),
        timeout_blocks: 50,
    });
    let hash = t
        .client
        .send_as_grantee(&owner.public_key(), &grantee, call)
        .await
        .unwrap();
    ok(&t, hash).await;
    // A call to an agent the grant does not name is refused at submission.
    let other = Message::Agents(agents::Msg::Call {
        agent: 1,
        request_hash: Hash([5; 32]),
        amount: Amount::pza(1),
        timeout_blocks: 50,
    });
    let refused = t
        .client
        .send_as_grantee(&owner.public_key(), &grantee, other.clone())
        .await
        .unwrap_err();
    assert_eq!(
        refused.ledger_error_name(),
        Some("grant_exceeded"),
        "{refused}"
    );

    send_ok(
        &t,
        &worker,
        Message::Agents(agents::Msg::Answer {
            call: 0,
            result_hash: Hash([6; 32]),
        }),
    )
    .await;
    send_ok(
        &t,
        &owner,
        Message::Agents(agents::Msg::Release { call: 0 }),
    )
    .await;
    send_ok(
        &t,
        &owner,
        Message::Agents(agents::Msg::Rate { call: 0, rating: 5 }),
    )
    .await;

    let worker_info = t.client.agent(0).await.unwrap();
    assert_eq!(worker_info["history"]["completed"], 1);
    assert_eq!(
        worker_info["history"]["paid"],
        Amount::pza(40).base_units().to_string()
    );
    let call_info = t.client.agent_call(0).await.unwrap();
    assert_eq!(call_info["status"], "settled");
    assert_eq!(call_info["payer"], owner.public_key().address().to_string());
    assert_eq!(call_info["rating"], 5);
    let found = t.client.find_agents("rank", 10).await.unwrap();
    let names: Vec<&str> = found.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["worker", "idle"],
        "paid, rated work outranks a larger stake"
    );
    assert!(t.client.find_agents(&"x".repeat(1_000), 10).await.is_err());
    assert!(
        t.client.find_agents("rank", 1_000).await.is_err(),
        "past the limit"
    );
    assert_eq!(t.client.agent(99).await.unwrap(), Value::Null);

    // Revoked: the node refuses the grantee's next transaction at submission.
    let hash = t.client.revoke(&owner, grantee.public_key()).await.unwrap();
    ok(&t, hash).await;
    let call = Message::Agents(agents::Msg::Call {
        agent: 0,
        request_hash: Hash([8; 32]),
        amount: Amount::pza(1),
        timeout_blocks: 50,
    });
    let refused = t
        .client
        .send_as_grantee(&owner.public_key(), &grantee, call)
        .await
        .unwrap_err();
    assert_eq!(
        refused.ledger_error_name(),
        Some("grant_refused"),
        "{refused}"
    );
}

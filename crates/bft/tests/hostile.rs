//! Hostile peers and blocks, each refused (and logged) while the honest validators go on:
//! - a synced block (value sync) is accepted only if it passes the checks and executes to its
//!   header's state root; bytes that do not decode are the peer's fault;
//! - gossiped transactions are untrusted bytes: garbage is refused, a valid transaction from a
//!   peer is admitted and never gossiped again, a client's is gossiped;
//! - a validator whose proposals claim a state root their execution does not give: the other
//!   three vote nil on them and keep finalizing, and no block of its is ever final.

mod common;

use common::*;
use malachitebft_app_channel::app::engine::host::SyncedValueOutcome;
use malachitebft_app_channel::app::types::core::{Round, Validity};
use malachitebft_app_channel::AppMsg;
use piazza_bft::context::{ValidatorAddress, ValidatorSet};
use piazza_bft::Height;
use piazza_codec::Encode;
use piazza_ledger::block::Block;
use piazza_mempool::MempoolConfig;
use piazza_node::app::TransactionStatus;
use piazza_node::App;
use piazza_primitives::{Hash, SecretKey};
use piazza_store::Store;
use std::sync::Arc;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_block_must_execute_to_its_state_root() {
    let mut scene = scene().await;
    let (app_loop, network) = (&mut scene.app_loop, &scene.network);
    let proposer = ValidatorAddress(scene.proposer.public_key().address());
    let synced = |bytes: Vec<u8>| {
        let (reply, answer) = oneshot::channel();
        let msg = AppMsg::ProcessSyncedValue {
            height: Height(1),
            round: Round::new(0),
            proposer,
            value_bytes: bytes::Bytes::from(bytes),
            reply,
        };
        (msg, answer)
    };
    let verdict = |outcome: SyncedValueOutcome<piazza_bft::PiazzaContext>| match outcome {
        SyncedValueOutcome::Verdict(value) => Some(value.validity),
        _ => None,
    };
    let (msg, answer) = synced(scene.lying.to_bytes());
    app_loop.handle(msg, network).await.unwrap();
    assert_eq!(verdict(answer.await.unwrap()), Some(Validity::Invalid));

    let (msg, answer) = synced(vec![0xff; 100]);
    app_loop.handle(msg, network).await.unwrap();
    assert!(matches!(
        answer.await.unwrap(),
        SyncedValueOutcome::PeerFault
    ));

    let (msg, answer) = synced(scene.block.to_bytes());
    app_loop.handle(msg, network).await.unwrap();
    assert_eq!(verdict(answer.await.unwrap()), Some(Validity::Valid));
    // Validation executes without committing.
    assert_eq!(scene.app.head().unwrap().height, 0);
    // And the application itself never commits a block whose root its execution disagrees with.
    assert!(scene.app.commit(scene.lying.clone()).is_err());
    assert_eq!(scene.app.head().unwrap().height, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossiped_bytes_are_checked_and_never_gossiped_again() {
    let dir = tempfile::tempdir().unwrap();
    let keys = vec![validator_key(0)];
    let users: Vec<_> = (0..2).map(user_key).collect();
    let genesis = network_genesis(&keys, &users);
    let store = Store::open(&dir.path().join("chain.redb")).unwrap();
    let app = Arc::new(
        App::open_network(
            store,
            Some(&genesis),
            keys[0].clone(),
            MempoolConfig::default(),
        )
        .unwrap(),
    );
    let mut gossip = app.gossip().unwrap();
    assert!(
        app.gossip().is_none(),
        "the gossip ends are handed out once"
    );

    let from_peer = transfer(&users[0], 0);
    let mut wrong_chain = transfer(&users[1], 0);
    wrong_chain.tx.chain_id = "another-chain".into();
    let wrong_chain = wrong_chain.tx.sign(&users[1]);
    let batch = vec![
        vec![0xde, 0xad],
        wrong_chain.to_bytes(),
        from_peer.to_bytes(),
        Vec::new(),
    ];
    gossip.remote.send(batch).await.unwrap();
    let app_ = app.clone();
    let hash = from_peer.hash();
    assert!(
        wait_until(WAIT, || matches!(
            app_.transaction_status(&hash).unwrap(),
            TransactionStatus::Pending
        ))
        .await
    );
    assert_eq!(
        app.mempool_size(),
        1,
        "only the valid transaction is admitted"
    );
    assert!(
        gossip.local.try_recv().is_err(),
        "a peer's transaction is not gossiped again"
    );

    let from_client = transfer(&users[1], 0);
    app.submit(&from_client.to_bytes()).unwrap();
    assert_eq!(gossip.local.try_recv().unwrap(), from_client.to_bytes());
}

/// The block with its state root changed, signed again by the proposer: well formed, from the
/// right proposer, but not what executing it gives.
fn wrong_root(mut block: Block, key: &SecretKey) -> Block {
    block.header.state_root = Hash::of("piazza/test/wrong-root", &[&block.header.state_root.0]);
    block.signature = key.sign(&block.header.hash().0);
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_honest_validators_refuse_a_liars_blocks_and_keep_finalizing() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..4).map(validator_key).collect();
    let users = vec![user_key(0)];
    let genesis = network_genesis(&keys, &users);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for i in 0..4 {
        let tamper = (i == 3).then_some(wrong_root as Tamper);
        let options = Options {
            tamper,
            ..Options::default()
        };
        let node = start_validator_with(dir.path(), &keys, i, &genesis, &ports, options);
        nodes.push(node.await);
    }
    let honest = [&nodes[0], &nodes[1], &nodes[2]];
    agree_beyond(&honest, 8).await;
    let liar = keys[3].public_key();
    let head = honest.iter().map(|n| n.height()).min().unwrap();
    // The liar led the first round of some of these heights (each decided in a later round).
    let set = ValidatorSet::new(
        keys.iter()
            .map(|k| piazza_bft::Validator::new(k.public_key(), 1_000))
            .collect(),
    )
    .unwrap();
    let led = (1..=head)
        .filter(|h| set.proposer(Height(*h), Round::new(0)).public_key == liar)
        .count();
    assert!(led > 0, "the liar never led a round in heights 1..={head}");
    for height in 1..=head {
        let block = nodes[0].app.store().block(height).unwrap().unwrap();
        assert_ne!(
            block.header.proposer, liar,
            "a block that lies about its state root was finalized at {height}"
        );
    }
    for node in &mut nodes {
        node.stop().await;
    }
}

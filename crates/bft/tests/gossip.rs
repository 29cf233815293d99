//! Transaction gossip: transactions sent to each of four validators and to a node that never
//! proposes (a follower: without gossip its transactions would never be included) all become
//! final on every node, with the same blocks and state roots.

mod common;

use common::*;
use piazza_codec::Encode;
use piazza_node::app::TransactionStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_sent_to_any_node_are_final_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..5).map(validator_key).collect();
    let users: Vec<_> = (0..5).map(user_key).collect();
    let genesis = network_genesis(&keys[..4], &users);
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(start_validator(dir.path(), &keys, i, &genesis, &ports).await);
    }
    agree_beyond(&nodes.iter().collect::<Vec<_>>(), 1).await;

    // User i sends through node i; node 4 is the follower.
    let mut hashes = Vec::new();
    for (i, user) in users.iter().enumerate() {
        for nonce in 0..4 {
            let bytes = transfer(user, nonce).to_bytes();
            hashes.push(nodes[i].app.submit(&bytes).unwrap());
        }
    }
    let all_final = wait_until(WAIT, || {
        hashes.iter().all(|h| {
            nodes.iter().all(|n| {
                matches!(
                    n.app.transaction_status(h).unwrap(),
                    TransactionStatus::Included { .. }
                )
            })
        })
    })
    .await;
    assert!(all_final, "a transaction did not reach every node");
    assert_eq!(nodes[4].app.gossip_skipped(), 0);
    agree_beyond(&nodes.iter().collect::<Vec<_>>(), 1).await;
    for node in &mut nodes {
        node.stop().await;
    }
}

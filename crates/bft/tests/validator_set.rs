//! The validator set of each height comes from the ledger: four genesis validators and a fifth
//! node that follows the chain; the fifth bonds (through its own node, so gossip carries the
//! transaction to the proposers), every node's ledger gives the same new set from the same
//! height, and from that height on the fifth signs: with one original validator stopped, the
//! chain keeps finalizing only because the fifth's votes make the quorum.

mod common;

use common::*;
use piazza_bft::store::ConsensusStore;
use piazza_bft::{Height, ValidatorAddress};
use piazza_codec::Encode;
use piazza_ledger::staking::validators::VALIDATOR_SET_DELAY;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::Message;
use piazza_node::app::TransactionStatus;
use piazza_primitives::Amount;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bonded_validator_signs_from_the_height_its_bond_takes_effect_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..5).map(validator_key).collect();
    let genesis = network_genesis(&keys[..4], &keys[4..]);
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(start_validator(dir.path(), &keys, i, &genesis, &ports).await);
    }
    agree_beyond(&nodes.iter().collect::<Vec<_>>(), 2).await;

    let bond = signed(
        &keys[4],
        0,
        Message::Staking(staking::Msg::Bond {
            role: Role::Validator,
            amount: Amount::pza(1_000),
        }),
    );
    let hash = nodes[4].app.submit(&bond.to_bytes()).unwrap();
    let included = wait_until(WAIT, || {
        nodes.iter().all(|n| {
            matches!(
                n.app.transaction_status(&hash).unwrap(),
                TransactionStatus::Included { .. }
            )
        })
    })
    .await;
    assert!(included, "the bond sent to the follower was not finalized");
    let TransactionStatus::Included { height: bonded_at } =
        nodes[0].app.transaction_status(&hash).unwrap()
    else {
        unreachable!()
    };
    let effective = bonded_at + VALIDATOR_SET_DELAY;

    // Every node's ledger: four validators up to the effective height, five from it.
    let fifth = keys[4].public_key();
    for node in &nodes {
        let before = node.app.validator_set(effective - 1).unwrap().unwrap();
        let after = node.app.validator_set(effective).unwrap().unwrap();
        assert_eq!(before.len(), 4);
        assert!(!before.iter().any(|v| v.consensus_key == fifth));
        assert_eq!(after.len(), 5);
        assert!(after.iter().any(|v| v.consensus_key == fifth));
    }

    // Past the effective height, stop an original validator: 4 of 5 equal powers remain, the
    // least a quorum (> 2/3) needs, so every later block carries the fifth's precommit.
    let all: Vec<_> = nodes.iter().collect();
    let target = effective + 1;
    assert!(wait_until(WAIT, || all.iter().all(|n| n.height() >= target)).await);
    nodes[3].stop().await;
    let stopped_at = nodes[3].height();
    let live = [&nodes[0], &nodes[1], &nodes[2], &nodes[4]];
    agree_beyond(&live, 3).await;
    let end = live.iter().map(|n| n.height()).min().unwrap();
    for node in &mut nodes {
        node.stop().await;
    }
    let app = std::sync::Arc::downgrade(&nodes[0].app);
    drop(nodes);
    assert!(wait_until(WAIT, || app.strong_count() == 0).await);

    let store = ConsensusStore::open(
        &dir.path()
            .join("validator-0/consensus")
            .join(piazza_bft::node::CONSENSUS_DB_FILE),
    )
    .unwrap();
    let signed_by_fifth = |height: u64| {
        let certificate = store.certificate(Height(height)).unwrap().unwrap();
        certificate
            .commit_signatures
            .iter()
            .any(|s| s.address == ValidatorAddress(fifth.address()))
    };
    for height in 1..effective {
        assert!(
            !signed_by_fifth(height),
            "signed at {height}, before {effective}"
        );
    }
    for height in stopped_at + 2..=end {
        assert!(
            signed_by_fifth(height),
            "height {height} lacks the fifth's precommit"
        );
    }
}

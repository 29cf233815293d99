//! Validators running Malachite in one process, each with its own store and a libp2p port on
//! 127.0.0.1: one validator finalizes blocks with transactions; four reach the same height and
//! state root, and keep finalizing with one of them stopped.

mod common;

use common::*;
use piazza_codec::Encode;
use piazza_node::app::TransactionStatus;
use std::time::Duration;

/// Bound on every wait below: far above what the work needs, so only a stall trips it.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_validator_finalizes_blocks_with_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let keys = vec![validator_key(0)];
    let users: Vec<_> = (0..4).map(user_key).collect();
    let genesis = genesis(&keys, &users);
    let ports = [free_port()];
    let mut validator = start_validator(dir.path(), &keys, 0, &genesis, &ports).await;

    let mut hashes = Vec::new();
    for user in &users {
        for nonce in 0..5 {
            hashes.push(
                validator
                    .app
                    .submit(&transfer(user, nonce).to_bytes())
                    .unwrap(),
            );
        }
    }
    let app = validator.app.clone();
    let all_included = wait_until(WAIT, || {
        hashes.iter().all(|h| {
            matches!(
                app.transaction_status(h).unwrap(),
                TransactionStatus::Included { .. }
            )
        })
    })
    .await;
    assert!(all_included, "transactions were not finalized");
    assert!(wait_until(WAIT, || app.head().unwrap().height >= 5).await);

    // Every finalized block was decided by consensus: its certificate is stored beside it.
    let head = app.head().unwrap();
    // The running validator holds its consensus store open: stop it first, then read.
    validator.stop().await;
    let store = piazza_bft::store::ConsensusStore::open(
        &dir.path()
            .join("validator-0/consensus")
            .join(piazza_bft::node::CONSENSUS_DB_FILE),
    )
    .unwrap();
    for height in 1..=head.height {
        let decision = store.decided(piazza_bft::Height(height)).unwrap().unwrap();
        let block = app.store().block(height).unwrap().unwrap();
        assert_eq!(decision.certificate.value_id.0, block.hash());
        assert_eq!(decision.block_bytes, block.to_bytes());
        assert!(!decision.certificate.commit_signatures.is_empty());
    }
}

/// The block hash and state root of every validator at `height` (all must have reached it).
fn roots_at(
    validators: &[TestValidator],
    height: u64,
) -> Vec<(piazza_primitives::Hash, piazza_primitives::Hash)> {
    validators
        .iter()
        .map(|v| {
            let block = v.app.store().block(height).unwrap().unwrap();
            (block.hash(), block.header.state_root)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_validators_agree_three_keep_finalizing_and_a_restarted_one_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..4).map(validator_key).collect();
    let users: Vec<_> = (0..4).map(user_key).collect();
    let genesis = genesis(&keys, &users);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let mut validators = Vec::new();
    for i in 0..4 {
        validators.push(start_validator(dir.path(), &keys, i, &genesis, &ports).await);
    }

    // Transactions sent to different validators: each user through its own validator.
    let mut hashes = Vec::new();
    for (i, user) in users.iter().enumerate() {
        for nonce in 0..3 {
            let bytes = transfer(user, nonce).to_bytes();
            hashes.push(validators[i].app.submit(&bytes).unwrap());
        }
    }
    let target = 4;
    let reached = wait_until(WAIT, || validators.iter().all(|v| v.height() >= target)).await;
    assert!(
        reached,
        "heights: {:?}",
        validators.iter().map(|v| v.height()).collect::<Vec<_>>()
    );
    let roots = roots_at(&validators, target);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "validators disagree: {roots:?}"
    );

    // Without transaction gossip (not built yet) a transaction waits in the mempool of the
    // validator it was sent to until that validator proposes; every validator proposes sooner
    // or later, so all of them become final, on every validator.
    let all_final = wait_until(WAIT, || {
        hashes.iter().all(|h| {
            validators.iter().all(|v| {
                matches!(
                    v.app.transaction_status(h).unwrap(),
                    TransactionStatus::Included { .. }
                )
            })
        })
    })
    .await;
    assert!(
        all_final,
        "transactions sent to different validators were not all finalized"
    );

    // One validator stops; the other three (3 of 4 voting power > 2/3) keep finalizing.
    validators[3].stop().await;
    let stopped_at = validators[3].height();
    let live = &validators[..3];
    let base = live.iter().map(|v| v.height()).max().unwrap();
    let target = base + 3;
    let reached = wait_until(WAIT, || live.iter().all(|v| v.height() >= target)).await;
    assert!(
        reached,
        "heights after the stop: {:?}",
        live.iter().map(|v| v.height()).collect::<Vec<_>>()
    );
    let roots = roots_at(live, target);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "validators disagree: {roots:?}"
    );
    assert_eq!(
        validators[3].height(),
        stopped_at,
        "a stopped validator does not commit"
    );
    for v in &mut validators {
        v.stop().await;
    }
}

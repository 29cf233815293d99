//! Validators running Malachite in one process, each with its own store and a libp2p port on
//! 127.0.0.1: one validator finalizes blocks with transactions, each decided block stored once
//! (its certificate by consensus, the block by the application); four reach the same height and
//! state root with transactions sent to different validators, keep finalizing with one of them
//! stopped, agree again once it restarts and catches up by value sync, halt without forking
//! with two stopped, and resume when one returns.

mod common;

use common::*;
use piazza_codec::Encode;
use piazza_node::app::TransactionStatus;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_validator_finalizes_blocks_with_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let keys = vec![validator_key(0)];
    let users: Vec<_> = (0..4).map(user_key).collect();
    let genesis = network_genesis(&keys, &users);
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
    // The block itself is stored once, by the application: the consensus store keeps no
    // proposal of a committed height. The newest height's proposal is pruned just after the
    // application commits it, so a validator stopped between the two still holds that one
    // (pruned with the next height after a restart): every earlier height is checked.
    for height in 1..=head.height {
        let pruned = height < head.height;
        let certificate = store
            .certificate(piazza_bft::Height(height))
            .unwrap()
            .unwrap();
        let block = app.store().block(height).unwrap().unwrap();
        assert_eq!(certificate.value_id.0, block.hash());
        assert!(!certificate.commit_signatures.is_empty());
        if pruned {
            assert!(store
                .proposal_of(piazza_bft::Height(height), &certificate.value_id)
                .unwrap()
                .is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_validators_agree_tolerate_one_stop_sync_a_restart_and_halt_with_two_down() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..4).map(validator_key).collect();
    let users: Vec<_> = (0..4).map(user_key).collect();
    let genesis = network_genesis(&keys, &users);
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
    agree_beyond(&validators.iter().collect::<Vec<_>>(), 4).await;

    // Every transaction becomes final on every validator, whichever validator it was sent to.
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
    agree_beyond(&[&validators[0], &validators[1], &validators[2]], 3).await;
    assert_eq!(
        validators[3].height(),
        stopped_at,
        "a stopped validator does not commit"
    );

    // Restarted on the same data, it catches up by value sync and agrees.
    restart(&mut validators, 3, dir.path(), &keys, &genesis, &ports).await;
    agree_beyond(&validators.iter().collect::<Vec<_>>(), 2).await;

    // Two of four stopped: below 2/3 of the power, the chain halts (without forking)...
    validators[2].stop().await;
    validators[3].stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let halted = validators[0].height().max(validators[1].height());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        validators[0].height().max(validators[1].height()),
        halted,
        "two of four validators finalized a block"
    );
    // ...and resumes when one returns.
    restart(&mut validators, 3, dir.path(), &keys, &genesis, &ports).await;
    let live = [&validators[0], &validators[1], &validators[3]];
    let target = halted + 2;
    let reached = wait_until(WAIT, || live.iter().all(|v| v.height() >= target)).await;
    assert!(
        reached,
        "the chain did not resume: {:?}",
        live.map(|v| v.height())
    );
    agree_beyond(&live, 0).await;
    for v in &mut validators {
        v.stop().await;
    }
}

/// Stops validator `i` if it runs, waits for its application to close, and starts it again on
/// the same data directory.
async fn restart(
    validators: &mut Vec<TestValidator>,
    i: usize,
    dir: &std::path::Path,
    keys: &[piazza_primitives::SecretKey],
    genesis: &piazza_ledger::genesis::NetworkGenesis,
    ports: &[u16],
) {
    let mut old = validators.remove(i);
    old.stop().await;
    let app = std::sync::Arc::downgrade(&old.app);
    drop(old);
    let new = start_validator_after(dir, keys, i, genesis, ports, app).await;
    validators.insert(i, new);
}

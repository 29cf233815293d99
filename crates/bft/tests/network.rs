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

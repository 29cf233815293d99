//! Block pacing: with `BftConfig::block_interval` set, each height is committed no sooner than
//! the interval after it started, so the blocks' own timestamps (stamped by their proposers
//! when the height starts) are spaced by the interval even on an idle network, one validator
//! or four, with transactions still finalized.

mod common;

use common::*;
use piazza_codec::Encode;
use piazza_node::app::TransactionStatus;
use std::time::Duration;

/// The interval under test.
const INTERVAL_MS: u64 = 200;
/// Blocks whose spacing is measured.
const BLOCKS: u64 = 8;
/// Slack on the whole run, per block: the clock is read on different threads.
const SPAN_SLACK_MS: u64 = 20;

/// Every gap between consecutive block timestamps from height 2 to `last` (height 1 may follow
/// genesis by any time) is at least the interval less `gap_slack_ms`, and the whole run at least
/// `BLOCKS - 1` intervals less [`SPAN_SLACK_MS`] each. With several validators each block is
/// stamped by its own proposer when that node starts the height, and nodes start a height a few
/// tens of milliseconds apart on a loaded machine: one gap may be shorter, the next longer.
fn check_spacing(validator: &TestValidator, last: u64, gap_slack_ms: u64) {
    let store = validator.app.store();
    let times: Vec<u64> = (2..=last)
        .map(|h| store.block(h).unwrap().unwrap().header.time_ms)
        .collect();
    for (h, pair) in (3..).zip(times.windows(2)) {
        let gap = pair[1].saturating_sub(pair[0]);
        assert!(
            gap + gap_slack_ms >= INTERVAL_MS,
            "block {h} follows its parent by {gap} ms, under the {INTERVAL_MS} ms interval"
        );
    }
    let span = times.last().unwrap() - times.first().unwrap();
    assert!(
        span >= (times.len() as u64 - 1) * (INTERVAL_MS - SPAN_SLACK_MS),
        "{} blocks spanned only {span} ms",
        times.len()
    );
}

async fn paced_network(validators: usize, gap_slack_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..validators).map(validator_key).collect();
    let users: Vec<_> = (0..2).map(user_key).collect();
    let genesis = network_genesis(&keys, &users);
    let ports: Vec<u16> = (0..validators).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for i in 0..validators {
        let interval = Some(Duration::from_millis(INTERVAL_MS));
        let options = Options {
            block_interval: interval,
            ..Options::default()
        };
        let node = start_validator_with(dir.path(), &keys, i, &genesis, &ports, options);
        nodes.push(node.await);
    }
    let hashes: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let node = &nodes[i % validators];
            node.app.submit(&transfer(user, 0).to_bytes()).unwrap()
        })
        .collect();
    let first = &nodes[0];
    let last = BLOCKS + 1;
    assert!(
        wait_until(WAIT, || first.height() >= last).await,
        "no height {last} reached"
    );
    let app = first.app.clone();
    assert!(
        hashes.iter().all(|h| matches!(
            app.transaction_status(h).unwrap(),
            TransactionStatus::Included { .. }
        )),
        "transactions were not included while blocks were paced"
    );
    check_spacing(first, last, gap_slack_ms);
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_validator_paces_blocks_to_the_interval() {
    paced_network(1, SPAN_SLACK_MS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_validators_pace_blocks_to_the_interval() {
    paced_network(4, INTERVAL_MS / 2).await;
}

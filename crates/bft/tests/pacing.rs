//! Block pacing: with `BftConfig::block_interval` set, each height is committed no sooner than
//! the interval after it started, so the blocks' own timestamps (stamped by their proposers
//! when they propose) are spaced by the interval even on an idle network, one validator or
//! four, with transactions still finalized.

mod common;

use common::*;
use piazza_codec::Encode;
use piazza_node::app::TransactionStatus;
use std::time::Duration;

/// The interval under test.
const INTERVAL_MS: u64 = 200;
/// Blocks whose spacing is measured.
const BLOCKS: u64 = 8;
/// Slack per gap on one validator: the clock is read on different threads, in whole ms.
const GAP_SLACK_MS: u64 = 20;

/// The timestamps of blocks 2 to `last` (height 1 may follow genesis by any time) are spaced by
/// the interval.
///
/// What pacing guarantees on any number of validators: a node starts height h + 1 no sooner
/// than the interval after it started h, and a block is stamped after its proposer started
/// its height and before any node received it. So block `last` is stamped at least
/// `last - 3` intervals after block 2 (block 2 may be stamped as late as height 3 starts),
/// less one interval with several validators: a node that fell behind and took a height by
/// sync starts the next one at once, catching up what it lagged.
///
/// With one validator every block is stamped as its height starts, so each gap is the
/// interval (less [`GAP_SLACK_MS`]). With several, a gap has no such floor: nodes start a
/// height tens of milliseconds apart on a loaded machine, and a block decided in a later round
/// is stamped late in its height, so the next gap is short. Only the span is checked there.
fn check_spacing(validator: &TestValidator, last: u64, check_gaps: bool) {
    let store = validator.app.store();
    let times: Vec<u64> = (2..=last)
        .map(|h| store.block(h).unwrap().unwrap().header.time_ms)
        .collect();
    if check_gaps {
        for (h, pair) in (3..).zip(times.windows(2)) {
            let gap = pair[1].saturating_sub(pair[0]);
            assert!(
                gap + GAP_SLACK_MS >= INTERVAL_MS,
                "block {h} follows its parent by {gap} ms, under the {INTERVAL_MS} ms interval"
            );
        }
    }
    let span = times.last().unwrap() - times.first().unwrap();
    let slack_ms = if check_gaps {
        GAP_SLACK_MS
    } else {
        INTERVAL_MS
    };
    let floor = (times.len() as u64 - 2) * INTERVAL_MS - slack_ms;
    assert!(
        span >= floor,
        "{} blocks spanned only {span} ms, under {floor} ms",
        times.len()
    );
}

async fn paced_network(validators: usize) {
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
    check_spacing(first, last, validators == 1);
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_validator_paces_blocks_to_the_interval() {
    paced_network(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_validators_pace_blocks_to_the_interval() {
    paced_network(4).await;
}

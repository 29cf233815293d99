//! A proposal's time: a validator refuses (offers as `Invalid`, so it votes nil) a block whose
//! time is not after its parent's or more than `PROPOSAL_TIME_AHEAD_MS_MAX` past its own
//! clock; its own proposals are raised past the parent's time even when its clock is behind.

mod common;

use common::*;
use malachitebft_app_channel::app::types::core::{Round, Validity};
use malachitebft_app_channel::AppMsg;
use piazza_bft::app::PROPOSAL_TIME_AHEAD_MS_MAX;
use piazza_bft::Height;
use piazza_ledger::block::Block;
use std::time::Duration;
use tokio::sync::oneshot;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// How far ahead of the clock block 1 is: within the bound, so a proposer at height 2 whose
/// clock reads now must still move past it.
const PARENT_AHEAD_MS: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_must_be_after_its_parent_and_not_far_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let proposer = validator_key(0);
    let other = validator_key(1);
    let users = vec![user_key(0)];
    let genesis = genesis(std::slice::from_ref(&proposer), &users);
    let proposing = open_app(dir.path(), "proposer", &proposer, &genesis);
    let app = open_app(dir.path(), "other", &other, &genesis);
    // Block 1, committed on both before the loop starts: the parent of height 2.
    let parent_ms = now_ms() + PARENT_AHEAD_MS;
    let first = proposing.propose(1, parent_ms).unwrap();
    assert_eq!(first.header.time_ms, parent_ms);
    proposing.commit(first.clone()).unwrap();
    app.commit(first).unwrap();

    let (mut app_loop, network, _published, next) =
        ready_loop(dir.path(), &app, &other, &genesis, &proposer).await;
    assert_eq!(next, Height(2));

    // Each case is the proposer's block for height 2 at a time; the ledger itself accepts a
    // time equal to the parent's, so only the app loop's check refuses it.
    // The application never proposes before the parent: that block is signed again by hand.
    let at = |time_ms: u64| -> Block {
        let mut block = proposing.propose(2, time_ms).unwrap();
        block.header.time_ms = time_ms;
        block.signature = proposer.sign(&block.header.hash().0);
        block
    };
    let cases = [
        (parent_ms, Validity::Invalid, "the parent's time"),
        (parent_ms - 1_000, Validity::Invalid, "before the parent"),
        (
            now_ms() + PROPOSAL_TIME_AHEAD_MS_MAX + 60_000,
            Validity::Invalid,
            "a minute past the bound",
        ),
        (parent_ms + 1, Validity::Valid, "just after the parent"),
    ];
    for (round, (time_ms, expected, what)) in cases.into_iter().enumerate() {
        let block = at(time_ms);
        assert_eq!(block.header.time_ms, time_ms);
        let offered = offer_at(
            &mut app_loop,
            &network,
            &block,
            Height(2),
            round as u32,
            &proposer,
        )
        .await;
        assert_eq!(offered, Some(expected), "{what}");
    }
    // Nothing was committed by validation.
    assert_eq!(app.head().unwrap().height, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_proposals_are_after_the_parent_even_when_the_clock_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let key = validator_key(0);
    let genesis = genesis(std::slice::from_ref(&key), &[]);
    let app = open_app(dir.path(), "validator", &key, &genesis);
    let parent_ms = now_ms() + PARENT_AHEAD_MS;
    let first = app.propose(1, parent_ms).unwrap();
    app.commit(first).unwrap();

    let (mut app_loop, network, mut published, next) =
        ready_loop(dir.path(), &app, &key, &genesis, &key).await;
    assert_eq!(next, Height(2));
    let (reply, answer) = oneshot::channel();
    let msg = AppMsg::GetValue {
        height: Height(2),
        round: Round::new(0),
        timeout: Duration::from_secs(10),
        reply,
    };
    app_loop.handle(msg, &network).await.unwrap();
    let value = answer.await.unwrap();
    while published.try_recv().is_ok() {}
    let stored = app_loop
        .store
        .proposal_of(Height(2), &value.value)
        .unwrap()
        .expect("the proposal is stored before it is streamed");
    let block = Block::decode_bytes(&stored.block_bytes).unwrap();
    assert!(
        block.header.time_ms > parent_ms,
        "own proposal at {} ms, parent at {parent_ms} ms",
        block.header.time_ms
    );
    assert!(app_loop.check_time(&block).is_ok());
}

//! Peers' transaction batches wait in order while the application's queue is full, up to
//! their bound, and only then are refused; none is lost or reordered.

use piazza_bft::app::hold_batches;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;

const HELD: usize = 4;
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "current_thread")]
async fn batches_wait_while_the_application_is_busy_and_the_bound_refuses() {
    // The application's queue takes one batch and is not drained yet.
    let (to_app, mut app) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(1);
    let held = hold_batches(to_app, HELD);
    let mut accepted = 0u8;
    let refused = loop {
        assert!(accepted < 64, "the held batches are unbounded");
        match held.try_send(vec![vec![accepted]]) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(batch)) => break batch,
            Err(TrySendError::Closed(_)) => panic!("the forwarder ended"),
        }
        tokio::task::yield_now().await;
    };
    // One in the application's queue, at most one in the forwarder's hands, the held ones.
    assert!(
        (1 + HELD..=2 + HELD).contains(&(accepted as usize)),
        "{accepted} accepted"
    );
    assert_eq!(refused, vec![vec![accepted]]);
    for expected in 0..accepted {
        let batch = tokio::time::timeout(WAIT, app.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(batch, vec![vec![expected]], "in order, none lost");
    }
    // Drained: the next batch is taken again.
    held.try_send(vec![vec![99]]).unwrap();
    let batch = tokio::time::timeout(WAIT, app.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch, vec![vec![99]]);
}

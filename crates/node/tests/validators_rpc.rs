//! `piazza_getValidators` on a running node: a chain whose genesis names no validators answers
//! `null` for every height committed state determines, and refuses a height it cannot know yet
//! (beyond the head plus `VALIDATOR_SET_DELAY`) or height 0. The set itself, on a network
//! genesis, is checked through `App::validator_set` in `crates/bft/tests/validator_set.rs`.

mod common;

use piazza_ledger::staking::validators::VALIDATOR_SET_DELAY;
use serde_json::{json, Value};

#[tokio::test]
async fn get_validators_answers_null_without_records_and_refuses_unknown_heights() {
    let t = common::start(&[]).await;
    let next: Value = t
        .client
        .call("piazza_getValidators", json!([]))
        .await
        .unwrap();
    assert_eq!(next, Value::Null);
    let head = t.client.status().await.unwrap().height;
    let at_bound: Value = t
        .client
        .call("piazza_getValidators", json!([head + VALIDATOR_SET_DELAY]))
        .await
        .unwrap();
    assert_eq!(at_bound, Value::Null);
    // Far enough ahead that blocks made meanwhile cannot bring it within reach.
    let beyond = t
        .client
        .call::<Value>("piazza_getValidators", json!([head + 1_000]))
        .await;
    assert!(beyond.is_err(), "{beyond:?}");
    let zero = t
        .client
        .call::<Value>("piazza_getValidators", json!([0]))
        .await;
    assert!(zero.is_err(), "{zero:?}");
}

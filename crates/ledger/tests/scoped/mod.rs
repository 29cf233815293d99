//! Blocks at chosen heights and times whose transactions may be refused: the grants, x402 and
//! agents tests see why a transaction stayed out of a block instead of failing the test.
#![allow(dead_code)]

use super::common::Chain;
use piazza_ledger::block::{Event, TxStatus};
use piazza_ledger::executor::BlockExecutor;
use piazza_ledger::module::BlockContext;
use piazza_ledger::tx::SignedTransaction;
use piazza_ledger::ErrorCode;
use piazza_primitives::Hash;

/// One transaction's fate in a block: its receipt's status and events, or why it could not be
/// included.
pub type Outcome = Result<(TxStatus, Vec<Event>), ErrorCode>;

/// Runs one block of `txs` at the next height with time `time_ms`.
pub fn block_at(chain: &mut Chain, time_ms: u64, txs: &[SignedTransaction]) -> Vec<Outcome> {
    chain.height += 1;
    let context = BlockContext {
        chain_id: "compute".into(),
        height: chain.height,
        time_ms,
        randomness: Hash::of("r", &[&chain.height.to_le_bytes()]),
        proposer: chain.validator.public_key(),
    };
    let (results, outcome) = {
        let mut executor = BlockExecutor::begin(&chain.state, context);
        let results: Vec<_> = txs
            .iter()
            .map(|tx| {
                executor
                    .apply_tx(tx, false)
                    .map(|r| (r.status.clone(), r.events.clone()))
                    .map_err(|e| e.code)
            })
            .collect();
        (results, executor.finish())
    };
    for (k, v) in outcome.writes {
        match v {
            Some(v) => chain.state.insert(k, v),
            None => chain.state.remove(&k),
        };
    }
    results
}

/// The status's error code, if it failed.
pub fn code(status: &TxStatus) -> Option<ErrorCode> {
    match status {
        TxStatus::Ok => None,
        TxStatus::Failed { code, .. } => ErrorCode::from_code(*code),
    }
}

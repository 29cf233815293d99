//! The one narrow boundary between a Piazza node and block production, shaped like Malachite's
//! app-channel interface: consensus asks the application to build a value when it proposes,
//! tells it when a value is decided, and asks it for stored values to help peers sync.
//!
//! Invariants:
//! - Consensus never executes transactions or touches state; the application never decides what
//!   is final. Everything crosses [`AppMsg`].
//! - A decided block is committed before the next height starts.
//! - Time enters here (the proposer's clock) and travels in the block header; the ledger never
//!   reads a clock.
//!
//! Behind the boundary: [`SoloProducer`], a single validator for the devnet. A multi-validator
//! network plugs Malachite (Tendermint BFT) into the same messages. [`certificate`]: what a
//! network's commit certificate proves, checkable by any client without Malachite.

pub mod certificate;

use piazza_ledger::block::Block;
use piazza_ledger::staking::validators::ActiveValidator;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Debug, Clone, Error)]
#[error("{0}")]
pub struct AppError(pub String);

/// The committed head after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub height: u64,
    pub txs: usize,
}

/// Requests from consensus to the application.
#[derive(Debug)]
pub enum AppMsg {
    /// Consensus has started; the application answers with the next height to decide.
    ConsensusReady { reply: oneshot::Sender<u64> },
    /// This validator proposes at `height`: build a block from the mempool.
    GetValue {
        height: u64,
        time_ms: u64,
        reply: oneshot::Sender<Result<Block, AppError>>,
    },
    /// `block` is decided: execute (if needed) and commit it durably before answering.
    Decided {
        block: Box<Block>,
        reply: oneshot::Sender<Result<Committed, AppError>>,
    },
    /// Another validator proposed `block` for the next height: execute it on the head without
    /// committing and answer whether it is valid (extends the head, every transaction applies,
    /// and it executes to its header's state root). Only a network of validators sends this.
    ValidateValue {
        block: Box<Block>,
        reply: oneshot::Sender<Result<(), AppError>>,
    },
    /// A peer syncs: return the decided block at `height`, if stored.
    GetDecidedValue {
        height: u64,
        reply: oneshot::Sender<Option<Block>>,
    },
    /// The validator set of `height` from committed state (`staking::validators`): `None` for
    /// a chain whose genesis names no validators, an error for a height committed state does
    /// not determine yet (beyond the head plus `VALIDATOR_SET_DELAY`).
    GetValidatorSet {
        height: u64,
        reply: oneshot::Sender<Result<Option<Vec<ActiveValidator>>, AppError>>,
    },
}

/// Transactions between the application and the network's gossip. `local` yields the bytes of
/// each transaction this node admitted from a client (bounded: when full, a transaction stays
/// in this node's mempool only and is counted, not gossiped); `remote` takes batches received
/// from peers, which the application admits like a client's but never gossips again.
pub struct TxGossip {
    pub local: mpsc::Receiver<Vec<u8>>,
    pub remote: mpsc::Sender<Vec<Vec<u8>>>,
}

/// Capacity of [`TxGossip::local`], in transactions.
pub const GOSSIP_LOCAL_CAPACITY: usize = 4096;
/// Capacity of [`TxGossip::remote`], in batches.
pub const GOSSIP_REMOTE_CAPACITY: usize = 64;

pub type AppSender = mpsc::Sender<AppMsg>;

/// Capacity of the channel between consensus and the application.
pub const APP_CHANNEL_CAPACITY: usize = 16;

/// A single validator: proposes and decides every block itself at a fixed interval.
pub struct SoloProducer {
    pub app: AppSender,
    pub block_interval: Duration,
}

impl SoloProducer {
    /// Runs until `shutdown` turns true or the application goes away.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(AppMsg::ConsensusReady { reply }).await?;
        let mut height = answer.await.map_err(|_| gone())?;
        let mut ticker = tokio::time::interval(self.block_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return Ok(());
            }
            let time_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let (reply, answer) = oneshot::channel();
            self.send(AppMsg::GetValue {
                height,
                time_ms,
                reply,
            })
            .await?;
            let block = answer.await.map_err(|_| gone())??;
            let (reply, answer) = oneshot::channel();
            self.send(AppMsg::Decided {
                block: Box::new(block),
                reply,
            })
            .await?;
            let committed = answer.await.map_err(|_| gone())??;
            tracing::debug!(
                height = committed.height,
                txs = committed.txs,
                "block committed"
            );
            height = committed.height + 1;
        }
    }

    async fn send(&self, msg: AppMsg) -> Result<(), AppError> {
        self.app.send(msg).await.map_err(|_| gone())
    }
}

fn gone() -> AppError {
    AppError("the application stopped".into())
}

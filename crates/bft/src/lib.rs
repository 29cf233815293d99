//! Piazza on Malachite (Tendermint BFT, `arc-malachitebft-*` 0.8.2, app-channel API): the
//! consensus `Context` for Piazza's blocks, the canonical codec of every consensus message, ed25519
//! signing with Piazza's keys, and the app loop that answers Malachite's `AppMsg`s by talking to
//! the application over `piazza_consensus::AppMsg`. [`start_node`] runs one node: the validator
//! set of each height comes from the ledger (`AppMsg::GetValidatorSet`), and transactions travel
//! between nodes as `ProposalPart::Transactions` on Malachite's proposal-part gossip.
//!
//! Invariants:
//! - Consensus decides a block id (its hash); the block travels as proposal parts and is
//!   executed and committed by the application behind `piazza_consensus::AppMsg` only.
//! - Every consensus signature is Piazza's ed25519 (ZIP-215 rule) over `domain ‖ chain id ‖
//!   canonical bytes`; every decoder is bounded and never panics on peer bytes.
//! - A decided block and its commit certificate are durable before `Decided` is answered; the
//!   proposal for a (height, round) is persisted before it is streamed and rebuilt identically.
//! - A synced block counts only after the engine checked its certificate against the height's
//!   set and the application executed it to its header's state root.
//! - No ML dependency: this crate reaches the application only through the boundary.

pub mod app;
pub mod codec;
pub mod context;
pub mod node;
pub mod signing;
pub mod store;
pub mod streams;

pub use codec::{PiazzaCodec, PART_DATA_BYTES_MAX};
pub use context::{
    BlockId, Height, PiazzaContext, Proposal, ProposalPart, Validator, ValidatorAddress,
    ValidatorSet, Vote,
};
pub use node::{build_engine, start, start_node, BftConfig, BftHandle, Engine, StartError};
pub use signing::{KeySigner, KeyVerifier, PiazzaSigning};

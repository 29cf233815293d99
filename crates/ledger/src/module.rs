//! The one shape every ledger module has.

use crate::arbitration::Arbiter;
use crate::error::TxError;
use crate::event::Event;
use crate::state::StateDelta;
use piazza_primitives::{Address, Hash, PublicKey};

/// A genesis document the chain cannot start from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    #[error("invalid genesis: {0}")]
    Invalid(String),
}

/// What a block gives the modules: height, time and randomness come from the header, never from
/// the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockContext {
    pub chain_id: String,
    pub height: u64,
    pub time_ms: u64,
    pub randomness: Hash,
    pub proposer: PublicKey,
}

/// What one transaction gives its messages.
pub struct TxContext<'a> {
    pub block: &'a BlockContext,
    pub sender: Address,
    /// The sender's key (`sender` is its address).
    pub sender_key: PublicKey,
    pub tx_hash: Hash,
    pub events: Vec<Event>,
    /// Decides disputes by re-execution (`verify`); the node wires in the engines' arbiter.
    pub arbiter: &'a dyn Arbiter,
}

impl TxContext<'_> {
    pub fn emit(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// A ledger module: types, state keys (in its `state_key` module), events, errors, then these
/// hooks. Modules are stateless types; all state lives in the [`StateDelta`].
pub trait Module {
    type Msg;
    /// The module's section of the genesis document.
    type Genesis: ?Sized;
    /// Prefix of every state key and event kind this module owns.
    const NAME: &'static str;

    /// Metered cost of a message in fee units, before the per-byte charge.
    fn fee_units(msg: &Self::Msg) -> u64;
    /// Rules that need no state. Failing here makes the whole transaction invalid.
    fn check_stateless(msg: &Self::Msg) -> Result<(), TxError>;
    /// Rules that need state. Failing here (or in `execute`) fails the transaction's messages;
    /// its fee is still charged.
    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Self::Msg,
    ) -> Result<(), TxError>;
    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Self::Msg,
    ) -> Result<(), TxError>;

    fn init_chain(state: &mut StateDelta<'_>, genesis: &Self::Genesis) -> Result<(), GenesisError>;
    fn begin_block(_state: &mut StateDelta<'_>, _block: &BlockContext, _events: &mut Vec<Event>) {}
    fn end_block(_state: &mut StateDelta<'_>, _block: &BlockContext, _events: &mut Vec<Event>) {}
}

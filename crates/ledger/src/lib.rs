//! Piazza's ledger: transactions, blocks, the modules, and the state transition.
//!
//! Invariants:
//! - Execution is a pure function of (state, block header, transactions): no IO, no clock, no OS
//!   randomness, no floats, no iteration over unordered maps. Time and randomness come from the
//!   header.
//! - Every module has one shape ([`module::Module`]): messages, state keys (its `state_key`
//!   module), events, errors with stable codes, stateless check, stateful check + execute,
//!   block hooks.
//! - A transaction is atomic: its fee and nonce are always applied once it is included; its
//!   messages apply all or none.
//! - The ledger knows nothing of storage, networking or JSON-RPC: it reads through
//!   [`state::StateRead`] and returns writes.
//!
//! ```
//! use piazza_ledger::{bank, genesis::*, executor::*, module::BlockContext, staking::Role, tx::*};
//! use piazza_primitives::{Amount, Hash, SecretKey};
//! let key = SecretKey::from_seed([1; 32]);
//! let me = key.public_key().address();
//! let genesis = Genesis {
//!     chain_id: "doc".into(), genesis_time_ms: 0, fees: FeeParams::default(), staking: Default::default(),
//!     accounts: vec![GenesisAccount { address: me, balance: Amount::pza(10_000) }],
//!     bonds: vec![GenesisBond { address: me, role: Role::Validator, amount: Amount::pza(1_000) }],
//!     models: vec![], compute: Default::default(), verify: Default::default(), sessions: Default::default(),
//!     storage: Default::default(), agents: Default::default(),
//! };
//! let state: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
//!     init_chain(&genesis).unwrap().into_iter().map(|(k, v)| (k, v.unwrap())).collect();
//! let tx = Transaction { chain_id: "doc".into(), sender: key.public_key(), nonce: 0, max_fee: Amount::pza(1),
//!     messages: vec![Message::Bank(bank::Msg::Send { to: piazza_primitives::Address([2; 20]), amount: Amount::pza(5) })] }.sign(&key);
//! let block = BlockContext { chain_id: "doc".into(), height: 1, time_ms: 1, randomness: Hash::ZERO, proposer: key.public_key() };
//! let mut executor = BlockExecutor::begin(&state, block);
//! assert_eq!(executor.apply_tx(&tx, false).unwrap().status, piazza_ledger::block::TxStatus::Ok);
//! ```

pub mod agents;
pub mod arbitration;
pub mod bank;
pub mod block;
pub mod compute;
pub mod data;
pub mod draw;
pub mod error;
pub mod event;
pub mod executor;
pub mod genesis;
pub mod grants;
pub mod job;
pub mod limits;
pub mod list;
pub mod models;
pub mod module;
pub mod sessions;
pub mod staking;
pub mod state;
pub mod storage;
pub mod tx;
pub mod verify;

pub use error::{ErrorCode, TxError};

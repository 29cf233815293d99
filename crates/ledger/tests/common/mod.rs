//! The pure executor as a chain: genesis, blocks of signed transactions, and the messages
//! the market and verification tests send.
#![allow(dead_code)]

use piazza_ledger::bank;
use piazza_ledger::block::{Event, Receipt, TxStatus};
use piazza_ledger::compute::{self, JobParams, Offer};
use piazza_ledger::executor::{init_chain, BlockExecutor};
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::models::{ModelKind, ModelRecord};
use piazza_ledger::module::BlockContext;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use std::collections::BTreeMap;

pub struct Chain {
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub height: u64,
    pub nonces: BTreeMap<Address, u64>,
    pub validator: SecretKey,
}

pub fn model_owner() -> Address {
    Address([0x0e; 20])
}

impl Chain {
    pub fn new(users: &[&SecretKey], compute: compute::Params) -> Chain {
        Chain::with_verify(users, compute, Default::default())
    }

    pub fn with_verify(
        users: &[&SecretKey],
        compute: compute::Params,
        verify: piazza_ledger::verify::Params,
    ) -> Chain {
        let validator = SecretKey::from_seed([99; 32]);
        let mut accounts: Vec<GenesisAccount> = users
            .iter()
            .map(|k| GenesisAccount {
                address: k.public_key().address(),
                balance: Amount::pza(10_000),
            })
            .collect();
        accounts.push(GenesisAccount {
            address: validator.public_key().address(),
            balance: Amount::pza(10_000),
        });
        let model = |name: &str, kind| ModelRecord {
            name: name.into(),
            kind,
            architecture: "test".into(),
            config_hash: Hash::of("c", &[name.as_bytes()]),
            weights_commitment: Hash::of("w", &[name.as_bytes()]),
            tokenizer_hash: Hash::of("t", &[name.as_bytes()]),
            owner: model_owner(),
            license: "apache-2.0".into(),
            price_floor: Amount::new(1_000),
            numeric: Default::default(),
            files: None,
            lineage: Default::default(),
        };
        let genesis = Genesis {
            chain_id: "compute".into(),
            genesis_time_ms: 0,
            fees: FeeParams::default(),
            staking: staking::Params::default(),
            accounts,
            bonds: vec![GenesisBond {
                address: validator.public_key().address(),
                role: Role::Validator,
                amount: Amount::pza(1_000),
            }],
            models: vec![
                model("embed", ModelKind::Embedding),
                model("chat", ModelKind::Generation),
            ],
            compute,
            verify,
            sessions: Default::default(),
            storage: Default::default(),
            agents: Default::default(),
        };
        let state = init_chain(&genesis)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap()))
            .collect();
        Chain {
            state,
            height: 0,
            nonces: BTreeMap::new(),
            validator,
        }
    }

    pub fn tx(
        &mut self,
        key: &SecretKey,
        message: Message,
    ) -> piazza_ledger::tx::SignedTransaction {
        let nonce = self.nonces.entry(key.public_key().address()).or_default();
        let tx = Transaction {
            chain_id: "compute".into(),
            sender: key.public_key(),
            nonce: *nonce,
            max_fee: Amount::pza(1),
            messages: vec![message],
        }
        .sign(key);
        *nonce += 1;
        tx
    }

    /// Runs one block; returns the receipts and the block-hook events.
    pub fn block(
        &mut self,
        txs: Vec<piazza_ledger::tx::SignedTransaction>,
    ) -> (Vec<Receipt>, Vec<Event>) {
        self.height += 1;
        let context = BlockContext {
            chain_id: "compute".into(),
            height: self.height,
            time_ms: self.height,
            randomness: Hash::of("r", &[&self.height.to_le_bytes()]),
            proposer: self.validator.public_key(),
        };
        let outcome = {
            let mut executor = BlockExecutor::begin(&self.state, context);
            for tx in &txs {
                executor.apply_tx(tx, false).unwrap();
            }
            executor.finish()
        };
        for (k, v) in outcome.writes {
            match v {
                Some(v) => self.state.insert(k, v),
                None => self.state.remove(&k),
            };
        }
        (outcome.receipts, outcome.events)
    }

    pub fn one(&mut self, key: &SecretKey, message: Message) -> (Receipt, Vec<Event>) {
        let tx = self.tx(key, message);
        let (mut receipts, events) = self.block(vec![tx]);
        (receipts.remove(0), events)
    }

    pub fn balance(&self, address: &Address) -> Amount {
        bank::account(&StateDelta::new(&self.state), address).balance
    }

    pub fn job(&self, id: u64) -> compute::Job {
        compute::job(&StateDelta::new(&self.state), id).unwrap()
    }
}

pub fn failed(receipt: &Receipt) -> Option<&str> {
    match &receipt.status {
        TxStatus::Ok => None,
        TxStatus::Failed { code, .. } => {
            piazza_ledger::ErrorCode::from_code(*code).map(|c| c.name())
        }
    }
}

pub fn register(model: &str, price: u128) -> Message {
    Message::Compute(compute::Msg::RegisterProvider {
        offer: Offer {
            models: vec![model.into()],
            price_per_unit: Amount::new(price),
            capacity: 4,
            endpoint: "http://p".into(),
            units_per_block: 1_000,
        },
        stake: Amount::pza(500),
    })
}

pub fn submit(model: &str, input: &[u8], max_units: u64, max_price: Amount) -> Message {
    Message::Compute(compute::Msg::SubmitJob {
        model: model.into(),
        input: input.to_vec(),
        params: JobParams::default(),
        max_units,
        max_price,
    })
}

/// The input tokens every [`post`] states.
pub const POSTED_INPUT_UNITS: u64 = 17;

pub fn post(job: u64, output: &[u8], units: u64) -> Message {
    Message::Compute(compute::Msg::PostResult {
        job,
        output: output.to_vec(),
        output_hash: compute::output_hash(output),
        trace_root: Hash([5; 32]),
        work_units: units,
        input_units: POSTED_INPUT_UNITS,
    })
}

pub fn attribute(events: &[Event], kind: &str, key: &str) -> String {
    events
        .iter()
        .find(|e| e.kind == kind)
        .and_then(|e| e.attribute(key))
        .unwrap_or_else(|| panic!("no {kind}.{key} in {events:?}"))
        .to_string()
}

#![allow(dead_code)]

use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::staking::{self, Role};
use piazza_node::{NodeConfig, NodeHandle};
use piazza_primitives::{Amount, SecretKey};
use std::time::Duration;

pub fn validator_key() -> SecretKey {
    SecretKey::from_seed([42; 32])
}

pub fn user_key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

/// A signed transfer of `amount` base units from `user` at `nonce`, fee up to 1 PZA.
pub fn transfer(
    user: &SecretKey,
    nonce: u64,
    to: piazza_primitives::Address,
    amount: u128,
) -> piazza_ledger::tx::SignedTransaction {
    piazza_ledger::tx::Transaction {
        chain_id: "piazza-test".into(),
        sender: user.public_key(),
        nonce,
        max_fee: Amount::pza(1),
        messages: vec![piazza_ledger::tx::Message::Bank(
            piazza_ledger::bank::Msg::Send {
                to,
                amount: Amount::new(amount),
            },
        )],
    }
    .sign(user)
}

pub fn genesis(users: &[SecretKey]) -> Genesis {
    let validator = validator_key().public_key().address();
    let mut accounts = vec![GenesisAccount {
        address: validator,
        balance: Amount::pza(10_000),
    }];
    accounts.extend(users.iter().map(|k| GenesisAccount {
        address: k.public_key().address(),
        balance: Amount::pza(1_000),
    }));
    Genesis {
        chain_id: "piazza-test".into(),
        genesis_time_ms: 1_700_000_000_000,
        fees: FeeParams::default(),
        staking: staking::Params {
            unbonding_delay_blocks: 3,
            min_bond: [
                Amount::pza(1_000),
                Amount::pza(100),
                Amount::pza(100),
                Amount::pza(100),
            ],
        },
        accounts,
        bonds: vec![GenesisBond {
            address: validator,
            role: Role::Validator,
            amount: Amount::pza(1_000),
        }],
        models: vec![],
        compute: Default::default(),
        verify: Default::default(),
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    }
}

pub struct TestNode {
    pub node: NodeHandle,
    pub client: piazza_client::Client,
    pub url: String,
    _dir: tempfile::TempDir,
}

pub async fn start(users: &[SecretKey]) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.block_interval = Duration::from_millis(100);
    let node = piazza_node::start(config, Some(genesis(users)), validator_key())
        .await
        .unwrap();
    let url = format!("http://{}", node.rpc_addr);
    TestNode {
        client: piazza_client::Client::new(&url),
        url,
        node,
        _dir: dir,
    }
}

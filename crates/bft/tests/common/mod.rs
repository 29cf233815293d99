//! In-process validators for the tests and the benchmark: each with its own data directory,
//! application (`piazza_node::App`), consensus home and a libp2p port on 127.0.0.1.
#![allow(dead_code)]

use malachitebft_app_channel::app::types::core::LinearTimeouts;
use piazza_bft::context::ValidatorSet;
use piazza_bft::{BftConfig, BftHandle};
use piazza_consensus::APP_CHANNEL_CAPACITY;
use piazza_ledger::bank;
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_mempool::MempoolConfig;
use piazza_node::App;
use piazza_primitives::{Address, Amount, SecretKey};
use piazza_store::Store;
use std::sync::Arc;
use std::time::Duration;

pub const CHAIN_ID: &str = "piazza-bft-test";

pub fn validator_key(i: usize) -> SecretKey {
    let mut seed = [0x5a; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SecretKey::from_seed(seed)
}

pub fn user_key(i: usize) -> SecretKey {
    let mut seed = [0x11; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SecretKey::from_seed(seed)
}

/// One genesis for all: validators bonded with 1,000 PZA each, users funded.
pub fn genesis(validators: &[SecretKey], users: &[SecretKey]) -> Genesis {
    let funded = |keys: &[SecretKey], pza: u64| -> Vec<GenesisAccount> {
        keys.iter()
            .map(|k| GenesisAccount {
                address: k.public_key().address(),
                balance: Amount::pza(pza),
            })
            .collect()
    };
    let mut accounts = funded(validators, 10_000);
    accounts.extend(funded(users, 1_000));
    let bonds = validators
        .iter()
        .map(|k| GenesisBond {
            address: k.public_key().address(),
            role: Role::Validator,
            amount: Amount::pza(1_000),
        })
        .collect();
    Genesis {
        chain_id: CHAIN_ID.into(),
        genesis_time_ms: 1_700_000_000_000,
        fees: FeeParams::default(),
        staking: staking::Params::default(),
        accounts,
        bonds,
        models: vec![],
        compute: Default::default(),
        verify: Default::default(),
        sessions: Default::default(),
    }
}

pub fn transfer(key: &SecretKey, nonce: u64) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN_ID.into(),
        sender: key.public_key(),
        nonce,
        max_fee: Amount::pza(1),
        messages: vec![Message::Bank(bank::Msg::Send {
            to: Address([9; 20]),
            amount: Amount::new(1),
        })],
    }
    .sign(key)
}

/// Timeouts for validators on one machine: short, so a missed round costs little.
pub fn local_timeouts() -> LinearTimeouts {
    LinearTimeouts {
        propose: Duration::from_millis(1_000),
        propose_delta: Duration::from_millis(200),
        prevote: Duration::from_millis(300),
        prevote_delta: Duration::from_millis(100),
        precommit: Duration::from_millis(300),
        precommit_delta: Duration::from_millis(100),
        rebroadcast: Duration::from_millis(2_000),
        ..LinearTimeouts::default()
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the engine to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn multiaddr(port: u16) -> malachitebft_app_channel::app::net::Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

pub struct TestValidator {
    pub app: Arc<App>,
    pub bft: Option<BftHandle>,
    pub port: u16,
}

impl TestValidator {
    pub fn height(&self) -> u64 {
        self.app.head().unwrap().height
    }

    pub async fn stop(&mut self) {
        if let Some(bft) = self.bft.take() {
            bft.shutdown().await;
        }
    }
}

/// Starts validator `index` of `keys` with its data under `dir`, peering with `ports`.
pub async fn start_validator(
    dir: &std::path::Path,
    keys: &[SecretKey],
    index: usize,
    genesis: &Genesis,
    ports: &[u16],
) -> TestValidator {
    let key = keys[index].clone();
    let data = dir.join(format!("validator-{index}"));
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::open(&data.join("chain.redb")).unwrap();
    let app =
        Arc::new(App::open(store, Some(genesis), key.clone(), MempoolConfig::default()).unwrap());
    let (app_tx, app_rx) = tokio::sync::mpsc::channel(APP_CHANNEL_CAPACITY);
    tokio::spawn(app.clone().serve(app_rx));
    let public: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
    let validators = ValidatorSet::from_genesis(genesis, &public).unwrap();
    let mut config = BftConfig::new(
        data.join("consensus"),
        CHAIN_ID.into(),
        multiaddr(ports[index]),
    );
    config.moniker = format!("validator-{index}");
    config.timeouts = local_timeouts();
    config.persistent_peers = ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, p)| multiaddr(*p))
        .collect();
    let bft = piazza_bft::start(config, key, validators, app_tx)
        .await
        .unwrap();
    TestValidator {
        app,
        bft: Some(bft),
        port: ports[index],
    }
}

/// Starts validator `index` again once its previous application (`previous`) has closed its
/// store (the engine's app loop and the serving task drop it shortly after a stop).
pub async fn start_validator_after(
    dir: &std::path::Path,
    keys: &[SecretKey],
    index: usize,
    genesis: &Genesis,
    ports: &[u16],
    previous: std::sync::Weak<App>,
) -> TestValidator {
    let closed = wait_until(Duration::from_secs(10), || previous.strong_count() == 0).await;
    assert!(closed, "the stopped validator's application is still open");
    start_validator(dir, keys, index, genesis, ports).await
}

/// Waits (polling every 20 ms) until `done` holds or `limit` passes; returns whether it held.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

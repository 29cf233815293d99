//! Validators in the ledger: records from genesis and from bonds, voting power in whole PZA,
//! the set of each height computed from committed state with `VALIDATOR_SET_DELAY`, the
//! bound on the set, and the genesis `validators` section.

use piazza_ledger::block::{Event, Receipt, TxStatus};
use piazza_ledger::executor::{init_network, BlockExecutor};
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond, NetworkGenesis};
use piazza_ledger::module::BlockContext;
use piazza_ledger::staking::validators::{
    self, GenesisValidator, ACTIVE_VALIDATORS_MAX, VALIDATOR_SET_DELAY,
};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Address, Amount, Hash, PublicKey, SecretKey};
use std::collections::BTreeMap;

const CHAIN_ID: &str = "validators";

fn key(i: u64) -> SecretKey {
    let mut seed = [0x7c; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_seed(seed)
}

/// A genesis where keys `0..validators` are validators bonding `stake(i)` and every key in
/// `0..accounts` holds 100,000 PZA.
fn genesis(validators: u64, accounts: u64, stake: impl Fn(u64) -> Amount) -> NetworkGenesis {
    NetworkGenesis {
        genesis: Genesis {
            chain_id: CHAIN_ID.into(),
            genesis_time_ms: 0,
            fees: FeeParams::default(),
            staking: staking::Params::default(),
            accounts: (0..accounts)
                .map(|i| GenesisAccount {
                    address: key(i).public_key().address(),
                    balance: Amount::pza(100_000),
                })
                .collect(),
            bonds: (0..validators)
                .map(|i| GenesisBond {
                    address: key(i).public_key().address(),
                    role: Role::Validator,
                    amount: stake(i),
                })
                .collect(),
            models: vec![],
            compute: Default::default(),
            verify: Default::default(),
            sessions: Default::default(),
            storage: Default::default(),
            agents: Default::default(),
        },
        validators: (0..validators)
            .map(|i| GenesisValidator {
                consensus_key: key(i).public_key(),
            })
            .collect(),
    }
}

struct Chain {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    height: u64,
    nonces: BTreeMap<Address, u64>,
}

impl Chain {
    fn new(genesis: &NetworkGenesis) -> Chain {
        let state = init_network(genesis)
            .unwrap()
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        Chain {
            state,
            height: 0,
            nonces: BTreeMap::new(),
        }
    }

    /// Runs one block with one transaction per `(key, message)`; returns receipts and events.
    fn block(&mut self, messages: Vec<(&SecretKey, Message)>) -> (Vec<Receipt>, Vec<Event>) {
        self.height += 1;
        let txs: Vec<_> = messages
            .into_iter()
            .map(|(k, message)| {
                let nonce = self.nonces.entry(k.public_key().address()).or_default();
                let tx = Transaction {
                    chain_id: CHAIN_ID.into(),
                    sender: k.public_key(),
                    nonce: *nonce,
                    max_fee: Amount::pza(1),
                    messages: vec![message],
                }
                .sign(k);
                *nonce += 1;
                tx
            })
            .collect();
        let context = BlockContext {
            chain_id: CHAIN_ID.into(),
            height: self.height,
            time_ms: self.height,
            randomness: Hash::of("r", &[&self.height.to_le_bytes()]),
            proposer: key(0).public_key(),
        };
        let mut executor = BlockExecutor::begin(&self.state, context);
        for tx in &txs {
            executor.apply_tx(tx, false).unwrap();
        }
        let outcome = executor.finish();
        for (k, v) in outcome.writes {
            match v {
                Some(v) => self.state.insert(k, v),
                None => self.state.remove(&k),
            };
        }
        (outcome.receipts, outcome.events)
    }

    /// The set of `height` as this chain's committed state gives it: `(key, power)` pairs.
    fn set(&self, height: u64) -> Vec<(PublicKey, u64)> {
        let view = StateDelta::new(&self.state);
        validators::validator_set(&view, height)
            .map(|s| {
                s.validators
                    .iter()
                    .map(|v| (v.consensus_key, v.voting_power))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn bond(amount: Amount) -> Message {
    Message::Staking(staking::Msg::Bond {
        role: Role::Validator,
        amount,
    })
}

fn unbond(amount: Amount) -> Message {
    Message::Staking(staking::Msg::Unbond {
        role: Role::Validator,
        amount,
    })
}

fn succeeded(receipts: &[Receipt]) -> bool {
    receipts.iter().all(|r| matches!(r.status, TxStatus::Ok))
}

#[test]
fn genesis_validators_sign_from_height_one_with_power_in_whole_pza() {
    let chain = Chain::new(&genesis(4, 4, |i| {
        Amount::pza(1_000 + i)
            .checked_add(Amount::new(999))
            .unwrap()
    }));
    for height in [1, 2, 50] {
        let mut set = chain.set(height);
        set.sort();
        let mut expected: Vec<_> = (0..4).map(|i| (key(i).public_key(), 1_000 + i)).collect();
        expected.sort();
        assert_eq!(set, expected, "height {height}");
    }
    let view = StateDelta::new(&chain.state);
    let record = validators::validator(&view, &key(2).public_key().address()).unwrap();
    assert_eq!(record.consensus_key, key(2).public_key());
    assert_eq!(validators::operators(&view).len(), 4);
}

#[test]
fn a_new_validator_joins_at_the_bond_height_plus_the_delay() {
    let mut chain = Chain::new(&genesis(4, 5, |_| Amount::pza(1_000)));
    chain.block(vec![]);
    chain.block(vec![]);
    let joiner = key(4);
    let (receipts, events) = chain.block(vec![(&joiner, bond(Amount::pza(3_000)))]);
    assert!(succeeded(&receipts));
    let bonded_at = chain.height;
    let effective = bonded_at + VALIDATOR_SET_DELAY;
    assert!(events.iter().any(|e| e.kind == "staking.validator_set"));
    // Committed state at the bond's height already knows both sets.
    assert_eq!(chain.set(effective - 1).len(), 4);
    let set = chain.set(effective);
    assert_eq!(set.len(), 5);
    assert_eq!(set[0], (joiner.public_key(), 3_000), "largest first");
    // The new set stays in force as blocks pass; a superseded set is read from the state
    // committed before its height (a node's versioned state), not from the latest.
    for _ in 0..3 {
        chain.block(vec![]);
        assert_eq!(chain.set(effective).len(), 5);
        assert_eq!(chain.set(chain.height + 1).len(), 5);
    }
    assert!(chain.set(effective - 1).is_empty());
}

#[test]
fn stake_changes_move_voting_power_and_a_full_unbond_leaves_the_set() {
    let mut chain = Chain::new(&genesis(4, 4, |_| Amount::pza(1_000)));
    let (receipts, _) = chain.block(vec![(&key(1), bond(Amount::pza(500)))]);
    assert!(succeeded(&receipts));
    let power = |chain: &Chain, height: u64, i: u64| {
        chain
            .set(height)
            .into_iter()
            .find(|(k, _)| *k == key(i).public_key())
            .map(|(_, p)| p)
    };
    let h = chain.height;
    assert_eq!(power(&chain, h + 1, 1), Some(1_000));
    assert_eq!(power(&chain, h + VALIDATOR_SET_DELAY, 1), Some(1_500));

    let (receipts, _) = chain.block(vec![(&key(3), unbond(Amount::pza(1_000)))]);
    assert!(succeeded(&receipts));
    let h = chain.height;
    assert_eq!(power(&chain, h + 1, 3), Some(1_000));
    assert_eq!(power(&chain, h + VALIDATOR_SET_DELAY, 3), None);
    let view = StateDelta::new(&chain.state);
    assert!(validators::validator(&view, &key(3).public_key().address()).is_none());
    assert_eq!(validators::operators(&view).len(), 3);

    // A partial unbond below the minimum is refused; the set is unchanged.
    let (receipts, _) = chain.block(vec![(&key(0), unbond(Amount::pza(500)))]);
    assert!(!succeeded(&receipts));
    assert_eq!(
        power(&chain, chain.height + VALIDATOR_SET_DELAY, 0),
        Some(1_000)
    );
}

#[test]
fn a_bond_below_the_validator_minimum_joins_nobody() {
    let mut chain = Chain::new(&genesis(1, 2, |_| Amount::pza(1_000)));
    let (receipts, _) = chain.block(vec![(&key(1), bond(Amount::pza(999)))]);
    assert!(!succeeded(&receipts));
    assert_eq!(chain.set(chain.height + VALIDATOR_SET_DELAY).len(), 1);
    let view = StateDelta::new(&chain.state);
    assert!(validators::validator(&view, &key(1).public_key().address()).is_none());
}

#[test]
fn the_last_validator_leaving_keeps_the_set() {
    let mut chain = Chain::new(&genesis(1, 1, |_| Amount::pza(1_000)));
    let (receipts, events) = chain.block(vec![(&key(0), unbond(Amount::pza(1_000)))]);
    assert!(succeeded(&receipts));
    assert!(events
        .iter()
        .any(|e| e.kind == "staking.validator_set_kept"));
    assert_eq!(
        chain.set(chain.height + VALIDATOR_SET_DELAY),
        vec![(key(0).public_key(), 1_000)]
    );
}

#[test]
fn the_set_holds_the_largest_bonds_up_to_its_bound() {
    let count = ACTIVE_VALIDATORS_MAX as u64 + 1;
    let chain = Chain::new(&genesis(count, count, |i| Amount::pza(1_000 + i)));
    let set = chain.set(1);
    assert_eq!(set.len(), ACTIVE_VALIDATORS_MAX);
    assert!(
        !set.iter().any(|(k, _)| *k == key(0).public_key()),
        "the smallest bond is left out"
    );
    assert!(set.windows(2).all(|w| w[0].1 >= w[1].1));
}

#[test]
fn a_chain_without_validator_records_schedules_no_set() {
    let plain = genesis(1, 2, |_| Amount::pza(1_000)).genesis;
    let writes = piazza_ledger::executor::init_chain(&plain).unwrap();
    assert!(
        !writes.keys().any(|k| k.starts_with(b"staking/valid")),
        "a producer's chain writes no validator keys"
    );
    let state: BTreeMap<_, _> = writes.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
    assert!(validators::validator_set(&StateDelta::new(&state), 1).is_none());
}

#[test]
fn genesis_refuses_a_validator_without_a_bond_or_twice() {
    let mut unbonded = genesis(2, 3, |_| Amount::pza(1_000));
    unbonded.validators.push(GenesisValidator {
        consensus_key: key(2).public_key(),
    });
    assert!(init_network(&unbonded).is_err());
    let mut twice = genesis(2, 2, |_| Amount::pza(1_000));
    twice.validators.push(twice.validators[0].clone());
    assert!(init_network(&twice).is_err());
}

#[test]
fn the_genesis_document_carries_validators_beside_the_genesis_fields() {
    let document = genesis(2, 2, |_| Amount::pza(1_000));
    let json = serde_json::to_value(&document).unwrap();
    assert_eq!(json["chain_id"], CHAIN_ID);
    assert_eq!(
        json["validators"][0]["consensus_key"],
        key(0).public_key().to_hex()
    );
    let back: NetworkGenesis = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, document);
    // A plain genesis document reads as a network genesis without validators.
    let plain: NetworkGenesis =
        serde_json::from_value(serde_json::to_value(&document.genesis).unwrap()).unwrap();
    assert!(plain.validators.is_empty());
    // A key that is not 64 hex digits is refused.
    let mut bad = json;
    bad["validators"][0]["consensus_key"] = "+f".repeat(32).into();
    assert!(serde_json::from_value::<NetworkGenesis>(bad).is_err());
}

//! Property tests of the ledger's invariants over random transaction sequences.

use piazza_codec::Decode;
use piazza_ledger::bank::{self, Account};
use piazza_ledger::block::TxStatus;
use piazza_ledger::executor::{init_chain, BlockExecutor, Writes};
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::module::BlockContext;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use proptest::prelude::*;
use std::collections::BTreeMap;

const USERS: usize = 4;

fn keys() -> Vec<SecretKey> {
    (0..USERS)
        .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
        .collect()
}

fn genesis(keys: &[SecretKey]) -> Genesis {
    let staking = staking::Params {
        unbonding_delay_blocks: 2,
        min_bond: [Amount::pza(10); 4],
    };
    Genesis {
        chain_id: "prop".into(),
        genesis_time_ms: 0,
        fees: FeeParams::default(),
        staking,
        accounts: keys
            .iter()
            .map(|k| GenesisAccount {
                address: k.public_key().address(),
                balance: Amount::pza(1_000),
            })
            .collect(),
        bonds: vec![GenesisBond {
            address: keys[0].public_key().address(),
            role: Role::Validator,
            amount: Amount::pza(100),
        }],
        models: vec![],
        compute: Default::default(),
        verify: Default::default(),
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    }
}

fn apply(state: &mut BTreeMap<Vec<u8>, Vec<u8>>, writes: Writes) {
    for (k, v) in writes {
        match v {
            Some(v) => state.insert(k, v),
            None => state.remove(&k),
        };
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send { from: usize, to: usize, pza: u64 },
    Bond { from: usize, role: u8, pza: u64 },
    Unbond { from: usize, role: u8, pza: u64 },
    StaleNonce { from: usize },
    EndBlock,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..USERS, 0..USERS + 1, 0u64..1_500).prop_map(|(from, to, pza)| Op::Send { from, to, pza }),
        2 => (0..USERS, 0u8..4, 0u64..600).prop_map(|(from, role, pza)| Op::Bond { from, role, pza }),
        2 => (0..USERS, 0u8..4, 0u64..600).prop_map(|(from, role, pza)| Op::Unbond { from, role, pza }),
        1 => (0..USERS).prop_map(|from| Op::StaleNonce { from }),
        2 => Just(Op::EndBlock),
    ]
}

fn tracked_addresses(keys: &[SecretKey]) -> Vec<Address> {
    let mut all: Vec<Address> = keys.iter().map(|k| k.public_key().address()).collect();
    all.push(Address([0xee; 20]));
    all.push(bank::treasury());
    all.push(staking::pool());
    all
}

fn check_invariants(
    state: &BTreeMap<Vec<u8>, Vec<u8>>,
    keys: &[SecretKey],
) -> Result<(), TestCaseError> {
    let view = StateDelta::new(state);
    let supply = bank::supply(&view);
    // Every account in state is one we know, so the sum below covers them all.
    let mut sum = Amount::ZERO;
    for (k, v) in state.range(b"bank/account/".to_vec()..b"bank/account0".to_vec()) {
        let account = Account::from_bytes(v).unwrap();
        prop_assert!(account.balance <= supply, "balance above supply at {:?}", k);
        sum = sum.checked_add(account.balance).unwrap();
    }
    prop_assert_eq!(sum, supply, "balances must sum to the supply");
    let tracked: Amount = tracked_addresses(keys)
        .iter()
        .map(|a| bank::account(&view, a).balance)
        .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap());
    prop_assert_eq!(tracked, supply);
    let mut staked = Amount::ZERO;
    for key in keys {
        let address = key.public_key().address();
        for role in Role::ALL {
            staked = staked
                .checked_add(staking::bonded(&view, &address, role))
                .unwrap();
        }
        staked = staked
            .checked_add(staking::unbonding(&view, &address))
            .unwrap();
    }
    prop_assert_eq!(
        bank::account(&view, &staking::pool()).balance,
        staked,
        "the pool holds exactly the stake"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn supply_is_conserved_and_stake_is_backed(ops in proptest::collection::vec(op(), 1..80)) {
        let keys = keys();
        let mut state: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        apply(&mut state, init_chain(&genesis(&keys)).unwrap());
        let initial_supply = bank::supply(&StateDelta::new(&state));
        check_invariants(&state, &keys)?;
        let mut height = 1;
        let mut pending: Vec<Op> = Vec::new();
        for op in ops.into_iter().chain([Op::EndBlock]) {
            if !matches!(op, Op::EndBlock) {
                pending.push(op);
                continue;
            }
            let context = BlockContext { chain_id: "prop".into(), height, time_ms: height, randomness: Hash::of("r", &[&height.to_le_bytes()]), proposer: keys[0].public_key() };
            let writes = {
                let mut executor = BlockExecutor::begin(&state, context);
                let mut nonces: Vec<u64> = keys.iter().map(|k| bank::account(&StateDelta::new(&state), &k.public_key().address()).nonce).collect();
                for op in pending.drain(..) {
                    let (from, message, nonce_offset) = match op {
                        Op::Send { from, to, pza } => {
                            let to = if to == USERS { Address([0xee; 20]) } else { keys[to].public_key().address() };
                            (from, Message::Bank(bank::Msg::Send { to, amount: Amount::pza(pza) }), 0)
                        }
                        Op::Bond { from, role, pza } => (from, Message::Staking(staking::Msg::Bond { role: Role::ALL[role as usize], amount: Amount::pza(pza) }), 0),
                        Op::Unbond { from, role, pza } => (from, Message::Staking(staking::Msg::Unbond { role: Role::ALL[role as usize], amount: Amount::pza(pza) }), 0),
                        Op::StaleNonce { from } => (from, Message::Bank(bank::Msg::Send { to: Address([0xee; 20]), amount: Amount::new(1) }), 1),
                        Op::EndBlock => unreachable!(),
                    };
                    let nonce = nonces[from].wrapping_sub(nonce_offset);
                    let tx = Transaction { chain_id: "prop".into(), sender: keys[from].public_key(), nonce, max_fee: Amount::pza(1), messages: vec![message] }.sign(&keys[from]);
                    match executor.apply_tx(&tx, false) {
                        Ok(receipt) => {
                            prop_assert!(nonce_offset == 0, "a stale nonce must not be included");
                            if let TxStatus::Failed { code, .. } = &receipt.status {
                                prop_assert!(*code >= 7, "failures are stateful: {}", code);
                            }
                            nonces[from] += 1;
                        }
                        Err(e) => prop_assert!(nonce_offset == 1 || e.code == piazza_ledger::ErrorCode::InsufficientFunds || e.code == piazza_ledger::ErrorCode::InvalidMessage, "unexpected refusal {}", e),
                    }
                }
                executor.finish().writes
            };
            apply(&mut state, writes);
            check_invariants(&state, &keys)?;
            prop_assert_eq!(bank::supply(&StateDelta::new(&state)), initial_supply, "nothing mints or burns here");
            height += 1;
        }
    }
}

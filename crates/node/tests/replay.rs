//! Determinism: independent replays of the same blocks reach the same state roots, bit for bit.

mod common;

use piazza_ledger::bank;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::{Message, Transaction};
use piazza_mempool::MempoolConfig;
use piazza_node::App;
use piazza_primitives::{Address, Amount, SecretKey};
use piazza_store::Store;
use proptest::prelude::*;

fn open(dir: &tempfile::TempDir, name: &str, users: &[SecretKey]) -> App {
    let store = Store::open(&dir.path().join(name)).unwrap();
    App::open(
        store,
        Some(&common::genesis(users)),
        common::validator_key(),
        MempoolConfig::default(),
    )
    .unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Send { from: usize, to: usize, units: u64 },
    Bond { from: usize, pza: u64 },
    Unbond { from: usize, pza: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3, 0usize..4, 1u64..2_000_000_000_000).prop_map(|(from, to, units)| Op::Send { from, to, units }),
        1 => (0usize..3, 50u64..400).prop_map(|(from, pza)| Op::Bond { from, pza }),
        1 => (0usize..3, 50u64..400).prop_map(|(from, pza)| Op::Unbond { from, pza }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn two_replays_reach_the_same_state_roots(blocks in proptest::collection::vec(proptest::collection::vec(op(), 0..12), 1..6)) {
        let users: Vec<SecretKey> = (1..=3).map(common::user_key).collect();
        let dir = tempfile::tempdir().unwrap();
        let origin = open(&dir, "origin.redb", &users);
        let mut nonces = [0u64; 3];
        for (i, ops) in blocks.iter().enumerate() {
            let txs = ops.iter().map(|op| {
                let (from, message) = match op {
                    Op::Send { from, to, units } => {
                        let to = if *to == 3 { Address([7; 20]) } else { users[*to].public_key().address() };
                        (*from, Message::Bank(bank::Msg::Send { to, amount: Amount::new(*units as u128) }))
                    }
                    Op::Bond { from, pza } => (*from, Message::Staking(staking::Msg::Bond { role: Role::Auditor, amount: Amount::pza(*pza) })),
                    Op::Unbond { from, pza } => (*from, Message::Staking(staking::Msg::Unbond { role: Role::Auditor, amount: Amount::pza(*pza) })),
                };
                let tx = Transaction { chain_id: "piazza-test".into(), sender: users[from].public_key(), nonce: nonces[from], max_fee: Amount::pza(1), messages: vec![message] }.sign(&users[from]);
                nonces[from] += 1;
                tx
            }).collect();
            origin.submit_many(txs);
            let block = origin.propose(i as u64 + 1, 1_700_000_000_000 + i as u64 * 1000).unwrap();
            origin.commit(block).unwrap();
            // Whatever was refused at admission or dropped at proposal, start the next block
            // from the committed nonces.
            let snapshot = origin.store().snapshot().unwrap();
            let view = piazza_ledger::state::StateDelta::new(&snapshot);
            for (n, user) in nonces.iter_mut().zip(&users) {
                *n = bank::account(&view, &user.public_key().address()).nonce;
            }
        }
        let head = origin.head().unwrap();
        for replica in ["a.redb", "b.redb"] {
            let app = open(&dir, replica, &users);
            for height in 1..=head.height {
                let block = origin.store().block(height).unwrap().unwrap();
                app.commit(block).unwrap();
                prop_assert_eq!(app.store().state_root(height).unwrap(), origin.store().state_root(height).unwrap());
            }
            prop_assert_eq!(app.head().unwrap(), head);
        }
    }
}

#[test]
fn a_block_with_a_forged_transaction_is_refused() {
    let users = vec![common::user_key(1)];
    let dir = tempfile::tempdir().unwrap();
    let origin = open(&dir, "origin.redb", &users);
    let tx = Transaction {
        chain_id: "piazza-test".into(),
        sender: users[0].public_key(),
        nonce: 0,
        max_fee: Amount::pza(1),
        messages: vec![Message::Bank(bank::Msg::Send {
            to: Address([7; 20]),
            amount: Amount::pza(1),
        })],
    }
    .sign(&users[0]);
    assert!(origin.submit_many(vec![tx]).iter().all(|r| r.is_ok()));
    let block = origin.propose(1, 1_700_000_000_000).unwrap();
    let replica = open(&dir, "replica.redb", &users);
    // Same block, but the transaction's amount changed after signing: the signature fails.
    let mut forged = block.clone();
    forged.txs[0].tx.messages = vec![Message::Bank(bank::Msg::Send {
        to: Address([7; 20]),
        amount: Amount::pza(2),
    })];
    assert!(replica.commit(forged).is_err());
    // A header whose state root lies is refused.
    let mut lying = block.clone();
    lying.header.state_root = piazza_primitives::Hash::ZERO;
    lying.signature = common::validator_key().sign(&lying.header.hash().0);
    let err = replica.commit(lying).unwrap_err();
    assert!(err.0.contains("state root"), "{err}");
    replica.commit(block.clone()).unwrap();
    origin.commit(block).unwrap();
    assert_eq!(replica.head().unwrap(), origin.head().unwrap());
}

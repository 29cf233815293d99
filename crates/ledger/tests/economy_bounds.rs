//! The economy's bounds, each hit: an asset's holder list, a labelling task's labellers; and
//! the data module's refusals with their stable codes.

mod common;

use common::{failed, Chain};
use piazza_ledger::bank::assets::{self, AssetId, HOLDERS_MAX};
use piazza_ledger::bank::{self};
use piazza_ledger::compute;
use piazza_ledger::data::{self, Rule, LABELLERS_MAX};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use std::collections::BTreeMap;

#[test]
fn an_asset_refuses_a_holder_past_its_bound_and_takes_one_when_a_place_frees() {
    let base = BTreeMap::new();
    let mut state = StateDelta::new(&base);
    let id = AssetId::Dataset(1);
    let owner = Address([0xee; 20]);
    assets::register(&mut state, &id, owner, None).unwrap();
    assets::issue(&mut state, &id, &owner, 10_000).unwrap();
    let holder = |i: usize| {
        let mut a = [0u8; 20];
        a[..8].copy_from_slice(&(i as u64).to_le_bytes());
        Address(a)
    };
    // The owner is the first holder; fill the rest.
    for i in 1..HOLDERS_MAX {
        assets::transfer(&mut state, &id, &owner, &holder(i), 1).unwrap();
    }
    assert_eq!(assets::holders(&state, &id).len(), HOLDERS_MAX);
    let before = state.writes().clone();
    let err = assets::transfer(&mut state, &id, &owner, &holder(HOLDERS_MAX), 1).unwrap_err();
    assert_eq!(err.code.name(), "queue_full");
    // The refusal wrote nothing.
    assert_eq!(state.writes(), &before);
    // A holder that empties its holding leaves the list; the newcomer then fits.
    assets::transfer(&mut state, &id, &holder(1), &owner, 1).unwrap();
    assets::transfer(&mut state, &id, &owner, &holder(HOLDERS_MAX), 1).unwrap();
    assert_eq!(assets::holders(&state, &id).len(), HOLDERS_MAX);
    // Revenue still divides exactly among all of them.
    let payer = Address([0xaa; 20]);
    bank::mint(&mut state, &payer, Amount::new(1_000_003)).unwrap();
    assets::pay(&mut state, &payer, &id, Amount::new(1_000_003), &payer).unwrap();
    let owed: u128 = assets::holders(&state, &id)
        .iter()
        .map(|h| assets::owed_scaled(&state, &id, h).unwrap())
        .sum();
    let carry = assets::asset(&state, &id).unwrap().carry_scaled;
    assert_eq!(owed + carry, 1_000_003 * assets::SCALE);
}

#[test]
fn a_labelling_task_refuses_a_labeller_past_its_bound() {
    let keys: Vec<SecretKey> = (0..=LABELLERS_MAX as u32 + 1)
        .map(|i| {
            let mut seed = [0x51; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SecretKey::from_seed(seed)
        })
        .collect();
    let mut chain = Chain::new(&keys.iter().collect::<Vec<_>>(), compute::Params::default());
    let create = Message::Data(data::Msg::CreateLabelTask {
        items: vec![Hash([1; 32])],
        k: 3,
        reward_per_label: Amount::new(10),
        stake: Amount::new(10),
        rule: Rule::Majority,
        join_blocks: 1_000,
        label_blocks: 10,
        price: Amount::ZERO,
        license: String::new(),
    });
    assert_eq!(failed(&chain.one(&keys[0], create).0), None);
    let join = || Message::Data(data::Msg::JoinLabelTask { task: 0 });
    let txs: Vec<_> = keys[1..=LABELLERS_MAX]
        .iter()
        .map(|k| chain.tx(k, join()))
        .collect();
    let (receipts, _) = chain.block(txs);
    assert!(receipts.iter().all(|r| failed(r).is_none()));
    let (r, _) = chain.one(&keys[LABELLERS_MAX + 1], join());
    assert_eq!(failed(&r), Some("queue_full"));
    // Joining twice is refused too.
    let (r, _) = chain.one(&keys[1], join());
    assert_eq!(failed(&r), Some("invalid_message"));
}

#[test]
fn hostile_data_messages_are_refused_with_stable_codes() {
    let (owner, stranger) = (
        SecretKey::from_seed([61; 32]),
        SecretKey::from_seed([62; 32]),
    );
    let mut chain = Chain::new(&[&owner, &stranger], compute::Params::default());
    let register = Message::Data(data::Msg::RegisterDataset {
        blob: Hash([9; 32]),
        schema: "jsonl".into(),
        license: "cc-by-4.0".into(),
        price: Amount::new(1_000),
        encrypted: true,
    });
    assert_eq!(failed(&chain.one(&owner, register).0), None);
    let cases: Vec<(&SecretKey, data::Msg, &str)> = vec![
        (
            &stranger,
            data::Msg::BuyAccess { dataset: 7 },
            "unknown_dataset",
        ),
        (
            &stranger,
            data::Msg::Contribute {
                pool: 3,
                item: Hash([1; 32]),
                validation_job: 0,
            },
            "unknown_pool",
        ),
        (
            &stranger,
            data::Msg::JoinLabelTask { task: 5 },
            "unknown_label_task",
        ),
        (
            &stranger,
            data::Msg::SealKey {
                dataset: 0,
                buyer: stranger.public_key().address(),
                sealed_key: vec![1; 32],
            },
            "not_asset_owner",
        ),
        (
            &owner,
            data::Msg::SealKey {
                dataset: 0,
                buyer: stranger.public_key().address(),
                sealed_key: vec![1; 32],
            },
            "invalid_message",
        ),
    ];
    for (key, msg, code) in cases {
        let (r, _) = chain.one(key, Message::Data(msg.clone()));
        assert_eq!(failed(&r), Some(code), "{msg:?}");
    }
    // Bought, the buyer gets its sealed key; a second purchase is refused.
    let buy = || Message::Data(data::Msg::BuyAccess { dataset: 0 });
    assert_eq!(failed(&chain.one(&stranger, buy()).0), None);
    assert_eq!(
        failed(&chain.one(&stranger, buy()).0),
        Some("invalid_message")
    );
    let seal = Message::Data(data::Msg::SealKey {
        dataset: 0,
        buyer: stranger.public_key().address(),
        sealed_key: vec![1; 32],
    });
    assert_eq!(failed(&chain.one(&owner, seal).0), None);
    let state = StateDelta::new(&chain.state);
    let access = data::access(&state, 0, &stranger.public_key().address()).unwrap();
    assert_eq!(access.sealed_key, Some(vec![1; 32]));
    assert_eq!(access.paid, Amount::new(1_000));
}

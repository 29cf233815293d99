//! The model registry has no global cap one party can exhaust: every record locks a deposit
//! sized to its bytes, refunded when its owner retires it and the record leaves.

mod common;

use common::*;
use piazza_ledger::compute;
use piazza_ledger::models::{self, ModelKind, ModelRecord, MODELS_PER_PAGE_MAX};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, Transaction, TX_MESSAGES_MAX};
use piazza_primitives::{Amount, Hash, SecretKey};

fn record(name: &str) -> ModelRecord {
    ModelRecord {
        name: name.into(),
        kind: ModelKind::Embedding,
        architecture: "bert".into(),
        config_hash: Hash([1; 32]),
        weights_commitment: Hash([2; 32]),
        tokenizer_hash: Hash([3; 32]),
        owner: piazza_primitives::Address([0; 20]),
        license: "mit".into(),
        price_floor: Amount::new(1_000),
        numeric: Default::default(),
        files: None,
        lineage: Default::default(),
    }
}

fn register_many(chain: &mut Chain, key: &SecretKey, names: &[String]) {
    let mut txs = Vec::new();
    for chunk in names.chunks(TX_MESSAGES_MAX) {
        let nonce = chain.nonces.entry(key.public_key().address()).or_default();
        txs.push(
            Transaction {
                chain_id: "compute".into(),
                sender: key.public_key(),
                nonce: *nonce,
                max_fee: Amount::pza(1),
                messages: chunk
                    .iter()
                    .map(|n| Message::Models(models::Msg::Register(record(n))))
                    .collect(),
            }
            .sign(key),
        );
        *nonce += 1;
    }
    let (receipts, _) = chain.block(txs);
    for r in &receipts {
        assert_eq!(failed(r), None, "{:?}", r.status);
    }
}

#[test]
fn past_the_old_global_cap_every_registration_pays_its_own_deposit() {
    let (owner, other) = (SecretKey::from_seed([7; 32]), SecretKey::from_seed([3; 32]));
    let mut chain = Chain::new(&[&owner, &other], compute::Params::default());
    let genesis_models = models::count(&StateDelta::new(&chain.state));
    // The old registry refused everyone once 4 096 records existed (4.83 PZA of fees filled it).
    let names: Vec<String> = (0..4_100).map(|i| format!("spam-{i}")).collect();
    let before = chain.balance(&owner.public_key().address());
    register_many(&mut chain, &owner, &names);
    let view = StateDelta::new(&chain.state);
    assert_eq!(models::count(&view), genesis_models + 4_100);
    let locked = chain.balance(&models::escrow());
    let expected: u128 = names
        .iter()
        .map(|n| {
            let mut r = record(n);
            r.owner = owner.public_key().address();
            models::deposit_for(&r).base_units()
        })
        .sum();
    assert_eq!(locked.base_units(), expected);
    println!(
        "4 100 records lock {} PZA ({} PZA each for a ~{}-byte record)",
        locked,
        models::deposit_for(&record("spam-0")),
        piazza_codec::Encode::to_bytes(&record("spam-0")).len()
    );
    assert!(
        before
            .checked_sub(chain.balance(&owner.public_key().address()))
            .unwrap()
            > locked
    );
    // Anyone else can still register: there is no global cap to exhaust.
    let (r, _) = chain.one(
        &other,
        Message::Models(models::Msg::Register(record("late"))),
    );
    assert_eq!(failed(&r), None);
    // Listings come a page at a time; the last page holds the newest records.
    let view = StateDelta::new(&chain.state);
    let total = models::count(&view);
    let tail = models::list(&view, total - 2, MODELS_PER_PAGE_MAX);
    let tail: Vec<&str> = tail.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(tail, ["spam-4099", "late"]);
    assert_eq!(models::all(&view).len(), MODELS_PER_PAGE_MAX);
}

#[test]
fn a_retired_record_takes_no_new_work_then_leaves_and_refunds_its_deposit() {
    let (owner, stranger, client) = (
        SecretKey::from_seed([7; 32]),
        SecretKey::from_seed([8; 32]),
        SecretKey::from_seed([9; 32]),
    );
    let mut chain = Chain::new(&[&owner, &stranger, &client], compute::Params::default());
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    register_many(&mut chain, &owner, &names);
    let owner_address = owner.public_key().address();
    let deposit = models::entry(&StateDelta::new(&chain.state), "a")
        .unwrap()
        .deposit;
    assert!(!deposit.is_zero());
    let retire = |name: &str| Message::Models(models::Msg::Retire { name: name.into() });
    let (r, _) = chain.one(&stranger, retire("a"));
    assert_eq!(
        failed(&r),
        Some("invalid_message"),
        "only the owner retires"
    );
    let (r, _) = chain.one(&owner, retire("a"));
    assert_eq!(failed(&r), None);
    let removal = models::entry(&StateDelta::new(&chain.state), "a")
        .unwrap()
        .removal_height
        .unwrap();
    assert_eq!(removal, chain.height + models::RETIRE_DELAY_BLOCKS);
    // Retired: no new jobs and no new providers for it.
    let (r, _) = chain.one(&client, submit("a", b"x", 10, Amount::new(50_000)));
    assert_eq!(failed(&r), Some("unknown_model"));
    let (r, _) = chain.one(&stranger, register("a", 1_000));
    assert_eq!(failed(&r), Some("unknown_model"));
    // The record leaves at its removal height; the last record of the index takes its place.
    let before = chain.balance(&owner_address);
    let count = models::count(&StateDelta::new(&chain.state));
    chain.height = removal - 1;
    let (_, events) = chain.block(vec![]);
    assert_eq!(attribute(&events, "models.removed", "name"), "a");
    let view = StateDelta::new(&chain.state);
    assert!(models::record(&view, "a").is_none());
    assert_eq!(models::count(&view), count - 1);
    assert_eq!(
        chain.balance(&owner_address),
        before.checked_add(deposit).unwrap()
    );
    let listed: Vec<String> = models::list(&view, 0, MODELS_PER_PAGE_MAX)
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert!(listed.contains(&"b".to_string()) && listed.contains(&"c".to_string()));
    assert!(!listed.contains(&"a".to_string()));
    for name in &listed {
        let entry = models::entry(&view, name);
        // Genesis records carry no entry deposit but keep their place like the others.
        let index = entry.map(|e| e.index).unwrap();
        assert_eq!(models::list(&view, index, 1)[0].name, *name);
    }
}

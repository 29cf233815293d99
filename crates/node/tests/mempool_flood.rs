//! The mempool under a flood: thousands of funded accounts sending transactions that wait on a
//! nonce they never send (free to hold), then a flood of ready ones. A valid transfer and a
//! provider's result (a protocol duty) are still admitted and included within two blocks.

mod common;

use piazza_ledger::bank;
use piazza_ledger::compute::{self, JobParams, Offer};
use piazza_ledger::error::{ErrorCode, TxError};
use piazza_ledger::genesis::Genesis;
use piazza_ledger::models::{ModelKind, ModelRecord};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_mempool::{MempoolConfig, Priority};
use piazza_node::app::{priority, TransactionStatus};
use piazza_node::App;
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use piazza_store::Store;

const ATTACKERS: usize = 2_000;
/// Gapped nonces each attacker sends (nonce 0 is never sent in the first phase).
const GAPPED_NONCES: u64 = 8;
const CAPACITY: usize = 3_000;

fn attacker(i: usize) -> SecretKey {
    let mut seed = [0xa7; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SecretKey::from_seed(seed)
}

fn genesis(users: &[SecretKey]) -> Genesis {
    let mut genesis = common::genesis(users);
    genesis.models.push(ModelRecord {
        name: "embed".into(),
        kind: ModelKind::Embedding,
        architecture: "test".into(),
        config_hash: Hash::of("c", &[b"embed"]),
        weights_commitment: Hash::of("w", &[b"embed"]),
        tokenizer_hash: Hash::of("t", &[b"embed"]),
        owner: Address([0x0e; 20]),
        license: "apache-2.0".into(),
        price_floor: Amount::new(1_000),
        numeric: Default::default(),
        files: None,
        lineage: Default::default(),
    });
    genesis
}

fn sign(key: &SecretKey, nonce: u64, message: Message) -> SignedTransaction {
    Transaction {
        chain_id: "piazza-test".into(),
        sender: key.public_key(),
        nonce,
        max_fee: Amount::pza(1),
        messages: vec![message],
    }
    .sign(key)
}

fn send(key: &SecretKey, nonce: u64) -> SignedTransaction {
    sign(
        key,
        nonce,
        Message::Bank(bank::Msg::Send {
            to: Address([9; 20]),
            amount: Amount::new(1),
        }),
    )
}

fn post(provider: &SecretKey, nonce: u64, job: u64) -> SignedTransaction {
    let output = b"vector".to_vec();
    sign(
        provider,
        nonce,
        Message::Compute(compute::Msg::PostResult {
            job,
            output_hash: compute::output_hash(&output),
            output,
            trace_root: Hash([5; 32]),
            work_units: 1,
            input_units: 0,
        }),
    )
}

/// Proposes and commits the next block; returns its transactions' hashes.
fn block(app: &App) -> Vec<Hash> {
    let height = app.head().unwrap().height + 1;
    let block = app
        .propose(height, 1_700_000_000_000 + height * 1000)
        .unwrap();
    let hashes = block.txs.iter().map(|t| t.hash()).collect();
    app.commit(block).unwrap();
    hashes
}

fn codes(results: &[Result<Hash, TxError>]) -> (usize, usize) {
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.code == ErrorCode::MempoolFull))
        .count();
    (admitted, full)
}

#[test]
fn a_flood_of_gapped_and_ready_transactions_starves_neither_transfers_nor_duties() {
    let attackers: Vec<SecretKey> = (0..ATTACKERS).map(attacker).collect();
    let (alice, bob, provider, client) = (
        common::user_key(1),
        common::user_key(2),
        common::user_key(3),
        common::user_key(4),
    );
    let mut users = vec![alice.clone(), bob.clone(), provider.clone(), client.clone()];
    users.extend(attackers.iter().cloned());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb")).unwrap();
    let app = App::open(
        store,
        Some(&genesis(&users)),
        common::validator_key(),
        MempoolConfig {
            capacity: CAPACITY,
            nonce_window: 64,
        },
    )
    .unwrap();
    let limits = piazza_mempool::Limits::for_config(MempoolConfig {
        capacity: CAPACITY,
        nonce_window: 64,
    });

    // A provider with two assigned jobs.
    let register = sign(
        &provider,
        0,
        Message::Compute(compute::Msg::RegisterProvider {
            offer: Offer {
                models: vec!["embed".into()],
                price_per_unit: Amount::new(1_000),
                capacity: 4,
                endpoint: "http://p".into(),
                units_per_block: 1_000,
            },
            stake: Amount::pza(500),
        }),
    );
    let job = |nonce| {
        sign(
            &client,
            nonce,
            Message::Compute(compute::Msg::SubmitJob {
                model: "embed".into(),
                input: b"hello".to_vec(),
                params: JobParams::default(),
                max_units: 10,
                max_price: Amount::pza(1),
            }),
        )
    };
    for result in app.submit_many(vec![register, job(0), job(1)]) {
        result.unwrap();
    }
    assert_eq!(block(&app).len(), 3);
    block(&app);
    let assigned = {
        let snapshot = app.store().snapshot().unwrap();
        compute::assigned_jobs(
            &StateDelta::new(&snapshot),
            &provider.public_key().address(),
        )
    };
    assert_eq!(assigned.len(), 2, "both jobs are assigned to the provider");

    // Phase 1: every attacker sends nonces 1..=8 and never nonce 0.
    let gapped: Vec<SignedTransaction> = attackers
        .iter()
        .flat_map(|k| (1..=GAPPED_NONCES).map(move |n| send(k, n)))
        .collect();
    let (admitted, full) = codes(&app.submit_many(gapped));
    assert_eq!(
        admitted, limits.gapped_txs_max,
        "gapped transactions fill only their share"
    );
    assert_eq!(admitted + full, ATTACKERS * GAPPED_NONCES as usize);

    // A transfer and a result are admitted and included in the next block.
    let transfer = app
        .submit(&piazza_codec::Encode::to_bytes(&send(&alice, 0)))
        .unwrap();
    let result = post(&provider, 1, assigned[0]);
    let snapshot = app.store().snapshot().unwrap();
    assert_eq!(priority(&snapshot, &result), Priority::Duty);
    // The same result from someone the job is not assigned to is ordinary traffic.
    assert_eq!(
        priority(&snapshot, &post(&bob, 0, assigned[0])),
        Priority::Ordinary
    );
    drop(snapshot);
    let result = app
        .submit(&piazza_codec::Encode::to_bytes(&result))
        .unwrap();
    let included = block(&app);
    assert!(included.contains(&transfer) && included.contains(&result));
    assert_eq!(
        app.transaction_status(&transfer).unwrap(),
        TransactionStatus::Included { height: 3 }
    );

    // Phase 2: attackers send nonce 0 (their gapped ones become ready) and more, all ready
    // and paying fees, until the ordinary share is full.
    let ready: Vec<SignedTransaction> = attackers
        .iter()
        .flat_map(|k| (0..=GAPPED_NONCES + 4).map(move |n| send(k, n)))
        .collect();
    let (admitted, full) = codes(&app.submit_many(ready));
    assert!(
        admitted > 0 && full > 0,
        "the ready flood reaches the bound"
    );
    assert_eq!(
        app.mempool_size(),
        CAPACITY,
        "ordinary traffic fills the capacity, not the room reserved for duties on top"
    );
    assert!(limits.duty_txs_reserved > 0);
    let refused = app.submit(&piazza_codec::Encode::to_bytes(&send(&bob, 0)));
    assert_eq!(refused.unwrap_err().code, ErrorCode::MempoolFull);
    // The provider's second result still gets in, and is the first in the next block.
    let result = app
        .submit(&piazza_codec::Encode::to_bytes(&post(
            &provider,
            2,
            assigned[1],
        )))
        .unwrap();
    let included = block(&app);
    assert_eq!(included.first(), Some(&result));
    assert_eq!(
        app.transaction_status(&result).unwrap(),
        TransactionStatus::Included { height: 4 }
    );
}

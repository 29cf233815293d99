//! The ledger's bounds hold without losing anything: a full list refuses the transaction that
//! would overflow it, and a legal transaction's receipt keeps every event it emitted.

mod common;

use common::*;
use piazza_codec::Encode;
use piazza_ledger::block::EVENTS_PER_TX_MAX;
use piazza_ledger::compute::{self, JobParams, JobStatus};
use piazza_ledger::list::List;
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, Transaction, TX_MESSAGES_MAX};
use piazza_ledger::verify::{self, state_key, TASKS_MAX};
use piazza_primitives::{Amount, Hash, SecretKey};

#[test]
fn a_challenge_that_would_overflow_a_task_list_is_refused_and_takes_no_bond() {
    let provider = SecretKey::from_seed([1; 32]);
    let client = SecretKey::from_seed([3; 32]);
    let challenger = SecretKey::from_seed([5; 32]);
    let mut chain = Chain::with_verify(
        &[&provider, &client, &challenger],
        compute::Params {
            challenge_window_blocks: 20,
            ..compute::Params::default()
        },
        verify::Params::default(),
    );
    chain.one(&provider, register("embed", 1_000));
    chain.one(&client, submit("embed", b"hi", 10, Amount::new(50_000)));
    chain.block(vec![]);
    let (r, _) = chain.one(&provider, post(0, b"out", 4));
    assert_eq!(failed(&r), None);
    // The challenger already takes part in `TASKS_MAX` open audits and disputes.
    let full: List<u64, TASKS_MAX> = List((1_000..1_000 + TASKS_MAX as u64).collect());
    let address = challenger.public_key().address();
    chain
        .state
        .insert(state_key::tasks(&address), full.to_bytes());
    let before = chain.balance(&address);
    let (r, _) = chain.one(
        &challenger,
        Message::Verify(verify::Msg::Challenge {
            job: 0,
            trace_root: Hash([9; 32]),
            step_count: 40,
            ids: Hash([1; 32]),
        }),
    );
    // Before this bound refused, the dispute opened and the challenger's task was dropped: its
    // daemon would never see the dispute and lose it by silence.
    assert_eq!(failed(&r), Some("queue_full"));
    assert!(verify::dispute(&StateDelta::new(&chain.state), 0).is_none());
    assert_eq!(chain.balance(&verify::escrow()), Amount::ZERO);
    assert_eq!(
        chain.balance(&address).checked_add(r.fee_paid).unwrap(),
        before
    );
    assert_eq!(
        verify::tasks(&StateDelta::new(&chain.state), &address).len(),
        TASKS_MAX
    );
    // With room again, the same challenge opens its dispute and is listed for both parties.
    chain.state.remove(&state_key::tasks(&address));
    let (r, _) = chain.one(
        &challenger,
        Message::Verify(verify::Msg::Challenge {
            job: 0,
            trace_root: Hash([9; 32]),
            step_count: 40,
            ids: Hash([1; 32]),
        }),
    );
    assert_eq!(failed(&r), None);
    assert_eq!(
        verify::tasks(&StateDelta::new(&chain.state), &address),
        vec![0]
    );
    assert_eq!(
        verify::tasks(
            &StateDelta::new(&chain.state),
            &provider.public_key().address()
        ),
        vec![0]
    );
}

#[test]
fn the_largest_redundant_submission_keeps_every_job_id_in_its_receipt() {
    let providers: Vec<SecretKey> = (10..10 + compute::REDUNDANCY_MAX)
        .map(|i| SecretKey::from_seed([i; 32]))
        .collect();
    let client = SecretKey::from_seed([3; 32]);
    let mut users: Vec<&SecretKey> = providers.iter().collect();
    users.push(&client);
    let mut chain = Chain::new(&users, compute::Params::default());
    let registrations = providers
        .iter()
        .map(|p| chain.tx(p, register("embed", 1_000)))
        .collect();
    chain.block(registrations);
    let submission = Message::Compute(compute::Msg::SubmitJob {
        model: "embed".into(),
        input: b"many".to_vec(),
        params: JobParams {
            redundancy: compute::REDUNDANCY_MAX,
            ..JobParams::default()
        },
        max_units: 10,
        max_price: Amount::new(50_000),
    });
    let tx = Transaction {
        chain_id: "compute".into(),
        sender: client.public_key(),
        nonce: 0,
        max_fee: Amount::pza(1),
        messages: vec![submission; TX_MESSAGES_MAX],
    }
    .sign(&client);
    let (receipts, _) = chain.block(vec![tx]);
    assert_eq!(failed(&receipts[0]), None, "{:?}", receipts[0].status);
    let copies = TX_MESSAGES_MAX * compute::REDUNDANCY_MAX as usize;
    // 16 submissions of 5 copies: 80 job ids, past the old cut at 64 events.
    assert!(copies > 64);
    let ids: Vec<String> = receipts[0]
        .events
        .iter()
        .filter(|e| e.kind == "compute.job_submitted")
        .filter_map(|e| e.attribute("job").map(str::to_string))
        .collect();
    assert_eq!(ids.len(), copies);
    assert!(receipts[0].events.len() <= EVENTS_PER_TX_MAX);
    for id in 0..copies as u64 {
        assert_eq!(ids[id as usize], id.to_string());
        assert_eq!(chain.job(id).status, JobStatus::Pending);
    }
    // The receipt survives its own encoding (the decoder's bound is the same constant).
    let bytes = receipts[0].to_bytes();
    let decoded =
        <piazza_ledger::block::Receipt as piazza_codec::Decode>::from_bytes(&bytes).unwrap();
    assert_eq!(decoded.events.len(), receipts[0].events.len());
}

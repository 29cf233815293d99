//! The compute market's life cycle on the pure executor: register, submit, assign, post, settle;
//! deadlines; and every refusal, with the escrow accounted for to the base unit.

use piazza_ledger::bank;
use piazza_ledger::compute::{self, JobParams, JobStatus, Offer};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, Hash, SecretKey};

mod common;
use common::*;

#[test]
fn a_job_settles_with_the_fee_split_and_the_rest_refunded() {
    let (provider, client) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
    let mut chain = Chain::new(&[&provider, &client], compute::Params::default());
    let (receipt, _) = chain.one(&provider, register("embed", 2_000));
    assert_eq!(failed(&receipt), None);

    let escrow = Amount::new(100_000);
    let client_before = chain.balance(&client.public_key().address());
    let (receipt, _) = chain.one(&client, submit("embed", b"hello world", 40, escrow));
    assert_eq!(failed(&receipt), None);
    let submit_fee = receipt.fee_paid;
    assert_eq!(chain.job(0).status, JobStatus::Pending);
    assert_eq!(chain.balance(&compute::escrow()), escrow);

    // The next block assigns it with its own randomness.
    let (_, events) = chain.block(vec![]);
    assert_eq!(
        attribute(&events, "compute.job_assigned", "provider"),
        provider.public_key().address().to_string()
    );

    let (receipt, _) = chain.one(&provider, post(0, b"vector", 12));
    assert_eq!(failed(&receipt), None);
    let post_fee = receipt.fee_paid;
    let provider_before = chain.balance(&provider.public_key().address());
    let (pool_before, treasury_before, owner_before) = (
        chain.balance(&compute::auditor_pool()),
        chain.balance(&bank::treasury()),
        chain.balance(&model_owner()),
    );
    // The challenge window (2 blocks) passes, then it settles.
    chain.block(vec![]);
    assert!(matches!(chain.job(0).status, JobStatus::Posted { .. }));
    let (_, events) = chain.block(vec![]);
    let job = chain.job(0);
    assert_eq!(job.status, JobStatus::Settled);
    let price = Amount::new(12 * 2_000);
    let receipt = job.receipt.unwrap();
    assert_eq!(
        (receipt.price, receipt.refund),
        (price, escrow.checked_sub(price).unwrap())
    );
    assert_eq!(receipt.input_hash, compute::input_hash(b"hello world"));

    let got = |key: &str| {
        Amount::new(
            attribute(&events, "compute.job_settled", key)
                .parse()
                .unwrap(),
        )
    };
    assert_eq!(got("to_provider"), Amount::new(24_000 * 70 / 100));
    assert_eq!(got("to_model_owner"), Amount::new(24_000 * 15 / 100));
    assert_eq!(got("to_auditor_pool"), Amount::new(24_000 * 10 / 100));
    assert_eq!(got("to_treasury"), Amount::new(24_000 * 5 / 100));
    let parts = [
        got("to_provider"),
        got("to_model_owner"),
        got("to_auditor_pool"),
        got("to_treasury"),
        got("refund"),
    ];
    assert_eq!(
        parts
            .iter()
            .fold(Amount::ZERO, |a, b| a.checked_add(*b).unwrap()),
        escrow,
        "provider + owner + pool + treasury + refund = escrow"
    );
    assert_eq!(
        chain.balance(&provider.public_key().address()),
        provider_before.checked_add(got("to_provider")).unwrap()
    );
    assert_eq!(
        chain.balance(&model_owner()),
        owner_before.checked_add(got("to_model_owner")).unwrap()
    );
    assert_eq!(
        chain.balance(&compute::auditor_pool()),
        pool_before.checked_add(got("to_auditor_pool")).unwrap()
    );
    assert_eq!(
        chain.balance(&bank::treasury()),
        treasury_before.checked_add(got("to_treasury")).unwrap()
    );
    assert_eq!(chain.balance(&compute::escrow()), Amount::ZERO);
    assert_eq!(
        chain.balance(&client.public_key().address()),
        client_before
            .checked_sub(submit_fee)
            .unwrap()
            .checked_sub(price)
            .unwrap()
    );
    let _ = post_fee;
}

#[test]
fn refusals_lose_no_escrow() {
    let (provider, client, stranger) = (
        SecretKey::from_seed([1; 32]),
        SecretKey::from_seed([2; 32]),
        SecretKey::from_seed([3; 32]),
    );
    let mut chain = Chain::new(&[&provider, &client, &stranger], compute::Params::default());
    chain.one(&provider, register("embed", 2_000));
    let before = chain.balance(&client.public_key().address());

    let (r, _) = chain.one(&client, submit("nope", b"x", 10, Amount::new(1_000_000)));
    assert_eq!(failed(&r), Some("unknown_model"));
    let (r2, _) = chain.one(&client, submit("embed", b"x", 10, Amount::new(9_999)));
    assert_eq!(failed(&r2), Some("escrow_too_low"));
    // Two copies need two providers of `embed`; only one serves it.
    let twice = Message::Compute(compute::Msg::SubmitJob {
        model: "embed".into(),
        input: b"x".to_vec(),
        params: JobParams {
            redundancy: 2,
            ..JobParams::default()
        },
        max_units: 10,
        max_price: Amount::new(1_000_000),
    });
    let (r3, _) = chain.one(&client, twice);
    assert_eq!(failed(&r3), Some("no_provider"));
    let fees = [r.fee_paid, r2.fee_paid, r3.fee_paid]
        .iter()
        .fold(Amount::ZERO, |a, b| a.checked_add(*b).unwrap());
    assert_eq!(
        chain.balance(&client.public_key().address()),
        before.checked_sub(fees).unwrap(),
        "only fees were paid"
    );
    assert_eq!(chain.balance(&compute::escrow()), Amount::ZERO);

    // Oversized input: not even includable.
    let big = chain.tx(
        &client,
        submit(
            "embed",
            &vec![0; compute::JOB_INPUT_BYTES_MAX + 1],
            10,
            Amount::new(1_000_000),
        ),
    );
    assert!(
        big.encoded_len() > piazza_ledger::tx::TX_BYTES_MAX
            || piazza_ledger::tx::check_stateless(&big, "compute", false).is_err()
    );
    let err = piazza_ledger::tx::check_stateless(&big, "compute", false).unwrap_err();
    assert_eq!(err.code.name(), "input_too_large");
    *chain
        .nonces
        .get_mut(&client.public_key().address())
        .unwrap() -= 1;

    chain.one(
        &client,
        submit("embed", b"hello", 10, Amount::new(1_000_000)),
    );
    chain.block(vec![]);
    let (r, _) = chain.one(&stranger, post(0, b"out", 3));
    assert_eq!(failed(&r), Some("not_assigned"));
    let bad_hash = Message::Compute(compute::Msg::PostResult {
        job: 0,
        output: b"out".to_vec(),
        output_hash: Hash([1; 32]),
        trace_root: Hash([5; 32]),
        work_units: 3,
        input_units: 0,
    });
    let tx = chain.tx(&provider, bad_hash);
    assert_eq!(
        piazza_ledger::tx::check_stateless(&tx, "compute", false)
            .unwrap_err()
            .code
            .name(),
        "output_hash_mismatch"
    );
    *chain
        .nonces
        .get_mut(&provider.public_key().address())
        .unwrap() -= 1;
    let (r, _) = chain.one(&provider, post(0, b"out", 11));
    assert_eq!(failed(&r), Some("work_exceeds_limit"));
    assert_eq!(
        chain.balance(&compute::escrow()),
        Amount::new(1_000_000),
        "the open job's escrow is intact"
    );
    let (r, _) = chain.one(&provider, post(0, b"out", 3));
    assert_eq!(failed(&r), None);
    let (r, _) = chain.one(&provider, post(0, b"out", 3));
    assert_eq!(failed(&r), Some("result_already_posted"));
    let (r, _) = chain.one(&provider, post(7, b"out", 3));
    assert_eq!(failed(&r), Some("unknown_job"));
    // The window has passed during the refused posts: the job settled once, for 3 units.
    // The stated input tokens are recorded as stated and not billed.
    let result = chain.job(0).result.unwrap();
    assert_eq!(
        (result.work_units, result.input_units),
        (3, POSTED_INPUT_UNITS)
    );
    let receipt = chain.job(0).receipt.unwrap();
    assert_eq!(
        (receipt.price, receipt.refund),
        (Amount::new(6_000), Amount::new(994_000))
    );
    assert_eq!(chain.balance(&compute::escrow()), Amount::ZERO);
}

#[test]
fn a_missed_deadline_is_penalised_and_the_job_reassigned() {
    let (a, b, client) = (
        SecretKey::from_seed([1; 32]),
        SecretKey::from_seed([2; 32]),
        SecretKey::from_seed([3; 32]),
    );
    let params = compute::Params {
        job_deadline_blocks: 3,
        challenge_window_blocks: 0,
        ..compute::Params::default()
    };
    let mut chain = Chain::new(&[&a, &b, &client], params.clone());
    let t1 = chain.tx(&a, register("embed", 1_000));
    let t2 = chain.tx(&b, register("embed", 1_000));
    chain.block(vec![t1, t2]);
    chain.one(&client, submit("embed", b"hi", 10, Amount::new(50_000)));
    let (_, events) = chain.block(vec![]);
    let first: Address = attribute(&events, "compute.job_assigned", "provider")
        .parse()
        .unwrap();
    let (first_key, second_key) = if first == a.public_key().address() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let stake_before = staking::bonded(&StateDelta::new(&chain.state), &first, Role::Provider);
    let mut reassigned = None;
    // The deadline: 3 base blocks plus one block of work at the declared speed.
    for _ in 0..4 {
        let (_, events) = chain.block(vec![]);
        if events.iter().any(|e| e.kind == "compute.deadline_missed") {
            assert_eq!(
                attribute(&events, "compute.deadline_missed", "penalty"),
                params.missed_deadline_penalty.base_units().to_string()
            );
            reassigned = Some(attribute(&events, "compute.job_assigned", "provider"));
        }
    }
    assert_eq!(
        reassigned,
        Some(second_key.public_key().address().to_string()),
        "reassigned to the other provider"
    );
    let stake_after = staking::bonded(&StateDelta::new(&chain.state), &first, Role::Provider);
    assert_eq!(
        stake_after,
        stake_before
            .checked_sub(params.missed_deadline_penalty)
            .unwrap()
    );
    let (r, _) = chain.one(first_key, post(0, b"late", 2));
    assert_eq!(failed(&r), Some("late_result"));
    let (r, events) = chain.one(second_key, post(0, b"done", 2));
    assert_eq!(failed(&r), None);
    assert_eq!(attribute(&events, "compute.job_settled", "price"), "2000");
    assert_eq!(chain.job(0).status, JobStatus::Settled);
}

#[test]
fn a_job_nobody_can_serve_expires_with_a_full_refund() {
    let (a, client) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([3; 32]));
    let params = compute::Params {
        job_deadline_blocks: 1,
        max_attempts: 1,
        ..compute::Params::default()
    };
    let mut chain = Chain::new(&[&a, &client], params);
    chain.one(&a, register("embed", 1_000));
    chain.one(&client, submit("embed", b"hi", 10, Amount::new(50_000)));
    let before = chain.balance(&client.public_key().address());
    chain.block(vec![]);
    chain.block(vec![]);
    let (_, events) = chain.block(vec![]);
    assert_eq!(attribute(&events, "compute.job_expired", "refund"), "50000");
    assert_eq!(chain.job(0).status, JobStatus::Expired);
    assert_eq!(
        chain.balance(&client.public_key().address()),
        before.checked_add(Amount::new(50_000)).unwrap()
    );
    assert_eq!(chain.balance(&compute::escrow()), Amount::ZERO);
}

#[test]
fn a_client_may_set_the_deadline() {
    let (a, client) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([3; 32]));
    let mut chain = Chain::new(&[&a, &client], compute::Params::default());
    chain.one(&a, register("embed", 1_000));
    let params = JobParams {
        deadline_blocks: 7,
        ..JobParams::default()
    };
    let message = Message::Compute(compute::Msg::SubmitJob {
        model: "embed".into(),
        input: b"hi".to_vec(),
        params,
        max_units: 10,
        max_price: Amount::new(50_000),
    });
    chain.one(&client, message);
    let (_, events) = chain.block(vec![]);
    assert_eq!(
        attribute(&events, "compute.job_assigned", "deadline_height"),
        (chain.height + 7).to_string()
    );
    let too_long = JobParams {
        deadline_blocks: compute::JOB_DEADLINE_BLOCKS_MAX + 1,
        ..JobParams::default()
    };
    let tx = chain.tx(
        &client,
        Message::Compute(compute::Msg::SubmitJob {
            model: "embed".into(),
            input: b"hi".to_vec(),
            params: too_long,
            max_units: 10,
            max_price: Amount::new(50_000),
        }),
    );
    assert_eq!(
        piazza_ledger::tx::check_stateless(&tx, "compute", false)
            .unwrap_err()
            .code
            .name(),
        "invalid_message"
    );
}

#[test]
fn jobs_wait_for_a_busy_provider_instead_of_expiring() {
    let (a, client) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([3; 32]));
    let mut chain = Chain::new(
        &[&a, &client],
        compute::Params {
            challenge_window_blocks: 0,
            ..compute::Params::default()
        },
    );
    let one_slot = Message::Compute(compute::Msg::RegisterProvider {
        offer: Offer {
            models: vec!["embed".into()],
            price_per_unit: Amount::new(1_000),
            capacity: 1,
            endpoint: String::new(),
            units_per_block: 1_000,
        },
        stake: Amount::pza(500),
    });
    chain.one(&a, one_slot);
    let first = chain.tx(&client, submit("embed", b"one", 10, Amount::new(50_000)));
    let second = chain.tx(&client, submit("embed", b"two", 10, Amount::new(50_000)));
    chain.block(vec![first, second]);
    chain.block(vec![]);
    assert!(matches!(chain.job(0).status, JobStatus::Assigned { .. }));
    assert_eq!(
        chain.job(1).status,
        JobStatus::Pending,
        "the second job waits for the only slot"
    );
    chain.block(vec![]);
    assert_eq!(chain.job(1).status, JobStatus::Pending);
    chain.one(&a, post(0, b"done", 2));
    chain.block(vec![]);
    assert!(
        matches!(chain.job(1).status, JobStatus::Assigned { .. }),
        "assigned once the slot frees"
    );
}

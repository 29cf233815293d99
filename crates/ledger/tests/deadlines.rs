//! Honest providers are never slashed for work they could not do in time: a result deadline
//! follows the work asked for at the provider's declared speed, inputs no model runs are refused
//! at admission, a provider may decline what it cannot serve, and a job submitted before any
//! provider serves its model waits for one.

mod common;

use common::*;
use piazza_ledger::compute::{self, JobParams, JobStatus, Offer};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::Message;
use piazza_primitives::{Amount, SecretKey};

fn register_at(model: &str, units_per_block: u32) -> Message {
    Message::Compute(compute::Msg::RegisterProvider {
        offer: Offer {
            models: vec![model.into()],
            price_per_unit: Amount::new(1_000),
            capacity: 4,
            endpoint: String::new(),
            units_per_block,
        },
        stake: Amount::pza(500),
    })
}

fn generate(max_tokens: u32, deadline_blocks: u32) -> Message {
    Message::Compute(compute::Msg::SubmitJob {
        model: "chat".into(),
        input: b"Write a long story".to_vec(),
        params: JobParams {
            max_tokens,
            deadline_blocks,
            ..JobParams::default()
        },
        max_units: u64::from(max_tokens),
        max_price: Amount::new(10_000_000),
    })
}

fn assigned_deadline(chain: &Chain, job: u64) -> u64 {
    match chain.job(job).status {
        JobStatus::Assigned {
            deadline_height, ..
        } => deadline_height,
        other => panic!("job {job} is {other:?}"),
    }
}

#[test]
fn a_long_generation_gets_a_deadline_that_follows_its_work() {
    let (provider, client) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([3; 32]));
    let params = compute::Params::default();
    let mut chain = Chain::new(&[&provider, &client], params.clone());
    // 2 tokens per block: a laptop generating ~8 tokens/s at 1 s blocks, sharing its machine.
    let (r, _) = chain.one(&provider, register_at("chat", 2));
    assert_eq!(failed(&r), None);
    let (r, _) = chain.one(&client, generate(2_048, 0));
    assert_eq!(failed(&r), None);
    let submitted = chain.height;
    chain.block(vec![]);
    let deadline = assigned_deadline(&chain, 0);
    // 2048 tokens at 2 per block: 1024 blocks of work on top of the base allowance (the short
    // prompt adds none). A fixed 20-block deadline slashed the provider that ran this.
    assert_eq!(
        deadline,
        submitted + 1 + params.job_deadline_blocks + 1_024,
        "base {} + work",
        params.job_deadline_blocks
    );
    let stake = staking::bonded(
        &StateDelta::new(&chain.state),
        &provider.public_key().address(),
        Role::Provider,
    );
    // Any time before that deadline, the result is accepted and nobody is slashed.
    while chain.height + 1 < deadline {
        chain.block(vec![]);
    }
    let (r, _) = chain.one(&provider, post(0, b"a long story", 2_048));
    assert_eq!(failed(&r), None);
    assert_eq!(
        staking::bonded(
            &StateDelta::new(&chain.state),
            &provider.public_key().address(),
            Role::Provider
        ),
        stake
    );
}

#[test]
fn a_client_deadline_too_short_for_every_provider_is_refused() {
    let (provider, client) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([3; 32]));
    let mut chain = Chain::new(&[&provider, &client], compute::Params::default());
    chain.one(&provider, register_at("chat", 2));
    // 512 tokens at 2 per block need 256 blocks; the client allows 100.
    let (r, _) = chain.one(&client, generate(512, 100));
    assert_eq!(failed(&r), Some("no_provider"));
    // 100 tokens need 50: accepted, and the client's deadline is the one set.
    let (r, _) = chain.one(&client, generate(100, 100));
    assert_eq!(failed(&r), None);
    let submitted = chain.height;
    chain.block(vec![]);
    assert_eq!(assigned_deadline(&chain, 0), submitted + 1 + 100);
}

#[test]
fn an_empty_input_is_refused_at_admission() {
    let client = SecretKey::from_seed([3; 32]);
    let mut chain = Chain::new(&[&client], compute::Params::default());
    let tx = chain.tx(&client, submit("embed", b"", 10, Amount::new(50_000)));
    let error = piazza_ledger::tx::check_stateless(&tx, "compute", false).unwrap_err();
    assert_eq!(error.code.name(), "invalid_message");
    assert!(error.message.contains("empty"), "{}", error.message);
}

#[test]
fn a_declined_job_goes_to_another_provider_without_penalty() {
    let (a, b, client) = (
        SecretKey::from_seed([1; 32]),
        SecretKey::from_seed([2; 32]),
        SecretKey::from_seed([3; 32]),
    );
    let mut chain = Chain::new(&[&a, &b, &client], compute::Params::default());
    let t1 = chain.tx(&a, register("embed", 1_000));
    let t2 = chain.tx(&b, register("embed", 1_000));
    chain.block(vec![t1, t2]);
    chain.one(
        &client,
        submit("embed", b"too long", 10, Amount::new(50_000)),
    );
    chain.block(vec![]);
    let first = chain.job(0).provider().unwrap();
    let (first_key, second_key) = if first == a.public_key().address() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let stake = |chain: &Chain, key: &SecretKey| {
        staking::bonded(
            &StateDelta::new(&chain.state),
            &key.public_key().address(),
            Role::Provider,
        )
    };
    let before = stake(&chain, first_key);
    let decline = |job| {
        Message::Compute(compute::Msg::DeclineJob {
            job,
            reason: "the prompt exceeds the model's context".into(),
        })
    };
    // Only the assigned provider may decline.
    let (r, _) = chain.one(second_key, decline(0));
    assert_eq!(failed(&r), Some("not_assigned"));
    let (r, _) = chain.one(first_key, decline(0));
    assert_eq!(failed(&r), None);
    assert_eq!(
        attribute(&r.events, "compute.job_declined", "reason"),
        "the prompt exceeds the model's context"
    );
    assert_eq!(stake(&chain, first_key), before, "declining costs no stake");
    let record = compute::provider(&StateDelta::new(&chain.state), &first).unwrap();
    assert_eq!((record.active_jobs, record.deadlines_missed), (0, 0));
    // The next block assigns it to the other provider, never back to the one that declined.
    chain.block(vec![]);
    assert_eq!(
        chain.job(0).provider(),
        Some(second_key.public_key().address())
    );
    // The other declines too: with no provider left, the job waits out its queue time and
    // then expires with a full refund.
    chain.one(second_key, decline(0));
    let client_before = chain.balance(&client.public_key().address());
    for _ in 0..=compute::Params::default().queue_timeout_blocks {
        chain.block(vec![]);
        if chain.job(0).status == JobStatus::Expired {
            break;
        }
    }
    assert_eq!(chain.job(0).status, JobStatus::Expired);
    assert_eq!(
        chain.balance(&client.public_key().address()),
        client_before.checked_add(Amount::new(50_000)).unwrap()
    );
    assert_eq!(chain.balance(&compute::escrow()), Amount::ZERO);
}

#[test]
fn a_job_submitted_before_any_provider_waits_for_one() {
    let (provider, client) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([3; 32]));
    let mut chain = Chain::new(&[&provider, &client], compute::Params::default());
    let (r, _) = chain.one(&client, submit("embed", b"early", 10, Amount::new(50_000)));
    assert_eq!(
        failed(&r),
        None,
        "accepted though nobody serves `embed` yet"
    );
    chain.block(vec![]);
    assert_eq!(chain.job(0).status, JobStatus::Pending);
    chain.one(&provider, register("embed", 1_000));
    chain.block(vec![]);
    assert_eq!(
        chain.job(0).provider(),
        Some(provider.public_key().address())
    );
}

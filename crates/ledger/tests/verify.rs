//! The verify module on the pure executor: audit holds, attestations and their pay, audit
//! deadlines, redundant groups, challenges with bonds, silence at a round's deadline, and every
//! refusal. (Arbitration by re-execution runs on real models in the CLI's devnet tests.)

mod common;

use common::*;
use piazza_ledger::compute::{self, JobParams, JobStatus};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::Message;
use piazza_ledger::verify::{self, Hold};
use piazza_primitives::{Amount, Hash, SecretKey};

fn keys() -> (SecretKey, SecretKey, SecretKey, SecretKey) {
    (
        SecretKey::from_seed([1; 32]), // provider
        SecretKey::from_seed([2; 32]), // second provider
        SecretKey::from_seed([3; 32]), // client
        SecretKey::from_seed([4; 32]), // auditor
    )
}

/// Every result audited, a short audit deadline.
fn audited() -> verify::Params {
    verify::Params {
        new_provider_audit_rate_bps: 10_000,
        audit_blocks: 4,
        round_blocks: 8,
        ..verify::Params::default()
    }
}

fn register_auditor() -> Message {
    Message::Verify(verify::Msg::RegisterAuditor {
        models: vec!["embed".into()],
        stake: Amount::pza(200),
    })
}

/// A job to run on two providers.
fn submit_twice() -> Message {
    Message::Compute(compute::Msg::SubmitJob {
        model: "embed".into(),
        input: b"twice".to_vec(),
        params: JobParams {
            redundancy: 2,
            ..JobParams::default()
        },
        max_units: 10,
        max_price: Amount::new(50_000),
    })
}

fn hold(chain: &Chain, job: u64) -> Option<Hold> {
    verify::hold(&StateDelta::new(&chain.state), job)
}

/// A chain with a provider and an auditor and one job posted (id 0) by `provider`.
fn posted_job(params: verify::Params) -> (Chain, SecretKey, SecretKey, SecretKey) {
    let (provider, _, client, auditor) = keys();
    let mut chain = Chain::with_verify(
        &[&provider, &client, &auditor],
        compute::Params::default(),
        params,
    );
    let t1 = chain.tx(&provider, register("embed", 1_000));
    let t2 = chain.tx(&auditor, register_auditor());
    let (receipts, _) = chain.block(vec![t1, t2]);
    assert!(receipts.iter().all(|r| failed(r).is_none()), "{receipts:?}");
    chain.one(&client, submit("embed", b"hi", 10, Amount::new(50_000)));
    chain.block(vec![]);
    let (r, _) = chain.one(&provider, post(0, b"out", 4));
    assert_eq!(failed(&r), None);
    (chain, provider, client, auditor)
}

#[test]
fn an_audited_job_waits_for_the_attestation_which_earns_the_auditor_its_share() {
    let (mut chain, _, _, auditor) = posted_job(audited());
    let (_, events) = chain.block(vec![]);
    assert_eq!(
        attribute(&events, "verify.audit_assigned", "auditor"),
        auditor.public_key().address().to_string()
    );
    // The challenge window (2 blocks) passes; the held job does not settle.
    chain.block(vec![]);
    chain.block(vec![]);
    assert!(matches!(chain.job(0).status, JobStatus::Posted { .. }));
    assert!(matches!(hold(&chain, 0), Some(Hold::Audit { .. })));
    let before = chain.balance(&auditor.public_key().address());
    let (r, _) = chain.one(&auditor, Message::Verify(verify::Msg::Attest { job: 0 }));
    assert_eq!(failed(&r), None);
    // An attested result stays open to challenges for a full window, then settles.
    assert!(matches!(chain.job(0).status, JobStatus::Posted { .. }));
    let window = compute::Params::default().challenge_window_blocks;
    let mut events = r.events.clone();
    for _ in 0..window {
        let (_, block_events) = chain.block(vec![]);
        events.extend(block_events);
    }
    assert_eq!(chain.job(0).status, JobStatus::Settled);
    assert_eq!(hold(&chain, 0), None);
    // 4 units × 1000 = 4000; the auditor pool's 10 % goes to the attesting auditor.
    let share = attribute(&events, "compute.job_settled", "to_auditor_pool");
    assert_eq!(share, "400");
    let after = chain.balance(&auditor.public_key().address());
    assert_eq!(
        after.checked_add(r.fee_paid).unwrap(),
        before.checked_add(Amount::new(400)).unwrap()
    );
    assert_eq!(chain.balance(&compute::auditor_pool()), Amount::ZERO);
    let record = verify::auditor(
        &StateDelta::new(&chain.state),
        &auditor.public_key().address(),
    )
    .unwrap();
    assert_eq!(record.attested, 1);
}

#[test]
fn an_unanswered_audit_releases_the_job_at_its_deadline() {
    let (mut chain, _, _, auditor) = posted_job(audited());
    chain.block(vec![]); // the draw
    let mut settled_at = None;
    for _ in 0..6 {
        let (_, events) = chain.block(vec![]);
        if events.iter().any(|e| e.kind == "verify.audit_missed") {
            assert!(events.iter().any(|e| e.kind == "compute.job_settled"));
            settled_at = Some(chain.height);
        }
    }
    assert!(settled_at.is_some(), "the audit deadline released the job");
    assert_eq!(chain.job(0).status, JobStatus::Settled);
    let record = verify::auditor(
        &StateDelta::new(&chain.state),
        &auditor.public_key().address(),
    )
    .unwrap();
    assert_eq!((record.attested, record.missed), (0, 1));
    // Unattested: the share stays in the pool.
    assert_eq!(chain.balance(&compute::auditor_pool()), Amount::new(400));
}

#[test]
fn a_silent_provider_loses_its_dispute_at_the_rounds_deadline() {
    let (mut chain, provider, client, auditor) = posted_job(audited());
    chain.block(vec![]); // the draw
    let stake_before = staking::bonded(
        &StateDelta::new(&chain.state),
        &provider.public_key().address(),
        Role::Provider,
    );
    let client_before = chain.balance(&client.public_key().address());
    let challenge = Message::Verify(verify::Msg::Challenge {
        job: 0,
        trace_root: Hash([9; 32]),
        step_count: 40,
        ids: Hash([1; 32]),
    });
    let (r, _) = chain.one(&auditor, challenge);
    assert_eq!(failed(&r), None);
    let params = audited();
    assert_eq!(chain.balance(&verify::escrow()), params.challenge_bond);
    assert_eq!(hold(&chain, 0), Some(Hold::Dispute));
    // Nobody else may move; a reveal that does not hash to the root is refused.
    let reveal = |round, left| {
        Message::Verify(verify::Msg::Reveal {
            job: 0,
            round,
            left,
            right: Hash([0; 32]),
            step_count: 40,
            ids: Hash([1; 32]),
        })
    };
    let (r, _) = chain.one(&client, reveal(0, Hash([3; 32])));
    assert_eq!(failed(&r), Some("not_a_party"));
    let client_fee = r.fee_paid;
    let (r, _) = chain.one(&auditor, reveal(1, Hash([3; 32])));
    assert_eq!(failed(&r), Some("wrong_round"));
    let (r, _) = chain.one(&auditor, reveal(0, Hash([3; 32])));
    assert_eq!(failed(&r), Some("bad_reveal"));
    let (r, _) = chain.one(
        &auditor,
        Message::Verify(verify::Msg::Arbitrate {
            job: 0,
            evidence: vec![1, 2, 3],
        }),
    );
    assert_eq!(failed(&r), Some("wrong_round"));
    // The provider never answers: at the deadline it loses.
    let mut resolved = None;
    for _ in 0..params.round_blocks + 1 {
        let (_, events) = chain.block(vec![]);
        if let Some(e) = events.iter().find(|e| e.kind == "verify.dispute_resolved") {
            resolved = Some(e.clone());
        }
    }
    let resolved = resolved.expect("the round deadline ended the dispute");
    assert_eq!(resolved.attribute("loser_side"), Some("defendant"));
    assert_eq!(resolved.attribute("reason"), Some("silent in a round"));
    assert_eq!(chain.job(0).status, JobStatus::Failed);
    let stake_after = staking::bonded(
        &StateDelta::new(&chain.state),
        &provider.public_key().address(),
        Role::Provider,
    );
    assert_eq!(
        stake_before.checked_sub(stake_after),
        Some(params.fraud_slash)
    );
    // The client gets the whole escrow back; the bond went back to the challenger.
    assert_eq!(
        chain.balance(&client.public_key().address()),
        client_before
            .checked_add(Amount::new(50_000))
            .and_then(|b| b.checked_sub(client_fee))
            .unwrap()
    );
    assert_eq!(chain.balance(&verify::escrow()), Amount::ZERO);
    assert_eq!(chain.balance(&compute::escrow()), Amount::ZERO);
}

#[test]
fn challenges_are_refused_outside_their_rules() {
    let (mut chain, provider, client, auditor) = posted_job(verify::Params::default());
    let challenge = |job, root| {
        Message::Verify(verify::Msg::Challenge {
            job,
            trace_root: root,
            step_count: 40,
            ids: Hash([1; 32]),
        })
    };
    let (r, _) = chain.one(&provider, challenge(0, Hash([9; 32])));
    assert_eq!(
        failed(&r),
        Some("not_challengeable"),
        "a provider cannot challenge itself"
    );
    let (r, _) = chain.one(&client, Message::Verify(verify::Msg::Attest { job: 0 }));
    assert_eq!(
        failed(&r),
        Some("not_a_party"),
        "no audit assigned to the client"
    );
    let (r, _) = chain.one(&auditor, challenge(9, Hash([9; 32])));
    assert_eq!(failed(&r), Some("unknown_job"));
    // The default rate may not have drawn an audit: past the window the job is settled and
    // out of reach.
    for _ in 0..3 {
        chain.block(vec![]);
    }
    if hold(&chain, 0).is_none() {
        assert_eq!(chain.job(0).status, JobStatus::Settled);
        let (r, _) = chain.one(&auditor, challenge(0, Hash([9; 32])));
        assert_eq!(failed(&r), Some("not_challengeable"));
    }
    let (r, _) = chain.one(
        &auditor,
        Message::Verify(verify::Msg::Reveal {
            job: 0,
            round: 0,
            left: Hash::ZERO,
            right: Hash::ZERO,
            step_count: 2,
            ids: Hash::ZERO,
        }),
    );
    assert_eq!(failed(&r), Some("no_dispute"));
    assert_eq!(
        chain.balance(&verify::escrow()),
        Amount::ZERO,
        "refused challenges hold no bond"
    );
}

/// A challenge with the result's own trace root disputes only the prompt count the provider
/// signed: no rounds, straight to the input phase; with no tokenizer sent by the arbitration
/// deadline the claimant loses its bond (the engines' own arbiter decides the count in
/// `crates/provider/tests/constrained_and_count_disputes.rs`).
#[test]
fn a_challenge_with_the_results_own_root_disputes_only_the_prompt_count() {
    let (mut chain, _, _, auditor) = posted_job(verify::Params::default());
    let (r, _) = chain.one(
        &auditor,
        Message::Verify(verify::Msg::Challenge {
            job: 0,
            trace_root: Hash([5; 32]),
            step_count: 40,
            ids: Hash([1; 32]),
        }),
    );
    assert_eq!(failed(&r), None, "the result states {POSTED_INPUT_UNITS}");
    let deadline: u64 = attribute(&r.events, "verify.input_disputed", "deadline_height")
        .parse()
        .unwrap();
    let dispute = verify::dispute(&StateDelta::new(&chain.state), 0).expect("a dispute");
    assert_eq!(dispute.phase, verify::Phase::Input);
    let bond = verify::Params::default().challenge_bond;
    let escrow = chain.balance(&verify::escrow());
    assert_eq!(escrow, bond);
    let mut ended = Vec::new();
    while chain.height < deadline {
        ended = chain.block(vec![]).1;
    }
    assert_eq!(
        attribute(&ended, "verify.dispute_resolved", "loser_side"),
        "claimant"
    );
    assert!(verify::dispute(&StateDelta::new(&chain.state), 0).is_none());
    assert_eq!(chain.balance(&verify::escrow()), Amount::ZERO);
    assert!(
        matches!(
            chain.job(0).status,
            JobStatus::Posted { .. } | JobStatus::Settled
        ),
        "the result stands"
    );
}

#[test]
fn a_redundant_job_settles_at_once_when_its_copies_agree() {
    let (a, b, client, _) = keys();
    let mut chain = Chain::new(&[&a, &b, &client], compute::Params::default());
    let t1 = chain.tx(&a, register("embed", 1_000));
    let t2 = chain.tx(&b, register("embed", 1_000));
    chain.block(vec![t1, t2]);
    let before = chain.balance(&client.public_key().address());
    let (r, _) = chain.one(&client, submit_twice());
    assert_eq!(failed(&r), None);
    assert_eq!(
        chain.balance(&compute::escrow()),
        Amount::new(100_000),
        "escrow per copy"
    );
    chain.block(vec![]);
    let (j0, j1) = (chain.job(0), chain.job(1));
    assert_eq!((j0.group, j1.group), (0, 0));
    let (p0, p1) = (j0.provider().unwrap(), j1.provider().unwrap());
    assert_ne!(p0, p1, "copies go to distinct providers");
    let key = |address| {
        if address == a.public_key().address() {
            &a
        } else {
            &b
        }
    };
    let t0 = chain.tx(key(p0), post(0, b"same", 3));
    let (receipts, _) = chain.block(vec![t0]);
    assert_eq!(failed(&receipts[0]), None);
    assert!(compute::is_held(&StateDelta::new(&chain.state), 0));
    // The next block reviews the posted copy: it waits for the other one.
    chain.block(vec![]);
    assert_eq!(
        hold(&chain, 0),
        Some(Hold::Group),
        "waits for the other copy"
    );
    let t1 = chain.tx(key(p1), post(1, b"same", 3));
    let (receipts, _) = chain.block(vec![t1]);
    assert_eq!(failed(&receipts[0]), None);
    let (_, events) = chain.block(vec![]);
    assert!(
        events.iter().any(|e| e.kind == "verify.group_agreed"),
        "{events:?}"
    );
    // Both settle in the block after the last copy, without waiting for a challenge window.
    assert_eq!(chain.job(0).status, JobStatus::Settled);
    assert_eq!(chain.job(1).status, JobStatus::Settled);
    assert_eq!(chain.balance(&compute::escrow()), Amount::ZERO);
    let paid = Amount::new(2 * 3_000);
    assert_eq!(
        chain.balance(&client.public_key().address()),
        before
            .checked_sub(r.fee_paid)
            .unwrap()
            .checked_sub(paid)
            .unwrap()
    );
}

#[test]
fn a_redundant_copy_nobody_can_serve_lets_the_others_settle() {
    let (a, b, client, _) = keys();
    let params = compute::Params {
        queue_timeout_blocks: 2,
        ..compute::Params::default()
    };
    let mut chain = Chain::new(&[&a, &b, &client], params);
    let t1 = chain.tx(&a, register("embed", 1_000));
    let t2 = chain.tx(&b, register("embed", 1_000));
    chain.block(vec![t1, t2]);
    // Two providers when the job is submitted; one leaves before its copy is assigned.
    let submit = chain.tx(&client, submit_twice());
    let exit = chain.tx(&b, Message::Compute(compute::Msg::ExitProvider));
    let (receipts, _) = chain.block(vec![submit, exit]);
    assert!(receipts.iter().all(|r| failed(r).is_none()), "{receipts:?}");
    chain.block(vec![]);
    // Only one provider left: one copy is assigned, the other waits and then expires.
    let assigned = if chain.job(0).provider().is_some() {
        0
    } else {
        1
    };
    let (r, _) = chain.one(&a, post(assigned, b"alone", 2));
    assert_eq!(failed(&r), None);
    for _ in 0..4 {
        chain.block(vec![]);
    }
    assert_eq!(chain.job(1 - assigned).status, JobStatus::Expired);
    assert_eq!(chain.job(assigned).status, JobStatus::Settled);
    assert_eq!(chain.balance(&compute::escrow()), Amount::ZERO);
}

#[test]
fn a_provider_cannot_exit_while_its_result_can_still_be_proven_wrong() {
    let (mut chain, provider, _, _) = posted_job(verify::Params::default());
    let exit = Message::Compute(compute::Msg::ExitProvider);
    // The result is in its challenge window (or held by an audit): leaving now would take the
    // stake a fraud slash needs.
    let (r, _) = chain.one(&provider, exit.clone());
    assert_eq!(failed(&r), Some("invalid_message"));
    assert!(matches!(chain.job(0).status, JobStatus::Posted { .. }));
    let record = compute::provider(
        &StateDelta::new(&chain.state),
        &provider.public_key().address(),
    )
    .unwrap();
    assert_eq!(record.unsettled, 1);
    for _ in 0..200 {
        if chain.job(0).status == JobStatus::Settled {
            break;
        }
        chain.block(vec![]);
    }
    assert_eq!(chain.job(0).status, JobStatus::Settled);
    let (r, _) = chain.one(&provider, exit);
    assert_eq!(failed(&r), None, "settled: the provider may leave");
}

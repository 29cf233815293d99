//! The verification game played by the daemons' own `Player`s against the ledger's executor,
//! in process and from a seed (see `harness`): an honest provider beats a wrong challenge, every
//! kind of cheating provider is bisected, arbitrated and slashed, a silent party loses at its
//! deadline, an absent auditor misses its audit, and any seed replays to the same chain.
//!
//! The real-process versions of a few of these (devnet, HTTP, daemons) stay in
//! `crates/cli/tests/verify.rs`.

mod harness;

use harness::{Setup, SimModel, World};
use piazza_ledger::compute::JobStatus;
use piazza_ledger::verify;
use piazza_primitives::Hash;
use piazza_provider::dispute::Fault;

/// Inputs the scenarios draw from (each seed picks one).
const TEXTS: [&str; 4] = [
    "the square beside the tower",
    "an honest answer",
    "bread, wine and olives",
    "a fountain at noon",
];

fn fault(spec: &str) -> Fault {
    spec.parse().expect("a known fault")
}

/// The step count of an honest run of `text` (where `first|middle|last` land).
fn steps(text: &str) -> u64 {
    piazza_arbiter::run_job(
        &harness::minilm(),
        &piazza_arbiter::JobSpec::embedding(text.into()),
        harness::THREADS,
        None,
    )
    .expect("MiniLM runs")
    .step_count()
}

/// How a dispute against a cheating provider should end.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Bisected to this step and arbitrated by re-execution.
    Step(u64),
    /// Decided by the ledger's own tokenization.
    Input,
    /// The silent side loses at a round's deadline.
    Silent,
}

/// Runs one job with a provider that has `provider_fault` and checks that it is caught: the
/// job fails and is refunded, the provider loses `fraud_slash` (half to the auditor), the
/// dispute ends as `expect` says, and the books balance.
async fn check_caught(seed: u64, text: &str, provider_fault: Fault, expect: Expect) {
    let mut world = World::new(Setup {
        seed,
        provider_fault,
        ..Setup::default()
    });
    let stake_before = world.provider_stake();
    let id = world.submit_job(text);
    let outcome = world.run_to_end(id).await;
    assert_eq!(
        outcome.status,
        JobStatus::Failed,
        "job {id} ({:?})",
        world.setup
    );
    let max_price = world.sim.read(|view| {
        piazza_ledger::compute::job(view, id)
            .expect("the job exists")
            .max_price
    });
    assert_eq!(
        world.attribute("compute.job_failed", id, "refund"),
        max_price.base_units().to_string(),
        "the client gets its whole escrow back"
    );
    let resolved = |name| world.attribute("verify.dispute_resolved", id, name);
    assert_eq!(resolved("loser"), world.provider.address().to_string());
    assert_eq!(resolved("winner"), world.auditor.address().to_string());
    assert_eq!(resolved("loser_side"), "defendant");
    let slash = verify::Params::default().fraud_slash;
    assert_eq!(
        world.provider_stake(),
        stake_before
            .checked_sub(slash)
            .expect("stake covers the slash"),
        "slashed by fraud_slash"
    );
    assert_eq!(resolved("to_winner"), (slash.base_units() / 2).to_string());
    match expect {
        Expect::Step(step) => {
            assert_eq!(
                world.attribute("verify.step_found", id, "step"),
                step.to_string(),
                "bisected to the corrupted step"
            );
            assert_eq!(
                world.attribute("verify.arbitrated", id, "by"),
                world.auditor.address().to_string(),
                "the honest side sends the evidence"
            );
        }
        Expect::Input => {
            assert!(world.sim.event("verify.input_disputed", id).is_some());
            assert!(resolved("reason").starts_with("input tokenized to"));
        }
        Expect::Silent => assert_eq!(resolved("reason"), "silent in a round"),
    }
    world.check_books().expect("the books balance");
    eprintln!(
        "seed {seed} {:?}: {} blocks, {} rounds",
        world.setup.provider_fault,
        outcome.blocks,
        resolved("rounds")
    );
}

#[tokio::test]
async fn an_honest_provider_falsely_challenged_keeps_its_stake_and_the_challenger_loses_its_bond() {
    let mut world = World::new(Setup {
        seed: 1,
        auditor_fault: fault("corrupt-op=middle"),
        ..Setup::default()
    });
    let stake_before = world.provider_stake();
    let auditor_before = world.balance(&world.auditor.address());
    let id = world.submit_job(TEXTS[1]);
    let outcome = world.run_to_end(id).await;
    assert_eq!(
        outcome.status,
        JobStatus::Settled,
        "the honest result stands"
    );
    let resolved = |name| world.attribute("verify.dispute_resolved", id, name);
    assert_eq!(resolved("winner"), world.provider.address().to_string());
    assert_eq!(resolved("loser"), world.auditor.address().to_string());
    assert_eq!(resolved("loser_side"), "claimant");
    assert_eq!(
        world.provider_stake(),
        stake_before,
        "the honest stake is untouched"
    );
    let bond = verify::Params::default().challenge_bond;
    assert_eq!(resolved("to_winner"), (bond.base_units() / 2).to_string());
    let auditor_after = world.balance(&world.auditor.address());
    assert!(
        auditor_before.checked_sub(auditor_after) >= Some(bond),
        "the challenger's bond is gone: {auditor_before} -> {auditor_after}"
    );
    world.check_books().expect("the books balance");
}

#[tokio::test]
async fn a_provider_corrupting_its_first_step_is_bisected_to_it_and_slashed() {
    check_caught(2, TEXTS[0], fault("corrupt-op=first"), Expect::Step(0)).await;
}

#[tokio::test]
async fn a_provider_corrupting_its_middle_step_is_bisected_to_it_and_slashed() {
    let middle = steps(TEXTS[0]) / 2;
    check_caught(
        3,
        TEXTS[0],
        fault("corrupt-op=middle"),
        Expect::Step(middle),
    )
    .await;
}

#[tokio::test]
async fn a_provider_corrupting_its_last_step_is_bisected_to_it_and_slashed() {
    let last = steps(TEXTS[2]) - 1;
    check_caught(4, TEXTS[2], fault("corrupt-op=last"), Expect::Step(last)).await;
}

#[tokio::test]
async fn a_provider_posting_a_wrong_output_is_bisected_to_its_last_step_and_slashed() {
    let last = steps(TEXTS[3]) - 1;
    check_caught(5, TEXTS[3], fault("wrong-output"), Expect::Step(last)).await;
}

#[tokio::test]
async fn a_provider_running_other_token_ids_loses_the_input_dispute_and_is_slashed() {
    check_caught(6, TEXTS[0], fault("wrong-ids"), Expect::Input).await;
}

#[tokio::test]
async fn a_provider_silent_in_its_dispute_loses_at_the_round_deadline_and_is_slashed() {
    check_caught(
        7,
        TEXTS[1],
        fault("corrupt-op=middle,silent-in-dispute"),
        Expect::Silent,
    )
    .await;
}

#[tokio::test]
async fn a_provider_stopping_its_generation_early_loses_the_length_decision_and_is_slashed() {
    let mut world = World::new(Setup {
        seed: 10,
        provider_fault: fault("stop-early"),
        model: SimModel::SmolLm2,
        ..Setup::default()
    });
    let stake_before = world.provider_stake();
    let id = world.submit_job("Name a colour.");
    let outcome = world.run_to_end(id).await;
    assert_eq!(
        outcome.status,
        JobStatus::Failed,
        "{:?}",
        world.sim.refusals()
    );
    assert!(
        world.sim.event("verify.length_disputed", id).is_some(),
        "the walk agreed the common prefix and asked for the length"
    );
    let resolved = |name| world.attribute("verify.dispute_resolved", id, name);
    assert_eq!(resolved("loser"), world.provider.address().to_string());
    assert_eq!(
        world.attribute("verify.arbitrated", id, "by"),
        world.auditor.address().to_string(),
        "the longer, honest run sends the length evidence"
    );
    let slash = verify::Params::default().fraud_slash;
    assert_eq!(
        world.provider_stake(),
        stake_before
            .checked_sub(slash)
            .expect("stake covers the slash")
    );
    world.check_books().expect("the books balance");
    eprintln!(
        "stop-early: {} blocks, {} rounds, {}",
        outcome.blocks,
        resolved("rounds"),
        resolved("reason")
    );
}

#[tokio::test]
async fn a_challenger_silent_in_its_dispute_loses_its_bond_at_the_round_deadline() {
    let mut world = World::new(Setup {
        seed: 8,
        auditor_fault: fault("corrupt-op=middle,silent-in-dispute"),
        ..Setup::default()
    });
    let stake_before = world.provider_stake();
    let id = world.submit_job(TEXTS[2]);
    let outcome = world.run_to_end(id).await;
    assert_eq!(outcome.status, JobStatus::Settled);
    let resolved = |name| world.attribute("verify.dispute_resolved", id, name);
    assert_eq!(resolved("loser_side"), "claimant");
    assert_eq!(resolved("reason"), "silent in a round");
    assert_eq!(world.provider_stake(), stake_before);
    world.check_books().expect("the books balance");
}

#[tokio::test]
async fn an_auditor_that_never_answers_misses_its_audit_and_the_result_settles() {
    let mut world = World::new(Setup {
        seed: 9,
        auditor_offline: true,
        ..Setup::default()
    });
    let id = world.submit_job(TEXTS[3]);
    let outcome = world.run_to_end(id).await;
    assert_eq!(outcome.status, JobStatus::Settled);
    assert_eq!(
        world.attribute("verify.audit_missed", id, "auditor"),
        world.auditor.address().to_string()
    );
    let me = world.auditor.address();
    let missed = world
        .sim
        .read(|view| verify::auditor(view, &me).expect("registered").missed);
    assert_eq!(missed, 1);
    assert!(world.sim.event("verify.dispute_opened", id).is_none());
    world.check_books().expect("the books balance");
}

/// What a seed plays: which side cheats and how, on which input.
fn scenario(seed: u64) -> (Setup, &'static str, bool) {
    // A fixed mix (splitmix64 of the seed), so each seed is one reproducible scenario.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    const FAULTS: [&str; 6] = [
        "corrupt-op=first",
        "corrupt-op=middle",
        "corrupt-op=last",
        "wrong-output",
        "wrong-ids",
        "corrupt-op=middle,silent-in-dispute",
    ];
    let text = TEXTS[(z % TEXTS.len() as u64) as usize];
    let cheat = fault(FAULTS[((z >> 8) % FAULTS.len() as u64) as usize]);
    let provider_cheats = !(z >> 16).is_multiple_of(3);
    let setup = if provider_cheats {
        Setup {
            seed,
            provider_fault: cheat,
            ..Setup::default()
        }
    } else {
        Setup {
            seed,
            auditor_fault: cheat,
            ..Setup::default()
        }
    };
    (setup, text, provider_cheats)
}

/// Plays seed `seed`'s scenario; checks that the honest side won and the books balance;
/// returns the chain's digest.
async fn play_seed(seed: u64) -> Hash {
    let (setup, text, provider_cheats) = scenario(seed);
    let mut world = World::new(setup);
    let id = world.submit_job(text);
    let outcome = world.run_to_end(id).await;
    let honest = if provider_cheats {
        &world.auditor
    } else {
        &world.provider
    };
    assert_eq!(
        world.attribute("verify.dispute_resolved", id, "winner"),
        honest.address().to_string(),
        "seed {seed}: {:?}",
        world.setup
    );
    let expected = if provider_cheats {
        JobStatus::Failed
    } else {
        JobStatus::Settled
    };
    assert_eq!(outcome.status, expected, "seed {seed}: {:?}", world.setup);
    world.check_books().expect("the books balance");
    eprintln!(
        "seed {seed}: {:?} / {:?} on {text:?}: {:?} after {} blocks",
        world.setup.provider_fault, world.setup.auditor_fault, outcome.status, outcome.blocks
    );
    world.sim.digest()
}

#[tokio::test]
async fn on_every_seed_the_honest_side_wins_and_a_seed_replays_to_the_same_chain() {
    const SEEDS: u64 = 6;
    let mut digests = Vec::new();
    for seed in 100..100 + SEEDS {
        digests.push(play_seed(seed).await);
    }
    // Replaying a seed (a fresh world, fresh players) makes the same chain to the byte.
    assert_eq!(play_seed(100).await, digests[0], "seed 100 replays");
    // Different seeds draw different randomness, so their chains differ.
    assert_ne!(digests[0], digests[1]);
}

#[test]
fn the_scenario_mix_covers_both_sides_and_every_fault() {
    let mut faults = std::collections::BTreeSet::new();
    let mut sides = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let (setup, _, provider_cheats) = scenario(seed);
        sides.insert(provider_cheats);
        let cheat = if provider_cheats {
            setup.provider_fault
        } else {
            setup.auditor_fault
        };
        assert!(!cheat.is_none(), "seed {seed} plays a cheat");
        faults.insert(format!("{cheat:?}"));
    }
    assert_eq!(sides.len(), 2);
    assert_eq!(faults.len(), 6);
}

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

/// How a dispute should end, besides the honest side winning.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Bisected to this step and arbitrated by re-execution.
    Step(u64),
    /// Decided by the ledger's own tokenization.
    Input,
    /// Decided by the ledger's reading of where the generation stops.
    Length,
    /// The silent side loses at a round's deadline.
    Silent,
    /// Any way (the seed loop: the fault is drawn).
    Any,
}

/// Runs one job of `setup`'s world on `text` and checks the dispute that one cheating side
/// (the provider, if it has a fault; else the auditor) brings about: the honest side wins, in
/// the way `expect` says; a cheating provider's job fails with a full refund and it loses
/// `fraud_slash`, a cheating auditor's bond is lost and the provider's stake untouched; the
/// winner gets half of either; the books balance. Returns the world for further checks.
async fn check(setup: Setup, text: &str, expect: Expect) -> (World, u64) {
    let provider_cheats = !setup.provider_fault.is_none();
    let mut world = World::new(setup);
    let (stake_before, auditor_before) = (
        world.provider_stake(),
        world.balance(&world.auditor.address()),
    );
    let id = world.submit_job(text);
    let outcome = world.run_to_end(id).await;
    let context = format!("job {id} of {:?}", world.setup);
    let (honest, cheat) = if provider_cheats {
        (&world.auditor, &world.provider)
    } else {
        (&world.provider, &world.auditor)
    };
    let resolved = |name| world.attribute("verify.dispute_resolved", id, name);
    assert_eq!(
        resolved("winner"),
        honest.address().to_string(),
        "{context}"
    );
    assert_eq!(resolved("loser"), cheat.address().to_string(), "{context}");
    let params = verify::Params::default();
    if provider_cheats {
        assert_eq!(outcome.status, JobStatus::Failed, "{context}");
        assert_eq!(resolved("loser_side"), "defendant");
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
        let slashed = stake_before.checked_sub(params.fraud_slash);
        assert_eq!(
            Some(world.provider_stake()),
            slashed,
            "slashed by fraud_slash"
        );
        assert_eq!(
            resolved("to_winner"),
            (params.fraud_slash.base_units() / 2).to_string()
        );
    } else {
        assert_eq!(
            outcome.status,
            JobStatus::Settled,
            "the honest result stands"
        );
        assert_eq!(resolved("loser_side"), "claimant");
        assert_eq!(
            world.provider_stake(),
            stake_before,
            "the honest stake is untouched"
        );
        let bond = params.challenge_bond;
        assert_eq!(resolved("to_winner"), (bond.base_units() / 2).to_string());
        let auditor_after = world.balance(&world.auditor.address());
        assert!(
            auditor_before.checked_sub(auditor_after) >= Some(bond),
            "the challenger's bond is gone: {auditor_before} -> {auditor_after}"
        );
    }
    let arbitrated_by_honest = || {
        assert_eq!(
            world.attribute("verify.arbitrated", id, "by"),
            honest.address().to_string(),
            "the honest side sends the evidence"
        )
    };
    match expect {
        Expect::Step(step) => {
            assert_eq!(
                world.attribute("verify.step_found", id, "step"),
                step.to_string(),
                "bisected to the corrupted step"
            );
            arbitrated_by_honest();
        }
        Expect::Input => {
            assert!(world.sim.event("verify.input_disputed", id).is_some());
            assert!(resolved("reason").starts_with("input tokenized to"));
        }
        Expect::Length => {
            assert!(
                world.sim.event("verify.length_disputed", id).is_some(),
                "the walk agreed the common prefix and asked for the length"
            );
            arbitrated_by_honest();
        }
        Expect::Silent => assert_eq!(resolved("reason"), "silent in a round"),
        Expect::Any => {}
    }
    world.check_books().expect("the books balance");
    eprintln!(
        "{:?} / {:?} on {text:?}: {:?} after {} blocks, {} rounds",
        world.setup.provider_fault,
        world.setup.auditor_fault,
        outcome.status,
        outcome.blocks,
        resolved("rounds")
    );
    (world, id)
}

/// A MiniLM world of `seed` with a cheating provider.
fn cheating_provider(seed: u64, spec: &str) -> Setup {
    Setup {
        seed,
        provider_fault: fault(spec),
        ..Setup::default()
    }
}

/// A MiniLM world of `seed` with a cheating auditor.
fn cheating_auditor(seed: u64, spec: &str) -> Setup {
    Setup {
        seed,
        auditor_fault: fault(spec),
        ..Setup::default()
    }
}

#[tokio::test]
async fn an_honest_result_is_attested_and_settles_with_nothing_slashed() {
    let mut world = World::new(Setup {
        seed: 12,
        ..Setup::default()
    });
    let (provider_stake, auditor_stake) = (world.provider_stake(), world.auditor_stake());
    let id = world.submit_job(TEXTS[2]);
    let outcome = world.run_to_end(id).await;
    assert_eq!(outcome.status, JobStatus::Settled);
    assert_eq!(
        world.attribute("verify.attested", id, "auditor"),
        world.auditor.address().to_string()
    );
    assert!(world.sim.event("verify.dispute_opened", id).is_none());
    assert_eq!(
        (world.provider_stake(), world.auditor_stake()),
        (provider_stake, auditor_stake)
    );
    world.check_books().expect("the books balance");
}

#[tokio::test]
async fn an_honest_provider_falsely_challenged_keeps_its_stake_and_the_challenger_loses_its_bond() {
    let middle = steps(TEXTS[1]) / 2;
    check(
        cheating_auditor(1, "corrupt-op=middle"),
        TEXTS[1],
        Expect::Step(middle),
    )
    .await;
}

#[tokio::test]
async fn a_provider_corrupting_its_first_step_is_bisected_to_it_and_slashed() {
    check(
        cheating_provider(2, "corrupt-op=first"),
        TEXTS[0],
        Expect::Step(0),
    )
    .await;
}

#[tokio::test]
async fn a_provider_corrupting_its_middle_step_is_bisected_to_it_and_slashed() {
    let middle = steps(TEXTS[0]) / 2;
    check(
        cheating_provider(3, "corrupt-op=middle"),
        TEXTS[0],
        Expect::Step(middle),
    )
    .await;
}

#[tokio::test]
async fn a_provider_corrupting_its_last_step_is_bisected_to_it_and_slashed() {
    let last = steps(TEXTS[2]) - 1;
    check(
        cheating_provider(4, "corrupt-op=last"),
        TEXTS[2],
        Expect::Step(last),
    )
    .await;
}

#[tokio::test]
async fn a_provider_posting_a_wrong_output_is_bisected_to_its_last_step_and_slashed() {
    let last = steps(TEXTS[3]) - 1;
    check(
        cheating_provider(5, "wrong-output"),
        TEXTS[3],
        Expect::Step(last),
    )
    .await;
}

#[tokio::test]
async fn a_provider_running_other_token_ids_loses_the_input_dispute_and_is_slashed() {
    check(cheating_provider(6, "wrong-ids"), TEXTS[0], Expect::Input).await;
}

#[tokio::test]
async fn a_provider_silent_in_its_dispute_loses_at_the_round_deadline_and_is_slashed() {
    check(
        cheating_provider(7, "corrupt-op=middle,silent-in-dispute"),
        TEXTS[1],
        Expect::Silent,
    )
    .await;
}

#[tokio::test]
async fn a_challenger_silent_in_its_dispute_loses_its_bond_at_the_round_deadline() {
    check(
        cheating_auditor(8, "corrupt-op=middle,silent-in-dispute"),
        TEXTS[2],
        Expect::Silent,
    )
    .await;
}

#[tokio::test]
async fn a_provider_stopping_its_generation_early_loses_the_length_decision_and_is_slashed() {
    let setup = Setup {
        model: SimModel::SmolLm2,
        ..cheating_provider(10, "stop-early")
    };
    check(setup, "Name a colour.", Expect::Length).await;
}

#[tokio::test]
async fn an_honest_generation_beats_a_false_shorter_length_claim() {
    let setup = Setup {
        model: SimModel::SmolLm2,
        ..cheating_auditor(14, "stop-early")
    };
    check(setup, "Name a colour.", Expect::Length).await;
}

#[tokio::test]
async fn a_move_refused_by_a_full_queue_is_made_again_and_the_cheat_is_still_caught() {
    let mut world = World::new(cheating_provider(13, "corrupt-op=middle"));
    let id = world.submit_job(TEXTS[0]);
    for _ in 0..harness::SCENARIO_BLOCKS_MAX {
        if world.disputed(id) {
            break;
        }
        world.step().await;
    }
    assert!(world.disputed(id), "the auditor challenged");
    // A full queue refuses both sides' reveals for one block...
    assert_eq!(world.fill_pending(), harness::PENDING_TXS_MAX);
    world.step().await;
    assert!(
        world.sim.refused_full() >= 2,
        "both reveals were refused, not dropped: {}",
        world.sim.refused_full()
    );
    // ...and the players make them again: the game goes on to the same end.
    let outcome = world.run_to_end(id).await;
    assert_eq!(outcome.status, JobStatus::Failed);
    assert_eq!(
        world.attribute("verify.dispute_resolved", id, "loser"),
        world.provider.address().to_string()
    );
    world.check_books().expect("the books balance");
}

#[tokio::test]
async fn daemons_restarted_in_the_middle_of_a_dispute_play_it_to_the_same_end() {
    let setup = cheating_auditor(15, "corrupt-op=last");
    let mut world = World::new(setup.clone());
    let id = world.submit_job(TEXTS[3]);
    let mut restarts = 0;
    for _ in 0..harness::SCENARIO_BLOCKS_MAX {
        if world.disputed(id) {
            // Each block of the dispute, both processes crash and start again.
            world.restart_players();
            restarts += 1;
        } else if restarts > 0 {
            break;
        }
        world.step().await;
    }
    assert!(
        restarts >= 2,
        "restarted during the dispute ({restarts} times)"
    );
    assert!(!world.disputed(id));
    assert_eq!(
        world.attribute("verify.dispute_resolved", id, "winner"),
        world.provider.address().to_string(),
        "{:?}",
        world.sim.refusals()
    );
    // The same game without restarts ends the same way, in the same number of rounds.
    let (calm, calm_id) = check(setup, TEXTS[3], Expect::Any).await;
    let rounds = |w: &World, id| w.attribute("verify.dispute_resolved", id, "rounds");
    assert_eq!(rounds(&world, id), rounds(&calm, calm_id));
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
fn scenario(seed: u64) -> (Setup, &'static str) {
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
    let cheat = FAULTS[((z >> 8) % FAULTS.len() as u64) as usize];
    let setup = if (z >> 16).is_multiple_of(3) {
        cheating_auditor(seed, cheat)
    } else {
        cheating_provider(seed, cheat)
    };
    (setup, text)
}

/// Plays seed `seed`'s scenario through [`check`]; returns the chain's digest.
async fn play_seed(seed: u64) -> Hash {
    let (setup, text) = scenario(seed);
    let (world, _) = check(setup, text, Expect::Any).await;
    world.sim.digest()
}

#[tokio::test]
async fn on_every_seed_the_honest_side_wins_and_a_seed_replays_to_the_same_chain() {
    const SEEDS: u64 = 16;
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
        let (setup, _) = scenario(seed);
        let provider_cheats = !setup.provider_fault.is_none();
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

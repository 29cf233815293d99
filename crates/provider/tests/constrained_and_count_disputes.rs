//! Two disputes the ledger could not decide before, on SmolLM2 against the ledger's executor
//! with the node's own arbiter (see `harness`):
//! - a constrained job's sample step (the token mask needs the vocabulary: the step's evidence
//!   carries the tokenizer, checked against the model record): the daemons' own `Player`s
//!   bisect to it and the arbiter re-executes it under the mask, so a cheating provider is
//!   slashed and an honest one is upheld;
//! - a prompt count that is merely wrong: a challenge with the result's own trace root
//!   disputes only the count the provider signed, and the ledger's tokenization decides it.

mod harness;

use harness::{Setup, SimModel, World, THREADS};
use piazza_ledger::compute::{self, JobStatus};
use piazza_ledger::tx::Message;
use piazza_ledger::verify;
use piazza_primitives::Hash;
use piazza_provider::dispute::Fault;

/// A `json_object` constraint header (piazza-grammar's `Constraint::JsonObject.wrap`) in
/// front of a chat prompt.
const CONSTRAINED_INPUT: &str = "\u{1e}piazza-constraint/1\njson_object\n0\n\nDescribe a cat.";

fn setup(seed: u64, provider: &str, auditor: &str) -> Setup {
    Setup {
        seed,
        provider_fault: provider.parse::<Fault>().expect("a known fault"),
        auditor_fault: auditor.parse::<Fault>().expect("a known fault"),
        model: SimModel::SmolLm2,
        ..Setup::default()
    }
}

/// Plays a constrained job whose last step (the last token's sample step) one side corrupts,
/// and checks that it was bisected to that step and arbitrated with the tokenizer in the
/// evidence; returns the world, the job and the dispute's loser.
async fn constrained_dispute(setup: Setup) -> (World, u64, String) {
    let mut world = World::new(setup);
    let id = world.submit_job(CONSTRAINED_INPUT);
    let outcome = world.run_to_end(id).await;
    let tokenizer_bytes = match harness::smollm2() {
        piazza_arbiter::LoadedModel::Generation(g) => g.tokenizer().metadata_preimage().len(),
        piazza_arbiter::LoadedModel::Embedding(_) => unreachable!("SmolLM2 generates"),
    };
    let step: u64 = world
        .attribute("verify.step_found", id, "step")
        .parse()
        .unwrap();
    let evidence_bytes: usize = world
        .attribute("verify.arbitrated", id, "evidence_bytes")
        .parse()
        .unwrap();
    eprintln!(
        "constrained job {id}: {:?} after {} blocks; step {step} arbitrated from {evidence_bytes} evidence bytes (tokenizer {tokenizer_bytes})",
        outcome.status, outcome.blocks
    );
    assert!(
        evidence_bytes > tokenizer_bytes,
        "the sample step's evidence carries the tokenizer"
    );
    let reason = world.attribute("verify.dispute_resolved", id, "reason");
    assert!(
        reason.starts_with(&format!("step {step} re-executed")),
        "{reason}"
    );
    world.check_books().expect("the books balance");
    let loser = world.attribute("verify.dispute_resolved", id, "loser");
    (world, id, loser)
}

#[tokio::test]
async fn a_provider_corrupting_a_constrained_sample_step_is_bisected_arbitrated_and_slashed() {
    let (world, id, loser) = constrained_dispute(setup(21, "corrupt-op=last", "")).await;
    assert_eq!(loser, world.provider.address().to_string());
    let job = world.sim.read(|view| compute::job(view, id)).unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let params = verify::Params::default();
    assert_eq!(
        Some(world.provider_stake()),
        piazza_primitives::Amount::pza(1_000).checked_sub(params.fraud_slash),
        "slashed by fraud_slash"
    );
}

#[tokio::test]
async fn an_honest_constrained_sample_step_is_upheld_against_a_false_challenge() {
    let (world, id, loser) = constrained_dispute(setup(22, "", "corrupt-op=last")).await;
    assert_eq!(loser, world.auditor.address().to_string());
    let job = world.sim.read(|view| compute::job(view, id)).unwrap();
    assert_eq!(job.status, JobStatus::Settled, "the honest result stands");
    assert_eq!(
        world.provider_stake(),
        piazza_primitives::Amount::pza(1_000)
    );
}

/// The honest run of job `id` as the provider computes it, and its prompt count.
fn honest_run(world: &World, id: u64) -> (piazza_arbiter::JobRun, u64) {
    let job = world.sim.read(|view| compute::job(view, id)).unwrap();
    let spec = piazza_node::arbitration::job_spec(&piazza_ledger::arbitration::Job {
        input: job.input,
        params: job.params,
    });
    let run = piazza_arbiter::run_job(&harness::smollm2(), &spec, THREADS, None).unwrap();
    let count = run.ids.len() as u64;
    (run, count)
}

/// The provider posts the honest result of a fresh job with `input_units(count)` prompt
/// tokens; returns the job, its honest run and count.
fn post_honest(
    world: &World,
    input_units: impl Fn(u64) -> u64,
) -> (u64, piazza_arbiter::JobRun, u64) {
    let id = world.submit_job("Name a colour.");
    world.sim.block(); // assigned to the only provider
    let (run, count) = honest_run(world, id);
    let post = Message::Compute(compute::Msg::PostResult {
        job: id,
        output: run.output.clone(),
        output_hash: compute::output_hash(&run.output),
        trace_root: Hash(run.trace_root),
        work_units: run.work_units,
        input_units: input_units(count),
    });
    world.sim.submit(&world.provider.key, vec![post]).unwrap();
    world.sim.block();
    (id, run, count)
}

/// [`post_honest`], then the client challenges the result with its own trace root (the
/// count alone); returns the job, the honest count and whether the challenge was accepted.
fn post_and_challenge_count(world: &World, input_units: impl Fn(u64) -> u64) -> (u64, u64, bool) {
    let (id, run, count) = post_honest(world, input_units);
    let challenge = Message::Verify(verify::Msg::Challenge {
        job: id,
        trace_root: Hash(run.trace_root),
        step_count: run.step_count(),
        ids: Hash(run.ids_commitment()),
    });
    let before = world.sim.refusals().len();
    world.sim.submit(&world.user, vec![challenge]).unwrap();
    world.sim.block();
    let accepted = world.sim.refusals().len() == before;
    (id, count, accepted)
}

/// The client sends the tokenizer for job `id`'s input phase; returns the resolution's loser
/// and reason.
fn arbitrate_input(world: &World, id: u64) -> (String, String) {
    let evidence = piazza_arbiter::input_evidence(&harness::smollm2());
    let message = Message::Verify(verify::Msg::Arbitrate { job: id, evidence });
    world.sim.submit(&world.user, vec![message]).unwrap();
    world.sim.block();
    assert!(
        world.sim.event("verify.input_disputed", id).is_some(),
        "a count-only challenge goes straight to the input phase"
    );
    (
        world.attribute("verify.dispute_resolved", id, "loser"),
        world.attribute("verify.dispute_resolved", id, "reason"),
    )
}

#[tokio::test]
async fn a_provider_that_signed_a_wrong_prompt_count_loses_the_count_dispute() {
    let world = World::new(setup(23, "", ""));
    let stake = world.provider_stake();
    let (id, count, accepted) = post_and_challenge_count(&world, |count| count + 1);
    assert!(accepted, "{:?}", world.sim.refusals());
    let (loser, reason) = arbitrate_input(&world, id);
    assert_eq!(loser, world.provider.address().to_string());
    assert_eq!(reason, format!("input tokenized to {count} ids"));
    let job = world.sim.read(|view| compute::job(view, id)).unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(
        Some(world.provider_stake()),
        stake.checked_sub(verify::Params::default().fraud_slash)
    );
    world.check_books().expect("the books balance");
}

#[tokio::test]
async fn a_right_prompt_count_beats_its_challenger_and_an_unstated_one_cannot_be_challenged() {
    let world = World::new(setup(24, "", ""));
    let stake = world.provider_stake();
    let (id, count, accepted) = post_and_challenge_count(&world, |count| count);
    assert!(accepted, "{:?}", world.sim.refusals());
    let (loser, reason) = arbitrate_input(&world, id);
    assert_eq!(loser, world.user.public_key().address().to_string());
    assert_eq!(reason, format!("input tokenized to {count} ids"));
    assert_eq!(
        world.provider_stake(),
        stake,
        "the honest stake is untouched"
    );
    // A result that states no count (0) has nothing a count-only challenge could dispute.
    let (id, _, accepted) = post_and_challenge_count(&world, |_| 0);
    assert!(
        !accepted,
        "a count-only challenge of an unstated count is refused"
    );
    assert!(world.sim.event("verify.dispute_opened", id).is_none());
    assert!(
        world
            .sim
            .refusals()
            .last()
            .is_some_and(|r| r.contains("states no prompt count")),
        "{:?}",
        world.sim.refusals()
    );
    world.check_books().expect("the books balance");
}

/// An input dispute in which neither party ran the ledger's ids and count: the challenger ran
/// other ids (`wrong-ids`), the provider the right ones but signed a wrong count. The provider's
/// player sends the tokenizer (its ids are the ledger's), and the count it signed loses it the
/// dispute.
#[tokio::test]
async fn a_right_run_with_a_wrong_signed_count_loses_an_input_dispute() {
    let mut world = World::new(setup(25, "", "wrong-ids"));
    let stake = world.provider_stake();
    let (id, _, count) = post_honest(&world, |count| count + 2);
    let outcome = world.run_to_end(id).await;
    assert!(world.sim.event("verify.input_disputed", id).is_some());
    assert_eq!(
        world.attribute("verify.arbitrated", id, "by"),
        world.provider.address().to_string(),
        "the provider's ids are the ledger's, so its player sends the tokenizer"
    );
    assert_eq!(
        world.attribute("verify.dispute_resolved", id, "loser"),
        world.provider.address().to_string(),
        "it signed {} prompt tokens for {count}",
        count + 2
    );
    assert_eq!(outcome.status, JobStatus::Failed);
    assert_eq!(
        Some(world.provider_stake()),
        stake.checked_sub(verify::Params::default().fraud_slash)
    );
    world.check_books().expect("the books balance");
}

/// An honest auditor drawn for a result whose run is right but whose signed prompt count is
/// wrong challenges the count by itself (the result's own trace root), sends the tokenizer in
/// the input phase, and the provider is slashed.
#[tokio::test]
async fn an_honest_auditor_challenges_a_wrong_signed_count_by_itself() {
    let mut world = World::new(setup(26, "", ""));
    let stake = world.provider_stake();
    let (id, run, count) = post_honest(&world, |count| count + 1);
    let outcome = world.run_to_end(id).await;
    assert_eq!(
        world.attribute("verify.dispute_opened", id, "claimant"),
        world.auditor.address().to_string(),
        "the auditor challenged"
    );
    assert!(
        world.sim.event("verify.input_disputed", id).is_some(),
        "the count (the run's root {} is right) is decided in the input phase",
        Hash(run.trace_root)
    );
    assert_eq!(
        world.attribute("verify.dispute_resolved", id, "loser"),
        world.provider.address().to_string(),
        "it signed {} prompt tokens for {count}",
        count + 1
    );
    assert_eq!(outcome.status, JobStatus::Failed);
    assert_eq!(
        Some(world.provider_stake()),
        stake.checked_sub(verify::Params::default().fraud_slash)
    );
    world.check_books().expect("the books balance");
}

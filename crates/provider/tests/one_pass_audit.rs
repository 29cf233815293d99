//! An auditor checks a generation in one prefill-shaped pass over the prompt and the posted
//! text (`dispute::audit_in_one_pass`): an honest SmolLM2 result is attested without a
//! step-by-step re-run; a faked one is not matched by the pass, so the auditor re-runs the job
//! and challenges it, and the cheat is slashed. The pass gives the output hash and trace root a
//! full run gives.

mod harness;

use harness::{Setup, SimModel, World};
use piazza_ledger::compute::JobStatus;
use piazza_primitives::Hash;
use piazza_provider::dispute::{audit_in_one_pass, Fault, OnePass};

const PROMPT: &str = "Name a colour.";

/// The job `world` submits for `text`, as the arbiter reads it.
fn spec_of(world: &World, text: &str) -> piazza_arbiter::JobSpec {
    let id = world.submit_job(text);
    world
        .sim
        .read(|view| piazza_ledger::compute::job(view, id))
        .map(|job| {
            piazza_node::arbitration::job_spec(&piazza_ledger::arbitration::Job {
                input: job.input,
                params: job.params,
            })
        })
        .expect("the job is on chain")
}

#[test]
fn one_pass_gives_the_output_hash_and_trace_root_of_a_full_run() {
    let world = World::new(Setup {
        seed: 3,
        model: SimModel::SmolLm2,
        ..Setup::default()
    });
    let model = harness::smollm2();
    for text in [PROMPT, "Say hello in French."] {
        let spec = spec_of(&world, text);
        let run = piazza_arbiter::run_job(&model, &spec, harness::THREADS, None).unwrap();
        let expected = OnePass {
            output_hash: piazza_ledger::compute::output_hash(&run.output),
            trace_root: Hash(run.trace_root),
            prompt_count: run.ids.len() as u64,
        };
        let found = audit_in_one_pass(&model, &spec, &run.output, harness::THREADS).unwrap();
        assert_eq!(found, Some(expected), "{text:?}");
        // Another text: the pass follows the generation, not the text, so it gives the
        // honest root (which then differs from what a faker posted) or cannot tell.
        let mut other = run.output.clone();
        other.extend_from_slice(b" and more");
        let found = audit_in_one_pass(&model, &spec, &other, harness::THREADS).unwrap();
        assert!(found.is_none() || found == Some(expected), "{text:?}");
    }
    // An embedding job is not a generation: one pass cannot tell, the full run does.
    let embedding = piazza_arbiter::JobSpec::embedding("a fountain at noon".into());
    let found = audit_in_one_pass(&harness::minilm(), &embedding, b"", harness::THREADS).unwrap();
    assert_eq!(found, None);
}

#[tokio::test]
async fn an_honest_generation_is_attested_from_one_pass_without_a_full_run() {
    let mut world = World::new(Setup {
        seed: 21,
        model: SimModel::SmolLm2,
        ..Setup::default()
    });
    let id = world.submit_job(PROMPT);
    let status = world.run_to_end(id).await.status;
    let attested_by = world.attribute("verify.attested", id, "auditor");
    let auditor = world.auditor.address().to_string();
    assert_eq!((status, attested_by), (JobStatus::Settled, auditor));
    assert_eq!(world.auditor.player.full_runs(), 0, "one pass decided");
}

#[tokio::test]
async fn a_faked_generation_is_challenged_after_a_full_run_and_slashed() {
    let mut world = World::new(Setup {
        seed: 22,
        model: SimModel::SmolLm2,
        provider_fault: "corrupt-op=middle".parse::<Fault>().unwrap(),
        ..Setup::default()
    });
    let stake_before = world.provider_stake();
    let id = world.submit_job(PROMPT);
    let outcome = world.run_to_end(id).await;
    assert!(world.sim.event("verify.dispute_opened", id).is_some());
    assert_eq!(outcome.status, JobStatus::Failed);
    assert!(
        world.provider_stake() < stake_before,
        "the faker is slashed"
    );
    assert!(
        world.auditor.player.full_runs() >= 1,
        "the challenge needs the full run"
    );
    world.check_books().expect("the books balance");
}

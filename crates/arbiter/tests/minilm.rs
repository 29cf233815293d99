//! Arbitration of MiniLM (BERT) embedding steps, with the real model.

mod common;

use common::{check_step, claim, minilm, Model};
use piazza_arbiter::{arbitrate, run_job, ArbiterError, Evidence, JobRun, JobSpec, LoadedModel};
use proptest::prelude::*;

const SHORT: &str = "The quick brown fox jumps over the lazy dog.";
const LONG: &str = "Verifiable inference asks a provider to prove, or at least to stand behind, \
    every number its model computed. Piazza cuts a run into steps, hashes each step's output into \
    a Merkle tree, and lets anyone who disagrees play a bisection game that ends on one step. The \
    ledger then runs that single step itself, with the same deterministic kernels, and sees which \
    side told the truth about it. Evidence must be small and checks must be cheap.";

fn embedder(model: &Model) -> &piazza_engine::Embedder {
    match &model.loaded {
        LoadedModel::Embedding(embedder) => embedder,
        LoadedModel::Generation(_) => unreachable!("minilm is an embedding model"),
    }
}

/// The first step of each op kind, the first and last steps, and a few in between.
fn spread(model: &Model, run: &JobRun) -> Vec<u64> {
    let graph = embedder(model).graph(&[run.ids.len()]).unwrap();
    let mut steps = vec![0, run.step_count() - 1, run.step_count() / 2];
    let mut kinds: Vec<std::mem::Discriminant<piazza_engine::OpKind>> = Vec::new();
    for (index, step) in graph.steps.iter().enumerate() {
        let kind = std::mem::discriminant(&graph.ops[step.op].kind);
        if !kinds.contains(&kind) {
            kinds.push(kind);
            steps.push(index as u64);
        }
    }
    // A second row block of a row-wise op (input rows not starting at 0).
    if let Some(index) = graph.steps.iter().position(|s| s.rows.start > 0) {
        steps.push(index as u64);
    }
    steps.sort_unstable();
    steps.dedup();
    steps
}

#[test]
fn honest_evidence_arbitrates_to_the_runs_leaf() {
    let model = minilm();
    for (label, text) in [("minilm short", SHORT), ("minilm long", LONG)] {
        let job = JobSpec::embedding(text.as_bytes().to_vec());
        let run = run_job(&model.loaded, &job, 2, None).unwrap();
        if label == "minilm long" {
            assert!(
                run.ids.len() > 64,
                "{} tokens: want more than one row block",
                run.ids.len()
            );
        }
        for step in spread(model, &run) {
            check_step(model, &job, &run, step, label);
        }
    }
}

#[test]
fn run_job_matches_the_engine_and_any_thread_count() {
    let model = minilm();
    let job = JobSpec::embedding(SHORT.as_bytes().to_vec());
    let one = run_job(&model.loaded, &job, 1, None).unwrap();
    let three = run_job(&model.loaded, &job, 3, None).unwrap();
    assert_eq!(one.output, three.output);
    assert_eq!(one.trace_root, three.trace_root);
    let vector = embedder(model).embed(&[SHORT], 2).unwrap().remove(0);
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(one.output, bytes);
    assert_eq!(one.work_units, one.ids.len() as u64);
    assert_eq!(one.levels().last().unwrap().len(), 1);
    // The provider's unrecorded path posts exactly what the recorded run commits to.
    let posted = piazza_arbiter::execute(&model.loaded, &job, 2).unwrap();
    assert_eq!(
        (posted.output, posted.trace_root, posted.work_units),
        (one.output.clone(), one.trace_root, one.work_units)
    );
}

#[test]
fn a_corrupted_step_loses_whoever_builds_the_evidence() {
    let model = minilm();
    let job = JobSpec::embedding(SHORT.as_bytes().to_vec());
    let honest = run_job(&model.loaded, &job, 2, None).unwrap();
    let last = honest.step_count() - 1;
    for step in [0, 5, last / 2, last] {
        let corrupted = run_job(&model.loaded, &job, 2, Some(step)).unwrap();
        assert_ne!(
            corrupted.leaves[step as usize],
            honest.leaves[step as usize]
        );
        assert_ne!(corrupted.trace_root, honest.trace_root);
        assert_eq!(
            corrupted.leaves[..step as usize],
            honest.leaves[..step as usize]
        );
        assert_eq!(
            corrupted.output != honest.output,
            step == last,
            "step {step}"
        );
        for (run, who) in [(&honest, "honest"), (&corrupted, "corrupted")] {
            let evidence = run.evidence(&model.loaded, step).unwrap();
            let leaf = arbitrate(&model.commitments, &job, &claim(run), &evidence).unwrap();
            assert_eq!(
                leaf, honest.leaves[step as usize],
                "{who} evidence, step {step}"
            );
            assert_ne!(leaf, corrupted.leaves[step as usize]);
        }
        // A step after the corrupted one, opened from the corrupted run, reads the corrupted
        // block: arbitration then follows it (the game would have stopped earlier).
        if step + 1 < honest.step_count() {
            let evidence = corrupted.evidence(&model.loaded, last).unwrap();
            let leaf = arbitrate(&model.commitments, &job, &claim(&corrupted), &evidence).unwrap();
            let reads_corrupted = evidence.leaves.iter().any(|l| l.index == step);
            assert_eq!(leaf != honest.leaves[last as usize], reads_corrupted);
        }
    }
}

/// A real evidence to mutate: a fused projection step (two earlier blocks and weights).
fn fixture() -> (JobSpec, JobRun, Evidence) {
    let model = minilm();
    let job = JobSpec::embedding(SHORT.as_bytes().to_vec());
    let run = run_job(&model.loaded, &job, 2, None).unwrap();
    let graph = embedder(model).graph(&[run.ids.len()]).unwrap();
    let step = graph
        .steps
        .iter()
        .position(|s| graph.ops[s.op].name == "encoder.layer.1.attention.output")
        .unwrap() as u64;
    let evidence = run.evidence(&model.loaded, step).unwrap();
    assert!(evidence.leaves.len() >= 2 && !evidence.chunks.is_empty());
    (job, run, evidence)
}

fn rejects(job: &JobSpec, run: &JobRun, evidence: &Evidence, expect: fn(&ArbiterError) -> bool) {
    let result = arbitrate(&minilm().commitments, job, &claim(run), evidence);
    match result {
        Err(error) => assert!(expect(&error), "unexpected error: {error}"),
        Ok(_) => panic!("accepted hostile evidence"),
    }
}

#[test]
fn hostile_evidence_is_rejected() {
    let (job, run, evidence) = fixture();
    let model = minilm();
    assert_eq!(
        arbitrate(&model.commitments, &job, &claim(&run), &evidence).unwrap(),
        run.leaves[evidence.step as usize]
    );
    let mut e = evidence.clone();
    e.config.push(b' ');
    rejects(&job, &run, &e, |e| matches!(e, ArbiterError::ConfigHash));

    let mut e = evidence.clone();
    e.manifest[9] ^= 1;
    rejects(&job, &run, &e, |e| {
        matches!(e, ArbiterError::WeightsCommitment)
    });

    let mut e = evidence.clone();
    e.chunk_root[0] ^= 1;
    rejects(&job, &run, &e, |e| {
        matches!(e, ArbiterError::WeightsCommitment)
    });

    let mut e = evidence.clone();
    e.chunks[0].bytes[100] ^= 0x40;
    rejects(&job, &run, &e, |e| {
        matches!(e, ArbiterError::ChunkOpening { .. })
    });

    let mut e = evidence.clone();
    e.chunks.pop();
    rejects(&job, &run, &e, |e| matches!(e, ArbiterError::Chunks(_)));

    let mut e = evidence.clone();
    let extra = e.chunks[0].clone();
    e.chunks.push(extra);
    rejects(&job, &run, &e, |e| matches!(e, ArbiterError::Chunks(_)));

    let mut e = evidence.clone();
    e.leaves[0].values[3] += 0.5;
    rejects(&job, &run, &e, |e| {
        matches!(e, ArbiterError::LeafOpening { .. })
    });

    let mut e = evidence.clone();
    e.leaves[0].siblings.pop();
    rejects(&job, &run, &e, |e| {
        matches!(e, ArbiterError::LeafOpening { .. })
    });

    let mut e = evidence.clone();
    e.leaves.pop();
    rejects(&job, &run, &e, |e| matches!(e, ArbiterError::Leaves(_)));

    let mut e = evidence.clone();
    let duplicate = e.leaves[0].clone();
    e.leaves.insert(0, duplicate);
    rejects(&job, &run, &e, |e| matches!(e, ArbiterError::Leaves(_)));

    // An opening of the step itself (index ≥ step), properly proven.
    let mut e = evidence.clone();
    let own = run.evidence(&model.loaded, evidence.step + 1).unwrap();
    let opening = own
        .leaves
        .into_iter()
        .find(|l| l.index == evidence.step)
        .expect("the next step reads this one");
    e.leaves.push(opening);
    rejects(&job, &run, &e, |e| matches!(e, ArbiterError::Leaves(_)));

    let mut e = evidence.clone();
    let leaf = &mut e.leaves[0];
    leaf.rows -= 1;
    let columns = leaf.columns as usize;
    leaf.values.truncate(leaf.values.len() - columns);
    rejects(&job, &run, &e, |e| {
        matches!(e, ArbiterError::LeafOpening { .. })
    });

    let mut e = evidence.clone();
    e.ids[1] += 1;
    rejects(&job, &run, &e, |e| matches!(e, ArbiterError::IdsCommitment));

    let mut e = evidence.clone();
    e.step = run.step_count();
    rejects(&job, &run, &e, |e| {
        matches!(e, ArbiterError::StepOutOfRange { .. })
    });

    let mut wrong_count = claim(&run);
    wrong_count.step_count += 1;
    let result = arbitrate(&model.commitments, &job, &wrong_count, &evidence);
    assert!(
        matches!(result, Err(ArbiterError::StepCount { .. })),
        "{result:?}"
    );

    let mut wrong_root = claim(&run);
    wrong_root.root[5] ^= 1;
    let result = arbitrate(&model.commitments, &job, &wrong_root, &evidence);
    assert!(
        matches!(result, Err(ArbiterError::LeafOpening { .. })),
        "{result:?}"
    );

    let mut llama = model.commitments;
    llama.family = piazza_arbiter::Family::Llama;
    let result = arbitrate(&llama, &job, &claim(&run), &evidence);
    assert!(matches!(result, Err(ArbiterError::Config(_))), "{result:?}");
}

#[test]
fn decode_rejects_truncation_and_trailing_bytes() {
    let (_, _, evidence) = fixture();
    let bytes = evidence.encode();
    for len in [0, 1, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        assert!(Evidence::decode(&bytes[..len]).is_err(), "length {len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Evidence::decode(&longer).is_err());
    let huge = vec![0u8; piazza_arbiter::EVIDENCE_BYTES_MAX + 1];
    assert!(Evidence::decode(&huge).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(evidence) = Evidence::decode(&bytes) {
            prop_assert_eq!(evidence.encode(), bytes);
        }
    }
}

fn small_fixture() -> &'static (JobSpec, JobRun, Vec<u8>) {
    static FIXTURE: std::sync::OnceLock<(JobSpec, JobRun, Vec<u8>)> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let model = minilm();
        let job = JobSpec::embedding(b"tiny".to_vec());
        let run = run_job(&model.loaded, &job, 2, None).unwrap();
        // The mean pool: a block and the job's mask, no weights.
        let evidence = run.evidence(&model.loaded, run.step_count() - 2).unwrap();
        let bytes = evidence.encode();
        (job, run, bytes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Mutated encodings of real evidence decode canonically or not at all, and arbitrate
    /// without panicking; only the unchanged evidence (or a change to a proof-free part that
    /// is still checked) gives the honest leaf.
    #[test]
    fn mutated_evidence_never_panics(
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (job, run, bytes) = small_fixture();
        let mut mutated = bytes.clone();
        let at = position.index(mutated.len());
        mutated[at] = value;
        if truncate {
            mutated.truncate(cut.index(mutated.len()));
        }
        if let Ok(evidence) = Evidence::decode(&mutated) {
            prop_assert_eq!(&evidence.encode(), &mutated);
            let result = arbitrate(&minilm().commitments, job, &claim(run), &evidence);
            if mutated != *bytes {
                if let Ok(leaf) = result {
                    // Only a change that leaves every checked value in place may pass.
                    prop_assert_eq!(leaf, run.leaves[evidence.step as usize]);
                }
            }
        }
    }
}

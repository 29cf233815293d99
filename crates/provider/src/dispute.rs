//! Playing audits and disputes: what provider and auditor daemons do by themselves.
//!
//! A [`Player`] keeps its own recorded run of every job it has a stake in (re-executed on
//! demand: runs are deterministic, so the run is the same as when the result was computed)
//! and, from the chain's public dispute state (read through [`crate::chain::Chain`]), makes
//! its next move: reveal the children of the disputed node in its own trace tree, and once the
//! divergent step is found, send the evidence that re-executes it — only when its own check of
//! that evidence gives its own leaf (a party that knows it would lose sends nothing). Audits:
//! re-run, then attest or challenge.
//!
//! [`Fault`]s are deliberate misbehaviour for tests and demos; an honest daemon has none.

use crate::chain::{Chain, DisputeView, Phase, Tasks};
use crate::models::LoadedModel;
use crate::ProviderError;
use piazza_api::JobInfo;
use piazza_arbiter::{tree, JobRun, JobSpec};
use piazza_ledger::tx::Message;
use piazza_ledger::verify;
use piazza_primitives::{Address, Hash};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// Which step a fault corrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepChoice {
    First,
    Middle,
    Last,
    At(u64),
}

impl StepChoice {
    fn resolve(self, count: u64) -> u64 {
        let last = count.saturating_sub(1);
        match self {
            StepChoice::First => 0,
            StepChoice::Middle => count / 2,
            StepChoice::Last => last,
            StepChoice::At(n) => n.min(last),
        }
    }
}

/// Deliberate misbehaviour, for tests and demos of the verification game. Never use in
/// production: a faulty provider is slashed, a faulty auditor loses its bonds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// Corrupt one step of every run: its output block's first value + 1.0, the leaf and root
    /// recomputed, later steps left as they were (`corrupt-op=N|first|middle|last`).
    pub corrupt: Option<StepChoice>,
    /// Corrupt the last step, which the output follows (`wrong-output`).
    pub wrong_output: bool,
    /// Answer the first round of a dispute, then nothing (`silent-in-dispute`).
    pub silent_in_dispute: bool,
    /// Run the job on a different input (one more space at the end), so its token ids differ
    /// (`wrong-ids`).
    pub wrong_ids: bool,
    /// Generate one token fewer than the job allows (`stop-early`): the same ids, a shorter
    /// trace — a length dispute, which ends in a draw.
    pub stop_early: bool,
}

impl Fault {
    pub fn is_none(&self) -> bool {
        *self == Fault::default()
    }

    /// Adds one `--fault` value.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        match spec.split_once('=') {
            Some(("corrupt-op", step)) => {
                self.corrupt = Some(match step {
                    "first" => StepChoice::First,
                    "middle" => StepChoice::Middle,
                    "last" => StepChoice::Last,
                    n => StepChoice::At(n.parse().map_err(|_| {
                        format!("corrupt-op takes a step number or first|middle|last, not `{n}`")
                    })?),
                })
            }
            None if spec == "wrong-output" => self.wrong_output = true,
            None if spec == "silent-in-dispute" => self.silent_in_dispute = true,
            None if spec == "wrong-ids" => self.wrong_ids = true,
            None if spec == "stop-early" => self.stop_early = true,
            _ => {
                return Err(format!(
                    "unknown fault `{spec}` (corrupt-op=N|first|middle|last, wrong-output, wrong-ids, stop-early, silent-in-dispute)"
                ))
            }
        }
        Ok(())
    }

    fn corrupt_step(&self) -> Option<StepChoice> {
        if self.wrong_output {
            Some(StepChoice::Last)
        } else {
            self.corrupt
        }
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        let mut fault = Fault::default();
        for spec in s.split(',').filter(|s| !s.is_empty()) {
            fault.add(spec.trim())?;
        }
        Ok(fault)
    }
}

/// The job as the arbiter reads it.
pub fn job_spec(job: &JobInfo) -> Result<JobSpec, ProviderError> {
    let input = hex::decode(&job.input)
        .map_err(|e| ProviderError::Model(format!("job input is not hex: {e}")))?;
    Ok(crate::models::job_spec(&input, &job.params))
}

/// Runs a job with recording, applying `fault` (a faulty run corrupts one step).
pub fn run_with_fault(
    model: &LoadedModel,
    job: &JobSpec,
    threads: usize,
    fault: &Fault,
) -> Result<JobRun, ProviderError> {
    let mut job = job.clone();
    if fault.wrong_ids {
        job.input.extend_from_slice(b" x");
    }
    if fault.stop_early {
        job.max_tokens = job.max_tokens.saturating_sub(1).max(1);
    }
    let run = |corrupt| {
        piazza_arbiter::run_job(model, &job, threads, corrupt)
            .map_err(|e| ProviderError::Model(e.to_string()))
    };
    let honest = run(None)?;
    match fault.corrupt_step() {
        None => Ok(honest),
        Some(choice) => run(Some(choice.resolve(honest.step_count()))),
    }
}

/// A move to send.
pub struct Move {
    pub job: u64,
    pub what: &'static str,
    pub message: Message,
    /// The (job, round, phase) this move answers: sent once unless [`Player::retry`].
    pub answers: (u64, u32, &'static str),
}

/// One party's memory of its runs and the moves it has sent.
pub struct Player {
    me: Address,
    /// The models it plays with; grows when its provider serves a model registered later
    /// ([`Player::set_models`]).
    models: Mutex<Arc<BTreeMap<String, LoadedModel>>>,
    threads: usize,
    fault: Fault,
    runs: Mutex<BTreeMap<u64, Arc<JobRun>>>,
    /// Jobs this party has re-run step by step ([`Player::run_of`] computing a run).
    full_runs: std::sync::atomic::AtomicU64,
    /// (job, round, phase) already answered: a move is sent once, then waits for a block.
    sent: Mutex<BTreeSet<(u64, u32, &'static str)>>,
}

/// Plays `me`'s audits and disputes once: reads its tasks from `chain` and sends every move
/// through it; a move the chain refuses is made again on the next pass. Returns the moves
/// the chain accepted.
pub async fn play(chain: &impl Chain, player: &Player, me: &Address) -> Vec<Move> {
    let tasks = match chain.tasks(me).await {
        Ok(tasks) => tasks,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list audits and disputes");
            return Vec::new();
        }
    };
    let mut sent = Vec::new();
    for batch in move_batches(player.moves(chain, &tasks).await) {
        let messages = batch.iter().map(|m| m.message.clone()).collect();
        match chain.submit(messages).await {
            Ok(hash) => {
                for m in &batch {
                    tracing::info!(job = m.job, tx = %hash, "{} sent", m.what);
                }
                sent.extend(batch);
            }
            Err(e) => {
                for m in &batch {
                    tracing::warn!(job = m.job, error = %e, "{} refused; will try again", m.what);
                    player.retry(m);
                }
            }
        }
    }
    sent
}

/// Groups one pass's moves into transactions: attestations (a few bytes each, one per audited
/// job) share transactions up to the message bound, so an auditor's chain load follows its
/// passes rather than the jobs it audits; every other move goes alone.
fn move_batches(moves: Vec<Move>) -> Vec<Vec<Move>> {
    let mut batches: Vec<Vec<Move>> = Vec::new();
    let mut attests: Vec<Move> = Vec::new();
    for m in moves {
        if matches!(m.message, Message::Verify(verify::Msg::Attest { .. })) {
            if attests.len() == piazza_ledger::tx::TX_MESSAGES_MAX {
                batches.push(std::mem::take(&mut attests));
            }
            attests.push(m);
        } else {
            batches.push(vec![m]);
        }
    }
    if !attests.is_empty() {
        batches.push(attests);
    }
    batches
}

impl Player {
    pub fn new(
        me: Address,
        models: Arc<BTreeMap<String, LoadedModel>>,
        threads: usize,
        fault: Fault,
    ) -> Player {
        Player {
            me,
            models: Mutex::new(models),
            threads,
            fault,
            runs: Mutex::new(BTreeMap::new()),
            full_runs: std::sync::atomic::AtomicU64::new(0),
            sent: Mutex::new(BTreeSet::new()),
        }
    }

    /// This party's run of `job` (computed once per process).
    pub async fn run_of(&self, chain: &impl Chain, job: u64) -> Result<Arc<JobRun>, ProviderError> {
        if let Some(run) = self.runs.lock().expect("runs lock").get(&job) {
            return Ok(run.clone());
        }
        let (model, spec) = self.model_and_spec(chain, job).await?;
        let (threads, fault) = (self.threads, self.fault.clone());
        self.full_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run =
            tokio::task::spawn_blocking(move || run_with_fault(&model, &spec, threads, &fault))
                .await
                .map_err(|e| ProviderError::Model(e.to_string()))??;
        let run = Arc::new(run);
        self.runs
            .lock()
            .expect("runs lock")
            .insert(job, run.clone());
        Ok(run)
    }

    /// How many jobs this party has re-run step by step (an audit that one pass decided
    /// re-runs none).
    pub fn full_runs(&self) -> u64 {
        self.full_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps the run a daemon computed for its own result, so a dispute need not recompute it.
    pub fn remember(&self, job: u64, run: Arc<JobRun>) {
        self.runs.lock().expect("runs lock").insert(job, run);
    }

    /// The loaded model a job runs on, and the job as the arbiter reads it.
    async fn model_and_spec(
        &self,
        chain: &impl Chain,
        job: u64,
    ) -> Result<(LoadedModel, JobSpec), ProviderError> {
        let view = chain
            .job(job)
            .await?
            .ok_or_else(|| ProviderError::Model(format!("no job {job}")))?;
        Ok((self.model(&view.model)?, view.spec))
    }

    /// Plays with `models` from now on, keeping its runs and the moves it has sent.
    pub fn set_models(&self, models: Arc<BTreeMap<String, LoadedModel>>) {
        *self.models.lock().expect("models lock") = models;
    }

    fn model(&self, name: &str) -> Result<LoadedModel, ProviderError> {
        self.models
            .lock()
            .expect("models lock")
            .get(name)
            .cloned()
            .ok_or_else(|| ProviderError::Config(format!("`{name}` is not loaded here")))
    }

    /// Lets a move that could not be sent be made again on the next pass.
    pub fn retry(&self, m: &Move) {
        self.sent.lock().expect("sent lock").remove(&m.answers);
    }

    fn first_time(&self, job: u64, round: u32, phase: &'static str) -> bool {
        self.sent
            .lock()
            .expect("sent lock")
            .insert((job, round, phase))
    }

    /// Forgets what ended (runs and sent moves of jobs no longer in `tasks`).
    fn forget_except(&self, open: &BTreeSet<u64>) {
        self.sent
            .lock()
            .expect("sent lock")
            .retain(|(job, _, _)| open.contains(job));
        self.runs
            .lock()
            .expect("runs lock")
            .retain(|job, _| open.contains(job));
    }

    /// The moves for every open audit and dispute of this party.
    pub async fn moves(&self, chain: &impl Chain, tasks: &Tasks) -> Vec<Move> {
        let mut moves = Vec::new();
        let open: BTreeSet<u64> = tasks
            .audits
            .iter()
            .copied()
            .chain(tasks.disputes.iter().flat_map(|d| d.sides.map(|s| s.job)))
            .chain(tasks.disputes.iter().map(|d| d.job))
            .collect();
        for &job in &tasks.audits {
            if !self.first_time(job, 0, "audit") {
                continue;
            }
            match self.audit(chain, job).await {
                Ok(m) => moves.push(m),
                Err(e) => {
                    tracing::warn!(job, error = %e, "audit failed; will retry");
                    self.sent
                        .lock()
                        .expect("sent lock")
                        .remove(&(job, 0, "audit"));
                }
            }
        }
        for dispute in &tasks.disputes {
            match self.dispute_move(chain, dispute).await {
                Ok(Some(m)) => moves.push(m),
                Ok(None) => {}
                Err(e) => tracing::warn!(job = dispute.job, error = %e, "dispute move failed"),
            }
        }
        self.forget_except(&open);
        moves
    }

    async fn audit(&self, chain: &impl Chain, job: u64) -> Result<Move, ProviderError> {
        let view = chain
            .job(job)
            .await?
            .ok_or_else(|| ProviderError::Model(format!("no job {job}")))?;
        let result = view
            .result
            .ok_or_else(|| ProviderError::Model(format!("job {job} has no result")))?;
        let model = self.model(&view.model)?;
        // An honest auditor checks a generation in one pass from the posted output; a faulty
        // one (tests and demos) plays its fault on a full run. A wrong signed prompt count
        // needs the full run too: its challenge states the run's step count and ids.
        if self.fault.is_none() && !result.output.is_empty() {
            let (model, spec, threads) = (model.clone(), view.spec.clone(), self.threads);
            let output = result.output.clone();
            let found = tokio::task::spawn_blocking(move || {
                audit_in_one_pass(&model, &spec, &output, threads)
            })
            .await
            .map_err(|e| ProviderError::Model(e.to_string()))??;
            let agrees = found.is_some_and(|f| {
                (f.output_hash, f.trace_root) == (result.output_hash, result.trace_root)
                    && count_agrees(result.input_units, f.prompt_count)
            });
            if agrees {
                tracing::info!(
                    job,
                    "audit: one pass gives the same output and trace; attesting"
                );
                return Ok(Move {
                    job,
                    what: "attest",
                    message: Message::Verify(verify::Msg::Attest { job }),
                    answers: (job, 0, "audit"),
                });
            }
        }
        let run = self.run_of(chain, job).await?;
        let output_hash = piazza_ledger::compute::output_hash(&run.output);
        let root = Hash(run.trace_root);
        let same_run = output_hash == result.output_hash && root == result.trace_root;
        let generation = matches!(model, LoadedModel::Generation(_));
        // A generation's run uses its prompt ids (`JobRun::ids`), which the ledger's
        // tokenization counts in a dispute's input phase.
        let prompt_count = run.ids.len() as u64;
        if same_run && generation && !count_agrees(result.input_units, prompt_count) {
            tracing::warn!(
                job,
                signed = result.input_units,
                ours = prompt_count,
                "audit: same output and trace but a wrong prompt count; challenging the count"
            );
        } else if same_run {
            tracing::info!(job, "audit: same output and trace; attesting");
            return Ok(Move {
                job,
                what: "attest",
                message: Message::Verify(verify::Msg::Attest { job }),
                answers: (job, 0, "audit"),
            });
        }
        tracing::warn!(job, ours = %root, theirs = %result.trace_root, "audit: the result differs; challenging");
        Ok(Move {
            job,
            what: "challenge",
            answers: (job, 0, "audit"),
            message: Message::Verify(verify::Msg::Challenge {
                job,
                trace_root: root,
                step_count: run.step_count(),
                ids: Hash(run.ids_commitment()),
            }),
        })
    }

    async fn dispute_move(
        &self,
        chain: &impl Chain,
        d: &DisputeView,
    ) -> Result<Option<Move>, ProviderError> {
        let Some(side) = d.sides.iter().position(|s| s.address == self.me) else {
            return Ok(None);
        };
        if self.fault.silent_in_dispute && d.round >= 1 {
            return Ok(None);
        }
        let party = d.sides[side];
        let run = self.run_of(chain, party.job).await?;
        match d.phase {
            Phase::Bisect => {
                // On a length dispute's walk a side reveals only where its own tree has two
                // children (above its top, or at a promoted node, it has nothing to reveal).
                let must_reveal = d.round == 0 || tree::has_two_children(run.step_count(), d.node);
                if party.revealed || !must_reveal || !self.first_time(d.job, d.round, "bisect") {
                    return Ok(None);
                }
                let levels = run.levels();
                let node = if d.round == 0 {
                    tree::top(run.step_count()).ok_or_else(|| {
                        ProviderError::Model("a trace of fewer than 2 steps".into())
                    })?
                } else {
                    d.node
                };
                let (left, right) = tree::children(&levels, node).ok_or_else(|| {
                    ProviderError::Model(format!(
                        "node {node:?} is not in this run's tree of {} steps",
                        run.step_count()
                    ))
                })?;
                Ok(Some(Move {
                    job: d.job,
                    what: "reveal",
                    answers: (d.job, d.round, "bisect"),
                    message: Message::Verify(verify::Msg::Reveal {
                        job: d.job,
                        round: d.round,
                        left: Hash(left),
                        right: Hash(right),
                        step_count: run.step_count(),
                        ids: Hash(run.ids_commitment()),
                    }),
                }))
            }
            Phase::Input if is_length_decision(d) => {
                if !self.first_time(d.job, d.round, "length") {
                    return Ok(None);
                }
                let (model, spec) = self.model_and_spec(chain, party.job).await?;
                let counts = d.sides.map(|s| s.step_count);
                let evidence = tokio::task::spawn_blocking(move || {
                    length_move(&model, &spec, &run, side, counts)
                })
                .await
                .map_err(|e| ProviderError::Model(e.to_string()))??;
                let Some(evidence) = evidence else {
                    tracing::info!(
                        job = d.job,
                        "the agreed samples do not stop this party's generation where it did; not arbitrating"
                    );
                    return Ok(None);
                };
                Ok(Some(arbitrate(d, "arbitrate length", "length", evidence)))
            }
            Phase::Input => {
                if !self.first_time(d.job, d.round, "input") {
                    return Ok(None);
                }
                let (model, spec) = self.model_and_spec(chain, party.job).await?;
                let evidence = piazza_arbiter::input_evidence(&model);
                // Send only when the ledger's tokenization will agree with this party's ids.
                let verdict = piazza_arbiter::arbitrate_ids(&model.commitments(), &spec, &evidence)
                    .map_err(|e| ProviderError::Model(e.to_string()))?;
                if verdict.ids_commitment() != run.ids_commitment() {
                    return Ok(None);
                }
                Ok(Some(arbitrate(d, "arbitrate input", "input", evidence)))
            }
            Phase::Step { step } => {
                if !self.first_time(d.job, d.round, "step") {
                    return Ok(None);
                }
                let (model, spec) = self.model_and_spec(chain, party.job).await?;
                let run2 = run.clone();
                let (evidence, leaf) = tokio::task::spawn_blocking(move || {
                    let evidence = run2
                        .evidence(&model, step)
                        .map_err(|e| ProviderError::Model(e.to_string()))?;
                    let leaf = piazza_arbiter::arbitrate_with(
                        &model.commitments(),
                        &spec,
                        run2.step_count(),
                        &run2.ids_commitment(),
                        &evidence,
                        &|_, _, _| true,
                    )
                    .map_err(|e| ProviderError::Model(e.to_string()))?;
                    Ok::<_, ProviderError>((evidence, leaf))
                })
                .await
                .map_err(|e| ProviderError::Model(e.to_string()))??;
                let mine = run.leaves.get(step as usize).copied();
                if mine != Some(leaf) {
                    tracing::info!(
                        job = d.job,
                        step,
                        "this party's own step does not re-execute to its leaf; not arbitrating"
                    );
                    return Ok(None);
                }
                Ok(Some(arbitrate(
                    d,
                    "arbitrate step",
                    "step",
                    evidence.encode(),
                )))
            }
        }
    }
}

/// A generation job's output hash and trace root from one prefill-shaped pass over its prompt
/// and `posted_output` tokenized (`Generator::generate_from_draft`): the generation the job's
/// parameters make, computed and traced as step by step, bit for bit. `None` when one pass
/// cannot tell (an embedding job, an output that is not UTF-8, or a text whose tokens are not
/// the ones the generation chose, up to where it ends): only a full run decides then.
pub fn audit_in_one_pass(
    model: &LoadedModel,
    spec: &JobSpec,
    posted_output: &[u8],
    threads: usize,
) -> Result<Option<OnePass>, ProviderError> {
    let LoadedModel::Generation(generator) = model else {
        return Ok(None);
    };
    let Ok(posted_text) = std::str::from_utf8(posted_output) else {
        return Ok(None);
    };
    let model_error = |e: &dyn std::fmt::Display| ProviderError::Model(e.to_string());
    let input = String::from_utf8_lossy(&spec.input);
    let prompt =
        piazza_arbiter::prompt_ids(generator, spec, &input).map_err(|e| model_error(&e))?;
    let filter =
        piazza_arbiter::constraint::token_filter(generator, spec).map_err(|e| model_error(&e))?;
    let draft = generator
        .tokenize(posted_text)
        .map_err(|e| model_error(&e))?;
    let generation = generator
        .generate_from_draft(
            &prompt,
            &draft,
            &piazza_arbiter::generate_params(spec),
            piazza_llm::Compute::new(threads),
            filter.as_ref().map(|f| f as &dyn piazza_llm::TokenFilter),
        )
        .map_err(|e| model_error(&e))?;
    Ok(generation.map(|g| OnePass {
        output_hash: piazza_ledger::compute::output_hash(g.text.as_bytes()),
        trace_root: Hash(g.trace.root),
        prompt_count: prompt.len() as u64,
    }))
}

/// What one pass over a generation gives ([`audit_in_one_pass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnePass {
    pub output_hash: Hash,
    pub trace_root: Hash,
    /// The prompt's token count, which the provider's signed `input_units` must equal.
    pub prompt_count: u64,
}

/// Whether a provider's signed prompt count agrees with the auditor's own (0: not stated,
/// nothing to dispute; the ledger refuses a count-only challenge of it).
fn count_agrees(signed: u64, ours: u64) -> bool {
    signed == 0 || signed == ours
}

/// The move that sends `evidence` for dispute `d` in its current `phase`.
fn arbitrate(d: &DisputeView, what: &'static str, phase: &'static str, evidence: Vec<u8>) -> Move {
    Move {
        job: d.job,
        what,
        answers: (d.job, d.round, phase),
        message: Message::Verify(verify::Msg::Arbitrate {
            job: d.job,
            evidence,
        }),
    }
}

/// Whether an input phase decides a length (equal ids, different step counts) rather than
/// the ids.
fn is_length_decision(d: &DisputeView) -> bool {
    let [defendant, claimant] = d.sides;
    defendant.ids == claimant.ids && defendant.step_count != claimant.step_count
}

/// The length evidence of this side's run, when the ledger will find this side's count right
/// with it: a possible run that stops where the agreed samples stop it (or, with no stop among
/// them, the longer one). `None`: this side would lose by its own evidence.
fn length_move(
    model: &LoadedModel,
    spec: &JobSpec,
    run: &JobRun,
    side: usize,
    counts: [u64; 2],
) -> Result<Option<Vec<u8>>, ProviderError> {
    let model_error = |e: piazza_arbiter::ArbiterError| ProviderError::Model(e.to_string());
    let common = counts[0].min(counts[1]);
    let evidence = run.length_evidence(model, common).map_err(model_error)?;
    let finding = piazza_arbiter::tokens::arbitrate_length(
        &model.commitments(),
        spec,
        &run.ids_commitment(),
        counts,
        &evidence,
        &|_, _, _| true,
    )
    .map_err(model_error)?;
    let right = finding.fits[side]
        && match finding.stop_steps {
            Some(stop) => counts[side] == stop,
            None => counts[side] > common,
        };
    Ok(right.then(|| evidence.encode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attest(job: u64) -> Move {
        Move {
            job,
            what: "attest",
            message: Message::Verify(verify::Msg::Attest { job }),
            answers: (job, 0, "audit"),
        }
    }

    #[test]
    fn attestations_share_transactions_and_other_moves_go_alone() {
        let mut moves: Vec<Move> = (0..20).map(attest).collect();
        moves.insert(
            3,
            Move {
                job: 99,
                what: "arbitrate",
                message: Message::Verify(verify::Msg::Arbitrate {
                    job: 99,
                    evidence: vec![1, 2, 3],
                }),
                answers: (99, 1, "arbitrate"),
            },
        );
        let batches = move_batches(moves);
        let shapes: Vec<(usize, u64)> = batches.iter().map(|b| (b.len(), b[0].job)).collect();
        assert_eq!(shapes, vec![(1, 99), (16, 0), (4, 16)]);
    }
}

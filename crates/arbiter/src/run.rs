//! Running a job with recording, and cutting the evidence for one step out of the run (what
//! provider and auditor daemons do).

use std::sync::Arc;

use piazza_engine::trace;
use piazza_engine::weights::Weights;
use piazza_engine::{Batch, Compute, Embedder};
use piazza_llm::tokenizer::chat_messages_from_input;
use piazza_llm::Generator;
use piazza_trace::merkle;
use piazza_trace::trace::TRACE_DOMAIN;
use piazza_trace::weights::WeightCommitment;

use crate::evidence::{ChunkOpening, Evidence, LeafOpening, LengthEvidence};
use crate::plan::{self, ModelGraph, StepGraph};
use crate::{
    config_hash, generate_params, ids_commitment, tree, ArbiterError, Family, Hash, JobSpec,
    ModelCommitments,
};

/// A model ready to run.
#[derive(Clone, Debug)]
pub enum LoadedModel {
    Embedding(Arc<Embedder>),
    Generation(Arc<Generator>),
}

impl LoadedModel {
    /// Loads the model of `family` at `path` (bert: a directory holding `model.safetensors`,
    /// `tokenizer.json` and `config.json`; llama: a GGUF file) for numeric profile `profile`,
    /// the one its record names: a generation computes and is traced in that profile. Bert has
    /// only the f32 profile. The caller checks [`LoadedModel::commitments`] against the record.
    pub fn load(
        family: Family,
        path: &std::path::Path,
        profile: piazza_llm::NumericProfile,
    ) -> Result<LoadedModel, ArbiterError> {
        let loading = |e: String| ArbiterError::Model(format!("loading {}: {e}", path.display()));
        match (family, profile) {
            (Family::Bert, piazza_llm::NumericProfile::F32) => Ok(LoadedModel::Embedding(
                Arc::new(Embedder::load(path).map_err(|e| loading(e.to_string()))?),
            )),
            (Family::Bert, other) => Err(loading(format!(
                "an embedding model has no {other:?} numeric profile"
            ))),
            (Family::Llama, profile) => Ok(LoadedModel::Generation(Arc::new(
                Generator::load_with(path, profile).map_err(|e| loading(e.to_string()))?,
            ))),
        }
    }

    /// The numeric profile it computes in (an embedding model's is always f32).
    pub fn profile(&self) -> piazza_llm::NumericProfile {
        match self {
            LoadedModel::Embedding(_) => piazza_llm::NumericProfile::F32,
            LoadedModel::Generation(generator) => generator.profile(),
        }
    }

    pub fn family(&self) -> Family {
        match self {
            LoadedModel::Embedding(_) => Family::Bert,
            LoadedModel::Generation(_) => Family::Llama,
        }
    }

    /// The bytes whose hash is the model record's config hash (bert: the `config.json` bytes
    /// the embedder was loaded from; llama: `LlamaConfig::canonical_bytes`).
    pub fn config_bytes(&self) -> Vec<u8> {
        match self {
            LoadedModel::Embedding(embedder) => embedder.config_bytes().to_vec(),
            LoadedModel::Generation(generator) => generator.config().canonical_bytes(),
        }
    }

    /// The weight commitment (computed on first use, then kept by the engine).
    pub fn weight_commitment(&self) -> &WeightCommitment {
        match self {
            LoadedModel::Embedding(embedder) => embedder.weight_commitment(),
            LoadedModel::Generation(generator) => generator.weight_commitment(),
        }
    }

    pub fn weights(&self) -> &Weights {
        match self {
            LoadedModel::Embedding(embedder) => embedder.weights(),
            LoadedModel::Generation(generator) => generator.weights(),
        }
    }

    /// What a model record for this model commits to.
    pub fn commitments(&self) -> ModelCommitments {
        ModelCommitments {
            family: self.family(),
            config_hash: config_hash(&self.config_bytes()),
            weights_commitment: self.weight_commitment().root,
            tokenizer_hash: match self {
                LoadedModel::Embedding(embedder) => embedder.tokenizer_hash(),
                LoadedModel::Generation(generator) => generator.tokenizer_hash(),
            },
        }
    }
}

/// Every op output of a run.
#[derive(Clone, Debug)]
enum Recording {
    Bert(piazza_engine::Recording),
    Llama(piazza_llm::Recording),
}

/// A job run with recording: its output, its trace, and what it takes to answer a dispute.
#[derive(Clone, Debug)]
pub struct JobRun {
    /// Embedding: the vector as little-endian f32s; generation: the UTF-8 text.
    pub output: Vec<u8>,
    /// Embedding: tokens of the text; generation: new token ids.
    pub work_units: u64,
    /// The token ids the run used (see [`ids_commitment`]).
    pub ids: Vec<u32>,
    /// One leaf hash per step.
    pub leaves: Vec<Hash>,
    pub trace_root: Hash,
    recording: Recording,
    corrupted: Option<u64>,
    /// Whether the job's input carries a constraint (its sample steps' evidence then carries
    /// the tokenizer the mask reads).
    constrained: bool,
}

/// Run `job` on `model` with recording, on `threads` threads (the results are the same bits
/// for every thread count). Output bytes and work units are what a provider posts.
///
/// `corrupt_step` injects a fault (for tests and demos): after the honest run, 1.0 is added to
/// the first value of step N's output block, and leaf N and the root are recomputed; later
/// steps are not. When N is the last step the output follows the corrupted value: an
/// embedding's first component changes; a generation's last sampled id becomes
/// `(id + 1) mod vocab` and the text is decoded again. Evidence from such a run carries the
/// corrupted block wherever it opens step N.
pub fn run_job(
    model: &LoadedModel,
    job: &JobSpec,
    threads: usize,
    corrupt_step: Option<u64>,
) -> Result<JobRun, ArbiterError> {
    let text = String::from_utf8_lossy(&job.input);
    let mut run = match model {
        LoadedModel::Embedding(embedder) => run_embedding(embedder, &text, threads)?,
        LoadedModel::Generation(generator) => run_generation(generator, job, &text, threads)?,
    };
    if let Some(step) = corrupt_step {
        run.corrupt(model, job, step)?;
    }
    Ok(run)
}

/// What a provider posts for a job, computed without keeping any op output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOutput {
    pub output: Vec<u8>,
    pub trace_root: Hash,
    pub work_units: u64,
    /// The input's tokens: a generation's prompt ids, an embedding's tokens.
    pub input_units: u64,
}

/// Runs `job` on `model` for its result only: the same output, trace root and work units as
/// [`run_job`] (the same engines and code path up to the recording), in the memory of one
/// pass rather than of every op output.
pub fn execute(
    model: &LoadedModel,
    job: &JobSpec,
    threads: usize,
) -> Result<JobOutput, ArbiterError> {
    execute_until(
        model,
        job,
        threads,
        &std::sync::atomic::AtomicBool::new(false),
    )
}

/// [`execute`] that a generation abandons at its next token once `cancel` is set (the job
/// expired or went to another provider): no work is wasted on a result nobody will take.
pub fn execute_until(
    model: &LoadedModel,
    job: &JobSpec,
    threads: usize,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<JobOutput, ArbiterError> {
    execute_streaming(model, job, threads, cancel, |_| {})
}

/// [`execute_until`] that hands each piece of a generation's text to `on_token` as soon as it
/// is final (an embedding has none): the pieces concatenate to the output, and the prompt ids
/// are made once, here, for the run and its `input_units`.
pub fn execute_streaming(
    model: &LoadedModel,
    job: &JobSpec,
    threads: usize,
    cancel: &std::sync::atomic::AtomicBool,
    mut on_token: impl FnMut(&str),
) -> Result<JobOutput, ArbiterError> {
    let text = String::from_utf8_lossy(&job.input);
    match model {
        LoadedModel::Embedding(embedder) => {
            let tokens = embedder.tokenize(&[text.as_ref()]).map_err(model_error)?;
            let work_units = tokens.first().map_or(0, |t| t.len() as u64);
            let batch = Batch::pack(&tokens).map_err(model_error)?;
            let (vector, trace) = embedder
                .run_traced(&batch, Compute::new(threads))
                .map_err(model_error)?;
            Ok(JobOutput {
                output: vector
                    .to_vec()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                trace_root: trace.root,
                work_units,
                input_units: work_units,
            })
        }
        LoadedModel::Generation(generator) => {
            let prompt = prompt_ids(generator, job, &text)?;
            let on_event = |event: piazza_llm::TokenEvent| {
                if !event.text.is_empty() {
                    on_token(&event.text)
                }
            };
            let filter = crate::constraint::token_filter(generator, job)?;
            let options = piazza_llm::RunOptions {
                cancel: Some(cancel),
                filter: filter.as_ref().map(|f| f as &dyn piazza_llm::TokenFilter),
                record: false,
            };
            let params = generate_params(job);
            let (generation, _) = generator
                .generate_with(&prompt, &params, Compute::new(threads), options, on_event)
                .map_err(model_error)?;
            Ok(JobOutput {
                output: generation.text.into_bytes(),
                trace_root: generation.trace.root,
                work_units: generation.ids.len() as u64,
                input_units: prompt.len() as u64,
            })
        }
    }
}

/// A generation job's prompt ids: the chat template applied when the job asks for it. Their
/// count is the job's input units (a session receipt's prompt tokens). A constraint header in
/// front of the input is not prompt text.
pub fn prompt_ids(
    generator: &Generator,
    job: &JobSpec,
    text: &str,
) -> Result<Vec<u32>, ArbiterError> {
    let (_, inner) = crate::constraint::split_input(text.as_bytes())?;
    let text = String::from_utf8_lossy(inner);
    let text = text.as_ref();
    if job.chat {
        piazza_llm::chat_prompt_ids(generator, &chat_messages_from_input(text))
    } else {
        generator.tokenize(text)
    }
    .map_err(model_error)
}

fn model_error(error: impl std::fmt::Display) -> ArbiterError {
    ArbiterError::Model(error.to_string())
}

fn run_embedding(embedder: &Embedder, text: &str, threads: usize) -> Result<JobRun, ArbiterError> {
    let tokens = embedder.tokenize(&[text]).map_err(model_error)?;
    let ids = tokens.first().cloned().unwrap_or_default();
    let batch = Batch::pack(&tokens).map_err(model_error)?;
    let recording = embedder
        .run_recorded(&batch, Compute::new(threads))
        .map_err(model_error)?;
    let vector = recording
        .outputs
        .last()
        .ok_or_else(|| model_error("empty graph"))?
        .to_vec();
    Ok(JobRun {
        output: vector.iter().flat_map(|v| v.to_le_bytes()).collect(),
        work_units: ids.len() as u64,
        leaves: recording.trace.step_hashes.clone(),
        trace_root: recording.trace.root,
        ids,
        recording: Recording::Bert(recording),
        corrupted: None,
        constrained: false,
    })
}

fn run_generation(
    generator: &Generator,
    job: &JobSpec,
    text: &str,
    threads: usize,
) -> Result<JobRun, ArbiterError> {
    let prompt = prompt_ids(generator, job, text)?;
    let filter = crate::constraint::token_filter(generator, job)?;
    let options = piazza_llm::RunOptions {
        cancel: None,
        filter: filter.as_ref().map(|f| f as &dyn piazza_llm::TokenFilter),
        record: true,
    };
    let params = generate_params(job);
    let (generation, recording) = generator
        .generate_with(&prompt, &params, Compute::new(threads), options, |_| {})
        .map_err(model_error)?;
    let recording = recording.ok_or_else(|| model_error("no recording"))?;
    Ok(JobRun {
        output: generation.text.into_bytes(),
        work_units: generation.ids.len() as u64,
        leaves: generation.trace.step_hashes,
        trace_root: generation.trace.root,
        ids: prompt,
        recording: Recording::Llama(recording),
        corrupted: None,
        constrained: filter.is_some(),
    })
}

impl JobRun {
    pub fn step_count(&self) -> u64 {
        self.leaves.len() as u64
    }

    pub fn ids_commitment(&self) -> Hash {
        ids_commitment(&self.ids)
    }

    /// Every level of the trace tree, from the leaves up (to answer bisection rounds).
    pub fn levels(&self) -> Vec<Vec<Hash>> {
        tree::levels(&self.leaves)
    }

    /// Step `step`'s output block as recorded (corrupted where this run was corrupted).
    fn block(&self, graph: &StepGraph, step: usize) -> Result<Vec<f32>, ArbiterError> {
        let (op, rows, columns) = graph
            .block(step)
            .ok_or_else(|| model_error(format!("no step {step}")))?;
        let output = match &self.recording {
            Recording::Bert(recording) => recording.outputs.get(op),
            Recording::Llama(recording) => recording.outputs.get(op),
        }
        .ok_or_else(|| model_error(format!("no output of op {op}")))?;
        let width = output.shape().get(1).copied().unwrap_or(1);
        let owned;
        let values = match output.as_slice() {
            Some(values) => values,
            None => {
                owned = output.to_vec();
                &owned
            }
        };
        let mut block = Vec::with_capacity(rows.len() * columns.len());
        for row in rows {
            block
                .extend_from_slice(&values[row * width + columns.start..row * width + columns.end]);
        }
        if self.corrupted == Some(step as u64) {
            if let Some(first) = block.first_mut() {
                *first += 1.0;
            }
        }
        Ok(block)
    }

    fn graph_for(&self, model: &LoadedModel) -> Result<StepGraph, ArbiterError> {
        let model = match (&self.recording, model) {
            (Recording::Bert(recording), LoadedModel::Embedding(embedder)) => ModelGraph::Bert {
                config: embedder.config().clone(),
                graph: recording.graph.clone(),
            },
            (Recording::Llama(recording), LoadedModel::Generation(generator)) => {
                ModelGraph::Llama {
                    config: generator.config().clone(),
                    graph: recording.graph.clone(),
                }
            }
            _ => return Err(model_error("the run was made with another model")),
        };
        Ok(StepGraph::new(model))
    }

    /// Apply the fault of [`run_job`]'s `corrupt_step`.
    fn corrupt(
        &mut self,
        model: &LoadedModel,
        job: &JobSpec,
        step: u64,
    ) -> Result<(), ArbiterError> {
        if step >= self.step_count() {
            return Err(model_error(format!(
                "cannot corrupt step {step} of {}",
                self.step_count()
            )));
        }
        let graph = self.graph_for(model)?;
        self.corrupted = Some(step);
        let block = self.block(&graph, step as usize)?;
        let [rows, columns] = graph
            .block_shape(step as usize)
            .ok_or_else(|| model_error(format!("no step {step}")))?;
        self.leaves[step as usize] = trace::step_hash(step as usize, &block, rows, columns);
        self.trace_root = merkle::root(TRACE_DOMAIN, &self.leaves);
        if step + 1 == self.step_count() {
            match (model, &self.recording) {
                (LoadedModel::Embedding(_), _) => {
                    self.output = block.iter().flat_map(|v| v.to_le_bytes()).collect();
                }
                (LoadedModel::Generation(generator), Recording::Llama(recording)) => {
                    let mut ids = sampled_ids(recording)?;
                    let vocab = generator.config().vocab as u32;
                    if let Some(last) = ids.last_mut() {
                        *last = (*last + 1) % vocab;
                    }
                    self.output = generator
                        .generation_text(&ids, &generate_params(job))
                        .into_bytes();
                }
                _ => return Err(model_error("the run was made with another model")),
            }
        }
        Ok(())
    }

    /// Evidence for step `step` from this run: the blocks it reads with their proofs in this
    /// run's trace, the weight chunks it reads with their proofs, the config, the manifest and
    /// the ids; for a constrained job's sample step, the tokenizer too.
    pub fn evidence(&self, model: &LoadedModel, step: u64) -> Result<Evidence, ArbiterError> {
        let graph = self.graph_for(model)?;
        if step >= self.step_count() {
            return Err(ArbiterError::StepOutOfRange {
                step,
                count: self.step_count(),
            });
        }
        let plan = graph.plan(step as usize, self.ids.len())?;
        let leaves = plan
            .leaves
            .iter()
            .map(|&index| {
                let [rows, columns] = graph
                    .block_shape(index)
                    .ok_or_else(|| model_error(format!("no step {index}")))?;
                let siblings = merkle::prove(&self.leaves, index)
                    .ok_or_else(|| model_error(format!("no leaf {index}")))?
                    .siblings;
                Ok(LeafOpening {
                    index: index as u64,
                    rows: rows as u32,
                    columns: columns as u32,
                    values: self.block(&graph, index)?,
                    siblings,
                })
            })
            .collect::<Result<Vec<_>, ArbiterError>>()?;
        let blocks: Vec<&[f32]> = leaves.iter().map(|leaf| leaf.values.as_slice()).collect();
        let inputs = plan.assemble(&graph, &self.ids, &blocks)?;
        let weights = model.weights();
        let manifest = weights.manifest();
        let reads = plan.weight_reads(&graph, &inputs, &manifest)?;
        let commitment = model.weight_commitment();
        let chunks = plan::chunks_of(&reads)?
            .into_iter()
            .map(|index| {
                let missing = || model_error(format!("no weight chunk {index}"));
                Ok(ChunkOpening {
                    index,
                    bytes: weights.chunk(index as usize).ok_or_else(missing)?,
                    siblings: merkle::prove(&commitment.chunk_leaves, index as usize)
                        .ok_or_else(missing)?
                        .siblings,
                })
            })
            .collect::<Result<Vec<_>, ArbiterError>>()?;
        let tokenizer = match model {
            LoadedModel::Generation(generator)
                if self.constrained && graph.sample_index(step as usize).is_some() =>
            {
                crate::tokens::llama_tokenizer_bytes(generator)
            }
            _ => Vec::new(),
        };
        Ok(Evidence {
            step,
            config: model.config_bytes(),
            manifest: weights.manifest_bytes(),
            chunk_root: commitment.chunk_root,
            ids: self.ids.clone(),
            leaves,
            chunks,
            tokenizer,
        })
    }

    /// Evidence for a length dispute from this run: the sample step of every pass below
    /// `common` steps (the step count both parties' traces have) with its proof in this run's
    /// trace, the config, the tokenizer and the prompt ids.
    pub fn length_evidence(
        &self,
        model: &LoadedModel,
        common: u64,
    ) -> Result<LengthEvidence, ArbiterError> {
        let (LoadedModel::Generation(generator), Recording::Llama(recording)) =
            (model, &self.recording)
        else {
            return Err(model_error("only a generation has a length to dispute"));
        };
        let graph = self.graph_for(model)?;
        let samples = recording
            .graph
            .steps
            .iter()
            .enumerate()
            .take(common.min(self.step_count()) as usize)
            .filter(|(_, step)| {
                recording
                    .graph
                    .ops
                    .get(step.op)
                    .is_some_and(|op| matches!(op.kind, piazza_llm::OpKind::Sample { .. }))
            })
            .map(|(index, _)| {
                let siblings = merkle::prove(&self.leaves, index)
                    .ok_or_else(|| model_error(format!("no leaf {index}")))?
                    .siblings;
                Ok(LeafOpening {
                    index: index as u64,
                    rows: 1,
                    columns: 1,
                    values: self.block(&graph, index)?,
                    siblings,
                })
            })
            .collect::<Result<Vec<_>, ArbiterError>>()?;
        Ok(LengthEvidence {
            config: model.config_bytes(),
            tokenizer: crate::tokens::llama_tokenizer_bytes(generator),
            ids: self.ids.clone(),
            samples,
        })
    }
}

/// The new token ids of a recorded generation (the output of each pass's sample op).
fn sampled_ids(recording: &piazza_llm::Recording) -> Result<Vec<u32>, ArbiterError> {
    recording
        .graph
        .ops
        .iter()
        .zip(&recording.outputs)
        .filter(|(op, _)| matches!(op.kind, piazza_llm::OpKind::Sample { .. }))
        .map(|(_, output)| {
            output
                .to_vec()
                .first()
                .map(|&id| id as u32)
                .ok_or_else(|| model_error("empty sample"))
        })
        .collect()
}

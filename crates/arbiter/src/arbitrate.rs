//! [`arbitrate`]: check evidence against the commitments and re-execute one step.

use std::collections::BTreeMap;

use piazza_engine::config::BertConfig;
use piazza_engine::trace;
use piazza_engine::MAX_TOKENS;
use piazza_llm::{LlamaConfig, SEQUENCE_TOKENS_MAX};
use piazza_tensor::Tensor;
use piazza_trace::merkle::Proof;
use piazza_trace::weights::{self, ManifestEntry, WEIGHT_CHUNK_BYTES};
use piazza_trace::Trace;

use crate::constraint::GrammarFilter;
use crate::plan::{self, ModelGraph, StepGraph, StepPlan, WeightRead};
use crate::tree::LEAVES_MAX;
use crate::{
    config_hash, generate_params, ids_commitment, ArbiterError, Evidence, Family, Hash, JobSpec,
    ModelCommitments, TraceClaim,
};

/// Check `evidence` for step `evidence.step` against the model's commitments, the job and the
/// trace claim, then re-execute that step on one thread and return its leaf hash.
///
/// Checked, in order: the config bytes hash to `model.config_hash` and parse (bounded) for the
/// family; the manifest and chunk root hash to `model.weights_commitment` and the manifest is
/// canonical; the ids hash to `claim.ids_commitment`; the graph rebuilt from the config, the
/// ids and the job has exactly `claim.step_count` steps and `step` is below it; the leaf
/// openings are exactly the earlier steps the step reads (increasing), each of its block's
/// shape and proven in `claim.root`; the chunk openings are exactly the weight chunks the step
/// reads (increasing), each of its canonical length and proven under the chunk root.
pub fn arbitrate(
    model: &ModelCommitments,
    job: &JobSpec,
    claim: &TraceClaim,
    evidence: &Evidence,
) -> Result<Hash, ArbiterError> {
    let in_trace = |index: u64, leaf: &Hash, siblings: &[Hash]| {
        let proof = Proof {
            siblings: siblings.to_vec(),
        };
        Trace::verify(&claim.root, claim.step_count, index, leaf, &proof)
    };
    arbitrate_with(
        model,
        job,
        claim.step_count,
        &claim.ids_commitment,
        evidence,
        &in_trace,
    )
}

/// A leaf check: whether `leaf` (a step's hash) at `index` is agreed, given the siblings of its
/// Merkle path from the evidence. The ledger checks leaves against the subtrees both parties of
/// a dispute revealed with equal hashes.
pub type LeafCheck<'a> = dyn Fn(u64, &Hash, &[Hash]) -> bool + 'a;

/// [`arbitrate`] with the leaf openings checked by `leaf_ok` rather than against one root.
pub fn arbitrate_with(
    model: &ModelCommitments,
    job: &JobSpec,
    step_count: u64,
    ids: &Hash,
    evidence: &Evidence,
    leaf_ok: &LeafCheck<'_>,
) -> Result<Hash, ArbiterError> {
    let claim = &TraceClaim {
        root: [0; 32],
        step_count,
        ids_commitment: *ids,
    };
    if config_hash(&evidence.config) != model.config_hash {
        return Err(ArbiterError::ConfigHash);
    }
    let manifest_hash = weights::manifest_hash(&evidence.manifest);
    if weights::commitment_root(&manifest_hash, &evidence.chunk_root) != model.weights_commitment {
        return Err(ArbiterError::WeightsCommitment);
    }
    let (manifest, blob_bytes) = weights::parse_manifest(&evidence.manifest)
        .map_err(|e| ArbiterError::Manifest(e.to_string()))?;
    if ids_commitment(&evidence.ids) != claim.ids_commitment {
        return Err(ArbiterError::IdsCommitment);
    }
    if claim.step_count == 0 || claim.step_count > LEAVES_MAX {
        return Err(ArbiterError::StepCount {
            claim: claim.step_count,
            detail: format!("a trace has 1..={LEAVES_MAX} steps"),
        });
    }
    if evidence.step >= claim.step_count {
        return Err(ArbiterError::StepOutOfRange {
            step: evidence.step,
            count: claim.step_count,
        });
    }
    let graph = match model.family {
        Family::Bert => bert_graph(&evidence.config, &evidence.ids, claim.step_count)?,
        Family::Llama => llama_graph(&evidence.config, &manifest, job, evidence, claim)?,
    };
    let step = evidence.step as usize;
    let filter = sample_filter(model, &graph, step, job, &evidence.tokenizer)?;
    let plan = graph.plan(step, evidence.ids.len())?;
    let blocks = check_leaves(&graph, &plan, evidence, leaf_ok)?;
    let mut inputs = plan.assemble(&graph, &evidence.ids, &blocks)?;
    let allowed = match &filter {
        Some((filter, index)) => Some(mask_logits(&mut inputs, filter, *index)?),
        None => None,
    };
    let reads = plan.weight_reads(&graph, &inputs, &manifest)?;
    let store = ChunkStore::check(&reads, evidence, blob_bytes)?;
    let weights = reads
        .iter()
        .map(|read| store.tensor(read))
        .collect::<Result<Vec<_>, _>>()?;
    let output = plan.execute(&graph, &inputs, &reads, &weights)?;
    if let Some(allowed) = allowed {
        // As the generator's filtered sample op: the choice must be one the mask allows.
        let chosen = output.to_vec().first().map(|&id| id as usize);
        if !chosen.is_some_and(|id| allowed.get(id).copied().unwrap_or(false)) {
            return Err(ArbiterError::Execution(format!(
                "sample step {step}: the job's mask allows no token"
            )));
        }
    }
    Ok(trace::tensor_step_hash(step, &output))
}

/// The token mask a step applies, with the sample's index (its new tokens so far): only a
/// constrained job's sample step has one, built from the tokenizer the evidence carries
/// (checked against the record's tokenizer hash before it is parsed). Any other step's
/// evidence carries no tokenizer, and a constrained sample step's must.
fn sample_filter(
    model: &ModelCommitments,
    graph: &StepGraph,
    step: usize,
    job: &JobSpec,
    tokenizer: &[u8],
) -> Result<Option<(GrammarFilter, u64)>, ArbiterError> {
    let sample = match &graph.model {
        plan::ModelGraph::Llama { config, .. } => {
            graph.sample_index(step).map(|index| (index, config.vocab))
        }
        plan::ModelGraph::Bert { .. } => None,
    };
    let constrained = crate::constraint::split_input(&job.input)?.0.is_some();
    let Some((index, vocab)) = sample.filter(|_| constrained) else {
        if !tokenizer.is_empty() {
            return Err(ArbiterError::Tokenizer(
                "the evidence carries a tokenizer this step does not read".into(),
            ));
        }
        return Ok(None);
    };
    if tokenizer.is_empty() {
        return Err(ArbiterError::Tokenizer(
            "a constrained job's sample step needs the tokenizer for its mask".into(),
        ));
    }
    let tokenizer = crate::tokens::llama_tokenizer(tokenizer, &model.tokenizer_hash, vocab)
        .map_err(|e| ArbiterError::Tokenizer(e.to_string()))?;
    let filter = crate::constraint::filter_with(&tokenizer, vocab, job)?
        .ok_or_else(|| job_error("the job's constraint gives no mask".into()))?;
    Ok(Some((filter, index)))
}

/// Applies `filter` to a sample step's inputs (logits `1 × vocab`, then the history column of
/// prompt and new ids) as the generator's filtered sample op does: the logits of the ids it
/// does not allow become −∞. The new tokens so far are the history's last `index` ids.
/// Returns which ids are allowed.
fn mask_logits(
    inputs: &mut [Tensor],
    filter: &GrammarFilter,
    index: u64,
) -> Result<Vec<bool>, ArbiterError> {
    let fail = |detail: &str| ArbiterError::Execution(format!("sample inputs: {detail}"));
    let [logits, history, ..] = inputs else {
        return Err(fail("a sample reads logits and a history"));
    };
    let mut values = logits.to_vec();
    let history = history.to_vec();
    let vocab = values.len() as f32;
    if history
        .iter()
        .any(|&id| !(id >= 0.0 && id.fract() == 0.0 && id < vocab))
    {
        return Err(fail("the history holds a value that is no token id"));
    }
    let generated: Vec<u32> = usize::try_from(index)
        .ok()
        .and_then(|index| history.len().checked_sub(index))
        .map(|start| history[start..].iter().map(|&id| id as u32).collect())
        .ok_or_else(|| fail("fewer ids than new tokens"))?;
    let mut allowed = vec![false; values.len()];
    piazza_llm::TokenFilter::allowed(filter, &generated, &mut allowed)
        .map_err(|e| ArbiterError::Execution(format!("the job's mask: {e}")))?;
    for (value, &ok) in values.iter_mut().zip(&allowed) {
        if !ok {
            *value = f32::NEG_INFINITY;
        }
    }
    *logits = Tensor::from_vec(values, logits.shape()).map_err(|e| fail(&e.to_string()))?;
    Ok(allowed)
}

/// Whether a trace of `step_count` steps is a possible run of `job` from `ids` under the model
/// whose config bytes are `config` (checked against the record): what the ledger asks when the
/// parties of a dispute agree on the ids but not on the number of steps.
pub fn step_count_fits(
    model: &ModelCommitments,
    job: &JobSpec,
    config: &[u8],
    ids: &[u32],
    step_count: u64,
) -> Result<bool, ArbiterError> {
    if config_hash(config) != model.config_hash {
        return Err(ArbiterError::ConfigHash);
    }
    if step_count == 0 || step_count > LEAVES_MAX {
        return Ok(false);
    }
    let shape = match model.family {
        Family::Bert => bert_graph(config, ids, step_count).map(drop),
        Family::Llama => {
            // Only the graph's shape matters here; the output weight (tied or not) has the
            // same shape either way.
            let evidence = Evidence {
                step: 0,
                config: Vec::new(),
                manifest: Vec::new(),
                chunk_root: [0; 32],
                ids: ids.to_vec(),
                leaves: Vec::new(),
                chunks: Vec::new(),
                tokenizer: Vec::new(),
            };
            let claim = TraceClaim {
                root: [0; 32],
                step_count,
                ids_commitment: ids_commitment(ids),
            };
            llama_graph(config, &[], job, &evidence, &claim).map(drop)
        }
    };
    match shape {
        Ok(()) => Ok(true),
        Err(ArbiterError::StepCount { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn job_error(detail: String) -> ArbiterError {
    ArbiterError::Job(detail)
}

/// The graph of an embedding of `ids` (one sequence, no padding).
fn bert_graph(config: &[u8], ids: &[u32], step_count: u64) -> Result<StepGraph, ArbiterError> {
    let config = BertConfig::parse(config).map_err(|e| ArbiterError::Config(e.to_string()))?;
    let limit = MAX_TOKENS.min(config.max_position_embeddings);
    if ids.is_empty() || ids.len() > limit {
        return Err(job_error(format!(
            "{} token ids, expected 1..={limit}",
            ids.len()
        )));
    }
    if let Some(id) = ids.iter().find(|&&id| id as usize >= config.vocab_size) {
        return Err(job_error(format!("token id {id} outside the vocabulary")));
    }
    let graph = config
        .graph(&[ids.len()])
        .map_err(|e| job_error(e.to_string()))?;
    if graph.steps.len() as u64 != step_count {
        return Err(ArbiterError::StepCount {
            claim: step_count,
            detail: format!("the embedding has {}", graph.steps.len()),
        });
    }
    Ok(StepGraph::new(ModelGraph::Bert { config, graph }))
}

/// The graph of a generation from the prompt `evidence.ids`, up to the pass of
/// `evidence.step`: the number of new tokens is the one whose graph has `claim.step_count`
/// steps (every pass after the first has the same steps).
fn llama_graph(
    config: &[u8],
    manifest: &[ManifestEntry],
    job: &JobSpec,
    evidence: &Evidence,
    claim: &TraceClaim,
) -> Result<StepGraph, ArbiterError> {
    let config = LlamaConfig::from_canonical_bytes(config)
        .map_err(|e| ArbiterError::Config(e.to_string()))?;
    let prompt = evidence.ids.len();
    let limit = SEQUENCE_TOKENS_MAX.min(config.context);
    if prompt == 0 || prompt > limit {
        return Err(job_error(format!(
            "prompt of {prompt} tokens, expected 1..={limit}"
        )));
    }
    if let Some(id) = evidence.ids.iter().find(|&&id| id as usize >= config.vocab) {
        return Err(job_error(format!("token id {id} outside the vocabulary")));
    }
    let sampling = generate_params(job).sampling;
    sampling.validate().map_err(job_error)?;
    let output_weight = if manifest.iter().any(|e| e.name == "output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let (first, per_pass) = generation_layout(&config, output_weight, prompt, &sampling);
    let new_tokens_max = u64::from(job.max_tokens.max(1)).min((limit - prompt + 1) as u64);
    let new_tokens = if claim.step_count == first {
        Some(1)
    } else if per_pass > 0
        && claim.step_count > first
        && (claim.step_count - first).is_multiple_of(per_pass)
    {
        Some(1 + (claim.step_count - first) / per_pass)
    } else {
        None
    };
    if new_tokens.is_none_or(|n| n > new_tokens_max) {
        return Err(ArbiterError::StepCount {
            claim: claim.step_count,
            detail: format!(
                "a generation of n tokens has {first} + (n - 1) × {per_pass}, n ≤ {new_tokens_max}"
            ),
        });
    }
    let pass = match evidence.step.checked_sub(first) {
        None => 0,
        Some(after) => 1 + after / per_pass.max(1),
    };
    let graph = generation_up_to(&config, output_weight, prompt, pass as usize, &sampling);
    Ok(StepGraph::new(ModelGraph::Llama { config, graph }))
}

/// The steps of a generation's first pass and of each later pass (every pass after the first
/// has the same steps; each pass ends with its sample step).
pub(crate) fn generation_layout(
    config: &LlamaConfig,
    output_weight: &str,
    prompt_tokens: usize,
    sampling: &piazza_llm::SamplingParams,
) -> (u64, u64) {
    let step_count = |passes: usize| {
        generation_up_to(config, output_weight, prompt_tokens, passes - 1, sampling)
            .steps
            .len() as u64
    };
    let first = step_count(1);
    (first, step_count(2).saturating_sub(first))
}

/// The graph of a generation's passes `0..=last`, as `Graph::for_generation` builds it, except
/// that the ops of passes before `last` keep only their output shape (their names and inputs
/// are dropped): a step reads earlier ops' outputs but never their inputs, and the KV-cache
/// stacks of every pass would otherwise take memory quadratic in the number of passes.
fn generation_up_to(
    config: &LlamaConfig,
    output_weight: &str,
    prompt_tokens: usize,
    last: usize,
    sampling: &piazza_llm::SamplingParams,
) -> piazza_llm::Graph {
    let mut graph = piazza_llm::Graph::default();
    let mut cache = piazza_llm::graph::Cache::default();
    let (mut rows, mut position) = (prompt_tokens, 0);
    for pass in 0..=last {
        let start = graph.ops.len();
        graph.push_pass(config, output_weight, &mut cache, rows, position, sampling);
        if pass < last {
            for op in &mut graph.ops[start..] {
                op.name = String::new();
                op.inputs = Vec::new();
            }
        }
        position += rows;
        rows = 1;
    }
    graph
}

/// Check that the leaf openings are exactly the blocks `plan` reads, each proven in the
/// claimed trace; returns their values in `plan.leaves` order.
fn check_leaves<'e>(
    graph: &StepGraph,
    plan: &StepPlan,
    evidence: &'e Evidence,
    leaf_ok: &LeafCheck<'_>,
) -> Result<Vec<&'e [f32]>, ArbiterError> {
    let given: Vec<u64> = evidence.leaves.iter().map(|leaf| leaf.index).collect();
    let wanted: Vec<u64> = plan.leaves.iter().map(|&step| step as u64).collect();
    if given != wanted {
        return Err(ArbiterError::Leaves(format!(
            "step {} reads {} blocks ({}), evidence opens {} ({})",
            plan.step,
            wanted.len(),
            preview(&wanted),
            given.len(),
            preview(&given)
        )));
    }
    evidence
        .leaves
        .iter()
        .map(|leaf| {
            let fail = |detail: String| ArbiterError::LeafOpening {
                index: leaf.index,
                detail,
            };
            let [rows, columns] = graph
                .block_shape(leaf.index as usize)
                .ok_or_else(|| fail("no such step".into()))?;
            if (leaf.rows as usize, leaf.columns as usize) != (rows, columns)
                || leaf.values.len() != rows * columns
            {
                return Err(fail(format!(
                    "{} × {} with {} values, the step's block is {rows} × {columns}",
                    leaf.rows,
                    leaf.columns,
                    leaf.values.len()
                )));
            }
            let hash = trace::step_hash(leaf.index as usize, &leaf.values, rows, columns);
            if leaf.index >= evidence.step || !leaf_ok(leaf.index, &hash, &leaf.siblings) {
                return Err(fail("not in the trace".into()));
            }
            Ok(leaf.values.as_slice())
        })
        .collect()
}

/// The first few numbers of a list, for error messages.
fn preview(list: &[u64]) -> String {
    let shown: Vec<String> = list.iter().take(8).map(u64::to_string).collect();
    let more = if list.len() > 8 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// The weight chunks of the evidence, checked against the chunk root.
struct ChunkStore<'e> {
    chunks: BTreeMap<u64, &'e [u8]>,
}

impl<'e> ChunkStore<'e> {
    /// Check that the chunk openings are exactly the chunks `reads` cover, each of canonical
    /// length and proven under `evidence.chunk_root`.
    fn check(
        reads: &[WeightRead],
        evidence: &'e Evidence,
        blob_bytes: u64,
    ) -> Result<ChunkStore<'e>, ArbiterError> {
        let wanted = plan::chunks_of(reads)?;
        let given: Vec<u64> = evidence.chunks.iter().map(|chunk| chunk.index).collect();
        if given != wanted {
            return Err(ArbiterError::Chunks(format!(
                "the step reads {} chunks ({}), evidence opens {} ({})",
                wanted.len(),
                preview(&wanted),
                given.len(),
                preview(&given)
            )));
        }
        let mut chunks = BTreeMap::new();
        for chunk in &evidence.chunks {
            weights::verify_chunk(
                &evidence.chunk_root,
                blob_bytes,
                chunk.index,
                &chunk.bytes,
                &chunk.siblings,
            )
            .map_err(|error| match error {
                weights::CommitmentError::Chunk { index, detail } => {
                    ArbiterError::ChunkOpening { index, detail }
                }
                other => ArbiterError::Chunks(other.to_string()),
            })?;
            chunks.insert(chunk.index, chunk.bytes.as_slice());
        }
        Ok(ChunkStore { chunks })
    }

    /// The floats of a weight read, from the checked chunks.
    fn tensor(&self, read: &WeightRead) -> Result<Tensor, ArbiterError> {
        let chunk = WEIGHT_CHUNK_BYTES as u64;
        let mut values = Vec::new();
        for range in read.byte_ranges()? {
            let mut bytes = Vec::with_capacity((range.end - range.start) as usize);
            let mut at = range.start;
            while at < range.end {
                let index = at / chunk;
                let data = self
                    .chunks
                    .get(&index)
                    .ok_or_else(|| ArbiterError::Chunks(format!("chunk {index} missing")))?;
                let from = (at - index * chunk) as usize;
                let to = ((range.end - index * chunk).min(chunk)) as usize;
                let slice = data
                    .get(from..to)
                    .ok_or_else(|| ArbiterError::Chunks(format!("chunk {index} is short")))?;
                bytes.extend_from_slice(slice);
                at += slice.len() as u64;
                if slice.is_empty() {
                    return Err(ArbiterError::Chunks(format!("chunk {index} is short")));
                }
            }
            values.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Tensor::from_vec(values, &read.shape()).map_err(|e| ArbiterError::Execution(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pruned graph has the same steps as the full one, and the same ops in its last pass.
    #[test]
    fn pruned_generation_graphs_keep_what_a_step_reads() {
        let config = LlamaConfig {
            layers: 2,
            hidden: 64,
            ffn: 96,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            vocab: 300,
            context: 64,
            rope_base: 10_000.0,
            rms_eps: 1e-5,
        };
        let sampling = piazza_llm::SamplingParams::seeded(3, 0.7);
        for (prompt, passes) in [(1, 1), (5, 1), (70, 2), (9, 6)] {
            let full = piazza_llm::Graph::for_generation(
                &config,
                "token_embd.weight",
                prompt,
                passes,
                &sampling,
            );
            let pruned =
                generation_up_to(&config, "token_embd.weight", prompt, passes - 1, &sampling);
            assert_eq!(pruned.steps, full.steps);
            assert_eq!(pruned.pass_starts, full.pass_starts);
            let last = full.pass_starts[passes - 1];
            assert_eq!(pruned.ops[last..], full.ops[last..]);
            for (pruned, full) in pruned.ops.iter().zip(&full.ops) {
                assert_eq!(pruned.output_shape, full.output_shape);
            }
        }
    }
}

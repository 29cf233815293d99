//! The engines behind the ledger's [`Arbiter`]: one-step arbitration with `piazza-arbiter`.
//!
//! The ledger names what it needs (tokenize a job's input, re-execute one step) and the node
//! wires in this implementation for every block it builds or validates, so every validator
//! decides disputes with the same deterministic kernels while the ledger itself links no ML code.

use piazza_ledger::arbitration::{Arbiter, InputVerdict, Job, LeafCheck, LengthFinding, Model};
use piazza_primitives::Hash;

/// The evidence bound the ledger admits is the one the arbiter decodes.
const _: () =
    assert!(piazza_ledger::arbitration::EVIDENCE_BYTES_MAX == piazza_arbiter::EVIDENCE_BYTES_MAX);

/// One-step arbitration by re-execution on the engines' kernels.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineArbiter;

fn commitments(model: &Model) -> Result<piazza_arbiter::ModelCommitments, String> {
    let family = piazza_arbiter::Family::from_architecture(&model.architecture)
        .ok_or_else(|| format!("no arbiter for architecture `{}`", model.architecture))?;
    Ok(piazza_arbiter::ModelCommitments {
        family,
        config_hash: model.config_hash.0,
        weights_commitment: model.weights_commitment.0,
        tokenizer_hash: model.tokenizer_hash.0,
    })
}

/// A chain job as the arbiter reads it.
pub fn job_spec(job: &Job) -> piazza_arbiter::JobSpec {
    let p = &job.params;
    piazza_arbiter::JobSpec {
        input: job.input.clone(),
        max_tokens: p.max_tokens,
        temperature_milli: p.temperature_milli,
        top_k: p.top_k,
        top_p_milli: p.top_p_milli,
        repetition_penalty_milli: p.repetition_penalty_milli,
        seed: p.seed,
        chat: p.chat,
        stop: p.stop.clone(),
    }
}

struct Tokenized {
    model: piazza_arbiter::ModelCommitments,
    job: piazza_arbiter::JobSpec,
    verdict: piazza_arbiter::InputVerdict,
}

impl InputVerdict for Tokenized {
    fn ids(&self) -> Hash {
        Hash(self.verdict.ids_commitment())
    }

    fn step_count_fits(&self, step_count: u64) -> Result<bool, String> {
        piazza_arbiter::step_count_fits(
            &self.model,
            &self.job,
            &self.verdict.config,
            &self.verdict.ids,
            step_count,
        )
        .map_err(|e| e.to_string())
    }

    fn id_count(&self) -> Option<u64> {
        Some(self.verdict.ids.len() as u64)
    }
}

impl Arbiter for EngineArbiter {
    fn input(
        &self,
        model: &Model,
        job: &Job,
        evidence: &[u8],
    ) -> Result<Box<dyn InputVerdict>, String> {
        let model = commitments(model)?;
        let job = job_spec(job);
        let verdict =
            piazza_arbiter::arbitrate_ids(&model, &job, evidence).map_err(|e| e.to_string())?;
        Ok(Box::new(Tokenized {
            model,
            job,
            verdict,
        }))
    }

    fn step(
        &self,
        model: &Model,
        job: &Job,
        step: u64,
        step_count: u64,
        ids: &Hash,
        evidence: &[u8],
        leaf_agreed: &LeafCheck<'_>,
    ) -> Result<Hash, String> {
        let model = commitments(model)?;
        let decoded = piazza_arbiter::Evidence::decode(evidence).map_err(|e| e.to_string())?;
        if decoded.step != step {
            return Err(format!(
                "the evidence is for step {}, the dispute is at step {step}",
                decoded.step
            ));
        }
        piazza_arbiter::arbitrate_with(
            &model,
            &job_spec(job),
            step_count,
            &ids.0,
            &decoded,
            &|index, leaf, siblings| {
                let siblings: Vec<Hash> = siblings.iter().map(|s| Hash(*s)).collect();
                leaf_agreed(index, &Hash(*leaf), &siblings)
            },
        )
        .map(Hash)
        .map_err(|e| e.to_string())
    }

    fn length(
        &self,
        model: &Model,
        job: &Job,
        ids: &Hash,
        step_counts: [u64; 2],
        evidence: &[u8],
        leaf_agreed: &LeafCheck<'_>,
    ) -> Result<LengthFinding, String> {
        let model = commitments(model)?;
        let decoded =
            piazza_arbiter::tokens::LengthEvidence::decode(evidence).map_err(|e| e.to_string())?;
        let finding = piazza_arbiter::tokens::arbitrate_length(
            &model,
            &job_spec(job),
            &ids.0,
            step_counts,
            &decoded,
            &|index, leaf, siblings| {
                let siblings: Vec<Hash> = siblings.iter().map(|s| Hash(*s)).collect();
                leaf_agreed(index, &Hash(*leaf), &siblings)
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(LengthFinding {
            fits: finding.fits,
            stop_steps: finding.stop_steps,
        })
    }
}

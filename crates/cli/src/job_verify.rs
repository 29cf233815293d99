//! `piazza job verify`: re-executes a posted job here and compares its output hash and trace
//! root with the ones the provider posted.
//!
//! The model is found as a provider finds it ([`piazza_provider::models::resolve`]: a local file
//! whose commitments equal the chain's record, else its blobs fetched from storage) and the job
//! runs through the provider's own path ([`piazza_provider::models::execute`], which is
//! [`piazza_arbiter::execute_streaming`]): embeddings, generations and constrained generations
//! alike. Nothing here computes a root of its own.

use anyhow::{Context, Result};
use clap::Args;
use piazza_client::Client;
use piazza_ledger::compute;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct VerifyArgs {
    /// The job's id.
    pub id: u64,
    /// The node's JSON-RPC URL.
    #[arg(
        long,
        visible_alias = "rpc",
        env = "PIAZZA_NODE",
        default_value = "http://127.0.0.1:8545"
    )]
    pub node: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Where model files are looked for and fetched blobs kept [default: as for providers].
    #[arg(long, env = "PIAZZA_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Engine threads (the result does not depend on them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// One run's output hash, trace root and work units.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub output_hash: String,
    pub trace_root: String,
    pub work_units: u64,
}

/// What `piazza job verify` prints.
#[derive(Serialize, Debug)]
pub struct Report {
    pub job: u64,
    pub model: String,
    pub ours: Run,
    pub posted: Run,
    /// `match` or `MISMATCH`.
    pub verdict: &'static str,
    /// What differs: `output_hash`, `trace_root`, `work_units`, `output` (the bytes on chain).
    pub differs: Vec<&'static str>,
}

/// What of `ours` differs from the posted result (`posted_output` is the output on chain, hex;
/// empty when the chain keeps none).
fn differences(
    ours: &Run,
    our_output: &[u8],
    posted: &Run,
    posted_output: &str,
) -> Vec<&'static str> {
    let mut differs = Vec::new();
    if ours.output_hash != posted.output_hash {
        differs.push("output_hash");
    }
    if ours.trace_root != posted.trace_root {
        differs.push("trace_root");
    }
    if ours.work_units != posted.work_units {
        differs.push("work_units");
    }
    if !posted_output.is_empty() && !posted_output.eq_ignore_ascii_case(&hex::encode(our_output)) {
        differs.push("output");
    }
    differs
}

pub async fn run(args: VerifyArgs) -> Result<()> {
    let client = Client::new(&args.node);
    let id = args.id;
    let job = client
        .job(id)
        .await?
        .with_context(|| format!("the chain has no job {id}"))?;
    let result = job.result.clone().with_context(|| {
        format!(
            "job {id} has no result yet (it is {}); nothing to verify",
            job.status
        )
    })?;
    let record = client
        .models()
        .await?
        .into_iter()
        .find(|m| m.name == job.model)
        .with_context(|| format!("job {id}'s model `{}` is not on the chain", job.model))?;
    let models_dir = args.models_dir.unwrap_or_else(piazza_engine::models_dir);
    let model = piazza_provider::models::resolve(&client, &models_dir, &record)
        .await
        .with_context(|| format!("model `{}` could not be obtained", record.name))?;
    let input = hex::decode(&job.input).with_context(|| format!("job {id}'s input is not hex"))?;
    let (params, threads) = (job.params.clone(), args.threads.max(1));
    let execution = tokio::task::spawn_blocking(move || {
        piazza_provider::models::execute(&model, &input, &params, threads)
    })
    .await?
    .with_context(|| format!("re-executing job {id}"))?;
    let ours = Run {
        output_hash: compute::output_hash(&execution.output).to_hex(),
        trace_root: execution.trace_root.to_hex(),
        work_units: execution.work_units,
    };
    let posted = Run {
        output_hash: result.output_hash.clone(),
        trace_root: result.trace_root.clone(),
        work_units: result.work_units,
    };
    let differs = differences(&ours, &execution.output, &posted, &result.output);
    let report = Report {
        job: id,
        model: job.model.clone(),
        verdict: if differs.is_empty() {
            "match"
        } else {
            "MISMATCH"
        },
        ours,
        posted,
        differs,
    };
    crate::query::print(args.json, &report, || text(&report));
    anyhow::ensure!(
        report.differs.is_empty(),
        "job {id}: MISMATCH: {} differ from the posted result",
        report.differs.join(", ")
    );
    Ok(())
}

fn text(report: &Report) -> String {
    format!(
        "job:          {}\nmodel:        {}\noutput hash:  {} (ours)\n              {} (posted)\ntrace root:   {} (ours)\n              {} (posted)\nwork units:   {} (ours), {} (posted)\nverdict:      {}{}",
        report.job,
        report.model,
        report.ours.output_hash,
        report.posted.output_hash,
        report.ours.trace_root,
        report.posted.trace_root,
        report.ours.work_units,
        report.posted.work_units,
        report.verdict,
        if report.differs.is_empty() {
            String::new()
        } else {
            format!(" ({} differ)", report.differs.join(", "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(output: &[u8], root: &str, units: u64) -> Run {
        Run {
            output_hash: compute::output_hash(output).to_hex(),
            trace_root: root.into(),
            work_units: units,
        }
    }

    #[test]
    fn every_field_that_differs_is_named() {
        let ours = run(b"a", "11", 3);
        assert!(differences(&ours, b"a", &ours.clone(), &hex::encode(b"a")).is_empty());
        assert!(differences(&ours, b"a", &ours.clone(), "").is_empty());
        assert_eq!(
            differences(&ours, b"a", &run(b"b", "22", 4), &hex::encode(b"b")),
            ["output_hash", "trace_root", "work_units", "output"]
        );
        assert_eq!(
            differences(&ours, b"a", &run(b"a", "22", 3), ""),
            ["trace_root"]
        );
    }
}

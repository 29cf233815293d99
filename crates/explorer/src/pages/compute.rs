//! Providers and jobs: stake, models, jobs served and frauds; a job's receipt, trace root,
//! audit state and outcome.

use super::{integer, lookup};
use crate::html::{self, account_link, block_link, escape, facts, job_link, model_link, pza};
use crate::{Html, PageError, PageResult, Source};
use piazza_api::{compute_method, verify_method, JobInfo, JobProofInfo, ProviderInfo};
use serde_json::{json, Value};

pub fn provider(source: &dyn Source, address: &str) -> PageResult {
    let address = super::address(address)?;
    let p: ProviderInfo = lookup(source, compute_method::GET_PROVIDER, &[json!(address)])?
        .ok_or_else(|| PageError::NotFound(format!("{address} is not a provider")))?;
    let models: Vec<String> = p.models.iter().map(|m| model_link(m)).collect();
    let assigned = source.call(compute_method::GET_PROVIDER_JOBS, &[json!(address)])?;
    let assigned: Vec<String> = assigned
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .filter_map(Value::as_u64)
                .map(job_link)
                .collect()
        })
        .unwrap_or_default();
    let body = facts(&[
        ("Address", account_link(&p.address)),
        ("Stake", pza(&p.stake)),
        ("Models", models.join(", ")),
        ("Price per unit", pza(&p.price_per_unit)),
        ("Capacity", p.capacity.to_string()),
        (
            "Declared speed (units per block)",
            p.units_per_block.to_string(),
        ),
        ("Active jobs", p.active_jobs.to_string()),
        ("Jobs served", p.jobs_completed.to_string()),
        ("Deadlines missed", p.deadlines_missed.to_string()),
        ("Frauds", format!("<span id=\"frauds\">{}</span>", p.frauds)),
        ("Assigned now", assigned.join(", ")),
        ("Endpoint", escape(&p.endpoint)),
    ]);
    Ok(Html(html::layout("Provider", &body)))
}

pub fn job(source: &dyn Source, id: &str) -> PageResult {
    let id = integer(id, "job id")?;
    let job: JobInfo = lookup(source, compute_method::GET_JOB, &[json!(id)])?
        .ok_or_else(|| PageError::NotFound(format!("no job {id}")))?;
    let mut rows = vec![
        ("Job", id.to_string()),
        (
            "Status",
            format!(
                "<span id=\"job-status\">{}</span>",
                escape(job.status.name())
            ),
        ),
        ("Client", account_link(&job.client)),
        ("Model", model_link(&job.model)),
        ("Submitted at", block_link(job.submitted_height)),
        ("Max units", job.max_units.to_string()),
        ("Max price", pza(&job.max_price)),
        ("Input (hex)", escape(&html::short(&job.input))),
    ];
    if job.group != id {
        rows.push(("Redundant group of", job_link(job.group)));
    }
    if let Some(p) = &job.provider {
        rows.push(("Provider", html::provider_link(p)));
    }
    if let Some(h) = job.deadline_height {
        rows.push(("Deadline", block_link(h)));
    }
    rows.push((
        "Audit state",
        escape(job.hold.as_deref().unwrap_or("not held")),
    ));
    if !job.missed.is_empty() {
        rows.push(("Missed by", escape(&job.missed.join(", "))));
    }
    let mut body = facts(&rows);
    if let Some(r) = &job.result {
        body.push_str("<h2>Result</h2>");
        body.push_str(&facts(&[
            ("Output hash", escape(&r.output_hash)),
            ("Trace root", escape(&r.trace_root)),
            ("Work units", r.work_units.to_string()),
            ("Posted at", block_link(r.posted_height)),
            ("Output (hex)", escape(&html::short(&r.output))),
        ]));
    }
    if let Some(r) = &job.receipt {
        body.push_str("<h2>Receipt</h2>");
        body.push_str(&facts(&[
            ("Provider", account_link(&r.provider)),
            ("Price paid", pza(&r.price)),
            ("Refunded", pza(&r.refund)),
            ("Input hash", escape(&r.input_hash)),
            ("Output hash", escape(&r.output_hash)),
            ("Trace root", escape(&r.trace_root)),
            ("Settled at", block_link(r.height)),
        ]));
    }
    let dispute = source.call(verify_method::GET_DISPUTE, &[json!(id)])?;
    if !dispute.is_null() {
        body.push_str(&format!(
            "<p>{}</p>",
            html::link(
                &format!("dispute/{id}"),
                "This job is disputed: see the game"
            )
        ));
    }
    body.push_str("<h2>Check it yourself</h2>");
    body.push_str(&job_proof(source, &job)?);
    body.push_str(&recheck(&job));
    Ok(Html(html::layout(&format!("Job {id}"), &body)))
}

/// The job record's state proof at the head, with the output and output hash shown, for
/// `assets/proof.js` to check: the proof against the block's state root, the output against the
/// output hash, and the hash against the proven record.
fn job_proof(source: &dyn Source, job: &JobInfo) -> Result<String, PageError> {
    let proof: JobProofInfo =
        super::fetch(source, compute_method::GET_JOB_PROOF, &[json!(job.id)])?;
    let block_root = super::block_root(source, proof.proof.height)?;
    let (output, output_hash) = job
        .result
        .as_ref()
        .map(|r| (r.output.as_str(), r.output_hash.as_str()))
        .unwrap_or_default();
    let id = proof.id.to_string();
    let mut check = facts(&[
        ("Proven at height", block_link(proof.proof.height)),
        ("State root", escape(&proof.proof.state_root)),
        ("Block state root", escape(&block_root)),
    ]);
    check.push_str(&super::proof_box(
        "the job record's state proof (and the output against its hash)",
        "job",
        &proof.proof,
        &[
            ("id", &id),
            ("block-root", &block_root),
            ("output", output),
            ("output-hash", output_hash),
        ],
    ));
    Ok(check)
}

/// The command that re-executes the job here (its model found as a provider finds it) and
/// compares its output hash and trace root with the posted ones.
fn recheck(job: &JobInfo) -> String {
    match job.result.as_ref() {
        Some(result) => format!(
            "<p>Re-execute it locally and compare the trace root with <code>{}</code> \
(the page fills in <code>&lt;node url&gt;</code>: the JSON-RPC URL of the node serving this explorer):</p>\
<pre id=\"recheck\">piazza job verify {} --rpc &lt;node url&gt;</pre>",
            escape(&result.trace_root),
            job.id,
        ),
        None => "<p>No result posted yet.</p>".into(),
    }
}

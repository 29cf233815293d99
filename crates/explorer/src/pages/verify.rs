//! Disputes: the bisection game drawn as the range of steps still in question at each level,
//! down to the one step that is arbitrated.

use super::{integer, lookup};
use crate::html::{self, account_link, block_link, escape, facts, job_link, pza};
use crate::{Html, PageError, PageResult, Source};
use piazza_api::{compute_method, verify_method, DisputeInfo, JobInfo, PartyInfo};
use serde_json::json;
use std::fmt::Write;

/// Width of the drawing in SVG user units.
const SVG_WIDTH: u64 = 800;
/// Height of one level's bar.
const SVG_ROW: u64 = 22;
/// Most levels drawn (a trace tree over `u64` steps has at most 64).
const LEVELS_MAX: u32 = 64;

pub fn dispute(source: &dyn Source, id: &str) -> PageResult {
    let id = integer(id, "job id")?;
    let dispute: Option<DisputeInfo> = lookup(source, verify_method::GET_DISPUTE, &[json!(id)])?;
    let Some(d) = dispute else {
        return ended(source, id);
    };
    let mut body = facts(&[
        ("Job", job_link(d.job)),
        ("Phase", escape(&d.phase.to_string())),
        ("Round", d.round.to_string()),
        (
            "Node",
            format!("level {}, index {}", d.node_level, d.node_index),
        ),
        (
            "Step found",
            d.step.map_or("not yet".into(), |s| s.to_string()),
        ),
        ("Opened at", block_link(d.opened_height)),
        ("Deadline", block_link(d.deadline_height)),
        (
            "Revealed this round",
            format!(
                "defendant {}, claimant {}",
                d.revealed.first().copied().unwrap_or(false),
                d.revealed.get(1).copied().unwrap_or(false)
            ),
        ),
    ]);
    body.push_str("<h2>Parties</h2>");
    body.push_str(&party("Defendant", &d.defendant));
    body.push_str(&party("Claimant", &d.claimant));
    body.push_str("<h2>The range in question, level by level</h2>");
    body.push_str(&ranges_svg(&d));
    if !d.leaves.is_empty() {
        body.push_str("<h2>The arbitrated step's leaves</h2>");
        let leaves: Vec<String> = d.leaves.iter().map(|l| escape(l)).collect();
        body.push_str(&format!(
            "<p>defendant / claimant: {}</p>",
            leaves.join(" / ")
        ));
    }
    Ok(Html(html::layout(&format!("Dispute over job {id}"), &body)))
}

fn party(role: &str, p: &PartyInfo) -> String {
    facts(&[
        (role, account_link(&p.address)),
        (
            "Side",
            if p.is_provider {
                "provider"
            } else {
                "challenger"
            }
            .into(),
        ),
        ("Trace root", escape(&p.root)),
        ("Steps", p.step_count.to_string()),
        ("Bond", pza(&p.bond)),
    ])
}

/// One bar per level from the root down to the current node: each the steps its ancestor
/// covers, `[index << level, (index + 1) << level)` cut to the step count.
pub(crate) fn ranges_svg(d: &DisputeInfo) -> String {
    let steps = d.defendant.step_count.max(d.claimant.step_count).max(1);
    let top = u64::BITS - (steps - 1).leading_zeros();
    let top = top.clamp(d.node_level, LEVELS_MAX);
    let levels = top - d.node_level + 1;
    let height = u64::from(levels) * SVG_ROW + 4;
    let mut svg = format!(
        "<svg id=\"bisection\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_WIDTH}\" \
height=\"{height}\" viewBox=\"0 0 {SVG_WIDTH} {height}\">"
    );
    for (row, level) in (d.node_level..=top).rev().enumerate() {
        let index = d.node_index.checked_shr(level - d.node_level).unwrap_or(0);
        let start = index.checked_shl(level).unwrap_or(u64::MAX).min(steps);
        let end = index
            .saturating_add(1)
            .checked_shl(level)
            .unwrap_or(u64::MAX)
            .min(steps)
            .max(start + 1);
        let x = scale(start, steps);
        let width = scale(end, steps).saturating_sub(x).max(2);
        let y = row as u64 * SVG_ROW + 2;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{width}\" height=\"{}\" class=\"range\"/>\
<text x=\"4\" y=\"{}\" class=\"label\">level {level}: steps {start}–{}</text>",
            SVG_ROW - 4,
            y + SVG_ROW - 8,
            end - 1
        );
    }
    svg.push_str("</svg>");
    svg
}

fn scale(step: u64, steps: u64) -> u64 {
    (u128::from(step) * u128::from(SVG_WIDTH) / u128::from(steps)) as u64
}

/// A dispute no longer in state: the job's outcome says who lost.
fn ended(source: &dyn Source, id: u64) -> PageResult {
    let job: JobInfo = lookup(source, compute_method::GET_JOB, &[json!(id)])?
        .ok_or_else(|| PageError::NotFound(format!("no job {id}")))?;
    let outcome = match job.status.name() {
        "failed" => "The provider's result was proven wrong: its job failed, the client was \
refunded and the provider was slashed (its fraud count is on its page)."
            .to_string(),
        "settled" => {
            "The job settled: no dispute is open (a challenger who lost forfeited its bond)."
                .to_string()
        }
        other => format!("No dispute is open; the job is {}.", escape(other)),
    };
    let provider = job.provider.as_deref().map_or(String::new(), |p| {
        format!("<p>Provider: {}</p>", html::provider_link(p))
    });
    let body = format!(
        "<p id=\"outcome\">{outcome}</p>{provider}<p>{}</p>",
        job_link(id)
    );
    Ok(Html(html::layout(&format!("Dispute over job {id}"), &body)))
}

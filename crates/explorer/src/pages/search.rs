//! One search box: the query's shape says what it is — a height or job id (digits), a block
//! or transaction hash (64 hex digits), an address (`pz1…`), else a model name (or part of
//! one) or an agent's capability tag.

use super::{is_address, is_hash, lookup};
use crate::html::{self, link, url_segment};
use crate::{bounded, Html, PageError, Source};
use piazza_api::{compute_method, method, BlockInfo, JobInfo, ModelInfo, TxInfo};
use serde_json::json;

/// Where a query leads.
pub enum Found {
    /// One page: its path under the explorer's base.
    Page(String),
    /// Several candidates (or the empty search page).
    Choices(Html),
}

/// Most model names listed for a partial match.
const MATCHES_MAX: usize = 20;

pub fn search(source: &dyn Source, query: &str) -> Result<Found, PageError> {
    let q = bounded(query)?;
    if q.is_empty() {
        return Ok(Found::Choices(choices("Search", &[])));
    }
    if q.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = q
            .parse()
            .map_err(|_| PageError::BadRequest(format!("{q} does not fit in 64 bits")))?;
        let block: Option<BlockInfo> = lookup(source, method::GET_BLOCK, &[json!(n)])?;
        let job: Option<JobInfo> = lookup(source, compute_method::GET_JOB, &[json!(n)])?;
        return match (block.is_some(), job.is_some()) {
            (true, true) => Ok(Found::Choices(choices(
                &format!("Search: {n}"),
                &[
                    link(&format!("block/{n}"), &format!("Block {n}")),
                    link(&format!("job/{n}"), &format!("Job {n}")),
                ],
            ))),
            (true, false) => Ok(Found::Page(format!("block/{n}"))),
            (false, true) => Ok(Found::Page(format!("job/{n}"))),
            (false, false) => Err(PageError::NotFound(format!("no block or job {n}"))),
        };
    }
    if is_hash(q) {
        let hash = q.strip_prefix("0x").unwrap_or(q).to_ascii_lowercase();
        if let Some(block) = lookup::<BlockInfo>(source, method::GET_BLOCK, &[json!(hash)])? {
            return Ok(Found::Page(format!("block/{}", block.height)));
        }
        if lookup::<TxInfo>(source, method::GET_TRANSACTION, &[json!(hash)])?.is_some() {
            return Ok(Found::Page(format!("tx/{hash}")));
        }
        return Err(PageError::NotFound(format!(
            "no block or transaction {}",
            html::short(&hash)
        )));
    }
    if is_address(q) {
        return Ok(Found::Page(format!("account/{}", url_segment(q))));
    }
    let models: Vec<ModelInfo> = super::fetch(source, compute_method::GET_MODELS, &[])?;
    if models.iter().any(|m| m.name == q) {
        return Ok(Found::Page(format!("model/{}", url_segment(q))));
    }
    let needle = q.to_lowercase();
    let mut matches: Vec<String> = models
        .iter()
        .filter(|m| m.name.to_lowercase().contains(&needle))
        .take(MATCHES_MAX)
        .map(|m| html::model_link(&m.name))
        .collect();
    // Agents that declare the query as a capability tag.
    matches.extend(
        super::agents::tagged(source, q)
            .into_iter()
            .take(MATCHES_MAX),
    );
    if matches.is_empty() {
        return Err(PageError::NotFound(format!(
            "nothing matches `{}`: not a height, job id, hash, address, model name or agent tag",
            html::short(q)
        )));
    }
    Ok(Found::Choices(choices(
        &format!("Models and agents matching {q}"),
        &matches,
    )))
}

/// A page of links (already HTML); the title is text.
fn choices(title: &str, links: &[String]) -> Html {
    let mut body = format!(
        "<p>Search by block height, block or transaction hash, address (pz1…), job id or \
model name; or <a href=\"{}/semantic\">search models, datasets and agents by meaning</a>.</p>\
<ul class=\"choices\">",
        crate::BASE_PATH
    );
    for l in links {
        body.push_str(&format!("<li>{l}</li>"));
    }
    body.push_str("</ul>");
    Html(html::layout(&clip_title(title), &body))
}

/// Most characters of a query shown in a title (`layout` escapes it).
const TITLE_CHARS_MAX: usize = 80;

fn clip_title(title: &str) -> String {
    title.chars().take(TITLE_CHARS_MAX).collect()
}

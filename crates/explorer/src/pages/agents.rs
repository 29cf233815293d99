//! Agents: records (capabilities, price, stake, endpoints), their reputation and discovery
//! score from paid calls, discovery by capability tag, and each paid call.

use super::{integer, lookup_value, object_facts, object_table};
use crate::html::{self, escape, link};
use crate::{bounded, Html, PageError, PageResult, Source};
use piazza_api::agents_method::{FIND_AGENTS, GET_AGENT, GET_AGENT_CALL};
use serde_json::json;

pub fn agent_link(id: u64, name: &str) -> String {
    link(&format!("agent/{id}"), name)
}

pub fn agent(source: &dyn Source, id: &str) -> PageResult {
    let id = integer(id, "agent id")?;
    let a = lookup_value(source, GET_AGENT, &[json!(id)])?
        .ok_or_else(|| PageError::NotFound(format!("no agent {id}")))?;
    let mut body = object_facts(&a, &["history", "endpoints"]);
    body.push_str("<h2>Reputation (from paid calls)</h2>");
    body.push_str(&object_facts(&a["history"], &[]));
    let endpoints = a["endpoints"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    body.push_str("<h2>Endpoints</h2>");
    body.push_str(&object_table(
        "endpoints",
        endpoints,
        &["protocol", "url"],
        |_, _| None,
    ));
    if let Some(name) = a["share_asset"].as_str() {
        body.push_str(&super::data::shares(source, &format!("agent:{name}"))?);
    }
    let name = a["name"].as_str().unwrap_or("");
    Ok(Html(html::layout(&format!("Agent {name}"), &body)))
}

pub fn call(source: &dyn Source, id: &str) -> PageResult {
    let id = integer(id, "call id")?;
    let c = lookup_value(source, GET_AGENT_CALL, &[json!(id)])?
        .ok_or_else(|| PageError::NotFound(format!("no agent call {id}")))?;
    let mut body = object_facts(&c, &["agent"]);
    if let Some(agent) = c["agent"].as_u64() {
        body.push_str(&format!(
            "<p>Agent: {}</p>",
            link(&format!("agent/{agent}"), &format!("agent {agent}"))
        ));
    }
    Ok(Html(html::layout(&format!("Agent call {id}"), &body)))
}

/// Discovery by capability tag, best score first.
pub fn find(source: &dyn Source, tag: &str) -> PageResult {
    let tag = bounded(tag)?;
    let mut body = format!(
        "<form action=\"{}/agents\" method=\"get\"><input name=\"tag\" value=\"{}\" \
placeholder=\"capability tag\"><button>Find agents</button></form>",
        crate::BASE_PATH,
        escape(tag)
    );
    if !tag.is_empty() {
        let found = source.call(FIND_AGENTS, &[json!(tag)])?;
        let found = found.as_array().map(Vec::as_slice).unwrap_or_default();
        body.push_str(&format!(
            "<h2>{} agents tagged {}</h2>",
            found.len(),
            escape(tag)
        ));
        body.push_str(&object_table(
            "agents",
            found,
            &[
                "name",
                "owner",
                "price",
                "reputation_bps",
                "score",
                "active",
            ],
            |column, item| match column {
                "name" => Some(agent_link(item["id"].as_u64()?, item["name"].as_str()?)),
                _ => None,
            },
        ));
    }
    Ok(Html(html::layout("Agents", &body)))
}

/// The agents a search query names by tag, as links (for the search page).
pub fn tagged(source: &dyn Source, tag: &str) -> Vec<String> {
    super::optional_list(source, FIND_AGENTS, &[json!(tag)])
        .iter()
        .filter_map(|a| Some(agent_link(a["id"].as_u64()?, a["name"].as_str()?)))
        .collect()
}

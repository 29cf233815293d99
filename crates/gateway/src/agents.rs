//! Agents for the ecosystem's clients, rendered from the ledger's agent records
//! (`piazza_getAgent`, shape in `docs/agents.md` §3):
//!
//! - `GET /agents/{agent}/.well-known/agent-card.json`: an A2A agent card (its A2A endpoints as
//!   the card's interfaces, its capability tags as skills);
//! - `GET /agents/{agent}/registration.json`: an ERC-8004 registration file (`registration-v1`:
//!   every endpoint as a service, the ledger's agents module as the registry);
//! - `GET /v1/agents/search?q=...&limit=...` (and the MCP tool `search_agents`): discovery by
//!   meaning. The query and the active agents' descriptions are embedded with the network's
//!   MiniLM (paid embedding requests charged to the caller's API key; a description's vector is
//!   kept, keyed by its hash, so it is paid once), and each agent is ranked by
//!   `rank_bps = (3 × relevance_bps + score_bps / 3) / 4`, where `relevance_bps` is the cosine
//!   similarity of the two vectors in basis points (negative counts as 0) and `score_bps` the
//!   ledger's discovery score of stake and reputation (0..=30 000): meaning first, standing on
//!   the chain next.
//!
//! `{agent}` is an agent's id or its name. Cards are public (no API key); search is paid.
//! Records and rendered documents past their byte limits are refused, never truncated.

use crate::errors::ApiError;
use crate::server::Gateway;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use piazza_primitives::Address;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The largest agent record (its JSON) the gateway renders, in bytes. The ledger's own bounds
/// keep a record under 4 KiB; more means the node answered something else.
pub const AGENT_RECORD_BYTES_MAX: usize = 16 * 1024;
/// The largest card or registration file the gateway serves, in bytes.
pub const AGENT_CARD_BYTES_MAX: usize = 32 * 1024;
/// Agents the gateway reads to find a name or rank by meaning (ids `0..AGENTS_SCANNED_MAX`).
pub const AGENTS_SCANNED_MAX: u64 = 1024;
/// Agents one search returns at most.
pub const AGENTS_SEARCH_LIMIT_MAX: usize = 50;
/// The longest search query, in bytes.
pub const AGENTS_QUERY_BYTES_MAX: usize = 1024;
/// The model that embeds queries and descriptions: the network's MiniLM.
pub const AGENTS_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";
/// The A2A protocol version the cards state.
pub const A2A_PROTOCOL_VERSION: &str = "0.3.0";
/// ERC-8004's registration file type.
pub const ERC8004_REGISTRATION_TYPE: &str =
    "https://eips.ethereum.org/EIPS/eip-8004#registration-v1";

/// Why a record cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the agent's record is {bytes} bytes, more than {max}")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("the rendered document is {bytes} bytes, more than {max}")]
    DocumentTooLarge { bytes: usize, max: usize },
    #[error("the agent's record is malformed: {0}")]
    Malformed(String),
    #[error("the agent names no A2A endpoint")]
    NoA2aEndpoint,
}

/// An agent record as `piazza_getAgent` answers it (the fields the documents use).
#[derive(Debug, Clone, Deserialize)]
pub struct AgentRecord {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub description: String,
    pub endpoints: Vec<AgentEndpoint>,
    pub tags: Vec<String>,
    pub price: String,
    pub stake: String,
    pub active: bool,
    pub reputation_bps: String,
    pub score: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AgentEndpoint {
    pub protocol: String,
    pub url: String,
}

impl AgentRecord {
    /// The record from the node's JSON, refused past [`AGENT_RECORD_BYTES_MAX`].
    pub fn from_json(value: &Value) -> Result<AgentRecord, RenderError> {
        let bytes = value.to_string().len();
        if bytes > AGENT_RECORD_BYTES_MAX {
            return Err(RenderError::RecordTooLarge {
                bytes,
                max: AGENT_RECORD_BYTES_MAX,
            });
        }
        serde_json::from_value(value.clone()).map_err(|e| RenderError::Malformed(e.to_string()))
    }

    /// The ledger's discovery score, in basis points.
    pub fn score_bps(&self) -> u64 {
        self.score.parse().unwrap_or(0)
    }
}

fn bounded(document: Value) -> Result<Value, RenderError> {
    let bytes = document.to_string().len();
    if bytes > AGENT_CARD_BYTES_MAX {
        return Err(RenderError::DocumentTooLarge {
            bytes,
            max: AGENT_CARD_BYTES_MAX,
        });
    }
    Ok(document)
}

/// The A2A agent card: the first A2A endpoint is the card's `url` (JSON-RPC), the others
/// `additionalInterfaces` (and all of them `supportedInterfaces`, A2A 1.0's field); each
/// capability tag a skill. The price and owner ride in the description and `provider`.
pub fn agent_card(record: &AgentRecord) -> Result<Value, RenderError> {
    let a2a: Vec<&str> = record
        .endpoints
        .iter()
        .filter(|e| e.protocol == "a2a")
        .map(|e| e.url.as_str())
        .collect();
    let Some(main) = a2a.first() else {
        return Err(RenderError::NoA2aEndpoint);
    };
    let skills: Vec<Value> = record
        .tags
        .iter()
        .map(|tag| {
            json!({
                "id": tag,
                "name": tag,
                "description": format!("{} ({tag})", record.description),
                "tags": [tag],
            })
        })
        .collect();
    bounded(json!({
        "protocolVersion": A2A_PROTOCOL_VERSION,
        "name": record.name,
        "description": record.description,
        "url": main,
        "preferredTransport": "JSONRPC",
        "additionalInterfaces": a2a[1..].iter()
            .map(|url| json!({"url": url, "transport": "JSONRPC"})).collect::<Vec<_>>(),
        "supportedInterfaces": a2a.iter()
            .map(|url| json!({"url": url, "protocolBinding": "JSONRPC", "protocolVersion": A2A_PROTOCOL_VERSION}))
            .collect::<Vec<_>>(),
        "provider": {"organization": record.owner, "url": main},
        "version": format!("piazza-agent-{}", record.id),
        "capabilities": {"streaming": false, "pushNotifications": false},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": skills,
    }))
}

/// The ERC-8004 registration file: every endpoint as a service (an A2A one pointing at its
/// card), the agent's id in the ledger's agents module as its registration, and the price,
/// stake, reputation and score the chain records under `piazza`.
pub fn registration_file(record: &AgentRecord, chain_id: &str) -> Result<Value, RenderError> {
    let services: Vec<Value> = record
        .endpoints
        .iter()
        .map(|e| match e.protocol.as_str() {
            "a2a" => json!({
                "name": "A2A",
                "endpoint": format!("{}/.well-known/agent-card.json", e.url.trim_end_matches('/')),
                "version": A2A_PROTOCOL_VERSION,
            }),
            "mcp" => json!({"name": "MCP", "endpoint": e.url, "version": "2025-06-18"}),
            _ => json!({"name": "web", "endpoint": e.url}),
        })
        .collect();
    bounded(json!({
        "type": ERC8004_REGISTRATION_TYPE,
        "name": record.name,
        "description": record.description,
        "image": "",
        "services": services,
        "active": record.active,
        "x402Support": record.endpoints.iter().any(|e| e.protocol == "http"),
        "registrations": [{
            "agentId": record.id,
            "agentRegistry": format!("piazza:{chain_id}:{}", Address::module("agents")),
        }],
        "supportedTrust": ["reputation", "crypto-economic"],
        "piazza": {
            "owner": record.owner,
            "tags": record.tags,
            "price": record.price,
            "stake": record.stake,
            "reputation_bps": record.reputation_bps,
            "score": record.score,
        },
    }))
}

/// An agent's rank for a query: `(3 × relevance_bps + score_bps / 3) / 4`, the relevance the
/// cosine similarity in basis points (negative counts as 0, at most 10 000), the score the
/// ledger's (at most 30 000).
pub fn rank_bps(similarity: f32, score_bps: u64) -> u64 {
    let relevance = if similarity.is_finite() {
        (similarity.clamp(0.0, 1.0) * 10_000.0).round() as u64
    } else {
        0
    };
    (3 * relevance + score_bps.min(30_000) / 3) / 4
}

/// The cosine similarity of two vectors (0 when either is zero or their lengths differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        aa += f64::from(*x) * f64::from(*x);
        bb += f64::from(*y) * f64::from(*y);
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (dot / (aa.sqrt() * bb.sqrt())) as f32
}

fn render_error(e: RenderError) -> ApiError {
    match e {
        RenderError::NoA2aEndpoint => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("no_a2a_endpoint"),
            e.to_string(),
        ),
        RenderError::RecordTooLarge { .. } | RenderError::DocumentTooLarge { .. } => {
            ApiError::upstream(e.to_string())
        }
        RenderError::Malformed(_) => ApiError::upstream(e.to_string()),
    }
}

fn unknown_agent(agent: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("unknown_agent"),
        format!("No agent `{agent}` on this chain"),
    )
}

async fn record_by_id(gw: &Gateway, id: u64) -> Result<Option<Value>, ApiError> {
    let value: Value = gw
        .market
        .client
        .call("piazza_getAgent", json!([id]))
        .await
        .map_err(|e| ApiError::upstream(format!("the node: {e}")))?;
    Ok((!value.is_null()).then_some(value))
}

/// Every agent record, by id from 0 until the first unknown one (at most
/// [`AGENTS_SCANNED_MAX`]).
async fn all_records(gw: &Gateway) -> Result<Vec<AgentRecord>, ApiError> {
    let mut records = Vec::new();
    for id in 0..AGENTS_SCANNED_MAX {
        let Some(value) = record_by_id(gw, id).await? else {
            break;
        };
        records.push(AgentRecord::from_json(&value).map_err(render_error)?);
    }
    Ok(records)
}

/// The record `agent` names: an id, else a name.
async fn resolve(gw: &Gateway, agent: &str) -> Result<AgentRecord, ApiError> {
    if let Ok(id) = agent.parse::<u64>() {
        let value = record_by_id(gw, id)
            .await?
            .ok_or_else(|| unknown_agent(agent))?;
        return AgentRecord::from_json(&value).map_err(render_error);
    }
    if agent.len() > piazza_ledger::agents::NAME_BYTES_MAX {
        return Err(unknown_agent(agent));
    }
    let value: Value = gw
        .market
        .client
        .agent_by_name(agent)
        .await
        .map_err(|e| ApiError::upstream(format!("the node: {e}")))?;
    if value.is_null() {
        return Err(unknown_agent(agent));
    }
    AgentRecord::from_json(&value).map_err(render_error)
}

pub(crate) async fn card(
    State(gw): State<Arc<Gateway>>,
    Path(agent): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = resolve(&gw, &agent).await?;
    Ok(Json(agent_card(&record).map_err(render_error)?))
}

pub(crate) async fn registration(
    State(gw): State<Arc<Gateway>>,
    Path(agent): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = resolve(&gw, &agent).await?;
    let chain_id = gw
        .market
        .client
        .status()
        .await
        .map_err(|e| ApiError::upstream(format!("the node: {e}")))?
        .chain_id;
    Ok(Json(
        registration_file(&record, &chain_id).map_err(render_error)?,
    ))
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    q: String,
    limit: Option<usize>,
}

pub(crate) async fn search_route(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(search(&gw, &headers, &query.q, query.limit).await?))
}

/// Description vectors already paid for, keyed by BLAKE3 of (model, description); a full
/// memory keeps what it has and the next search pays for the rest again.
fn description_vectors() -> &'static Mutex<BTreeMap<[u8; 32], Vec<f32>>> {
    static VECTORS: OnceLock<Mutex<BTreeMap<[u8; 32], Vec<f32>>>> = OnceLock::new();
    VECTORS.get_or_init(Default::default)
}

fn description_key(description: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(AGENTS_EMBEDDING_MODEL.as_bytes());
    hasher.update(&[0]);
    hasher.update(description.as_bytes());
    *hasher.finalize().as_bytes()
}

/// The active agents nearest in meaning to `query`, best rank first (see the module's doc).
pub(crate) async fn search(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    query: &str,
    limit: Option<usize>,
) -> Result<Value, ApiError> {
    // The key is checked before anything else.
    drop(gw.admit(headers).await?);
    if query.trim().is_empty() || query.len() > AGENTS_QUERY_BYTES_MAX {
        return Err(ApiError::invalid(
            Some("q"),
            format!("`q` must hold 1..={AGENTS_QUERY_BYTES_MAX} bytes of text"),
        ));
    }
    let limit = limit.unwrap_or(10).clamp(1, AGENTS_SEARCH_LIMIT_MAX);
    let records: Vec<AgentRecord> = all_records(gw)
        .await?
        .into_iter()
        .filter(|r| r.active)
        .collect();
    let known: BTreeMap<[u8; 32], Vec<f32>> = {
        let vectors = description_vectors()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        records
            .iter()
            .filter_map(|r| {
                let key = description_key(&r.description);
                vectors.get(&key).map(|v| (key, v.clone()))
            })
            .collect()
    };
    let mut missing: Vec<&str> = records
        .iter()
        .map(|r| r.description.as_str())
        .filter(|d| !known.contains_key(&description_key(d)))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    let mut texts = vec![query];
    texts.extend(missing.iter().copied());
    let mut vectors = Vec::with_capacity(texts.len());
    for batch in texts.chunks(gw.limits.batch_inputs_max.max(1)) {
        vectors.extend(crate::mcp::embed(gw, headers, AGENTS_EMBEDDING_MODEL, batch).await?);
    }
    let query_vector = vectors.first().cloned().unwrap_or_default();
    let mut known = known;
    {
        let mut kept = description_vectors()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (description, vector) in missing.iter().zip(vectors.iter().skip(1)) {
            let key = description_key(description);
            known.insert(key, vector.clone());
            if (kept.len() as u64) < AGENTS_SCANNED_MAX {
                kept.insert(key, vector.clone());
            }
        }
    }
    let mut ranked: Vec<(u64, f32, &AgentRecord)> = records
        .iter()
        .map(|r| {
            let similarity = known
                .get(&description_key(&r.description))
                .map(|v| cosine(&query_vector, v))
                .unwrap_or(0.0);
            (rank_bps(similarity, r.score_bps()), similarity, r)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.id.cmp(&b.2.id)));
    let agents: Vec<Value> = ranked
        .into_iter()
        .take(limit)
        .map(|(rank, similarity, r)| {
            json!({
                "id": r.id,
                "name": r.name,
                "description": r.description,
                "tags": r.tags,
                "endpoints": r.endpoints.iter()
                    .map(|e| json!({"protocol": e.protocol, "url": e.url})).collect::<Vec<_>>(),
                "price": r.price,
                "score": r.score,
                "similarity": similarity,
                "rank_bps": rank,
            })
        })
        .collect();
    Ok(json!({"object": "list", "query": query, "model": AGENTS_EMBEDDING_MODEL, "data": agents}))
}

/// The MCP tool `call_agent`: POSTs `body` to an agent's HTTP endpoint and, when it answers
/// `402`, pays its x402 price from the caller's key: at most `max_price`, signed by the key's
/// paying key, reserved against the key's spend limit before it is sent, and charged to the
/// key only when the agent's `PAYMENT-RESPONSE` says it settled.
pub(crate) async fn call_agent(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    args: &serde_json::Map<String, Value>,
) -> Result<Value, ApiError> {
    let caller = gw.admit(headers).await?;
    let agent = match args.get("agent") {
        Some(Value::String(name)) => name.clone(),
        Some(Value::Number(id)) => id.to_string(),
        _ => return Err(ApiError::invalid(Some("agent"), "`agent`: a name or an id")),
    };
    let max_price: piazza_primitives::Amount = args
        .get("max_price")
        .and_then(Value::as_str)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| ApiError::invalid(Some("max_price"), "`max_price`: PZA, e.g. \"0.5\""))?;
    let body = args.get("body").cloned().unwrap_or_else(|| json!({}));
    let record = resolve(gw, &agent).await?;
    let url = record
        .endpoints
        .iter()
        .find(|e| e.protocol == "http")
        .map(|e| e.url.clone())
        .ok_or_else(|| {
            ApiError::invalid(
                Some("agent"),
                format!("agent `{agent}` has no HTTP endpoint"),
            )
        })?;
    let client = &gw.market.client;
    let agent_error =
        |e: piazza_client::ClientError| ApiError::upstream(format!("agent `{agent}`: {e}"));
    let first = client
        .post_to_agent(&url, &body, None)
        .await
        .map_err(agent_error)?;
    let (answer, paid) = match (first.status, first.payment_required.as_deref()) {
        (402, Some(header)) => {
            let required: crate::x402::PaymentRequired = crate::x402::decode_header(header)
                .ok_or_else(|| {
                    ApiError::upstream(format!("agent `{agent}`: a 402 without x402 requirements"))
                })?;
            let chain_id = client
                .status()
                .await
                .map_err(|e| ApiError::upstream(format!("the node: {e}")))?
                .chain_id;
            let signer = gw.signer(&caller.key.signer).await?;
            let (payment, amount) = crate::x402::pay_for(
                &required,
                signer.key(),
                &chain_id,
                max_price,
                format!("{url}\n{body}").as_bytes(),
            )
            .map_err(|e| ApiError::invalid(Some("max_price"), e))?;
            let held = gw.reserve(&caller.key, amount)?;
            let header = crate::x402::encode_header(&payment);
            let answer = client
                .post_to_agent(&url, &body, Some(&header))
                .await
                .map_err(agent_error)?;
            let settled: Option<crate::x402::SettleResponse> = answer
                .payment_response
                .as_deref()
                .and_then(crate::x402::decode_header);
            match settled {
                Some(settled) if settled.success => {
                    held.settle(amount);
                    (answer, Some((amount, settled.transaction)))
                }
                // Not settled: the reservation is given back when `held` drops.
                _ => (answer, None),
            }
        }
        _ => (first, None),
    };
    let text = String::from_utf8_lossy(&answer.body).to_string();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(json!({
        "agent": record.name,
        "status": answer.status,
        "answer": body,
        "paid": paid.as_ref().map(|(amount, _)| amount.base_units().to_string()),
        "transaction": paid.map(|(_, transaction)| transaction),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(description: &str, endpoints: Value) -> Value {
        json!({
            "id": 3, "owner": "pz1owner", "name": "ranker", "description": description,
            "endpoints": endpoints, "tags": ["embedding", "ranking"], "price": "1000",
            "stake": "10000000", "share_asset": null, "active": true, "registered_height": 5,
            "history": {"completed": 0, "timeouts": 0, "paid": "0", "rated_paid": "0", "rating_points": "0"},
            "reputation_bps": "0", "score": "99",
        })
    }

    fn check(value: Value) -> Result<(Value, Value), RenderError> {
        let record = AgentRecord::from_json(&value)?;
        Ok((
            agent_card(&record)?,
            registration_file(&record, "piazza-test")?,
        ))
    }

    #[test]
    fn a_record_renders_as_an_a2a_card_and_an_erc8004_file() {
        let endpoints = json!([
            {"protocol": "a2a", "url": "https://a.example/a2a"},
            {"protocol": "mcp", "url": "https://a.example/mcp"},
            {"protocol": "http", "url": "https://a.example/rank"},
        ]);
        let (card, file) = check(record("Ranks documents", endpoints)).unwrap();
        assert_eq!(card["url"], "https://a.example/a2a");
        assert_eq!(card["supportedInterfaces"][0]["protocolBinding"], "JSONRPC");
        assert_eq!(card["skills"][1]["id"], "ranking");
        assert_eq!(file["type"], ERC8004_REGISTRATION_TYPE);
        assert_eq!(
            file["services"][0]["endpoint"],
            "https://a.example/a2a/.well-known/agent-card.json"
        );
        assert_eq!(file["services"][1]["name"], "MCP");
        assert_eq!(file["x402Support"], true);
        assert_eq!(file["registrations"][0]["agentId"], 3);
        let registry = file["registrations"][0]["agentRegistry"].as_str().unwrap();
        assert!(registry.starts_with("piazza:piazza-test:pz1"), "{registry}");
    }

    #[test]
    fn oversized_or_malformed_records_and_cards_are_refused() {
        let a2a = json!([{"protocol": "a2a", "url": "https://a.example"}]);
        let huge = "x".repeat(AGENT_RECORD_BYTES_MAX);
        assert!(matches!(
            check(record(&huge, a2a.clone())),
            Err(RenderError::RecordTooLarge { .. })
        ));
        // Under the record's bound, but each of the 8 skills repeats the description.
        let long = "y".repeat(AGENT_RECORD_BYTES_MAX / 2);
        let mut value = record(&long, a2a.clone());
        value["tags"] = json!(["a", "b", "c", "d", "e", "f", "g", "h"]);
        let record_ok = AgentRecord::from_json(&value).unwrap();
        assert!(matches!(
            agent_card(&record_ok),
            Err(RenderError::DocumentTooLarge { .. })
        ));
        let mut bad = record("d", a2a);
        bad["tags"] = json!("not a list");
        assert!(matches!(check(bad), Err(RenderError::Malformed(_))));
        let http_only = record(
            "d",
            json!([{"protocol": "http", "url": "https://a.example"}]),
        );
        assert_eq!(
            agent_card(&AgentRecord::from_json(&http_only).unwrap()),
            Err(RenderError::NoA2aEndpoint)
        );
    }

    #[test]
    fn meaning_ranks_first_and_standing_breaks_near_ties() {
        assert_eq!(rank_bps(1.0, 0), 7_500);
        assert_eq!(rank_bps(-0.5, 30_000), 2_500);
        assert_eq!(rank_bps(f32::NAN, 0), 0);
        // A much closer description beats the highest possible score...
        assert!(rank_bps(0.8, 0) > rank_bps(0.4, 30_000));
        // ...and between equally close ones the higher score wins.
        assert!(rank_bps(0.5, 20_000) > rank_bps(0.5, 100));
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
    }
}

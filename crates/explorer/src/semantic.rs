//! Semantic search over models, datasets and agents: each record's text (model name, kind and
//! architecture; dataset fields; agent name, description and tags) is embedded with the
//! network's own embedding model behind [`Embed`], cached by (kind, id, text hash), and ranked
//! by cosine similarity to the embedded query.
//!
//! The crate stays independent of the engines: whoever mounts the explorer supplies the
//! embedder, or the reason there is none ([`Embedding::Unavailable`]), which the page shows.

use crate::html::{self, escape, link, model_link};
use crate::pages::{fetch, lookup_value};
use crate::{bounded, Html, PageError, PageResult, Source};
use piazza_api::agents_method::GET_AGENT;
use piazza_api::economy_method::GET_DATASET;
use piazza_api::{compute_method, ModelInfo};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Sentence embeddings of texts, in order; unit length is not assumed.
pub trait Embed: Send + Sync + 'static {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
    /// The model's weights commitment (hex), when known: the page compares it with the chain's
    /// record of [`SEMANTIC_MODEL`].
    fn weights_commitment(&self) -> Option<String> {
        None
    }
}

/// The embedder the explorer searches with, or why there is none.
#[derive(Clone)]
pub enum Embedding {
    Available(Arc<dyn Embed>),
    Unavailable(String),
}

/// The chain's name for the model whose embeddings rank results.
pub const SEMANTIC_MODEL: &str = "minilm";
/// Most results listed.
pub const SEMANTIC_RESULTS_MAX: usize = 10;
/// Most records read from the chain per request (all kinds together).
pub const RECORDS_SCANNED_MAX: usize = 512;
/// Most records embedded per request (cache misses); the rest wait for a later request.
pub const RECORDS_EMBEDDED_MAX: usize = 64;
/// Most cached record vectors; a full cache is emptied before the next insert.
pub const CACHE_ENTRIES_MAX: usize = 4096;
/// Longest record text embedded, in bytes (cut at a character boundary).
pub const RECORD_TEXT_BYTES_MAX: usize = 384;

/// One searchable record.
struct Record {
    kind: &'static str,
    id: String,
    name: String,
    path: String,
    text: String,
}

/// A cached vector's key: the record's kind, id and the hash of its text.
type CacheKey = (&'static str, String, u64);

/// The embedder and its bounded cache of record vectors.
pub(crate) struct Semantic {
    embedding: Embedding,
    cache: Mutex<HashMap<CacheKey, Vec<f32>>>,
}

/// Records ranked by cosine to the query, best first, and how many are still unembedded.
struct Ranked<'r> {
    scored: Vec<(f32, &'r Record)>,
    waiting: usize,
}

pub(crate) type SharedSemantic = Arc<(Arc<dyn Source>, Semantic)>;

impl Semantic {
    pub(crate) fn new(embedding: Embedding) -> Self {
        Semantic {
            embedding,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

fn text_hash(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn clip(text: &str, bytes_max: usize) -> String {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn words(value: &Value, fields: &[&str]) -> String {
    let mut out = Vec::new();
    for field in fields {
        match &value[*field] {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => {
                out.extend(items.iter().filter_map(|i| i.as_str()).map(String::from))
            }
            _ => {}
        }
    }
    out.join(". ")
}

/// Records with ids 0, 1, … until the first id nothing has, at most `budget` of them.
fn numbered(
    source: &dyn Source,
    method: &str,
    kind: &'static str,
    fields: &[&str],
    budget: usize,
) -> Result<Vec<Record>, PageError> {
    let mut records = Vec::new();
    for id in 0..budget as u64 {
        // A node without the module has no such method: no records of this kind.
        let Ok(found) = lookup_value(source, method, &[json!(id)]) else {
            break;
        };
        let Some(value) = found else { break };
        let name = value["name"]
            .as_str()
            .map_or_else(|| format!("{kind} {id}"), String::from);
        records.push(Record {
            kind,
            id: id.to_string(),
            name: name.clone(),
            path: format!("{kind}/{id}"),
            text: clip(
                &format!("{name}. {}", words(&value, fields)),
                RECORD_TEXT_BYTES_MAX,
            ),
        });
    }
    Ok(records)
}

fn records(source: &dyn Source, models: &[ModelInfo]) -> Result<Vec<Record>, PageError> {
    let mut out: Vec<Record> = models
        .iter()
        .take(RECORDS_SCANNED_MAX)
        .map(|m| Record {
            kind: "model",
            id: m.name.clone(),
            text: clip(
                &format!("{}. {} model, {}", m.name, m.kind, m.architecture),
                RECORD_TEXT_BYTES_MAX,
            ),
            path: String::new(),
            name: m.name.clone(),
        })
        .collect();
    // Datasets may take half of what models leave, agents the rest.
    let kinds: [(&str, &'static str, &[&str], usize); 2] = [
        (
            GET_DATASET,
            "dataset",
            &["description", "schema", "license"],
            2,
        ),
        (
            GET_AGENT,
            "agent",
            &["description", "tags", "capabilities"],
            1,
        ),
    ];
    for (method, kind, fields, share) in kinds {
        let budget = (RECORDS_SCANNED_MAX - out.len()) / share;
        out.extend(numbered(source, method, kind, fields, budget)?);
    }
    Ok(out)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator > 0.0 {
        dot / denominator
    } else {
        0.0
    }
}

fn form(query: &str) -> String {
    format!(
        "<form action=\"{}/semantic\" method=\"get\"><input name=\"q\" value=\"{}\" \
placeholder=\"describe a model, dataset or agent\"><button>Search by meaning</button></form>",
        crate::BASE_PATH,
        escape(query)
    )
}

/// The semantic search page: the form, and for a query the records closest in meaning.
pub(crate) fn search(source: &dyn Source, semantic: &Semantic, query: &str) -> PageResult {
    let query = bounded(query)?;
    let embed = match &semantic.embedding {
        Embedding::Available(embed) => embed,
        Embedding::Unavailable(why) => {
            return Err(PageError::Unavailable(format!(
                "Semantic search is unavailable: {why}. Search by height, hash, address, job id \
or model name still works."
            )))
        }
    };
    let mut body = form(query);
    if query.is_empty() {
        return Ok(Html(html::layout("Semantic search", &body)));
    }
    let models: Vec<ModelInfo> = fetch(source, compute_method::GET_MODELS, &[])?;
    let records = records(source, &models)?;
    body.push_str(&commitment_note(&models, embed.as_ref()));
    let Ranked { scored, waiting } = rank(semantic, embed.as_ref(), query, &records)?;
    if waiting > 0 {
        body.push_str(&format!(
            "<p>{waiting} records are not embedded yet (at most {RECORDS_EMBEDDED_MAX} per \
request); search again to include them.</p>"
        ));
    }
    let rows: Vec<Vec<String>> = scored
        .iter()
        .take(SEMANTIC_RESULTS_MAX)
        .map(|(score, r)| {
            let target = if r.kind == "model" {
                model_link(&r.name)
            } else {
                link(&r.path, &r.name)
            };
            vec![escape(r.kind), target, format!("{score:.3}")]
        })
        .collect();
    body.push_str(&html::table("semantic", &["Kind", "Name", "Score"], &rows));
    let title: String = format!("Closest in meaning to {query}")
        .chars()
        .take(80)
        .collect();
    Ok(Html(html::layout(&title, &body)))
}

fn rank<'r>(
    semantic: &Semantic,
    embed: &dyn Embed,
    query: &str,
    records: &'r [Record],
) -> Result<Ranked<'r>, PageError> {
    let keys: Vec<_> = records
        .iter()
        .map(|r| (r.kind, r.id.clone(), text_hash(&r.text)))
        .collect();
    let cached: Vec<Option<Vec<f32>>> = {
        let cache = semantic.cache.lock().map_err(|_| poisoned())?;
        keys.iter().map(|k| cache.get(k).cloned()).collect()
    };
    let missing: Vec<usize> = (0..records.len())
        .filter(|&i| cached[i].is_none())
        .collect();
    let now: Vec<usize> = missing.iter().copied().take(RECORDS_EMBEDDED_MAX).collect();
    let mut texts: Vec<String> = now.iter().map(|&i| records[i].text.clone()).collect();
    texts.push(query.to_string());
    let mut vectors = embed
        .embed(&texts)
        .map_err(|e| PageError::Unavailable(format!("the embedding model failed: {e}")))?;
    if vectors.len() != texts.len() {
        return Err(PageError::Unavailable(format!(
            "the embedding model answered {} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    let query_vector = vectors.pop().unwrap_or_default();
    let mut all = cached;
    {
        let mut cache = semantic.cache.lock().map_err(|_| poisoned())?;
        for (&i, vector) in now.iter().zip(vectors) {
            if cache.len() >= CACHE_ENTRIES_MAX {
                cache.clear();
            }
            cache.insert(keys[i].clone(), vector.clone());
            all[i] = Some(vector);
        }
    }
    let mut scored: Vec<(f32, &Record)> = all
        .iter()
        .zip(records)
        .filter_map(|(v, r)| Some((cosine(v.as_ref()?, &query_vector), r)))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(Ranked {
        scored,
        waiting: missing.len() - now.len(),
    })
}

fn poisoned() -> PageError {
    PageError::Unavailable("the embedding cache is unusable after a failed request".into())
}

/// A warning when the embedder's weights are not the chain's record of [`SEMANTIC_MODEL`].
fn commitment_note(models: &[ModelInfo], embed: &dyn Embed) -> String {
    let Some(local) = embed.weights_commitment() else {
        return String::new();
    };
    match models.iter().find(|m| m.name == SEMANTIC_MODEL) {
        Some(m) if m.weights_commitment == local => String::new(),
        Some(_) => format!(
            "<p class=\"error\">The embedding model here is not the chain's {SEMANTIC_MODEL} \
(weights commitment {} differs); scores are this server's.</p>",
            html::short(&local)
        ),
        None => String::new(),
    }
}

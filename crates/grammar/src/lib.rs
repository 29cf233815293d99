//! Constrained decoding that stays verifiable: a bounded JSON Schema subset compiled into a
//! deterministic automaton over bytes, and the token mask it induces on a vocabulary.
//!
//! A constraint ([`Constraint`]: a JSON schema's bytes, or "any JSON object") travels inside
//! the job's input ([`Constraint::wrap`]), so the chain's input hash, the provider, an auditor
//! and the ledger's re-execution all see the same bytes, compile the same automaton and apply
//! the same mask to each token choice (docs/grammar.md).
//!
//! Invariants:
//! - Pure and deterministic: the allowed continuations of a state depend only on the schema
//!   bytes and the bytes so far (no hash-map order, no clock).
//! - Every byte string the automaton accepts as complete is JSON that `serde_json` parses and
//!   that validates against the schema (compact: no whitespace outside strings; properties in
//!   the schema's order).
//! - Bounded: schema bytes, nesting depth, node count, properties, `enum` values, string
//!   characters, number digits, array items and the number of live configurations all have
//!   named limits; an unsupported or oversized schema is a [`SchemaError`], never a panic.
//! - Termination: [`Grammar::min_bytes_to_complete`] is exact, so a mask that keeps it within
//!   the tokens left ([`TokenMask`]) always ends with a complete value.
//!
//! ```
//! use piazza_grammar::Grammar;
//! let grammar = Grammar::from_schema(br#"{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}"#).unwrap();
//! let state = grammar.allowed(&grammar.start(), br#"{"ok":tr"#).unwrap();
//! assert!(!grammar.is_complete(&state));
//! assert_eq!(grammar.min_bytes_to_complete(&state), 3);
//! assert!(grammar.allowed(&state, b"ue} ").is_none()); // no whitespace outside strings
//! assert!(grammar.is_complete(&grammar.allowed(&state, b"ue}").unwrap()));
//! ```

mod automaton;
mod constraint;
mod mask;
mod schema;

pub use automaton::State;
pub use constraint::{Constraint, ConstraintError, CONSTRAINT_MAGIC};
pub use mask::{MaskError, TokenMask, Vocabulary};

/// Largest schema accepted, in bytes.
pub const SCHEMA_BYTES_MAX: usize = 16 * 1024;
/// Deepest nesting of schemas (objects, arrays, `anyOf`) below the root.
pub const DEPTH_MAX: usize = 8;
/// Most automaton nodes one schema compiles to.
pub const NODES_MAX: usize = 512;
/// Most properties of one object.
pub const PROPERTIES_MAX: usize = 64;
/// Most values of one `enum` (and schemas of one `anyOf`).
pub const ENUM_VALUES_MAX: usize = 32;
/// Most characters of a string without `maxLength`.
pub const STRING_CHARS_DEFAULT: u32 = 256;
/// Largest `maxLength` accepted.
pub const STRING_CHARS_MAX: u32 = 4096;
/// Most items of an array without `maxItems`.
pub const ARRAY_ITEMS_DEFAULT: u32 = 16;
/// Largest `maxItems` accepted.
pub const ARRAY_ITEMS_MAX: u32 = 256;
/// Most digits of a number's integer part, and of its fraction.
pub const NUMBER_DIGITS_MAX: u32 = 15;
/// Most configurations a state holds (the ways the bytes so far may be read); a schema whose
/// worst case exceeds it (many `anyOf` alternatives sharing prefixes) is refused.
pub const CONFIGS_MAX: usize = 64;
/// Nesting of the generic JSON object (`json_object`): values inside it nest this deep.
pub const ANY_JSON_DEPTH: usize = 2;

/// Why a schema was refused. The message names the place (a JSON pointer) and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error("schema of {bytes} bytes exceeds {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("schema is not JSON: {0}")]
    Json(String),
    #[error("schema nests deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("schema compiles to more than {max} nodes")]
    TooManyNodes { max: usize },
    #[error(
        "schema could be read more than {max} ways at once (too many similar anyOf alternatives)"
    )]
    TooWide { max: usize },
    #[error("schema at `{path}`: `{keyword}` is not supported")]
    Unsupported { path: String, keyword: String },
    #[error("schema at `{path}`: {detail}")]
    Invalid { path: String, detail: String },
}

/// A compiled constraint: the automaton of one schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grammar {
    nodes: schema::Nodes,
}

impl Grammar {
    /// Compile a JSON schema given as JSON text (at most [`SCHEMA_BYTES_MAX`] bytes).
    pub fn from_schema(bytes: &[u8]) -> Result<Grammar, SchemaError> {
        let json = schema::parse(bytes)?;
        let mut builder = schema::Builder::new();
        let root = builder.schema(&json, "", 0)?;
        Ok(Grammar {
            nodes: builder.finish(root)?,
        })
    }

    /// Any JSON object (OpenAI's `json_object`), values nested at most [`ANY_JSON_DEPTH`] deep.
    pub fn any_object() -> Grammar {
        let mut builder = schema::Builder::new();
        let nodes = builder
            .any_object(ANY_JSON_DEPTH)
            .and_then(|root| builder.finish(root));
        match nodes {
            Ok(nodes) => Grammar { nodes },
            // Fixed sizes, far inside the limits (a unit test builds it).
            Err(e) => unreachable!("the generic JSON grammar is within its limits: {e}"),
        }
    }

    /// The state before any byte.
    pub fn start(&self) -> State {
        self.nodes.start()
    }

    /// The state after `bytes` from `state`, or `None` when they cannot continue a valid value.
    pub fn allowed(&self, state: &State, bytes: &[u8]) -> Option<State> {
        self.nodes.advance(state, bytes)
    }

    /// Whether the bytes that led to `state` are a whole valid value.
    pub fn is_complete(&self, state: &State) -> bool {
        self.nodes.is_complete(state)
    }

    /// Every byte of the schema's fixed texts (property keys, `enum`/`const` values).
    pub fn literal_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.nodes.literal_bytes()
    }

    /// The fewest bytes that make the value complete from `state` (0 when complete).
    pub fn min_bytes_to_complete(&self, state: &State) -> u64 {
        self.nodes.min_bytes_to_complete(state)
    }
}

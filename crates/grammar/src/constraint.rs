//! A constraint as it travels: a header in front of the job's input bytes.
//!
//! ```text
//! constrained input = MAGIC kind 0x0A length 0x0A schema 0x0A input
//! MAGIC  = 0x1E "piazza-constraint/1" 0x0A
//! kind   = "json_schema" | "json_object"
//! length = the schema's byte length in decimal, no leading zero ("0" for json_object),
//!          at most SCHEMA_BYTES_MAX
//! schema = JSON text of exactly `length` bytes
//! input  = the job's input as without a constraint (plain text or a chat input)
//! ```
//!
//! The header is part of the input, so whatever commits to the input (the job's input hash,
//! the session request's signature) commits to the constraint, and every party that reads the
//! input applies it. The encoding is canonical: [`Constraint::split`] accepts exactly what
//! [`Constraint::wrap`] produces.

use crate::{Grammar, SchemaError, SCHEMA_BYTES_MAX};

/// The first bytes of a constrained input.
pub const CONSTRAINT_MAGIC: &[u8] = b"\x1epiazza-constraint/1\n";
/// Most decimal digits of the schema length (`SCHEMA_BYTES_MAX` has 5).
const LENGTH_DIGITS_MAX: usize = 5;

/// What the generated text must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// A value valid against this JSON schema (its JSON text).
    JsonSchema(Vec<u8>),
    /// Any JSON object.
    JsonObject,
}

/// A constrained input's header that does not follow the format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintError {
    #[error("constraint header: {0}")]
    Header(&'static str),
    #[error("constraint schema of {bytes} bytes exceeds {max}")]
    TooLarge { bytes: usize, max: usize },
}

impl Constraint {
    fn kind(&self) -> &'static [u8] {
        match self {
            Constraint::JsonSchema(_) => b"json_schema",
            Constraint::JsonObject => b"json_object",
        }
    }

    fn schema(&self) -> &[u8] {
        match self {
            Constraint::JsonSchema(schema) => schema,
            Constraint::JsonObject => &[],
        }
    }

    /// The automaton (a schema that does not compile is the caller's 400, or a job that
    /// cannot run).
    pub fn grammar(&self) -> Result<Grammar, SchemaError> {
        match self {
            Constraint::JsonSchema(schema) => Grammar::from_schema(schema),
            Constraint::JsonObject => Ok(Grammar::any_object()),
        }
    }

    /// `input` with this constraint's header in front.
    pub fn wrap(&self, input: &[u8]) -> Vec<u8> {
        let schema = self.schema();
        let length = schema.len().to_string();
        let mut out = Vec::with_capacity(
            CONSTRAINT_MAGIC.len() + 16 + length.len() + schema.len() + input.len(),
        );
        out.extend_from_slice(CONSTRAINT_MAGIC);
        out.extend_from_slice(self.kind());
        out.push(b'\n');
        out.extend_from_slice(length.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(schema);
        out.push(b'\n');
        out.extend_from_slice(input);
        out
    }

    /// The constraint and the inner input of `input`; `None` when it has no header (an
    /// unconstrained job).
    pub fn split(input: &[u8]) -> Result<Option<(Constraint, &[u8])>, ConstraintError> {
        let Some(rest) = input.strip_prefix(CONSTRAINT_MAGIC) else {
            return Ok(None);
        };
        let (kind, rest) = line(rest, 16).ok_or(ConstraintError::Header("no kind line"))?;
        let (length, rest) =
            line(rest, LENGTH_DIGITS_MAX).ok_or(ConstraintError::Header("no length line"))?;
        let canonical = !length.is_empty()
            && length.iter().all(u8::is_ascii_digit)
            && (length == b"0" || length[0] != b'0');
        if !canonical {
            return Err(ConstraintError::Header("length is not a canonical decimal"));
        }
        let length: usize = std::str::from_utf8(length)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ConstraintError::Header("length is not a number"))?;
        if length > SCHEMA_BYTES_MAX {
            return Err(ConstraintError::TooLarge {
                bytes: length,
                max: SCHEMA_BYTES_MAX,
            });
        }
        let schema = rest
            .get(..length)
            .ok_or(ConstraintError::Header("schema shorter than its length"))?;
        let rest = rest
            .get(length..)
            .and_then(|r| r.strip_prefix(b"\n"))
            .ok_or(ConstraintError::Header("no newline after the schema"))?;
        let constraint = match kind {
            b"json_schema" => Constraint::JsonSchema(schema.to_vec()),
            b"json_object" if length == 0 => Constraint::JsonObject,
            b"json_object" => return Err(ConstraintError::Header("json_object takes no schema")),
            _ => return Err(ConstraintError::Header("unknown kind")),
        };
        Ok(Some((constraint, rest)))
    }
}

/// The bytes before the next newline (at most `max` of them) and those after it.
fn line(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().take(max + 1).position(|&b| b == b'\n')?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

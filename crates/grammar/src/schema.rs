//! The JSON Schema subset, read in document order and compiled to automaton nodes.
//!
//! Supported: `type` (one name or a list) of `object` (`properties`, `required`,
//! `additionalProperties: false`), `string` (`maxLength`), `number`, `integer`, `boolean`,
//! `null`, `array` (`items`, `maxItems`); `enum` and `const` of scalars; `anyOf`. The annotation
//! keywords `title`, `description`, `$schema`, `$comment`, `examples` and `default` are read and
//! ignored. Any other keyword is refused by name.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{
    SchemaError, ARRAY_ITEMS_DEFAULT, ARRAY_ITEMS_MAX, CONFIGS_MAX, DEPTH_MAX, ENUM_VALUES_MAX,
    NODES_MAX, PROPERTIES_MAX, SCHEMA_BYTES_MAX, STRING_CHARS_DEFAULT, STRING_CHARS_MAX,
};

/// A JSON value whose objects keep their members in document order (property order decides
/// the order the automaton emits them in, whatever map type serde_json was built with).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

impl Json {
    /// Compact JSON text of a scalar (what an `enum`/`const` value must be written as).
    fn scalar_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Json::Null => Some(b"null".to_vec()),
            Json::Bool(b) => Some(if *b {
                b"true".to_vec()
            } else {
                b"false".to_vec()
            }),
            Json::Number(n) => Some(n.to_string().into_bytes()),
            Json::String(s) => serde_json::to_vec(s).ok(),
            Json::Array(_) | Json::Object(_) => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }
}

pub(crate) type NodeId = u32;

/// One property of an object node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Property {
    /// The key as JSON text, quotes included.
    pub key: Vec<u8>,
    pub value: NodeId,
    pub required: bool,
}

/// What a value must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// Exactly these bytes (an `enum`/`const` value, `true`, `false`, `null`).
    Literal(Vec<u8>),
    /// A string of at most `chars_max` characters (escapes count as one; no `\u` escapes).
    String {
        chars_max: u32,
    },
    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, digits bounded; no fraction when `integer`.
    Number {
        integer: bool,
    },
    /// The properties in schema order; each appears at most once, in that order.
    Object {
        properties: Vec<Property>,
    },
    /// Any string keys (at most `entries_max` members), each value `value`.
    Map {
        key: NodeId,
        value: NodeId,
        entries_max: u32,
    },
    Array {
        items: NodeId,
        items_max: u32,
    },
    AnyOf(Vec<NodeId>),
}

/// The compiled nodes, with the precomputed fewest bytes that complete each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Nodes {
    pub nodes: Vec<Node>,
    pub min_bytes: Vec<u64>,
    pub root: NodeId,
}

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "$comment",
    "examples",
    "default",
];
const TYPES: &[&str] = &[
    "object", "string", "number", "integer", "boolean", "null", "array",
];

fn keywords_of(type_name: &str) -> &'static [&'static str] {
    match type_name {
        "object" => &["properties", "required", "additionalProperties"],
        "string" => &["maxLength"],
        "array" => &["items", "maxItems"],
        _ => &[],
    }
}

pub(crate) struct Builder {
    nodes: Vec<Node>,
}

fn invalid(path: &str, detail: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: path.to_string(),
        detail: detail.into(),
    }
}

fn member<'a>(members: &'a [(String, Json)], name: &str) -> Option<&'a Json> {
    members.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn bound(value: &Json, path: &str, max: u32) -> Result<u32, SchemaError> {
    match value {
        Json::Number(n) => match n.as_u64() {
            Some(v) if v <= u64::from(max) => Ok(v as u32),
            _ => Err(invalid(path, format!("must be an integer from 0 to {max}"))),
        },
        _ => Err(invalid(path, "must be an integer")),
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder { nodes: Vec::new() }
    }

    pub fn push(&mut self, node: Node) -> Result<NodeId, SchemaError> {
        if self.nodes.len() >= NODES_MAX {
            return Err(SchemaError::TooManyNodes { max: NODES_MAX });
        }
        self.nodes.push(node);
        Ok((self.nodes.len() - 1) as NodeId)
    }

    /// Compile a schema object at `path`, `depth` levels of nesting down.
    pub fn schema(
        &mut self,
        schema: &Json,
        path: &str,
        depth: usize,
    ) -> Result<NodeId, SchemaError> {
        if depth > DEPTH_MAX {
            return Err(SchemaError::TooDeep { max: DEPTH_MAX });
        }
        let Json::Object(members) = schema else {
            return Err(invalid(path, "a schema must be an object"));
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, _) in members {
            if seen.contains(&key.as_str()) {
                return Err(invalid(path, format!("`{key}` appears twice")));
            }
            seen.push(key);
        }
        if let Some(alternatives) = member(members, "anyOf") {
            if let Some((key, _)) = members
                .iter()
                .find(|(k, _)| k != "anyOf" && !ANNOTATIONS.contains(&k.as_str()))
            {
                return Err(SchemaError::Unsupported {
                    path: path.to_string(),
                    keyword: format!("{key} (beside anyOf)"),
                });
            }
            let Json::Array(alternatives) = alternatives else {
                return Err(invalid(path, "`anyOf` must be a list"));
            };
            if alternatives.is_empty() || alternatives.len() > ENUM_VALUES_MAX {
                return Err(invalid(
                    path,
                    format!("`anyOf` takes 1 to {ENUM_VALUES_MAX} schemas"),
                ));
            }
            let mut ids = Vec::with_capacity(alternatives.len());
            for (i, alternative) in alternatives.iter().enumerate() {
                ids.push(self.schema(alternative, &format!("{path}/anyOf/{i}"), depth + 1)?);
            }
            return self.push(Node::AnyOf(ids));
        }
        let types: Vec<&str> = match member(members, "type") {
            None => Vec::new(),
            Some(Json::String(t)) => vec![t.as_str()],
            Some(Json::Array(list)) => {
                let mut types = Vec::new();
                for t in list {
                    let Json::String(t) = t else {
                        return Err(invalid(path, "`type` lists names"));
                    };
                    if types.contains(&t.as_str()) {
                        return Err(invalid(path, format!("`type` lists `{t}` twice")));
                    }
                    types.push(t.as_str());
                }
                types
            }
            Some(_) => return Err(invalid(path, "`type` must be a name or a list of names")),
        };
        if let Some(t) = types.iter().find(|t| !TYPES.contains(t)) {
            return Err(SchemaError::Unsupported {
                path: path.to_string(),
                keyword: format!("type `{t}`"),
            });
        }
        let values = match (member(members, "enum"), member(members, "const")) {
            (Some(_), Some(_)) => return Err(invalid(path, "both `enum` and `const`")),
            (Some(Json::Array(values)), None) => Some(values.clone()),
            (Some(_), None) => return Err(invalid(path, "`enum` must be a list")),
            (None, Some(value)) => Some(vec![value.clone()]),
            (None, None) => None,
        };
        for (key, _) in members {
            let known = ANNOTATIONS.contains(&key.as_str())
                || ["type", "enum", "const"].contains(&key.as_str())
                || (values.is_none()
                    && types.iter().any(|t| keywords_of(t).contains(&key.as_str())))
                || (values.is_some() && key == "maxLength" && types.contains(&"string"));
            if !known {
                return Err(SchemaError::Unsupported {
                    path: path.to_string(),
                    keyword: key.clone(),
                });
            }
        }
        if let Some(values) = values {
            if values.is_empty() || values.len() > ENUM_VALUES_MAX {
                return Err(invalid(
                    path,
                    format!("`enum` takes 1 to {ENUM_VALUES_MAX} values"),
                ));
            }
            let mut ids = Vec::with_capacity(values.len());
            for value in &values {
                let bytes = value
                    .scalar_bytes()
                    .ok_or_else(|| invalid(path, "`enum`/`const` values must be scalars"))?;
                let name = value.type_name();
                let fits = types.is_empty()
                    || types.contains(&name)
                    || (name == "integer" && types.contains(&"number"));
                if !fits {
                    return Err(invalid(path, format!("a {name} value is not of `type`")));
                }
                ids.push(self.push(Node::Literal(bytes))?);
            }
            return self.any_of(ids);
        }
        if types.is_empty() {
            return Err(invalid(
                path,
                "a schema must name its `type` (or give `enum`, `const` or `anyOf`)",
            ));
        }
        let mut ids = Vec::with_capacity(types.len());
        for t in &types {
            ids.push(self.typed(t, members, path, depth)?);
        }
        self.any_of(ids)
    }

    fn any_of(&mut self, ids: Vec<NodeId>) -> Result<NodeId, SchemaError> {
        match ids.as_slice() {
            [one] => Ok(*one),
            _ => self.push(Node::AnyOf(ids)),
        }
    }

    fn typed(
        &mut self,
        type_name: &str,
        members: &[(String, Json)],
        path: &str,
        depth: usize,
    ) -> Result<NodeId, SchemaError> {
        match type_name {
            "null" => self.push(Node::Literal(b"null".to_vec())),
            "boolean" => {
                let t = self.push(Node::Literal(b"true".to_vec()))?;
                let f = self.push(Node::Literal(b"false".to_vec()))?;
                self.push(Node::AnyOf(vec![t, f]))
            }
            "number" | "integer" => self.push(Node::Number {
                integer: type_name == "integer",
            }),
            "string" => {
                let chars_max = match member(members, "maxLength") {
                    Some(v) => bound(v, &format!("{path}/maxLength"), STRING_CHARS_MAX)?,
                    None => STRING_CHARS_DEFAULT,
                };
                self.push(Node::String { chars_max })
            }
            "array" => {
                let items = member(members, "items")
                    .ok_or_else(|| invalid(path, "an array schema must give `items`"))?;
                let items = self.schema(items, &format!("{path}/items"), depth + 1)?;
                let items_max = match member(members, "maxItems") {
                    Some(v) => bound(v, &format!("{path}/maxItems"), ARRAY_ITEMS_MAX)?,
                    None => ARRAY_ITEMS_DEFAULT,
                };
                self.push(Node::Array { items, items_max })
            }
            _ => {
                match member(members, "additionalProperties") {
                    None | Some(Json::Bool(false)) => {}
                    Some(_) => {
                        return Err(SchemaError::Unsupported {
                            path: path.to_string(),
                            keyword: "additionalProperties other than false".into(),
                        })
                    }
                }
                let properties: &[(String, Json)] = match member(members, "properties") {
                    None => &[],
                    Some(Json::Object(p)) => p,
                    Some(_) => return Err(invalid(path, "`properties` must be an object")),
                };
                if properties.len() > PROPERTIES_MAX {
                    return Err(invalid(
                        path,
                        format!("more than {PROPERTIES_MAX} properties"),
                    ));
                }
                let required: Vec<&str> = match member(members, "required") {
                    None => Vec::new(),
                    Some(Json::Array(names)) => names
                        .iter()
                        .map(|n| match n {
                            Json::String(s) => Ok(s.as_str()),
                            _ => Err(invalid(path, "`required` lists names")),
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err(invalid(path, "`required` must be a list")),
                };
                for name in &required {
                    if !properties.iter().any(|(k, _)| k == name) {
                        return Err(invalid(
                            path,
                            format!("`required` names `{name}`, which is not a property"),
                        ));
                    }
                }
                let mut compiled = Vec::with_capacity(properties.len());
                for (name, schema) in properties {
                    let value =
                        self.schema(schema, &format!("{path}/properties/{name}"), depth + 1)?;
                    compiled.push(Property {
                        key: serde_json::to_vec(name).unwrap_or_default(),
                        value,
                        required: required.contains(&name.as_str()),
                    });
                }
                self.push(Node::Object {
                    properties: compiled,
                })
            }
        }
    }

    /// The generic JSON value of at most `depth` levels of nesting (`json_object`).
    pub fn any_value(&mut self, depth: usize) -> Result<NodeId, SchemaError> {
        let string = self.push(Node::String {
            chars_max: STRING_CHARS_DEFAULT,
        })?;
        let mut alternatives = vec![
            string,
            self.push(Node::Number { integer: false })?,
            self.push(Node::Literal(b"true".to_vec()))?,
            self.push(Node::Literal(b"false".to_vec()))?,
            self.push(Node::Literal(b"null".to_vec()))?,
        ];
        if depth > 0 {
            let inner = self.any_value(depth - 1)?;
            alternatives.push(self.push(Node::Array {
                items: inner,
                items_max: ARRAY_ITEMS_DEFAULT,
            })?);
            alternatives.push(self.push(Node::Map {
                key: string,
                value: inner,
                entries_max: ARRAY_ITEMS_DEFAULT,
            })?);
        }
        self.push(Node::AnyOf(alternatives))
    }

    /// Any JSON object whose values nest at most `depth` levels.
    pub fn any_object(&mut self, depth: usize) -> Result<NodeId, SchemaError> {
        let key = self.push(Node::String {
            chars_max: STRING_CHARS_DEFAULT,
        })?;
        let value = self.any_value(depth)?;
        self.push(Node::Map {
            key,
            value,
            entries_max: ARRAY_ITEMS_DEFAULT,
        })
    }

    /// Finish: fewest completing bytes per node, and the width check.
    pub fn finish(self, root: NodeId) -> Result<Nodes, SchemaError> {
        // Children always precede their parent, so one forward pass computes both.
        let mut min_bytes: Vec<u64> = Vec::with_capacity(self.nodes.len());
        let mut width: Vec<usize> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let m = |id: &NodeId| min_bytes[*id as usize];
            let w = |id: &NodeId| width[*id as usize];
            let (bytes, wide) = match node {
                Node::Literal(l) => (l.len() as u64, 1),
                Node::String { .. } => (2, 1),
                Node::Number { .. } => (1, 1),
                Node::Object { properties } => {
                    let required: Vec<u64> = properties
                        .iter()
                        .filter(|p| p.required)
                        .map(|p| p.key.len() as u64 + 1 + m(&p.value))
                        .collect();
                    let commas = required.len().saturating_sub(1) as u64;
                    let wide = properties.iter().map(|p| w(&p.value)).max().unwrap_or(1);
                    (
                        2 + required.iter().sum::<u64>() + commas,
                        wide.max(properties.len()).max(1),
                    )
                }
                Node::Map { value, .. } => (2, w(value)),
                Node::Array { items, .. } => (2, w(items)),
                Node::AnyOf(alternatives) => (
                    alternatives.iter().map(m).min().unwrap_or(0),
                    alternatives.iter().map(w).sum(),
                ),
            };
            min_bytes.push(bytes);
            width.push(wide);
        }
        if width.get(root as usize).copied().unwrap_or(0) > CONFIGS_MAX {
            return Err(SchemaError::TooWide { max: CONFIGS_MAX });
        }
        Ok(Nodes {
            nodes: self.nodes,
            min_bytes,
            root,
        })
    }
}

impl Nodes {
    /// Every byte of the keys and literals.
    pub fn literal_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.nodes.iter().flat_map(|node| {
            let texts: Vec<&[u8]> = match node {
                Node::Literal(bytes) => vec![bytes],
                Node::Object { properties } => properties.iter().map(|p| &p.key[..]).collect(),
                _ => Vec::new(),
            };
            texts.into_iter().flatten().copied()
        })
    }
}

/// Read schema bytes (bounded) into a document-ordered tree.
pub(crate) fn parse(bytes: &[u8]) -> Result<Json, SchemaError> {
    if bytes.len() > SCHEMA_BYTES_MAX {
        return Err(SchemaError::TooLarge {
            bytes: bytes.len(),
            max: SCHEMA_BYTES_MAX,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| SchemaError::Json(e.to_string()))
}

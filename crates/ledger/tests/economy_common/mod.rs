//! What the economy tests share: a model record with a given lineage.
#![allow(dead_code)]

use piazza_ledger::models::{Lineage, ModelKind, ModelRecord};
use piazza_primitives::{Address, Amount, Hash};

/// A generation model's record named `name`, owned by `owner`, with `lineage`; its hashes are
/// derived from its name.
pub fn record(name: &str, owner: Address, lineage: Lineage) -> ModelRecord {
    ModelRecord {
        name: name.into(),
        kind: ModelKind::Generation,
        architecture: "llama".into(),
        config_hash: Hash::of("c", &[name.as_bytes()]),
        weights_commitment: Hash::of("w", &[name.as_bytes()]),
        tokenizer_hash: Hash::of("t", &[name.as_bytes()]),
        owner,
        license: "apache-2.0".into(),
        price_floor: Amount::new(1),
        numeric: Default::default(),
        files: None,
        lineage,
    }
}

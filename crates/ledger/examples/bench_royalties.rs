//! Settlement cost of one job's price split as the model's lineage grows: time per settlement
//! and state writes, at lineage depth 0, 1, 4 (a chain) and the maximum (depth
//! `MAX_DEPTH` with `MAX_PARENTS` model parents at every level: the widest graph the
//! registration bounds allow). Every record in the graph has issued shares, so every
//! payment goes through an accumulator. Prints numbers; asserts nothing about speed.
//!
//! `cargo run --release -p piazza-ledger --example bench_royalties`

use piazza_ledger::bank::{self, assets};
use piazza_ledger::compute::{self, Compute};
use piazza_ledger::models::lineage::{MAX_DEPTH, MAX_PARENTS};
use piazza_ledger::models::{Lineage, ModelKind, ModelRecord, Models, Parent, Source};
use piazza_ledger::module::Module;
use piazza_ledger::state::StateDelta;
use piazza_primitives::{Address, Amount, Hash};
use std::collections::BTreeMap;
use std::time::Instant;

fn record(name: &str, parents: Vec<String>) -> ModelRecord {
    let n = parents.len() as u16;
    let parents: Vec<Parent> = parents
        .into_iter()
        .enumerate()
        .map(|(i, p)| Parent {
            source: Source::Model(p),
            weight_bps: if i == 0 {
                10_000 - (n - 1) * (10_000 / n)
            } else {
                10_000 / n
            },
        })
        .collect();
    let royalty_bps = if parents.is_empty() { 0 } else { 3_000 };
    ModelRecord {
        name: name.into(),
        kind: ModelKind::Generation,
        architecture: "bench".into(),
        config_hash: Hash::of("c", &[name.as_bytes()]),
        weights_commitment: Hash::of("w", &[name.as_bytes()]),
        tokenizer_hash: Hash::of("t", &[name.as_bytes()]),
        owner: Address::module(name),
        license: "apache-2.0".into(),
        price_floor: Amount::new(1),
        numeric: Default::default(),
        files: None,
        lineage: Lineage {
            parents,
            royalty_bps,
        },
    }
}

/// Registers a tree of `depth` levels with `fan_out` model parents per record (names are
/// paths), parents first; returns the root's name and the number of records.
fn tree(state: &mut StateDelta<'_>, name: &str, depth: u8, fan_out: usize) -> usize {
    let mut parents = Vec::new();
    let mut count = 1;
    if depth > 0 {
        for i in 0..fan_out {
            let parent = format!("{name}.{i}");
            count += tree(state, &parent, depth - 1, fan_out);
            parents.push(parent);
        }
    }
    Models::init_chain(state, &[record(name, parents)]).expect("within the bounds");
    let id = assets::AssetId::Model(name.into());
    let owner = Address::module(name);
    assets::issue(state, &id, &owner, 1_000).unwrap();
    assets::transfer(state, &id, &owner, &Address([7; 20]), 400).unwrap();
    count
}

fn main() {
    let payer = Address([0xaa; 20]);
    let provider = Address([0xbb; 20]);
    for (label, depth, fan_out) in [
        ("depth 0", 0u8, 1usize),
        ("depth 1", 1, 1),
        ("depth 4 (chain)", 4, 1),
        ("max: depth 4, fan-out 4", MAX_DEPTH, MAX_PARENTS),
    ] {
        let mut base = BTreeMap::new();
        let mut state = StateDelta::new(&base);
        Compute::init_chain(&mut state, &compute::Params::default()).unwrap();
        bank::mint(&mut state, &payer, Amount::pza(1_000_000)).unwrap();
        let records = tree(&mut state, "m", depth, fan_out);
        for (k, v) in state.into_writes() {
            if let Some(v) = v {
                base.insert(k, v);
            }
        }
        let rounds = 2_000u32;
        let mut writes = 0;
        let mut start = Instant::now();
        // The first `rounds` warm caches and the allocator; the second are timed.
        for round in 0..2 * rounds {
            if round == rounds {
                start = Instant::now();
            }
            let mut delta = StateDelta::new(&base);
            compute::pay_price(
                &mut delta,
                &payer,
                Amount::new(1_000_003),
                &provider,
                "m",
                &bank::treasury(),
            );
            writes = delta.writes().len();
        }
        let per = start.elapsed() / rounds;
        println!(
            "{label:<26} records {records:>4}  state writes {writes:>4}  time per settlement {:>8.1} µs",
            per.as_secs_f64() * 1e6
        );
    }
}

//! Prints MiniLM trace roots for a fixed batch, for every thread count and instruction set this
//! build can run. `scripts/repro-check.sh` compares the output across builds for different CPUs.
//!
//! `cargo run --release -p piazza-engine --example trace_root`

use std::num::NonZeroUsize;

use piazza_engine::{Batch, Compute, Embedder};
use piazza_tensor::Isa;

const TEXTS: [&str; 4] = [
    "The same model and input give the same bits on every machine.",
    "Hello world",
    "Ünïcödé, emoji 🚀 and CJK 去中心化.",
    "",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = piazza_engine::models_dir().join("minilm");
    let embedder = Embedder::load(&dir).map_err(|error| {
        format!(
            "{error} (in {}; run scripts/fetch-models.sh)",
            dir.display()
        )
    })?;
    let ids = embedder.tokenize(&TEXTS)?;
    let batches = [
        ("batched", Batch::pack(&ids)?),
        ("alone", Batch::pack(&ids[..1])?),
    ];
    let mut roots = std::collections::BTreeSet::new();
    for (label, batch) in &batches {
        for isa in Isa::available() {
            for threads in [1, 2, 4] {
                let compute = Compute {
                    threads: NonZeroUsize::new(threads).unwrap(),
                    isa,
                };
                let (_, trace) = embedder.run_traced(batch, compute)?;
                eprintln!("{label} {isa:?} threads={threads}: {}", hex(&trace.root));
                roots.insert((*label, trace.root));
            }
        }
    }
    if roots.len() != batches.len() {
        return Err("trace roots differ between thread counts or instruction sets".into());
    }
    // stdout carries only what must match across builds.
    println!("weights {}", hex(&embedder.weights_commitment()));
    println!("tokenizer {}", hex(&embedder.tokenizer_hash()));
    for (label, root) in roots {
        println!("{label} {}", hex(&root));
    }
    Ok(())
}

//! The shape of a traced run, shared by the engines that produce traces and the ledger that
//! judges them: the graph of ops cut into steps and the step re-execution contract
//! ([`graph`]), the Merkle trees ([`merkle`]), the trace of a run ([`trace`]: one leaf per
//! step, hashing the step's output), the weight commitment with slice proofs ([`weights`]),
//! and the trace tree as the bisection game walks it ([`tree`]).
//!
//! # Invariants
//! - Every byte format here is consensus: a trace root or a weight commitment computed by a
//!   provider is compared bit for bit by the ledger. Formats are specified in docs/engine.md and
//!   pinned by tests.
//! - Pure functions of their inputs: no IO, no clock, no threads, no floats except as the
//!   bytes a leaf hashes.
//! - Knows no model, tensor library, tokenizer or kernel: the ledger links this crate without
//!   the ML stack.
//!
//! # Example
//! ```
//! use piazza_trace::{trace::{step_hash, Trace}, tree};
//!
//! let leaves: Vec<_> = (0..5).map(|i| step_hash(i, &[i as f32], 1, 1)).collect();
//! let trace = Trace::from_leaves(leaves.clone());
//! let levels = tree::levels(&leaves);
//! assert_eq!(tree::root_from_top(5, &levels.last().unwrap()[0]), trace.root);
//! ```

pub mod graph;
pub mod merkle;
pub mod trace;
pub mod tree;
pub mod weights;

/// A 32-byte BLAKE3 digest.
pub use merkle::Hash;
pub use trace::Trace;

#[cfg(test)]
mod tests {
    /// The ledger links this crate: its dependencies stay free of the ML stack.
    #[test]
    fn depends_on_no_ml_crate() {
        let manifest = include_str!("../Cargo.toml");
        let dependencies = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .expect("a [dependencies] table");
        let names: Vec<&str> = dependencies
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split(['=', '.']).next())
            .map(str::trim)
            .collect();
        let allowed = ["blake3", "thiserror", "piazza-codec", "piazza-primitives"];
        for name in &names {
            assert!(
                allowed.contains(name),
                "piazza-trace must not depend on {name}"
            );
        }
        assert!(names.contains(&"blake3"));
    }
}

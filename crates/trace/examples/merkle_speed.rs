//! The trace's Merkle root over as many leaves as a 64-token SmolLM2 generation has
//! (42 713), timed alone: `cargo run --release -p piazza-trace --example merkle_speed [leaves]
//! [repeats]`. Prints the best and median milliseconds per root, and the root's first bytes.

use std::time::Instant;

use piazza_trace::merkle;
use piazza_trace::trace::TRACE_DOMAIN;
use piazza_trace::Hash;

/// Leaves of a 64-token SmolLM2 generation's trace.
const LEAVES_DEFAULT: usize = 42_713;
const REPEATS_DEFAULT: usize = 30;

fn main() {
    let mut args = std::env::args().skip(1);
    let leaf_count = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(LEAVES_DEFAULT);
    let repeats: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(REPEATS_DEFAULT)
        .max(1);
    let leaves: Vec<Hash> = (0..leaf_count as u64)
        .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
        .collect();
    let mut times_ms = Vec::with_capacity(repeats);
    let mut root = [0u8; 32];
    for _ in 0..repeats {
        let start = Instant::now();
        root = std::hint::black_box(merkle::root(TRACE_DOMAIN, &leaves));
        times_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times_ms.sort_by(f64::total_cmp);
    let head: String = root[..4].iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "Merkle root over {leaf_count} leaves: best {:.2} ms, median {:.2} ms ({repeats} repeats), root {head}…",
        times_ms[0],
        times_ms[repeats / 2]
    );
}

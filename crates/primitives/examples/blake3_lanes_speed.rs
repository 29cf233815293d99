//! Single BLAKE3 compressions timed in [`compress_many`]'s lanes and one at a time through
//! `blake3::platform`, whole chunks in `hash_many` and [`hash_chunks`], and messages the size
//! of a trace leaf of one 576-wide row (2349 bytes) side by side in [`hash_messages`] and one
//! at a time in `blake3::hash`: `cargo run --release -p piazza-primitives --example
//! blake3_lanes_speed [jobs] [repeats]`. Prints nanoseconds per compression or per 64-byte
//! block, best of the repeats.

use std::time::Instant;

use blake3::platform::Platform;
use piazza_primitives::blake3_lanes::{
    compress_many, hash_chunks, hash_messages, Chunk, Compression, Message, BLOCK_BYTES,
};
use piazza_primitives::blake3_words::{CHUNK_END, IV, ROOT};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4096);
    let repeats: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(50)
        .max(1);
    let blocks: Vec<[u8; BLOCK_BYTES]> = (0..count)
        .map(|i| std::array::from_fn(|b| (i * 31 + b) as u8))
        .collect();
    let jobs: Vec<Compression> = blocks
        .iter()
        .enumerate()
        .map(|(i, block)| Compression {
            cv: IV.map(|w| w ^ i as u32),
            block,
            block_len: 1 + (i % 64) as u8,
            counter: i as u64,
            flags: CHUNK_END | ROOT,
        })
        .collect();
    let best_ns = |run: &mut dyn FnMut(&mut [Compression])| {
        let mut best = f64::MAX;
        for _ in 0..repeats {
            let mut work = jobs.clone();
            let start = Instant::now();
            run(std::hint::black_box(&mut work));
            best = best.min(start.elapsed().as_secs_f64() * 1e9 / count as f64);
            std::hint::black_box(&work);
        }
        best
    };
    let lanes = best_ns(&mut |work| compress_many(work));
    let platform = Platform::detect();
    let single = best_ns(&mut |work| {
        for job in work {
            platform.compress_in_place(
                &mut job.cv,
                job.block,
                job.block_len,
                job.counter,
                job.flags,
            );
        }
    });
    // `hash_many` over whole 1 KiB BLAKE3 chunks, 16 inputs per call: nanoseconds per block.
    let data: Vec<u8> = (0..16 * 1024 * 64).map(|i| (i * 7) as u8).collect();
    let inputs: Vec<&[u8; 1024]> = data
        .chunks_exact(1024)
        .map(|c| c.try_into().unwrap())
        .collect();
    let mut out = vec![0u8; 32 * inputs.len()];
    let mut many = f64::MAX;
    for _ in 0..repeats {
        let start = Instant::now();
        for group in inputs.chunks(16) {
            platform.hash_many(
                group,
                &IV,
                0,
                blake3::IncrementCounter::Yes,
                0,
                1,
                2,
                &mut out[..32 * group.len()],
            );
        }
        many = many.min(start.elapsed().as_secs_f64() * 1e9 / (inputs.len() * 16) as f64);
    }
    let chunks: Vec<Chunk> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| Chunk {
            first: None,
            middle: &input[..],
            last: None,
            counter: i as u64,
            root: false,
        })
        .collect();
    let mut cvs = vec![[0u32; 8]; chunks.len()];
    let mut lanes_chunks = f64::MAX;
    for _ in 0..repeats {
        let start = Instant::now();
        hash_chunks(&chunks, &mut cvs);
        lanes_chunks =
            lanes_chunks.min(start.elapsed().as_secs_f64() * 1e9 / (chunks.len() * 16) as f64);
    }
    println!("1 KiB chunks: hash_many {many:.1} ns per block, hash_chunks {lanes_chunks:.1} ns per block");
    // 64 messages of 2349 bytes (a head block, 35 whole blocks in place, a 45-byte tail).
    const LEAF_BYTES: usize = 2349;
    let tail = (LEAF_BYTES - BLOCK_BYTES) % BLOCK_BYTES;
    let pads: Vec<[[u8; BLOCK_BYTES]; 2]> = data
        .chunks_exact(LEAF_BYTES)
        .take(64)
        .map(|m| {
            let mut pads = [[0u8; BLOCK_BYTES]; 2];
            pads[0].copy_from_slice(&m[..BLOCK_BYTES]);
            pads[1][..tail].copy_from_slice(&m[LEAF_BYTES - tail..]);
            pads
        })
        .collect();
    let messages: Vec<Message> = data
        .chunks_exact(LEAF_BYTES)
        .zip(&pads)
        .map(|(m, pads)| Message {
            first: &pads[0],
            middle: &m[BLOCK_BYTES..LEAF_BYTES - tail],
            last: Some(&pads[1]),
        })
        .collect();
    let leaf_blocks = (messages.len() * LEAF_BYTES.div_ceil(BLOCK_BYTES)) as f64;
    let mut hashes = vec![[0u8; 32]; messages.len()];
    let (mut side_by_side, mut each) = (f64::MAX, f64::MAX);
    for _ in 0..repeats {
        let start = Instant::now();
        hash_messages(LEAF_BYTES, &messages, &mut hashes);
        side_by_side = side_by_side.min(start.elapsed().as_secs_f64() * 1e9 / leaf_blocks);
        let start = Instant::now();
        for message in data.chunks_exact(LEAF_BYTES).take(messages.len()) {
            std::hint::black_box(blake3::hash(message));
        }
        each = each.min(start.elapsed().as_secs_f64() * 1e9 / leaf_blocks);
    }
    println!("{LEAF_BYTES}-byte messages: hash_messages {side_by_side:.1} ns per block, blake3::hash {each:.1} ns per block");
    println!("{count} compressions: lanes {lanes:.1} ns each, one at a time {single:.1} ns each");
}

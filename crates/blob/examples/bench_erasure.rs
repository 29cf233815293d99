//! Encode and decode throughput of the erasure layout, and its parts apart: the parity and the
//! reconstruction with `reed-solomon-erasure` (what `erasure` uses) and with `reed-solomon-simd`
//! on the same shards, and the commitments (BLAKE3 over 4 KiB leaves).
//!
//! `cargo run --release -p piazza-blob --example bench_erasure [MiB] [k] [m] [runs]` (default
//! 64 MiB at the default 4 + 2, 3 runs; each line is the best run). `encode` hashes on every
//! core it may use: run it under `taskset -c 0` for one core's figures. Decode is measured at
//! its worst: the first `min(m, k)` data shards lost, so every stripe is reconstructed.

use std::time::Instant;

use piazza_blob::{commit, erasure};
use reed_solomon_erasure::galois_8::ReedSolomon;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).and_then(|a| a.parse::<usize>().ok());
    let mib = arg(1).unwrap_or(64);
    let k = arg(2).map_or(erasure::DATA_SHARDS_DEFAULT, |v| v as u16);
    let m = arg(3).map_or(erasure::PARITY_SHARDS_DEFAULT, |v| v as u16);
    let runs = arg(4).unwrap_or(3).max(1);
    let len = mib << 20;
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 13) as u8)
        .collect();
    let gib = len as f64 / f64::from(1u32 << 30);
    let (ku, mu) = (usize::from(k), usize::from(m));
    let lost = mu.min(ku);

    let mut best = [f64::MAX; 7];
    let mut encoded = None;
    for _ in 0..runs {
        let start = Instant::now();
        let e = erasure::encode(&data, k, m).expect("encode");
        let encode_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let simd = simd_parity(&e.shards[..ku], m);
        let simd_s = start.elapsed().as_secs_f64();
        let times = [
            encode_s,
            time(|| assert_eq!(erasure_parity(&e.shards[..ku], m), e.shards[ku..])),
            simd_s,
            time(|| {
                let available: Vec<(u16, &[u8])> = e
                    .shards
                    .iter()
                    .enumerate()
                    .skip(lost)
                    .map(|(i, s)| (i as u16, s.as_slice()))
                    .collect();
                assert_eq!(
                    erasure::decode(&e.layout, &e.id, &available).expect("decode"),
                    data
                );
            }),
            time(|| assert_eq!(erasure_restore(&e.shards, k, lost)[..], e.shards[..lost])),
            time(|| {
                assert_eq!(
                    simd_restore(&e.shards[..ku], &simd, lost)[..],
                    e.shards[..lost]
                )
            }),
            time(|| {
                for (shard, root) in e.shards.iter().zip(&e.roots) {
                    assert_eq!(commit::root_of(shard), *root);
                }
            }),
        ];
        for (b, t) in best.iter_mut().zip(times) {
            *b = b.min(t);
        }
        encoded = Some(e);
    }
    let encoded = encoded.expect("at least one run");
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let shards_gib = gib * f64::from(k + m) / f64::from(k);
    println!(
        "blob {mib} MiB, k+m = {k}+{m}, shard {} bytes, best of {runs}",
        encoded.layout.shard_len
    );
    let lines = [
        (
            format!("encode (parity + roots + id, {threads} threads)"),
            gib,
        ),
        ("parity alone, reed-solomon-erasure".into(), gib),
        ("parity alone, reed-solomon-simd".into(), gib),
        (format!("decode ({lost} data shards lost, id checked)"), gib),
        (
            format!("reconstruct {lost} alone, reed-solomon-erasure"),
            gib,
        ),
        (format!("reconstruct {lost} alone, reed-solomon-simd"), gib),
        (
            format!("{} shard roots (one core), GiB of shards", k + m),
            shards_gib,
        ),
    ];
    for ((what, size), t) in lines.iter().zip(best) {
        println!("{what:<52} {:6.2} GiB/s", size / t);
    }
}

fn time(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

/// Parity over whole data shards in stripes, as `erasure::encode` codes it, without hashing.
fn erasure_parity(data: &[Vec<u8>], m: u16) -> Vec<Vec<u8>> {
    let shard_len = data[0].len();
    let code = ReedSolomon::new(data.len(), usize::from(m)).expect("code");
    let mut parity = vec![vec![0u8; shard_len]; usize::from(m)];
    for start in (0..shard_len).step_by(erasure::STRIPE_BYTES) {
        let end = (start + erasure::STRIPE_BYTES).min(shard_len);
        let inputs: Vec<&[u8]> = data.iter().map(|s| &s[start..end]).collect();
        let mut outputs: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[start..end]).collect();
        code.encode_sep(&inputs, &mut outputs).expect("rs");
    }
    parity
}

/// `reed-solomon-simd`'s parity over the same stripes (its own code: other parity bytes).
fn simd_parity(data: &[Vec<u8>], m: u16) -> Vec<Vec<u8>> {
    let shard_len = data[0].len();
    let mut parity = vec![vec![0u8; shard_len]; usize::from(m)];
    let mut encoder =
        reed_solomon_simd::ReedSolomonEncoder::new(data.len(), usize::from(m), 64).expect("rs");
    for start in (0..shard_len).step_by(erasure::STRIPE_BYTES) {
        let end = (start + erasure::STRIPE_BYTES).min(shard_len);
        encoder
            .reset(data.len(), usize::from(m), end - start)
            .expect("rs");
        for shard in data {
            encoder.add_original_shard(&shard[start..end]).expect("rs");
        }
        let result = encoder.encode().expect("rs");
        for (out, r) in parity.iter_mut().zip(result.recovery_iter()) {
            out[start..end].copy_from_slice(r);
        }
    }
    parity
}

/// The first `lost` data shards reconstructed in stripes from the others, without hashing.
fn erasure_restore(shards: &[Vec<u8>], k: u16, lost: usize) -> Vec<Vec<u8>> {
    let k = usize::from(k);
    let m = shards.len() - k;
    let code = ReedSolomon::new(k, m).expect("code");
    let shard_len = shards[0].len();
    let mut work: Vec<Vec<u8>> = vec![vec![0u8; erasure::STRIPE_BYTES.min(shard_len)]; k + m];
    let mut out = vec![vec![0u8; shard_len]; lost];
    for start in (0..shard_len).step_by(erasure::STRIPE_BYTES) {
        let end = (start + erasure::STRIPE_BYTES).min(shard_len);
        let mut pieces: Vec<(&mut [u8], bool)> = Vec::with_capacity(k + m);
        for (i, buffer) in work.iter_mut().enumerate() {
            let buffer = &mut buffer[..end - start];
            if i >= lost {
                buffer.copy_from_slice(&shards[i][start..end]);
            }
            pieces.push((buffer, i >= lost));
        }
        code.reconstruct_data(&mut pieces).expect("rs");
        for (o, piece) in out.iter_mut().zip(&pieces) {
            o[start..end].copy_from_slice(piece.0);
        }
    }
    out
}

/// `reed-solomon-simd` reconstructing the same loss from its own parity.
fn simd_restore(data: &[Vec<u8>], parity: &[Vec<u8>], lost: usize) -> Vec<Vec<u8>> {
    let (k, m) = (data.len(), parity.len());
    let shard_len = data[0].len();
    let mut out = vec![vec![0u8; shard_len]; lost];
    let mut decoder = reed_solomon_simd::ReedSolomonDecoder::new(k, m, 64).expect("rs");
    for start in (0..shard_len).step_by(erasure::STRIPE_BYTES) {
        let end = (start + erasure::STRIPE_BYTES).min(shard_len);
        decoder.reset(k, m, end - start).expect("rs");
        for (i, shard) in data.iter().enumerate().skip(lost) {
            decoder
                .add_original_shard(i, &shard[start..end])
                .expect("rs");
        }
        for (j, p) in parity.iter().enumerate() {
            decoder.add_recovery_shard(j, &p[start..end]).expect("rs");
        }
        let result = decoder.decode().expect("rs");
        for (i, bytes) in result.restored_original_iter() {
            out[i][start..end].copy_from_slice(bytes);
        }
    }
    out
}

//! Encode and decode throughput of the erasure layout: the coding on one core, the commitments
//! (BLAKE3 over 4 KiB chunks) apart.
//!
//! `cargo run --release -p piazza-blob --example bench_erasure [MiB] [k] [m]` (default 64 MiB
//! at the default 4 + 2). Decode is measured at its worst: the first `m` data shards lost, so
//! every stripe is reconstructed; verification (shard roots and the blob id) is timed apart.

use std::time::Instant;

use piazza_blob::erasure;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let k: u16 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(erasure::DATA_SHARDS_DEFAULT);
    let m: u16 = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(erasure::PARITY_SHARDS_DEFAULT);
    let len = mib << 20;
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 13) as u8)
        .collect();
    let gib = len as f64 / f64::from(1u32 << 30);

    let start = Instant::now();
    let encoded = erasure::encode(&data, k, m).expect("encode");
    let encode_s = start.elapsed().as_secs_f64();
    // The same work without the roots and id: the coding alone.
    let shards: Vec<&[u8]> = encoded.shards[..usize::from(k)]
        .iter()
        .map(Vec::as_slice)
        .collect();
    let start = Instant::now();
    let parity = reed_solomon_simd_parity(&shards, m);
    let parity_s = start.elapsed().as_secs_f64();
    assert_eq!(parity, encoded.shards[usize::from(k)..]);

    let lost = usize::from(m.min(k));
    let available: Vec<(u16, &[u8])> = encoded
        .shards
        .iter()
        .enumerate()
        .skip(lost)
        .map(|(i, s)| (i as u16, s.as_slice()))
        .collect();
    let start = Instant::now();
    let decoded = erasure::decode(&encoded.layout, &encoded.id, &available).expect("decode");
    let decode_s = start.elapsed().as_secs_f64();
    assert_eq!(decoded, data);
    let start = Instant::now();
    let restored = reed_solomon_simd_restore(&encoded.shards, k, m, lost);
    let restore_s = start.elapsed().as_secs_f64();
    assert_eq!(restored[..], encoded.shards[..lost]);
    let start = Instant::now();
    for (shard, root) in encoded.shards.iter().zip(&encoded.roots) {
        assert!(erasure::verify_shard(root, encoded.layout.shard_len, shard));
    }
    let verify_s = start.elapsed().as_secs_f64();

    println!(
        "blob {mib} MiB, k+m = {k}+{m}, shard {} bytes",
        encoded.layout.shard_len
    );
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "encode (parity + shard roots + id, hashed on {threads} threads): {:.2} GiB/s",
        gib / encode_s
    );
    println!(
        "parity alone (striped):             {:.2} GiB/s",
        gib / parity_s
    );
    println!(
        "decode ({lost} data shards lost, id checked): {:.2} GiB/s",
        gib / decode_s
    );
    println!(
        "reconstruct alone ({lost} lost, one core): {:.2} GiB/s",
        gib / restore_s
    );
    println!(
        "verify {} shard roots (one core):   {:.2} GiB/s of shards",
        encoded.shards.len(),
        gib * f64::from(k + m) / f64::from(k) / verify_s
    );
}

/// Parity over whole data shards in stripes, as `erasure::encode` codes it, without hashing.
fn reed_solomon_simd_parity(data: &[&[u8]], m: u16) -> Vec<Vec<u8>> {
    let shard_len = data[0].len();
    let mut parity = vec![vec![0u8; shard_len]; usize::from(m)];
    for start in (0..shard_len).step_by(erasure::STRIPE_BYTES) {
        let len = erasure::STRIPE_BYTES.min(shard_len - start);
        let stripes: Vec<&[u8]> = data.iter().map(|s| &s[start..start + len]).collect();
        let recovery = reed_solomon_simd::encode(data.len(), usize::from(m), &stripes).expect("rs");
        for (out, r) in parity.iter_mut().zip(recovery) {
            out[start..start + len].copy_from_slice(&r);
        }
    }
    parity
}

/// The first `lost` data shards reconstructed in stripes from the others, without hashing.
fn reed_solomon_simd_restore(shards: &[Vec<u8>], k: u16, m: u16, lost: usize) -> Vec<Vec<u8>> {
    let (k, m) = (usize::from(k), usize::from(m));
    let shard_len = shards[0].len();
    let mut out = vec![vec![0u8; shard_len]; lost];
    for start in (0..shard_len).step_by(erasure::STRIPE_BYTES) {
        let len = erasure::STRIPE_BYTES.min(shard_len - start);
        let originals = (lost..k).map(|i| (i, &shards[i][start..start + len]));
        let recovery = (0..m).map(|j| (j, &shards[k + j][start..start + len]));
        let restored = reed_solomon_simd::decode(k, m, originals, recovery).expect("rs");
        for (i, bytes) in restored {
            out[i][start..start + len].copy_from_slice(&bytes);
        }
    }
    out
}

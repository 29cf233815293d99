//! Microseconds per ed25519 signature on this machine, each way Piazza could verify one:
//! `ed25519-dalek`'s strict (cofactorless) single verification, with the key decompressed
//! each time and decompressed once; `ed25519-consensus` (ZIP-215, the reference of Piazza's
//! rule) single and in batches; Piazza's own (ZIP-215 on `curve25519-dalek` 4, keys cached).
//! Every batch here holds distinct keys (a flood of transfers from distinct senders).
//!
//! `cargo run --release -p piazza-primitives --example verify_bench [SIGNATURES]`

use ed25519_dalek::{Signer, SigningKey, Verifier as _};
use std::time::Instant;

struct Case {
    key: [u8; 32],
    message: Vec<u8>,
    signature: [u8; 64],
}

fn cases(count: usize) -> Vec<Case> {
    (0..count)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let key = SigningKey::from_bytes(&seed);
            let message = format!("transfer {i} of a flood, about the size of one").into_bytes();
            let signature = key.sign(&message).to_bytes();
            Case {
                key: key.verifying_key().to_bytes(),
                message,
                signature,
            }
        })
        .collect()
}

fn report(name: &str, count: usize, started: Instant, ok: bool) {
    let us = started.elapsed().as_secs_f64() * 1e6 / count as f64;
    println!("{name:<52} {us:>7.2} µs/signature  (all valid: {ok})");
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096);
    let all = cases(count);
    println!("{count} signatures, one key each, one thread");

    let started = Instant::now();
    let ok = all.iter().all(|c| {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&c.key).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&c.signature);
        key.verify_strict(&c.message, &sig).is_ok()
    });
    report(
        "dalek verify_strict, key decompressed each time",
        count,
        started,
        ok,
    );

    let keys: Vec<_> = all
        .iter()
        .map(|c| ed25519_dalek::VerifyingKey::from_bytes(&c.key).unwrap())
        .collect();
    let started = Instant::now();
    let ok = all.iter().zip(&keys).all(|(c, key)| {
        let sig = ed25519_dalek::Signature::from_bytes(&c.signature);
        key.verify_strict(&c.message, &sig).is_ok()
    });
    report(
        "dalek verify_strict, key decompressed once",
        count,
        started,
        ok,
    );

    let started = Instant::now();
    let ok = all.iter().zip(&keys).all(|(c, key)| {
        let sig = ed25519_dalek::Signature::from_bytes(&c.signature);
        key.verify(&c.message, &sig).is_ok()
    });
    report(
        "dalek verify (cofactorless, not strict), key once",
        count,
        started,
        ok,
    );

    let started = Instant::now();
    let ok = all.iter().all(|c| {
        let key = ed25519_consensus::VerificationKey::try_from(c.key).unwrap();
        key.verify(&c.signature.into(), &c.message).is_ok()
    });
    report(
        "ed25519-consensus single, key decompressed each time",
        count,
        started,
        ok,
    );

    let consensus_keys: Vec<_> = all
        .iter()
        .map(|c| ed25519_consensus::VerificationKey::try_from(c.key).unwrap())
        .collect();
    let started = Instant::now();
    let ok = all
        .iter()
        .zip(&consensus_keys)
        .all(|(c, key)| key.verify(&c.signature.into(), &c.message).is_ok());
    report(
        "ed25519-consensus single, key decompressed once",
        count,
        started,
        ok,
    );

    for batch in [16, 64, 256, 1024] {
        let started = Instant::now();
        let ok = all.chunks(batch).all(|part| {
            let mut verifier = ed25519_consensus::batch::Verifier::new();
            for c in part {
                verifier.queue((c.key.into(), c.signature.into(), &c.message));
            }
            verifier.verify(rand_core::OsRng).is_ok()
        });
        report(
            &format!("ed25519-consensus batch of {batch}"),
            count,
            started,
            ok,
        );
    }

    let items: Vec<(piazza_primitives::PublicKey, piazza_primitives::Signature)> = all
        .iter()
        .map(|c| {
            (
                piazza_primitives::PublicKey(c.key),
                piazza_primitives::Signature(c.signature),
            )
        })
        .collect();
    let signed: Vec<piazza_primitives::Signed<'_>> = items
        .iter()
        .zip(&all)
        .map(|((key, signature), c)| piazza_primitives::Signed {
            key,
            message: &c.message,
            signature,
        })
        .collect();
    let started = Instant::now();
    let ok = signed
        .iter()
        .all(|item| item.key.verify(item.message, item.signature).is_ok());
    report(
        "piazza PublicKey::verify (keys cached from here on)",
        count,
        started,
        ok,
    );

    let started = Instant::now();
    let ok = piazza_primitives::verify_batch(&signed)
        .iter()
        .all(Result::is_ok);
    report(
        &format!(
            "piazza verify_batch ({} a batch)",
            piazza_primitives::BATCH_SIGNATURES_MAX
        ),
        count,
        started,
        ok,
    );
}

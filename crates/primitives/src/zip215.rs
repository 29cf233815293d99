//! Piazza's signature rule, ZIP-215 (the rule of the `ed25519-consensus` crate, which the tests
//! check this against case by case), on `curve25519-dalek` 4: its vectorised backend makes a
//! signature ~20 % cheaper than `ed25519-consensus`'s serial one
//! (`examples/verify_bench.rs`), and decompressed keys are kept in a bounded cache.
//!
//! For key bytes `A`, signature bytes `R ‖ s` and message `M`: `s` below the group order, `A`
//! and `R` any 32 bytes that decompress to a curve point, `k = SHA-512(R ‖ A ‖ M) mod L` over
//! the bytes as sent, and `[8][s]B = [8]R + [8][k]A`. A batch checks the random combination
//! `[8](Σ zᵢRᵢ + Σ zᵢkᵢAᵢ − (Σ zᵢsᵢ)B) = 0` with 128-bit `zᵢ`: it holds if every equation holds,
//! and otherwise fails but for a chance of 2⁻¹²⁸ (every term is of prime order once multiplied
//! by 8), so single and batch verification agree.

use crate::keys::{KeyError, Signed};
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand_core::RngCore;
use sha2::{Digest, Sha512};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Decompressed public keys kept at most (~160 bytes each, so ~0.7 MiB). A full cache evicts an
/// arbitrary entry for each new key.
pub const KEY_CACHE_ENTRIES_MAX: usize = 4096;

static KEY_CACHE: LazyLock<Mutex<HashMap<[u8; 32], EdwardsPoint>>> =
    LazyLock::new(|| Mutex::new(HashMap::with_capacity(KEY_CACHE_ENTRIES_MAX)));

/// Each of `keys` decompressed (`None`: not a curve point), from the cache where it is there.
fn key_points<'a>(keys: impl Iterator<Item = &'a [u8; 32]> + Clone) -> Vec<Option<EdwardsPoint>> {
    let cached: Vec<Option<EdwardsPoint>> = {
        let cache = KEY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        keys.clone().map(|key| cache.get(key).copied()).collect()
    };
    let mut fresh = Vec::new();
    let points: Vec<Option<EdwardsPoint>> = keys
        .zip(cached)
        .map(|(key, cached)| {
            cached.or_else(|| {
                let point = CompressedEdwardsY(*key).decompress();
                fresh.extend(point.map(|p| (*key, p)));
                point
            })
        })
        .collect();
    if !fresh.is_empty() {
        let mut cache = KEY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        for (key, point) in fresh {
            if cache.len() >= KEY_CACHE_ENTRIES_MAX && !cache.contains_key(&key) {
                if let Some(old) = cache.keys().next().copied() {
                    cache.remove(&old);
                }
            }
            cache.insert(key, point);
        }
    }
    points
}

/// `R` decompressed and `s` read canonically, or `None` when either is refused.
fn r_and_s(signature: &[u8; 64]) -> Option<(EdwardsPoint, Scalar)> {
    let (r, s) = signature.split_at(32);
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(r);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(s);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    Some((CompressedEdwardsY(r_bytes).decompress()?, s))
}

/// `k = SHA-512(R ‖ A ‖ M) mod L`, over the bytes as sent.
fn challenge(signature: &[u8; 64], key: &[u8; 32], message: &[u8]) -> Scalar {
    let digest: [u8; 64] = Sha512::new()
        .chain_update(&signature[..32])
        .chain_update(key)
        .chain_update(message)
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&digest)
}

/// One signature: `[8](R − ([s]B − [k]A))` is the identity.
pub(crate) fn verify(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), KeyError> {
    let a = key_points(std::iter::once(key))
        .pop()
        .flatten()
        .ok_or(KeyError::InvalidPublicKey)?;
    let (r, s) = r_and_s(signature).ok_or(KeyError::BadSignature)?;
    let k = challenge(signature, key, message);
    let r_expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s);
    if (r - r_expected).mul_by_cofactor().is_identity() {
        Ok(())
    } else {
        Err(KeyError::BadSignature)
    }
}

/// Whether `key` decompresses to a point of small order (its eightfold is the identity): one of
/// the 8 torsion points, in any encoding ZIP-215 accepts. Such a key has no secret.
pub(crate) fn is_small_order(key: &[u8; 32]) -> bool {
    key_points(std::iter::once(key))
        .pop()
        .flatten()
        .is_some_and(|point| point.is_small_order())
}

/// Whether the batch equation holds for all of `items` (`false` as soon as a key or `R` does
/// not decompress or an `s` is not canonical, or when the OS gives no randomness).
pub(crate) fn batch_holds(items: &[Signed<'_>]) -> bool {
    let keys = key_points(items.iter().map(|item| &item.key.0));
    let mut randomness = vec![0u8; 16 * items.len()];
    if rand_core::OsRng.try_fill_bytes(&mut randomness).is_err() {
        // No randomness from the OS: the caller checks each signature on its own instead.
        return false;
    }
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    let mut b_coefficient = Scalar::ZERO;
    for ((item, a), z) in items.iter().zip(keys).zip(randomness.chunks_exact(16)) {
        let (Some(a), Some((r, s))) = (a, r_and_s(&item.signature.0)) else {
            return false;
        };
        let mut z_bytes = [0u8; 16];
        z_bytes.copy_from_slice(z);
        let z = Scalar::from(u128::from_le_bytes(z_bytes));
        let k = challenge(&item.signature.0, &item.key.0, item.message);
        b_coefficient -= z * s;
        scalars.push(z);
        points.push(r);
        scalars.push(z * k);
        points.push(a);
    }
    scalars.push(b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PublicKey, SecretKey};

    fn cached(key: &PublicKey) -> bool {
        let cache = KEY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.contains_key(&key.0)
    }

    #[test]
    fn a_cached_key_verifies_as_an_uncached_one_and_the_cache_is_bounded() {
        let secret = SecretKey::from_seed([0xc4; 32]);
        let key = secret.public_key();
        let signature = secret.sign(b"m");
        let first = (key.verify(b"m", &signature), key.verify(b"n", &signature));
        assert!(cached(&key));
        let again = (key.verify(b"m", &signature), key.verify(b"n", &signature));
        assert_eq!(first, (Ok(()), Err(KeyError::BadSignature)));
        assert_eq!(again, first);
        // A key that does not decompress is refused each time and never kept.
        let off_curve = (2u8..)
            .map(|y| {
                let mut bytes = [0u8; 32];
                bytes[0] = y;
                PublicKey(bytes)
            })
            .find(|k| CompressedEdwardsY(k.0).decompress().is_none())
            .expect("some small y is off the curve");
        for _ in 0..2 {
            assert_eq!(
                off_curve.verify(b"m", &signature),
                Err(KeyError::InvalidPublicKey)
            );
            assert!(!cached(&off_curve));
        }
        // More distinct keys than the bound: the cache stays within it, and each verifies.
        for i in 0..KEY_CACHE_ENTRIES_MAX as u32 + 64 {
            let mut seed = [0x5a; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let other = SecretKey::from_seed(seed);
            assert_eq!(other.public_key().verify(b"m", &other.sign(b"m")), Ok(()));
            let len = KEY_CACHE.lock().unwrap_or_else(|e| e.into_inner()).len();
            assert!(len <= KEY_CACHE_ENTRIES_MAX, "{len} keys cached");
        }
        assert_eq!(key.verify(b"m", &signature), Ok(()));
    }

    /// The 8 points of small order, built from the curve: `[L]P` of a point `P` is `P`'s torsion
    /// part (times `L`, odd), so some `P` gives a point of order exactly 8 whose multiples are all 8.
    fn torsion_points() -> Vec<EdwardsPoint> {
        let order_8 = (0u8..)
            .filter_map(|i| CompressedEdwardsY([i; 32]).decompress())
            .map(|p| p + p * (Scalar::ZERO - Scalar::ONE))
            .find(|t| !(t + t + t + t).is_identity())
            .expect("some point has a torsion part of order 8");
        let mut points = vec![EdwardsPoint::default()];
        for _ in 1..8 {
            points.push(points[points.len() - 1] + order_8);
        }
        points
    }

    #[test]
    fn the_eight_torsion_points_in_every_encoding_are_small_order_and_signing_keys_are_not() {
        let points = torsion_points();
        let mut encodings: Vec<[u8; 32]> = points.iter().map(|p| p.compress().0).collect();
        encodings.sort();
        encodings.dedup();
        assert_eq!(encodings.len(), 8, "8 distinct points");
        // Non-canonical encodings ZIP-215 accepts: the sign bit set on an `x = 0` point, and
        // `y + p` for the `y` below 19 (here `y = 0` and `y = 1`).
        let mut all = encodings.clone();
        for canonical in &encodings {
            let mut flipped = *canonical;
            flipped[31] ^= 0x80;
            all.push(flipped);
        }
        let p_plus = |y: u8| {
            let mut bytes = [0xff; 32];
            bytes[0] = 0xed + y;
            bytes[31] = 0x7f;
            bytes
        };
        all.extend([p_plus(0), p_plus(1)]);
        for bytes in &all {
            let point = CompressedEdwardsY(*bytes).decompress();
            assert!(point.is_some_and(|p| p.is_small_order()), "{bytes:02x?}");
            assert!(PublicKey(*bytes).is_small_order(), "{bytes:02x?}");
        }
        // A small-order key really has no secret: `R` = identity, `s` = 0 verifies any message.
        let mut forged = [0u8; 64];
        forged[0] = 1;
        for bytes in &encodings {
            let key = PublicKey(*bytes);
            assert_eq!(key.verify(b"any", &crate::Signature(forged)), Ok(()));
        }
        for seed in 0..64u8 {
            assert!(!SecretKey::from_seed([seed; 32])
                .public_key()
                .is_small_order());
        }
        let off_curve = (2u8..)
            .map(|y| [y; 32])
            .find(|k| CompressedEdwardsY(*k).decompress().is_none())
            .expect("some bytes are off the curve");
        assert!(!PublicKey(off_curve).is_small_order());
    }
}

//! A verifiable random function: ECVRF-EDWARDS25519-SHA512-TAI of RFC 9381 (suite `0x03`),
//! with the ed25519 keys Piazza already has (the secret scalar and nonce are derived from the
//! 32-byte seed exactly as ed25519 signing derives them).
//!
//! Why not a signature: an ed25519 signature is deterministic only when its signer follows the
//! standard nonce; a verifier accepts any nonce, so one key has ~2^252 valid signatures of one
//! message, and a block proposer deriving randomness from its signature could try them until
//! the randomness suits it. A VRF proof can be made many ways too, but every valid proof of one
//! input under one key gives the same output (`beta` depends only on `Gamma = x·H(input)`,
//! which the proof pins), so the output is unique and cannot be ground.
//!
//! Proof `pi = Gamma (32 bytes) ‖ c (16 bytes, little-endian) ‖ s (32 bytes, below the group
//! order)`; output `beta = SHA-512(0x03 ‖ 0x03 ‖ [8]Gamma ‖ 0x00)`. Verification refuses keys of
//! small order, non-canonical point encodings and `s` at or above the group order. The tests
//! check the three example proofs and outputs of RFC 9381 Appendix B.3 byte for byte.

use crate::keys::{KeyError, PublicKey, SecretKey};
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use sha2::{Digest, Sha512};
use std::fmt;

/// Bytes of a proof: `Gamma ‖ c ‖ s`.
pub const VRF_PROOF_BYTES: usize = 80;
/// Bytes of an output (`beta`).
pub const VRF_OUTPUT_BYTES: usize = 64;

/// The suite string of ECVRF-EDWARDS25519-SHA512-TAI.
const SUITE: u8 = 0x03;
/// Bytes of the challenge `c`.
const CHALLENGE_BYTES: usize = 16;
/// Tries of the hash-to-curve at most (each fails with probability ~1/2, so 256 failures in a
/// row have probability 2^-256).
const ENCODE_TRIES_MAX: u16 = 256;

/// A VRF proof, as its 80 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VrfProof(pub [u8; VRF_PROOF_BYTES]);

impl fmt::Debug for VrfProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VrfProof({})", hex::encode(self.0))
    }
}

impl Encode for VrfProof {
    fn encode(&self, w: &mut Writer) {
        w.array(&self.0)
    }
}

impl Decode for VrfProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(VrfProof(r.array()?))
    }
}

/// The point `bytes` encode, if they are a canonical encoding of a curve point (RFC 8032
/// §5.1.3: `y` below the field prime, no "negative zero" `x`).
fn point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (point.compress().0 == *bytes).then_some(point)
}

/// RFC 9381 §5.4.1.1, try-and-increment: the first counter whose hash of (suite, key, input)
/// decodes to a point, that point multiplied by the cofactor.
fn encode_to_curve(key: &[u8; 32], alpha: &[u8]) -> Option<EdwardsPoint> {
    (0..ENCODE_TRIES_MAX).find_map(|counter| {
        let digest = Sha512::new()
            .chain_update([SUITE, 0x01])
            .chain_update(key)
            .chain_update(alpha)
            .chain_update([counter as u8, 0x00])
            .finalize();
        let candidate: [u8; 32] = digest[..32].try_into().expect("32 of 64 bytes");
        point(&candidate).map(|p| p.mul_by_cofactor())
    })
}

/// RFC 9381 §5.4.3: the first 16 bytes of SHA-512 over the five points, as a scalar.
fn challenge(points: [&EdwardsPoint; 5]) -> [u8; CHALLENGE_BYTES] {
    let mut hasher = Sha512::new().chain_update([SUITE, 0x02]);
    for p in points {
        hasher.update(p.compress().0);
    }
    let digest = hasher.chain_update([0x00]).finalize();
    digest[..CHALLENGE_BYTES]
        .try_into()
        .expect("16 of 64 bytes")
}

fn challenge_scalar(c: &[u8; CHALLENGE_BYTES]) -> Scalar {
    let mut wide = [0u8; 32];
    wide[..CHALLENGE_BYTES].copy_from_slice(c);
    Scalar::from_bytes_mod_order(wide)
}

/// RFC 9381 §5.2: `beta` from `Gamma`.
fn output(gamma: &EdwardsPoint) -> [u8; VRF_OUTPUT_BYTES] {
    Sha512::new()
        .chain_update([SUITE, 0x03])
        .chain_update(gamma.mul_by_cofactor().compress().0)
        .chain_update([0x00])
        .finalize()
        .into()
}

impl SecretKey {
    /// The VRF proof of `alpha` under this key (RFC 9381 §5.1). Deterministic.
    pub fn vrf_prove(&self, alpha: &[u8]) -> VrfProof {
        let expanded = Sha512::digest(self.seed());
        let key = self.public_key().0;
        // A key's own bytes hash to a point but for a chance of 2^-256 per input; an input that
        // did not would give a proof no verifier accepts.
        let h = encode_to_curve(&key, alpha).unwrap_or(ED25519_BASEPOINT_POINT);
        let nonce = Sha512::new()
            .chain_update(&expanded[32..])
            .chain_update(h.compress().0)
            .finalize();
        prove_with_nonce(
            &expanded,
            h,
            Scalar::from_bytes_mod_order_wide(&nonce.into()),
        )
    }
}

/// The proof for the key whose expanded seed is `expanded`, the hashed input `h` and nonce `k`.
/// Any nonce gives a valid proof with the same `Gamma`, hence the same output; RFC 9381 fixes
/// the nonce only so that proving is deterministic.
fn prove_with_nonce(expanded: &[u8], h: EdwardsPoint, k: Scalar) -> VrfProof {
    let lower: [u8; 32] = expanded[..32].try_into().expect("32 of 64 bytes");
    let x = Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(lower));
    let gamma = x * h;
    let y = EdwardsPoint::mul_base(&x);
    let c = challenge([&y, &h, &gamma, &EdwardsPoint::mul_base(&k), &(k * h)]);
    let s = k + challenge_scalar(&c) * x;
    let mut proof = [0u8; VRF_PROOF_BYTES];
    proof[..32].copy_from_slice(&gamma.compress().0);
    proof[32..48].copy_from_slice(&c);
    proof[48..].copy_from_slice(s.as_bytes());
    VrfProof(proof)
}

impl PublicKey {
    /// Checks `proof` of `alpha` under this key (RFC 9381 §5.3) and returns its output, the
    /// same for every valid proof of `alpha` under this key.
    pub fn vrf_verify(
        &self,
        alpha: &[u8],
        proof: &VrfProof,
    ) -> Result<[u8; VRF_OUTPUT_BYTES], KeyError> {
        let y = point(&self.0).ok_or(KeyError::InvalidPublicKey)?;
        if y.is_small_order() {
            return Err(KeyError::InvalidPublicKey);
        }
        let gamma_bytes: [u8; 32] = proof.0[..32].try_into().expect("32 of 80 bytes");
        let gamma = point(&gamma_bytes).ok_or(KeyError::BadSignature)?;
        let c: [u8; CHALLENGE_BYTES] = proof.0[32..48].try_into().expect("16 of 80 bytes");
        let s_bytes: [u8; 32] = proof.0[48..].try_into().expect("32 of 80 bytes");
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))
            .ok_or(KeyError::BadSignature)?;
        let h = encode_to_curve(&self.0, alpha).ok_or(KeyError::BadSignature)?;
        let c_scalar = challenge_scalar(&c);
        let u = EdwardsPoint::vartime_double_scalar_mul_basepoint(&-c_scalar, &y, &s);
        let v = s * h - c_scalar * gamma;
        if challenge([&y, &h, &gamma, &u, &v]) != c {
            return Err(KeyError::BadSignature);
        }
        Ok(output(&gamma))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9381 Appendix B.3 (ECVRF-EDWARDS25519-SHA512-TAI), examples 16–18: secret key
    /// (seed), public key, alpha, pi, beta.
    const RFC_9381_B3: [(&str, &str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f26f8a57ccaed74ee1b190bed1f479d9727d2d0f9b005a6e456a35d4fb0daab1268a1b0db10836d9826a528ca76567805",
            "90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff66b71dda49d2de59d03450451af026798e8f81cd2e333de5cdf4f3e140fdd8ae",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed5933bf0864a62558b3ed7f2fea45c92a465301b3bbf5e3e54ddf2d935be3b67926da3ef39226bbc355bdc9850112c8f4b02",
            "eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb5e33821bc613efb94db5e5b54c70a848a0bef4553a41befc57663b56373a5031",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "9bc0f79119cc5604bf02d23b4caede71393cedfbb191434dd016d30177ccbf8096bb474e53895c362d8628ee9f9ea3c0e52c7a5c691b6c18c9979866568add7a2d41b00b05081ed0f58ee5e31b3a970e",
            "645427e5d00c62a23fb703732fa5d892940935942101e456ecca7bb217c61c452118fec1219202a0edcf038bb6373241578be7217ba85a2687f7a0310b2df19f",
        ),
    ];

    fn bytes<const N: usize>(text: &str) -> [u8; N] {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    #[test]
    fn rfc_9381_examples_prove_and_verify_byte_for_byte() {
        for (seed, key, alpha, pi, beta) in RFC_9381_B3 {
            let secret = SecretKey::from_seed(bytes(seed));
            assert_eq!(secret.public_key().to_hex(), key);
            let alpha = hex::decode(alpha).unwrap();
            let proof = secret.vrf_prove(&alpha);
            assert_eq!(hex::encode(proof.0), pi);
            let output = secret.public_key().vrf_verify(&alpha, &proof).unwrap();
            assert_eq!(hex::encode(output), beta);
        }
    }

    #[test]
    fn tampered_proofs_inputs_and_keys_are_refused() {
        let secret = SecretKey::from_seed([5; 32]);
        let key = secret.public_key();
        let proof = secret.vrf_prove(b"height 7");
        assert!(key.vrf_verify(b"height 7", &proof).is_ok());
        assert_eq!(
            key.vrf_verify(b"height 8", &proof),
            Err(KeyError::BadSignature)
        );
        for byte in [0, 31, 32, 47, 48, 79] {
            let mut bad = proof;
            bad.0[byte] ^= 1;
            assert!(key.vrf_verify(b"height 7", &bad).is_err(), "byte {byte}");
        }
        let other = SecretKey::from_seed([6; 32]).public_key();
        assert_eq!(
            other.vrf_verify(b"height 7", &proof),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn every_valid_proof_of_an_input_has_the_same_output() {
        // What makes block randomness ungrindable: a proposer free to pick its nonce gets
        // other valid proofs, never another output.
        let secret = SecretKey::from_seed([4; 32]);
        let key = secret.public_key();
        let expanded = Sha512::digest(secret.seed());
        let h = encode_to_curve(&key.0, b"height 9").unwrap();
        let honest = secret.vrf_prove(b"height 9");
        let beta = key.vrf_verify(b"height 9", &honest).unwrap();
        for k in [1u64, 2, 99, u64::MAX] {
            let other = prove_with_nonce(&expanded, h, Scalar::from(k));
            assert_ne!(other, honest);
            assert_eq!(key.vrf_verify(b"height 9", &other), Ok(beta));
        }
    }

    #[test]
    fn s_at_or_above_the_group_order_is_refused() {
        let secret = SecretKey::from_seed([9; 32]);
        let proof = secret.vrf_prove(b"x");
        // s + L (L the group order, little-endian) is the same residue in 32 bytes (s < L <
        // 2^253); the verifier must refuse it (RFC 9381 §5.3: s at or above the order).
        let order: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut widened = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = proof.0[48 + i] as u16 + order[i] as u16 + carry;
            widened[i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        let mut bad = proof;
        bad.0[48..].copy_from_slice(&widened);
        assert_eq!(
            secret.public_key().vrf_verify(b"x", &bad),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn small_order_and_non_canonical_keys_are_refused() {
        let proof = SecretKey::from_seed([3; 32]).vrf_prove(b"x");
        let identity = PublicKey(EdwardsPoint::default().compress().0);
        assert_eq!(
            identity.vrf_verify(b"x", &proof),
            Err(KeyError::InvalidPublicKey)
        );
        // y = p (non-canonical encoding of y = 0) and the "negative zero" encoding of y = 1.
        let mut y_is_p = [0xff; 32];
        y_is_p[0] = 0xed;
        y_is_p[31] = 0x7f;
        let mut negative_zero = [0u8; 32];
        negative_zero[0] = 1;
        negative_zero[31] = 0x80;
        for bytes in [y_is_p, negative_zero] {
            assert_eq!(
                PublicKey(bytes).vrf_verify(b"x", &proof),
                Err(KeyError::InvalidPublicKey)
            );
        }
    }
}

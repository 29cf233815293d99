//! Piazza's signature rule (ZIP-215): single and batch verification answer the same for every
//! kind of signature, honest or crafted (keys and `R` of small or mixed order, non-canonical
//! encodings, non-canonical `s`), as the reference implementation (`ed25519-consensus`) does,
//! and a batch finds its bad signatures.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use piazza_primitives::{
    verify_batch, KeyError, PublicKey, SecretKey, Signature, Signed, BATCH_SIGNATURES_MAX,
};
use sha2::{Digest, Sha512};

/// The group order L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// A signature to check, how it was made, and whether the rule accepts it.
struct Case {
    name: String,
    key: PublicKey,
    message: Vec<u8>,
    signature: Signature,
    valid: bool,
}

fn scalar(seed: u8) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&[seed; 64])
}

fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
    let digest: [u8; 64] = Sha512::new()
        .chain_update(r)
        .chain_update(a)
        .chain_update(message)
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&digest)
}

/// An ed25519 signature by secret scalar `a` whose key is sent as `key_bytes` (an encoding of
/// `[a]B + torsion`) with nonce `[r]B + r_torsion` sent as `r_bytes`: `s = r + k·a`.
fn sign_raw(
    a: Scalar,
    key_bytes: [u8; 32],
    r: Scalar,
    r_bytes: [u8; 32],
    message: &[u8],
) -> Signature {
    let s = r + challenge(&r_bytes, &key_bytes, message) * a;
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&r_bytes);
    signature[32..].copy_from_slice(s.as_bytes());
    Signature(signature)
}

fn point(scalar: Scalar, torsion: EdwardsPoint) -> [u8; 32] {
    (ED25519_BASEPOINT_POINT * scalar + torsion)
        .compress()
        .to_bytes()
}

/// Encodings of small-order points that are not the canonical ones: the identity (y = 1) as
/// y = p + 1, and the points with x = 0 (y = ±1) with the sign bit set ("negative zero").
fn non_canonical_small_order() -> Vec<[u8; 32]> {
    let mut y_plus_p = [0xff; 32];
    y_plus_p[0] = 0xee;
    y_plus_p[31] = 0x7f;
    let mut identity_negative_zero = [0; 32];
    identity_negative_zero[0] = 1;
    identity_negative_zero[31] = 0x80;
    let mut minus_one_negative_zero = EIGHT_TORSION[4].compress().to_bytes();
    minus_one_negative_zero[31] |= 0x80;
    let encodings = vec![y_plus_p, identity_negative_zero, minus_one_negative_zero];
    for bytes in &encodings {
        let decoded = CompressedEdwardsY(*bytes)
            .decompress()
            .expect("decompresses");
        assert!(decoded.is_small_order());
        assert_ne!(decoded.compress().to_bytes(), *bytes, "not canonical");
    }
    encodings
}

/// 32 bytes that decompress to no curve point.
fn not_a_point() -> [u8; 32] {
    (2u8..)
        .map(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            bytes
        })
        .find(|bytes| CompressedEdwardsY(*bytes).decompress().is_none())
        .expect("some small y is off the curve")
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let message = b"piazza transfer".to_vec();

    // Honest signatures, and the same signatures on another message or key.
    for seed in 0..4u8 {
        let secret = SecretKey::from_seed([seed; 32]);
        let signature = secret.sign(&message);
        cases.push(Case {
            name: format!("honest {seed}"),
            key: secret.public_key(),
            message: message.clone(),
            signature,
            valid: true,
        });
        cases.push(Case {
            name: format!("wrong message {seed}"),
            key: secret.public_key(),
            message: b"another transfer".to_vec(),
            signature,
            valid: false,
        });
        cases.push(Case {
            name: format!("wrong key {seed}"),
            key: SecretKey::from_seed([seed + 100; 32]).public_key(),
            message: message.clone(),
            signature,
            valid: false,
        });
    }

    // Small-order keys and R (every 8-torsion point and some non-canonical encodings) with
    // s = 0: both sides of [8][s]B = [8]R + [8][k]A are the identity.
    let small: Vec<[u8; 32]> = EIGHT_TORSION
        .iter()
        .map(|p| p.compress().to_bytes())
        .chain(non_canonical_small_order())
        .collect();
    for (i, key) in small.iter().enumerate() {
        for (j, r) in small.iter().enumerate() {
            cases.push(Case {
                name: format!("small-order key {i}, R {j}"),
                key: PublicKey(*key),
                message: message.clone(),
                signature: sign_raw(Scalar::ZERO, *key, Scalar::ZERO, *r, &message),
                valid: true,
            });
        }
    }

    // Mixed-order keys and R: a prime-order point plus a torsion component, with s made as
    // an honest signer makes it. The cofactored equation removes the torsion.
    for (t, torsion) in EIGHT_TORSION.iter().enumerate().skip(1) {
        let (a, r) = (scalar(t as u8), scalar(40 + t as u8));
        let key = point(a, *torsion);
        let r_plain = point(r, EIGHT_TORSION[0]);
        let r_mixed = point(r, *torsion);
        cases.push(Case {
            name: format!("mixed-order key, torsion {t}"),
            key: PublicKey(key),
            message: message.clone(),
            signature: sign_raw(a, key, r, r_plain, &message),
            valid: true,
        });
        let plain_key = point(a, EIGHT_TORSION[0]);
        cases.push(Case {
            name: format!("mixed-order R, torsion {t}"),
            key: PublicKey(plain_key),
            message: message.clone(),
            signature: sign_raw(a, plain_key, r, r_mixed, &message),
            valid: true,
        });
        cases.push(Case {
            name: format!("mixed-order key, torsion {t}, wrong message"),
            key: PublicKey(key),
            message: b"another transfer".to_vec(),
            signature: sign_raw(a, key, r, r_plain, &message),
            valid: false,
        });
    }

    // s not canonical: the honest signature with s + L (still below 2^256) is refused.
    let secret = SecretKey::from_seed([9; 32]);
    let mut signature = secret.sign(&message);
    let order = GROUP_ORDER;
    assert_eq!(Scalar::from_bytes_mod_order(order), Scalar::ZERO);
    let mut carry = 0u16;
    for (byte, add) in signature.0[32..].iter_mut().zip(order) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    cases.push(Case {
        name: "s + L".into(),
        key: secret.public_key(),
        message: message.clone(),
        signature,
        valid: false,
    });

    // A key or R that is no curve point.
    let honest = secret.sign(&message);
    cases.push(Case {
        name: "key off the curve".into(),
        key: PublicKey(not_a_point()),
        message: message.clone(),
        signature: honest,
        valid: false,
    });
    let mut off_curve_r = honest;
    off_curve_r.0[..32].copy_from_slice(&not_a_point());
    cases.push(Case {
        name: "R off the curve".into(),
        key: secret.public_key(),
        message,
        signature: off_curve_r,
        valid: false,
    });
    cases
}

fn signed(case: &Case) -> Signed<'_> {
    Signed {
        key: &case.key,
        message: &case.message,
        signature: &case.signature,
    }
}

fn single(case: &Case) -> Result<(), KeyError> {
    case.key.verify(&case.message, &case.signature)
}

/// The reference implementation of the rule: `ed25519-consensus`.
fn reference(case: &Case) -> bool {
    ed25519_consensus::VerificationKey::try_from(case.key.0)
        .and_then(|key| key.verify(&case.signature.0.into(), &case.message))
        .is_ok()
}

#[test]
fn single_verification_follows_the_rule_as_the_reference_does() {
    for case in cases() {
        assert_eq!(single(&case).is_ok(), case.valid, "{}", case.name);
        assert_eq!(reference(&case), case.valid, "{} (reference)", case.name);
    }
}

#[test]
fn batch_answers_what_single_answers_alone_and_among_honest_signatures() {
    let cases = cases();
    let honest: Vec<&Case> = cases
        .iter()
        .filter(|c| c.name.starts_with("honest"))
        .collect();
    for case in &cases {
        assert_eq!(
            verify_batch(&[signed(case)]),
            vec![single(case)],
            "{}",
            case.name
        );
        // The case between honest signatures: the batch fails exactly when the case does,
        // and the case's answer is the single one.
        let mut items: Vec<Signed<'_>> = honest.iter().map(|c| signed(c)).collect();
        items.insert(2, signed(case));
        let answers = verify_batch(&items);
        assert_eq!(answers[2], single(case), "{}", case.name);
        for (i, answer) in answers.iter().enumerate().filter(|(i, _)| *i != 2) {
            assert_eq!(*answer, Ok(()), "{} at {i}", case.name);
        }
    }
}

#[test]
fn all_cases_in_one_batch_answer_as_one_by_one() {
    let cases = cases();
    assert!(cases.len() > BATCH_SIGNATURES_MAX, "spans several batches");
    let items: Vec<Signed<'_>> = cases.iter().map(signed).collect();
    let expected: Vec<Result<(), KeyError>> = cases.iter().map(single).collect();
    assert_eq!(verify_batch(&items), expected);
    // Only the valid ones, in one long batch: all accepted.
    let valid: Vec<Signed<'_>> = cases.iter().filter(|c| c.valid).map(signed).collect();
    assert!(verify_batch(&valid).iter().all(Result::is_ok));
}

#[test]
fn one_bad_signature_in_a_full_batch_is_found() {
    let message = b"transfer".to_vec();
    let keys: Vec<SecretKey> = (0..BATCH_SIGNATURES_MAX * 2 + 3)
        .map(|i| SecretKey::from_seed([i as u8; 32]))
        .collect();
    let publics: Vec<PublicKey> = keys.iter().map(SecretKey::public_key).collect();
    let mut signatures: Vec<Signature> = keys.iter().map(|k| k.sign(&message)).collect();
    let bad = BATCH_SIGNATURES_MAX + 5;
    signatures[bad].0[40] ^= 1;
    let items: Vec<Signed<'_>> = publics
        .iter()
        .zip(&signatures)
        .map(|(key, signature)| Signed {
            key,
            message: &message,
            signature,
        })
        .collect();
    let answers = verify_batch(&items);
    assert_eq!(answers.len(), items.len());
    for (i, answer) in answers.iter().enumerate() {
        let expected = if i == bad {
            Err(KeyError::BadSignature)
        } else {
            Ok(())
        };
        assert_eq!(*answer, expected, "signature {i}");
    }
    assert!(verify_batch(&[]).is_empty());
}

#[test]
fn strict_signatures_stay_valid_and_the_rule_is_wider_only_for_crafted_ones() {
    // Every signature that the former rule (strict single verification) accepts is accepted:
    // an honest signer's signatures, for many keys and messages.
    for seed in 0..32u8 {
        let secret = SecretKey::from_seed([seed; 32]);
        let message = vec![seed; usize::from(seed)];
        let signature = secret.sign(&message);
        let strict = ed25519_dalek::VerifyingKey::from_bytes(&secret.public_key().0)
            .unwrap()
            .verify_strict(
                &message,
                &ed25519_dalek::Signature::from_bytes(&signature.0),
            );
        assert!(strict.is_ok());
        assert_eq!(secret.public_key().verify(&message, &signature), Ok(()));
    }
    // What it widens: a small-order key with s = 0 verifies under ZIP-215, not under strict.
    let key = EIGHT_TORSION[1].compress().to_bytes();
    let signature = sign_raw(Scalar::ZERO, key, Scalar::ZERO, key, b"m");
    assert_eq!(PublicKey(key).verify(b"m", &signature), Ok(()));
    assert!(ed25519_dalek::VerifyingKey::from_bytes(&key)
        .unwrap()
        .verify_strict(b"m", &ed25519_dalek::Signature::from_bytes(&signature.0))
        .is_err());
}

#[test]
fn perturbed_signatures_are_judged_as_the_reference_judges_them() {
    // Honest signatures with one byte of the key, R, s or message changed, and random bytes
    // in those places: single, batch and the reference agree on each.
    let mut cases = Vec::new();
    for i in 0..400u32 {
        let noise = blake3::hash(&i.to_le_bytes());
        let noise = noise.as_bytes();
        let secret = SecretKey::from_seed([(i % 7) as u8; 32]);
        let message = format!("transfer {i}").into_bytes();
        let mut case = Case {
            name: format!("perturbed {i}"),
            key: secret.public_key(),
            signature: secret.sign(&message),
            message,
            valid: true,
        };
        let at = usize::from(noise[1]);
        match i % 5 {
            0 => case.key.0[at % 32] ^= noise[2] | 1,
            1 => case.signature.0[at % 32] ^= noise[2] | 1,
            2 => case.signature.0[32 + at % 32] ^= noise[2] | 1,
            3 => case.message.push(noise[2]),
            _ => case.key.0.copy_from_slice(noise),
        }
        case.valid = reference(&case);
        cases.push(case);
    }
    assert!(
        cases.iter().any(|c| !c.valid),
        "some perturbations are refused"
    );
    let items: Vec<Signed<'_>> = cases.iter().map(signed).collect();
    let batch = verify_batch(&items);
    for (case, answer) in cases.iter().zip(batch) {
        assert_eq!(single(case).is_ok(), case.valid, "{}", case.name);
        assert_eq!(answer.is_ok(), case.valid, "{} (batch)", case.name);
    }
}

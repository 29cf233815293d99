use crate::{Address, Hash};
use ed25519_dalek::{Signer, SigningKey};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use std::fmt;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("not a valid ed25519 public key")]
    InvalidPublicKey,
    #[error("signature does not verify")]
    BadSignature,
}

/// Signatures checked together in one batch equation at most. A batch that fails is checked
/// again one signature at a time, so a bad signature costs its whole batch a second pass: 64
/// keeps that bounded while giving most of the gain (`examples/verify_bench.rs`).
pub const BATCH_SIGNATURES_MAX: usize = 64;

/// An ed25519 signing key. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    pub fn generate() -> Self {
        SecretKey(SigningKey::generate(&mut rand_core::OsRng))
    }
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }
    /// The 32-byte seed; handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public_key().address())
    }
}

/// An ed25519 public key as its 32 compressed bytes. Validity is checked when verifying.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn address(&self) -> Address {
        let digest = Hash::of("piazza/address", &[&self.0]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest.0[..20]);
        Address(out)
    }

    /// Checks `signature` over `message` by this key with Piazza's signature rule, ZIP-215
    /// (the rule of `ed25519-consensus`; see `zip215`): `s` must be canonical (below the group order), the key and `R`
    /// may be any 32 bytes that decompress to a curve point (non-canonical encodings and
    /// points of small or mixed order included), and the equation is the cofactored
    /// `[8][s]B = [8]R + [8][k]A` with `k = SHA-512(R ‖ A ‖ message)` over the bytes as sent.
    /// Batch verification ([`verify_batch`]) follows the same rule and answers the same.
    /// Every signature an ed25519 signer makes is valid under it.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), KeyError> {
        crate::zip215::verify(&self.0, message, &signature.0)
    }

    /// Whether this key is of small order: one of the 8 torsion points of the curve, in any
    /// encoding that decompresses. Such a key has no secret, and under ZIP-215 anyone can sign
    /// for it (`R` of small order with `s = 0` verifies every message), so the ledger refuses
    /// it wherever a key signs a transaction or is registered or bound to value.
    pub fn is_small_order(&self) -> bool {
        crate::zip215::is_small_order(&self.0)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

/// One signature of a batch: `signature` by `key` over `message`.
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    pub key: &'a PublicKey,
    pub message: &'a [u8],
    pub signature: &'a Signature,
}

/// Checks many signatures, [`BATCH_SIGNATURES_MAX`] in one batch equation (about half the
/// work of checking them one by one), and answers for each, in order, exactly what
/// [`PublicKey::verify`] answers: both follow ZIP-215, under which a batch holds if and only
/// if each of its signatures does (but for a chance of 2^-128 per batch, from the random
/// coefficients, which change no answer otherwise). A batch that fails is checked one
/// signature at a time to find the bad ones and their errors.
pub fn verify_batch(items: &[Signed<'_>]) -> Vec<Result<(), KeyError>> {
    let mut results = Vec::with_capacity(items.len());
    for part in items.chunks(BATCH_SIGNATURES_MAX) {
        if part.len() > 1 && crate::zip215::batch_holds(part) {
            results.extend(part.iter().map(|_| Ok(())));
        } else {
            results.extend(part.iter().map(|i| i.key.verify(i.message, i.signature)));
        }
    }
    results
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl Signature {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Encode for PublicKey {
    fn encode(&self, w: &mut Writer) {
        w.array(&self.0)
    }
}
impl Decode for PublicKey {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PublicKey(r.array()?))
    }
}
impl Encode for Signature {
    fn encode(&self, w: &mut Writer) {
        w.array(&self.0)
    }
}
impl Decode for Signature {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Signature(r.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = SecretKey::from_seed([1; 32]);
        let sig = key.sign(b"m");
        assert_eq!(key.public_key().verify(b"m", &sig), Ok(()));
        assert_eq!(
            key.public_key().verify(b"n", &sig),
            Err(KeyError::BadSignature)
        );
        let other = SecretKey::from_seed([2; 32]).public_key();
        assert_eq!(other.verify(b"m", &sig), Err(KeyError::BadSignature));
        assert!(!format!("{key:?}").contains(&hex::encode(key.seed())));
    }
}

//! Piazza's primitive values: BLAKE3 hashes, ed25519 keys, signatures and VRF proofs ([`VrfProof`]),
//! checksummed addresses, `u128` amounts and the canonical encoding of a chat job's input
//! ([`chat`]).
//!
//! Invariants:
//! - Every hash is domain-separated: [`Hash::of`] takes a domain tag so that bytes meant for one
//!   purpose can never be confused with bytes meant for another.
//! - Signatures follow one rule, ZIP-215 (that of `ed25519-consensus`), in single and batch
//!   verification alike, so the two never disagree: `s` canonical (below the group order), key
//!   and `R` any encodings that decompress, the cofactored equation `[8][s]B = [8]R + [8][k]A`.
//!   Every signature an ed25519 signer makes verifies; signing is plain ed25519.
//! - [`Amount`] arithmetic is checked; nothing here wraps or saturates silently.
//! - Addresses are shown as bech32m with the prefix `pz`; parsing checks the checksum and prefix.
//!
//! ```
//! use piazza_primitives::{Address, Amount, SecretKey};
//! let key = SecretKey::from_seed([7; 32]);
//! let address = key.public_key().address();
//! assert_eq!(address.to_string().parse::<Address>().unwrap(), address);
//! let sig = key.sign(b"piazza");
//! assert!(key.public_key().verify(b"piazza", &sig).is_ok());
//! assert_eq!(Amount::pza(1).checked_add(Amount::new(1)).unwrap().base_units(), 1_000_000_001);
//! ```

/// JSON carries the value as its `Display` string and parses it back with `FromStr`.
macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

mod address;
mod amount;
pub mod blake3_lanes;
pub mod blob;
pub mod chat;
mod hash;
mod keys;
mod vrf;
mod zip215;

pub use address::{Address, AddressError};
pub use amount::{Amount, AmountParseError, PZA_DECIMALS};
pub use hash::{blake3_words, Hash};
pub use keys::{
    verify_batch, KeyError, PublicKey, SecretKey, Signature, Signed, BATCH_SIGNATURES_MAX,
};
pub use vrf::{VrfProof, VRF_OUTPUT_BYTES, VRF_PROOF_BYTES};
pub use zip215::KEY_CACHE_ENTRIES_MAX;

use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use std::fmt;
use std::str::FromStr;

/// BLAKE3's compression words the `blake3` crate does not export: its IV and domain flags, for
/// the code that hashes many messages across SIMD lanes through `blake3::platform`
/// (`piazza_blob::commit`, the LLM's trace leaves).
pub mod blake3_words {
    /// The initial chaining value (SHA-256's IV).
    pub const IV: [u32; 8] = [
        0x6A09_E667,
        0xBB67_AE85,
        0x3C6E_F372,
        0xA54F_F53A,
        0x510E_527F,
        0x9B05_688C,
        0x1F83_D9AB,
        0x5BE0_CD19,
    ];
    pub const CHUNK_START: u8 = 1;
    pub const CHUNK_END: u8 = 2;
    pub const PARENT: u8 = 4;
    pub const ROOT: u8 = 8;
}

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    /// Hashes `parts` under a domain tag. The tag is length-prefixed so that no tag is a prefix
    /// of another's input.
    pub fn of(domain: &str, parts: &[&[u8]]) -> Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&(domain.len() as u32).to_le_bytes());
        hasher.update(domain.as_bytes());
        for part in parts {
            hasher.update(part);
        }
        Hash(*hasher.finalize().as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl FromStr for Hash {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Hash(out))
    }
}

impl Encode for Hash {
    fn encode(&self, w: &mut Writer) {
        w.array(&self.0)
    }
}

impl Decode for Hash {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Hash(r.array()?))
    }
}

serde_as_string!(Hash);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate() {
        assert_ne!(Hash::of("a", &[b"bc"]), Hash::of("ab", &[b"c"]));
        assert_eq!(Hash::of("a", &[b"b", b"c"]), Hash::of("a", &[b"bc"]));
        let h = Hash::of("x", &[]);
        assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
    }
}

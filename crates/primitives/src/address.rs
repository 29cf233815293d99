use bech32::{Bech32m, Hrp};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

const HRP: Hrp = Hrp::parse_unchecked("pz");

/// A 20-byte account address, derived from a public key (or a module name) and shown as bech32m
/// with the prefix `pz`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddressError {
    #[error("not a bech32m address: {0}")]
    Encoding(String),
    #[error("address prefix is `{0}`, expected `pz`")]
    WrongPrefix(String),
    #[error("address holds {0} bytes, expected 20")]
    WrongLength(usize),
}

impl Address {
    /// The address of a ledger module's own account (for example the staking pool). No key
    /// signs for it.
    pub fn module(name: &str) -> Address {
        let digest = crate::Hash::of("piazza/module-address", &[name.as_bytes()]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest.0[..20]);
        Address(out)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = bech32::encode::<Bech32m>(HRP, &self.0).map_err(|_| fmt::Error)?;
        f.write_str(&s)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let checked = bech32::primitives::decode::CheckedHrpstring::new::<Bech32m>(s)
            .map_err(|e| AddressError::Encoding(e.to_string()))?;
        if checked.hrp() != HRP {
            return Err(AddressError::WrongPrefix(checked.hrp().to_string()));
        }
        let data: Vec<u8> = checked.byte_iter().collect();
        let bytes: [u8; 20] = data
            .as_slice()
            .try_into()
            .map_err(|_| AddressError::WrongLength(data.len()))?;
        Ok(Address(bytes))
    }
}

impl Encode for Address {
    fn encode(&self, w: &mut Writer) {
        w.array(&self.0)
    }
}
impl Decode for Address {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Address(r.array()?))
    }
}

serde_as_string!(Address);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_checksum_and_prefix() {
        let a = Address([9; 20]).to_string();
        assert!(a.starts_with("pz1"));
        let mut corrupted = a.clone().into_bytes();
        let last = corrupted.len() - 1;
        corrupted[last] = if corrupted[last] == b'q' { b'p' } else { b'q' };
        assert!(matches!(
            String::from_utf8(corrupted).unwrap().parse::<Address>(),
            Err(AddressError::Encoding(_))
        ));
        let other = bech32::encode::<Bech32m>(Hrp::parse_unchecked("xx"), &[9; 20]).unwrap();
        assert_eq!(
            other.parse::<Address>(),
            Err(AddressError::WrongPrefix("xx".into()))
        );
    }

    proptest! {
        #[test]
        fn round_trip(bytes: [u8; 20]) {
            let a = Address(bytes);
            prop_assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        }
    }
}

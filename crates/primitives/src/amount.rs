use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Base units per PZA is `10^PZA_DECIMALS`.
pub const PZA_DECIMALS: u32 = 9;
const UNITS_PER_PZA: u128 = 10u128.pow(PZA_DECIMALS);

/// An amount of an asset in base units. Arithmetic is checked.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u128);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AmountParseError {
    #[error("`{0}` is not a decimal amount")]
    NotDecimal(String),
    #[error("`{0}` has more than {PZA_DECIMALS} decimal places")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    Overflow(String),
}

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub const fn new(base_units: u128) -> Self {
        Amount(base_units)
    }
    /// Whole PZA.
    pub const fn pza(whole: u64) -> Self {
        Amount(whole as u128 * UNITS_PER_PZA)
    }
    pub const fn base_units(self) -> u128 {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
    pub fn checked_mul(self, factor: u128) -> Option<Amount> {
        self.0.checked_mul(factor).map(Amount)
    }
    /// `self × numerator ÷ denominator`, rounded down; `None` on overflow or a zero denominator.
    pub fn checked_mul_div(self, numerator: u128, denominator: u128) -> Option<Amount> {
        if denominator == 0 {
            return None;
        }
        self.0
            .checked_mul(numerator)
            .map(|p| Amount(p / denominator))
    }
}

/// Shown in PZA with up to nine decimals and no trailing zeros: `1.5`, `0.000000001`, `12`.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNITS_PER_PZA;
        let frac = self.0 % UNITS_PER_PZA;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let frac = format!("{frac:0width$}", width = PZA_DECIMALS as usize);
        write!(f, "{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} PZA")
    }
}

/// Parses decimal PZA: `12`, `1.5`, `.25`.
impl FromStr for Amount {
    type Err = AmountParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AmountParseError::NotDecimal(s.to_string());
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if frac.len() > PZA_DECIMALS as usize {
            return Err(AmountParseError::TooPrecise(s.to_string()));
        }
        let overflow = || AmountParseError::Overflow(s.to_string());
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        let frac_units: u128 = if frac.is_empty() {
            0
        } else {
            let padded = format!("{frac:0<width$}", width = PZA_DECIMALS as usize);
            padded.parse().map_err(|_| bad())?
        };
        whole
            .checked_mul(UNITS_PER_PZA)
            .and_then(|w| w.checked_add(frac_units))
            .map(Amount)
            .ok_or_else(overflow)
    }
}

impl Encode for Amount {
    fn encode(&self, w: &mut Writer) {
        w.u128(self.0)
    }
}
impl Decode for Amount {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Amount(r.u128()?))
    }
}

/// JSON carries amounts as decimal strings of base units: JSON numbers cannot hold a `u128`.
impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<u128>()
            .map(Amount)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_display() {
        for (text, units) in [
            ("1", UNITS_PER_PZA),
            ("1.5", UNITS_PER_PZA * 3 / 2),
            ("0.000000001", 1),
            (".25", UNITS_PER_PZA / 4),
        ] {
            assert_eq!(text.parse::<Amount>().unwrap(), Amount(units), "{text}");
        }
        assert_eq!(Amount(1).to_string(), "0.000000001");
        assert_eq!(Amount::pza(12).to_string(), "12");
        assert!(matches!(
            "1.0000000001".parse::<Amount>(),
            Err(AmountParseError::TooPrecise(_))
        ));
        assert!(matches!(
            "-1".parse::<Amount>(),
            Err(AmountParseError::NotDecimal(_))
        ));
        assert!(matches!(
            ".".parse::<Amount>(),
            Err(AmountParseError::NotDecimal(_))
        ));
        assert!(matches!(
            "1e9".parse::<Amount>(),
            Err(AmountParseError::NotDecimal(_))
        ));
        assert!(matches!(
            "999999999999999999999999999999999999".parse::<Amount>(),
            Err(AmountParseError::Overflow(_))
        ));
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Amount(u128::MAX).checked_add(Amount(1)), None);
        assert_eq!(Amount(0).checked_sub(Amount(1)), None);
        assert_eq!(Amount(10).checked_mul_div(3, 4), Some(Amount(7)));
        assert_eq!(Amount(10).checked_mul_div(3, 0), None);
    }

    proptest! {
        #[test]
        fn display_round_trips(units: u128) {
            let a = Amount(units);
            prop_assert_eq!(a.to_string().parse::<Amount>().unwrap(), a);
        }
    }
}

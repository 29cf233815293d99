//! Piazza's canonical binary encoding: one byte string per value, for everything that is hashed
//! or signed.
//!
//! Invariants:
//! - Encoding is canonical: integers are fixed-width little-endian, lengths are `u32` prefixes,
//!   booleans and option tags are exactly `0` or `1`, enum tags are one byte. Two equal values have
//!   equal bytes and a decoder accepts exactly the bytes its encoder produces.
//! - Decoding is bounded: every variable-length field is read with an explicit maximum, and the
//!   decoder never allocates more than the bytes it has been given. Untrusted bytes can produce a
//!   [`DecodeError`], never a panic.
//! - This crate knows nothing of Piazza's types; it is the grammar, not the vocabulary.
//!
//! ```
//! use piazza_codec::{Decode, Encode, Reader, Writer, DecodeError};
//! struct Pair { a: u64, name: String }
//! impl Encode for Pair {
//!     fn encode(&self, w: &mut Writer) { w.u64(self.a); w.str(&self.name); }
//! }
//! impl Decode for Pair {
//!     fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
//!         Ok(Pair { a: r.u64()?, name: r.string(32)? })
//!     }
//! }
//! let bytes = Pair { a: 7, name: "x".into() }.to_bytes();
//! let back = Pair::from_bytes(&bytes).unwrap();
//! assert_eq!((back.a, back.name.as_str()), (7, "x"));
//! ```

use thiserror::Error;

/// Why a byte string is not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("unexpected end of input: needed {needed} more bytes at offset {offset}")]
    UnexpectedEnd { offset: usize, needed: usize },
    #[error("length {length} exceeds the limit {limit} at offset {offset}")]
    TooLong {
        offset: usize,
        length: usize,
        limit: usize,
    },
    #[error("invalid tag {tag} for {what} at offset {offset}")]
    InvalidTag {
        offset: usize,
        tag: u8,
        what: &'static str,
    },
    #[error("{trailing} trailing bytes after the value")]
    TrailingBytes { trailing: usize },
    #[error("invalid UTF-8 string at offset {offset}")]
    InvalidUtf8 { offset: usize },
    #[error("invalid value for {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// Appends canonical bytes.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    pub fn bool(&mut self, value: bool) {
        self.bytes.push(value as u8);
    }
    pub fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub fn u128(&mut self, value: u128) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    /// Fixed-size bytes, no length prefix.
    pub fn array(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
    }
    /// Variable-size bytes with a `u32` length prefix.
    pub fn bytes(&mut self, value: &[u8]) {
        self.len(value.len());
        self.bytes.extend_from_slice(value);
    }
    pub fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }
    /// A `u32` length prefix. Lengths beyond `u32::MAX` cannot be produced by any bounded type.
    pub fn len(&mut self, len: usize) {
        let len = u32::try_from(len).expect("encoded lengths are bounded far below u32::MAX");
        self.u32(len);
    }
    pub fn value<T: Encode + ?Sized>(&mut self, value: &T) {
        value.encode(self);
    }
    pub fn option<T: Encode>(&mut self, value: &Option<T>) {
        match value {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                v.encode(self);
            }
        }
    }
    pub fn seq<T: Encode>(&mut self, values: &[T]) {
        self.len(values.len());
        for v in values {
            v.encode(self);
        }
    }
}

/// Reads canonical bytes with explicit limits.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// The bytes read since `start`, an earlier [`Reader::offset`].
    pub fn read_since(&self, start: usize) -> &'a [u8] {
        &self.bytes[start.min(self.offset)..self.offset]
    }
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }
    /// Fails unless every byte has been read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            trailing => Err(DecodeError::TrailingBytes { trailing }),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::UnexpectedEnd {
                offset: self.offset,
                needed: n - self.remaining(),
            });
        }
        let out = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        Ok(out)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        let offset = self.offset;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "bool",
            }),
        }
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    /// A length prefix, checked against `limit` before anything is allocated.
    pub fn len(&mut self, limit: usize) -> Result<usize, DecodeError> {
        let offset = self.offset;
        let length = self.u32()? as usize;
        if length > limit {
            return Err(DecodeError::TooLong {
                offset,
                length,
                limit,
            });
        }
        Ok(length)
    }
    pub fn bytes(&mut self, limit: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.len(limit)?;
        Ok(self.take(n)?.to_vec())
    }
    pub fn string(&mut self, limit: usize) -> Result<String, DecodeError> {
        let offset = self.offset;
        let bytes = self.bytes(limit)?;
        String::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { offset })
    }
    pub fn value<T: Decode>(&mut self) -> Result<T, DecodeError> {
        T::decode(self)
    }
    pub fn option<T: Decode>(&mut self) -> Result<Option<T>, DecodeError> {
        let offset = self.offset;
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(self)?)),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "option",
            }),
        }
    }
    /// A sequence of at most `limit` elements. Capacity is reserved only up to what the
    /// remaining input could hold, so a hostile length cannot force a large allocation.
    pub fn seq<T: Decode>(&mut self, limit: usize) -> Result<Vec<T>, DecodeError> {
        let n = self.len(limit)?;
        let mut out = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            out.push(T::decode(self)?);
        }
        Ok(out)
    }
}

/// A value with a canonical encoding.
pub trait Encode {
    fn encode(&self, w: &mut Writer);
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// A value that can be read back from its canonical encoding.
pub trait Decode: Sized {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    /// Decodes a whole byte string: trailing bytes are an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let value = Self::decode(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

macro_rules! int_codec {
    ($($t:ident),*) => {$(
        impl Encode for $t {
            fn encode(&self, w: &mut Writer) { w.$t(*self) }
        }
        impl Decode for $t {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> { r.$t() }
        }
    )*};
}
int_codec!(u8, u16, u32, u64, u128);

impl Encode for bool {
    fn encode(&self, w: &mut Writer) {
        w.bool(*self)
    }
}
impl Decode for bool {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.bool()
    }
}
impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, w: &mut Writer) {
        w.array(self)
    }
}
impl<const N: usize> Decode for [u8; N] {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.array()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lengths_are_checked_before_allocation() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let bytes = w.into_bytes();
        let err = Reader::new(&bytes).bytes(1024).unwrap_err();
        assert!(
            matches!(err, DecodeError::TooLong { length, limit: 1024, .. } if length == u32::MAX as usize)
        );
        let err = Reader::new(&bytes).seq::<u64>(usize::MAX).unwrap_err();
        assert!(matches!(err, DecodeError::UnexpectedEnd { .. }));
    }

    #[test]
    fn non_canonical_tags_are_rejected() {
        assert!(matches!(
            bool::from_bytes(&[2]),
            Err(DecodeError::InvalidTag { tag: 2, .. })
        ));
        assert!(matches!(
            Reader::new(&[7]).option::<u8>(),
            Err(DecodeError::InvalidTag { tag: 7, .. })
        ));
        assert!(matches!(
            u16::from_bytes(&[1, 0, 0]),
            Err(DecodeError::TrailingBytes { trailing: 1 })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(a: u64, b: u128, s in ".{0,40}", v in proptest::collection::vec(any::<u32>(), 0..20), o: Option<u16>) {
            let mut w = Writer::new();
            w.u64(a); w.u128(b); w.str(&s); w.seq(&v); w.option(&o);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.u64().unwrap(), a);
            prop_assert_eq!(r.u128().unwrap(), b);
            prop_assert_eq!(r.string(1000).unwrap(), s);
            prop_assert_eq!(r.seq::<u32>(100).unwrap(), v);
            prop_assert_eq!(r.option::<u16>().unwrap(), o);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = r.string(16).and_then(|_| r.seq::<u64>(8)).and_then(|_| r.option::<u128>());
        }
    }
}

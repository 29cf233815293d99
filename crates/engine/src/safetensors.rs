//! A bounded, validating reader for the safetensors format.
//!
//! Layout: `u64` little-endian header length `N`, then `N` bytes of JSON mapping each tensor name
//! to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data after the
//! header), plus an optional `__metadata__` map of strings.
//!
//! Every check happens before any tensor byte is read: the header length is capped, every
//! dtype must be known, every shape's byte size must equal its offset range (checked
//! arithmetic), ranges must lie inside the data and must not overlap. A malformed file is a
//! typed [`SafeTensorsError`], never a panic.

use std::collections::BTreeMap;

use piazza_tensor::{bf16_bits_to_f32, f16_bits_to_f32, Tensor};

/// Largest header accepted (the JSON index); real models stay far below it.
pub const HEADER_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most tensors one file may declare.
pub const TENSORS_MAX: usize = 65_536;
/// Most dimensions one tensor may have.
pub const RANK_MAX: usize = 8;

/// Element types a safetensors file may declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl Dtype {
    fn parse(text: &str) -> Option<Dtype> {
        Some(match text {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            _ => return None,
        })
    }

    pub fn size_bytes(self) -> u64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// Whether the engine computes with this type (converted exactly to f32).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
}

/// Why a safetensors file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SafeTensorsError {
    #[error("safetensors: file of {len} bytes is too short for the 8-byte header length")]
    TooShort { len: usize },
    #[error("safetensors: header length {len} exceeds the limit {max} or the file")]
    HeaderLength { len: u64, max: u64 },
    #[error("safetensors: header is not valid JSON: {detail}")]
    HeaderJson { detail: String },
    #[error("safetensors: header declares {count} tensors, more than {max}")]
    TooManyTensors { count: usize, max: usize },
    #[error("safetensors: tensor {name:?}: unknown dtype {dtype:?}")]
    UnknownDtype { name: String, dtype: String },
    #[error("safetensors: tensor {name:?}: bad shape {shape:?}")]
    BadShape { name: String, shape: Vec<u64> },
    #[error(
        "safetensors: tensor {name:?}: offsets {begin}..{end} do not fit {dtype:?} {shape:?} \
         inside {data_len} data bytes"
    )]
    BadOffsets {
        name: String,
        dtype: Dtype,
        shape: Vec<u64>,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("safetensors: tensors {first:?} and {second:?} overlap")]
    Overlap { first: String, second: String },
    #[error("safetensors: tensor {name:?} not found")]
    Missing { name: String },
    #[error("safetensors: tensor {name:?} has dtype {dtype:?}; expected F32, F16 or BF16")]
    NotFloat { name: String, dtype: Dtype },
}

/// One tensor's entry in the header (validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub begin: usize,
    pub end: usize,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A parsed safetensors file: validated index plus the raw bytes.
#[derive(Debug)]
pub struct SafeTensors {
    tensors: BTreeMap<String, TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

impl SafeTensors {
    /// Parse and validate `bytes` (the whole file).
    pub fn parse(bytes: Vec<u8>) -> Result<SafeTensors, SafeTensorsError> {
        let Some(length_bytes) = bytes.get(..8) else {
            return Err(SafeTensorsError::TooShort { len: bytes.len() });
        };
        let header_len = u64::from_le_bytes(length_bytes.try_into().expect("8 bytes"));
        let available = bytes.len() as u64 - 8;
        if header_len > HEADER_BYTES_MAX || header_len > available {
            return Err(SafeTensorsError::HeaderLength {
                len: header_len,
                max: HEADER_BYTES_MAX.min(available),
            });
        }
        let data_start = 8 + header_len as usize;
        let header = &bytes[8..data_start];
        let raw: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|error| SafeTensorsError::HeaderJson {
                detail: error.to_string(),
            })?;
        if raw.len() > TENSORS_MAX {
            return Err(SafeTensorsError::TooManyTensors {
                count: raw.len(),
                max: TENSORS_MAX,
            });
        }
        let data_len = (bytes.len() - data_start) as u64;
        let mut tensors = BTreeMap::new();
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let entry: RawEntry =
                serde_json::from_value(value).map_err(|error| SafeTensorsError::HeaderJson {
                    detail: format!("tensor {name:?}: {error}"),
                })?;
            let info = validate(&name, entry, data_len)?;
            tensors.insert(name, info);
        }
        // No two tensors may share bytes.
        let mut ranges: Vec<(&String, &TensorInfo)> = tensors.iter().collect();
        ranges.sort_by_key(|(_, info)| (info.begin, info.end));
        for pair in ranges.windows(2) {
            let ((first, a), (second, b)) = (pair[0], pair[1]);
            if b.begin < a.end {
                return Err(SafeTensorsError::Overlap {
                    first: first.clone(),
                    second: second.clone(),
                });
            }
        }
        Ok(SafeTensors {
            tensors,
            bytes,
            data_start,
        })
    }

    /// Tensor names and entries, in name order.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// The raw bytes of one tensor.
    pub fn data(&self, name: &str) -> Result<&[u8], SafeTensorsError> {
        let info = self.info(name)?;
        Ok(&self.bytes[self.data_start + info.begin..self.data_start + info.end])
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo, SafeTensorsError> {
        self.tensors
            .get(name)
            .ok_or_else(|| SafeTensorsError::Missing {
                name: name.to_string(),
            })
    }

    /// One float tensor converted exactly to f32.
    pub fn to_f32(&self, name: &str) -> Result<Tensor, SafeTensorsError> {
        let info = self.info(name)?;
        let data = self.data(name)?;
        let values: Vec<f32> = match info.dtype {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            dtype => {
                return Err(SafeTensorsError::NotFloat {
                    name: name.to_string(),
                    dtype,
                })
            }
        };
        Tensor::from_vec(values, &info.shape).map_err(|_| SafeTensorsError::BadShape {
            name: name.to_string(),
            shape: info.shape.iter().map(|&d| d as u64).collect(),
        })
    }
}

fn validate(name: &str, entry: RawEntry, data_len: u64) -> Result<TensorInfo, SafeTensorsError> {
    let dtype = Dtype::parse(&entry.dtype).ok_or_else(|| SafeTensorsError::UnknownDtype {
        name: name.to_string(),
        dtype: entry.dtype.clone(),
    })?;
    let bad_shape = || SafeTensorsError::BadShape {
        name: name.to_string(),
        shape: entry.shape.clone(),
    };
    if entry.shape.len() > RANK_MAX {
        return Err(bad_shape());
    }
    let mut elements: u64 = 1;
    for &dim in &entry.shape {
        elements = elements.checked_mul(dim).ok_or_else(bad_shape)?;
    }
    let [begin, end] = entry.data_offsets;
    let size = elements.checked_mul(dtype.size_bytes());
    if begin > end || end > data_len || size != Some(end - begin) {
        return Err(SafeTensorsError::BadOffsets {
            name: name.to_string(),
            dtype,
            shape: entry.shape,
            begin,
            end,
            data_len,
        });
    }
    Ok(TensorInfo {
        dtype,
        // usize is 64 bits on every supported target; Tensor::from_vec bounds the element count.
        shape: entry.shape.iter().map(|&dim| dim as usize).collect(),
        begin: begin as usize,
        end: end as usize,
    })
}

//! A bounded, validating reader for GGUF v3 files, and the exact dequantization rules.
//!
//! The whole file is untrusted. Every count, length and offset read from it is checked against
//! a named limit and against the bytes that remain before anything is allocated, so a hostile
//! file yields a [`GgufError`], never a panic or an allocation larger than the file.
//!
//! Supported tensor types: F32, F16, Q4_0, Q4_1, Q8_0 (see [`GgmlType`]). Quantized values are
//! dequantized to f32 by rules that leave nothing to the platform (docs/llm.md §2):
//! - Q4_0: `d * (q - 8)`; Q8_0: `d * q` — one f32 product of an f16 scale and a small integer,
//!   which is exact (the integer has at most 8 significant bits, the f16 scale 11).
//! - Q4_1: `d * q + m`, computed as an f32 product (exact) and then one rounded f32 addition;
//!   never a fused multiply-add.

use std::collections::BTreeMap;
use std::path::Path;

use piazza_tensor::{f16_bits_to_f32, Tensor};

/// `GGUF` in the first four bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The only container version read.
pub const VERSION: u32 = 3;
/// Largest file read into memory.
pub const FILE_BYTES_MAX: u64 = 8 << 30;
/// Most tensors in one file.
pub const TENSORS_MAX: u64 = 65_536;
/// Most metadata key/value pairs in one file.
pub const METADATA_ENTRIES_MAX: u64 = 65_536;
/// Longest metadata string (the chat template is the longest in practice).
pub const STRING_BYTES_MAX: u64 = 1 << 20;
/// Longest key or tensor name.
pub const NAME_BYTES_MAX: u64 = 1024;
/// Most elements in one metadata array (vocabularies and merge lists are the longest).
pub const ARRAY_LEN_MAX: u64 = 1 << 22;
/// Most dimensions of a tensor.
pub const RANK_MAX: u32 = 4;
/// Most elements of one tensor (piazza-tensor's limit).
pub const TENSOR_ELEMENTS_MAX: u64 = 1 << 32;
/// Default and largest allowed `general.alignment`.
pub const ALIGNMENT_DEFAULT: u64 = 32;
pub const ALIGNMENT_MAX: u64 = 1 << 16;

/// What is wrong with a GGUF file. Every variant says where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("gguf: file is {len} bytes, more than the {max}-byte limit")]
    FileTooLarge { len: u64, max: u64 },
    #[error("gguf: truncated reading {what} at byte {offset}")]
    Truncated { what: &'static str, offset: u64 },
    #[error("gguf: bad magic {found:02x?} (expected \"GGUF\")")]
    Magic { found: Vec<u8> },
    #[error("gguf: version {version} is not supported (only {VERSION})")]
    Version { version: u32 },
    #[error("gguf: {what} count {count} exceeds {max}")]
    TooMany {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("gguf: {what} of {len} bytes exceeds {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("gguf: {what} at byte {offset} is not UTF-8")]
    Utf8 { what: &'static str, offset: u64 },
    #[error("gguf: metadata {key:?}: {detail}")]
    Metadata { key: String, detail: String },
    #[error("gguf: tensor {name:?}: {detail}")]
    Tensor { name: String, detail: String },
}

type Result<T, E = GgufError> = std::result::Result<T, E>;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value as a non-negative integer, whatever its integer width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as f32 (an F64 is rounded once to f32).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(values) => Some(values),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }
}

/// Tensor element types read by this crate (GGML type ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            _ => return None,
        })
    }

    /// Elements per block.
    pub fn block_elements(self) -> u64 {
        match self {
            GgmlType::F32 | GgmlType::F16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
        }
    }
}

/// One tensor's entry in the header (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost (contiguous) axis.
    pub dims: Vec<u64>,
    pub dtype: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub byte_len: u64,
}

impl TensorInfo {
    /// Row-major shape (outermost first): GGUF's dims reversed. A `[out, in]` weight matrix
    /// is stored with `dims = [in, out]`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file: metadata, tensor directory and the raw bytes.
#[derive(Debug, Clone)]
pub struct Gguf {
    metadata: BTreeMap<String, Value>,
    tensors: BTreeMap<String, TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

/// A bounds-checked cursor over the file (also over the tokenizer metadata preimage,
/// [`crate::tokenizer::Tokenizer::from_metadata_preimage`], which holds values in GGUF's
/// encoding).
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn remaining(&self) -> u64 {
        (self.bytes.len() - self.at) as u64
    }

    pub(crate) fn take(&mut self, len: u64, what: &'static str) -> Result<&'a [u8]> {
        if len > self.remaining() {
            return Err(GgufError::Truncated {
                what,
                offset: self.at as u64,
            });
        }
        let start = self.at;
        self.at += len as usize;
        Ok(&self.bytes[start..self.at])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &'static str, max: u64) -> Result<String> {
        let len = self.u64(what)?;
        if len > max {
            return Err(GgufError::TooLong { what, len, max });
        }
        let offset = self.at as u64;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Utf8 { what, offset })
    }

    /// A value of type `type_id`; arrays may not nest.
    pub(crate) fn value(&mut self, key: &str, type_id: u32, in_array: bool) -> Result<Value> {
        const WHAT: &str = "metadata value";
        Ok(match type_id {
            0 => Value::U8(self.array::<1>(WHAT)?[0]),
            1 => Value::I8(self.array::<1>(WHAT)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(WHAT)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(WHAT)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(WHAT)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(WHAT)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(WHAT)?)),
            7 => match self.array::<1>(WHAT)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => {
                    return Err(GgufError::Metadata {
                        key: key.to_string(),
                        detail: format!("bool byte {other}"),
                    })
                }
            },
            8 => Value::String(self.string("metadata string", STRING_BYTES_MAX)?),
            9 if !in_array => {
                let element_type = self.u32("array type")?;
                let len = self.u64("array length")?;
                if len > ARRAY_LEN_MAX {
                    return Err(GgufError::TooMany {
                        what: "array element",
                        count: len,
                        max: ARRAY_LEN_MAX,
                    });
                }
                // Each element needs at least this many bytes: refuse before allocating.
                let element_bytes_min = match element_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => {
                        return Err(GgufError::Metadata {
                            key: key.to_string(),
                            detail: format!("array element type {element_type}"),
                        })
                    }
                };
                if len.saturating_mul(element_bytes_min) > self.remaining() {
                    return Err(GgufError::Truncated {
                        what: "metadata array",
                        offset: self.at as u64,
                    });
                }
                let mut values = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    values.push(self.value(key, element_type, true)?);
                }
                Value::Array(values)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(WHAT)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(WHAT)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(WHAT)?)),
            other => {
                return Err(GgufError::Metadata {
                    key: key.to_string(),
                    detail: format!(
                        "value type {other}{}",
                        if in_array { " in an array" } else { "" }
                    ),
                })
            }
        })
    }
}

impl Gguf {
    /// Read and parse the file at `path` (at most [`FILE_BYTES_MAX`] bytes).
    pub fn open(path: &Path) -> std::result::Result<Gguf, crate::Error> {
        let io = |source| crate::Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > FILE_BYTES_MAX {
            return Err(GgufError::FileTooLarge {
                len,
                max: FILE_BYTES_MAX,
            }
            .into());
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Ok(Gguf::parse(bytes)?)
    }

    /// Parse and validate a whole file held in memory.
    pub fn parse(bytes: Vec<u8>) -> Result<Gguf> {
        if bytes.len() as u64 > FILE_BYTES_MAX {
            return Err(GgufError::FileTooLarge {
                len: bytes.len() as u64,
                max: FILE_BYTES_MAX,
            });
        }
        let mut reader = Reader {
            bytes: &bytes,
            at: 0,
        };
        let magic = reader.array::<4>("magic")?;
        if magic != MAGIC {
            return Err(GgufError::Magic {
                found: magic.to_vec(),
            });
        }
        let version = reader.u32("version")?;
        if version != VERSION {
            return Err(GgufError::Version { version });
        }
        let tensor_count = reader.u64("tensor count")?;
        if tensor_count > TENSORS_MAX {
            return Err(GgufError::TooMany {
                what: "tensor",
                count: tensor_count,
                max: TENSORS_MAX,
            });
        }
        let entry_count = reader.u64("metadata count")?;
        if entry_count > METADATA_ENTRIES_MAX {
            return Err(GgufError::TooMany {
                what: "metadata entry",
                count: entry_count,
                max: METADATA_ENTRIES_MAX,
            });
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..entry_count {
            let key = reader.string("metadata key", NAME_BYTES_MAX)?;
            let type_id = reader.u32("metadata type")?;
            let value = reader.value(&key, type_id, false)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::Metadata {
                    key,
                    detail: "duplicate key".into(),
                });
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => ALIGNMENT_DEFAULT,
            Some(value) => match value.as_u64() {
                Some(a) if a.is_power_of_two() && a <= ALIGNMENT_MAX => a,
                _ => {
                    return Err(GgufError::Metadata {
                        key: "general.alignment".into(),
                        detail: format!("{value:?} is not a power of two up to {ALIGNMENT_MAX}"),
                    })
                }
            },
        };
        let mut infos = Vec::with_capacity(tensor_count.min(reader.remaining() / 24) as usize);
        for _ in 0..tensor_count {
            infos.push(read_tensor_info(&mut reader)?);
        }
        let header_end = reader.at as u64;
        let data_start = header_end.div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        if data_start > file_len && tensor_count > 0 {
            return Err(GgufError::Truncated {
                what: "data section",
                offset: file_len,
            });
        }
        let data_len = file_len.saturating_sub(data_start);
        let mut tensors = BTreeMap::new();
        for info in infos {
            let fail = |detail: String| GgufError::Tensor {
                name: info.name.clone(),
                detail,
            };
            if info.offset % alignment != 0 {
                return Err(fail(format!(
                    "offset {} is not a multiple of the alignment {alignment}",
                    info.offset
                )));
            }
            match info.offset.checked_add(info.byte_len) {
                Some(end) if end <= data_len => {}
                _ => {
                    return Err(fail(format!(
                        "bytes {}+{} run past the data section ({data_len} bytes)",
                        info.offset, info.byte_len
                    )))
                }
            }
            let name = info.name.clone();
            if tensors.insert(name.clone(), info).is_some() {
                return Err(GgufError::Tensor {
                    name,
                    detail: "duplicate name".into(),
                });
            }
        }
        let mut ranges: Vec<(u64, u64, &str)> = tensors
            .values()
            .map(|t| (t.offset, t.offset + t.byte_len, t.name.as_str()))
            .collect();
        ranges.sort();
        for pair in ranges.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(GgufError::Tensor {
                    name: pair[1].2.to_string(),
                    detail: format!("overlaps tensor {:?}", pair[0].2),
                });
            }
        }
        let data_start = data_start.min(file_len) as usize;
        Ok(Gguf {
            metadata,
            tensors,
            bytes,
            data_start,
        })
    }

    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Tensors by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// The stored bytes of tensor `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        let info = self.tensors.get(name)?;
        let start = self.data_start + info.offset as usize;
        Some(&self.bytes[start..start + info.byte_len as usize])
    }

    /// Consume the file: hand every tensor's stored bytes to `visit`, last in the data section
    /// first, and release the data behind each one as it goes (the allocation shrinks), so a
    /// loader that keeps what it reads never holds the whole file beside it.
    pub fn drain_tensors(
        mut self,
        mut visit: impl FnMut(&TensorInfo, &[u8]) -> std::result::Result<(), crate::Error>,
    ) -> std::result::Result<(), crate::Error> {
        let mut infos: Vec<TensorInfo> = std::mem::take(&mut self.tensors).into_values().collect();
        infos.sort_by_key(|info| std::cmp::Reverse(info.offset));
        for info in infos {
            // The parser checked that every tensor lies inside the data section.
            let start = self.data_start + info.offset as usize;
            let end = start + info.byte_len as usize;
            visit(&info, &self.bytes[start..end])?;
            self.bytes.truncate(start);
            self.bytes.shrink_to_fit();
        }
        Ok(())
    }

    /// Tensor `name` dequantized to f32 with its row-major shape.
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        let info = self.tensors.get(name).ok_or_else(|| GgufError::Tensor {
            name: name.to_string(),
            detail: "missing".into(),
        })?;
        let bytes = self.tensor_bytes(name).unwrap_or_default();
        let mut values = vec![0.0f32; info.element_count() as usize];
        dequantize(info.dtype, bytes, &mut values);
        Tensor::from_vec(values, &info.shape()).map_err(|e| GgufError::Tensor {
            name: name.to_string(),
            detail: e.to_string(),
        })
    }
}

fn read_tensor_info(reader: &mut Reader<'_>) -> Result<TensorInfo> {
    let name = reader.string("tensor name", NAME_BYTES_MAX)?;
    let fail = |detail: String| GgufError::Tensor {
        name: name.clone(),
        detail,
    };
    let rank = reader.u32("tensor rank")?;
    if rank == 0 || rank > RANK_MAX {
        return Err(fail(format!("rank {rank} (1..={RANK_MAX} allowed)")));
    }
    let mut dims = Vec::with_capacity(rank as usize);
    for _ in 0..rank {
        dims.push(reader.u64("tensor dimension")?);
    }
    let type_id = reader.u32("tensor type")?;
    let offset = reader.u64("tensor offset")?;
    let dtype = GgmlType::from_id(type_id).ok_or_else(|| {
        fail(format!(
            "type id {type_id} is not supported (F32, F16, Q4_0, Q4_1, Q8_0)"
        ))
    })?;
    let mut count = 1u64;
    for &dim in &dims {
        count = match count.checked_mul(dim) {
            Some(c) if dim > 0 && c <= TENSOR_ELEMENTS_MAX => c,
            _ => {
                return Err(fail(format!(
                    "dims {dims:?}: zero or more than {TENSOR_ELEMENTS_MAX} elements"
                )))
            }
        };
    }
    if dims[0] % dtype.block_elements() != 0 {
        return Err(fail(format!(
            "inner dimension {} is not a multiple of the {dtype:?} block ({})",
            dims[0],
            dtype.block_elements()
        )));
    }
    let byte_len = count / dtype.block_elements() * dtype.block_bytes();
    Ok(TensorInfo {
        name,
        dims,
        dtype,
        offset,
        byte_len,
    })
}

/// Dequantize `bytes` of type `dtype` into `out` (the specification; docs/llm.md §2).
///
/// `bytes.len()` must be `out.len() / block_elements * block_bytes` (the reader checks it);
/// a mismatch leaves the extra output elements at their value.
pub fn dequantize(dtype: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let f16 = |b: &[u8]| f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    match dtype {
        GgmlType::F32 => {
            for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
        GgmlType::F16 => {
            for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *value = f16(chunk);
            }
        }
        GgmlType::Q4_0 => {
            for (block, values) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
                let d = f16(&block[0..2]);
                for j in 0..16 {
                    let q = block[2 + j];
                    values[j] = d * ((q & 0x0f) as i32 - 8) as f32;
                    values[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (block, values) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
                let d = f16(&block[0..2]);
                let m = f16(&block[2..4]);
                for j in 0..16 {
                    let q = block[4 + j];
                    let low = d * (q & 0x0f) as f32;
                    let high = d * (q >> 4) as f32;
                    values[j] = low + m;
                    values[j + 16] = high + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (block, values) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
                let d = f16(&block[0..2]);
                for j in 0..32 {
                    values[j] = d * (block[2 + j] as i8) as f32;
                }
            }
        }
    }
}

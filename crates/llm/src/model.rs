//! The Llama-family configuration from GGUF metadata, and the f32 weights.
//!
//! Weights keep their GGUF names (`blk.{L}.attn_q.weight`, …) and PyTorch layout `[out, in]`.
//! llama.cpp's converter permutes the rows of `attn_q` and `attn_k` inside each head so that its
//! interleaved RoPE (pairs `(2i, 2i+1)`) applies; this crate undoes that permutation at load
//! (as Hugging Face transformers does when it reads a GGUF), so the rotate-half RoPE of
//! `piazza-tensor` (pairs `(i, i + d/2)`) applies. The permutation only moves rows: exact.

use std::collections::BTreeMap;

use piazza_engine::weights::Weights;
use piazza_tensor::quant::{BlockFormat, QuantMatrix};
use piazza_tensor::Tensor;

use crate::gguf::{Gguf, GgufError, TensorInfo};
use crate::{Error, Result};

/// Largest hidden size, FFN size, layer count, head count and context accepted from a file.
pub const HIDDEN_MAX: usize = 16_384;
pub const FFN_MAX: usize = 65_536;
pub const LAYERS_MAX: usize = 256;
pub const HEADS_MAX: usize = 1024;
pub const VOCAB_MAX: usize = 1 << 20;
pub const CONTEXT_MAX: usize = 1 << 20;

/// First bytes of [`LlamaConfig::canonical_bytes`].
pub const CONFIG_TAG: &[u8] = b"piazza.llama.config.v1";
/// Length of [`LlamaConfig::canonical_bytes`]: the tag, eight u64 and two f32.
pub const CONFIG_BYTES: usize = CONFIG_TAG.len() + 8 * 8 + 2 * 4;

/// The shape and constants of a Llama-family decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    /// Longest sequence the model was trained for (`llama.context_length`).
    pub context: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
}

impl LlamaConfig {
    /// Read and check `llama.*` metadata.
    pub fn from_gguf(file: &Gguf) -> Result<LlamaConfig> {
        let architecture = text(file, "general.architecture")?;
        if architecture != "llama" {
            return Err(metadata_error(
                "general.architecture",
                format!("{architecture:?} is not supported (only \"llama\")"),
            ));
        }
        let layers = integer(file, "llama.block_count", LAYERS_MAX)?;
        let hidden = integer(file, "llama.embedding_length", HIDDEN_MAX)?;
        let ffn = integer(file, "llama.feed_forward_length", FFN_MAX)?;
        let heads = integer(file, "llama.attention.head_count", HEADS_MAX)?;
        let kv_heads = match file.get("llama.attention.head_count_kv") {
            Some(_) => integer(file, "llama.attention.head_count_kv", HEADS_MAX)?,
            None => heads,
        };
        let context = integer(file, "llama.context_length", CONTEXT_MAX)?;
        if hidden % heads != 0 || heads % kv_heads != 0 {
            return Err(metadata_error(
                "llama.attention.head_count",
                format!("{heads} heads / {kv_heads} kv heads do not divide hidden {hidden}"),
            ));
        }
        let head_dim = hidden / heads;
        if let Some(value) = file.get("llama.rope.dimension_count") {
            if value.as_u64() != Some(head_dim as u64) {
                return Err(metadata_error(
                    "llama.rope.dimension_count",
                    format!("{value:?}: only full-head RoPE ({head_dim}) is supported"),
                ));
            }
        }
        let rope_base = match file.get("llama.rope.freq_base") {
            Some(value) => value
                .as_f32()
                .ok_or_else(|| metadata_error("llama.rope.freq_base", "not a float".into()))?,
            None => 10_000.0,
        };
        let rms_eps = file
            .get("llama.attention.layer_norm_rms_epsilon")
            .and_then(|v| v.as_f32())
            .ok_or_else(|| {
                metadata_error(
                    "llama.attention.layer_norm_rms_epsilon",
                    "missing or not a float".into(),
                )
            })?;
        let vocab = file
            .tensors()
            .get("token_embd.weight")
            .map(|t| t.shape()[0])
            .ok_or_else(|| Error::MissingWeight {
                name: "token_embd.weight".into(),
            })?;
        let config = LlamaConfig {
            layers,
            hidden,
            ffn,
            heads,
            kv_heads,
            head_dim,
            vocab,
            context,
            rope_base,
            rms_eps,
        };
        config.validate()?;
        Ok(config)
    }

    /// Check the sizes against the limits and each other, and the constants.
    pub fn validate(&self) -> Result<()> {
        let in_range = |value: usize, max: usize| (1..=max).contains(&value);
        let sizes = [
            ("llama.block_count", self.layers, LAYERS_MAX),
            ("llama.embedding_length", self.hidden, HIDDEN_MAX),
            ("llama.feed_forward_length", self.ffn, FFN_MAX),
            ("llama.attention.head_count", self.heads, HEADS_MAX),
            ("llama.attention.head_count_kv", self.kv_heads, HEADS_MAX),
            ("llama.context_length", self.context, CONTEXT_MAX),
        ];
        for (key, value, max) in sizes {
            if !in_range(value, max) {
                return Err(metadata_error(key, format!("{value} is outside 1..={max}")));
            }
        }
        if !in_range(self.vocab, VOCAB_MAX) {
            return Err(metadata_error(
                "token_embd.weight",
                format!("vocabulary of {} tokens", self.vocab),
            ));
        }
        if !self.hidden.is_multiple_of(self.heads)
            || !self.heads.is_multiple_of(self.kv_heads)
            || self.head_dim != self.hidden / self.heads
        {
            return Err(metadata_error(
                "llama.attention.head_count",
                format!(
                    "{} heads / {} kv heads of size {} do not divide hidden {}",
                    self.heads, self.kv_heads, self.head_dim, self.hidden
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(metadata_error(
                "llama.attention.head_count",
                format!("head size {} is odd", self.head_dim),
            ));
        }
        if !(self.rope_base.is_finite() && self.rope_base > 1.0) {
            return Err(metadata_error(
                "llama.rope.freq_base",
                format!("{} is not a finite base above 1", self.rope_base),
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return Err(metadata_error(
                "llama.attention.layer_norm_rms_epsilon",
                format!("{} is not positive", self.rms_eps),
            ));
        }
        Ok(())
    }

    /// The canonical encoding (its hash is a model record's config hash):
    /// [`CONFIG_TAG`], then `layers, hidden, ffn, heads, kv_heads, head_dim, vocab, context`
    /// as u64 LE, then `rope_base` and `rms_eps` as f32 LE bits ([`CONFIG_BYTES`] bytes).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CONFIG_BYTES);
        bytes.extend_from_slice(CONFIG_TAG);
        for value in [
            self.layers,
            self.hidden,
            self.ffn,
            self.heads,
            self.kv_heads,
            self.head_dim,
            self.vocab,
            self.context,
        ] {
            bytes.extend_from_slice(&(value as u64).to_le_bytes());
        }
        bytes.extend_from_slice(&self.rope_base.to_bits().to_le_bytes());
        bytes.extend_from_slice(&self.rms_eps.to_bits().to_le_bytes());
        bytes
    }

    /// The inverse of [`LlamaConfig::canonical_bytes`]: exactly [`CONFIG_BYTES`] bytes that
    /// pass [`LlamaConfig::validate`], else an error.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<LlamaConfig> {
        let fail = |detail: String| metadata_error("canonical config", detail);
        if bytes.len() != CONFIG_BYTES || !bytes.starts_with(CONFIG_TAG) {
            return Err(fail(format!(
                "{} bytes, expected {CONFIG_BYTES} starting with the tag",
                bytes.len()
            )));
        }
        let mut fields = bytes[CONFIG_TAG.len()..].chunks_exact(8);
        let mut size = || -> Result<usize> {
            let field = fields.next().ok_or_else(|| fail("truncated".into()))?;
            let value = u64::from_le_bytes(field.try_into().expect("8 bytes"));
            usize::try_from(value).map_err(|_| fail(format!("size {value}")))
        };
        let (layers, hidden, ffn, heads) = (size()?, size()?, size()?, size()?);
        let (kv_heads, head_dim, vocab, context) = (size()?, size()?, size()?, size()?);
        let tail = &bytes[CONFIG_BYTES - 8..];
        let float = |at: usize| {
            f32::from_bits(u32::from_le_bytes(
                tail[at..at + 4].try_into().expect("4 bytes"),
            ))
        };
        let config = LlamaConfig {
            layers,
            hidden,
            ffn,
            heads,
            kv_heads,
            head_dim,
            vocab,
            context,
            rope_base: float(0),
            rms_eps: float(4),
        };
        config.validate()?;
        Ok(config)
    }

    /// Width of the K and V projections.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Every weight the decoder reads, with its row-major shape.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, f, kv) = (self.hidden, self.ffn, self.kv_width());
        let mut shapes = vec![
            ("token_embd.weight".to_string(), vec![self.vocab, h]),
            ("output_norm.weight".to_string(), vec![h]),
        ];
        for layer in 0..self.layers {
            let name = |part: &str| format!("blk.{layer}.{part}.weight");
            shapes.extend([
                (name("attn_norm"), vec![h]),
                (name("attn_q"), vec![h, h]),
                (name("attn_k"), vec![kv, h]),
                (name("attn_v"), vec![kv, h]),
                (name("attn_output"), vec![h, h]),
                (name("ffn_norm"), vec![h]),
                (name("ffn_gate"), vec![f, h]),
                (name("ffn_up"), vec![f, h]),
                (name("ffn_down"), vec![h, f]),
            ]);
        }
        shapes
    }
}

fn metadata_error(key: &str, detail: String) -> Error {
    Error::Gguf(GgufError::Metadata {
        key: key.to_string(),
        detail,
    })
}

fn text<'a>(file: &'a Gguf, key: &str) -> Result<&'a str> {
    file.get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| metadata_error(key, "missing or not a string".into()))
}

fn integer(file: &Gguf, key: &str, max: usize) -> Result<usize> {
    match file.get(key).and_then(|v| v.as_u64()) {
        Some(v) if v >= 1 && v <= max as u64 => Ok(v as usize),
        Some(v) => Err(metadata_error(key, format!("{v} is outside 1..={max}"))),
        None => Err(metadata_error(key, "missing or not an integer".into())),
    }
}

/// Name of the output projection: `output.weight` when the file has one, else the tied
/// `token_embd.weight`.
pub fn output_weight_name(file: &Gguf) -> &'static str {
    if file.tensors().contains_key("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    }
}

/// Dequantize every weight the decoder reads (shapes checked), un-permuting Q and K.
pub fn load_weights(file: &Gguf, config: &LlamaConfig) -> Result<Weights> {
    let mut tensors = BTreeMap::new();
    for (name, shape) in expected_shapes(file, config) {
        checked_info(file, &name, &shape)?;
        let mut tensor = file.tensor_f32(&name)?;
        if name.ends_with(".attn_q.weight") {
            tensor = unpermute_rows(&tensor, config.heads)?;
        } else if name.ends_with(".attn_k.weight") {
            tensor = unpermute_rows(&tensor, config.kv_heads)?;
        }
        tensors.insert(name, tensor);
    }
    Ok(Weights::from_tensors(tensors))
}

/// Undo llama.cpp's Q/K row permutation: within each head of `d` rows, GGUF row `2i + a`
/// (pair `i`, member `a`) becomes row `a * d/2 + i`.
pub fn unpermute_rows(tensor: &Tensor, heads: usize) -> Result<Tensor> {
    let shape = tensor.shape().to_vec();
    let (rows, width) = (shape[0], shape.iter().skip(1).product::<usize>());
    let order = unpermuted_order(rows, heads, &shape)?;
    let values = tensor.to_vec();
    let mut out = vec![0.0f32; values.len()];
    for (to, &from) in order.iter().enumerate() {
        out[to * width..(to + 1) * width]
            .copy_from_slice(&values[from * width..(from + 1) * width]);
    }
    Tensor::from_vec(out, &shape).map_err(|source| Error::Tensor {
        op: "unpermute".into(),
        source,
    })
}

/// How a model's weights are held and its linear ops computed (the model record's numeric
/// profile; docs/llm.md §2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NumericProfile {
    /// Every weight dequantized to f32; f32 kernels.
    #[default]
    F32,
    /// Q4_0/Q4_1/Q8_0 matrices kept in their blocks; their linear ops quantize the activations
    /// per block and take integer block dot products (`piazza_tensor::quant`). F32 and F16
    /// tensors stay f32.
    Quantized,
}

/// The block format of a GGUF type, when it is one.
fn block_format(dtype: crate::gguf::GgmlType) -> Option<BlockFormat> {
    use crate::gguf::GgmlType;
    match dtype {
        GgmlType::Q4_0 => Some(BlockFormat::Q4_0),
        GgmlType::Q4_1 => Some(BlockFormat::Q4_1),
        GgmlType::Q8_0 => Some(BlockFormat::Q8_0),
        GgmlType::F32 | GgmlType::F16 => None,
    }
}

/// The weights of the quantized profile: quantized matrices in their blocks (Q and K rows
/// un-permuted), every other weight dequantized to f32.
pub fn load_quantized_weights(
    file: &Gguf,
    config: &LlamaConfig,
) -> Result<(Weights, BTreeMap<String, QuantMatrix>)> {
    let mut loaded = QuantizedWeights::default();
    for (name, shape) in expected_shapes(file, config) {
        let info = checked_info(file, &name, &shape)?;
        let bytes = file.tensor_bytes(&name).unwrap_or_default();
        loaded.add(config, info, bytes)?;
    }
    Ok((Weights::from_tensors(loaded.tensors), loaded.matrices))
}

/// [`load_quantized_weights`] that consumes the file: each tensor's stored bytes are released
/// once read (from the end of the data section backwards), so the process never holds the
/// whole file beside the whole model.
pub fn drain_quantized_weights(
    file: Gguf,
    config: &LlamaConfig,
) -> Result<(Weights, BTreeMap<String, QuantMatrix>)> {
    let expected = expected_shapes(&file, config);
    for (name, shape) in &expected {
        checked_info(&file, name, shape)?;
    }
    let wanted: std::collections::BTreeSet<String> =
        expected.into_iter().map(|(name, _)| name).collect();
    let mut loaded = QuantizedWeights::default();
    file.drain_tensors(|info, bytes| {
        if wanted.contains(&info.name) {
            loaded.add(config, info, bytes)?;
        }
        Ok(())
    })?;
    Ok((Weights::from_tensors(loaded.tensors), loaded.matrices))
}

/// What [`load_quantized_weights`] builds, tensor by tensor.
#[derive(Default)]
struct QuantizedWeights {
    tensors: BTreeMap<String, Tensor>,
    matrices: BTreeMap<String, QuantMatrix>,
}

impl QuantizedWeights {
    /// Add weight `info` (shape already checked) from its stored `bytes`.
    fn add(&mut self, config: &LlamaConfig, info: &TensorInfo, bytes: &[u8]) -> Result<()> {
        let (name, shape) = (&info.name, info.shape());
        let format = match (block_format(info.dtype), shape.as_slice()) {
            (Some(format), [_, _]) => format,
            _ => {
                let mut values = vec![0.0f32; info.element_count() as usize];
                crate::gguf::dequantize(info.dtype, bytes, &mut values);
                let tensor = Tensor::from_vec(values, &shape).map_err(|source| Error::Tensor {
                    op: name.clone(),
                    source,
                })?;
                self.tensors.insert(name.clone(), tensor);
                return Ok(());
            }
        };
        let quant_error = |e: piazza_tensor::quant::QuantError| {
            Error::Gguf(GgufError::Tensor {
                name: name.clone(),
                detail: e.to_string(),
            })
        };
        let mut matrix =
            QuantMatrix::from_gguf(format, shape[0], shape[1], bytes).map_err(quant_error)?;
        let heads = if name.ends_with(".attn_q.weight") {
            Some(config.heads)
        } else if name.ends_with(".attn_k.weight") {
            Some(config.kv_heads)
        } else {
            None
        };
        if let Some(heads) = heads {
            let order = unpermuted_order(shape[0], heads, &shape)?;
            matrix = matrix.select_rows(&order).map_err(quant_error)?;
        }
        self.matrices.insert(name.clone(), matrix);
        Ok(())
    }
}

/// Every weight the decoder reads with its row-major shape, the output projection included.
fn expected_shapes(file: &Gguf, config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let mut shapes = config.weight_shapes();
    if output_weight_name(file) == "output.weight" {
        shapes.push(("output.weight".into(), vec![config.vocab, config.hidden]));
    }
    shapes
}

/// The header entry of weight `name`, which must have shape `shape`.
fn checked_info<'f>(file: &'f Gguf, name: &str, shape: &[usize]) -> Result<&'f TensorInfo> {
    let info = file
        .tensors()
        .get(name)
        .ok_or_else(|| Error::MissingWeight { name: name.into() })?;
    if info.shape() != shape {
        return Err(Error::WeightShape {
            name: name.into(),
            expected: shape.to_vec(),
            got: info.shape(),
        });
    }
    Ok(info)
}

/// `order[to] = from` of [`unpermute_rows`] for `rows` rows in `heads` heads.
fn unpermuted_order(rows: usize, heads: usize, shape: &[usize]) -> Result<Vec<usize>> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(Error::WeightShape {
            name: "attention projection".into(),
            expected: vec![heads, 2],
            got: shape.to_vec(),
        });
    }
    let (d, half) = (rows / heads, rows / heads / 2);
    let mut order = vec![0usize; rows];
    for h in 0..heads {
        for i in 0..half {
            for a in 0..2 {
                order[h * d + a * half + i] = h * d + 2 * i + a;
            }
        }
    }
    Ok(order)
}

/// Whether a committed weight of shape `committed` stands for a weight of row-major shape
/// `shape`: the same shape (f32), or, for a matrix whose columns are whole blocks, its f32 block
/// encoding `[rows, cols/32 × 33]` or `[rows, cols/32 × 34]` (Quantized profile; docs/llm.md §3).
pub fn committed_shape_matches(shape: &[usize], committed: &[usize]) -> bool {
    match (shape, committed) {
        _ if shape == committed => true,
        (&[rows, cols], &[held_rows, held_cols]) => {
            let blocks = cols / piazza_tensor::quant::BLOCK;
            rows == held_rows
                && cols.is_multiple_of(piazza_tensor::quant::BLOCK)
                && [BlockFormat::Q8_0, BlockFormat::Q4_1]
                    .iter()
                    .any(|&f| blocks * QuantMatrix::encoded_block_floats(f) == held_cols)
        }
        _ => false,
    }
}

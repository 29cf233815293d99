//! Shared test helpers: the real model, loaded once per test binary.

#![allow(dead_code)]

use std::sync::OnceLock;

use piazza_llm::{Compute, Generation, Generator, Recording, Tensor};

/// The SmolLM2 generator; fails with instructions when the file is missing.
pub fn generator() -> &'static Generator {
    static GENERATOR: OnceLock<Generator> = OnceLock::new();
    GENERATOR.get_or_init(|| {
        let path = piazza_llm::default_model_path();
        assert!(
            path.exists(),
            "{} is missing: run `bash scripts/fetch-models.sh` (or set PIAZZA_MODELS_DIR)",
            path.display()
        );
        Generator::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    })
}

/// Re-execute step `index` of a recorded run the arbiter's way: from the committed weights
/// alone ([`Generator::weights`]), a linear op's weight cut to the step's columns, through
/// [`piazza_llm::compute_block`]; true when the output hashes to the run's leaf.
pub fn step_from_committed_weights(
    generator: &Generator,
    recording: &Recording,
    generation: &Generation,
    index: usize,
) -> bool {
    let step = &recording.graph.steps[index];
    let op = &recording.graph.ops[step.op];
    let inputs = recording.step_inputs(index).unwrap();
    let weights = generator.weights();
    let held: Vec<Tensor> = op
        .weights()
        .enumerate()
        .map(|(i, name)| {
            let tensor = weights.tensor(name).unwrap();
            match op.kind.reads_weight_rows(i) {
                true => tensor
                    .rows(step.columns.start, step.columns.len())
                    .unwrap()
                    .contiguous(),
                false => tensor.clone(),
            }
        })
        .collect();
    let held: Vec<&Tensor> = held.iter().collect();
    let output = piazza_llm::compute_block(
        generator.config(),
        op,
        &step.rows,
        &step.columns,
        &inputs,
        &held,
        Compute::new(1),
    )
    .unwrap();
    Generator::step_leaf(index, &output) == generation.trace.step_hashes[index]
}

pub struct Case {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub greedy_text: String,
    pub top5_ids: Vec<u32>,
    pub top5_logits: Vec<f32>,
}

/// The cases of tests/fixtures/smollm2_reference.json (copied from ../shared/fixtures).
pub fn reference_cases() -> Vec<Case> {
    let text = include_str!("../fixtures/smollm2_reference.json");
    let json: serde_json::Value = serde_json::from_str(text).expect("fixture is JSON");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| Case {
            prompt: case["prompt"].as_str().unwrap().to_string(),
            prompt_ids: ids(&case["prompt_ids"]),
            greedy_ids: ids(&case["greedy_ids"]),
            greedy_text: case["greedy_text"].as_str().unwrap().to_string(),
            top5_ids: ids(&case["next_token_top5_ids"]),
            top5_logits: case["next_token_top5_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

/// A GGUF writer for synthetic test files.
pub mod writer {
    pub enum Value {
        U32(u32),
        F32(f32),
        Bool(bool),
        Str(String),
        Strings(Vec<String>),
        I32s(Vec<i32>),
    }

    pub struct TensorData {
        pub name: String,
        /// GGUF order (innermost first).
        pub dims: Vec<u64>,
        pub type_id: u32,
        pub bytes: Vec<u8>,
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    pub fn write(metadata: &[(&str, Value)], tensors: &[TensorData]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            string(&mut out, key);
            match value {
                Value::U32(v) => {
                    out.extend_from_slice(&4u32.to_le_bytes());
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Value::F32(v) => {
                    out.extend_from_slice(&6u32.to_le_bytes());
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Value::Bool(v) => {
                    out.extend_from_slice(&7u32.to_le_bytes());
                    out.push(*v as u8);
                }
                Value::Str(s) => {
                    out.extend_from_slice(&8u32.to_le_bytes());
                    string(&mut out, s);
                }
                Value::Strings(items) => {
                    out.extend_from_slice(&9u32.to_le_bytes());
                    out.extend_from_slice(&8u32.to_le_bytes());
                    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for s in items {
                        string(&mut out, s);
                    }
                }
                Value::I32s(items) => {
                    out.extend_from_slice(&9u32.to_le_bytes());
                    out.extend_from_slice(&5u32.to_le_bytes());
                    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for v in items {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for tensor in tensors {
            string(&mut out, &tensor.name);
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for d in &tensor.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&tensor.type_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset += (tensor.bytes.len() as u64).div_ceil(32) * 32;
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        let data_start = out.len();
        for (tensor, offset) in tensors.iter().zip(offsets) {
            out.resize(data_start + offset as usize, 0);
            out.extend_from_slice(&tensor.bytes);
        }
        out
    }

    /// Deterministic pseudo-random bytes (xorshift).
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    /// Quantized blocks whose f16 scales are small and finite (byte noise elsewhere).
    pub fn blocks(type_id: u32, elements: usize, seed: u64) -> Vec<u8> {
        let (block_bytes, scales) = match type_id {
            0 => {
                return noise(elements, seed)
                    .chunks(1)
                    .map(|b| b[0] as f32 / 256.0 - 0.5)
                    .flat_map(f32::to_le_bytes)
                    .collect()
            }
            1 => {
                return noise(elements, seed)
                    .iter()
                    .flat_map(|&b| half(b as f32 / 256.0 - 0.5))
                    .collect()
            }
            2 => (18, 1),
            3 => (20, 2),
            8 => (34, 1),
            other => panic!("type {other}"),
        };
        let mut bytes = noise(elements / 32 * block_bytes, seed);
        for block in bytes.chunks_mut(block_bytes) {
            for s in 0..scales {
                let scale = half(0.01 + block[4 + s] as f32 / 4096.0);
                block[2 * s..2 * s + 2].copy_from_slice(&scale);
            }
        }
        bytes
    }

    /// f32 → f16 bits for small normal values (test data only; truncating).
    pub fn half(value: f32) -> [u8; 2] {
        let bits = value.to_bits();
        let sign = (bits >> 16) & 0x8000;
        let exponent = ((bits >> 23) & 0xff) as i32 - 127 + 15;
        let mantissa = (bits >> 13) & 0x3ff;
        let h = if value == 0.0 || exponent <= 0 {
            sign
        } else {
            sign | ((exponent as u32) << 10) | mantissa
        };
        (h as u16).to_le_bytes()
    }

    /// A complete tiny Llama (hidden 32, 2 heads, 1 KV head, FFN 64, 2 layers) with a byte-level
    /// vocabulary of 256 byte tokens, 4 merged tokens and 2 control tokens; every tensor type.
    pub fn tiny_llama() -> Vec<u8> {
        let bytes_to_unicode = |b: u8| -> char {
            let mut next = 256u32;
            for c in 0..=255u8 {
                let printable = matches!(c, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
                let code = if printable {
                    c as u32
                } else {
                    next += 1;
                    next - 1
                };
                if c == b {
                    return char::from_u32(code).unwrap();
                }
            }
            unreachable!()
        };
        let mut tokens: Vec<String> = vec!["<|im_start|>".into(), "<|im_end|>".into()];
        tokens.extend((0..=255u8).map(|b| bytes_to_unicode(b).to_string()));
        let merges = ["h e", "l l", "he ll", "Ġ w"];
        tokens.extend(merges.iter().map(|m| m.replace(' ', "")));
        let mut types = vec![3, 3];
        types.extend(std::iter::repeat_n(1, tokens.len() - 2));
        let vocab = tokens.len() as u64;
        let metadata = vec![
            ("general.architecture", Value::Str("llama".into())),
            ("llama.block_count", Value::U32(2)),
            ("llama.context_length", Value::U32(128)),
            ("llama.embedding_length", Value::U32(32)),
            ("llama.feed_forward_length", Value::U32(64)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.attention.head_count_kv", Value::U32(1)),
            ("llama.rope.freq_base", Value::F32(10000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("tokenizer.ggml.model", Value::Str("gpt2".into())),
            ("tokenizer.ggml.pre", Value::Str("smollm".into())),
            ("tokenizer.ggml.tokens", Value::Strings(tokens)),
            ("tokenizer.ggml.token_type", Value::I32s(types)),
            ("tokenizer.ggml.merges", Value::Strings(merges.iter().map(|s| s.to_string()).collect())),
            ("tokenizer.ggml.bos_token_id", Value::U32(0)),
            ("tokenizer.ggml.eos_token_id", Value::U32(1)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
            (
                "tokenizer.chat_template",
                Value::Str("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}".into()),
            ),
        ];
        let mut tensors = Vec::new();
        let mut seed = 7;
        let mut add = |name: String, dims: Vec<u64>, type_id: u32| {
            seed += 1;
            let elements = dims.iter().product::<u64>() as usize;
            tensors.push(TensorData {
                name,
                bytes: blocks(type_id, elements, seed),
                dims,
                type_id,
            });
        };
        add("token_embd.weight".into(), vec![32, vocab], 8);
        add("output_norm.weight".into(), vec![32], 0);
        for layer in 0..2 {
            let name = |part: &str| format!("blk.{layer}.{part}.weight");
            add(name("attn_norm"), vec![32], 0);
            add(name("attn_q"), vec![32, 32], 2);
            add(name("attn_k"), vec![32, 16], 3);
            add(name("attn_v"), vec![32, 16], 1);
            add(name("attn_output"), vec![32, 32], 8);
            add(name("ffn_norm"), vec![32], 1);
            add(name("ffn_gate"), vec![32, 64], 3);
            add(name("ffn_up"), vec![32, 64], 2);
            add(name("ffn_down"), vec![64, 32], 0);
        }
        write(&metadata, &tensors)
    }
}

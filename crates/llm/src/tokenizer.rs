//! The tokenizer and chat template carried in the GGUF metadata (docs/llm.md §6).
//!
//! Encoding: GPT-2 byte-level BPE (`tokenizer.ggml.model = "gpt2"`) built from
//! `tokenizer.ggml.tokens` and `tokenizer.ggml.merges` with the `tokenizers` crate; the
//! pre-tokenizer follows `tokenizer.ggml.pre` (`"smollm"`: single digits split off, then the
//! GPT-2 regex; `"gpt2"`/`"default"`: the GPT-2 regex). Control tokens (type 3) are matched
//! whole in the text (so a chat prompt's `<|im_start|>` is one token).
//!
//! Decoding is done here, not by the crate: each token's string maps back to bytes through the
//! GPT-2 byte↔unicode table; control tokens decode to nothing. Bytes are turned into text only
//! up to the last complete UTF-8 character ([`TextDecoder`]), so a character split across
//! tokens is never emitted half.
//!
//! The tokenizer's identity is its *metadata preimage* ([`Tokenizer::metadata_preimage`]): the
//! bytes whose BLAKE3 is [`Tokenizer::hash`]. [`Tokenizer::from_metadata_preimage`] rebuilds the
//! same tokenizer from those bytes alone, so a party without the GGUF file (the ledger settling
//! a tokenization dispute) derives the same token ids as a provider.

use std::collections::BTreeMap;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

pub use piazza_primitives::chat::CHAT_INPUT_MAGIC;
use piazza_primitives::chat::{ChatInput, ChatRole};

use crate::gguf::{self, Gguf, Reader, Value};
use crate::{Error, Result};

/// Longest text accepted by [`Tokenizer::encode`].
pub const TEXT_BYTES_MAX: usize = 1 << 20;
/// Largest metadata preimage accepted by [`Tokenizer::from_metadata_preimage`] (SmolLM2's is
/// about 1.8 MB).
pub const PREIMAGE_BYTES_MAX: usize = 16 << 20;
/// Metadata keys of the tokenizer start with this.
pub const TOKENIZER_KEY_PREFIX: &str = "tokenizer.";
/// Domain of [`Tokenizer::hash`].
pub const TOKENIZER_DOMAIN: &str = "piazza.llm.tokenizer.v1";
/// GGUF token type of control tokens.
pub const TOKEN_TYPE_CONTROL: i64 = 3;

/// A chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// The chat formats this crate renders (it does not run Jinja).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, `<|im_start|>assistant\n` as the
    /// generation prompt; `default_system` is inserted first when the first message is not a
    /// system message (SmolLM2's template does this).
    ChatMl { default_system: Option<String> },
}

impl ChatTemplate {
    /// Recognise `tokenizer.chat_template`. ChatML templates are recognised by their markers;
    /// anything else is refused rather than rendered wrongly.
    pub fn from_jinja(template: &str) -> Result<ChatTemplate> {
        if !(template.contains("<|im_start|>") && template.contains("<|im_end|>")) {
            return Err(Error::Tokenizer {
                detail: "chat template is not ChatML; no other template is supported".into(),
            });
        }
        let default_system = if template.contains("messages[0]['role'] != 'system'") {
            let marker = "<|im_start|>system\n";
            template.find(marker).and_then(|start| {
                let rest = &template[start + marker.len()..];
                rest.find("<|im_end|>").map(|end| rest[..end].to_string())
            })
        } else {
            None
        };
        Ok(ChatTemplate::ChatMl { default_system })
    }

    /// The prompt text for `messages`, ending with the assistant's generation prompt.
    pub fn render(&self, messages: &[Message]) -> String {
        let ChatTemplate::ChatMl { default_system } = self;
        let mut text = String::new();
        if let Some(system) = default_system {
            if messages.first().is_none_or(|m| m.role != "system") {
                text.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
            }
        }
        for message in messages {
            text.push_str(&format!(
                "<|im_start|>{}\n{}<|im_end|>\n",
                message.role, message.content
            ));
        }
        text.push_str("<|im_start|>assistant\n");
        text
    }
}

/// A chat job's input as messages. The input, read as (lossy) UTF-8 text, is either a chat
/// input in the canonical encoding ([`piazza_primitives::chat::ChatInput`]: it starts with
/// [`CHAT_INPUT_MAGIC`]), which gives its messages, or anything else: plain text, or bytes
/// that start like a chat input but do not decode, which are the whole text as one user
/// message. An encoded chat input is valid UTF-8, so the text view is its bytes exactly.
///
/// Providers and the ledger's tokenization arbiter both read chat inputs with this function;
/// no JSON parser decides what a job means.
pub fn chat_messages_from_input(input: &str) -> Vec<Message> {
    match ChatInput::decode(input.as_bytes()) {
        Ok(chat) => chat
            .into_messages()
            .into_iter()
            .map(|m| Message {
                role: m.role.as_str().to_string(),
                content: m.content,
            })
            .collect(),
        Err(_) => vec![Message {
            role: ChatRole::User.as_str().to_string(),
            content: input.to_string(),
        }],
    }
}

/// The model's tokenizer.
pub struct Tokenizer {
    inner: HfTokenizer,
    /// Bytes of each token (empty for control tokens).
    token_bytes: Vec<Vec<u8>>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub chat_template: Option<ChatTemplate>,
    /// The `tokenizer.*` metadata in [`Tokenizer::metadata_preimage`]'s encoding.
    preimage: Vec<u8>,
    /// BLAKE3 of `preimage`.
    hash: [u8; 32],
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.token_bytes.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tokenizer_error(detail: impl Into<String>) -> Error {
    Error::Tokenizer {
        detail: detail.into(),
    }
}

/// GPT-2's byte → unicode table: printable bytes map to themselves, the rest to 256 + n.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            byte as u32
        } else {
            next += 1;
            next - 1
        };
        table[byte as usize] = char::from_u32(code).unwrap_or('\0');
    }
    table
}

impl Tokenizer {
    /// Build from `tokenizer.*` metadata; `vocab` is the model's embedding rows.
    pub fn from_gguf(file: &Gguf, vocab: usize) -> Result<Tokenizer> {
        Tokenizer::from_metadata(file.metadata(), vocab)
    }

    /// Rebuild from [`Tokenizer::metadata_preimage`] bytes (untrusted: bounded, never panics);
    /// `vocab` is the model's embedding rows. The result equals [`Tokenizer::from_gguf`] on the
    /// file the preimage came from, and its [`Tokenizer::hash`] is `BLAKE3(bytes)`.
    ///
    /// Only the canonical encoding is accepted: `bytes` must be exactly what
    /// `metadata_preimage` writes for the metadata they hold.
    pub fn from_metadata_preimage(bytes: &[u8], vocab: usize) -> Result<Tokenizer> {
        let metadata = parse_metadata_preimage(bytes)?;
        let tokenizer = Tokenizer::from_metadata(&metadata, vocab)?;
        if tokenizer.preimage != bytes {
            return Err(tokenizer_error(
                "metadata preimage is not in canonical encoding",
            ));
        }
        Ok(tokenizer)
    }

    /// Build from a metadata map (only its `tokenizer.*` keys are read).
    fn from_metadata(metadata: &BTreeMap<String, Value>, vocab: usize) -> Result<Tokenizer> {
        let get = |key: &str| metadata.get(key);
        let model = get("tokenizer.ggml.model").and_then(Value::as_str);
        if model != Some("gpt2") {
            return Err(tokenizer_error(format!(
                "tokenizer.ggml.model {model:?}: only \"gpt2\" (byte-level BPE) is supported"
            )));
        }
        let tokens: Vec<&str> = get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| tokenizer_error("tokenizer.ggml.tokens missing"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| tokenizer_error("a token is not a string"))
            })
            .collect::<Result<_>>()?;
        if tokens.len() != vocab {
            return Err(tokenizer_error(format!(
                "{} tokens for a model with {vocab} embedding rows",
                tokens.len()
            )));
        }
        let types: Vec<i64> = match get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(values) if values.len() == tokens.len() => values
                .iter()
                .map(|v| match v {
                    Value::I32(t) => Ok(*t as i64),
                    other => other
                        .as_u64()
                        .map(|t| t as i64)
                        .ok_or_else(|| tokenizer_error("token type is not an integer")),
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(tokenizer_error("token_type length differs from tokens")),
            None => vec![1; tokens.len()],
        };
        let merges: Vec<(String, String)> = get("tokenizer.ggml.merges")
            .and_then(Value::as_array)
            .ok_or_else(|| tokenizer_error("tokenizer.ggml.merges missing"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|m| m.split_once(' '))
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| tokenizer_error("a merge is not \"left right\""))
            })
            .collect::<Result<_>>()?;
        let id = |key: &str| -> Result<Option<u32>> {
            match get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(id) if (id as usize) < vocab => Ok(Some(id as u32)),
                    _ => Err(tokenizer_error(format!("{key} {v:?} is not a token id"))),
                },
            }
        };
        let (bos, eos) = (
            id("tokenizer.ggml.bos_token_id")?,
            id("tokenizer.ggml.eos_token_id")?,
        );
        let pre = get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "gpt2" | "default" => byte_level.into(),
            other => {
                return Err(tokenizer_error(format!(
                    "tokenizer.ggml.pre {other:?} is not supported (smollm, gpt2, default)"
                )))
            }
        };
        let chat_template = match get("tokenizer.chat_template").and_then(Value::as_str) {
            Some(t) => Some(ChatTemplate::from_jinja(t)?),
            None => None,
        };

        let vocab_map: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL)
            .map(|(t, _)| AddedToken::from(t.to_string(), true))
            .collect();
        // The tokenizers crate may panic on inputs it does not expect: contain it.
        let inner = std::panic::catch_unwind(move || -> Result<HfTokenizer> {
            let bpe = BPE::builder()
                .vocab_and_merges(vocab_map, merges)
                .build()
                .map_err(|e| tokenizer_error(format!("BPE: {e}")))?;
            let mut inner = HfTokenizer::new(bpe);
            inner.with_pre_tokenizer(Some(pre_tokenizer));
            inner
                .add_special_tokens(special)
                .map_err(|e| tokenizer_error(format!("special tokens: {e}")))?;
            Ok(inner)
        })
        .map_err(|_| tokenizer_error("the tokenizers crate panicked building the BPE"))??;

        let table = byte_to_char();
        let mut char_to_byte = BTreeMap::new();
        for (byte, &c) in table.iter().enumerate() {
            char_to_byte.insert(c, byte as u8);
        }
        let token_bytes = tokens
            .iter()
            .zip(&types)
            .map(|(token, &kind)| {
                if kind == TOKEN_TYPE_CONTROL {
                    Vec::new()
                } else if token.chars().all(|c| char_to_byte.contains_key(&c)) {
                    token.chars().map(|c| char_to_byte[&c]).collect()
                } else {
                    token.as_bytes().to_vec()
                }
            })
            .collect();
        let preimage = metadata_preimage(metadata);
        let hash = preimage_hash(&preimage);
        Ok(Tokenizer {
            inner,
            token_bytes,
            bos,
            eos,
            chat_template,
            preimage,
            hash,
        })
    }

    /// Token ids of `text` (no BOS added; control tokens in the text are matched whole).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() > TEXT_BYTES_MAX {
            return Err(Error::Input {
                detail: format!("text of {} bytes exceeds {TEXT_BYTES_MAX}", text.len()),
            });
        }
        let encoding = std::panic::catch_unwind(|| self.inner.encode(text, false))
            .map_err(|_| tokenizer_error("the tokenizers crate panicked encoding"))?
            .map_err(|e| tokenizer_error(format!("encode: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Bytes of token `id` (empty for control tokens and unknown ids).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map_or(&[], |b| b.as_slice())
    }

    /// Text of `ids` (invalid UTF-8 replaced by U+FFFD; control tokens omitted).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).to_vec())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// `BLAKE3` over the `tokenizer.*` metadata (docs/llm.md §6): `BLAKE3(metadata_preimage())`.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The bytes [`Tokenizer::hash`] is the BLAKE3 of, from which
    /// [`Tokenizer::from_metadata_preimage`] rebuilds this tokenizer: `domain ‖ for each
    /// "tokenizer.*" key in byte order: len u32 ‖ key ‖ GGUF value bytes`.
    pub fn metadata_preimage(&self) -> &[u8] {
        &self.preimage
    }

    /// The model's chat template applied to `messages`, with the assistant generation prompt.
    pub fn apply_chat_template(&self, messages: &[Message]) -> Result<String> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or_else(|| tokenizer_error("the model has no chat template"))?;
        Ok(template.render(messages))
    }

    /// Token ids of the chat prompt for `messages` (template applied, then [`Tokenizer::encode`]).
    pub fn chat_prompt_ids(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode(&self.apply_chat_template(messages)?)
    }
}

/// [`Tokenizer::hash`] of the tokenizer whose [`Tokenizer::metadata_preimage`] is `preimage`.
pub fn preimage_hash(preimage: &[u8]) -> [u8; 32] {
    *blake3::hash(preimage).as_bytes()
}

/// `domain ‖ for each "tokenizer.*" key in byte order: len u32 ‖ key ‖ GGUF value bytes`.
fn metadata_preimage(metadata: &BTreeMap<String, Value>) -> Vec<u8> {
    let mut out = TOKENIZER_DOMAIN.as_bytes().to_vec();
    for (key, value) in metadata.range(TOKENIZER_KEY_PREFIX.to_string()..) {
        if !key.starts_with(TOKENIZER_KEY_PREFIX) {
            break;
        }
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        encode_value(value, &mut out, true);
    }
    out
}

/// Read [`metadata_preimage`]'s encoding back into a map: at most [`PREIMAGE_BYTES_MAX`] bytes,
/// the domain, then entries with `tokenizer.*` keys in strictly increasing order, each value
/// read by the GGUF reader under its limits.
fn parse_metadata_preimage(bytes: &[u8]) -> Result<BTreeMap<String, Value>> {
    if bytes.len() > PREIMAGE_BYTES_MAX {
        return Err(tokenizer_error(format!(
            "metadata preimage of {} bytes exceeds {PREIMAGE_BYTES_MAX}",
            bytes.len()
        )));
    }
    let mut reader = Reader::new(bytes);
    let domain = reader.take(TOKENIZER_DOMAIN.len() as u64, "tokenizer domain")?;
    if domain != TOKENIZER_DOMAIN.as_bytes() {
        return Err(tokenizer_error(format!(
            "metadata preimage does not start with {TOKENIZER_DOMAIN:?}"
        )));
    }
    let mut metadata = BTreeMap::new();
    while reader.remaining() > 0 {
        if metadata.len() as u64 >= gguf::METADATA_ENTRIES_MAX {
            return Err(gguf::GgufError::TooMany {
                what: "metadata entry",
                count: metadata.len() as u64 + 1,
                max: gguf::METADATA_ENTRIES_MAX,
            }
            .into());
        }
        let key_len = reader.u32("metadata key")? as u64;
        if key_len > gguf::NAME_BYTES_MAX {
            return Err(gguf::GgufError::TooLong {
                what: "metadata key",
                len: key_len,
                max: gguf::NAME_BYTES_MAX,
            }
            .into());
        }
        let key = std::str::from_utf8(reader.take(key_len, "metadata key")?)
            .map_err(|_| tokenizer_error("a metadata key is not UTF-8"))?
            .to_string();
        if !key.starts_with(TOKENIZER_KEY_PREFIX) {
            return Err(tokenizer_error(format!(
                "metadata key {key:?} does not start with {TOKENIZER_KEY_PREFIX:?}"
            )));
        }
        if metadata
            .last_key_value()
            .is_some_and(|(last, _)| *last >= key)
        {
            return Err(tokenizer_error(format!(
                "metadata key {key:?} is out of order or repeated"
            )));
        }
        let type_id = reader.u32("metadata type")?;
        let value = reader.value(&key, type_id, false)?;
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// A value in GGUF's own encoding (type id, then payload).
fn encode_value(value: &Value, out: &mut Vec<u8>, with_type: bool) {
    let (type_id, payload): (u32, Vec<u8>) = match value {
        Value::U8(v) => (0, vec![*v]),
        Value::I8(v) => (1, v.to_le_bytes().to_vec()),
        Value::U16(v) => (2, v.to_le_bytes().to_vec()),
        Value::I16(v) => (3, v.to_le_bytes().to_vec()),
        Value::U32(v) => (4, v.to_le_bytes().to_vec()),
        Value::I32(v) => (5, v.to_le_bytes().to_vec()),
        Value::F32(v) => (6, v.to_le_bytes().to_vec()),
        Value::Bool(v) => (7, vec![*v as u8]),
        Value::String(s) => {
            let mut bytes = (s.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(s.as_bytes());
            (8, bytes)
        }
        Value::Array(values) => {
            if with_type {
                out.extend_from_slice(&9u32.to_le_bytes());
            }
            let element_type = values.first().map_or(0, value_type);
            out.extend_from_slice(&element_type.to_le_bytes());
            out.extend_from_slice(&(values.len() as u64).to_le_bytes());
            for v in values {
                encode_value(v, out, false);
            }
            return;
        }
        Value::U64(v) => (10, v.to_le_bytes().to_vec()),
        Value::I64(v) => (11, v.to_le_bytes().to_vec()),
        Value::F64(v) => (12, v.to_le_bytes().to_vec()),
    };
    if with_type {
        out.extend_from_slice(&type_id.to_le_bytes());
    }
    out.extend_from_slice(&payload);
}

fn value_type(value: &Value) -> u32 {
    match value {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

/// Turns token bytes into text incrementally: only complete UTF-8 characters come out; an
/// invalid sequence becomes U+FFFD.
#[derive(Debug, Default)]
pub struct TextDecoder {
    pending: Vec<u8>,
}

impl TextDecoder {
    /// Add `bytes`; return the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return text;
                }
                Err(error) => {
                    let valid_len = error.valid_up_to();
                    // SAFETY-free: from_utf8 just validated this prefix.
                    text.push_str(std::str::from_utf8(&self.pending[..valid_len]).unwrap_or(""));
                    match error.error_len() {
                        None => {
                            self.pending.drain(..valid_len);
                            return text;
                        }
                        Some(bad) => {
                            text.push('\u{FFFD}');
                            self.pending.drain(..valid_len + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left (an incomplete character) as U+FFFD.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

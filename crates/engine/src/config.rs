//! `config.json` of a BERT model, read with explicit limits.

use crate::{Error, Result};

/// Largest `config.json` accepted.
pub const CONFIG_BYTES_MAX: usize = 1024 * 1024;
/// Largest hidden size, layer count, vocabulary and position table accepted (sanity bounds
/// that keep every derived size far from overflow).
pub const HIDDEN_MAX: usize = 16_384;
pub const LAYERS_MAX: usize = 256;
pub const VOCAB_MAX: usize = 1 << 20;
pub const POSITIONS_MAX: usize = 1 << 16;

/// The fields of a Hugging Face BERT `config.json` the encoder uses.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: String,
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".to_string()
}

impl BertConfig {
    /// Parse and validate `config.json` bytes.
    pub fn parse(bytes: &[u8]) -> Result<BertConfig> {
        if bytes.len() > CONFIG_BYTES_MAX {
            return Err(Error::Config {
                detail: format!("{} bytes, more than {CONFIG_BYTES_MAX}", bytes.len()),
            });
        }
        let config: BertConfig = serde_json::from_slice(bytes).map_err(|error| Error::Config {
            detail: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let fail = |detail: String| Err(Error::Config { detail });
        let in_range = |value: usize, max: usize| (1..=max).contains(&value);
        if !in_range(self.hidden_size, HIDDEN_MAX)
            || !in_range(self.intermediate_size, 4 * HIDDEN_MAX)
            || !in_range(self.num_hidden_layers, LAYERS_MAX)
            || !in_range(self.vocab_size, VOCAB_MAX)
            || !in_range(self.max_position_embeddings, POSITIONS_MAX)
            || !in_range(self.type_vocab_size, 16)
        {
            return fail(format!("size out of range: {self:?}"));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return fail(format!(
                "{} heads do not divide hidden size {}",
                self.num_attention_heads, self.hidden_size
            ));
        }
        if self.hidden_act != "gelu" {
            return fail(format!(
                "hidden_act {:?} (only erf \"gelu\")",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return fail(format!(
                "position_embedding_type {:?}",
                self.position_embedding_type
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return fail(format!("layer_norm_eps {}", self.layer_norm_eps));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

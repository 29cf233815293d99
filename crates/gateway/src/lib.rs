//! piazza-gateway: an OpenAI-compatible HTTP API in front of Piazza's compute market.
//!
//! Any OpenAI client (its base URL set to the gateway, its API key one the gateway issued) gets
//! `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/completions` and
//! `POST /v1/chat/completions` (with `stream: true`). A request is served over one of the
//! paying key's sessions with the model's provider ([`sessions`]: opened, topped up and rotated
//! by the gateway; text relayed as the provider streams it), each answer carrying the
//! provider's signed session receipts in a `piazza` field (on the last chunk of a stream) and
//! in `x-piazza-receipt` (hex of each signed receipt), `x-piazza-session`,
//! `x-piazza-provider` and `x-piazza-trace-root` headers. With `x-piazza-mode: job`, or when
//! no provider serves the model's sessions, it becomes paid jobs on chain, signed by the
//! keystore key its API key is bound to, and each answer carries the receipts of its jobs —
//! job id, provider, trace root, submitting transaction — in `piazza` (a list, one per job, in
//! input order) and in `x-piazza-job`, `x-piazza-provider`, `x-piazza-trace-root` and
//! `x-piazza-tx` headers (comma-separated, same order).
//!
//! **Invariants.**
//! - A key never spends past its limit: a request reserves its worst case (escrow plus the
//!   exact fee of each job's transaction, from the chain's fee schedule — [`fees`]) before
//!   anything is signed and is refused with 429 `insufficient_quota` when that would pass the
//!   limit; on settlement the chain's actual charge replaces the reservation. Over a session
//!   the worst case is `max_units × max_price_per_unit` and the charge the receipt's price. Jobs run and
//!   settle in a task of their own, so a client that hangs up is still charged and no
//!   reservation outlives its jobs.
//! - Only a hash of each API key is stored (`DATA_DIR/api_keys.json`, written atomically).
//! - No request body can panic the gateway or make it allocate without bound: bodies are read
//!   up to [`Limits::body_bytes_max`] (413 beyond), then parsed into typed requests (400 on any
//!   mismatch, and 400 naming any field the gateway cannot honour — [`params`]); batches, token
//!   counts and stop sequences have named limits; requests in flight are bounded, per API key
//!   and in all ([`slots`]: one key cannot take every slot; 429 `rate_limit_exceeded` when a
//!   share stays full), and every job by a timeout (504).
//! - Errors are OpenAI-shaped: `{"error":{"message","type","param","code"}}`.
//! - The gateway holds no model and runs no inference; answers are exactly the settled jobs'
//!   outputs (chat output is only cut at a stop sequence, as OpenAI does).
//!
//! ```no_run
//! # async fn example() -> Result<(), piazza_gateway::GatewayError> {
//! use piazza_gateway::{start, GatewayConfig};
//! let config = GatewayConfig::new(
//!     "127.0.0.1:8080".parse().unwrap(),
//!     "http://127.0.0.1:8545",
//!     "./devnet/gateway".into(),
//!     "./devnet/keys".into(),
//! );
//! let gateway = start(config).await?;
//! let api_key = gateway.create_key("dev", "10".parse().unwrap())?;
//! println!("OPENAI_BASE_URL={}/v1 OPENAI_API_KEY={api_key}", gateway.url());
//! # gateway.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod agents;
pub mod cli;
mod embeddings;
pub mod errors;
pub mod fees;
mod generation;
pub mod keys;
mod live;
pub mod market;
pub mod mcp;
mod models;
pub mod openai;
pub mod params;
mod server;
pub mod sessions;
pub mod slots;
pub mod x402;

pub use cli::{run, GatewayCommand};
pub use server::{start, GatewayHandle};

use keys::KeyStoreError;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// Units (input tokens) escrowed per embedding job: the embedding engine's token limit.
pub const EMBEDDING_UNITS_MAX: u64 = 256;
/// The OpenAI default `max_tokens` for chat when the request names none.
pub const CHAT_MAX_TOKENS_DEFAULT: u64 = 256;
/// The OpenAI default `max_tokens` for text completions.
pub const COMPLETION_MAX_TOKENS_DEFAULT: u64 = 16;
/// How long a request body may take to arrive (408 beyond).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages in one chat request.
pub const CHAT_MESSAGES_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("node: {0}")]
    Node(#[from] piazza_client::ClientError),
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    #[error("keystore: {0}")]
    Keystore(#[from] piazza_keystore::KeystoreError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// How the inputs of one embeddings request are submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSubmission {
    /// All at once, consecutive nonces, settling in the same blocks.
    Concurrent,
    /// One job after the other.
    Sequential,
}

/// Bounds on what one gateway takes on.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (413 beyond).
    pub body_bytes_max: usize,
    /// Requests handled at once.
    pub requests_in_flight_max: NonZeroUsize,
    /// Requests one API key may have in flight (its share of `requests_in_flight_max`).
    pub requests_in_flight_per_key_max: NonZeroUsize,
    /// How long a request waits for its key's slot, and then for one of the gateway's, before
    /// 429.
    pub queue_wait: Duration,
    /// From submission to settlement, per job (504 beyond).
    pub job_timeout: Duration,
    /// Inputs in one embeddings request.
    pub batch_inputs_max: usize,
    /// Largest `max_tokens` a generation request may ask for.
    pub max_tokens_max: u64,
    pub batch_submission: BatchSubmission,
    /// A session's deposit (and each top-up), in requests at their worst case.
    pub session_deposit_requests: u128,
    /// How long a session is opened for, in blocks (it is rotated
    /// [`sessions::SESSION_ROTATE_BEFORE_BLOCKS`] before it expires).
    pub session_expiry_blocks: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 1024 * 1024,
            requests_in_flight_max: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            requests_in_flight_per_key_max: NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN),
            queue_wait: Duration::from_secs(10),
            job_timeout: Duration::from_secs(120),
            batch_inputs_max: 64,
            max_tokens_max: 2048,
            batch_submission: BatchSubmission::Concurrent,
            session_deposit_requests: sessions::SESSION_DEPOSIT_REQUESTS,
            session_expiry_blocks: sessions::SESSION_EXPIRY_BLOCKS,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub node_url: String,
    /// Holds `api_keys.json`.
    pub data_dir: PathBuf,
    /// The keystore of the paying keys.
    pub keystore_dir: PathBuf,
    /// Unlocks the paying keys.
    pub password: String,
    pub limits: Limits,
    /// Routes charged over x402 (`x402::PaywallConfig`); off when `None`.
    pub paywall: Option<x402::PaywallConfig>,
}

impl GatewayConfig {
    pub fn new(
        listen: SocketAddr,
        node_url: &str,
        data_dir: PathBuf,
        keystore_dir: PathBuf,
    ) -> Self {
        GatewayConfig {
            listen,
            node_url: node_url.to_string(),
            data_dir,
            keystore_dir,
            password: String::new(),
            limits: Limits::default(),
            paywall: None,
        }
    }
}

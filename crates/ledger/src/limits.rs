//! Transaction-wide limits the modules also read (a message's fields are bounded by the
//! transaction that carries them).

/// Largest encoded signed transaction (evidence-only transactions have their own class,
/// `tx::EVIDENCE_TX_BYTES_MAX`).
pub const TX_BYTES_MAX: usize = 64 * 1024;
/// Most messages in one transaction.
pub const TX_MESSAGES_MAX: usize = 16;
/// Longest chain id.
pub const CHAIN_ID_BYTES_MAX: usize = 64;

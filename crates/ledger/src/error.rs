//! Transaction errors with stable, consensus-visible codes.

use piazza_codec::DecodeError;
use piazza_primitives::PublicKey;
use std::fmt;

/// Stable codes: they appear in receipts, in RPC errors and in client scripts. Never renumber;
/// only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    MalformedBytes = 1,
    OversizedTx = 2,
    BadSignature = 3,
    WrongChainId = 4,
    NonceReplayed = 5,
    NonceGap = 6,
    InsufficientFunds = 7,
    FeeTooLow = 8,
    TooManyMessages = 9,
    InvalidMessage = 10,
    MempoolFull = 11,
    DuplicateTx = 12,
    NoMessages = 13,
    Overflow = 14,
    /// The node could not process the request (storage failure); the transaction may be retried.
    Internal = 15,
    /// A bounded ledger queue or list has no room for the entry the transaction would add.
    QueueFull = 16,
    /// A message emitted more events than its bound (a ledger invariant; never truncated).
    TooManyEvents = 17,
    /// A key of small order (no secret: anyone can sign for it) signs the transaction or is
    /// registered or bound to value by it.
    SmallOrderKey = 18,
    UnbondExceedsBond = 20,
    StakeBelowMinimum = 21,
    UnknownModel = 30,
    EscrowTooLow = 31,
    InputTooLarge = 32,
    NotAssigned = 33,
    LateResult = 34,
    ResultAlreadyPosted = 35,
    UnknownJob = 36,
    NoProvider = 37,
    NotAProvider = 38,
    ModelExists = 39,
    WorkExceedsLimit = 40,
    OutputHashMismatch = 41,
    ProviderExists = 42,
    NotAnAuditor = 50,
    AuditorExists = 51,
    NotChallengeable = 52,
    DisputeExists = 53,
    NoDispute = 54,
    WrongRound = 55,
    NotAParty = 56,
    BadReveal = 57,
    EvidenceRejected = 58,
    UnknownSession = 60,
    /// The sender is not the session's owner (or, for a commit or reveal, its provider).
    NotSessionParty = 61,
    /// The session is not in a state that takes this message (pending, closing, closed).
    SessionNotOpen = 62,
    /// A voucher or request that does not verify, goes back, or pays more than allowed.
    BadVoucher = 63,
    /// A receipt that is not in its commit, does not match its request, or is already used.
    BadReceipt = 64,
    /// A reveal for a receipt that was not drawn for audit, or whose deadline passed.
    NotAudited = 65,
    /// A commit whose worst-case fraud slash (`2 × max(M, ⌈n/A⌉ × p)`) exceeds its
    /// provider's bond at that moment: the bond could not answer for it.
    CommitExceedsBond = 66,
    // The economy (shares, lineage, datasets, pools, labelling): 70-89.
    /// A lineage names more parents than its bound.
    LineageTooWide = 70,
    /// A lineage's chain of parents is deeper than its bound.
    LineageTooDeep = 71,
    /// A record names itself (or a descendant) as its parent.
    LineageCycle = 72,
    /// Parent weights that are not positive, repeat a parent, or do not sum to the whole.
    LineageWeights = 73,
    /// A royalty or share over 10,000 basis points.
    RoyaltyOverWhole = 74,
    UnknownAsset = 75,
    AssetExists = 76,
    /// A claim or transfer by an account that holds none of the asset's shares and has nothing to claim.
    NotAHolder = 77,
    InsufficientShares = 78,
    UnknownOffering = 79,
    /// An offering or purchase whose price or supply does not fit the integers that hold it.
    OfferingOverflow = 80,
    OfferingSoldOut = 81,
    UnknownDataset = 82,
    UnknownPool = 83,
    /// A contribution whose validation job is missing, not settled, or shows it too close to the pool's items.
    ContributionRejected = 84,
    UnknownLabelTask = 85,
    /// A label from an account the task did not assign the item to.
    NotALabeller = 86,
    /// A label or settlement for a task or item not in the state that takes it.
    LabelClosed = 87,
    /// A message only the record's owner may send.
    NotAssetOwner = 88,
    // Agents, session-key grants and transfer authorizations: 90-99.
    /// The transaction's signer holds no live grant from its sender (none, revoked, expired).
    GrantRefused = 90,
    /// A grantee's transaction outside its grant: a message kind, a per-message limit, a
    /// recipient or agent, the rate or the spend cap.
    GrantExceeded = 91,
    /// A transfer authorization that does not verify, is outside its validity or was used.
    AuthorizationRefused = 92,
    UnknownAgent = 93,
    /// A message only the agent's owner may send, or a call message from the wrong party.
    NotAgentParty = 94,
    UnknownCall = 95,
    /// A call not in the state that takes this message (already answered, settled, refunded).
    CallClosed = 96,
    // Blob storage: 100-109.
    UnknownDeal = 100,
    NotAStorageProvider = 101,
    StorageProviderExists = 102,
    /// A blob record whose layout is inconsistent (shard count, shard length, sizes).
    BadBlobRecord = 103,
    /// The blob is already kept by a deal that has not ended.
    BlobKept = 104,
    NotDealOwner = 105,
    /// An answer from an account that does not hold the shard.
    NotShardHolder = 106,
    /// No challenge is open on the shard (none issued, already answered, or past its deadline).
    ChallengeClosed = 107,
    /// The deal is not active (pending assignment or ended).
    DealClosed = 108,
    /// A storage provider that still holds shards cannot leave or shrink below them.
    StorageProviderBusy = 109,
    /// The deal's epochs have started: its upload can no longer be confirmed.
    DealStarted = 110,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 86] = [
        ErrorCode::MalformedBytes,
        ErrorCode::OversizedTx,
        ErrorCode::BadSignature,
        ErrorCode::WrongChainId,
        ErrorCode::NonceReplayed,
        ErrorCode::NonceGap,
        ErrorCode::InsufficientFunds,
        ErrorCode::FeeTooLow,
        ErrorCode::TooManyMessages,
        ErrorCode::InvalidMessage,
        ErrorCode::MempoolFull,
        ErrorCode::DuplicateTx,
        ErrorCode::NoMessages,
        ErrorCode::Overflow,
        ErrorCode::Internal,
        ErrorCode::QueueFull,
        ErrorCode::TooManyEvents,
        ErrorCode::SmallOrderKey,
        ErrorCode::UnbondExceedsBond,
        ErrorCode::StakeBelowMinimum,
        ErrorCode::UnknownModel,
        ErrorCode::EscrowTooLow,
        ErrorCode::InputTooLarge,
        ErrorCode::NotAssigned,
        ErrorCode::LateResult,
        ErrorCode::ResultAlreadyPosted,
        ErrorCode::UnknownJob,
        ErrorCode::NoProvider,
        ErrorCode::NotAProvider,
        ErrorCode::ModelExists,
        ErrorCode::WorkExceedsLimit,
        ErrorCode::OutputHashMismatch,
        ErrorCode::ProviderExists,
        ErrorCode::NotAnAuditor,
        ErrorCode::AuditorExists,
        ErrorCode::NotChallengeable,
        ErrorCode::DisputeExists,
        ErrorCode::NoDispute,
        ErrorCode::WrongRound,
        ErrorCode::NotAParty,
        ErrorCode::BadReveal,
        ErrorCode::EvidenceRejected,
        ErrorCode::UnknownSession,
        ErrorCode::NotSessionParty,
        ErrorCode::SessionNotOpen,
        ErrorCode::BadVoucher,
        ErrorCode::BadReceipt,
        ErrorCode::NotAudited,
        ErrorCode::CommitExceedsBond,
        ErrorCode::LineageTooWide,
        ErrorCode::LineageTooDeep,
        ErrorCode::LineageCycle,
        ErrorCode::LineageWeights,
        ErrorCode::RoyaltyOverWhole,
        ErrorCode::UnknownAsset,
        ErrorCode::AssetExists,
        ErrorCode::NotAHolder,
        ErrorCode::InsufficientShares,
        ErrorCode::UnknownOffering,
        ErrorCode::OfferingOverflow,
        ErrorCode::OfferingSoldOut,
        ErrorCode::UnknownDataset,
        ErrorCode::UnknownPool,
        ErrorCode::ContributionRejected,
        ErrorCode::UnknownLabelTask,
        ErrorCode::NotALabeller,
        ErrorCode::LabelClosed,
        ErrorCode::NotAssetOwner,
        ErrorCode::GrantRefused,
        ErrorCode::GrantExceeded,
        ErrorCode::AuthorizationRefused,
        ErrorCode::UnknownAgent,
        ErrorCode::NotAgentParty,
        ErrorCode::UnknownCall,
        ErrorCode::CallClosed,
        ErrorCode::UnknownDeal,
        ErrorCode::NotAStorageProvider,
        ErrorCode::StorageProviderExists,
        ErrorCode::BadBlobRecord,
        ErrorCode::BlobKept,
        ErrorCode::NotDealOwner,
        ErrorCode::NotShardHolder,
        ErrorCode::ChallengeClosed,
        ErrorCode::DealClosed,
        ErrorCode::StorageProviderBusy,
        ErrorCode::DealStarted,
    ];

    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn from_code(code: u16) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The stable snake_case name shown to people and scripts.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::MalformedBytes => "malformed_bytes",
            ErrorCode::OversizedTx => "oversized_tx",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::WrongChainId => "wrong_chain_id",
            ErrorCode::NonceReplayed => "nonce_replayed",
            ErrorCode::NonceGap => "nonce_gap",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::FeeTooLow => "fee_too_low",
            ErrorCode::TooManyMessages => "too_many_messages",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MempoolFull => "mempool_full",
            ErrorCode::DuplicateTx => "duplicate_tx",
            ErrorCode::NoMessages => "no_messages",
            ErrorCode::Overflow => "overflow",
            ErrorCode::Internal => "internal",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::TooManyEvents => "too_many_events",
            ErrorCode::SmallOrderKey => "small_order_key",
            ErrorCode::UnbondExceedsBond => "unbond_exceeds_bond",
            ErrorCode::StakeBelowMinimum => "stake_below_minimum",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::EscrowTooLow => "escrow_too_low",
            ErrorCode::InputTooLarge => "input_too_large",
            ErrorCode::NotAssigned => "not_assigned",
            ErrorCode::LateResult => "late_result",
            ErrorCode::ResultAlreadyPosted => "result_already_posted",
            ErrorCode::UnknownJob => "unknown_job",
            ErrorCode::NoProvider => "no_provider",
            ErrorCode::NotAProvider => "not_a_provider",
            ErrorCode::ModelExists => "model_exists",
            ErrorCode::WorkExceedsLimit => "work_exceeds_limit",
            ErrorCode::OutputHashMismatch => "output_hash_mismatch",
            ErrorCode::ProviderExists => "provider_exists",
            ErrorCode::NotAnAuditor => "not_an_auditor",
            ErrorCode::AuditorExists => "auditor_exists",
            ErrorCode::NotChallengeable => "not_challengeable",
            ErrorCode::DisputeExists => "dispute_exists",
            ErrorCode::NoDispute => "no_dispute",
            ErrorCode::WrongRound => "wrong_round",
            ErrorCode::NotAParty => "not_a_party",
            ErrorCode::BadReveal => "bad_reveal",
            ErrorCode::EvidenceRejected => "evidence_rejected",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::NotSessionParty => "not_session_party",
            ErrorCode::SessionNotOpen => "session_not_open",
            ErrorCode::BadVoucher => "bad_voucher",
            ErrorCode::BadReceipt => "bad_receipt",
            ErrorCode::NotAudited => "not_audited",
            ErrorCode::CommitExceedsBond => "commit_exceeds_bond",
            ErrorCode::LineageTooWide => "lineage_too_wide",
            ErrorCode::LineageTooDeep => "lineage_too_deep",
            ErrorCode::LineageCycle => "lineage_cycle",
            ErrorCode::LineageWeights => "lineage_weights",
            ErrorCode::RoyaltyOverWhole => "royalty_over_whole",
            ErrorCode::UnknownAsset => "unknown_asset",
            ErrorCode::AssetExists => "asset_exists",
            ErrorCode::NotAHolder => "not_a_holder",
            ErrorCode::InsufficientShares => "insufficient_shares",
            ErrorCode::UnknownOffering => "unknown_offering",
            ErrorCode::OfferingOverflow => "offering_overflow",
            ErrorCode::OfferingSoldOut => "offering_sold_out",
            ErrorCode::UnknownDataset => "unknown_dataset",
            ErrorCode::UnknownPool => "unknown_pool",
            ErrorCode::ContributionRejected => "contribution_rejected",
            ErrorCode::UnknownLabelTask => "unknown_label_task",
            ErrorCode::NotALabeller => "not_a_labeller",
            ErrorCode::LabelClosed => "label_closed",
            ErrorCode::NotAssetOwner => "not_asset_owner",
            ErrorCode::GrantRefused => "grant_refused",
            ErrorCode::GrantExceeded => "grant_exceeded",
            ErrorCode::AuthorizationRefused => "authorization_refused",
            ErrorCode::UnknownAgent => "unknown_agent",
            ErrorCode::NotAgentParty => "not_agent_party",
            ErrorCode::UnknownCall => "unknown_call",
            ErrorCode::CallClosed => "call_closed",
            ErrorCode::UnknownDeal => "unknown_deal",
            ErrorCode::NotAStorageProvider => "not_a_storage_provider",
            ErrorCode::StorageProviderExists => "storage_provider_exists",
            ErrorCode::BadBlobRecord => "bad_blob_record",
            ErrorCode::BlobKept => "blob_kept",
            ErrorCode::NotDealOwner => "not_deal_owner",
            ErrorCode::NotShardHolder => "not_shard_holder",
            ErrorCode::ChallengeClosed => "challenge_closed",
            ErrorCode::DealClosed => "deal_closed",
            ErrorCode::StorageProviderBusy => "storage_provider_busy",
            ErrorCode::DealStarted => "deal_started",
        }
    }
}

/// Why a transaction (or one of its messages) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxError {
    pub code: ErrorCode,
    pub message: String,
}

impl TxError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TxError {
            code,
            message: message.into(),
        }
    }
}

/// Refuses `key` in the role `what` when it is of small order
/// (`PublicKey::is_small_order`): such a key has no secret, so anyone could sign for it.
pub fn refuse_small_order(key: &PublicKey, what: &str) -> Result<(), TxError> {
    if key.is_small_order() {
        return Err(TxError::new(
            ErrorCode::SmallOrderKey,
            format!("{what} {key} is of small order: it has no secret and anyone can sign for it"),
        ));
    }
    Ok(())
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.name(),
            self.code.code(),
            self.message
        )
    }
}

impl std::error::Error for TxError {}

impl From<DecodeError> for TxError {
    fn from(e: DecodeError) -> Self {
        TxError::new(ErrorCode::MalformedBytes, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate code {}", code.code());
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        let names: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}

//! The JSON-RPC 2.0 API of a Piazza node: method names, error codes and result shapes.
//!
//! Invariants:
//! - This is the only place the wire format of the API is written down; the node maps its domain
//!   types into these, clients read these. Amounts are decimal strings of base units (JSON numbers
//!   cannot hold a `u128`); hashes, keys and raw bytes are lowercase hex; addresses are bech32m.
//! - No domain logic here: plain data.
//!
//! Methods (params are positional arrays):
//! - `piazza_status []` → [`Status`]
//! - `piazza_submitTransaction [tx_hex]` → [`Submitted`]
//! - `piazza_getTransaction [hash]` → [`TxInfo`] or `null`
//! - `piazza_getReceipt [hash]` → [`ReceiptInfo`] or `null`
//! - `piazza_getBlock [height | hash]` → [`BlockInfo`] or `null`
//! - `piazza_getAccount [address, height?]` → [`AccountInfo`] (with a state proof)
//! - `piazza_getStake [address]` → [`StakeInfo`]
//! - `piazza_getValidators [height?]` → [`ValidatorSetInfo`] (with the schedule's state proof)
//!   or `null` (no validator records)
//! - `piazza_getCommitCertificate [height]` → [`CommitCertificateInfo`] or `null`
//! - `piazza_subscribe ["newBlocks" | "events"]` (WebSocket only) → subscription id; then
//!   notifications `piazza_subscription {subscription, result}` with a [`BlockInfo`] or an
//!   [`EventInfo`]. `piazza_unsubscribe [id]` → `true`.

use serde::{Deserialize, Serialize};

pub mod method {
    pub const STATUS: &str = "piazza_status";
    pub const SUBMIT_TRANSACTION: &str = "piazza_submitTransaction";
    pub const GET_TRANSACTION: &str = "piazza_getTransaction";
    pub const GET_RECEIPT: &str = "piazza_getReceipt";
    /// What became of a transaction the node acknowledged: pending, included or dropped.
    pub const GET_TRANSACTION_STATUS: &str = "piazza_getTransactionStatus";
    pub const GET_BLOCK: &str = "piazza_getBlock";
    pub const GET_ACCOUNT: &str = "piazza_getAccount";
    pub const GET_STAKE: &str = "piazza_getStake";
    pub const SUBSCRIBE: &str = "piazza_subscribe";
    pub const UNSUBSCRIBE: &str = "piazza_unsubscribe";
    pub const SUBSCRIPTION: &str = "piazza_subscription";
    /// The validator set of a height (default: the next block's): [`super::ValidatorSetInfo`]
    /// with the state proof of the schedule it was read from, `null` on a chain whose genesis
    /// names no validators (a solo devnet).
    pub const GET_VALIDATORS: &str = "piazza_getValidators";
    /// The commit certificate that finalized a height on a network of validators:
    /// [`super::CommitCertificateInfo`], `null` on a solo devnet or for a height not decided.
    pub const GET_COMMIT_CERTIFICATE: &str = "piazza_getCommitCertificate";
}

/// JSON-RPC error codes. Transaction refusals use the ledger's stable code (1..=999) as the
/// JSON-RPC code, with its name in `data.name`.
pub mod error_code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The request body is larger than the node accepts.
    pub const BODY_TOO_LARGE: i64 = -32001;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub chain_id: String,
    pub height: u64,
    pub block_hash: String,
    pub state_root: String,
    pub time_ms: u64,
    pub mempool_size: usize,
    pub validator: String,
    /// The chain's fee schedule (absent from older nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fees: Option<FeeInfo>,
}

/// How transaction fees are metered: `(tx_base_units + Σ message units + bytes × byte_units)
/// × unit_price`, amounts in base units.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeeInfo {
    pub unit_price: String,
    pub tx_base_units: u64,
    pub byte_units: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Submitted {
    pub hash: String,
}

/// What became of an acknowledged transaction (`piazza_getTransactionStatus`). A hash the node
/// acknowledged is durably journaled: it is either included in a block or reported here as
/// dropped with the reason; `unknown` means this node never acknowledged it (or forgot an old
/// drop: it remembers the most recent ones).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatusInfo {
    Pending,
    Included {
        height: u64,
    },
    Dropped {
        code: u16,
        name: String,
        reason: String,
    },
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TxInfo {
    pub hash: String,
    pub height: u64,
    pub index: u32,
    pub sender: String,
    pub nonce: u64,
    pub max_fee: String,
    pub messages: Vec<serde_json::Value>,
    /// The signed transaction's canonical bytes.
    pub raw: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TxFailure {
    pub code: u16,
    pub name: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventInfo {
    pub kind: String,
    pub attributes: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    pub height: u64,
}

impl ReceiptInfo {
    /// The ids of the jobs a submission created, in order (one per copy of a redundant job).
    pub fn job_ids(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter(|e| e.kind == "compute.job_submitted")
            .filter_map(|e| e.attributes.get("job")?.parse().ok())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptInfo {
    pub tx_hash: String,
    pub height: u64,
    pub index: u32,
    /// `"ok"` or `"failed"`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TxFailure>,
    pub fee_paid: String,
    pub events: Vec<EventInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockInfo {
    pub hash: String,
    pub height: u64,
    pub parent_hash: String,
    pub time_ms: u64,
    pub proposer: String,
    pub tx_root: String,
    pub state_root: String,
    pub randomness: String,
    pub tx_hashes: Vec<String>,
    /// The block's canonical bytes, when asked for (`piazza_getBlock [h, true]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// One validator of a height's set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ValidatorInfo {
    /// The operator's account (bech32m).
    pub operator: String,
    /// The ed25519 key it signs votes with (hex); its address is the vote's signer.
    pub consensus_key: String,
    pub voting_power: u64,
}

/// `piazza_getValidators [height?]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ValidatorSetInfo {
    pub height: u64,
    pub total_voting_power: u64,
    pub validators: Vec<ValidatorInfo>,
    /// The state proof of `staking/validator_schedule` the set was read from: at `height - 1`
    /// for a height the node has finalized or the next one, so a light client checks the set
    /// against the state root of block `height - 1` (absent from nodes that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_proof: Option<StateProofInfo>,
}

/// A state key's raw value (absent: proven absent) and its proof, all hex, against the state
/// root of block `height` (the state version the proof is for).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateProofInfo {
    pub height: u64,
    pub state_root: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub proof: String,
}

/// One precommit of a commit certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitSignatureInfo {
    /// The signer's address (bech32m of its consensus key's address).
    pub validator: String,
    /// Its ed25519 signature over the precommit (hex).
    pub signature: String,
}

/// `piazza_getCommitCertificate [height]`: the precommits that decided `block_hash` at
/// (`height`, `round`); clients check them against the height's validator set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitCertificateInfo {
    pub height: u64,
    pub round: u32,
    pub block_hash: String,
    pub signatures: Vec<CommitSignatureInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountInfo {
    pub address: String,
    pub balance: String,
    pub nonce: u64,
    /// The account's state proof (its value absent for an empty account), its fields beside
    /// the account's on the wire.
    #[serde(flatten)]
    pub proof: StateProofInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StakeInfo {
    pub address: String,
    /// Role name → bonded base units.
    pub bonds: std::collections::BTreeMap<String, String>,
    pub unbonding: String,
}

pub mod verify_method {
    pub const GET_DISPUTE: &str = "piazza_getDispute";
    pub const GET_VERIFY_TASKS: &str = "piazza_getVerifyTasks";
    pub const GET_AUDITOR: &str = "piazza_getAuditor";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartyInfo {
    pub address: String,
    pub job: u64,
    pub root: String,
    /// 0 until a redundant copy's provider states it in round 0.
    pub step_count: u64,
    pub ids: String,
    pub bond: String,
    pub is_provider: bool,
}

/// A dispute's public state: everything a party needs to play its next move.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DisputeInfo {
    pub job: u64,
    pub defendant: PartyInfo,
    pub claimant: PartyInfo,
    pub round: u32,
    pub node_level: u32,
    pub node_index: u64,
    pub phase: DisputePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// Defendant's and claimant's leaf at `step`.
    #[serde(default)]
    pub leaves: Vec<String>,
    /// Whether the defendant and the claimant revealed this round.
    pub revealed: Vec<bool>,
    pub deadline_height: u64,
    pub opened_height: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditInfo {
    pub job: u64,
    pub auditor: String,
    pub deadline_height: u64,
}

/// The open audits and disputes of one address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct VerifyTasks {
    pub audits: Vec<AuditInfo>,
    pub disputes: Vec<DisputeInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditorInfo {
    pub address: String,
    pub models: Vec<String>,
    pub attested: u64,
    pub challenged: u64,
    pub missed: u64,
    pub stake: String,
}

pub mod compute_method {
    pub const GET_MODELS: &str = "piazza_getModels";
    pub const GET_JOB: &str = "piazza_getJob";
    /// `[id, height?]` → [`super::JobProofInfo`]: the job record's state proof at a height
    /// (default: the head), checkable against that block's state root.
    pub const GET_JOB_PROOF: &str = "piazza_getJobProof";
    pub const GET_PROVIDER: &str = "piazza_getProvider";
    pub const GET_PROVIDER_JOBS: &str = "piazza_getProviderJobs";
}

/// A job record's state proof: the raw record under its state key (absent when no job has the
/// id at that height) and the proof, all hex, against the state root of block `height`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobProofInfo {
    pub id: u64,
    /// The job record's state proof, its fields beside `id` on the wire.
    #[serde(flatten)]
    pub proof: StateProofInfo,
}

/// The storage methods' names (the node serves them, the client calls them).
pub mod storage_method {
    pub const GET_STORAGE_PARAMS: &str = "piazza_getStorageParams";
    pub const GET_BLOB: &str = "piazza_getBlob";
    pub const GET_STORAGE_DEAL: &str = "piazza_getStorageDeal";
    pub const GET_STORAGE_DEALS: &str = "piazza_getStorageDeals";
    pub const GET_STORAGE_CHALLENGES: &str = "piazza_getStorageChallenges";
    pub const GET_STORAGE_PROVIDER: &str = "piazza_getStorageProvider";
    pub const GET_STORAGE_PROVIDERS: &str = "piazza_getStorageProviders";
}

/// The economy methods' names (the node serves them, the client calls them).
pub mod economy_method {
    /// `["model:NAME" | "dataset:ID" | "agent:NAME" | "pool:ID"]`: the asset, its holders
    /// (units, locked units, claimable now), or null.
    pub const GET_ASSET: &str = "piazza_getAsset";
    /// `[asset, address]`: base units the address may claim now (a decimal string).
    pub const GET_CLAIMABLE: &str = "piazza_getClaimable";
    /// `[id]`: one offering, or null.
    pub const GET_OFFERING: &str = "piazza_getOffering";
    /// `[model]`: the model's lineage graph down to the depth bound, or null.
    pub const GET_LINEAGE: &str = "piazza_getLineage";
    /// `[id, address?]`: a dataset (and the address's access), or null.
    pub const GET_DATASET: &str = "piazza_getDataset";
    /// `[id]`: a contribution pool with its items, or null.
    pub const GET_POOL: &str = "piazza_getPool";
    /// `[id]`: a labelling task, or null.
    pub const GET_LABEL_TASK: &str = "piazza_getLabelTask";
}

/// The agents methods' names (the node serves them, the client calls them).
pub mod agents_method {
    /// `[tag, limit?]`: active agents with the capability tag, best score first.
    pub const FIND_AGENTS: &str = "piazza_findAgents";
    /// `[id]`: one agent's record, reputation and score, or null.
    pub const GET_AGENT: &str = "piazza_getAgent";
    /// `[id]`: one paid call, or null.
    pub const GET_AGENT_CALL: &str = "piazza_getAgentCall";
    /// `[name]`: the agent registered under `name` (active or not), or null.
    pub const GET_AGENT_BY_NAME: &str = "piazza_getAgentByName";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    /// `embedding` or `generation`.
    pub kind: String,
    pub architecture: String,
    pub config_hash: String,
    pub weights_commitment: String,
    pub tokenizer_hash: String,
    pub owner: String,
    pub license: String,
    pub price_floor: String,
    /// Addresses of the providers serving it.
    pub providers: Vec<String>,
    /// The arithmetic its engines run and its traces are made of: `f32` or `quantized`.
    #[serde(default = "f32_profile")]
    pub numeric: String,
    /// The blobs its files are stored in, when stored on Piazza (a provider that lacks the
    /// weights fetches them by these ids).
    #[serde(default)]
    pub files: Option<ModelFilesInfo>,
}

/// The numeric profile of a record that names none.
fn f32_profile() -> String {
    "f32".into()
}

/// The blob ids (hex) of a model's files; a GGUF generation model's three are one blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelFilesInfo {
    pub weights: String,
    pub tokenizer: String,
    pub config: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderInfo {
    pub address: String,
    pub models: Vec<String>,
    pub price_per_unit: String,
    pub capacity: u32,
    pub endpoint: String,
    pub active_jobs: u32,
    pub jobs_completed: u64,
    pub deadlines_missed: u64,
    #[serde(default)]
    pub frauds: u64,
    pub stake: String,
    /// The speed the provider declared (work units per block for one job): its deadlines
    /// follow it.
    #[serde(default)]
    pub units_per_block: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct JobParamsInfo {
    pub max_tokens: u32,
    pub temperature_milli: u32,
    pub top_k: u32,
    pub top_p_milli: u32,
    pub repetition_penalty_milli: u32,
    pub seed: u64,
    pub chat: bool,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Blocks the provider has to answer (0: the chain's default).
    #[serde(default)]
    pub deadline_blocks: u32,
    /// Providers the job runs on (0 or 1: one).
    #[serde(default)]
    pub redundancy: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobResultInfo {
    /// Hex of the output bytes (embeddings: little-endian f32; generation: UTF-8 text).
    pub output: String,
    pub output_hash: String,
    pub trace_root: String,
    pub work_units: u64,
    pub posted_height: u64,
    /// Tokens the provider states it read from the input (a generation's prompt tokens); not
    /// billed, checked against the tokenizer in a dispute's input phase. 0 when not stated.
    #[serde(default)]
    pub input_units: u64,
}

/// The provenance record of a settled job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobReceiptInfo {
    pub job: u64,
    pub model: String,
    pub input_hash: String,
    pub output_hash: String,
    pub trace_root: String,
    pub provider: String,
    pub price: String,
    pub refund: String,
    pub height: u64,
}

/// Where a job is in its life. A client that meets a state it does not know fails to decode
/// the answer (it never guesses).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a provider.
    Pending,
    /// A provider holds it until its deadline.
    Assigned,
    /// A result is posted; it settles after the challenge window unless held.
    Posted,
    Settled,
    /// Nobody served it; the escrow went back.
    Expired,
    /// Its result was proven wrong; the escrow went back.
    Failed,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Assigned => "assigned",
            JobState::Posted => "posted",
            JobState::Settled => "settled",
            JobState::Expired => "expired",
            JobState::Failed => "failed",
        }
    }

    /// Whether the job has ended (nothing more will happen to it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Settled | JobState::Expired | JobState::Failed
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The phase of a dispute: the bisection rounds, an input dispute (the parties disagree on the
/// token ids), or the step found (waiting for evidence).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DisputePhase {
    Bisect,
    Input,
    Step,
}

impl std::fmt::Display for DisputePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DisputePhase::Bisect => "bisect",
            DisputePhase::Input => "input",
            DisputePhase::Step => "step",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobInfo {
    pub id: u64,
    pub client: String,
    pub model: String,
    /// Hex of the input bytes.
    pub input: String,
    pub params: JobParamsInfo,
    pub max_units: u64,
    pub max_price: String,
    pub submitted_height: u64,
    pub status: JobState,
    /// The first job of its redundant group (its own id when it runs once).
    #[serde(default)]
    pub group: u64,
    /// Why a posted job is not settling yet: `audit`, `dispute` or `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_height: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_height: Option<u64>,
    pub missed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResultInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<JobReceiptInfo>,
}

/// Session methods (DESIGN.md §3.1; the ledger's `sessions` module).
pub mod session_method {
    /// `[session id]` → [`super::SessionInfo`], or null when there is no such session.
    pub const GET_SESSION: &str = "piazza_getSession";
    /// `[session id, first commit index (optional, default: the newest page)]` → up to
    /// [`super::SESSION_COMMITS_PAGE_MAX`] [`super::SessionCommitInfo`], oldest first.
    pub const GET_SESSION_COMMITS: &str = "piazza_getSessionCommits";
    /// `[address]` → [`super::AccountSessions`]: the sessions it owns or serves, not closed.
    pub const GET_ACCOUNT_SESSIONS: &str = "piazza_getAccountSessions";
}

/// Most commits one `piazza_getSessionCommits` answer carries.
pub const SESSION_COMMITS_PAGE_MAX: u64 = 64;

/// Where a session stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Escrowed; a later block assigns its provider.
    Pending,
    /// Its provider serves requests and commits vouchers.
    Open,
    /// No new requests; the provider may still commit until `closing_height` plus the
    /// challenge window, then the unspent deposit returns.
    Closing,
    /// Settled: nothing is escrowed for it.
    Closed,
}

/// A session's on-chain record. Amounts are base units as decimal strings; keys and hashes hex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: u64,
    pub owner: String,
    pub owner_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorised: Option<String>,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The assigned provider's endpoint, from its compute offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// What the session escrows now.
    pub deposit: String,
    pub max_price_per_unit: String,
    pub expiry_height: u64,
    pub opened_height: u64,
    pub state: SessionState,
    /// Released from the deposit so far (payouts and requests moved into jobs).
    pub paid: String,
    pub committed_total: String,
    pub committed_seq: u64,
    pub commit_height: u64,
    pub committed_units: u64,
    pub commits: u64,
    pub pending_commits: u64,
    pub closing_height: u64,
}

/// One commit of a session: its receipts root, voucher, payout and audits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionCommitInfo {
    pub id: u64,
    pub session: u64,
    pub index: u64,
    pub provider: String,
    pub root: String,
    pub count: u64,
    pub units: u64,
    pub from_seq: u64,
    pub voucher_seq: u64,
    pub total: String,
    pub amount: String,
    pub moved: String,
    pub height: u64,
    pub settle_height: u64,
    /// Receipt indexes drawn for audit: the provider reveals each by `reveal_deadline`.
    pub audited: Vec<u64>,
    pub revealed: Vec<u64>,
    pub reveal_deadline: u64,
    pub audits_closed: bool,
    /// Compute jobs made from this commit's revealed or challenged requests.
    pub jobs: Vec<u64>,
    pub paid: bool,
}

/// The sessions an address owns and serves that are not closed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct AccountSessions {
    pub owned: Vec<u64>,
    pub served: Vec<u64>,
}

#[cfg(test)]
mod typed_state_tests {
    use super::*;

    #[test]
    fn job_states_and_dispute_phases_cross_the_wire_by_name_and_unknown_ones_are_refused() {
        for state in [
            JobState::Pending,
            JobState::Assigned,
            JobState::Posted,
            JobState::Settled,
            JobState::Expired,
            JobState::Failed,
        ] {
            let text = serde_json::to_string(&state).unwrap();
            assert_eq!(text, format!("\"{}\"", state.name()));
            assert_eq!(serde_json::from_str::<JobState>(&text).unwrap(), state);
        }
        for (phase, name) in [
            (DisputePhase::Bisect, "bisect"),
            (DisputePhase::Input, "input"),
            (DisputePhase::Step, "step"),
        ] {
            assert_eq!(
                serde_json::to_string(&phase).unwrap(),
                format!("\"{name}\"")
            );
        }
        // A phase or state this client does not know is an error, never a silent skip.
        assert!(serde_json::from_str::<DisputePhase>("\"appeal\"").is_err());
        assert!(serde_json::from_str::<JobState>("\"cancelled\"").is_err());
    }

    #[test]
    fn proven_answers_carry_their_proof_fields_flat_on_the_wire() {
        let proof = |value: Option<&str>| StateProofInfo {
            height: 7,
            state_root: "aa".into(),
            key: "6b".into(),
            value: value.map(str::to_string),
            proof: "70".into(),
        };
        let account = AccountInfo {
            address: "pz1x".into(),
            balance: "5".into(),
            nonce: 2,
            proof: proof(Some("76")),
        };
        let wire = serde_json::to_value(&account).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"address": "pz1x", "balance": "5", "nonce": 2, "height": 7,
                "state_root": "aa", "key": "6b", "value": "76", "proof": "70"})
        );
        assert_eq!(
            serde_json::from_value::<AccountInfo>(wire).unwrap(),
            account
        );
        // A key proven absent has no `value`, on the wire or back.
        let job = JobProofInfo {
            id: 3,
            proof: proof(None),
        };
        let wire = serde_json::to_value(&job).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"id": 3, "height": 7, "state_root": "aa", "key": "6b", "proof": "70"})
        );
        assert_eq!(serde_json::from_value::<JobProofInfo>(wire).unwrap(), job);
        // A proof field missing is an error, not a default.
        let missing = serde_json::json!({"id": 3, "height": 7, "key": "6b", "proof": "70"});
        assert!(serde_json::from_value::<JobProofInfo>(missing).is_err());
    }
}

//! `verify`: what makes a result trustworthy (DESIGN.md §4). Audits drawn with the randomness of
//! a block after the result, attestations, challenges with a bond, the bisection game over two
//! trace trees with a deadline per round, one-step arbitration in which the ledger re-executes
//! the first divergent step itself (through the node's [`Arbiter`]), slashing, refunds and bond forfeits, and
//! redundant jobs that settle at once when their copies agree.
//!
//! The game: the defendant (the provider whose result is questioned) and the claimant (a
//! challenger, or another provider of a redundant job) committed to trace roots over the same
//! number of steps. From the top of the trace tree, each round both reveal the two children of
//! their node; the game descends left when the left children differ, right otherwise. Every
//! leaf left of the final leaf lies in a subtree both revealed with equal hashes (kept in
//! `agreed`), so both agree on every input of the final step; the ledger checks each input the
//! evidence opens against those agreed subtrees and the weights against the model's
//! commitment, re-executes the step with the deterministic kernels, and the side whose leaf
//! matches wins. Silence at a round's deadline loses; when nobody proves anything at the
//! arbitration deadline, the claimant loses (a result stands until proven wrong).
//!
//! Invariants:
//! - A held job never settles; every hold ends (attestation, audit deadline, dispute end).
//! - A game ends within `tree::rounds_max(step_count)` rounds plus one arbitration.
//! - The verify escrow holds exactly the bonds of open disputes.

pub mod state_key;

use crate::arbitration::{self, Arbiter};
use crate::bank;
use crate::compute::{self, JobStatus};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::list::{self, List};
use crate::models::{self, MODEL_NAME_BYTES_MAX};
use crate::module::GenesisError;
use crate::module::{BlockContext, Module, TxContext};
use crate::staking::{self, Role};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};
use piazza_trace::tree::{self, Node};

pub const AUDITOR_MODELS_MAX: usize = 16;
pub const AUDITORS_PER_MODEL_MAX: usize = 256;
/// Open audits and disputes one address may be part of.
pub const TASKS_MAX: usize = 4096;
/// Largest evidence a transaction may carry (a step's inputs and weight slices, or a
/// tokenizer); a transaction carrying it is in its own size class ([`crate::tx`]).
pub const EVIDENCE_BYTES_MAX: usize = crate::arbitration::EVIDENCE_BYTES_MAX;
const QUEUE_MAX: usize = 100_000;
/// Agreed subtrees a game can collect: one per level.
const AGREED_MAX: usize = 64;
const BPS: u128 = 10_000;

/// Where challenge bonds wait for the end of their dispute.
pub fn escrow() -> Address {
    Address::module("verify")
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelAuditRate {
    pub model: String,
    pub rate_bps: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    pub min_auditor_stake: Amount,
    /// Share of results audited, in basis points, for models without their own rate.
    pub audit_rate_bps: u16,
    /// Per-model base rates.
    #[serde(default)]
    pub model_rates: Vec<ModelAuditRate>,
    /// The rate for providers with fewer than `new_provider_jobs` completed jobs or any fraud.
    pub new_provider_audit_rate_bps: u16,
    pub new_provider_jobs: u64,
    /// Blocks an assigned auditor has to attest or challenge.
    pub audit_blocks: u64,
    pub challenge_bond: Amount,
    /// Blocks each party has to answer a round of the game.
    pub round_blocks: u64,
    /// Blocks for anyone to submit the evidence that decides the final step.
    pub arbitration_blocks: u64,
    /// Taken from a provider's stake when its result is proven wrong.
    pub fraud_slash: Amount,
    /// The winner's share of a slash or forfeited bond; the rest is burned.
    pub winner_share_bps: u16,
    /// Taken from an auditor's stake when a result it attested is proven wrong: an attestation
    /// is a liability, so attesting without computing (the verifier's dilemma) loses money to
    /// whoever plants or finds a wrong result (docs/verification.md, "Lazy auditors").
    #[serde(default = "default_lazy_slash")]
    pub lazy_slash: Amount,
}

fn default_lazy_slash() -> Amount {
    Amount::pza(100)
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_auditor_stake: Amount::pza(100),
            audit_rate_bps: 1_000,
            model_rates: Vec::new(),
            new_provider_audit_rate_bps: 5_000,
            new_provider_jobs: 20,
            audit_blocks: 100,
            challenge_bond: Amount::pza(10),
            round_blocks: 20,
            arbitration_blocks: 40,
            fraud_slash: Amount::pza(50),
            lazy_slash: default_lazy_slash(),
            winner_share_bps: 5_000,
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), String> {
        let rates = [self.audit_rate_bps, self.new_provider_audit_rate_bps]
            .into_iter()
            .chain(self.model_rates.iter().map(|r| r.rate_bps));
        if rates.into_iter().any(|r| r as u128 > BPS) || self.winner_share_bps as u128 > BPS {
            return Err("verify rates and shares are at most 10000 basis points".into());
        }
        if self.audit_blocks == 0 || self.round_blocks == 0 || self.arbitration_blocks == 0 {
            return Err("verify deadlines must be positive".into());
        }
        if self.model_rates.len() > models::MODELS_MAX {
            return Err("too many per-model audit rates".into());
        }
        if self
            .model_rates
            .iter()
            .any(|r| r.model.is_empty() || r.model.len() > MODEL_NAME_BYTES_MAX)
        {
            return Err(format!(
                "a per-model audit rate names a model of 1 to {MODEL_NAME_BYTES_MAX} bytes"
            ));
        }
        Ok(())
    }

    fn rate_for(&self, model: &str) -> u16 {
        self.model_rates
            .iter()
            .find(|r| r.model == model)
            .map_or(self.audit_rate_bps, |r| r.rate_bps)
    }
}

impl Encode for Params {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.min_auditor_stake);
        w.u16(self.audit_rate_bps);
        w.len(self.model_rates.len());
        for rate in &self.model_rates {
            w.str(&rate.model);
            w.u16(rate.rate_bps);
        }
        w.u16(self.new_provider_audit_rate_bps);
        w.u64(self.new_provider_jobs);
        w.u64(self.audit_blocks);
        w.value(&self.challenge_bond);
        w.u64(self.round_blocks);
        w.u64(self.arbitration_blocks);
        w.value(&self.fraud_slash);
        w.u16(self.winner_share_bps);
        w.value(&self.lazy_slash);
    }
}

impl Decode for Params {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Params {
            min_auditor_stake: r.value()?,
            audit_rate_bps: r.u16()?,
            model_rates: {
                let n = r.len(models::MODELS_MAX)?;
                (0..n)
                    .map(|_| {
                        Ok(ModelAuditRate {
                            model: r.string(MODEL_NAME_BYTES_MAX)?,
                            rate_bps: r.u16()?,
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?
            },
            new_provider_audit_rate_bps: r.u16()?,
            new_provider_jobs: r.u64()?,
            audit_blocks: r.u64()?,
            challenge_bond: r.value()?,
            round_blocks: r.u64()?,
            arbitration_blocks: r.u64()?,
            fraud_slash: r.value()?,
            winner_share_bps: r.u16()?,
            lazy_slash: r.value()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auditor {
    pub address: Address,
    pub models: Vec<String>,
    pub attested: u64,
    pub challenged: u64,
    /// Audits that reached their deadline unanswered.
    pub missed: u64,
    /// Attested results later proven wrong.
    pub disproven: u64,
}

impl Encode for Auditor {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.address);
        w.len(self.models.len());
        for m in &self.models {
            w.str(m);
        }
        w.u64(self.attested);
        w.u64(self.challenged);
        w.u64(self.missed);
        w.u64(self.disproven);
    }
}

impl Decode for Auditor {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Auditor {
            address: r.value()?,
            models: decode_models(r)?,
            attested: r.u64()?,
            challenged: r.u64()?,
            missed: r.u64()?,
            disproven: r.u64()?,
        })
    }
}

fn decode_models(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let n = r.len(AUDITOR_MODELS_MAX)?;
    (0..n).map(|_| r.string(MODEL_NAME_BYTES_MAX)).collect()
}

/// Why a posted job does not settle yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Audit {
        auditor: Address,
        deadline: u64,
    },
    Dispute,
    /// A copy of a redundant job, waiting for the others.
    Group,
}

impl Encode for Hold {
    fn encode(&self, w: &mut Writer) {
        match self {
            Hold::Audit { auditor, deadline } => {
                w.u8(0);
                w.value(auditor);
                w.u64(*deadline);
            }
            Hold::Dispute => w.u8(1),
            Hold::Group => w.u8(2),
        }
    }
}

impl Decode for Hold {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Hold::Audit {
                auditor: r.value()?,
                deadline: r.u64()?,
            },
            1 => Hold::Dispute,
            2 => Hold::Group,
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "hold",
                })
            }
        })
    }
}

/// One side of a dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub address: Address,
    /// The job whose result this party posted (for a challenger: the disputed job).
    pub job: u64,
    pub root: Hash,
    pub step_count: u64,
    /// Commitment to the token ids the party's run used.
    pub ids: Hash,
    /// A challenger's bond (zero for a provider, whose stake is at risk instead).
    pub bond: Amount,
    pub is_provider: bool,
}

impl Encode for Party {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.address);
        w.u64(self.job);
        w.value(&self.root);
        w.u64(self.step_count);
        w.value(&self.ids);
        w.value(&self.bond);
        w.bool(self.is_provider);
    }
}

impl Decode for Party {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Party {
            address: r.value()?,
            job: r.u64()?,
            root: r.value()?,
            step_count: r.u64()?,
            ids: r.value()?,
            bond: r.value()?,
            is_provider: r.bool()?,
        })
    }
}

/// Where a dispute stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Rounds of the bisection game.
    Bisect,
    /// The parties ran different token ids (or step counts): the ledger tokenizes the input.
    Input,
    /// The first divergent step is found; the ledger re-executes it.
    Step { step: u64, leaves: [Hash; 2] },
}

impl Encode for Phase {
    fn encode(&self, w: &mut Writer) {
        match self {
            Phase::Bisect => w.u8(0),
            Phase::Input => w.u8(1),
            Phase::Step { step, leaves } => {
                w.u8(2);
                w.u64(*step);
                w.value(&leaves[0]);
                w.value(&leaves[1]);
            }
        }
    }
}

impl Decode for Phase {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Phase::Bisect,
            1 => Phase::Input,
            2 => Phase::Step {
                step: r.u64()?,
                leaves: [r.value()?, r.value()?],
            },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "dispute phase",
                })
            }
        })
    }
}

/// Index of the defendant and the claimant in [`Dispute::parties`].
pub const DEFENDANT: usize = 0;
pub const CLAIMANT: usize = 1;

/// The game state; every field is public state, readable by both parties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    /// The defendant's job (the key).
    pub job: u64,
    pub parties: [Party; 2],
    pub round: u32,
    /// The node this round is about.
    pub node: Node,
    /// Each party's hash of `node` (unused at the top, which is checked against the root).
    pub nodes: [Hash; 2],
    /// This round's reveals (left, right), by party.
    pub reveals: [Option<(Hash, Hash)>; 2],
    /// Subtrees both revealed with equal hashes: (level, index, hash).
    pub agreed: Vec<(u32, u64, Hash)>,
    pub phase: Phase,
    pub deadline: u64,
    pub opened_height: u64,
}

fn encode_node(w: &mut Writer, node: &Node) {
    w.u32(node.level);
    w.u64(node.index);
}

fn encode_pair(w: &mut Writer, pair: &Option<(Hash, Hash)>) {
    match pair {
        None => w.u8(0),
        Some((left, right)) => {
            w.u8(1);
            w.value(left);
            w.value(right);
        }
    }
}

fn decode_pair(r: &mut Reader<'_>) -> Result<Option<(Hash, Hash)>, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some((r.value()?, r.value()?))),
        tag => Err(DecodeError::InvalidTag {
            offset,
            tag,
            what: "reveal",
        }),
    }
}

impl Encode for Dispute {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.job);
        w.value(&self.parties[0]);
        w.value(&self.parties[1]);
        w.u32(self.round);
        encode_node(w, &self.node);
        w.value(&self.nodes[0]);
        w.value(&self.nodes[1]);
        encode_pair(w, &self.reveals[0]);
        encode_pair(w, &self.reveals[1]);
        w.len(self.agreed.len());
        for (level, index, hash) in &self.agreed {
            w.u32(*level);
            w.u64(*index);
            w.value(hash);
        }
        w.value(&self.phase);
        w.u64(self.deadline);
        w.u64(self.opened_height);
    }
}

impl Decode for Dispute {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Dispute {
            job: r.u64()?,
            parties: [r.value()?, r.value()?],
            round: r.u32()?,
            node: Node {
                level: r.u32()?,
                index: r.u64()?,
            },
            nodes: [r.value()?, r.value()?],
            reveals: [decode_pair(r)?, decode_pair(r)?],
            agreed: {
                let n = r.len(AGREED_MAX)?;
                (0..n)
                    .map(|_| Ok((r.u32()?, r.u64()?, r.value()?)))
                    .collect::<Result<_, DecodeError>>()?
            },
            phase: r.value()?,
            deadline: r.u64()?,
            opened_height: r.u64()?,
        })
    }
}

/// What a round's reveal did to the game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Waiting for the other party's reveal.
    Waiting,
    /// Both revealed; the game moved to a new node (or to the final step).
    Moved,
}

impl Dispute {
    /// A new game between two committed traces over the same number of steps.
    pub fn open(job: u64, defendant: Party, claimant: Party, height: u64, deadline: u64) -> Self {
        let count = claimant.step_count;
        let node = tree::top(count)
            .map(|top| tree::settle(count, top))
            .unwrap_or(Node { level: 0, index: 0 });
        Dispute {
            job,
            parties: [defendant, claimant],
            round: 0,
            node,
            nodes: [Hash::ZERO; 2],
            reveals: [None, None],
            agreed: Vec::new(),
            phase: Phase::Bisect,
            deadline,
            opened_height: height,
        }
    }

    /// Checks party `side`'s reveal of the current node's children against its commitment
    /// and records it; when both have revealed, descends. Pure: the property tests drive it.
    pub fn reveal(&mut self, side: usize, left: Hash, right: Hash) -> Result<Advance, TxError> {
        if self.phase != Phase::Bisect {
            return Err(TxError::new(
                ErrorCode::WrongRound,
                "the dispute is past its bisection rounds",
            ));
        }
        if self.reveals[side].is_some() {
            return Err(TxError::new(
                ErrorCode::WrongRound,
                format!("round {} is already revealed by this party", self.round),
            ));
        }
        let party = &self.parties[side];
        let parent = tree::node_hash(&left.0, &right.0);
        let fits = if self.round == 0 {
            tree::root_from_top(party.step_count, &parent) == party.root.0
        } else {
            parent == self.nodes[side].0
        };
        if !fits {
            return Err(TxError::new(
                ErrorCode::BadReveal,
                format!(
                    "the children do not hash to the party's {} at level {}",
                    if self.round == 0 { "root" } else { "node" },
                    self.node.level
                ),
            ));
        }
        self.reveals[side] = Some((left, right));
        let [Some((dl, dr)), Some((cl, cr))] = self.reveals else {
            return Ok(Advance::Waiting);
        };
        let count = self.parties[CLAIMANT].step_count;
        let go_right = dl == cl;
        if go_right {
            if self.agreed.len() >= AGREED_MAX {
                return Err(TxError::new(
                    ErrorCode::Internal,
                    "too many agreed subtrees",
                ));
            }
            let left_child = tree::child(self.node, false);
            self.agreed.push((left_child.level, left_child.index, dl));
            self.nodes = [dr, cr];
        } else {
            self.nodes = [dl, cl];
        }
        self.node = tree::settle(count, tree::child(self.node, go_right));
        self.round += 1;
        self.reveals = [None, None];
        if self.node.level == 0 {
            self.phase = Phase::Step {
                step: self.node.index,
                leaves: self.nodes,
            };
        }
        Ok(Advance::Moved)
    }

    /// Who loses when the current deadline passes: in a round, the defendant if it has not
    /// revealed, else the claimant; after the rounds, the claimant (a result stands until it
    /// is proven wrong).
    pub fn timeout_loser(&self) -> usize {
        match self.phase {
            Phase::Bisect if self.reveals[DEFENDANT].is_none() => DEFENDANT,
            _ => CLAIMANT,
        }
    }

    /// Whether `leaf` at `index` (below the final step) lies in a subtree both parties agreed
    /// on, through the first siblings of its Merkle path.
    pub fn leaf_agreed(&self, index: u64, leaf: &Hash, siblings: &[Hash]) -> bool {
        let Some((level, _, subtree)) = self
            .agreed
            .iter()
            .find(|(level, node, _)| *level < 64 && index >> level == *node)
        else {
            return false;
        };
        let level = *level as usize;
        if siblings.len() < level {
            return false;
        }
        let mut node = leaf.0;
        let mut position = index;
        for sibling in &siblings[..level] {
            node = if position.is_multiple_of(2) {
                tree::node_hash(&node, &sibling.0)
            } else {
                tree::node_hash(&sibling.0, &node)
            };
            position /= 2;
        }
        node == subtree.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Becomes an auditor of `models`, bonding `stake`.
    RegisterAuditor { models: Vec<String>, stake: Amount },
    /// Stops auditing and unbonds the auditor bond (through the unbonding delay).
    ExitAuditor,
    /// The assigned auditor re-executed the job and got the same result.
    Attest { job: u64 },
    /// Disputes a posted result with the challenger's own trace, posting the bond.
    Challenge {
        job: u64,
        trace_root: Hash,
        step_count: u64,
        ids: Hash,
    },
    /// A party's answer to a round: the children of its node. Round 0 also states the
    /// party's step count and token ids commitment (the defendant's are compared with the
    /// claimant's).
    Reveal {
        job: u64,
        round: u32,
        left: Hash,
        right: Hash,
        step_count: u64,
        ids: Hash,
    },
    /// The evidence that decides a dispute's final step (or, in the input phase, the
    /// tokenizer). Anyone may send it.
    Arbitrate { job: u64, evidence: Vec<u8> },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::RegisterAuditor { models, stake } => {
                w.u8(0);
                w.len(models.len());
                for m in models {
                    w.str(m);
                }
                w.value(stake);
            }
            Msg::ExitAuditor => w.u8(1),
            Msg::Attest { job } => {
                w.u8(2);
                w.u64(*job);
            }
            Msg::Challenge {
                job,
                trace_root,
                step_count,
                ids,
            } => {
                w.u8(3);
                w.u64(*job);
                w.value(trace_root);
                w.u64(*step_count);
                w.value(ids);
            }
            Msg::Reveal {
                job,
                round,
                left,
                right,
                step_count,
                ids,
            } => {
                w.u8(4);
                w.u64(*job);
                w.u32(*round);
                w.value(left);
                w.value(right);
                w.u64(*step_count);
                w.value(ids);
            }
            Msg::Arbitrate { job, evidence } => {
                w.u8(5);
                w.u64(*job);
                w.bytes(evidence);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Msg::RegisterAuditor {
                models: decode_models(r)?,
                stake: r.value()?,
            },
            1 => Msg::ExitAuditor,
            2 => Msg::Attest { job: r.u64()? },
            3 => Msg::Challenge {
                job: r.u64()?,
                trace_root: r.value()?,
                step_count: r.u64()?,
                ids: r.value()?,
            },
            4 => Msg::Reveal {
                job: r.u64()?,
                round: r.u32()?,
                left: r.value()?,
                right: r.value()?,
                step_count: r.u64()?,
                ids: r.value()?,
            },
            5 => Msg::Arbitrate {
                job: r.u64()?,
                evidence: r.bytes(EVIDENCE_BYTES_MAX)?,
            },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "verify message",
                })
            }
        })
    }
}

pub fn params(state: &StateDelta<'_>) -> Params {
    state
        .get(&state_key::params())
        .expect("verify params are written at genesis")
}

pub fn auditor(state: &StateDelta<'_>, address: &Address) -> Option<Auditor> {
    state.get(&state_key::auditor(address))
}

pub fn dispute(state: &StateDelta<'_>, job: u64) -> Option<Dispute> {
    state.get(&state_key::dispute(job))
}

pub fn hold(state: &StateDelta<'_>, job: u64) -> Option<Hold> {
    state.get(&state_key::hold(job))
}

/// Whether a posted job is held back from settlement.
pub fn holds(state: &StateDelta<'_>, job: u64) -> bool {
    hold(state, job).is_some()
}

/// The auditor who attested a job (its fee share goes to them).
pub fn attestation(state: &StateDelta<'_>, job: u64) -> Option<Address> {
    state.get(&state_key::attestation(job))
}

/// Holds a posted job for `why`: compute keeps it from settling until the hold ends.
fn set_hold(state: &mut StateDelta<'_>, job: u64, why: &Hold) {
    state.put(state_key::hold(job), why);
    compute::hold(state, job);
}

/// Ends a hold without settling the job (its group settles together, or it fails).
fn clear_hold(state: &mut StateDelta<'_>, job: u64) {
    state.delete(state_key::hold(job));
    compute::unhold(state, job);
}

/// Jobs with an open audit or dispute involving `address`.
pub fn tasks(state: &StateDelta<'_>, address: &Address) -> Vec<u64> {
    state
        .get::<List<u64, TASKS_MAX>>(&state_key::tasks(address))
        .unwrap_or_default()
        .0
}

pub fn auditors_of(state: &StateDelta<'_>, model: &str) -> Vec<Address> {
    state
        .get::<List<Address, AUDITORS_PER_MODEL_MAX>>(&state_key::auditing(model))
        .unwrap_or_default()
        .0
}

/// Records that `address` has an open audit or dispute on `job`; refuses when its list is full.
fn add_task(state: &mut StateDelta<'_>, address: &Address, job: u64) -> Result<(), list::Full> {
    let mut tasks: List<u64, TASKS_MAX> = state.get(&state_key::tasks(address)).unwrap_or_default();
    tasks.insert_sorted(job)?;
    state.put(state_key::tasks(address), &tasks);
    Ok(())
}

fn has_room_for_task(state: &StateDelta<'_>, address: &Address) -> bool {
    !state
        .get::<List<u64, TASKS_MAX>>(&state_key::tasks(address))
        .unwrap_or_default()
        .is_full()
}

fn remove_task(state: &mut StateDelta<'_>, address: &Address, job: u64) {
    let mut tasks: List<u64, TASKS_MAX> = state.get(&state_key::tasks(address)).unwrap_or_default();
    if tasks.remove_sorted(&job) {
        state.put(state_key::tasks(address), &tasks);
    }
}

/// Puts `job` in the deadline queue of `height` (or the next one with room); the height used.
fn schedule_deadline(state: &mut StateDelta<'_>, height: u64, job: u64) -> Result<u64, list::Full> {
    list::schedule::<QUEUE_MAX>(state, state_key::deadlines, height, job)
}

fn take(state: &mut StateDelta<'_>, key: Vec<u8>) -> Vec<u64> {
    list::take::<QUEUE_MAX>(state, key)
}

fn error(code: ErrorCode, message: impl Into<String>) -> TxError {
    TxError::new(code, message)
}

fn no_dispute(job: u64) -> TxError {
    error(
        ErrorCode::NoDispute,
        format!("job {job} has no open dispute"),
    )
}

/// Reviews a job `compute` reported in the previous block: a single job is drawn for audit
/// with this block's randomness; a redundant copy's group is compared once all copies are in.
fn review(state: &mut StateDelta<'_>, id: u64, block: &BlockContext, events: &mut Vec<Event>) {
    let Some(job) = compute::job(state, id) else {
        return;
    };
    if job.is_redundant() {
        if matches!(job.status, JobStatus::Posted { .. }) && !holds(state, id) {
            set_hold(state, id, &Hold::Group);
        }
        review_group(state, job.group, block, events);
    } else {
        draw_audit(state, id, block, events);
    }
}

/// A redundant group whose copies are all in: equal results settle at once; otherwise the
/// copies that differ from the most common result are disputed by its first holder.
fn review_group(
    state: &mut StateDelta<'_>,
    group: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let Some(first) = compute::job(state, group) else {
        return;
    };
    let ids: Vec<u64> = first.group_ids().collect();
    let jobs: Vec<compute::Job> = ids
        .iter()
        .filter_map(|id| compute::job(state, *id))
        .collect();
    let open =
        |job: &compute::Job| matches!(job.status, JobStatus::Pending | JobStatus::Assigned { .. });
    if jobs.iter().any(open) || ids.iter().any(|id| dispute(state, *id).is_some()) {
        return;
    }
    let posted: Vec<&compute::Job> = jobs
        .iter()
        .filter(|job| matches!(job.status, JobStatus::Posted { .. }))
        .collect();
    let result = |job: &compute::Job| {
        job.result
            .as_ref()
            .map(|r| (r.output_hash, r.trace_root))
            .expect("posted jobs have a result")
    };
    // The most common result; ties go to the lowest job id.
    let mut best: Option<(&compute::Job, usize)> = None;
    for job in &posted {
        let count = posted.iter().filter(|o| result(o) == result(job)).count();
        if best.is_none_or(|(_, c)| count > c) {
            best = Some((job, count));
        }
    }
    let Some((reference, _)) = best else {
        return;
    };
    let differing: Vec<&compute::Job> = posted
        .iter()
        .copied()
        .filter(|job| result(job) != result(reference))
        .collect();
    if differing.is_empty() {
        for job in &posted {
            clear_hold(state, job.id);
            compute::settle_now(state, job.id, block, events);
        }
        events.push(Event::new(
            "verify.group_agreed",
            &[
                ("group", group.to_string()),
                ("copies", posted.len().to_string()),
            ],
        ));
        return;
    }
    let claimant_result = reference.result.as_ref().expect("posted");
    for job in differing {
        let defendant_result = job.result.as_ref().expect("posted");
        // Providers of a redundant job state their step count and ids in round 0.
        let claimant = Party {
            address: reference.provider().expect("posted jobs have a provider"),
            job: reference.id,
            root: claimant_result.trace_root,
            step_count: 0,
            ids: Hash::ZERO,
            bond: Amount::ZERO,
            is_provider: true,
        };
        let defendant = Party {
            address: job.provider().expect("posted jobs have a provider"),
            job: job.id,
            root: defendant_result.trace_root,
            step_count: 0,
            ids: Hash::ZERO,
            bond: Amount::ZERO,
            is_provider: true,
        };
        if let Err(refused) = open_dispute(state, job.id, defendant, claimant, block, events) {
            // Only when a party already has `TASKS_MAX` open disputes or every deadline queue
            // in reach is full: the copy stands (a result stands until proven wrong), openly.
            events.push(Event::new(
                "verify.dispute_refused",
                &[("job", job.id.to_string()), ("reason", refused.message)],
            ));
            clear_hold(state, job.id);
            compute::settle_now(state, job.id, block, events);
        }
    }
}

fn open_dispute(
    state: &mut StateDelta<'_>,
    job: u64,
    defendant: Party,
    claimant: Party,
    block: &BlockContext,
    events: &mut Vec<Event>,
) -> Result<(), TxError> {
    for party in [&defendant, &claimant] {
        if !has_room_for_task(state, &party.address) {
            return Err(list::Full { max: TASKS_MAX }.refusal(&format!(
                "the open audits and disputes of {}",
                party.address
            )));
        }
    }
    let deadline = schedule_deadline(state, block.height + params(state).round_blocks, job)
        .map_err(|full| full.refusal("the verify deadline queue"))?;
    add_task(state, &defendant.address, job).expect("room checked above");
    add_task(state, &claimant.address, job).expect("room checked above");
    events.push(Event::new(
        "verify.dispute_opened",
        &[
            ("job", job.to_string()),
            ("defendant", defendant.address.to_string()),
            ("claimant", claimant.address.to_string()),
            ("deadline_height", deadline.to_string()),
        ],
    ));
    set_hold(state, job, &Hold::Dispute);
    if claimant.job != job {
        set_hold(state, claimant.job, &Hold::Group);
    }
    let dispute = Dispute::open(job, defendant, claimant, block.height, deadline);
    state.put(state_key::dispute(job), &dispute);
    Ok(())
}

/// Draws whether `job` is audited, with the randomness of a block after its result.
fn draw_audit(state: &mut StateDelta<'_>, id: u64, block: &BlockContext, events: &mut Vec<Event>) {
    let Some(job) = compute::job(state, id) else {
        return;
    };
    let JobStatus::Posted {
        provider: address, ..
    } = job.status
    else {
        return;
    };
    if holds(state, id) {
        return;
    }
    let p = params(state);
    let record = compute::provider(state, &address);
    let new = record
        .as_ref()
        .is_none_or(|r| r.jobs_completed < p.new_provider_jobs || r.frauds > 0);
    let rate = if new {
        p.new_provider_audit_rate_bps.max(p.rate_for(&job.model))
    } else {
        p.rate_for(&job.model)
    };
    let seed: [&[u8]; 2] = [&block.randomness.0, &id.to_le_bytes()];
    if !crate::draw::happens("piazza/verify/audit", &seed, rate) {
        return;
    }
    let mut candidates: Vec<(Address, u128)> = Vec::new();
    for candidate in auditors_of(state, &job.model) {
        if candidate == address || candidate == job.client {
            continue;
        }
        let stake = staking::bonded(state, &candidate, Role::Auditor);
        if stake >= p.min_auditor_stake && has_room_for_task(state, &candidate) {
            candidates.push((candidate, stake.base_units()));
        }
    }
    let Some(chosen) = crate::draw::weighted_choice("piazza/verify/auditor", &seed, &candidates)
    else {
        return;
    };
    let deadline = match schedule_deadline(state, block.height + p.audit_blocks, id) {
        Ok(deadline) => deadline,
        Err(full) => {
            // Nothing is held, so nothing waits on a deadline that would never come.
            events.push(Event::new(
                "verify.audit_skipped",
                &[
                    ("job", id.to_string()),
                    ("reason", full.refusal("the verify deadline queue").message),
                ],
            ));
            return;
        }
    };
    set_hold(
        state,
        id,
        &Hold::Audit {
            auditor: chosen,
            deadline,
        },
    );
    add_task(state, &chosen, id).expect("candidates have room for a task");
    events.push(Event::new(
        "verify.audit_assigned",
        &[
            ("job", id.to_string()),
            ("auditor", chosen.to_string()),
            ("deadline_height", deadline.to_string()),
        ],
    ));
}

/// Ends a hold and lets the job settle (now, if its window is over).
fn release(state: &mut StateDelta<'_>, job: u64, block: &BlockContext, events: &mut Vec<Event>) {
    let Some(record) = compute::job(state, job) else {
        clear_hold(state, job);
        return;
    };
    if !matches!(record.status, JobStatus::Posted { .. }) {
        clear_hold(state, job);
        return;
    }
    if record.is_redundant() {
        set_hold(state, job, &Hold::Group);
        review_group(state, record.group, block, events);
    } else {
        state.delete(state_key::hold(job));
        compute::release(state, job, block, events);
    }
}

/// A result `auditor` attested was proven wrong: it loses `lazy_slash` of its auditor stake,
/// the winner's share to whoever proved it, the rest burned.
fn disprove_attestation(
    state: &mut StateDelta<'_>,
    job: u64,
    auditor: &Address,
    prover: &Address,
    events: &mut Vec<Event>,
) {
    let p = params(state);
    let slash = p
        .lazy_slash
        .min(staking::bonded(state, auditor, Role::Auditor));
    let reward = slash
        .checked_mul_div(p.winner_share_bps as u128, BPS)
        .expect("a share of an amount fits");
    let to_prover = staking::slash(state, auditor, Role::Auditor, reward, Some(prover));
    let burned = staking::slash(
        state,
        auditor,
        Role::Auditor,
        slash
            .checked_sub(reward)
            .expect("a share is at most the whole"),
        None,
    );
    if let Some(mut record) = self::auditor(state, auditor) {
        record.disproven += 1;
        state.put(state_key::auditor(auditor), &record);
    }
    events.push(Event::new(
        "verify.attestation_disproven",
        &[
            ("job", job.to_string()),
            ("auditor", auditor.to_string()),
            ("to_prover", to_prover.base_units().to_string()),
            ("burned", burned.base_units().to_string()),
        ],
    ));
}

/// Ends a dispute with `loser` losing: a provider's result fails (the client is refunded)
/// and its stake is slashed, a challenger forfeits its bond; the winner gets its share and
/// the rest is burned.
fn resolve(
    state: &mut StateDelta<'_>,
    dispute: Dispute,
    loser: usize,
    reason: &str,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let p = params(state);
    let winner = 1 - loser;
    let (lost, won) = (&dispute.parties[loser], &dispute.parties[winner]);
    let share = |amount: Amount| {
        amount
            .checked_mul_div(p.winner_share_bps as u128, BPS)
            .expect("a share of an amount fits")
    };
    let (mut to_winner, mut burned) = (Amount::ZERO, Amount::ZERO);
    if lost.is_provider {
        clear_hold(state, lost.job);
        if compute::fail(state, lost.job, events).is_some() {
            let slash = p
                .fraud_slash
                .min(staking::bonded(state, &lost.address, Role::Provider));
            let reward = share(slash);
            to_winner = staking::slash(
                state,
                &lost.address,
                Role::Provider,
                reward,
                Some(&won.address),
            );
            burned = staking::slash(
                state,
                &lost.address,
                Role::Provider,
                slash
                    .checked_sub(reward)
                    .expect("a share is at most the whole"),
                None,
            );
            if let Some(attester) = attestation(state, lost.job) {
                disprove_attestation(state, lost.job, &attester, &won.address, events);
            }
        }
    } else if !lost.bond.is_zero() {
        let reward = share(lost.bond);
        to_winner = reward;
        burned = lost
            .bond
            .checked_sub(reward)
            .expect("a share is at most the whole");
        bank::transfer(state, &escrow(), &won.address, reward)
            .expect("the escrow holds every bond");
        bank::burn(state, &escrow(), burned).expect("the escrow holds every bond");
    }
    if !won.is_provider && !won.bond.is_zero() {
        bank::transfer(state, &escrow(), &won.address, won.bond)
            .expect("the escrow holds every bond");
    }
    let step = match dispute.phase {
        Phase::Step { step, .. } => step.to_string(),
        _ => String::new(),
    };
    events.push(Event::new(
        "verify.dispute_resolved",
        &[
            ("job", dispute.job.to_string()),
            ("winner", won.address.to_string()),
            ("loser", lost.address.to_string()),
            (
                "loser_side",
                if loser == DEFENDANT {
                    "defendant"
                } else {
                    "claimant"
                }
                .to_string(),
            ),
            ("reason", reason.to_string()),
            ("rounds", dispute.round.to_string()),
            ("step", step),
            ("to_winner", to_winner.base_units().to_string()),
            ("burned", burned.base_units().to_string()),
            ("blocks", (block.height - dispute.opened_height).to_string()),
        ],
    ));
    close(state, &dispute, block, events);
}

/// Ends a dispute: its record and tasks go; the surviving results' holds end (a failed job is
/// gone; a surviving result settles, or its group is reviewed again).
fn close(
    state: &mut StateDelta<'_>,
    dispute: &Dispute,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    state.delete(state_key::dispute(dispute.job));
    for party in &dispute.parties {
        remove_task(state, &party.address, dispute.job);
    }
    for job in [
        dispute.parties[DEFENDANT].job,
        dispute.parties[CLAIMANT].job,
    ] {
        if hold(state, job).is_some() && dispute_for(state, job).is_none() {
            release(state, job, block, events);
        }
    }
    // Both parties' results may have failed: the group's surviving copies still wait.
    if let Some(record) = compute::job(state, dispute.job) {
        if record.is_redundant() {
            review_group(state, record.group, block, events);
        }
    }
}

/// Ends a dispute nobody lost: what the ledger can decide does not separate the parties (two
/// generations of the same ids stopping at different lengths). Bonds go back; the result stands.
fn draw(
    state: &mut StateDelta<'_>,
    dispute: Dispute,
    reason: &str,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    for party in &dispute.parties {
        if !party.is_provider && !party.bond.is_zero() {
            bank::transfer(state, &escrow(), &party.address, party.bond)
                .expect("the escrow holds every bond");
        }
    }
    events.push(Event::new(
        "verify.dispute_drawn",
        &[
            ("job", dispute.job.to_string()),
            ("reason", reason.to_string()),
            ("rounds", dispute.round.to_string()),
            ("blocks", (block.height - dispute.opened_height).to_string()),
        ],
    ));
    close(state, &dispute, block, events);
}

/// An open dispute in which `job`'s result is either side.
fn dispute_for(state: &StateDelta<'_>, job: u64) -> Option<Dispute> {
    if let Some(d) = dispute(state, job) {
        return Some(d);
    }
    let record = compute::job(state, job)?;
    record
        .group_ids()
        .filter_map(|id| dispute(state, id))
        .find(|d| d.parties[CLAIMANT].job == job)
}

/// The job as the arbiter reads it, and the model's commitments.
/// The model and job of a dispute, as the arbiter reads them.
fn arbitration_inputs(
    state: &StateDelta<'_>,
    id: u64,
) -> Result<(arbitration::Model, arbitration::Job), TxError> {
    let job = compute::job(state, id).ok_or_else(|| no_dispute(id))?;
    let record = models::record(state, &job.model).ok_or_else(|| models::unknown(&job.model))?;
    Ok((
        arbitration::Model {
            architecture: record.architecture,
            config_hash: record.config_hash,
            weights_commitment: record.weights_commitment,
            tokenizer_hash: record.tokenizer_hash,
        },
        arbitration::Job {
            input: job.input,
            params: job.params,
        },
    ))
}

/// Decides the dispute with `evidence`: the loser (none for a draw), and why.
fn arbitrate(
    state: &StateDelta<'_>,
    arbiter: &dyn Arbiter,
    dispute: &Dispute,
    evidence: &[u8],
) -> Result<(Option<usize>, String), TxError> {
    let rejected = |reason: String| error(ErrorCode::EvidenceRejected, reason);
    if dispute.phase == Phase::Bisect {
        return Err(error(
            ErrorCode::WrongRound,
            "the dispute is still in its bisection rounds",
        ));
    }
    let (model, job) = arbitration_inputs(state, dispute.job)?;
    let [defendant, claimant] = &dispute.parties;
    match &dispute.phase {
        Phase::Bisect => unreachable!("checked above"),
        Phase::Input => {
            let verdict = arbiter.input(&model, &job, evidence).map_err(rejected)?;
            let ids = verdict.ids();
            let fits = |count: u64| verdict.step_count_fits(count).map_err(rejected);
            let loser = if ids != defendant.ids {
                // The result was computed from the wrong token ids.
                Some(DEFENDANT)
            } else if ids != claimant.ids {
                Some(CLAIMANT)
            } else if !fits(defendant.step_count)? {
                Some(DEFENDANT)
            } else if !fits(claimant.step_count)? {
                Some(CLAIMANT)
            } else {
                // Both counts are possible runs of these ids: the parties disagree on where a
                // generation stops, which the rounds cannot reach. Nobody is proven wrong.
                None
            };
            Ok((loser, format!("input tokenized to {}", ids.to_hex())))
        }
        Phase::Step { step, leaves } => {
            let leaf = arbiter
                .step(
                    &model,
                    &job,
                    *step,
                    claimant.step_count,
                    &claimant.ids,
                    evidence,
                    &|index, leaf, siblings| dispute.leaf_agreed(index, leaf, siblings),
                )
                .map_err(rejected)?;
            let loser = if leaf == leaves[CLAIMANT] {
                DEFENDANT
            } else if leaf == leaves[DEFENDANT] {
                CLAIMANT
            } else {
                DEFENDANT
            };
            Ok((
                Some(loser),
                format!("step {step} re-executed to {}", leaf.to_hex()),
            ))
        }
    }
}

/// A round's or the arbitration's deadline passed.
fn timeout(
    state: &mut StateDelta<'_>,
    dispute: Dispute,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let loser = dispute.timeout_loser();
    let reason = match dispute.phase {
        Phase::Bisect => "silent in a round",
        _ => "no evidence by the arbitration deadline",
    };
    resolve(state, dispute, loser, reason, block, events);
}

pub struct Verify;

impl Module for Verify {
    type Msg = Msg;
    type Genesis = Params;
    const NAME: &'static str = "verify";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::RegisterAuditor { .. } | Msg::ExitAuditor => 200,
            Msg::Attest { .. } | Msg::Challenge { .. } | Msg::Reveal { .. } => 100,
            // Re-executing a step is the most expensive thing a transaction can ask for; the
            // per-byte charge covers its size.
            Msg::Arbitrate { .. } => 10_000,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::RegisterAuditor { models, .. } => {
                let mut sorted = models.clone();
                sorted.sort();
                sorted.dedup();
                if models.is_empty() || sorted.len() != models.len() {
                    return Err(error(
                        ErrorCode::InvalidMessage,
                        format!("an auditor audits 1 to {AUDITOR_MODELS_MAX} distinct models"),
                    ));
                }
                Ok(())
            }
            Msg::Challenge { step_count, .. } => {
                if *step_count < 2 || *step_count > tree::LEAVES_MAX {
                    return Err(error(
                        ErrorCode::InvalidMessage,
                        format!("a trace has 2 to {} steps", tree::LEAVES_MAX),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::RegisterAuditor { models: names, .. } => {
                if auditor(state, &ctx.sender).is_some() {
                    return Err(error(
                        ErrorCode::AuditorExists,
                        format!("{} is already an auditor", ctx.sender),
                    ));
                }
                for name in names {
                    models::record(state, name).ok_or_else(|| models::unknown(name))?;
                    if auditors_of(state, name).len() >= AUDITORS_PER_MODEL_MAX {
                        return Err(error(
                            ErrorCode::InvalidMessage,
                            format!("`{name}` already has {AUDITORS_PER_MODEL_MAX} auditors"),
                        ));
                    }
                }
                Ok(())
            }
            Msg::ExitAuditor => {
                auditor(state, &ctx.sender).ok_or_else(|| not_an_auditor(&ctx.sender))?;
                if !tasks(state, &ctx.sender).is_empty() {
                    return Err(error(
                        ErrorCode::InvalidMessage,
                        "audits or disputes are still open; finish them first",
                    ));
                }
                Ok(())
            }
            Msg::Attest { job } => match hold(state, *job) {
                Some(Hold::Audit { auditor, .. }) if auditor == ctx.sender => Ok(()),
                _ => Err(error(
                    ErrorCode::NotAParty,
                    format!("job {job} has no audit assigned to {}", ctx.sender),
                )),
            },
            Msg::Challenge {
                job: id,
                trace_root,
                ..
            } => {
                let job = compute::job(state, *id)
                    .ok_or_else(|| error(ErrorCode::UnknownJob, format!("no job {id}")))?;
                let JobStatus::Posted {
                    provider,
                    settle_height,
                } = job.status
                else {
                    return Err(error(
                        ErrorCode::NotChallengeable,
                        format!(
                            "job {id} is {}, not waiting for settlement",
                            job.status.name()
                        ),
                    ));
                };
                if job.is_redundant() {
                    return Err(error(
                        ErrorCode::NotChallengeable,
                        format!("job {id} is redundant: its copies verify one another"),
                    ));
                }
                if provider == ctx.sender {
                    return Err(error(
                        ErrorCode::NotChallengeable,
                        "a provider cannot challenge itself",
                    ));
                }
                let held_for_sender = match hold(state, *id) {
                    Some(Hold::Audit { auditor, .. }) => auditor == ctx.sender,
                    Some(Hold::Dispute) => {
                        return Err(error(
                            ErrorCode::DisputeExists,
                            format!("job {id} is already disputed"),
                        ))
                    }
                    _ => false,
                };
                if !held_for_sender && ctx.block.height >= settle_height {
                    return Err(error(
                        ErrorCode::NotChallengeable,
                        format!("job {id}'s challenge window closed at height {settle_height}"),
                    ));
                }
                if job
                    .result
                    .as_ref()
                    .is_some_and(|r| r.trace_root == *trace_root)
                {
                    return Err(error(
                        ErrorCode::NotChallengeable,
                        "the challenge's trace root equals the result's",
                    ));
                }
                let bond = params(state).challenge_bond;
                let balance = bank::account(state, &ctx.sender).balance;
                if balance < bond {
                    return Err(error(
                        ErrorCode::InsufficientFunds,
                        format!(
                            "the challenge bond is {bond} PZA; {} holds {balance} PZA",
                            ctx.sender
                        ),
                    ));
                }
                Ok(())
            }
            Msg::Reveal { job, round, .. } => {
                let d = dispute(state, *job).ok_or_else(|| no_dispute(*job))?;
                if !d.parties.iter().any(|p| p.address == ctx.sender) {
                    return Err(error(
                        ErrorCode::NotAParty,
                        format!(
                            "{} is not a party to the dispute over job {job}",
                            ctx.sender
                        ),
                    ));
                }
                if *round != d.round {
                    return Err(error(
                        ErrorCode::WrongRound,
                        format!("the dispute is at round {}, not {round}", d.round),
                    ));
                }
                Ok(())
            }
            Msg::Arbitrate { job, .. } => {
                dispute(state, *job).ok_or_else(|| no_dispute(*job))?;
                Ok(())
            }
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        let sender = ctx.sender;
        let block = ctx.block.clone();
        match msg {
            Msg::RegisterAuditor {
                models: names,
                stake,
            } => {
                if !stake.is_zero() {
                    staking::bond(state, &sender, Role::Auditor, *stake)?;
                }
                let minimum = params(state).min_auditor_stake;
                let bonded = staking::bonded(state, &sender, Role::Auditor);
                if bonded < minimum {
                    return Err(error(
                        ErrorCode::StakeBelowMinimum,
                        format!("an auditor needs {minimum} PZA bonded, {sender} has {bonded} PZA"),
                    ));
                }
                for name in names {
                    let mut list = auditors_of(state, name);
                    if let Err(at) = list.binary_search(&sender) {
                        list.insert(at, sender);
                    }
                    state.put(
                        state_key::auditing(name),
                        &List::<Address, AUDITORS_PER_MODEL_MAX>(list),
                    );
                }
                state.put(
                    state_key::auditor(&sender),
                    &Auditor {
                        address: sender,
                        models: names.clone(),
                        attested: 0,
                        challenged: 0,
                        missed: 0,
                        disproven: 0,
                    },
                );
                ctx.emit(Event::new(
                    "verify.auditor_registered",
                    &[
                        ("auditor", sender.to_string()),
                        ("stake", bonded.base_units().to_string()),
                    ],
                ));
            }
            Msg::ExitAuditor => {
                let a = auditor(state, &sender).ok_or_else(|| not_an_auditor(&sender))?;
                for name in &a.models {
                    let mut list = auditors_of(state, name);
                    if let Ok(at) = list.binary_search(&sender) {
                        list.remove(at);
                    }
                    state.put(
                        state_key::auditing(name),
                        &List::<Address, AUDITORS_PER_MODEL_MAX>(list),
                    );
                }
                state.delete(state_key::auditor(&sender));
                let bonded = staking::bonded(state, &sender, Role::Auditor);
                if !bonded.is_zero() {
                    staking::unbond(state, &block, &sender, Role::Auditor, bonded)?;
                }
                ctx.emit(Event::new(
                    "verify.auditor_exited",
                    &[("auditor", sender.to_string())],
                ));
            }
            Msg::Attest { job } => {
                state.put(state_key::attestation(*job), &sender);
                compute::pay_auditor_share_to(state, *job, &sender);
                // Anyone may still prove the attested result wrong for a full window.
                compute::extend_window(state, *job, block.height)?;
                remove_task(state, &sender, *job);
                if let Some(mut a) = auditor(state, &sender) {
                    a.attested += 1;
                    state.put(state_key::auditor(&sender), &a);
                }
                ctx.emit(Event::new(
                    "verify.attested",
                    &[("job", job.to_string()), ("auditor", sender.to_string())],
                ));
                release(state, *job, &block, &mut ctx.events);
            }
            Msg::Challenge {
                job: id,
                trace_root,
                step_count,
                ids,
            } => {
                let p = params(state);
                let job = compute::job(state, *id).ok_or_else(|| no_dispute(*id))?;
                let result = job.result.clone().expect("posted jobs have a result");
                bank::transfer(state, &sender, &escrow(), p.challenge_bond)?;
                if let Some(Hold::Audit { auditor: a, .. }) = hold(state, *id) {
                    remove_task(state, &a, *id);
                    if let Some(mut record) = auditor(state, &a) {
                        record.challenged += u64::from(a == sender);
                        state.put(state_key::auditor(&a), &record);
                    }
                }
                let defendant = Party {
                    address: job.provider().expect("posted jobs have a provider"),
                    job: *id,
                    root: result.trace_root,
                    step_count: 0,
                    ids: Hash::ZERO,
                    bond: Amount::ZERO,
                    is_provider: true,
                };
                let claimant = Party {
                    address: sender,
                    job: *id,
                    root: *trace_root,
                    step_count: *step_count,
                    ids: *ids,
                    bond: p.challenge_bond,
                    is_provider: false,
                };
                open_dispute(state, *id, defendant, claimant, &block, &mut ctx.events)?;
            }
            Msg::Reveal {
                job,
                left,
                right,
                step_count,
                ids,
                ..
            } => {
                let mut d = dispute(state, *job).ok_or_else(|| no_dispute(*job))?;
                let p = params(state);
                let sides: Vec<usize> =
                    (0..2).filter(|s| d.parties[*s].address == sender).collect();
                // Both sides may be the same address only in a test; the defendant answers first.
                let side = *sides
                    .iter()
                    .find(|s| d.reveals[**s].is_none())
                    .ok_or_else(|| {
                        error(ErrorCode::WrongRound, "this round is already revealed")
                    })?;
                if d.round == 0 {
                    // Providers of redundant copies state their count and ids now; the
                    // defendant's must equal the claimant's, else the ledger tokenizes.
                    let party = &mut d.parties[side];
                    if party.is_provider && party.step_count == 0 {
                        if *step_count < 2 || *step_count > tree::LEAVES_MAX {
                            return Err(error(
                                ErrorCode::BadReveal,
                                "a trace has at least 2 steps",
                            ));
                        }
                        party.step_count = *step_count;
                        party.ids = *ids;
                    }
                    let [a, b] = &d.parties;
                    let both_stated = a.step_count != 0 && b.step_count != 0;
                    if both_stated && (a.step_count != b.step_count || a.ids != b.ids) {
                        let top = tree::root_from_top(
                            d.parties[side].step_count,
                            &tree::node_hash(&left.0, &right.0),
                        );
                        if top != d.parties[side].root.0 {
                            return Err(error(
                                ErrorCode::BadReveal,
                                "the children do not hash to the party's root",
                            ));
                        }
                        d.phase = Phase::Input;
                        d.deadline =
                            schedule_deadline(state, block.height + p.arbitration_blocks, *job)
                                .map_err(|full| full.refusal("the verify deadline queue"))?;
                        ctx.emit(Event::new(
                            "verify.input_disputed",
                            &[
                                ("job", job.to_string()),
                                ("deadline_height", d.deadline.to_string()),
                            ],
                        ));
                        state.put(state_key::dispute(*job), &d);
                        return Ok(());
                    }
                    let count = d.parties[CLAIMANT].step_count;
                    if let Some(top) = tree::top(count) {
                        d.node = tree::settle(count, top);
                    }
                }
                let before = d.round;
                d.reveal(side, *left, *right)?;
                ctx.emit(Event::new(
                    "verify.revealed",
                    &[
                        ("job", job.to_string()),
                        ("round", before.to_string()),
                        ("party", sender.to_string()),
                    ],
                ));
                if d.round != before {
                    let blocks = match d.phase {
                        Phase::Step { .. } => p.arbitration_blocks,
                        _ => p.round_blocks,
                    };
                    d.deadline = schedule_deadline(state, block.height + blocks, *job)
                        .map_err(|full| full.refusal("the verify deadline queue"))?;
                    if let Phase::Step { step, .. } = d.phase {
                        ctx.emit(Event::new(
                            "verify.step_found",
                            &[
                                ("job", job.to_string()),
                                ("step", step.to_string()),
                                ("rounds", d.round.to_string()),
                                ("deadline_height", d.deadline.to_string()),
                            ],
                        ));
                    }
                }
                state.put(state_key::dispute(*job), &d);
            }
            Msg::Arbitrate { job, evidence } => {
                let d = dispute(state, *job).ok_or_else(|| no_dispute(*job))?;
                let (loser, reason) = arbitrate(state, ctx.arbiter, &d, evidence)?;
                ctx.emit(Event::new(
                    "verify.arbitrated",
                    &[
                        ("job", job.to_string()),
                        ("by", sender.to_string()),
                        ("evidence_bytes", evidence.len().to_string()),
                    ],
                ));
                match loser {
                    Some(loser) => resolve(state, d, loser, &reason, &block, &mut ctx.events),
                    None => draw(state, d, &reason, &block, &mut ctx.events),
                }
            }
        }
        Ok(())
    }

    fn init_chain(state: &mut StateDelta<'_>, params: &Params) -> Result<(), GenesisError> {
        params.validate().map_err(GenesisError::Invalid)?;
        state.put(state_key::params(), params);
        Ok(())
    }

    /// Draws audits for the results posted in the previous block, with this block's randomness.
    fn begin_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        if let Some(previous) = block.height.checked_sub(1) {
            for id in compute::take_reviews(state, previous) {
                review(state, id, block, events);
            }
        }
    }

    /// Ends audits and dispute rounds whose deadline is this block.
    fn end_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        for id in take(state, state_key::deadlines(block.height)) {
            if let Some(d) = dispute(state, id) {
                if d.deadline == block.height {
                    timeout(state, d, block, events);
                }
                continue;
            }
            if let Some(Hold::Audit {
                auditor: a,
                deadline,
            }) = hold(state, id)
            {
                if deadline == block.height {
                    remove_task(state, &a, id);
                    if let Some(mut record) = auditor(state, &a) {
                        record.missed += 1;
                        state.put(state_key::auditor(&a), &record);
                    }
                    events.push(Event::new(
                        "verify.audit_missed",
                        &[("job", id.to_string()), ("auditor", a.to_string())],
                    ));
                    release(state, id, block, events);
                }
            }
        }
    }
}

fn not_an_auditor(address: &Address) -> TxError {
    error(
        ErrorCode::NotAnAuditor,
        format!("{address} is not a registered auditor"),
    )
}

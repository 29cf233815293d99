//! The chain as a dispute player sees it: what it reads (a job, its open audits and disputes,
//! the height) and what it writes (messages signed by its own key), behind one small trait.
//!
//! Production talks to a node over JSON-RPC ([`Rpc`]: a [`Client`] for reads, a [`Poster`] for
//! writes). Tests drive the same [`Player`](crate::dispute::Player) against an in-process
//! chain that runs the ledger's executor directly, block by block, from a seed
//! (`crates/provider/tests/harness`), so a whole dispute replays in seconds without a socket,
//! a sleep or a clock.
//!
//! The views below hold only what a player decides from; each implementation maps its own
//! source (wire shapes, ledger state) into them.

use crate::{Poster, ProviderError};
use piazza_api::{DisputeInfo, DisputePhase, JobInfo, VerifyTasks};
use piazza_arbiter::{tree, JobSpec};
use piazza_client::Client;
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Hash};
use std::future::Future;

/// A job as a player reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    /// The on-chain name of its model.
    pub model: String,
    /// The job as the arbiter reads it.
    pub spec: JobSpec,
    /// The result posted for it, if any.
    pub result: Option<PostedResult>,
}

/// What a provider posted: the hashes an auditor compares with its own run, the output a
/// generation's one-pass audit reads, and the prompt count it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedResult {
    pub output_hash: Hash,
    pub trace_root: Hash,
    /// The output bytes when they are on chain (empty for a session result adopted without them).
    pub output: Vec<u8>,
    /// The prompt tokens the provider states it read; 0 when not stated.
    pub input_units: u64,
}

/// One side of a dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub address: Address,
    /// The job whose run this side stands by (a challenger's is the disputed job).
    pub job: u64,
    /// The step count it stated (0 until a redundant copy's provider states it in round 0).
    pub step_count: u64,
    /// Its commitment to the token ids its run used.
    pub ids: Hash,
    /// Whether it has revealed in the current round.
    pub revealed: bool,
}

/// Where a dispute stands, as far as a player's next move depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Rounds of the bisection game: each side reveals the children of `DisputeView::node`.
    Bisect,
    /// The sides ran different token ids: the ledger tokenizes the input. With equal ids and
    /// different step counts (a length dispute whose common prefix is agreed): the ledger
    /// decides where the generation stops.
    Input,
    /// The first divergent step is found: the ledger re-executes it.
    Step { step: u64 },
}

/// An open dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisputeView {
    /// The defendant's job (the dispute's key).
    pub job: u64,
    /// Indexed by [`piazza_ledger::verify::DEFENDANT`] and [`piazza_ledger::verify::CLAIMANT`].
    pub sides: [Side; 2],
    pub round: u32,
    /// The node this round is about (round 0: the top of the tree).
    pub node: tree::Node,
    pub phase: Phase,
}

/// An address's open audits and disputes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tasks {
    /// Jobs held for this address to audit.
    pub audits: Vec<u64>,
    /// Disputes this address is a side of.
    pub disputes: Vec<DisputeView>,
}

/// What a player needs of the chain. One value speaks for one party: `submit` signs with its
/// key.
pub trait Chain: Sync {
    /// Job `id`, or `None` if there is none.
    fn job(&self, id: u64) -> impl Future<Output = Result<Option<JobView>, ProviderError>> + Send;
    /// `me`'s open audits and disputes.
    fn tasks(&self, me: &Address) -> impl Future<Output = Result<Tasks, ProviderError>> + Send;
    /// The height of the last committed block.
    fn height(&self) -> impl Future<Output = Result<u64, ProviderError>> + Send;
    /// Signs `messages` as one transaction of this party and sends it; the hash it returns
    /// names a transaction the chain accepted (it may still fail when executed).
    fn submit(
        &self,
        messages: Vec<Message>,
    ) -> impl Future<Output = Result<Hash, ProviderError>> + Send;
}

/// The production chain: a node over JSON-RPC, moves signed and sent in nonce order.
pub struct Rpc<'a> {
    pub client: &'a Client,
    pub poster: &'a Poster,
}

impl Chain for Rpc<'_> {
    async fn job(&self, id: u64) -> Result<Option<JobView>, ProviderError> {
        self.client.job(id).await?.map(job_view).transpose()
    }

    async fn tasks(&self, me: &Address) -> Result<Tasks, ProviderError> {
        tasks_view(&self.client.verify_tasks(me).await?, me)
    }

    async fn height(&self) -> Result<u64, ProviderError> {
        Ok(self.client.status().await?.height)
    }

    async fn submit(&self, messages: Vec<Message>) -> Result<Hash, ProviderError> {
        self.poster.send(messages, None).await
    }
}

fn wire_error(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Model(format!("the node sent {what} that does not parse: {e}"))
}

fn hash(what: &str, hex: &str) -> Result<Hash, ProviderError> {
    hex.parse().map_err(|e| wire_error(what, e))
}

/// A job from the node's wire shape.
pub fn job_view(info: JobInfo) -> Result<JobView, ProviderError> {
    let spec = crate::dispute::job_spec(&info)?;
    let result = info
        .result
        .map(|r| {
            Ok::<_, ProviderError>(PostedResult {
                output_hash: hash("an output hash", &r.output_hash)?,
                trace_root: hash("a trace root", &r.trace_root)?,
                output: hex::decode(&r.output).map_err(|e| wire_error("an output", e))?,
                input_units: r.input_units,
            })
        })
        .transpose()?;
    Ok(JobView {
        model: info.model,
        spec,
        result,
    })
}

/// `me`'s tasks from the node's wire shape (audits drawn for someone else are left out).
pub fn tasks_view(tasks: &VerifyTasks, me: &Address) -> Result<Tasks, ProviderError> {
    let me = me.to_string();
    Ok(Tasks {
        audits: tasks
            .audits
            .iter()
            .filter(|a| a.auditor == me)
            .map(|a| a.job)
            .collect(),
        disputes: tasks
            .disputes
            .iter()
            .map(dispute_view)
            .collect::<Result<_, _>>()?,
    })
}

/// A dispute from the node's wire shape.
pub fn dispute_view(d: &DisputeInfo) -> Result<DisputeView, ProviderError> {
    let side = |index: usize, party: &piazza_api::PartyInfo| {
        Ok::<_, ProviderError>(Side {
            address: party
                .address
                .parse()
                .map_err(|e| wire_error("a party address", e))?,
            job: party.job,
            step_count: party.step_count,
            ids: hash("a party's ids commitment", &party.ids)?,
            // A missing flag reads as revealed: a player never reveals twice.
            revealed: d.revealed.get(index).copied().unwrap_or(true),
        })
    };
    let phase = match d.phase {
        DisputePhase::Bisect => Phase::Bisect,
        DisputePhase::Input => Phase::Input,
        DisputePhase::Step => Phase::Step {
            step: d
                .step
                .ok_or_else(|| wire_error("a step phase", "it names no step"))?,
        },
    };
    Ok(DisputeView {
        job: d.job,
        sides: [
            side(piazza_ledger::verify::DEFENDANT, &d.defendant)?,
            side(piazza_ledger::verify::CLAIMANT, &d.claimant)?,
        ],
        round: d.round,
        node: tree::Node {
            level: d.node_level,
            index: d.node_index,
        },
        phase,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(byte: u8, job: u64) -> piazza_api::PartyInfo {
        piazza_api::PartyInfo {
            address: Address([byte; 20]).to_string(),
            job,
            root: Hash([1; 32]).to_hex(),
            step_count: 8,
            ids: Hash([2; 32]).to_hex(),
            bond: "0".into(),
            is_provider: byte == 1,
        }
    }

    fn dispute(phase: DisputePhase, step: Option<u64>, revealed: Vec<bool>) -> DisputeInfo {
        DisputeInfo {
            job: 7,
            defendant: party(1, 7),
            claimant: party(2, 7),
            round: 3,
            node_level: 2,
            node_index: 1,
            phase,
            step,
            leaves: Vec::new(),
            revealed,
            deadline_height: 40,
            opened_height: 10,
        }
    }

    #[test]
    fn a_wire_dispute_maps_to_the_view_a_player_decides_from() {
        let view = dispute_view(&dispute(DisputePhase::Bisect, None, vec![true, false])).unwrap();
        assert_eq!(view.sides[0].address, Address([1; 20]));
        assert_eq!(view.sides[1].address, Address([2; 20]));
        assert_eq!(
            (view.sides[0].step_count, view.sides[1].ids),
            (8, Hash([2; 32]))
        );
        assert_eq!(
            (view.sides[0].revealed, view.sides[1].revealed),
            (true, false)
        );
        assert_eq!((view.node.level, view.node.index, view.round), (2, 1, 3));
        let step = dispute_view(&dispute(DisputePhase::Step, Some(5), vec![])).unwrap();
        assert_eq!(step.phase, Phase::Step { step: 5 });
        assert!(
            step.sides.iter().all(|s| s.revealed),
            "missing flags never invite a reveal"
        );
    }

    #[test]
    fn a_malformed_wire_dispute_is_an_error_not_a_move() {
        assert!(dispute_view(&dispute(DisputePhase::Step, None, vec![])).is_err());
        let mut bad = dispute(DisputePhase::Bisect, None, vec![]);
        bad.claimant.address = "not an address".into();
        assert!(dispute_view(&bad).is_err());
        let mut bad = dispute(DisputePhase::Bisect, None, vec![]);
        bad.defendant.ids = "zz".into();
        assert!(dispute_view(&bad).is_err());
    }

    #[test]
    fn only_this_auditors_audits_are_its_tasks() {
        let me = Address([3; 20]);
        let audit = |job, auditor: Address| piazza_api::AuditInfo {
            job,
            auditor: auditor.to_string(),
            deadline_height: 9,
        };
        let tasks = VerifyTasks {
            audits: vec![audit(1, me), audit(2, Address([4; 20]))],
            disputes: Vec::new(),
        };
        assert_eq!(tasks_view(&tasks, &me).unwrap().audits, vec![1]);
    }
}

//! The consensus side's own durable records, one redb file beside the WAL: proposals seen or
//! made per (height, round) (so a restarted validator re-proposes the same block and replays
//! what it received), and the commit certificate of each decided height (written before
//! `Decided` is answered; served to syncing peers). A decided block is stored once: in the
//! proposals until the application has committed it, then only in the application's store
//! (the proposals of committed heights are pruned).
//!
//! A running node hands its store to its JSON-RPC server (`BftHandle::store`), which serves the
//! certificates ([`ConsensusStore::decided_certificate`]) without a second handle on the file.

use crate::codec::{get_commit_certificate, get_round, put_commit_certificate, put_round};
use crate::context::{BlockId, Height, PiazzaContext, ValidatorAddress};
use malachitebft_app_channel::app::consensus::ProposedValue;
use malachitebft_app_channel::app::types::core::{CommitCertificate, Round, Validity};
use piazza_codec::{DecodeError, Reader, Writer};
use piazza_consensus::certificate;
use piazza_ledger::block::BLOCK_BYTES_MAX;
use piazza_primitives::{Address, Hash};
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;

/// (height BE ‖ round BE ‖ block id) → (valid round, proposer, validity, block bytes).
const PROPOSALS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("proposals");
/// height → commit certificate.
const CERTIFICATES: TableDefinition<u64, &[u8]> = TableDefinition::new("certificates");

/// Why the consensus store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("consensus store: {0}")]
    Database(String),
    #[error("consensus store holds an undecodable record: {0}")]
    Corrupt(#[from] DecodeError),
}

fn db_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// A proposal with its block: what consensus was told about (height, round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProposal {
    pub value: ProposedValue<PiazzaContext>,
    pub block_bytes: Vec<u8>,
}

pub struct ConsensusStore {
    db: Database,
}

fn proposal_key(height: Height, round: u32, id: Option<&BlockId>) -> Vec<u8> {
    let mut key = Vec::with_capacity(44);
    key.extend_from_slice(&height.0.to_be_bytes());
    key.extend_from_slice(&round.to_be_bytes());
    if let Some(id) = id {
        key.extend_from_slice(&id.0 .0);
    }
    key
}

fn decode_proposal(key: &[u8], value: &[u8]) -> Result<StoredProposal, StoreError> {
    let corrupt = |reason: &str| {
        StoreError::Corrupt(DecodeError::Invalid {
            what: "proposal key",
            reason: reason.into(),
        })
    };
    let height = key
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("short height"))?;
    let round = key
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| corrupt("short round"))?;
    let id: [u8; 32] = key
        .get(12..44)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("short block id"))?;
    let mut r = Reader::new(value);
    let valid_round = get_round(&mut r)?;
    let proposer = ValidatorAddress(Address(r.array()?));
    let validity = Validity::from_bool(r.bool()?);
    let block_bytes = r.bytes(BLOCK_BYTES_MAX)?;
    r.finish()?;
    Ok(StoredProposal {
        value: ProposedValue {
            height: Height(height),
            round: Round::new(round),
            valid_round,
            proposer,
            value: BlockId(Hash(id)),
            validity,
        },
        block_bytes,
    })
}

impl ConsensusStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db_error)?;
        let tx = db.begin_write().map_err(db_error)?;
        tx.open_table(PROPOSALS).map_err(db_error)?;
        tx.open_table(CERTIFICATES).map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        Ok(ConsensusStore { db })
    }

    /// Records a proposal durably. The round of a stored proposal is always defined.
    pub fn put_proposal(&self, proposal: &StoredProposal) -> Result<(), StoreError> {
        let v = &proposal.value;
        let round = v.round.as_u32().ok_or_else(|| {
            StoreError::Corrupt(DecodeError::Invalid {
                what: "proposal round",
                reason: "nil".into(),
            })
        })?;
        let key = proposal_key(v.height, round, Some(&v.value));
        let mut w = Writer::new();
        put_round(&mut w, v.valid_round);
        w.array(&v.proposer.0 .0);
        w.bool(v.validity.is_valid());
        w.bytes(&proposal.block_bytes);
        let tx = self.db.begin_write().map_err(db_error)?;
        tx.open_table(PROPOSALS)
            .map_err(db_error)?
            .insert(key.as_slice(), w.into_bytes().as_slice())
            .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    fn proposals_in(&self, from: &[u8], to: &[u8]) -> Result<Vec<StoredProposal>, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(PROPOSALS).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in table.range(from..to).map_err(db_error)? {
            let (k, v) = entry.map_err(db_error)?;
            out.push(decode_proposal(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Every proposal stored for (`height`, `round`).
    pub fn proposals_at(
        &self,
        height: Height,
        round: u32,
    ) -> Result<Vec<StoredProposal>, StoreError> {
        let from = proposal_key(height, round, None);
        let mut to = from.clone();
        to.extend_from_slice(&[0xff; 33]);
        self.proposals_in(&from, &to)
    }

    /// A stored proposal of block `id` at `height`, from any round.
    pub fn proposal_of(
        &self,
        height: Height,
        id: &BlockId,
    ) -> Result<Option<StoredProposal>, StoreError> {
        let from = proposal_key(height, 0, None);
        let to = proposal_key(Height(height.0.saturating_add(1)), 0, None);
        Ok(self
            .proposals_in(&from, &to)?
            .into_iter()
            .find(|p| p.value.value == *id))
    }

    /// Removes the proposals of every height up to `height`.
    pub fn prune_proposals(&self, height: Height) -> Result<(), StoreError> {
        let to = proposal_key(Height(height.0.saturating_add(1)), 0, None);
        let tx = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = tx.open_table(PROPOSALS).map_err(db_error)?;
            table
                .retain_in(..to.as_slice(), |_, _| false)
                .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)
    }

    /// Records the certificate of a decided height durably (one redb transaction, committed
    /// before this returns). Its block is the stored proposal it names.
    pub fn put_certificate(
        &self,
        certificate: &CommitCertificate<PiazzaContext>,
    ) -> Result<(), StoreError> {
        let mut w = Writer::new();
        put_commit_certificate(&mut w, certificate);
        let tx = self.db.begin_write().map_err(db_error)?;
        tx.open_table(CERTIFICATES)
            .map_err(db_error)?
            .insert(certificate.height.0, w.into_bytes().as_slice())
            .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    /// The certificate that decided `height`, if stored.
    pub fn certificate(
        &self,
        height: Height,
    ) -> Result<Option<CommitCertificate<PiazzaContext>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(CERTIFICATES).map_err(db_error)?;
        let Some(value) = table.get(height.0).map_err(db_error)? else {
            return Ok(None);
        };
        let mut r = Reader::new(value.value());
        let certificate = get_commit_certificate(&mut r)?;
        r.finish()?;
        Ok(Some(certificate))
    }

    /// The commit certificate of `height` as `piazza_consensus::certificate` checks it: `None`
    /// when the height is not decided.
    pub fn decided_certificate(
        &self,
        height: u64,
    ) -> Result<Option<certificate::CommitCertificate>, StoreError> {
        Ok(self
            .certificate(Height(height))?
            .and_then(|c| plain_certificate(&c)))
    }

    /// The lowest height with a stored certificate.
    pub fn first_decided(&self) -> Result<Option<Height>, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(CERTIFICATES).map_err(db_error)?;
        let first = table.first().map_err(db_error)?;
        Ok(first.map(|(k, _)| Height(k.value())))
    }
}

/// A Malachite commit certificate as `piazza_consensus::certificate` checks it; `None` for one
/// without a round (consensus never decides in the nil round).
pub fn plain_certificate(
    certificate: &CommitCertificate<PiazzaContext>,
) -> Option<certificate::CommitCertificate> {
    Some(certificate::CommitCertificate {
        height: certificate.height.0,
        round: certificate.round.as_u32()?,
        block: certificate.value_id.0,
        signatures: certificate
            .commit_signatures
            .iter()
            .map(|s| certificate::CommitSignature {
                validator: s.address.0,
                signature: s.signature.0,
            })
            .collect(),
    })
}

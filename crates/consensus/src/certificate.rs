//! What a network's commit certificate proves, checked without Malachite: the precommits of
//! more than two thirds of a height's voting power for one block. A client that holds a
//! certificate and the height's validator set knows the block is final; a state proof against
//! that block's header root is then a proof against the network, not one node.
//!
//! The signed bytes of a vote are written here once: `piazza-bft` signs and verifies votes with
//! [`vote_signing_bytes`], and [`verify_commit`] rebuilds each precommit from a certificate.
//!
//! ```
//! use piazza_consensus::certificate::{self, CommitCertificate, CommitSignature, Member, VoteKind, VoteFields};
//! use piazza_primitives::{Hash, SecretKey};
//! let key = SecretKey::from_seed([3; 32]);
//! let block = Hash([7; 32]);
//! let vote = VoteFields { kind: VoteKind::Precommit, height: 5, round: Some(0), block: Some(block), validator: key.public_key().address() };
//! let signature = key.sign(&certificate::vote_signing_bytes("chain", &vote));
//! let cert = CommitCertificate { height: 5, round: 0, block, signatures: vec![CommitSignature { validator: vote.validator, signature }] };
//! let set = [Member { public_key: key.public_key(), voting_power: 10 }];
//! let power = certificate::verify_commit("chain", &cert, 5, &block, &set).unwrap();
//! assert_eq!((power.signed, power.total), (10, 10));
//! ```

use piazza_codec::Writer;
use piazza_primitives::{Address, Hash, PublicKey, Signature};
use std::collections::BTreeMap;
use thiserror::Error;

/// The most validators a set may hold, and so the most signatures a certificate may carry.
pub const VALIDATORS_MAX: usize = 256;

/// The domain of every vote signature.
pub const VOTE_DOMAIN: &str = "piazza/bft/vote";

/// A prevote or a precommit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteKind {
    Prevote,
    Precommit,
}

/// The fields a validator signs in a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteFields {
    pub kind: VoteKind,
    pub height: u64,
    /// `None`: the nil round.
    pub round: Option<u32>,
    /// `None`: a vote for nil.
    pub block: Option<Hash>,
    /// The voter's address (its consensus key's address).
    pub validator: Address,
}

/// The bytes a validator signs for `vote` on `chain_id`: `domain ‖ chain id ‖ kind ‖ height ‖
/// round ‖ block or nil ‖ validator`, in Piazza's canonical encoding.
pub fn vote_signing_bytes(chain_id: &str, vote: &VoteFields) -> Vec<u8> {
    let mut w = Writer::new();
    w.str(VOTE_DOMAIN);
    w.str(chain_id);
    w.u8(match vote.kind {
        VoteKind::Prevote => 0,
        VoteKind::Precommit => 1,
    });
    w.u64(vote.height);
    match vote.round {
        None => w.u8(0),
        Some(round) => {
            w.u8(1);
            w.u32(round);
        }
    }
    match &vote.block {
        None => w.u8(0),
        Some(block) => {
            w.u8(1);
            w.array(&block.0);
        }
    }
    w.array(&vote.validator.0);
    w.into_bytes()
}

/// One validator's precommit in a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitSignature {
    pub validator: Address,
    pub signature: Signature,
}

/// The precommits that decided `block` at (`height`, `round`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitCertificate {
    pub height: u64,
    pub round: u32,
    pub block: Hash,
    pub signatures: Vec<CommitSignature>,
}

/// A member of a height's validator set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub public_key: PublicKey,
    pub voting_power: u64,
}

/// The power behind a certificate that passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertifiedPower {
    pub signed: u64,
    pub total: u64,
    pub signers: usize,
}

/// Why a certificate does not prove its block final.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CertificateError {
    #[error("the certificate is for height {got}, not {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("the certificate decides block {got}, not block {expected} whose header holds the proven state root")]
    WrongBlock { expected: Hash, got: Hash },
    #[error("the validator set of the height is empty, holds no power or more than {VALIDATORS_MAX} validators")]
    BadValidatorSet,
    #[error(
        "the certificate carries {0} signatures, more than the {VALIDATORS_MAX} a set may hold"
    )]
    TooManySignatures(usize),
    #[error("signer {0} is not in the height's validator set")]
    NotAValidator(Address),
    #[error("signer {0} signs twice")]
    DuplicateSigner(Address),
    #[error("the precommit signature of {0} does not verify")]
    BadSignature(Address),
    #[error("the signers hold {signed} of {total} voting power, not more than two thirds")]
    TooLittlePower { signed: u64, total: u64 },
}

/// Whether `signed` is more than two thirds of `total` (Tendermint's commit quorum).
pub fn is_quorum(signed: u64, total: u64) -> bool {
    3 * u128::from(signed) > 2 * u128::from(total)
}

/// Checks that `certificate` finalizes `block` at `height` on `chain_id`: every signature is an
/// ed25519 precommit under the ZIP-215 rule (`PublicKey::verify`) for that block by a distinct
/// member of `validators` (the set of `height`), and together they hold more than two thirds of
/// its voting power.
pub fn verify_commit(
    chain_id: &str,
    certificate: &CommitCertificate,
    height: u64,
    block: &Hash,
    validators: &[Member],
) -> Result<CertifiedPower, CertificateError> {
    if certificate.height != height {
        return Err(CertificateError::WrongHeight {
            expected: height,
            got: certificate.height,
        });
    }
    if certificate.block != *block {
        return Err(CertificateError::WrongBlock {
            expected: *block,
            got: certificate.block,
        });
    }
    if validators.is_empty() || validators.len() > VALIDATORS_MAX {
        return Err(CertificateError::BadValidatorSet);
    }
    if certificate.signatures.len() > VALIDATORS_MAX {
        return Err(CertificateError::TooManySignatures(
            certificate.signatures.len(),
        ));
    }
    let mut members = BTreeMap::new();
    let mut total: u64 = 0;
    for member in validators {
        total = total
            .checked_add(member.voting_power)
            .ok_or(CertificateError::BadValidatorSet)?;
        members.insert(member.public_key.address(), member);
    }
    if total == 0 || members.len() != validators.len() {
        return Err(CertificateError::BadValidatorSet);
    }
    let mut signed: u64 = 0;
    let mut seen = std::collections::BTreeSet::new();
    for entry in &certificate.signatures {
        let member = members
            .get(&entry.validator)
            .ok_or(CertificateError::NotAValidator(entry.validator))?;
        if !seen.insert(entry.validator) {
            return Err(CertificateError::DuplicateSigner(entry.validator));
        }
        let vote = VoteFields {
            kind: VoteKind::Precommit,
            height,
            round: Some(certificate.round),
            block: Some(*block),
            validator: entry.validator,
        };
        member
            .public_key
            .verify(&vote_signing_bytes(chain_id, &vote), &entry.signature)
            .map_err(|_| CertificateError::BadSignature(entry.validator))?;
        // Bounded by `total`, which did not overflow.
        signed += member.voting_power;
    }
    if !is_quorum(signed, total) {
        return Err(CertificateError::TooLittlePower { signed, total });
    }
    Ok(CertifiedPower {
        signed,
        total,
        signers: seen.len(),
    })
}

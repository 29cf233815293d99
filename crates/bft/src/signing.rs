//! Signing and verification of consensus messages with Piazza's ed25519 keys and its signature
//! rule (ZIP-215, `piazza_primitives::PublicKey::verify`), the rule every other Piazza
//! signature follows.
//!
//! Every signed message is `domain ‖ chain id ‖ canonical bytes`: a vote cannot pass for a
//! proposal, and nothing signed on one chain verifies on another.

use crate::codec::{put_block_id, put_height, put_round};
use crate::context::{BlockId, Height, PiazzaContext, Proposal, Vote};
use async_trait::async_trait;
use malachitebft_app_channel::app::types::core::{
    NilOrVal, Round, SignedMessage, SigningScheme, ValidatorProof, VoteExtensionScope, VoteType,
};
use malachitebft_signing::{Error as SigningError, Signer, VerificationResult, Verifier};
use piazza_codec::Writer;
use piazza_consensus::certificate::{self, VoteFields, VoteKind};
use piazza_primitives::{PublicKey, SecretKey, Signature};
use std::cmp::Ordering;

const PROPOSAL_DOMAIN: &str = "piazza/bft/proposal";
const EXTENSION_DOMAIN: &str = "piazza/bft/vote-extension";
const VALIDATOR_PROOF_DOMAIN: &str = "piazza/bft/validator-proof";
const PARTS_DOMAIN: &str = "piazza/bft/proposal-parts";

/// A signature as Malachite needs it (totally ordered); the bytes are Piazza's ed25519 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BftSignature(pub Signature);

impl PartialOrd for BftSignature {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BftSignature {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0 .0.cmp(&other.0 .0)
    }
}

/// Why key or signature bytes are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} bytes, got {got}")]
pub struct KeyBytesError {
    pub expected: usize,
    pub got: usize,
}

/// Piazza's ed25519 as Malachite's signing scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PiazzaSigning;

impl SigningScheme for PiazzaSigning {
    type DecodingError = KeyBytesError;
    type Signature = BftSignature;
    type PublicKey = PublicKey;
    type PrivateKey = SecretKey;

    fn decode_signature(bytes: &[u8]) -> Result<BftSignature, KeyBytesError> {
        let array: [u8; 64] = bytes.try_into().map_err(|_| KeyBytesError {
            expected: 64,
            got: bytes.len(),
        })?;
        Ok(BftSignature(Signature(array)))
    }

    fn encode_signature(signature: &BftSignature) -> Vec<u8> {
        signature.0 .0.to_vec()
    }

    fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, KeyBytesError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| KeyBytesError {
            expected: 32,
            got: bytes.len(),
        })?;
        Ok(PublicKey(array))
    }

    fn encode_public_key(public_key: &PublicKey) -> Vec<u8> {
        public_key.0.to_vec()
    }
}

fn preimage(domain: &str, chain_id: &str, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    w.str(domain);
    w.str(chain_id);
    body(&mut w);
    w.into_bytes()
}

/// The bytes a validator signs for `vote` on `chain_id`: written once, in
/// `piazza_consensus::certificate`, where clients check commit certificates with them.
pub fn vote_signing_bytes(chain_id: &str, vote: &Vote) -> Vec<u8> {
    let fields = VoteFields {
        kind: match vote.vote_type {
            VoteType::Prevote => VoteKind::Prevote,
            VoteType::Precommit => VoteKind::Precommit,
        },
        height: vote.height.0,
        round: vote.round.as_u32(),
        block: match &vote.value {
            NilOrVal::Nil => None,
            NilOrVal::Val(id) => Some(id.0),
        },
        validator: vote.validator.0,
    };
    certificate::vote_signing_bytes(chain_id, &fields)
}

/// The bytes a proposer signs for `proposal` on `chain_id`.
pub fn proposal_signing_bytes(chain_id: &str, proposal: &Proposal) -> Vec<u8> {
    preimage(PROPOSAL_DOMAIN, chain_id, |w| {
        put_height(w, proposal.height);
        put_round(w, proposal.round);
        put_block_id(w, &proposal.value);
        put_round(w, proposal.pol_round);
        w.array(&proposal.proposer.0 .0);
    })
}

/// The bytes a proposer signs in the `Fin` part of a block stream.
pub fn parts_signing_bytes(chain_id: &str, height: Height, round: Round, id: &BlockId) -> Vec<u8> {
    preimage(PARTS_DOMAIN, chain_id, |w| {
        put_height(w, height);
        put_round(w, round);
        put_block_id(w, id);
    })
}

fn extension_signing_bytes(chain_id: &str, scope: &VoteExtensionScope<PiazzaContext>) -> Vec<u8> {
    preimage(EXTENSION_DOMAIN, chain_id, |w| {
        put_height(w, scope.height);
        put_round(w, scope.round);
        put_block_id(w, &scope.value_id);
        w.array(&scope.validator_address.0 .0);
    })
}

fn proof_signing_bytes(chain_id: &str, public_key: &[u8], peer_id: &[u8]) -> Vec<u8> {
    preimage(VALIDATOR_PROOF_DOMAIN, chain_id, |w| {
        w.bytes(&ValidatorProof::<PiazzaContext>::signing_bytes(
            public_key, peer_id,
        ));
    })
}

/// Verification of `signature` by `public_key` over `message` (Piazza's ZIP-215 rule).
pub fn verify(public_key: &PublicKey, message: &[u8], signature: &BftSignature) -> bool {
    public_key.verify(message, &signature.0).is_ok()
}

/// Signs consensus messages with one validator's key.
#[derive(Clone)]
pub struct KeySigner {
    key: SecretKey,
    chain_id: String,
}

impl KeySigner {
    pub fn new(key: SecretKey, chain_id: String) -> Self {
        KeySigner { key, chain_id }
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub fn sign_parts(&self, height: Height, round: Round, id: &BlockId) -> Signature {
        self.key
            .sign(&parts_signing_bytes(&self.chain_id, height, round, id))
    }
}

#[async_trait]
impl Signer<PiazzaContext> for KeySigner {
    async fn sign_vote(
        &self,
        vote: Vote,
    ) -> Result<SignedMessage<PiazzaContext, Vote>, SigningError> {
        let signature = self.key.sign(&vote_signing_bytes(&self.chain_id, &vote));
        Ok(SignedMessage::new(vote, BftSignature(signature)))
    }

    async fn sign_proposal(
        &self,
        proposal: Proposal,
    ) -> Result<SignedMessage<PiazzaContext, Proposal>, SigningError> {
        let signature = self
            .key
            .sign(&proposal_signing_bytes(&self.chain_id, &proposal));
        Ok(SignedMessage::new(proposal, BftSignature(signature)))
    }

    async fn sign_vote_extension(
        &self,
        scope: VoteExtensionScope<PiazzaContext>,
        extension: (),
    ) -> Result<SignedMessage<PiazzaContext, ()>, SigningError> {
        let signature = self
            .key
            .sign(&extension_signing_bytes(&self.chain_id, &scope));
        Ok(SignedMessage::new(extension, BftSignature(signature)))
    }

    async fn sign_validator_proof(
        &self,
        public_key: Vec<u8>,
        peer_id: Vec<u8>,
    ) -> Result<ValidatorProof<PiazzaContext>, SigningError> {
        let signature = self
            .key
            .sign(&proof_signing_bytes(&self.chain_id, &public_key, &peer_id));
        Ok(ValidatorProof::new(
            public_key,
            peer_id,
            BftSignature(signature),
        ))
    }
}

/// Verifies consensus messages of one chain.
#[derive(Clone, Debug)]
pub struct KeyVerifier {
    chain_id: String,
}

impl KeyVerifier {
    pub fn new(chain_id: String) -> Self {
        KeyVerifier { chain_id }
    }

    pub fn verify_parts(
        &self,
        public_key: &PublicKey,
        height: Height,
        round: Round,
        id: &BlockId,
        signature: &Signature,
    ) -> bool {
        public_key
            .verify(
                &parts_signing_bytes(&self.chain_id, height, round, id),
                signature,
            )
            .is_ok()
    }
}

#[async_trait]
impl Verifier<PiazzaContext> for KeyVerifier {
    async fn verify_signed_vote(
        &self,
        vote: &Vote,
        signature: &BftSignature,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        let message = vote_signing_bytes(&self.chain_id, vote);
        Ok(VerificationResult::from_bool(verify(
            public_key, &message, signature,
        )))
    }

    async fn verify_signed_proposal(
        &self,
        proposal: &Proposal,
        signature: &BftSignature,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        let message = proposal_signing_bytes(&self.chain_id, proposal);
        Ok(VerificationResult::from_bool(verify(
            public_key, &message, signature,
        )))
    }

    async fn verify_signed_vote_extension(
        &self,
        scope: &VoteExtensionScope<PiazzaContext>,
        _extension: &(),
        signature: &BftSignature,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        let message = extension_signing_bytes(&self.chain_id, scope);
        Ok(VerificationResult::from_bool(verify(
            public_key, &message, signature,
        )))
    }

    async fn verify_validator_proof(
        &self,
        proof: &ValidatorProof<PiazzaContext>,
    ) -> Result<VerificationResult, SigningError> {
        let Ok(public_key) = PiazzaSigning::decode_public_key(&proof.public_key) else {
            return Ok(VerificationResult::Invalid);
        };
        let message = proof_signing_bytes(&self.chain_id, &proof.public_key, &proof.peer_id);
        Ok(VerificationResult::from_bool(verify(
            &public_key,
            &message,
            &proof.signature,
        )))
    }
}

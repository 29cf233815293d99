//! The validator set, proposer selection and consensus signatures: sets are checked, the
//! proposer is the same on every node and drawn in proportion to voting power, and forged or
//! replayed votes, proposals, part streams and validator proofs are refused.

use malachitebft_app_channel::app::types::core::{
    NilOrVal, Round, ValidatorProof, VoteExtensionScope, VoteType,
};
use malachitebft_signing::{Signer, Verifier};
use piazza_bft::context::{
    BlockId, Height, PiazzaContext, Proposal, Validator, ValidatorAddress, ValidatorSet,
    ValidatorSetError, Vote, TOTAL_VOTING_POWER_MAX,
};
use piazza_bft::signing::{KeySigner, KeyVerifier};
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisBond};
use piazza_ledger::staking::Role;
use piazza_primitives::{Amount, Hash, SecretKey};
use std::collections::BTreeMap;

const CHAIN: &str = "piazza-context-test";

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

fn set(powers: &[u64]) -> ValidatorSet {
    ValidatorSet::new(
        powers
            .iter()
            .enumerate()
            .map(|(i, p)| Validator::new(key(i as u8 + 1).public_key(), *p))
            .collect(),
    )
    .unwrap()
}

#[test]
fn validator_sets_are_checked() {
    let v = |i: u8, p: u64| Validator::new(key(i).public_key(), p);
    assert_eq!(ValidatorSet::new(vec![]), Err(ValidatorSetError::Count(0)));
    assert!(matches!(
        ValidatorSet::new(vec![v(1, 0)]),
        Err(ValidatorSetError::NoPower(_))
    ));
    assert!(matches!(
        ValidatorSet::new(vec![v(1, 1), v(1, 2)]),
        Err(ValidatorSetError::Duplicate(_))
    ));
    let mut forged = v(1, 1);
    forged.address = ValidatorAddress(key(2).public_key().address());
    assert!(matches!(
        ValidatorSet::new(vec![forged]),
        Err(ValidatorSetError::AddressMismatch(_))
    ));
    assert_eq!(
        ValidatorSet::new(vec![v(1, TOTAL_VOTING_POWER_MAX), v(2, 1)]),
        Err(ValidatorSetError::TooMuchPower)
    );
    assert!(ValidatorSet::new(vec![v(1, TOTAL_VOTING_POWER_MAX)]).is_ok());
}

#[test]
fn the_genesis_set_takes_power_from_validator_bonds() {
    let genesis = Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 0,
        fees: FeeParams::default(),
        staking: Default::default(),
        accounts: vec![],
        bonds: vec![
            GenesisBond {
                address: key(1).public_key().address(),
                role: Role::Validator,
                amount: Amount::pza(3_000),
            },
            GenesisBond {
                address: key(2).public_key().address(),
                role: Role::Provider,
                amount: Amount::pza(5_000),
            },
        ],
        models: vec![],
        compute: Default::default(),
        verify: Default::default(),
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    };
    let set = ValidatorSet::from_genesis(&genesis, &[key(1).public_key()]).unwrap();
    assert_eq!(set.validators()[0].voting_power, 3_000);
    // A provider bond gives no voting power.
    assert!(matches!(
        ValidatorSet::from_genesis(&genesis, &[key(2).public_key()]),
        Err(ValidatorSetError::NoPower(_))
    ));
}

#[test]
fn proposer_selection_is_deterministic_and_independent_of_input_order() {
    let a = set(&[5, 1, 9, 3]);
    let mut reversed: Vec<Validator> = a.validators().to_vec();
    reversed.reverse();
    let b = ValidatorSet::new(reversed).unwrap();
    for h in 1..200 {
        for r in 0..4 {
            let (h, r) = (Height(h), Round::new(r));
            assert_eq!(a.proposer(h, r).address, b.proposer(h, r).address);
            assert_eq!(a.proposer(h, r), set(&[5, 1, 9, 3]).proposer(h, r));
        }
    }
}

#[test]
fn proposer_selection_is_weighted_by_power() {
    let powers = [1u64, 2, 3, 4];
    let set = set(&powers);
    let draws = 20_000u64;
    let mut counts: BTreeMap<ValidatorAddress, u64> = BTreeMap::new();
    for h in 1..=draws {
        *counts
            .entry(set.proposer(Height(h), Round::new(0)).address)
            .or_default() += 1;
    }
    let total: u64 = powers.iter().sum();
    for v in set.validators() {
        let expected = draws * v.voting_power / total;
        let got = counts.get(&v.address).copied().unwrap_or(0);
        // Within 10% of the expected share (the draws are a fixed hash sequence, not random).
        assert!(
            got.abs_diff(expected) * 10 <= expected,
            "power {} drew {got}, expected about {expected}",
            v.voting_power
        );
    }
}

fn prevote(validator: ValidatorAddress) -> Vote {
    piazza_bft::context::Vote {
        vote_type: VoteType::Prevote,
        height: Height(4),
        round: Round::new(1),
        value: NilOrVal::Val(BlockId(Hash([8; 32]))),
        validator,
        extension: None,
    }
}

#[tokio::test]
async fn forged_or_replayed_votes_are_refused() {
    let signer = KeySigner::new(key(1), CHAIN.into());
    let verifier = KeyVerifier::new(CHAIN.into());
    let public = key(1).public_key();
    let vote = prevote(ValidatorAddress(public.address()));
    let signed = signer.sign_vote(vote.clone()).await.unwrap();
    let ok = |r: malachitebft_signing::VerificationResult| r.is_valid();
    assert!(ok(verifier
        .verify_signed_vote(&vote, &signed.signature, &public)
        .await
        .unwrap()));
    // Another key.
    let other = key(2).public_key();
    assert!(!ok(verifier
        .verify_signed_vote(&vote, &signed.signature, &other)
        .await
        .unwrap()));
    // Any field changed.
    let changes: [fn(&mut Vote); 5] = [
        |v| v.round = Round::new(2),
        |v| v.value = NilOrVal::Nil,
        |v| v.vote_type = VoteType::Precommit,
        |v| v.height = Height(5),
        |v| v.validator = ValidatorAddress(key(2).public_key().address()),
    ];
    for change in changes {
        let mut changed = vote.clone();
        change(&mut changed);
        let r = verifier
            .verify_signed_vote(&changed, &signed.signature, &public)
            .await
            .unwrap();
        assert!(r.is_invalid());
    }
    // Another chain.
    let elsewhere = KeyVerifier::new("another-chain".into());
    assert!(!ok(elsewhere
        .verify_signed_vote(&vote, &signed.signature, &public)
        .await
        .unwrap()));
    // A corrupted signature.
    let mut bad = signed.signature;
    bad.0 .0[0] ^= 1;
    assert!(!ok(verifier
        .verify_signed_vote(&vote, &bad, &public)
        .await
        .unwrap()));
}

#[tokio::test]
async fn forged_proposals_parts_and_proofs_are_refused() {
    let signer = KeySigner::new(key(1), CHAIN.into());
    let verifier = KeyVerifier::new(CHAIN.into());
    let public = key(1).public_key();
    let proposal = Proposal {
        height: Height(4),
        round: Round::new(0),
        value: BlockId(Hash([3; 32])),
        pol_round: Round::Nil,
        proposer: ValidatorAddress(public.address()),
    };
    let signed = signer.sign_proposal(proposal.clone()).await.unwrap();
    let valid = verifier
        .verify_signed_proposal(&proposal, &signed.signature, &public)
        .await
        .unwrap();
    assert!(valid.is_valid());
    let mut changed = proposal.clone();
    changed.value = BlockId(Hash([4; 32]));
    let r = verifier
        .verify_signed_proposal(&changed, &signed.signature, &public)
        .await
        .unwrap();
    assert!(r.is_invalid());
    let mut changed = proposal.clone();
    changed.pol_round = Round::new(0);
    let r = verifier
        .verify_signed_proposal(&changed, &signed.signature, &public)
        .await
        .unwrap();
    assert!(r.is_invalid());
    // A vote's signature never passes for a proposal (domain separation), and back.
    let vote = prevote(ValidatorAddress(public.address()));
    let vote_signature = signer.sign_vote(vote.clone()).await.unwrap().signature;
    let r = verifier
        .verify_signed_proposal(&proposal, &vote_signature, &public)
        .await
        .unwrap();
    assert!(r.is_invalid());
    let r = verifier
        .verify_signed_vote(&vote, &signed.signature, &public)
        .await
        .unwrap();
    assert!(r.is_invalid());

    // Part streams: signed for (height, round, block id) only.
    let id = BlockId(Hash([3; 32]));
    let parts = signer.sign_parts(Height(4), Round::new(0), &id);
    assert!(verifier.verify_parts(&public, Height(4), Round::new(0), &id, &parts));
    assert!(!verifier.verify_parts(&public, Height(4), Round::new(1), &id, &parts));
    assert!(!verifier.verify_parts(&key(2).public_key(), Height(4), Round::new(0), &id, &parts));

    // Validator proofs bind the consensus key to the libp2p peer id.
    let proof = signer
        .sign_validator_proof(public.0.to_vec(), b"peer-a".to_vec())
        .await
        .unwrap();
    assert!(verifier
        .verify_validator_proof(&proof)
        .await
        .unwrap()
        .is_valid());
    let moved = ValidatorProof::<PiazzaContext>::new(
        proof.public_key.clone(),
        b"peer-b".to_vec(),
        proof.signature,
    );
    assert!(verifier
        .verify_validator_proof(&moved)
        .await
        .unwrap()
        .is_invalid());
    let short_key =
        ValidatorProof::<PiazzaContext>::new(vec![1; 31], proof.peer_id.clone(), proof.signature);
    assert!(verifier
        .verify_validator_proof(&short_key)
        .await
        .unwrap()
        .is_invalid());

    // Vote extensions (unused while the policy is disabled) are signed and checked the same way.
    let scope = |h| VoteExtensionScope::new(Height(h), Round::new(0), id, proposal.proposer);
    let ext = signer.sign_vote_extension(scope(4), ()).await.unwrap();
    for (h, valid) in [(4, true), (5, false)] {
        let r = verifier
            .verify_signed_vote_extension(&scope(h), &(), &ext.signature, &public)
            .await
            .unwrap();
        assert_eq!(r.is_valid(), valid);
    }
}

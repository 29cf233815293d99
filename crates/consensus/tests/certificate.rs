//! A commit certificate proves its block final only with precommits for that block from
//! distinct members of the height's set holding more than two thirds of its power: each case
//! below departs from a valid certificate in one way and must be refused with its own error.

use piazza_consensus::certificate::{
    is_quorum, verify_commit, vote_signing_bytes, CertificateError, CommitCertificate,
    CommitSignature, Member, VoteFields, VoteKind,
};
use piazza_primitives::{Address, Hash, SecretKey};

const CHAIN: &str = "piazza-certificate-test";
const HEIGHT: u64 = 12;
const ROUND: u32 = 1;

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i + 1; 32])
}

fn block() -> Hash {
    Hash([0x42; 32])
}

/// Four validators with powers 10, 20, 30, 40 (total 100).
fn set() -> Vec<Member> {
    (0..4)
        .map(|i| Member {
            public_key: key(i).public_key(),
            voting_power: 10 * (u64::from(i) + 1),
        })
        .collect()
}

fn precommit(signer: &SecretKey, height: u64, round: u32, block: Hash) -> CommitSignature {
    let vote = VoteFields {
        kind: VoteKind::Precommit,
        height,
        round: Some(round),
        block: Some(block),
        validator: signer.public_key().address(),
    };
    CommitSignature {
        validator: vote.validator,
        signature: signer.sign(&vote_signing_bytes(CHAIN, &vote)),
    }
}

/// A certificate signed by validators `signers` (indices into [`set`]).
fn certificate(signers: &[u8]) -> CommitCertificate {
    CommitCertificate {
        height: HEIGHT,
        round: ROUND,
        block: block(),
        signatures: signers
            .iter()
            .map(|i| precommit(&key(*i), HEIGHT, ROUND, block()))
            .collect(),
    }
}

/// Checks `cert` as the certificate of [`block`] at [`HEIGHT`] against [`set`].
fn check(cert: &CommitCertificate) -> Result<(u64, u64), CertificateError> {
    verify_commit(CHAIN, cert, HEIGHT, &block(), &set()).map(|p| (p.signed, p.total))
}

#[test]
fn more_than_two_thirds_of_the_power_passes() {
    // 20 + 30 + 40 = 90 of 100.
    assert_eq!(check(&certificate(&[1, 2, 3])), Ok((90, 100)));
    // 10 + 20 + 40 = 70 of 100: just above two thirds.
    assert_eq!(check(&certificate(&[0, 1, 3])), Ok((70, 100)));
    assert_eq!(check(&certificate(&[0, 1, 2, 3])), Ok((100, 100)));
}

#[test]
fn too_little_power_is_refused() {
    // 10 + 20 + 30 = 60 of 100.
    let error = check(&certificate(&[0, 1, 2])).unwrap_err();
    assert_eq!(
        error,
        CertificateError::TooLittlePower {
            signed: 60,
            total: 100
        }
    );
    assert!(error.to_string().contains("60 of 100"), "{error}");
    assert_eq!(
        check(&certificate(&[])),
        Err(CertificateError::TooLittlePower {
            signed: 0,
            total: 100
        })
    );
    // Exactly two thirds is not a quorum.
    assert!(!is_quorum(2, 3) && is_quorum(3, 4) && !is_quorum(0, 0));
}

#[test]
fn a_forged_signature_is_refused() {
    let mut cert = certificate(&[1, 2, 3]);
    // Validator 3's slot signed by another key.
    cert.signatures[2].signature = precommit(&key(9), HEIGHT, ROUND, block()).signature;
    let signer = key(3).public_key().address();
    assert_eq!(check(&cert), Err(CertificateError::BadSignature(signer)));

    // A real signature of validator 3, but over another round, height, block or chain.
    for other in [
        precommit(&key(3), HEIGHT, ROUND + 1, block()),
        precommit(&key(3), HEIGHT + 1, ROUND, block()),
        precommit(&key(3), HEIGHT, ROUND, Hash([1; 32])),
    ] {
        let mut cert = certificate(&[1, 2, 3]);
        cert.signatures[2] = other;
        assert_eq!(check(&cert), Err(CertificateError::BadSignature(signer)));
    }
    let cert = certificate(&[1, 2, 3]);
    assert_eq!(
        verify_commit("another-chain", &cert, HEIGHT, &block(), &set()),
        Err(CertificateError::BadSignature(
            key(1).public_key().address()
        ))
    );

    // A prevote is not a precommit.
    let vote = VoteFields {
        kind: VoteKind::Prevote,
        height: HEIGHT,
        round: Some(ROUND),
        block: Some(block()),
        validator: signer,
    };
    let mut cert = certificate(&[1, 2, 3]);
    cert.signatures[2].signature = key(3).sign(&vote_signing_bytes(CHAIN, &vote));
    assert_eq!(check(&cert), Err(CertificateError::BadSignature(signer)));
}

#[test]
fn a_signer_outside_the_set_is_refused() {
    let mut cert = certificate(&[1, 2, 3]);
    let outsider = key(7);
    cert.signatures
        .push(precommit(&outsider, HEIGHT, ROUND, block()));
    let error = check(&cert).unwrap_err();
    assert_eq!(
        error,
        CertificateError::NotAValidator(outsider.public_key().address())
    );
    assert!(error
        .to_string()
        .contains("not in the height's validator set"));
    // An address that no key of the set has, with any bytes as its signature.
    let mut cert = certificate(&[1, 2, 3]);
    cert.signatures[0].validator = Address([3; 20]);
    assert_eq!(
        check(&cert),
        Err(CertificateError::NotAValidator(Address([3; 20])))
    );
}

#[test]
fn a_signer_counted_twice_is_refused() {
    // 40 + 40 would pass two thirds of 100 with a validator holding 40 only once.
    let mut cert = certificate(&[3, 3]);
    cert.signatures
        .push(precommit(&key(0), HEIGHT, ROUND, block()));
    assert_eq!(
        check(&cert),
        Err(CertificateError::DuplicateSigner(
            key(3).public_key().address()
        ))
    );
}

#[test]
fn the_wrong_block_or_height_is_refused() {
    let cert = certificate(&[1, 2, 3]);
    let other = Hash([9; 32]);
    let error = verify_commit(CHAIN, &cert, HEIGHT, &other, &set()).unwrap_err();
    assert_eq!(
        error,
        CertificateError::WrongBlock {
            expected: other,
            got: block()
        }
    );
    assert!(error.to_string().contains("state root"), "{error}");
    assert_eq!(
        verify_commit(CHAIN, &cert, HEIGHT + 1, &block(), &set()),
        Err(CertificateError::WrongHeight {
            expected: HEIGHT + 1,
            got: HEIGHT
        })
    );
}

#[test]
fn a_bad_validator_set_is_refused() {
    let cert = certificate(&[1, 2, 3]);
    assert_eq!(
        verify_commit(CHAIN, &cert, HEIGHT, &block(), &[]),
        Err(CertificateError::BadValidatorSet)
    );
    let mut twice = set();
    twice.push(twice[0]);
    assert_eq!(
        verify_commit(CHAIN, &cert, HEIGHT, &block(), &twice),
        Err(CertificateError::BadValidatorSet)
    );
    let overflowing: Vec<Member> = set()
        .into_iter()
        .map(|m| Member {
            voting_power: u64::MAX / 2,
            ..m
        })
        .collect();
    assert_eq!(
        verify_commit(CHAIN, &cert, HEIGHT, &block(), &overflowing),
        Err(CertificateError::BadValidatorSet)
    );
}

/// The vote bytes on chain "c" for validator `[0xbb; 20]` at height 7, written out by hand:
/// `domain ‖ chain ‖ kind ‖ height ‖ round tag (‖ round) ‖ block tag (‖ block) ‖ validator`.
fn pinned(kind: u8, round: Option<u32>, block: Option<[u8; 32]>) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&15u32.to_le_bytes());
    bytes.extend_from_slice(b"piazza/bft/vote");
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(b"c");
    bytes.push(kind);
    bytes.extend_from_slice(&7u64.to_le_bytes());
    match round {
        None => bytes.push(0),
        Some(r) => {
            bytes.push(1);
            bytes.extend_from_slice(&r.to_le_bytes());
        }
    }
    match block {
        None => bytes.push(0),
        Some(b) => {
            bytes.push(1);
            bytes.extend_from_slice(&b);
        }
    }
    bytes.extend_from_slice(&[0xbb; 20]);
    bytes
}

#[test]
fn the_vote_bytes_are_pinned() {
    // The bytes validators sign: a change here is a consensus change (every signature on every
    // existing chain stops verifying).
    let vote = VoteFields {
        kind: VoteKind::Precommit,
        height: 7,
        round: Some(2),
        block: Some(Hash([0xaa; 32])),
        validator: Address([0xbb; 20]),
    };
    assert_eq!(
        vote_signing_bytes("c", &vote),
        pinned(1, Some(2), Some([0xaa; 32]))
    );
    let nil = VoteFields {
        kind: VoteKind::Prevote,
        round: None,
        block: None,
        ..vote
    };
    assert_eq!(vote_signing_bytes("c", &nil), pinned(0, None, None));
}

//! Piazza's codec for Malachite's messages: every message type round-trips canonically, every
//! bound is enforced, and hostile bytes (truncated, extended, mutated, random) are refused
//! without a panic.

use bytes::Bytes;
use malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::codec::{Codec, HasEncodedLen};
use malachitebft_app_channel::app::types::core::{
    CommitCertificate, NilOrVal, PolkaCertificate, PolkaSignature, Round, RoundCertificate,
    RoundCertificateType, RoundSignature, SignedMessage, ValidatorProof, Validity, VoteType,
};
use malachitebft_app_channel::app::types::sync::{RawDecidedValue, Request, Response, Status};
use malachitebft_app_channel::app::types::{Keypair, PeerId};
use piazza_bft::codec::{extend_certificate, PART_DATA_BYTES_MAX, SYNC_VALUES_MAX};
use piazza_bft::context::{
    BlockId, Height, PiazzaContext, Proposal, ProposalFin, ProposalInit, ProposalPart,
    ValidatorAddress, Vote, VALIDATORS_MAX,
};
use piazza_bft::signing::BftSignature;
use piazza_bft::PiazzaCodec;
use piazza_primitives::{Address, Hash, Signature};
use proptest::prelude::*;
use std::fmt::Debug;

/// Round trip, canonical re-encoding, every truncation and an extra byte refused, and every
/// single-byte mutation of the first bytes decoded without a panic.
fn check<T: Debug>(value: &T)
where
    PiazzaCodec: Codec<T>,
{
    let codec = PiazzaCodec;
    let bytes = codec.encode(value).unwrap();
    let back: T = codec.decode(bytes.clone()).unwrap();
    assert_eq!(format!("{back:?}"), format!("{value:?}"));
    assert_eq!(codec.encode(&back).unwrap(), bytes, "not canonical");
    for cut in 0..bytes.len() {
        let r: Result<T, _> = codec.decode(bytes.slice(..cut));
        assert!(r.is_err(), "a {cut}-byte prefix decoded");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(Codec::<T>::decode(&codec, Bytes::from(longer)).is_err());
    for i in 0..bytes.len().min(256) {
        for v in [0x00, 0x01, 0x7f, 0xff] {
            let mut mutated = bytes.to_vec();
            mutated[i] = v;
            let _ = Codec::<T>::decode(&codec, Bytes::from(mutated));
        }
    }
}

fn address(i: u8) -> ValidatorAddress {
    ValidatorAddress(Address([i; 20]))
}

fn id(i: u8) -> BlockId {
    BlockId(Hash([i; 32]))
}

fn sig(i: u8) -> BftSignature {
    BftSignature(Signature([i; 64]))
}

fn vote(vote_type: VoteType, value: NilOrVal<BlockId>, extended: bool) -> Vote {
    Vote {
        vote_type,
        height: Height(7),
        round: Round::new(2),
        value,
        validator: address(3),
        extension: extended.then(|| SignedMessage::new((), sig(9))),
    }
}

fn peer(i: u8) -> PeerId {
    let key = Keypair::ed25519_from_bytes([i; 32]).unwrap();
    PeerId::from_bytes(&key.public().to_peer_id().to_bytes()).unwrap()
}

fn proposal() -> Proposal {
    Proposal {
        height: Height(u64::MAX),
        round: Round::new(u32::MAX),
        value: id(1),
        pol_round: Round::Nil,
        proposer: address(2),
    }
}

fn commit(signatures: usize) -> CommitCertificate<PiazzaContext> {
    let votes = (0..signatures)
        .map(|i| {
            let mut v = vote(VoteType::Precommit, NilOrVal::Val(id(4)), false);
            v.validator = address(i as u8);
            SignedMessage::new(v, sig(i as u8))
        })
        .collect();
    CommitCertificate::new(Height(5), Round::new(0), id(4), votes)
}

#[test]
fn consensus_messages_round_trip() {
    for v in [
        vote(VoteType::Prevote, NilOrVal::Nil, false),
        vote(VoteType::Precommit, NilOrVal::Val(id(5)), false),
        vote(VoteType::Precommit, NilOrVal::Val(id(5)), true),
    ] {
        check(&SignedConsensusMsg::<PiazzaContext>::Vote(
            SignedMessage::new(v.clone(), sig(1)),
        ));
        check(&LivenessMsg::<PiazzaContext>::Vote(SignedMessage::new(
            v,
            sig(2),
        )));
    }
    check(&SignedConsensusMsg::<PiazzaContext>::Proposal(
        SignedMessage::new(proposal(), sig(3)),
    ));
    check(&LivenessMsg::<PiazzaContext>::PolkaCertificate(
        PolkaCertificate {
            height: Height(1),
            round: Round::new(1),
            value_id: id(2),
            polka_signatures: vec![
                PolkaSignature::new(address(1), sig(1)),
                PolkaSignature::new(address(2), sig(2)),
            ],
        },
    ));
    check(&LivenessMsg::<PiazzaContext>::SkipRoundCertificate(
        RoundCertificate {
            height: Height(1),
            round: Round::new(3),
            cert_type: RoundCertificateType::Skip,
            round_signatures: vec![
                RoundSignature::new(VoteType::Prevote, NilOrVal::Nil, address(1), sig(1)),
                RoundSignature::new(
                    VoteType::Precommit,
                    NilOrVal::Val(id(1)),
                    address(2),
                    sig(2),
                ),
            ],
        },
    ));
}

#[test]
fn parts_streams_proofs_and_wal_values_round_trip() {
    let parts = [
        ProposalPart::Init(ProposalInit {
            height: Height(3),
            round: Round::new(0),
            pol_round: Round::new(1),
            proposer: address(1),
        }),
        ProposalPart::Data(vec![7; 1000]),
        ProposalPart::Data(Vec::new()),
        ProposalPart::Fin(ProposalFin {
            signature: Signature([5; 64]),
        }),
        ProposalPart::Transactions(vec![vec![1, 2, 3], Vec::new(), vec![9; 300]]),
        ProposalPart::Transactions(Vec::new()),
    ];
    for part in &parts {
        check(part);
        check(&StreamMessage::new(
            StreamId::new(Bytes::from_static(b"stream")),
            3,
            StreamContent::Data(part.clone()),
        ));
    }
    check(&StreamMessage::<ProposalPart>::new(
        StreamId::new(Bytes::new()),
        u64::MAX,
        StreamContent::Fin,
    ));
    check(&ValidatorProof::<PiazzaContext>::new(
        vec![1; 32],
        peer(1).to_bytes(),
        sig(4),
    ));
    for validity in [Validity::Valid, Validity::Invalid] {
        check(&ProposedValue::<PiazzaContext> {
            height: Height(9),
            round: Round::new(1),
            valid_round: Round::Nil,
            proposer: address(5),
            value: id(6),
            validity,
        });
    }
}

#[test]
fn sync_messages_round_trip() {
    let codec = PiazzaCodec;
    check(&Status::<PiazzaContext> {
        peer_id: peer(2),
        tip_height: Height(100),
        history_min_height: Height(1),
    });
    check(&Request::<PiazzaContext>::ValueRequest(
        malachitebft_sync::ValueRequest::new(Height(3)..=Height(9)),
    ));
    let response = Response::<PiazzaContext>::ValueResponse(malachitebft_sync::ValueResponse::new(
        Height(3),
        vec![
            RawDecidedValue::new(
                Bytes::from_static(b"block three"),
                extend_certificate(commit(3)),
            ),
            RawDecidedValue::new(Bytes::new(), extend_certificate(commit(0))),
        ],
    ));
    check(&response);
    assert_eq!(
        codec.encoded_len(&response).unwrap(),
        codec.encode(&response).unwrap().len()
    );
}

#[test]
fn bounds_are_enforced_before_allocation() {
    let codec = PiazzaCodec;
    // A Data part one byte over the bound.
    let big = codec
        .encode(&ProposalPart::Data(vec![0; PART_DATA_BYTES_MAX + 1]))
        .unwrap();
    assert!(Codec::<ProposalPart>::decode(&codec, big).is_err());
    let at_bound = codec
        .encode(&ProposalPart::Data(vec![0; PART_DATA_BYTES_MAX]))
        .unwrap();
    assert!(Codec::<ProposalPart>::decode(&codec, at_bound).is_ok());
    // A length prefix claiming 4 GiB with nothing behind it.
    let hostile = Bytes::from(vec![1, 0xff, 0xff, 0xff, 0xff]);
    assert!(Codec::<ProposalPart>::decode(&codec, hostile).is_err());
    // A gossiped batch one transaction over its count, and one transaction over its size.
    let many = codec
        .encode(&ProposalPart::Transactions(vec![
            Vec::new();
            piazza_bft::codec::GOSSIP_TXS_MAX
                + 1
        ]))
        .unwrap();
    assert!(Codec::<ProposalPart>::decode(&codec, many).is_err());
    let at_count = codec
        .encode(&ProposalPart::Transactions(vec![
            Vec::new();
            piazza_bft::codec::GOSSIP_TXS_MAX
        ]))
        .unwrap();
    assert!(Codec::<ProposalPart>::decode(&codec, at_count).is_ok());
    let large = codec
        .encode(&ProposalPart::Transactions(vec![vec![
            0;
            piazza_bft::codec::GOSSIP_TX_BYTES_MAX
                + 1
        ]]))
        .unwrap();
    assert!(Codec::<ProposalPart>::decode(&codec, large).is_err());
    // A certificate with one signature more than a validator set can hold.
    let polka = PolkaCertificate::<PiazzaContext> {
        height: Height(1),
        round: Round::new(0),
        value_id: id(1),
        polka_signatures: (0..=VALIDATORS_MAX)
            .map(|i| PolkaSignature::new(address(i as u8), sig(0)))
            .collect(),
    };
    let bytes = codec.encode(&LivenessMsg::PolkaCertificate(polka)).unwrap();
    assert!(Codec::<LivenessMsg<PiazzaContext>>::decode(&codec, bytes).is_err());
    // A sync response with one value more than the bound.
    let response = Response::<PiazzaContext>::ValueResponse(malachitebft_sync::ValueResponse::new(
        Height(1),
        (0..=SYNC_VALUES_MAX)
            .map(|_| RawDecidedValue::new(Bytes::new(), extend_certificate(commit(0))))
            .collect(),
    ));
    let bytes = codec.encode(&response).unwrap();
    assert!(Codec::<Response<PiazzaContext>>::decode(&codec, bytes).is_err());
}

fn decode_all(bytes: Vec<u8>) {
    let codec = PiazzaCodec;
    let b = Bytes::from(bytes);
    let _ = Codec::<ProposalPart>::decode(&codec, b.clone());
    let _ = Codec::<SignedConsensusMsg<PiazzaContext>>::decode(&codec, b.clone());
    let _ = Codec::<LivenessMsg<PiazzaContext>>::decode(&codec, b.clone());
    let _ = Codec::<StreamMessage<ProposalPart>>::decode(&codec, b.clone());
    let _ = Codec::<ValidatorProof<PiazzaContext>>::decode(&codec, b.clone());
    let _ = Codec::<Status<PiazzaContext>>::decode(&codec, b.clone());
    let _ = Codec::<Request<PiazzaContext>>::decode(&codec, b.clone());
    let _ = Codec::<Response<PiazzaContext>>::decode(&codec, b.clone());
    let _ = Codec::<ProposedValue<PiazzaContext>>::decode(&codec, b.clone());
    let _ = Codec::<PolkaCertificate<PiazzaContext>>::decode(&codec, b);
}

proptest! {
    /// Random bytes, and random bytes behind each valid tag, never panic a decoder.
    #[test]
    fn hostile_bytes_never_panic(tag in 0u8..4, bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(bytes.clone());
        let mut tagged = vec![tag];
        tagged.extend(bytes);
        decode_all(tagged);
    }
}

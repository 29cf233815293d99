//! Piazza's canonical encoding (`piazza_codec`) for every message Malachite asks the application
//! to encode: consensus messages, liveness messages, proposal-part streams, validator proofs,
//! sync messages, and the WAL's proposed values and certificates.
//!
//! Every variable-length field is read under a named bound; hostile bytes yield a
//! [`DecodeError`], never a panic, and what decodes re-encodes to the same bytes.

use crate::context::{
    BlockId, Height, PiazzaContext, Proposal, ProposalFin, ProposalInit, ProposalPart,
    ValidatorAddress, Vote, VALIDATORS_MAX,
};
use crate::signing::BftSignature;
use bytes::Bytes;
use malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::codec::{Codec, HasEncodedLen};
use malachitebft_app_channel::app::types::core::{
    CommitCertificate, CommitSignature, ExtendedCommitCertificate, ExtendedCommitSignature,
    NilOrVal, PolkaCertificate, PolkaSignature, Round, RoundCertificate, RoundCertificateType,
    RoundSignature, SignedMessage, ValidatorProof, Validity, VoteType,
};
use malachitebft_app_channel::app::types::sync::{RawDecidedValue, Request, Response, Status};
use malachitebft_app_channel::app::types::PeerId;
use malachitebft_sync as msync;
use piazza_codec::{DecodeError, Reader, Writer};
use piazza_ledger::block::BLOCK_BYTES_MAX;
use piazza_primitives::{Address, Hash, Signature};

/// The most block bytes one `Data` part carries.
pub const PART_DATA_BYTES_MAX: usize = 512 * 1024;
/// The most parts one block stream holds: the data of the largest block plus `Init` and `Fin`.
pub const PARTS_PER_STREAM_MAX: usize = BLOCK_BYTES_MAX.div_ceil(PART_DATA_BYTES_MAX) + 2;
/// The most bytes of a stream id (Piazza's are 12: height and round).
pub const STREAM_ID_BYTES_MAX: usize = 64;
/// The most bytes of a libp2p peer id (a multihash of an ed25519 key is 38).
pub const PEER_ID_BYTES_MAX: usize = 64;
/// The most bytes of a public key in a validator proof (ed25519: 32).
pub const PROOF_KEY_BYTES_MAX: usize = 32;
/// The most transactions in one gossiped batch.
pub const GOSSIP_TXS_MAX: usize = 1024;
/// The most bytes of one gossiped transaction (larger ones, arbitration evidence, stay in the
/// mempool of the node they were sent to); far below Malachite's 4 MiB pub-sub bound.
pub const GOSSIP_TX_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Transactions are added to a gossiped batch while it holds less than this many bytes.
pub const GOSSIP_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// The most decided values in one sync response.
pub const SYNC_VALUES_MAX: usize = 64;
/// The most bytes of one synced value: an encoded block.
pub const SYNC_VALUE_BYTES_MAX: usize = BLOCK_BYTES_MAX;

/// Piazza's codec for the network, the WAL and sync.
#[derive(Clone, Copy, Debug, Default)]
pub struct PiazzaCodec;

// ---- Scalars -------------------------------------------------------------------------------

pub fn put_height(w: &mut Writer, height: Height) {
    w.u64(height.0);
}

pub fn get_height(r: &mut Reader<'_>) -> Result<Height, DecodeError> {
    Ok(Height(r.u64()?))
}

/// Tag 0 for nil, tag 1 and a `u32` for a round.
pub fn put_round(w: &mut Writer, round: Round) {
    match round.as_u32() {
        None => w.u8(0),
        Some(r) => {
            w.u8(1);
            w.u32(r);
        }
    }
}

pub fn get_round(r: &mut Reader<'_>) -> Result<Round, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        0 => Ok(Round::Nil),
        1 => Ok(Round::new(r.u32()?)),
        tag => Err(invalid_tag(offset, tag, "round")),
    }
}

pub fn put_block_id(w: &mut Writer, id: &BlockId) {
    w.array(&id.0 .0);
}

pub fn get_block_id(r: &mut Reader<'_>) -> Result<BlockId, DecodeError> {
    Ok(BlockId(Hash(r.array()?)))
}

fn put_address(w: &mut Writer, address: &ValidatorAddress) {
    w.array(&address.0 .0);
}

fn get_address(r: &mut Reader<'_>) -> Result<ValidatorAddress, DecodeError> {
    Ok(ValidatorAddress(Address(r.array()?)))
}

fn put_signature(w: &mut Writer, signature: &BftSignature) {
    w.array(&signature.0 .0);
}

fn get_signature(r: &mut Reader<'_>) -> Result<BftSignature, DecodeError> {
    Ok(BftSignature(Signature(r.array()?)))
}

pub fn put_vote_type(w: &mut Writer, vote_type: VoteType) {
    w.u8(match vote_type {
        VoteType::Prevote => 0,
        VoteType::Precommit => 1,
    });
}

fn get_vote_type(r: &mut Reader<'_>) -> Result<VoteType, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        0 => Ok(VoteType::Prevote),
        1 => Ok(VoteType::Precommit),
        tag => Err(invalid_tag(offset, tag, "vote type")),
    }
}

pub fn put_nil_or_val(w: &mut Writer, value: &NilOrVal<BlockId>) {
    match value {
        NilOrVal::Nil => w.u8(0),
        NilOrVal::Val(id) => {
            w.u8(1);
            put_block_id(w, id);
        }
    }
}

fn get_nil_or_val(r: &mut Reader<'_>) -> Result<NilOrVal<BlockId>, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        0 => Ok(NilOrVal::Nil),
        1 => Ok(NilOrVal::Val(get_block_id(r)?)),
        tag => Err(invalid_tag(offset, tag, "nil or value")),
    }
}

fn invalid_tag(offset: usize, tag: u8, what: &'static str) -> DecodeError {
    DecodeError::InvalidTag { offset, tag, what }
}

/// A sequence of at most `limit` elements, each read by `item`; reserves no more than the
/// remaining input could hold.
fn get_seq<T>(
    r: &mut Reader<'_>,
    limit: usize,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let n = r.len(limit)?;
    let mut out = Vec::with_capacity(n.min(r.remaining()));
    for _ in 0..n {
        out.push(item(r)?);
    }
    Ok(out)
}

fn put_seq<T>(w: &mut Writer, items: &[T], mut item: impl FnMut(&mut Writer, &T)) {
    w.len(items.len());
    for x in items {
        item(w, x);
    }
}

// ---- Votes, proposals, parts ---------------------------------------------------------------

fn put_vote(w: &mut Writer, vote: &Vote) {
    put_vote_type(w, vote.vote_type);
    put_height(w, vote.height);
    put_round(w, vote.round);
    put_nil_or_val(w, &vote.value);
    put_address(w, &vote.validator);
    match &vote.extension {
        None => w.u8(0),
        Some(extension) => {
            w.u8(1);
            put_signature(w, &extension.signature);
        }
    }
}

fn get_vote(r: &mut Reader<'_>) -> Result<Vote, DecodeError> {
    let vote_type = get_vote_type(r)?;
    let height = get_height(r)?;
    let round = get_round(r)?;
    let value = get_nil_or_val(r)?;
    let validator = get_address(r)?;
    let offset = r.offset();
    let extension = match r.u8()? {
        0 => None,
        1 => Some(SignedMessage::new((), get_signature(r)?)),
        tag => return Err(invalid_tag(offset, tag, "vote extension")),
    };
    Ok(Vote {
        vote_type,
        height,
        round,
        value,
        validator,
        extension,
    })
}

fn put_proposal(w: &mut Writer, proposal: &Proposal) {
    put_height(w, proposal.height);
    put_round(w, proposal.round);
    put_block_id(w, &proposal.value);
    put_round(w, proposal.pol_round);
    put_address(w, &proposal.proposer);
}

fn get_proposal(r: &mut Reader<'_>) -> Result<Proposal, DecodeError> {
    Ok(Proposal {
        height: get_height(r)?,
        round: get_round(r)?,
        value: get_block_id(r)?,
        pol_round: get_round(r)?,
        proposer: get_address(r)?,
    })
}

fn put_signed_vote(w: &mut Writer, signed: &SignedMessage<PiazzaContext, Vote>) {
    put_vote(w, &signed.message);
    put_signature(w, &signed.signature);
}

fn get_signed_vote(r: &mut Reader<'_>) -> Result<SignedMessage<PiazzaContext, Vote>, DecodeError> {
    let vote = get_vote(r)?;
    Ok(SignedMessage::new(vote, get_signature(r)?))
}

pub fn put_part(w: &mut Writer, part: &ProposalPart) {
    match part {
        ProposalPart::Init(init) => {
            w.u8(0);
            put_height(w, init.height);
            put_round(w, init.round);
            put_round(w, init.pol_round);
            put_address(w, &init.proposer);
        }
        ProposalPart::Data(data) => {
            w.u8(1);
            w.bytes(data);
        }
        ProposalPart::Fin(fin) => {
            w.u8(2);
            w.array(&fin.signature.0);
        }
        ProposalPart::Transactions(txs) => {
            w.u8(3);
            w.len(txs.len());
            for tx in txs {
                w.bytes(tx);
            }
        }
    }
}

pub fn get_part(r: &mut Reader<'_>) -> Result<ProposalPart, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        0 => Ok(ProposalPart::Init(ProposalInit {
            height: get_height(r)?,
            round: get_round(r)?,
            pol_round: get_round(r)?,
            proposer: get_address(r)?,
        })),
        1 => Ok(ProposalPart::Data(r.bytes(PART_DATA_BYTES_MAX)?)),
        2 => Ok(ProposalPart::Fin(ProposalFin {
            signature: Signature(r.array()?),
        })),
        3 => {
            let count = r.len(GOSSIP_TXS_MAX)?;
            let mut txs = Vec::with_capacity(count.min(16));
            for _ in 0..count {
                txs.push(r.bytes(GOSSIP_TX_BYTES_MAX)?);
            }
            Ok(ProposalPart::Transactions(txs))
        }
        tag => Err(invalid_tag(offset, tag, "proposal part")),
    }
}

fn put_stream_message(w: &mut Writer, msg: &StreamMessage<ProposalPart>) {
    w.bytes(&msg.stream_id.to_bytes());
    w.u64(msg.sequence);
    match &msg.content {
        StreamContent::Data(part) => {
            w.u8(0);
            put_part(w, part);
        }
        StreamContent::Fin => w.u8(1),
    }
}

fn get_stream_message(r: &mut Reader<'_>) -> Result<StreamMessage<ProposalPart>, DecodeError> {
    let stream_id = StreamId::new(Bytes::from(r.bytes(STREAM_ID_BYTES_MAX)?));
    let sequence = r.u64()?;
    let offset = r.offset();
    let content = match r.u8()? {
        0 => StreamContent::Data(get_part(r)?),
        1 => StreamContent::Fin,
        tag => return Err(invalid_tag(offset, tag, "stream content")),
    };
    Ok(StreamMessage::new(stream_id, sequence, content))
}

fn put_consensus_msg(w: &mut Writer, msg: &SignedConsensusMsg<PiazzaContext>) {
    match msg {
        SignedConsensusMsg::Vote(vote) => {
            w.u8(0);
            put_signed_vote(w, vote);
        }
        SignedConsensusMsg::Proposal(proposal) => {
            w.u8(1);
            put_proposal(w, &proposal.message);
            put_signature(w, &proposal.signature);
        }
    }
}

fn get_consensus_msg(r: &mut Reader<'_>) -> Result<SignedConsensusMsg<PiazzaContext>, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        0 => Ok(SignedConsensusMsg::Vote(get_signed_vote(r)?)),
        1 => {
            let proposal = get_proposal(r)?;
            Ok(SignedConsensusMsg::Proposal(SignedMessage::new(
                proposal,
                get_signature(r)?,
            )))
        }
        tag => Err(invalid_tag(offset, tag, "consensus message")),
    }
}

// ---- Certificates --------------------------------------------------------------------------

/// (height, round, block id, [(address, signature)]): the shape of polka and commit certificates.
type SignedIdCertificate = (
    Height,
    Round,
    BlockId,
    Vec<(ValidatorAddress, BftSignature)>,
);

fn put_signed_id_certificate<'a>(
    w: &mut Writer,
    (height, round, id): (Height, Round, &BlockId),
    signatures: impl ExactSizeIterator<Item = (&'a ValidatorAddress, &'a BftSignature)>,
) {
    put_height(w, height);
    put_round(w, round);
    put_block_id(w, id);
    w.len(signatures.len());
    for (address, signature) in signatures {
        put_address(w, address);
        put_signature(w, signature);
    }
}

fn get_signed_id_certificate(r: &mut Reader<'_>) -> Result<SignedIdCertificate, DecodeError> {
    let height = get_height(r)?;
    let round = get_round(r)?;
    let id = get_block_id(r)?;
    let signatures = get_seq(r, VALIDATORS_MAX, |r| {
        Ok((get_address(r)?, get_signature(r)?))
    })?;
    Ok((height, round, id, signatures))
}

fn put_polka(w: &mut Writer, cert: &PolkaCertificate<PiazzaContext>) {
    put_signed_id_certificate(
        w,
        (cert.height, cert.round, &cert.value_id),
        cert.polka_signatures
            .iter()
            .map(|s| (&s.address, &s.signature)),
    );
}

fn get_polka(r: &mut Reader<'_>) -> Result<PolkaCertificate<PiazzaContext>, DecodeError> {
    let (height, round, value_id, signatures) = get_signed_id_certificate(r)?;
    Ok(PolkaCertificate {
        height,
        round,
        value_id,
        polka_signatures: signatures
            .into_iter()
            .map(|(a, s)| PolkaSignature::new(a, s))
            .collect(),
    })
}

fn put_round_certificate(w: &mut Writer, cert: &RoundCertificate<PiazzaContext>) {
    put_height(w, cert.height);
    put_round(w, cert.round);
    w.u8(match cert.cert_type {
        RoundCertificateType::Skip => 0,
        RoundCertificateType::Precommit => 1,
    });
    put_seq(w, &cert.round_signatures, |w, s| {
        put_vote_type(w, s.vote_type);
        put_nil_or_val(w, &s.value_id);
        put_address(w, &s.address);
        put_signature(w, &s.signature);
    });
}

fn get_round_certificate(
    r: &mut Reader<'_>,
) -> Result<RoundCertificate<PiazzaContext>, DecodeError> {
    let height = get_height(r)?;
    let round = get_round(r)?;
    let offset = r.offset();
    let cert_type = match r.u8()? {
        0 => RoundCertificateType::Skip,
        1 => RoundCertificateType::Precommit,
        tag => return Err(invalid_tag(offset, tag, "round certificate type")),
    };
    let round_signatures = get_seq(r, VALIDATORS_MAX * 2, |r| {
        Ok(RoundSignature::new(
            get_vote_type(r)?,
            get_nil_or_val(r)?,
            get_address(r)?,
            get_signature(r)?,
        ))
    })?;
    Ok(RoundCertificate {
        height,
        round,
        cert_type,
        round_signatures,
    })
}

fn put_liveness(w: &mut Writer, msg: &LivenessMsg<PiazzaContext>) {
    match msg {
        LivenessMsg::Vote(vote) => {
            w.u8(0);
            put_signed_vote(w, vote);
        }
        LivenessMsg::PolkaCertificate(cert) => {
            w.u8(1);
            put_polka(w, cert);
        }
        LivenessMsg::SkipRoundCertificate(cert) => {
            w.u8(2);
            put_round_certificate(w, cert);
        }
    }
}

fn get_liveness(r: &mut Reader<'_>) -> Result<LivenessMsg<PiazzaContext>, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        0 => Ok(LivenessMsg::Vote(get_signed_vote(r)?)),
        1 => Ok(LivenessMsg::PolkaCertificate(get_polka(r)?)),
        2 => Ok(LivenessMsg::SkipRoundCertificate(get_round_certificate(r)?)),
        tag => Err(invalid_tag(offset, tag, "liveness message")),
    }
}

/// A commit certificate, as stored beside a decided block.
pub fn put_commit_certificate(w: &mut Writer, cert: &CommitCertificate<PiazzaContext>) {
    put_signed_id_certificate(
        w,
        (cert.height, cert.round, &cert.value_id),
        cert.commit_signatures
            .iter()
            .map(|s| (&s.address, &s.signature)),
    );
}

pub fn get_commit_certificate(
    r: &mut Reader<'_>,
) -> Result<CommitCertificate<PiazzaContext>, DecodeError> {
    let (height, round, value_id, signatures) = get_signed_id_certificate(r)?;
    Ok(CommitCertificate {
        height,
        round,
        value_id,
        commit_signatures: signatures
            .into_iter()
            .map(|(a, s)| CommitSignature::new(a, s))
            .collect(),
    })
}

fn put_extended_certificate(w: &mut Writer, cert: &ExtendedCommitCertificate<PiazzaContext>) {
    put_height(w, cert.height);
    put_round(w, cert.round);
    put_block_id(w, &cert.value_id);
    put_seq(w, &cert.commit_signatures, |w, s| {
        put_address(w, &s.address);
        put_signature(w, &s.signature);
        match &s.extension {
            None => w.u8(0),
            Some(extension) => {
                w.u8(1);
                put_signature(w, &extension.signature);
            }
        }
    });
}

fn get_extended_certificate(
    r: &mut Reader<'_>,
) -> Result<ExtendedCommitCertificate<PiazzaContext>, DecodeError> {
    let height = get_height(r)?;
    let round = get_round(r)?;
    let value_id = get_block_id(r)?;
    let commit_signatures = get_seq(r, VALIDATORS_MAX, |r| {
        let address = get_address(r)?;
        let signature = get_signature(r)?;
        let offset = r.offset();
        let extension = match r.u8()? {
            0 => None,
            1 => Some(SignedMessage::new((), get_signature(r)?)),
            tag => return Err(invalid_tag(offset, tag, "vote extension")),
        };
        Ok(ExtendedCommitSignature::new(address, signature, extension))
    })?;
    Ok(ExtendedCommitCertificate {
        height,
        round,
        value_id,
        commit_signatures,
    })
}

/// The extended form of a commit certificate without extensions (what sync serves).
pub fn extend_certificate(
    cert: CommitCertificate<PiazzaContext>,
) -> ExtendedCommitCertificate<PiazzaContext> {
    ExtendedCommitCertificate {
        height: cert.height,
        round: cert.round,
        value_id: cert.value_id,
        commit_signatures: cert
            .commit_signatures
            .into_iter()
            .map(|s| ExtendedCommitSignature::new(s.address, s.signature, None))
            .collect(),
    }
}

// ---- Sync, proofs, WAL ---------------------------------------------------------------------

fn get_peer_id(r: &mut Reader<'_>) -> Result<PeerId, DecodeError> {
    let bytes = r.bytes(PEER_ID_BYTES_MAX)?;
    PeerId::from_bytes(&bytes).map_err(|e| DecodeError::Invalid {
        what: "peer id",
        reason: e.to_string(),
    })
}

fn put_validity(w: &mut Writer, validity: Validity) {
    w.bool(validity.is_valid());
}

fn get_validity(r: &mut Reader<'_>) -> Result<Validity, DecodeError> {
    Ok(Validity::from_bool(r.bool()?))
}

fn put_proposed_value(w: &mut Writer, value: &ProposedValue<PiazzaContext>) {
    put_height(w, value.height);
    put_round(w, value.round);
    put_round(w, value.valid_round);
    put_address(w, &value.proposer);
    put_block_id(w, &value.value);
    put_validity(w, value.validity);
}

fn get_proposed_value(r: &mut Reader<'_>) -> Result<ProposedValue<PiazzaContext>, DecodeError> {
    Ok(ProposedValue {
        height: get_height(r)?,
        round: get_round(r)?,
        valid_round: get_round(r)?,
        proposer: get_address(r)?,
        value: get_block_id(r)?,
        validity: get_validity(r)?,
    })
}

fn put_response(w: &mut Writer, response: &Response<PiazzaContext>) {
    match response {
        Response::ValueResponse(values) => {
            w.u8(0);
            put_height(w, values.start_height);
            put_seq(w, &values.values, |w, v| {
                w.bytes(&v.value_bytes);
                put_extended_certificate(w, &v.certificate);
            });
        }
    }
}

fn get_response(r: &mut Reader<'_>) -> Result<Response<PiazzaContext>, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        0 => {
            let start_height = get_height(r)?;
            let values = get_seq(r, SYNC_VALUES_MAX, |r| {
                let value_bytes = Bytes::from(r.bytes(SYNC_VALUE_BYTES_MAX)?);
                Ok(RawDecidedValue::new(
                    value_bytes,
                    get_extended_certificate(r)?,
                ))
            })?;
            Ok(Response::ValueResponse(msync::ValueResponse::new(
                start_height,
                values,
            )))
        }
        tag => Err(invalid_tag(offset, tag, "sync response")),
    }
}

// ---- Codec implementations -----------------------------------------------------------------

fn encoded(f: impl FnOnce(&mut Writer)) -> Result<Bytes, DecodeError> {
    let mut w = Writer::new();
    f(&mut w);
    Ok(Bytes::from(w.into_bytes()))
}

fn decoded<T>(
    bytes: &[u8],
    f: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let value = f(&mut r)?;
    r.finish()?;
    Ok(value)
}

macro_rules! piazza_codec_for {
    ($t:ty, $put:expr, $get:expr) => {
        impl Codec<$t> for PiazzaCodec {
            type Error = DecodeError;
            fn decode(&self, bytes: Bytes) -> Result<$t, DecodeError> {
                decoded(&bytes, $get)
            }
            fn encode(&self, msg: &$t) -> Result<Bytes, DecodeError> {
                encoded(|w| $put(w, msg))
            }
        }
    };
}

piazza_codec_for!(ProposalPart, put_part, get_part);
piazza_codec_for!(
    SignedConsensusMsg<PiazzaContext>,
    put_consensus_msg,
    get_consensus_msg
);
piazza_codec_for!(LivenessMsg<PiazzaContext>, put_liveness, get_liveness);
piazza_codec_for!(
    StreamMessage<ProposalPart>,
    put_stream_message,
    get_stream_message
);
piazza_codec_for!(PolkaCertificate<PiazzaContext>, put_polka, get_polka);
piazza_codec_for!(
    ProposedValue<PiazzaContext>,
    put_proposed_value,
    get_proposed_value
);
piazza_codec_for!(
    ValidatorProof<PiazzaContext>,
    |w: &mut Writer, p: &ValidatorProof<PiazzaContext>| {
        w.bytes(&p.public_key);
        w.bytes(&p.peer_id);
        put_signature(w, &p.signature);
    },
    |r: &mut Reader<'_>| {
        let public_key = r.bytes(PROOF_KEY_BYTES_MAX)?;
        let peer_id = r.bytes(PEER_ID_BYTES_MAX)?;
        Ok(ValidatorProof::new(public_key, peer_id, get_signature(r)?))
    }
);
piazza_codec_for!(
    Status<PiazzaContext>,
    |w: &mut Writer, s: &Status<PiazzaContext>| {
        w.bytes(&s.peer_id.to_bytes());
        put_height(w, s.tip_height);
        put_height(w, s.history_min_height);
    },
    |r: &mut Reader<'_>| {
        Ok(Status {
            peer_id: get_peer_id(r)?,
            tip_height: get_height(r)?,
            history_min_height: get_height(r)?,
        })
    }
);
piazza_codec_for!(
    Request<PiazzaContext>,
    |w: &mut Writer, req: &Request<PiazzaContext>| match req {
        Request::ValueRequest(v) => {
            w.u8(0);
            put_height(w, *v.range.start());
            put_height(w, *v.range.end());
        }
    },
    |r: &mut Reader<'_>| {
        let offset = r.offset();
        match r.u8()? {
            0 => {
                let start = get_height(r)?;
                let end = get_height(r)?;
                Ok(Request::ValueRequest(msync::ValueRequest::new(start..=end)))
            }
            tag => Err(invalid_tag(offset, tag, "sync request")),
        }
    }
);
piazza_codec_for!(Response<PiazzaContext>, put_response, get_response);

impl HasEncodedLen<Response<PiazzaContext>> for PiazzaCodec {
    fn encoded_len(&self, msg: &Response<PiazzaContext>) -> Result<usize, DecodeError> {
        let mut w = Writer::new();
        put_response(&mut w, msg);
        Ok(w.into_bytes().len())
    }
}

//! Proposal-part stream reassembly: parts in any order give the same block; every bound
//! (streams in all, streams per peer, sequence, bytes) holds, by evicting the least useful
//! stream of the peer over it; malformed, stale and far-ahead streams are refused.

use bytes::Bytes;
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::core::Round;
use piazza_bft::app::block_parts;
use piazza_bft::codec::PARTS_PER_STREAM_MAX;
use piazza_bft::context::{Height, ProposalFin, ProposalInit, ProposalPart, ValidatorAddress};
use piazza_bft::streams::{
    PartStreams, StreamError, STREAMS_MAX, STREAMS_PER_PEER_MAX, STREAM_BYTES_TOTAL_MAX,
    STREAM_HEIGHTS_AHEAD_MAX,
};
use piazza_bft::PART_DATA_BYTES_MAX;
use piazza_ledger::block::BLOCK_BYTES_MAX;
use piazza_primitives::{Address, Signature};

fn init(height: u64) -> ProposalInit {
    ProposalInit {
        height: Height(height),
        round: Round::new(0),
        pol_round: Round::Nil,
        proposer: ValidatorAddress(Address([1; 20])),
    }
}

fn fin() -> ProposalFin {
    ProposalFin {
        signature: Signature([2; 64]),
    }
}

/// The messages of a stream: its parts, then the end marker.
fn messages(id: &[u8], parts: Vec<ProposalPart>) -> Vec<StreamMessage<ProposalPart>> {
    let stream = StreamId::new(Bytes::copy_from_slice(id));
    let end = parts.len() as u64;
    let mut out: Vec<_> = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| StreamMessage::new(stream.clone(), i as u64, StreamContent::Data(p)))
        .collect();
    out.push(StreamMessage::new(stream, end, StreamContent::Fin));
    out
}

fn block_bytes() -> Vec<u8> {
    (0..PART_DATA_BYTES_MAX * 2 + 17).map(|i| i as u8).collect()
}

#[test]
fn parts_in_any_order_reassemble_the_block() {
    let bytes = block_bytes();
    let msgs = messages(b"s", block_parts(init(5), &bytes, fin()));
    assert_eq!(msgs.len(), 6, "Init, three Data, Fin part, end marker");
    for order in [
        vec![0, 1, 2, 3, 4, 5],
        vec![5, 4, 3, 2, 1, 0],
        vec![2, 5, 0, 4, 1, 3],
    ] {
        let mut streams = PartStreams::new();
        let mut done = None;
        for (n, i) in order.iter().enumerate() {
            let out = streams
                .insert(b"peer".to_vec(), msgs[*i].clone(), Height(5))
                .unwrap();
            assert_eq!(
                out.is_some(),
                n == order.len() - 1,
                "complete only at the last message"
            );
            done = done.or(out);
        }
        let done = done.unwrap();
        assert_eq!(done.block_bytes, bytes);
        assert_eq!(done.init, init(5));
        assert!(streams.is_empty(), "a complete stream is forgotten");
    }
}

#[test]
fn duplicates_and_high_sequences_are_refused() {
    let msgs = messages(b"s", block_parts(init(5), b"block", fin()));
    let mut streams = PartStreams::new();
    streams
        .insert(b"p".to_vec(), msgs[0].clone(), Height(5))
        .unwrap();
    assert_eq!(
        streams.insert(b"p".to_vec(), msgs[0].clone(), Height(5)),
        Err(StreamError::Duplicate(0))
    );
    let high = StreamMessage::new(
        StreamId::new(Bytes::from_static(b"s")),
        PARTS_PER_STREAM_MAX as u64 + 1,
        StreamContent::Fin,
    );
    assert!(matches!(
        streams.insert(b"p".to_vec(), high, Height(5)),
        Err(StreamError::SequenceTooHigh(_))
    ));
}

#[test]
fn stream_counts_are_bounded_in_all_and_per_peer() {
    let mut streams = PartStreams::new();
    let first = |id: u64| messages(&id.to_le_bytes(), block_parts(init(5), b"x", fin()))[0].clone();
    for id in 0..STREAMS_PER_PEER_MAX as u64 {
        streams
            .insert(b"greedy".to_vec(), first(id), Height(5))
            .unwrap();
    }
    // A fifth stream of the same peer evicts its oldest; the peer's share stays at the bound.
    streams
        .insert(b"greedy".to_vec(), first(99), Height(5))
        .unwrap();
    assert_eq!(streams.len(), STREAMS_PER_PEER_MAX);
    assert_eq!(streams.evicted(), 1);
    assert_eq!(
        streams.insert(b"greedy".to_vec(), first(0), Height(5)),
        Ok(None),
        "stream 0 was the one evicted: it starts afresh"
    );
    assert_eq!(streams.evicted(), 2);
    let mut peer = 0u32;
    while streams.len() < STREAMS_MAX {
        streams
            .insert(peer.to_le_bytes().to_vec(), first(0), Height(5))
            .unwrap();
        peer += 1;
    }
    // The buffer is full: a newcomer's stream takes the place of one of the largest holder's.
    streams
        .insert(b"late".to_vec(), first(0), Height(5))
        .unwrap();
    assert_eq!(streams.len(), STREAMS_MAX);
    assert_eq!(streams.evicted(), 3);
    assert_eq!(
        streams.insert(b"greedy".to_vec(), first(99), Height(5)),
        Err(StreamError::Duplicate(0)),
        "the greedy peer's newest stream is kept"
    );
    // Deciding height 5 frees the buffer.
    streams.prune_below(Height(6));
    assert!(streams.is_empty());
    assert_eq!(
        streams.insert(b"late".to_vec(), first(0), Height(6)),
        Err(StreamError::Stale(Height(5)))
    );
    streams
        .insert(
            b"late".to_vec(),
            messages(b"n", block_parts(init(6), b"x", fin()))[0].clone(),
            Height(6),
        )
        .unwrap();
}

/// Streams of `peer` that never finish: no `Init`, no end, each up to the largest block.
fn flood(streams: &mut PartStreams, peer: &[u8], streams_count: u64) {
    let parts = BLOCK_BYTES_MAX / PART_DATA_BYTES_MAX;
    for id in 0..streams_count {
        let stream = StreamId::new(Bytes::copy_from_slice(&id.to_le_bytes()));
        for sequence in 1..=parts as u64 {
            let data = ProposalPart::Data(vec![0; PART_DATA_BYTES_MAX]);
            let msg = StreamMessage::new(stream.clone(), sequence, StreamContent::Data(data));
            let _ = streams.insert(peer.to_vec(), msg, Height(5));
            assert!(streams.bytes() <= STREAM_BYTES_TOTAL_MAX);
        }
    }
}

/// Two hostile publishers fill the buffers with streams that never finish (each the size of the
/// largest block); an honest proposer's block still gets through, and the bytes stay bounded.
#[test]
fn hostile_publishers_cannot_crowd_out_an_honest_proposal() {
    let mut streams = PartStreams::new();
    for hostile in [b"hostile-a", b"hostile-b"] {
        flood(&mut streams, hostile, STREAMS_PER_PEER_MAX as u64);
    }
    assert!(streams.bytes() > STREAM_BYTES_TOTAL_MAX - BLOCK_BYTES_MAX);
    let bytes = block_bytes();
    let mut done = None;
    for msg in messages(b"honest", block_parts(init(5), &bytes, fin())) {
        done = streams.insert(b"honest".to_vec(), msg, Height(5)).unwrap();
    }
    assert_eq!(
        done.expect("the honest block is complete").block_bytes,
        bytes
    );
    assert!(streams.evicted() > 0);
}

#[test]
fn only_the_current_and_next_heights_are_kept() {
    let mut streams = PartStreams::new();
    let first =
        |id: &[u8], height: u64| messages(id, block_parts(init(height), b"x", fin()))[0].clone();
    let ahead = 5 + STREAM_HEIGHTS_AHEAD_MAX + 1;
    assert_eq!(
        streams.insert(b"p".to_vec(), first(b"far", ahead), Height(5)),
        Err(StreamError::TooFarAhead(Height(ahead)))
    );
    streams
        .insert(b"p".to_vec(), first(b"next", 6), Height(5))
        .unwrap();
    // A stream whose Init never comes.
    let orphan = StreamMessage::new(
        StreamId::new(Bytes::from_static(b"orphan")),
        1,
        StreamContent::Data(ProposalPart::Data(b"y".to_vec())),
    );
    streams.insert(b"p".to_vec(), orphan, Height(5)).unwrap();
    assert_eq!(streams.len(), 2);
    // Height 5 decided: the next height's stream and the orphan (it may be for 6) stay.
    streams.prune_below(Height(6));
    assert_eq!(streams.len(), 2);
    // Height 6 decided: both are gone.
    streams.prune_below(Height(7));
    assert!(streams.is_empty());
}

/// Feeds a whole stream of `parts`; the last message must be refused as malformed and the
/// stream dropped.
fn refused_as_malformed(streams: &mut PartStreams, parts: Vec<ProposalPart>) {
    let msgs = messages(b"s", parts);
    let (last, rest) = msgs.split_last().unwrap();
    for msg in rest {
        assert_eq!(
            streams.insert(b"p".to_vec(), msg.clone(), Height(5)),
            Ok(None)
        );
    }
    assert!(matches!(
        streams.insert(b"p".to_vec(), last.clone(), Height(5)),
        Err(StreamError::Malformed(_))
    ));
    assert!(streams.is_empty(), "a malformed stream is dropped");
}

#[test]
fn malformed_and_stale_streams_are_refused() {
    let mut streams = PartStreams::new();
    let data = || ProposalPart::Data(b"x".to_vec());
    // No Init first; no Fin part; a second Init; data after Fin.
    refused_as_malformed(&mut streams, vec![data(), ProposalPart::Fin(fin())]);
    refused_as_malformed(&mut streams, vec![ProposalPart::Init(init(5)), data()]);
    refused_as_malformed(
        &mut streams,
        vec![
            ProposalPart::Init(init(5)),
            ProposalPart::Init(init(5)),
            ProposalPart::Fin(fin()),
        ],
    );
    refused_as_malformed(
        &mut streams,
        vec![
            ProposalPart::Init(init(5)),
            ProposalPart::Fin(fin()),
            data(),
        ],
    );
    // A part after the end marker.
    let msgs = messages(b"t", block_parts(init(5), b"x", fin()));
    let end = msgs.last().unwrap().clone();
    let stray = StreamMessage::new(
        StreamId::new(Bytes::from_static(b"t")),
        end.sequence + 1,
        StreamContent::Data(ProposalPart::Data(b"y".to_vec())),
    );
    streams.insert(b"p".to_vec(), stray, Height(5)).unwrap();
    assert!(matches!(
        streams.insert(b"p".to_vec(), end, Height(5)),
        Err(StreamError::Malformed(_))
    ));
    // A stream for a height already decided.
    let old = messages(b"o", block_parts(init(4), b"x", fin()));
    assert_eq!(
        streams.insert(b"p".to_vec(), old[0].clone(), Height(5)),
        Err(StreamError::Stale(Height(4)))
    );
}

//! Reassembly of proposal-part streams: parts arrive from the network in any order, grouped by
//! (publishing peer, stream id); a stream is complete when its `Fin` message and every sequence
//! before it have arrived, `Init` first and `ProposalPart::Fin` last. Pure: no IO.

use crate::codec::PARTS_PER_STREAM_MAX;
use crate::context::{Height, ProposalFin, ProposalInit, ProposalPart};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamMessage};
use piazza_ledger::block::BLOCK_BYTES_MAX;
use std::collections::BTreeMap;

/// The most streams buffered at once; a new stream beyond it is refused.
pub const STREAMS_MAX: usize = 64;
/// The most streams one peer may have buffered at once (so one peer cannot fill the buffer).
pub const STREAMS_PER_PEER_MAX: usize = 4;
/// The most bytes buffered over all streams.
pub const STREAM_BYTES_TOTAL_MAX: usize = 4 * BLOCK_BYTES_MAX;

/// A complete stream: the proposer's `Init`, the block bytes, its `Fin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    pub init: ProposalInit,
    pub block_bytes: Vec<u8>,
    pub fin: ProposalFin,
}

/// Why a stream message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("{STREAMS_MAX} streams are already buffered")]
    TooManyStreams,
    #[error("the peer has {STREAMS_PER_PEER_MAX} streams buffered already")]
    TooManyStreamsFromPeer,
    #[error("the stream buffers hold {STREAM_BYTES_TOTAL_MAX} bytes already")]
    TooManyBytes,
    #[error("sequence {0} is beyond the {PARTS_PER_STREAM_MAX} parts a stream may hold")]
    SequenceTooHigh(u64),
    #[error("sequence {0} arrived twice")]
    Duplicate(u64),
    #[error("the stream's parts are out of shape: {0}")]
    Malformed(&'static str),
    #[error("the stream is for height {0}, below the current height")]
    Stale(Height),
}

#[derive(Default)]
struct Stream {
    height: Option<Height>,
    parts: BTreeMap<u64, ProposalPart>,
    end: Option<u64>,
    bytes: usize,
}

/// The bounded buffer of incomplete streams.
#[derive(Default)]
pub struct PartStreams {
    streams: BTreeMap<(Vec<u8>, Vec<u8>), Stream>,
    bytes: usize,
}

fn part_bytes(part: &ProposalPart) -> usize {
    match part {
        ProposalPart::Data(data) => data.len(),
        _ => 0,
    }
}

impl PartStreams {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Adds one message from `peer`; returns the stream once complete (and forgets it). A
    /// refused message leaves the buffer as it was, except a malformed stream, which is dropped.
    pub fn insert(
        &mut self,
        peer: Vec<u8>,
        msg: StreamMessage<ProposalPart>,
        current: Height,
    ) -> Result<Option<Assembled>, StreamError> {
        if msg.sequence > PARTS_PER_STREAM_MAX as u64 {
            return Err(StreamError::SequenceTooHigh(msg.sequence));
        }
        if let StreamContent::Data(ProposalPart::Init(init)) = &msg.content {
            if init.height < current {
                return Err(StreamError::Stale(init.height));
            }
        }
        let key = (peer, msg.stream_id.to_bytes().to_vec());
        if !self.streams.contains_key(&key) {
            if self.streams.len() >= STREAMS_MAX {
                return Err(StreamError::TooManyStreams);
            }
            let of_peer = self.streams.keys().filter(|(p, _)| *p == key.0).count();
            if of_peer >= STREAMS_PER_PEER_MAX {
                return Err(StreamError::TooManyStreamsFromPeer);
            }
        }
        let added = match &msg.content {
            StreamContent::Data(part) => part_bytes(part),
            StreamContent::Fin => 0,
        };
        if self.bytes + added > STREAM_BYTES_TOTAL_MAX {
            return Err(StreamError::TooManyBytes);
        }
        let stream = self.streams.entry(key.clone()).or_default();
        if stream.parts.contains_key(&msg.sequence) || stream.end == Some(msg.sequence) {
            return Err(StreamError::Duplicate(msg.sequence));
        }
        if stream.bytes + added > BLOCK_BYTES_MAX {
            self.drop_stream(&key);
            return Err(StreamError::Malformed("more data than the largest block"));
        }
        match msg.content {
            StreamContent::Data(part) => {
                if let ProposalPart::Init(init) = &part {
                    stream.height = Some(init.height);
                }
                stream.parts.insert(msg.sequence, part);
            }
            StreamContent::Fin => stream.end = Some(msg.sequence),
        }
        stream.bytes += added;
        self.bytes += added;
        self.take_if_complete(&key)
    }

    fn drop_stream(&mut self, key: &(Vec<u8>, Vec<u8>)) -> Option<Stream> {
        let stream = self.streams.remove(key)?;
        self.bytes -= stream.bytes;
        Some(stream)
    }

    fn take_if_complete(
        &mut self,
        key: &(Vec<u8>, Vec<u8>),
    ) -> Result<Option<Assembled>, StreamError> {
        let Some(stream) = self.streams.get(key) else {
            return Ok(None);
        };
        let Some(end) = stream.end else {
            return Ok(None);
        };
        if stream.parts.len() as u64 != end {
            if stream.parts.keys().any(|s| *s >= end) {
                self.drop_stream(key);
                return Err(StreamError::Malformed("a part after the end"));
            }
            return Ok(None);
        }
        let Some(stream) = self.drop_stream(key) else {
            return Ok(None);
        };
        let mut parts = stream.parts.into_values();
        let Some(ProposalPart::Init(init)) = parts.next() else {
            return Err(StreamError::Malformed("the first part is not Init"));
        };
        let mut block_bytes = Vec::with_capacity(stream.bytes);
        let mut fin = None;
        for part in parts {
            match (part, &fin) {
                (ProposalPart::Data(data), None) => block_bytes.extend_from_slice(&data),
                (ProposalPart::Fin(f), None) => fin = Some(f),
                _ => return Err(StreamError::Malformed("a part after Fin or a second Init")),
            }
        }
        let fin = fin.ok_or(StreamError::Malformed("no Fin part"))?;
        Ok(Some(Assembled {
            init,
            block_bytes,
            fin,
        }))
    }

    /// Forgets the streams of heights below `height` (decided already; nobody needs them).
    /// Streams whose `Init` has not arrived stay: they may be for `height` or above.
    pub fn prune_below(&mut self, height: Height) {
        let stale: Vec<_> = self
            .streams
            .iter()
            .filter(|(_, s)| s.height.is_some_and(|h| h < height))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.drop_stream(&key);
        }
    }
}

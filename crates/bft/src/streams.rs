//! Reassembly of proposal-part streams: parts arrive from the network in any order, grouped by
//! (publishing peer, stream id); a stream is complete when its `Fin` message and every sequence
//! before it have arrived, `Init` first and `ProposalPart::Fin` last. Height-aware and fair:
//! only streams of the current and next height are kept, each publishing peer has its own
//! share of streams and bytes, and a full share evicts its least useful stream (no `Init`, a
//! later height, older) rather than refusing the newest. Pure: no IO.

use crate::codec::PARTS_PER_STREAM_MAX;
use crate::context::{Height, ProposalFin, ProposalInit, ProposalPart};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamMessage};
use piazza_ledger::block::BLOCK_BYTES_MAX;
use std::collections::BTreeMap;

/// The most streams buffered at once; beyond it the least useful stream of the peer holding the
/// most streams is evicted, or the new one refused.
pub const STREAMS_MAX: usize = 64;
/// The most streams one peer (the publisher that signed the parts, not the relaying peer) may
/// have buffered at once; beyond it that peer's least useful stream is evicted.
pub const STREAMS_PER_PEER_MAX: usize = 4;
/// The most bytes buffered over all streams.
pub const STREAM_BYTES_TOTAL_MAX: usize = 4 * BLOCK_BYTES_MAX;
/// The most bytes one peer may have buffered: a whole block for the current height and one for
/// the next.
pub const STREAM_BYTES_PER_PEER_MAX: usize = 2 * BLOCK_BYTES_MAX;
/// How many heights past the current one a stream may be for (the next height's proposal can
/// arrive before this node commits the current one); a stream further ahead is refused.
pub const STREAM_HEIGHTS_AHEAD_MAX: u64 = 1;

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
    #[error("the stream is for height {0}, more than {STREAM_HEIGHTS_AHEAD_MAX} past the current height")]
    TooFarAhead(Height),
}

#[derive(Default)]
struct Stream {
    height: Option<Height>,
    /// The current height when the stream's first message arrived.
    opened_at: Height,
    /// Arrival order of the stream's first message (older streams are evicted first).
    arrival: u64,
    parts: BTreeMap<u64, ProposalPart>,
    end: Option<u64>,
    bytes: usize,
}

impl Stream {
    /// Eviction order, most useful last: a stream of the current height, then of a later one,
    /// then one whose `Init` has not arrived; among equals, the older goes first.
    fn uselessness(&self, current: Height) -> (u8, std::cmp::Reverse<u64>) {
        let rank = match self.height {
            Some(h) if h == current => 0,
            Some(_) => 1,
            None => 2,
        };
        (rank, std::cmp::Reverse(self.arrival))
    }
}

type Key = (Vec<u8>, Vec<u8>);

/// Which bound a new message would break.
#[derive(Clone, Copy)]
enum Bound {
    PeerStreams,
    PeerBytes,
    Streams,
    Bytes,
}

/// The bounded buffer of incomplete streams, grouped by publishing peer. Each peer's share is
/// bounded (streams, bytes) so that one peer cannot crowd out another's proposal; when a bound
/// is reached the least useful stream of the peer over it (or, for the global bounds, of the
/// peer holding the most) is evicted; only when that peer has nothing else to give up is the
/// message refused.
#[derive(Default)]
pub struct PartStreams {
    streams: BTreeMap<Key, Stream>,
    bytes: usize,
    arrivals: u64,
    evicted: u64,
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

    /// The bytes buffered over all streams.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many incomplete streams were evicted to make room since this buffer was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Adds one message from `peer`; returns the stream once complete (and forgets it). A
    /// refused message leaves the buffer as it was, except a malformed stream or one too far
    /// ahead, which is dropped, and streams evicted to make room (counted in `evicted`).
    pub fn insert(
        &mut self,
        peer: Vec<u8>,
        msg: StreamMessage<ProposalPart>,
        current: Height,
    ) -> Result<Option<Assembled>, StreamError> {
        if msg.sequence > PARTS_PER_STREAM_MAX as u64 {
            return Err(StreamError::SequenceTooHigh(msg.sequence));
        }
        let key = (peer, msg.stream_id.to_bytes().to_vec());
        if let StreamContent::Data(ProposalPart::Init(init)) = &msg.content {
            if init.height < current {
                return Err(StreamError::Stale(init.height));
            }
            if init.height.0 > current.0.saturating_add(STREAM_HEIGHTS_AHEAD_MAX) {
                self.drop_stream(&key);
                return Err(StreamError::TooFarAhead(init.height));
            }
        }
        let added = match &msg.content {
            StreamContent::Data(part) => part_bytes(part),
            StreamContent::Fin => 0,
        };
        if let Some(stream) = self.streams.get(&key) {
            if stream.parts.contains_key(&msg.sequence) || stream.end == Some(msg.sequence) {
                return Err(StreamError::Duplicate(msg.sequence));
            }
            if stream.bytes + added > BLOCK_BYTES_MAX {
                self.drop_stream(&key);
                return Err(StreamError::Malformed("more data than the largest block"));
            }
        } else if added > BLOCK_BYTES_MAX {
            return Err(StreamError::Malformed("more data than the largest block"));
        }
        self.make_room(&key, added, current)?;
        self.arrivals += 1;
        let arrival = self.arrivals;
        let stream = self.streams.entry(key.clone()).or_insert_with(|| Stream {
            opened_at: current,
            arrival,
            ..Stream::default()
        });
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

    /// The first bound that `added` bytes on stream `key` would break.
    fn broken_bound(&self, key: &Key, added: usize) -> Option<Bound> {
        let is_new = !self.streams.contains_key(key);
        let (mut peer_streams, mut peer_bytes) = (0, 0);
        for ((p, _), s) in &self.streams {
            if *p == key.0 {
                peer_streams += 1;
                peer_bytes += s.bytes;
            }
        }
        if is_new && peer_streams >= STREAMS_PER_PEER_MAX {
            Some(Bound::PeerStreams)
        } else if peer_bytes + added > STREAM_BYTES_PER_PEER_MAX {
            Some(Bound::PeerBytes)
        } else if is_new && self.streams.len() >= STREAMS_MAX {
            Some(Bound::Streams)
        } else if self.bytes + added > STREAM_BYTES_TOTAL_MAX {
            Some(Bound::Bytes)
        } else {
            None
        }
    }

    /// Evicts streams until `added` bytes on stream `key` fit every bound, or refuses.
    fn make_room(&mut self, key: &Key, added: usize, current: Height) -> Result<(), StreamError> {
        while let Some(bound) = self.broken_bound(key, added) {
            let owner = match bound {
                Bound::PeerStreams | Bound::PeerBytes => key.0.clone(),
                Bound::Streams => self.largest_holder(|_| 1),
                Bound::Bytes => self.largest_holder(|s| s.bytes),
            };
            let victim = self
                .streams
                .iter()
                .filter(|(k, _)| k.0 == owner && *k != key)
                .max_by_key(|(_, s)| s.uselessness(current))
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                return Err(match bound {
                    Bound::PeerStreams => StreamError::TooManyStreamsFromPeer,
                    Bound::Streams => StreamError::TooManyStreams,
                    Bound::PeerBytes | Bound::Bytes => StreamError::TooManyBytes,
                });
            };
            self.drop_stream(&victim);
            self.evicted += 1;
        }
        Ok(())
    }

    /// The peer holding the most of `measure` (ties: the greatest peer id).
    fn largest_holder(&self, measure: impl Fn(&Stream) -> usize) -> Vec<u8> {
        let mut held: BTreeMap<&[u8], usize> = BTreeMap::new();
        for ((p, _), s) in &self.streams {
            *held.entry(p.as_slice()).or_default() += measure(s);
        }
        held.into_iter()
            .max_by_key(|(p, n)| (*n, *p))
            .map(|(p, _)| p.to_vec())
            .unwrap_or_default()
    }

    fn drop_stream(&mut self, key: &Key) -> Option<Stream> {
        let stream = self.streams.remove(key)?;
        self.bytes -= stream.bytes;
        Some(stream)
    }

    fn take_if_complete(&mut self, key: &Key) -> Result<Option<Assembled>, StreamError> {
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

    /// Forgets the streams of heights below `height` (decided already; nobody needs them), and
    /// those whose `Init` has not arrived though they were opened more than a height before
    /// `height` (an `Init` is published first; such a stream lost it or never had one).
    pub fn prune_below(&mut self, height: Height) {
        let stale: Vec<_> = self
            .streams
            .iter()
            .filter(|(_, s)| match s.height {
                Some(h) => h < height,
                None => s.opened_at.0.saturating_add(1) < height.0,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.drop_stream(&key);
        }
    }
}

//! The chunk Merkle commitments of `piazza_primitives::blob` (shard roots, blob ids, chunk
//! proofs), the same bytes as [`spec::root_of`], [`spec::blob_id`] and [`spec::prove`], computed with BLAKE3's SIMD lanes across
//! many leaves and inner nodes at once.
//!
//! Each leaf is a short BLAKE3 message (`Hash::of("piazza/blob/leaf", [index, chunk])`: a 20-byte
//! domain prefix, the 8-byte index and the 4 KiB chunk, 4124 bytes, five BLAKE3 chunks), so
//! hashing leaves one at a time keeps most of the work in one lane. Here BLAKE3 chunk `j` of
//! [`LEAF_BATCH`] leaves is compressed together (`hash_many`, up to 16 lanes with AVX-512), then
//! the leaves' inner BLAKE3 parents, then each Merkle level's nodes the same way. The leaf's
//! 28-byte tail chunk and the node's 20-byte second block, which `hash_many` cannot take (each
//! starts from its own chaining value or counter), go through
//! `piazza_primitives::blake3_lanes` (sixteen at a time with AVX-512).
//!
//! `blake3::platform` is the crate's undocumented, unstable compression interface; the version
//! is held to `~1.8` in `Cargo.toml`, and the tests compare every path with the spec's functions.

use blake3::platform::{le_bytes_from_words_32, Platform};
use blake3::IncrementCounter;
use piazza_primitives::blake3_lanes::{compress_many, finish_roots, Compression};
use piazza_primitives::blake3_words::{CHUNK_END, CHUNK_START, IV, PARENT, ROOT};
use piazza_primitives::blob::{self as spec, MerklePath, CHUNK_BYTES};
use piazza_primitives::Hash;

/// Leaves (or nodes) hashed per batch: enough to fill every lane several times over while the
/// batch's scratch (`LEAF_BATCH` × 1 KiB first chunks) stays in the first-level cache.
pub const LEAF_BATCH: usize = 32;

const BLAKE3_CHUNK_BYTES: usize = 1024;
const BLOCK_BYTES: usize = 64;
const CV_BYTES: usize = 32;

/// `Hash::of`'s prefix for a 16-byte domain: its length as a `u32` LE, then its bytes.
const fn domain_prefix(domain: &[u8; 16]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[0] = 16;
    let mut i = 0;
    while i < 16 {
        out[4 + i] = domain[i];
        i += 1;
    }
    out
}

const LEAF_PREFIX: [u8; 20] = domain_prefix(b"piazza/blob/leaf");
const NODE_PREFIX: [u8; 20] = domain_prefix(b"piazza/blob/node");
/// Bytes of a full leaf's message before its chunk: the domain prefix and the index.
const LEAF_HEAD_BYTES: usize = LEAF_PREFIX.len() + 8;
/// Bytes of the chunk in the leaf message's first BLAKE3 chunk.
const FIRST_BYTES: usize = BLAKE3_CHUNK_BYTES - LEAF_HEAD_BYTES;
/// BLAKE3 chunks of a full leaf's message that are whole (the fifth holds the last 28 bytes).
const WHOLE_CHUNKS: usize = CHUNK_BYTES / BLAKE3_CHUNK_BYTES;
/// Bytes of the chunk in the leaf message's last BLAKE3 chunk.
const TAIL_BYTES: usize = LEAF_HEAD_BYTES;
/// Bytes of a node's message in its second block.
const NODE_TAIL_BYTES: usize = NODE_PREFIX.len() + 2 * CV_BYTES - BLOCK_BYTES;

/// The Merkle root over `data`'s chunks: equal to [`spec::root_of`].
pub fn root_of(data: &[u8]) -> Hash {
    if data.is_empty() {
        return spec::empty_root();
    }
    let platform = Platform::detect();
    top(platform, leaves(platform, data), |_| {})
}

/// The proof of chunk `index` of `data` (a challenge's answer): equal to [`spec::prove`].
pub fn prove(data: &[u8], index: u64) -> Option<MerklePath> {
    spec::chunk(data, index)?;
    let mut position = usize::try_from(index).ok()?;
    let mut siblings = Vec::new();
    let platform = Platform::detect();
    top(platform, leaves(platform, data), |level| {
        if let Some(sibling) = level.get(position ^ 1) {
            siblings.push(*sibling);
        }
        position /= 2;
    });
    Some(MerklePath { siblings })
}

/// The root over a non-empty level of leaves, each level below the root shown to `on_level`
/// before its parents are hashed.
fn top(platform: Platform, mut level: Vec<Hash>, mut on_level: impl FnMut(&[Hash])) -> Hash {
    let mut next = Vec::with_capacity(level.len().div_ceil(2));
    while level.len() > 1 {
        on_level(&level);
        parent_level(platform, &level, &mut next);
        std::mem::swap(&mut level, &mut next);
    }
    level[0]
}

/// A blob's id: equal to [`spec::blob_id`].
pub fn blob_id(data: &[u8]) -> Hash {
    spec::blob_id_of(data.len() as u64, &root_of(data))
}

/// Whether `bytes` are a shard of `shard_len` bytes whose root is `root`.
pub fn verify_shard(root: &Hash, shard_len: u64, bytes: &[u8]) -> bool {
    bytes.len() as u64 == shard_len && root_of(bytes) == *root
}

/// The leaf hashes of `data`'s chunks: full chunks in batches, a short last chunk alone.
fn leaves(platform: Platform, data: &[u8]) -> Vec<Hash> {
    let mut out = Vec::with_capacity(data.len().div_ceil(CHUNK_BYTES));
    let full = data.len() / CHUNK_BYTES;
    let mut scratch = LeafScratch::default();
    for (batch, bytes) in data[..full * CHUNK_BYTES]
        .chunks(LEAF_BATCH * CHUNK_BYTES)
        .enumerate()
    {
        let first = (batch * LEAF_BATCH) as u64;
        full_leaves(platform, first, bytes, &mut scratch, &mut out);
    }
    let rest = &data[full * CHUNK_BYTES..];
    if !rest.is_empty() {
        out.push(spec::leaf(full as u64, rest));
    }
    out
}

/// Buffers reused by every batch of leaves.
#[derive(Default)]
struct LeafScratch {
    /// Each leaf's first BLAKE3 chunk: prefix, index and the chunk's first bytes.
    heads: Vec<[u8; BLAKE3_CHUNK_BYTES]>,
    /// Chaining values of BLAKE3 chunk `j` of each leaf.
    cvs: [Vec<u8>; WHOLE_CHUNKS],
    /// Parent blocks (two chaining values each) and their outputs.
    blocks: Vec<[u8; BLOCK_BYTES]>,
    out: Vec<u8>,
    /// Each leaf's tail chunk, zero-padded to a block.
    tails: Vec<[u8; BLOCK_BYTES]>,
}

/// Appends the leaves of the full chunks in `bytes`, the first being chunk `first`.
fn full_leaves(
    platform: Platform,
    first: u64,
    bytes: &[u8],
    s: &mut LeafScratch,
    out: &mut Vec<Hash>,
) {
    let chunks: Vec<&[u8]> = bytes.chunks_exact(CHUNK_BYTES).collect();
    let n = chunks.len();
    s.heads.resize(n, [0; BLAKE3_CHUNK_BYTES]);
    for (i, (head, chunk)) in s.heads.iter_mut().zip(&chunks).enumerate() {
        head[..LEAF_PREFIX.len()].copy_from_slice(&LEAF_PREFIX);
        head[LEAF_PREFIX.len()..LEAF_HEAD_BYTES].copy_from_slice(&(first + i as u64).to_le_bytes());
        head[LEAF_HEAD_BYTES..].copy_from_slice(&chunk[..FIRST_BYTES]);
    }
    for (j, cvs) in s.cvs.iter_mut().enumerate() {
        cvs.resize(n * CV_BYTES, 0);
        let inputs: Vec<&[u8; BLAKE3_CHUNK_BYTES]> = if j == 0 {
            s.heads.iter().collect()
        } else {
            let start = FIRST_BYTES + (j - 1) * BLAKE3_CHUNK_BYTES;
            chunks.iter().map(|c| whole(&c[start..])).collect()
        };
        platform.hash_many(
            &inputs,
            &IV,
            j as u64,
            IncrementCounter::No,
            0,
            CHUNK_START,
            CHUNK_END,
            cvs,
        );
    }
    // Blocks 0..n: parents of chunks 0 and 1; n..2n: parents of chunks 2 and 3.
    s.blocks.resize(2 * n, [0; BLOCK_BYTES]);
    for (pair, (left, right)) in [(0, 1), (2, 3)].into_iter().enumerate() {
        for i in 0..n {
            let block = &mut s.blocks[pair * n + i];
            block[..CV_BYTES].copy_from_slice(&s.cvs[left][i * CV_BYTES..][..CV_BYTES]);
            block[CV_BYTES..].copy_from_slice(&s.cvs[right][i * CV_BYTES..][..CV_BYTES]);
        }
    }
    compress_blocks(platform, &s.blocks, PARENT, &mut s.out);
    // Then the parent of those two parents, with the tail chunk's chaining value beside it.
    for i in 0..n {
        let (low, high) = (&s.out[i * CV_BYTES..], &s.out[(n + i) * CV_BYTES..]);
        let block = &mut s.blocks[i];
        block[..CV_BYTES].copy_from_slice(&low[..CV_BYTES]);
        block[CV_BYTES..].copy_from_slice(&high[..CV_BYTES]);
    }
    compress_blocks(platform, &s.blocks[..n], PARENT, &mut s.out);
    // The tail chunks (one short block each, from the IV), sixteen lanes at a time.
    s.tails.clear();
    s.tails.extend(chunks.iter().map(|chunk| {
        let mut tail = [0u8; BLOCK_BYTES];
        tail[..TAIL_BYTES].copy_from_slice(&chunk[CHUNK_BYTES - TAIL_BYTES..]);
        tail
    }));
    let mut jobs: Vec<Compression> = s
        .tails
        .iter()
        .map(|tail| Compression {
            cv: IV,
            block: tail,
            block_len: TAIL_BYTES as u8,
            counter: WHOLE_CHUNKS as u64,
            flags: CHUNK_START | CHUNK_END,
        })
        .collect();
    compress_many(&mut jobs);
    for (i, job) in jobs.iter().enumerate() {
        let block = &mut s.blocks[i];
        block[..CV_BYTES].copy_from_slice(&s.out[i * CV_BYTES..][..CV_BYTES]);
        block[CV_BYTES..].copy_from_slice(&le_bytes_from_words_32(&job.cv));
    }
    compress_blocks(platform, &s.blocks[..n], PARENT | ROOT, &mut s.out);
    out.extend(s.out.chunks_exact(CV_BYTES).map(to_hash));
}

/// One compression of each 64-byte block (one block's message, or a parent's two chaining
/// values), all lanes at once; `out` gets their 32-byte outputs in order.
fn compress_blocks(platform: Platform, blocks: &[[u8; BLOCK_BYTES]], flags: u8, out: &mut Vec<u8>) {
    let start = if flags & PARENT == 0 { CHUNK_START } else { 0 };
    out.resize(blocks.len() * CV_BYTES, 0);
    let inputs: Vec<&[u8; BLOCK_BYTES]> = blocks.iter().collect();
    platform.hash_many(&inputs, &IV, 0, IncrementCounter::No, flags, start, 0, out);
}

/// The next Merkle level over `level` into `next`: `spec::node` over each pair, a last odd node
/// promoted unchanged.
fn parent_level(platform: Platform, level: &[Hash], next: &mut Vec<Hash>) {
    next.clear();
    let mut blocks = Vec::with_capacity(LEAF_BATCH);
    let mut tails: Vec<[u8; BLOCK_BYTES]> = Vec::with_capacity(LEAF_BATCH);
    let mut cvs = Vec::with_capacity(LEAF_BATCH * CV_BYTES);
    for batch in level.chunks(2 * LEAF_BATCH) {
        blocks.clear();
        for pair in batch.chunks_exact(2) {
            let mut block = [0u8; BLOCK_BYTES];
            block[..NODE_PREFIX.len()].copy_from_slice(&NODE_PREFIX);
            block[NODE_PREFIX.len()..][..CV_BYTES].copy_from_slice(pair[0].as_bytes());
            block[NODE_PREFIX.len() + CV_BYTES..]
                .copy_from_slice(&pair[1].as_bytes()[..CV_BYTES - NODE_TAIL_BYTES]);
            blocks.push(block);
        }
        // The first block of each node's message, all lanes at once; then its short second,
        // each from its own chaining value, sixteen lanes at a time.
        compress_blocks(platform, &blocks, 0, &mut cvs);
        tails.clear();
        tails.extend(batch.chunks_exact(2).map(|pair| {
            let mut tail = [0u8; BLOCK_BYTES];
            tail[..NODE_TAIL_BYTES]
                .copy_from_slice(&pair[1].as_bytes()[CV_BYTES - NODE_TAIL_BYTES..]);
            tail
        }));
        next.extend(
            finish_roots(&cvs, &tails, NODE_TAIL_BYTES as u8)
                .into_iter()
                .map(Hash),
        );
        if let [.., last] = batch {
            if batch.len() % 2 == 1 {
                next.push(*last);
            }
        }
    }
}

fn whole(bytes: &[u8]) -> &[u8; BLAKE3_CHUNK_BYTES] {
    bytes[..BLAKE3_CHUNK_BYTES]
        .try_into()
        .expect("a slice of BLAKE3_CHUNK_BYTES bytes")
}

fn to_hash(bytes: &[u8]) -> Hash {
    let mut out = [0u8; CV_BYTES];
    out.copy_from_slice(bytes);
    Hash(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_spec_at_batch_and_level_edges() {
        for chunks in [
            0,
            1,
            2,
            3,
            LEAF_BATCH - 1,
            LEAF_BATCH,
            LEAF_BATCH + 1,
            2 * LEAF_BATCH + 3,
            4 * LEAF_BATCH + 1,
        ] {
            for extra in [0usize, 1, 63, CHUNK_BYTES - 1] {
                let len = chunks * CHUNK_BYTES + extra;
                let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 4093) as u8).collect();
                assert_eq!(root_of(&data), spec::root_of(&data), "{len} bytes");
                assert_eq!(blob_id(&data), spec::blob_id(&data), "{len} bytes");
                let count = spec::chunk_count(len as u64);
                for index in [0, count / 2, count.saturating_sub(1), count] {
                    assert_eq!(
                        prove(&data, index),
                        spec::prove(&data, index),
                        "{len} bytes"
                    );
                }
            }
        }
    }
}

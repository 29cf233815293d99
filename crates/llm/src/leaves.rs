//! Trace leaves (`piazza_trace::trace::step_hash`) hashed without copying the blocks, and many
//! equal-sized leaves at once across BLAKE3's SIMD lanes.
//!
//! A leaf is one BLAKE3 message: the Merkle leaf head (`0x00`, the domain's length and bytes,
//! the step index), the shape header (`2 as u32`, rows and columns as `u64`), then the values
//! as little-endian f32 (docs/engine.md §4). A decode pass's leaves are single rows of a few
//! KiB: hashed one at a time, each BLAKE3 chunk is compressed in one lane. An audit pass has
//! the leaves of every decode pass of an op at once, equal in size, so [`equal_leaves`] hashes
//! them together. With AVX-512 (`piazza_primitives::blake3_lanes`), sixteen leaves at a time
//! side by side ([`lockstep_leaves`], `hash_messages`): lane `i` takes block `b` of leaf `i`
//! at the step every other lane takes block `b` of its own, so no lane waits or switches
//! leaves, and each leaf's BLAKE3 tree is merged in the vectors as its chunks end. Fewer leaves
//! than fill the lanes ([`lane_leaves`]: a prefill's long blocks, a group's last few) share
//! them chunk by chunk, each lane taking the next chunk as its own ends, then their parents
//! level by level. Either way the values are read in place: only each leaf's first block (the
//! head and the first values) and its partial last block are copied. Elsewhere
//! ([`batch_leaves`]): BLAKE3 chunk `j` of up to sixteen leaves together (`hash_many`), then
//! their parents the same way, each leaf's first BLAKE3 chunk copied and each last partial
//! block compressed on its own.
//!
//! `blake3::platform` is the crate's undocumented compression interface; the version is held
//! to `~1.8` in `Cargo.toml`, and the tests compare every path with `step_hash`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use blake3::platform::{le_bytes_from_words_32, Platform};
use blake3::IncrementCounter;
use piazza_primitives::blake3_lanes::{
    self, compress_many, hash_chunks, Chunk, Compression, Message,
};
use piazza_primitives::blake3_words::{CHUNK_END, CHUNK_START, IV, PARENT, ROOT};
use piazza_tensor::pool::Pool;
use piazza_trace::trace::{step_hash, TRACE_DOMAIN};
use piazza_trace::Hash;

const CHUNK_BYTES: usize = blake3::CHUNK_LEN;
const BLOCK_BYTES: usize = blake3::BLOCK_LEN;
const CV_BYTES: usize = blake3::OUT_LEN;
const BLOCKS_PER_CHUNK: usize = CHUNK_BYTES / BLOCK_BYTES;

/// Merkle leaf tag (`piazza_trace::merkle`: `0x00 ‖ len(domain) ‖ domain ‖ index`).
const LEAF_TAG: u8 = 0x00;
/// Bytes of a leaf message before its values: Merkle leaf head, then the shape header.
const HEAD_BYTES: usize = 2 + TRACE_DOMAIN.len() + 8 + 4 + 2 * 8;
/// Without AVX-512, leaves longer than this many BLAKE3 chunks are hashed one at a time: one
/// such message fills `hash_many`'s SIMD lanes by itself (BLAKE3 hashes its chunks together).
const CHUNKS_MAX: usize = 16;
/// Leaves hashed together: every lane several times over, the batch's copied first chunks
/// (`LEAF_BATCH` KiB) in the first-level cache.
const LEAF_BATCH: usize = 32;
/// BLAKE3 chunks of [`lane_leaves`]'s leaves hashed together: every lane many times over, the
/// batch's first and last blocks in the first-level cache.
const LANE_BATCH_CHUNKS: usize = 256;
/// Fewest BLAKE3 chunks in all for which [`lane_leaves`] beats `step_hash` one leaf at a time:
/// its lanes cost the same however few are busy, and a lone chunk in the lanes is slower than
/// one compression at a time.
const LANE_CHUNKS_MIN: usize = 4;
/// Fewest leaves of a group hashed side by side ([`lockstep_leaves`]) rather than chunk by
/// chunk ([`lane_leaves`]): with fewer, the idle lanes cost more than `lane_leaves`'s
/// bookkeeping (63 single-row leaves of 576 values: 10.1 against 11.8 ns a block; one audit
/// pass's leaves in `leaves_speed`: 28.5–29.1 ms against 32.8–34.8 ms).
const LOCKSTEP_LEAVES_MIN: usize = 14;
/// Pieces per thread when [`grouped_leaves`] shares the hashing: more than one, so a thread
/// slowed by another process does not hold the others up.
const PIECES_PER_THREAD: usize = 2;
/// Fewest bytes in a piece of [`grouped_leaves`]: sixteen BLAKE3 chunks fill the lanes once.
const PIECE_BYTES_MIN: usize = 16 * CHUNK_BYTES;

/// The leaf of step `index` over rows `rows` × columns `columns` of `output`, a row-major
/// matrix `width` wide: `step_hash` of that block ([`block_values`]).
pub(crate) fn block_leaf(
    index: usize,
    output: &[f32],
    width: usize,
    rows: Range<usize>,
    columns: Range<usize>,
) -> Hash {
    let values = block_values(output, width, &rows, &columns);
    step_hash(index, &values, rows.len(), columns.len())
}

/// The row-major values of rows `rows` × columns `columns` of `output` (`width` wide): a
/// single row or whole rows in place; the rows of a narrower block copied out. Streamed row by
/// row, each row would start inside a BLAKE3 chunk, and BLAKE3 compresses such input one block
/// at a time (measured slower than the copy and one wide hash).
fn block_values<'a>(
    output: &'a [f32],
    width: usize,
    rows: &Range<usize>,
    columns: &Range<usize>,
) -> Cow<'a, [f32]> {
    if rows.len() == 1 || columns.len() == width {
        let start = rows.start * width + columns.start;
        let len = (rows.len() - 1) * width + columns.len();
        return Cow::Borrowed(&output[start..start + len]);
    }
    let mut block = Vec::with_capacity(rows.len() * columns.len());
    for r in rows.clone() {
        block.extend_from_slice(&output[r * width + columns.start..r * width + columns.end]);
    }
    Cow::Owned(block)
}

/// A leaf's step index and its block's row-major values.
pub(crate) type LeafBlock<'a> = (usize, &'a [f32]);

/// The leaves of `blocks` (step index, row-major values), every block `rows × cols`:
/// `step_hash(index, values, rows, cols)` of each, in order.
pub(crate) fn equal_leaves(rows: usize, cols: usize, blocks: &[LeafBlock]) -> Vec<Hash> {
    let message_bytes = HEAD_BYTES + 4 * rows * cols;
    let chunks = message_bytes.div_ceil(CHUNK_BYTES);
    let equal = blocks.iter().all(|(_, values)| values.len() == rows * cols);
    #[cfg(target_endian = "little")]
    if equal && blake3_lanes::lanes_available() {
        let mut out = Vec::with_capacity(blocks.len());
        let mut groups = blocks.chunks(blake3_lanes::LANES).peekable();
        while let Some(group) = groups.next_if(|g| g.len() >= LOCKSTEP_LEAVES_MIN) {
            lockstep_leaves(rows, cols, group, &mut out);
        }
        let rest = groups.next().unwrap_or_default();
        if rest.len() * chunks >= LANE_CHUNKS_MIN {
            // This thread's scratch (an audit pass hashes a few hundred groups: growing new
            // buffers for each was a percent of it), or a new one if it is in use.
            let mut hash = |scratch: &mut LaneScratch| {
                for batch in rest.chunks((LANE_BATCH_CHUNKS / chunks).max(1)) {
                    lane_leaves(rows, cols, batch, scratch, &mut out);
                }
            };
            let kept = LANE_SCRATCH.try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => {
                    hash(&mut scratch);
                    true
                }
                Err(_) => false,
            });
            if kept != Ok(true) {
                hash(&mut LaneScratch::default());
            }
        } else {
            out.extend(
                rest.iter()
                    .map(|&(index, values)| step_hash(index, values, rows, cols)),
            );
        }
        return out;
    }
    #[cfg(target_endian = "little")]
    if equal && chunks <= CHUNKS_MAX && blocks.len() > 1 {
        let platform = Platform::detect();
        let mut scratch = Scratch::default();
        let mut out = Vec::with_capacity(blocks.len());
        for batch in blocks.chunks(LEAF_BATCH) {
            batch_leaves(platform, rows, cols, batch, &mut scratch, &mut out);
        }
        return out;
    }
    blocks
        .iter()
        .map(|&(index, values)| step_hash(index, values, rows, cols))
        .collect()
}

/// Blocks of one shape: rows, columns, and the blocks (step index, row-major values).
pub(crate) type LeafGroup<'a> = (usize, usize, Vec<LeafBlock<'a>>);

/// [`equal_leaves`] of every group, the groups' hashes in order, on up to `threads` threads
/// (the kernels' pool). On more than one thread the groups are cut into pieces of about
/// `1 / (PIECES_PER_THREAD · threads)` of the bytes (never under [`PIECE_BYTES_MIN`], so the
/// lanes stay full), handed out largest first; a leaf longer than a piece (a prefill's block)
/// is cut into BLAKE3 subtrees, merged once all are hashed. A piece's hashes do not depend on
/// which thread computes it.
pub(crate) fn grouped_leaves(groups: &[LeafGroup], threads: usize) -> Vec<Vec<Hash>> {
    if threads <= 1 {
        return groups
            .iter()
            .map(|(rows, cols, blocks)| equal_leaves(*rows, *cols, blocks))
            .collect();
    }
    let leaf_bytes = |rows: usize, cols: usize| HEAD_BYTES + 4 * rows * cols;
    let total: usize = groups
        .iter()
        .map(|(rows, cols, blocks)| leaf_bytes(*rows, *cols) * blocks.len())
        .sum();
    let piece_bytes = (total / (PIECES_PER_THREAD * threads)).max(PIECE_BYTES_MIN);
    let mut pieces: Vec<Piece> = Vec::new();
    for (group, (rows, cols, blocks)) in groups.iter().enumerate() {
        let bytes = leaf_bytes(*rows, *cols);
        if bytes > piece_bytes {
            let mut parts = Vec::new();
            subtrees(0..bytes, piece_bytes, &mut parts);
            for block in 0..blocks.len() {
                pieces.extend(parts.iter().map(|bytes| Piece::Subtree {
                    group,
                    block,
                    bytes: bytes.clone(),
                }));
            }
            continue;
        }
        // Whole sixteens of leaves where a piece holds that many: the lanes take them side by
        // side (`lockstep_leaves`), with no short group left at each piece's end.
        let per_piece = match (piece_bytes / bytes).max(1) {
            n if n >= blake3_lanes::LANES => n.div_ceil(blake3_lanes::LANES) * blake3_lanes::LANES,
            n => n,
        };
        for start in (0..blocks.len()).step_by(per_piece) {
            let end = (start + per_piece).min(blocks.len());
            pieces.push(Piece::Leaves(group, start..end));
        }
    }
    let piece_size = |piece: &Piece| match piece {
        Piece::Leaves(group, range) => {
            let (rows, cols, _) = &groups[*group];
            leaf_bytes(*rows, *cols) * range.len()
        }
        Piece::Subtree { bytes, .. } => bytes.len(),
    };
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_by_key(|&p| std::cmp::Reverse(piece_size(&pieces[p])));
    let hashed: Vec<OnceLock<Hashed>> = pieces.iter().map(|_| OnceLock::new()).collect();
    Pool::global().for_each(threads, order.len(), |i| {
        let p = order[i];
        let done = match &pieces[p] {
            Piece::Leaves(group, range) => {
                let (rows, cols, blocks) = &groups[*group];
                Hashed::Leaves(equal_leaves(*rows, *cols, &blocks[range.clone()]))
            }
            Piece::Subtree {
                group,
                block,
                bytes,
            } => {
                let (rows, cols, blocks) = &groups[*group];
                let (index, values) = blocks[*block];
                let head = leaf_head(index, *rows, *cols);
                Hashed::Subtree(subtree_cv(&head, &le_bytes(values), bytes.clone()))
            }
        };
        // Each piece is set once: `for_each` runs every index exactly once.
        let _ = hashed[p].set(done);
    });
    let mut out: Vec<Vec<Hash>> = groups
        .iter()
        .map(|g| Vec::with_capacity(g.2.len()))
        .collect();
    let mut done = pieces
        .iter()
        .zip(hashed)
        .map(|(piece, cell)| (piece, cell.into_inner().expect("for_each ran every piece")))
        .peekable();
    while let Some((piece, hashed)) = done.next() {
        match (piece, hashed) {
            (Piece::Leaves(group, _), Hashed::Leaves(hashes)) => out[*group].extend(hashes),
            (&Piece::Subtree { group, block, .. }, Hashed::Subtree(first)) => {
                // The rest of this leaf's subtrees follow it, in the message's order.
                let mut cvs = vec![first];
                while let Some((
                    &Piece::Subtree {
                        group: g, block: b, ..
                    },
                    _,
                )) = done.peek()
                {
                    if (g, b) != (group, block) {
                        break;
                    }
                    if let Some((_, Hashed::Subtree(cv))) = done.next() {
                        cvs.push(cv);
                    }
                }
                let (rows, cols, _) = &groups[group];
                let mut cvs = cvs.into_iter();
                out[group].push(merged_root(leaf_bytes(*rows, *cols), piece_bytes, &mut cvs));
            }
            _ => unreachable!("a piece's result is of its own kind"),
        }
    }
    out
}

/// A share of [`grouped_leaves`]' work: whole leaves `range` of a group, or the BLAKE3
/// subtree over bytes `bytes` of the message of one leaf (`block` of `group`).
enum Piece {
    Leaves(usize, Range<usize>),
    Subtree {
        group: usize,
        block: usize,
        bytes: Range<usize>,
    },
}

/// A [`Piece`]'s result: the leaves, or the subtree's chaining value.
enum Hashed {
    Leaves(Vec<Hash>),
    Subtree(ChainingValue),
}

/// `bytes` of a message cut as BLAKE3's tree is (the left subtree the largest power of two of
/// chunks below the length, `hazmat::left_subtree_len`) into subtrees of at most `most`
/// bytes (or one chunk), appended to `out` in order.
fn subtrees(bytes: Range<usize>, most: usize, out: &mut Vec<Range<usize>>) {
    let len = bytes.len();
    if len <= most.max(CHUNK_BYTES) {
        out.push(bytes);
        return;
    }
    let left = left_subtree_len(len as u64) as usize;
    subtrees(bytes.start..bytes.start + left, most, out);
    subtrees(bytes.start + left..bytes.end, most, out);
}

/// The root of a `len`-byte message from the chaining values of its [`subtrees`] (of at most
/// `most` bytes), in order.
fn merged_root(len: usize, most: usize, cvs: &mut impl Iterator<Item = ChainingValue>) -> Hash {
    let left = left_subtree_len(len as u64) as usize;
    let left_cv = merged(left, most, cvs);
    let right_cv = merged(len - left, most, cvs);
    *merge_subtrees_root(&left_cv, &right_cv, Mode::Hash).as_bytes()
}

/// The chaining value of a `len`-byte subtree from those of its [`subtrees`], in order.
fn merged(len: usize, most: usize, cvs: &mut impl Iterator<Item = ChainingValue>) -> ChainingValue {
    if len <= most.max(CHUNK_BYTES) {
        return cvs.next().unwrap_or_default();
    }
    let left = left_subtree_len(len as u64) as usize;
    let left_cv = merged(left, most, cvs);
    let right_cv = merged(len - left, most, cvs);
    merge_subtrees_non_root(&left_cv, &right_cv, Mode::Hash)
}

/// The chaining value of the BLAKE3 subtree over bytes `bytes` of the message `head ‖ values`.
fn subtree_cv(head: &[u8], values: &[u8], bytes: Range<usize>) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(bytes.start as u64);
    let end = bytes.end - head.len();
    if bytes.start < head.len() {
        hasher.update(&head[bytes.start..]);
        hasher.update(&values[..end]);
    } else {
        hasher.update(&values[bytes.start - head.len()..end]);
    }
    hasher.finalize_non_root()
}

/// Trace leaves gathered op by op and hashed together, grouped by shape, as
/// [`grouped_leaves`]: contiguous blocks (one row, or whole rows) in place, the rows of a
/// narrower block (a head's columns over a prefill's rows) copied out first.
#[derive(Default)]
pub(crate) struct ShapeGroups<'a> {
    /// (rows, columns) and the blocks of that shape, in order of first appearance.
    by_shape: Vec<((usize, usize), Vec<LeafBlock<'a>>)>,
    /// The group the last block went to (an op's steps are mostly of one shape).
    last: usize,
    /// Narrower blocks' values: step index, rows, columns, the block's rows copied in order.
    copies: Vec<(usize, usize, usize, Vec<f32>)>,
}

impl<'a> ShapeGroups<'a> {
    /// Step `index`'s block, rows `rows` × columns `columns` of `output` (row-major, `width`
    /// wide), kept for [`ShapeGroups::hash`].
    pub(crate) fn add(
        &mut self,
        index: usize,
        output: &'a [f32],
        width: usize,
        rows: &Range<usize>,
        columns: &Range<usize>,
    ) {
        let shape = (rows.len(), columns.len());
        match block_values(output, width, rows, columns) {
            Cow::Borrowed(values) => self.group(shape).push((index, values)),
            Cow::Owned(values) => self.copies.push((index, shape.0, shape.1, values)),
        }
    }

    /// The blocks of shape `shape` so far.
    fn group(&mut self, shape: (usize, usize)) -> &mut Vec<LeafBlock<'a>> {
        if self
            .by_shape
            .get(self.last)
            .is_none_or(|(s, _)| *s != shape)
        {
            self.last = match self.by_shape.iter().position(|(s, _)| *s == shape) {
                Some(at) => at,
                None => {
                    self.by_shape.push((shape, Vec::new()));
                    self.by_shape.len() - 1
                }
            };
        }
        &mut self.by_shape[self.last].1
    }

    /// The leaves of the kept blocks on up to `threads` threads, each handed to `set` with
    /// its step index.
    pub(crate) fn hash(self, threads: usize, mut set: impl FnMut(usize, Hash)) {
        let mut by_shape: BTreeMap<(usize, usize), Vec<LeafBlock>> =
            self.by_shape.into_iter().collect();
        for (index, rows, cols, block) in &self.copies {
            by_shape
                .entry((*rows, *cols))
                .or_default()
                .push((*index, block.as_slice()));
        }
        let groups: Vec<LeafGroup> = by_shape
            .into_iter()
            .map(|((rows, cols), blocks)| (rows, cols, blocks))
            .collect();
        let hashes = grouped_leaves(&groups, threads);
        for ((_, _, blocks), hashes) in groups.iter().zip(hashes) {
            for (&(index, _), hash) in blocks.iter().zip(hashes) {
                set(index, hash);
            }
        }
    }
}

/// Buffers reused by every batch.
#[derive(Default)]
struct Scratch {
    /// Each leaf's first BLAKE3 chunk: the head and the first values.
    heads: Vec<[u8; CHUNK_BYTES]>,
    /// Chaining values of BLAKE3 chunk `j` of leaf `i` at `[j][i]`.
    cvs: Vec<Vec<[u32; 8]>>,
    /// Outputs of one `hash_many` call.
    out: Vec<u8>,
}

/// The leaves of `batch` (equal sizes, at most [`CHUNKS_MAX`] BLAKE3 chunks) appended to `out`.
#[cfg(target_endian = "little")]
fn batch_leaves(
    platform: Platform,
    rows: usize,
    cols: usize,
    batch: &[LeafBlock],
    s: &mut Scratch,
    out: &mut Vec<Hash>,
) {
    let n = batch.len();
    let message_bytes = HEAD_BYTES + 4 * rows * cols;
    let chunks = message_bytes.div_ceil(CHUNK_BYTES);
    let first_bytes = message_bytes.min(CHUNK_BYTES);
    s.heads.resize(n, [0; CHUNK_BYTES]);
    for (head, &(index, values)) in s.heads.iter_mut().zip(batch) {
        head[..HEAD_BYTES].copy_from_slice(&leaf_head(index, rows, cols));
        head[HEAD_BYTES..first_bytes]
            .copy_from_slice(&f32_bytes(values)[..first_bytes - HEAD_BYTES]);
    }
    s.cvs.resize(chunks, Vec::new());
    for j in 0..chunks {
        let start = j * CHUNK_BYTES;
        let len = (message_bytes - start).min(CHUNK_BYTES);
        let last = j + 1 == chunks;
        // The chunk's bytes in each message: the copied first chunk, or the values in place.
        let chunk_of = |i: usize| -> &[u8] {
            match j {
                0 => &s.heads[i][..len],
                _ => &f32_bytes(batch[i].1)[start - HEAD_BYTES..][..len],
            }
        };
        // Whole blocks in the lanes; a last chunk's final block (1..=64 bytes) one at a time.
        let lead_blocks = match last {
            true => len.div_ceil(BLOCK_BYTES) - 1,
            false => BLOCKS_PER_CHUNK,
        };
        let mut cvs = vec![IV; n];
        if lead_blocks > 0 {
            let inputs: Vec<&[u8]> = (0..n).map(chunk_of).collect();
            let end = if last { 0 } else { CHUNK_END };
            let counter = j as u64;
            hash_blocks(platform, &inputs, lead_blocks, counter, end, &mut s.out);
            for (cv, bytes) in cvs.iter_mut().zip(s.out.chunks_exact(CV_BYTES)) {
                *cv = words(bytes);
            }
        }
        if last {
            let mut flags = CHUNK_END;
            if lead_blocks == 0 {
                flags |= CHUNK_START;
            }
            if chunks == 1 {
                flags |= ROOT;
            }
            for (i, cv) in cvs.iter_mut().enumerate() {
                let tail = &chunk_of(i)[lead_blocks * BLOCK_BYTES..];
                let mut block = [0u8; BLOCK_BYTES];
                block[..tail.len()].copy_from_slice(tail);
                platform.compress_in_place(cv, &block, tail.len() as u8, j as u64, flags);
            }
        }
        s.cvs[j] = cvs;
    }
    let root = subtree(platform, &s.cvs, 0..chunks, true, &mut s.out);
    out.extend(root.iter().map(le_bytes_from_words_32));
}

/// The chaining values (roots when `root`) of BLAKE3 chunks `range` of every message: BLAKE3's
/// tree, whose left subtree holds the largest power of two of chunks below the range's count.
fn subtree(
    platform: Platform,
    cvs: &[Vec<[u32; 8]>],
    range: Range<usize>,
    root: bool,
    out: &mut Vec<u8>,
) -> Vec<[u32; 8]> {
    if range.len() == 1 {
        return cvs[range.start].clone();
    }
    let left_len = 1 << (usize::BITS - 1 - (range.len() - 1).leading_zeros());
    let middle = range.start + left_len;
    let left = subtree(platform, cvs, range.start..middle, false, out);
    let right = subtree(platform, cvs, middle..range.end, false, out);
    let blocks: Vec<[u8; BLOCK_BYTES]> = left
        .iter()
        .zip(&right)
        .map(|(l, r)| {
            let mut block = [0u8; BLOCK_BYTES];
            block[..CV_BYTES].copy_from_slice(&le_bytes_from_words_32(l));
            block[CV_BYTES..].copy_from_slice(&le_bytes_from_words_32(r));
            block
        })
        .collect();
    let inputs: Vec<&[u8; BLOCK_BYTES]> = blocks.iter().collect();
    let flags = if root { PARENT | ROOT } else { PARENT };
    out.resize(blocks.len() * CV_BYTES, 0);
    platform.hash_many(&inputs, &IV, 0, IncrementCounter::No, flags, 0, 0, out);
    out.chunks_exact(CV_BYTES).map(words).collect()
}

/// `hash_many` over the first `blocks` (1..=16) blocks of each input, one BLAKE3 chunk's
/// worth at counter `counter`: the first block flagged as a chunk start, the last with
/// `end`; the chaining values into `out`.
fn hash_blocks(
    platform: Platform,
    inputs: &[&[u8]],
    blocks: usize,
    counter: u64,
    end: u8,
    out: &mut Vec<u8>,
) {
    out.resize(inputs.len() * CV_BYTES, 0);
    macro_rules! with_lengths {
        ($($blocks:literal)*) => {
            match blocks {
                $($blocks => {
                    const N: usize = $blocks * BLOCK_BYTES;
                    let arrays: Vec<&[u8; N]> = inputs
                        .iter()
                        .map(|input| <&[u8; N]>::try_from(&input[..N]))
                        .collect::<Result<_, _>>()
                        .expect("each input holds the blocks asked for");
                    platform.hash_many(&arrays, &IV, counter, IncrementCounter::No, 0, CHUNK_START, end, out);
                })*
                _ => unreachable!("1..=16 blocks per BLAKE3 chunk"),
            }
        };
    }
    with_lengths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
}

/// The leaves of `group` (at most sixteen, equal sizes) appended to `out`, hashed side by side
/// in the lanes (`blake3_lanes::hash_messages`): each leaf's values read in place but for its
/// first block (the head and the first values) and its partial last block, copied.
#[cfg(target_endian = "little")]
fn lockstep_leaves(rows: usize, cols: usize, group: &[LeafBlock], out: &mut Vec<Hash>) {
    let n = group.len();
    assert!((1..=blake3_lanes::LANES).contains(&n), "1..=16 leaves");
    let message_bytes = HEAD_BYTES + 4 * rows * cols;
    let first_len = message_bytes.min(BLOCK_BYTES);
    let tail = message_bytes.saturating_sub(BLOCK_BYTES) % BLOCK_BYTES;
    let mut pads = [[[0u8; BLOCK_BYTES]; 2]; blake3_lanes::LANES];
    for (pad, &(index, values)) in pads.iter_mut().zip(group) {
        *pad = leaf_ends(index, rows, cols, values);
    }
    let messages: [Message; blake3_lanes::LANES] = std::array::from_fn(|i| {
        let i = i.min(n - 1);
        let bytes = f32_bytes(group[i].1);
        Message {
            first: &pads[i][0],
            middle: &bytes[first_len - HEAD_BYTES..bytes.len() - tail],
            last: (message_bytes > BLOCK_BYTES && tail > 0).then_some(&pads[i][1]),
        }
    });
    let mut hashes = [[0u8; 32]; blake3_lanes::LANES];
    blake3_lanes::hash_messages(message_bytes, &messages[..n], &mut hashes[..n]);
    out.extend_from_slice(&hashes[..n]);
}

/// The leaves of `batch` (equal sizes) appended to `out`, every compression in
/// `blake3_lanes`: each leaf's BLAKE3 chunks read in place (its first block, the head and
/// the first values, and a partial last block from small copies), chunks of all leaves
/// sharing the sixteen lanes, then the BLAKE3 parents level by level, sixteen at a time.
#[cfg(target_endian = "little")]
fn lane_leaves(
    rows: usize,
    cols: usize,
    batch: &[LeafBlock],
    s: &mut LaneScratch,
    out: &mut Vec<Hash>,
) {
    let message_bytes = HEAD_BYTES + 4 * rows * cols;
    let chunks = message_bytes.div_ceil(CHUNK_BYTES);
    let last_len = message_bytes % BLOCK_BYTES;
    s.firsts.clear();
    s.lasts.clear();
    s.firsts.reserve(batch.len());
    s.lasts.reserve(batch.len());
    for &(index, values) in batch {
        let [first, last] = leaf_ends(index, rows, cols, values);
        s.firsts.push(first);
        s.lasts.push(last);
    }
    // Chunk by chunk (chunk `j` of every leaf, then `j + 1`): lanes then take chunks of the
    // same length and end together.
    let mut jobs: Vec<Chunk> = Vec::with_capacity(batch.len() * chunks);
    for j in 0..chunks {
        let start = j * CHUNK_BYTES;
        let end = message_bytes.min(start + CHUNK_BYTES);
        let whole_end = start + (end - start) / BLOCK_BYTES * BLOCK_BYTES;
        let partial = whole_end < end;
        for (i, &(_, values)) in batch.iter().enumerate() {
            let chunk = if message_bytes < BLOCK_BYTES {
                // The whole message is one partial block.
                Chunk {
                    first: None,
                    middle: &[],
                    last: Some((&s.firsts[i], message_bytes as u8)),
                    counter: 0,
                    root: true,
                }
            } else {
                let middle_start = if j == 0 { BLOCK_BYTES } else { start };
                let bytes = f32_bytes(values);
                Chunk {
                    first: (j == 0).then_some(&s.firsts[i]),
                    middle: &bytes[middle_start - HEAD_BYTES..whole_end - HEAD_BYTES],
                    last: partial.then_some((&s.lasts[i], last_len as u8)),
                    counter: j as u64,
                    root: chunks == 1,
                }
            };
            jobs.push(chunk);
        }
    }
    s.chunk_cvs.resize(jobs.len(), [0; 8]);
    hash_chunks(&jobs, &mut s.chunk_cvs);
    // Leaf by leaf for the tree.
    let n = batch.len();
    s.cvs.clear();
    s.cvs
        .extend((0..n * chunks).map(|at| s.chunk_cvs[(at % chunks) * n + at / chunks]));
    // The BLAKE3 tree of each leaf's chunks: adjacent pairs level by level, an odd last node
    // carried up (BLAKE3's left-heavy tree), the last parent flagged as the root.
    let mut width = chunks;
    while width > 1 {
        let above = width.div_ceil(2);
        let flags = if width == 2 { PARENT | ROOT } else { PARENT };
        s.parents.clear();
        for leaf in s.cvs.chunks_exact(width) {
            for pair in leaf.chunks_exact(2) {
                let mut block = [0u8; BLOCK_BYTES];
                block[..CV_BYTES].copy_from_slice(&le_bytes_from_words_32(&pair[0]));
                block[CV_BYTES..].copy_from_slice(&le_bytes_from_words_32(&pair[1]));
                s.parents.push(block);
            }
        }
        let mut parent_jobs: Vec<Compression> = s
            .parents
            .iter()
            .map(|block| Compression {
                cv: IV,
                block,
                block_len: BLOCK_BYTES as u8,
                counter: 0,
                flags,
            })
            .collect();
        compress_many(&mut parent_jobs);
        let pairs = width / 2;
        let mut next = Vec::with_capacity(batch.len() * above);
        for (leaf, parents) in s
            .cvs
            .chunks_exact(width)
            .zip(parent_jobs.chunks_exact(pairs))
        {
            next.extend(parents.iter().map(|job| job.cv));
            if width % 2 == 1 {
                next.push(leaf[width - 1]);
            }
        }
        s.cvs = next;
        width = above;
    }
    out.extend(s.cvs.iter().map(le_bytes_from_words_32));
}

thread_local! {
    /// Each thread's [`LaneScratch`], kept between calls.
    static LANE_SCRATCH: std::cell::RefCell<LaneScratch> =
        std::cell::RefCell::new(LaneScratch::default());
}

/// Buffers reused by every batch of [`lane_leaves`].
#[derive(Default)]
struct LaneScratch {
    /// Each leaf's first block: the head, then the first values.
    firsts: Vec<[u8; BLOCK_BYTES]>,
    /// Each leaf's zero-padded partial last block (unused when its message ends on a block).
    lasts: Vec<[u8; BLOCK_BYTES]>,
    /// Chaining values of chunk `j` of leaf `i` at `[j · n + i]`.
    chunk_cvs: Vec<[u32; 8]>,
    /// Chaining values of each leaf's chunks (then of each tree level), leaf by leaf.
    cvs: Vec<[u32; 8]>,
    /// Parent blocks of one tree level.
    parents: Vec<[u8; BLOCK_BYTES]>,
}

/// The two blocks of a leaf's message that are copied rather than read in place: its first
/// (the head, then the first values) and its last when that is partial and not the first
/// (zero-padded; all zeros otherwise).
fn leaf_ends(index: usize, rows: usize, cols: usize, values: &[f32]) -> [[u8; BLOCK_BYTES]; 2] {
    let message_bytes = HEAD_BYTES + 4 * rows * cols;
    let first_len = message_bytes.min(BLOCK_BYTES);
    let tail = message_bytes.saturating_sub(BLOCK_BYTES) % BLOCK_BYTES;
    let bytes = f32_bytes(values);
    let mut ends = [[0u8; BLOCK_BYTES]; 2];
    ends[0][..HEAD_BYTES].copy_from_slice(&leaf_head(index, rows, cols));
    ends[0][HEAD_BYTES..first_len].copy_from_slice(&bytes[..first_len - HEAD_BYTES]);
    ends[1][..tail].copy_from_slice(&bytes[bytes.len() - tail..]);
    ends
}

/// The leaf message's bytes before the values.
fn leaf_head(index: usize, rows: usize, cols: usize) -> [u8; HEAD_BYTES] {
    let mut head = [0u8; HEAD_BYTES];
    head[0] = LEAF_TAG;
    head[1] = TRACE_DOMAIN.len() as u8;
    let mut at = 2 + TRACE_DOMAIN.len();
    head[2..at].copy_from_slice(TRACE_DOMAIN.as_bytes());
    head[at..at + 8].copy_from_slice(&(index as u64).to_le_bytes());
    at += 8;
    head[at..].copy_from_slice(&shape_header(rows, cols));
    head
}

/// The canonical shape header of a `[rows, cols]` block.
fn shape_header(rows: usize, cols: usize) -> [u8; 20] {
    let mut header = [0u8; 20];
    header[..4].copy_from_slice(&2u32.to_le_bytes());
    header[4..12].copy_from_slice(&(rows as u64).to_le_bytes());
    header[12..].copy_from_slice(&(cols as u64).to_le_bytes());
    header
}

/// `values` as their little-endian bytes, in place.
#[cfg(target_endian = "little")]
fn f32_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte is a valid u8; u8 needs no alignment; the length
    // is exactly 4 × values.len(); on a little-endian target these are the canonical bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len() * 4) }
}

/// `values` as their little-endian bytes: in place on a little-endian target.
fn le_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    #[cfg(target_endian = "little")]
    return Cow::Borrowed(f32_bytes(values));
    #[cfg(not(target_endian = "little"))]
    return Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect());
}

fn words(bytes: &[u8]) -> [u32; 8] {
    let mut out = [0u32; 8];
    for (w, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message length from one BLAKE3 block to past [`CHUNKS_MAX`] chunks equals
    /// `step_hash`, around each block and chunk edge, for batches of one, a few and more than
    /// [`LEAF_BATCH`].
    #[test]
    fn equal_leaves_are_step_hashes() {
        let values: Vec<f32> = (0..40 * 64 * 20).map(|i| i as f32 * 0.37 - 11.0).collect();
        let mut lengths: Vec<usize> = (0..=20).collect();
        for edge in (1..=CHUNKS_MAX + 1)
            .map(|c| c * CHUNK_BYTES)
            .chain([BLOCK_BYTES])
        {
            // Values whose message ends just before, at and just after the edge.
            let floats = (edge - HEAD_BYTES) / 4;
            lengths.extend([floats - 1, floats, floats + 1]);
        }
        lengths.extend([192, 576, 910, 1536]);
        for cols in lengths {
            for (rows, count) in [(1, 1), (1, 3), (2, 17), (1, LEAF_BATCH + 5), (1, 46)] {
                let blocks: Vec<(usize, &[f32])> = (0..count)
                    .map(|i| {
                        let at = (i * 7) % 50;
                        (1000 + 3 * i, &values[at..at + rows * cols])
                    })
                    .collect();
                let expected: Vec<Hash> = blocks
                    .iter()
                    .map(|&(index, v)| step_hash(index, v, rows, cols))
                    .collect();
                let got = equal_leaves(rows, cols, &blocks);
                assert_eq!(got, expected, "{rows} × {cols}, {count} leaves");
                // Each path on its own, whichever `equal_leaves` chose.
                if blake3_lanes::lanes_available() {
                    let mut lockstep = Vec::new();
                    for group in blocks.chunks(blake3_lanes::LANES) {
                        lockstep_leaves(rows, cols, group, &mut lockstep);
                    }
                    assert_eq!(
                        lockstep, expected,
                        "{rows} × {cols}, {count} leaves side by side"
                    );
                    let mut lanes = Vec::new();
                    lane_leaves(rows, cols, &blocks, &mut LaneScratch::default(), &mut lanes);
                    assert_eq!(
                        lanes, expected,
                        "{rows} × {cols}, {count} leaves chunk by chunk"
                    );
                }
                let chunks = (HEAD_BYTES + 4 * rows * cols).div_ceil(CHUNK_BYTES);
                if chunks <= CHUNKS_MAX {
                    let (platform, mut many) = (Platform::detect(), Vec::new());
                    for batch in blocks.chunks(LEAF_BATCH) {
                        let scratch = &mut Scratch::default();
                        batch_leaves(platform, rows, cols, batch, scratch, &mut many);
                    }
                    assert_eq!(many, expected, "{rows} × {cols}, {count} leaves, hash_many");
                }
            }
        }
    }

    /// Groups of an audit pass's kinds (a large prefill block, many single rows, a few
    /// narrow ones, leaves long enough to be cut into BLAKE3 subtrees) cut into pieces on 2,
    /// 3 and 7 threads give each group's `step_hash`es in order, as on one thread.
    #[test]
    fn grouped_leaves_on_many_threads_are_step_hashes_in_order() {
        let values: Vec<f32> = (0..64 * 600).map(|i| (i as f32 * 0.11).cos()).collect();
        let group = |rows: usize, cols: usize, count: usize| -> LeafGroup {
            let blocks = (0..count)
                .map(|i| (7 * i + rows, &values[i * cols..i * cols + rows * cols]))
                .collect();
            (rows, cols, blocks)
        };
        let groups = vec![
            group(64, 576, 1),
            group(1, 576, 63),
            group(3, 576, 1),
            group(1, 12, 40),
            group(1, 910, 0),
            group(40, 600, 2),
        ];
        let expected: Vec<Vec<Hash>> = groups
            .iter()
            .map(|(rows, cols, blocks)| {
                blocks
                    .iter()
                    .map(|&(index, v)| step_hash(index, v, *rows, *cols))
                    .collect()
            })
            .collect();
        for threads in [1, 2, 3, 7] {
            assert_eq!(
                grouped_leaves(&groups, threads),
                expected,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn block_leaves_are_step_hashes_of_the_block() {
        let (rows, width) = (5, 37);
        let output: Vec<f32> = (0..rows * width).map(|i| (i as f32).sin()).collect();
        for (r, c) in [(0..5, 0..37), (1..4, 3..20), (2..3, 10..37), (0..2, 36..37)] {
            let copy: Vec<f32> = r
                .clone()
                .flat_map(|i| output[i * width + c.start..i * width + c.end].to_vec())
                .collect();
            let expected = step_hash(9, &copy, r.len(), c.len());
            assert_eq!(
                block_leaf(9, &output, width, r.clone(), c.clone()),
                expected
            );
        }
    }
}

/// The leaves of a 64-token SmolLM2 audit pass timed alone (the shapes `equal_leaves` sees
/// there, counted once): `cargo test --release -p piazza-llm leaves_speed -- --ignored
/// --nocapture`. Prints milliseconds per pass; asserts nothing about speed.
#[cfg(test)]
mod speed {
    use super::*;

    /// (rows, columns, leaves per call, calls) of one audit pass.
    const AUDIT_SHAPES: [(usize, usize, usize, usize); 17] = [
        (64, 576, 1, 211),
        (3, 576, 1, 211),
        (1, 576, 63, 211),
        (64, 192, 1, 90),
        (3, 192, 1, 90),
        (1, 192, 63, 90),
        (1, 910, 63, 60),
        (1, 626, 63, 60),
        (64, 1536, 1, 30),
        (3, 1536, 1, 30),
        (1, 341, 63, 30),
        (1, 235, 63, 30),
        (1, 192, 189, 30),
        (1, 1536, 63, 30),
        (1, 910, 3456, 1),
        (1, 576, 64, 1),
        (1, 12, 64, 1),
    ];

    /// This thread's CPU seconds (user and system), from `/proc` (0 where there is none): a
    /// measure that a busy machine's other processes do not inflate.
    fn thread_cpu_s() -> f64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }

    #[test]
    #[ignore = "prints timings"]
    fn leaves_speed() {
        let values: Vec<f32> = (0..1 << 22).map(|i| (i as f32 * 0.37).sin()).collect();
        const PASSES: usize = 30;
        let (start, cpu_start) = (std::time::Instant::now(), thread_cpu_s());
        for _ in 0..PASSES {
            let mut at = 0;
            for &(rows, cols, count, calls) in &AUDIT_SHAPES {
                for _ in 0..calls {
                    let blocks: Vec<LeafBlock> = (0..count)
                        .map(|i| {
                            let len = rows * cols;
                            if at + len > values.len() {
                                at = 0;
                            }
                            at += len;
                            (i, &values[at - len..at])
                        })
                        .collect();
                    std::hint::black_box(equal_leaves(rows, cols, &blocks));
                }
            }
        }
        let wall_ms = start.elapsed().as_secs_f64() * 1e3 / PASSES as f64;
        let cpu_ms = (thread_cpu_s() - cpu_start) * 1e3 / PASSES as f64;
        println!(
            "the leaves of one audit pass: {wall_ms:.1} ms, cpu {cpu_ms:.1} ms ({PASSES} passes)"
        );
    }
}

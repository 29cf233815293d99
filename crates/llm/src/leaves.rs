//! Trace leaves (`piazza_trace::trace::step_hash`) hashed without copying the blocks, and many
//! equal-sized leaves at once across BLAKE3's SIMD lanes.
//!
//! A leaf is one BLAKE3 message: the Merkle leaf head (`0x00`, the domain's length and bytes,
//! the step index), the shape header (`2 as u32`, rows and columns as `u64`), then the values
//! as little-endian f32 (docs/engine.md §4). A decode pass's leaves are single rows of a few
//! KiB: hashed one at a time, each BLAKE3 chunk is compressed in one lane. An audit pass has
//! the leaves of every decode pass of an op at once, equal in size, so [`equal_leaves`]
//! compresses BLAKE3 chunk `j` of up to sixteen leaves together (`hash_many`), then their
//! BLAKE3 parents the same way, the way `piazza_blob::commit` hashes its chunk leaves. Only each
//! leaf's first BLAKE3 chunk (which holds the head) is copied, and each last partial block.
//!
//! `blake3::platform` is the crate's undocumented compression interface; the version is held
//! to `~1.8` in `Cargo.toml`, and the tests compare every path with `step_hash`.

use std::ops::Range;

use blake3::platform::{le_bytes_from_words_32, Platform};
use blake3::IncrementCounter;
use piazza_primitives::blake3_words::{CHUNK_END, CHUNK_START, IV, PARENT, ROOT};
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
/// Leaves longer than this many BLAKE3 chunks are hashed one at a time: one such message
/// fills the SIMD lanes by itself (BLAKE3 hashes its chunks together).
const CHUNKS_MAX: usize = 16;
/// Leaves hashed together: every lane several times over, the batch's copied first chunks
/// (`LEAF_BATCH` KiB) in the first-level cache.
const LEAF_BATCH: usize = 32;

/// The leaf of step `index` over rows `rows` × columns `columns` of `output`, a row-major
/// matrix `width` wide: `step_hash` of that block. A single row or whole rows are hashed in
/// place; the rows of a narrower block are copied out first: streamed row by row, each row
/// would start inside a BLAKE3 chunk, and BLAKE3 compresses such input one block at a time
/// (measured slower than the copy and one wide hash).
pub(crate) fn block_leaf(
    index: usize,
    output: &[f32],
    width: usize,
    rows: Range<usize>,
    columns: Range<usize>,
) -> Hash {
    let (row_count, cols) = (rows.len(), columns.len());
    if cols == width || row_count == 1 {
        let start = rows.start * width + columns.start;
        let len = (row_count - 1) * width + cols;
        return step_hash(index, &output[start..start + len], row_count, cols);
    }
    let mut block = Vec::with_capacity(row_count * cols);
    for r in rows {
        block.extend_from_slice(&output[r * width + columns.start..r * width + columns.end]);
    }
    step_hash(index, &block, row_count, cols)
}

/// A leaf's step index and its block's row-major values.
pub(crate) type LeafBlock<'a> = (usize, &'a [f32]);

/// The leaves of `blocks` (step index, row-major values), every block `rows × cols`:
/// `step_hash(index, values, rows, cols)` of each, in order.
pub(crate) fn equal_leaves(rows: usize, cols: usize, blocks: &[LeafBlock]) -> Vec<Hash> {
    let message_bytes = HEAD_BYTES + 4 * rows * cols;
    let chunks = message_bytes.div_ceil(CHUNK_BYTES);
    let lanes = blocks.len() > 1
        && chunks <= CHUNKS_MAX
        && blocks.iter().all(|(_, values)| values.len() == rows * cols);
    if !lanes {
        return blocks
            .iter()
            .map(|&(index, values)| step_hash(index, values, rows, cols))
            .collect();
    }
    #[cfg(target_endian = "little")]
    {
        let platform = Platform::detect();
        let mut scratch = Scratch::default();
        let mut out = Vec::with_capacity(blocks.len());
        for batch in blocks.chunks(LEAF_BATCH) {
            batch_leaves(platform, rows, cols, batch, &mut scratch, &mut out);
        }
        out
    }
    #[cfg(not(target_endian = "little"))]
    blocks
        .iter()
        .map(|&(index, values)| step_hash(index, values, rows, cols))
        .collect()
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
            for (rows, count) in [(1, 1), (1, 3), (2, 17), (1, LEAF_BATCH + 5)] {
                let blocks: Vec<(usize, &[f32])> = (0..count)
                    .map(|i| {
                        let at = (i * 7) % 50;
                        (1000 + 3 * i, &values[at..at + rows * cols])
                    })
                    .collect();
                let got = equal_leaves(rows, cols, &blocks);
                let expected: Vec<Hash> = blocks
                    .iter()
                    .map(|&(index, v)| step_hash(index, v, rows, cols))
                    .collect();
                assert_eq!(got, expected, "{rows} × {cols}, {count} leaves");
            }
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

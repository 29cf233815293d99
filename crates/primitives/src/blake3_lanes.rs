//! Many independent BLAKE3 compressions at once: sixteen lanes of AVX-512 (runtime-detected),
//! one compression at a time through `blake3::platform` elsewhere.
//!
//! `blake3::platform::Platform::hash_many` gives every lane the same chaining value, counter and
//! flags at the start. The short blocks that end messages (a Merkle node's last bytes, a trace
//! leaf's last partial block) each need their own, so callers compressed them one at a time;
//! [`compress_many`] takes each compression's own chaining value, 64-byte block (borrowed, so
//! blocks are read in place), block length, counter and flags. [`hash_chunks`] compresses whole
//! BLAKE3 chunks, each lane taking the next chunk as its own ends, a chunk's blocks read from
//! up to three places (a separate first block, whole blocks in place, a padded last block), so
//! messages with a head in front of their payload are hashed without copying the payload.
//!
//! Invariant: the output is BLAKE3's compression function, bit for bit, on every path (the
//! tests compare the lanes with `blake3::platform` on random inputs, every block length and
//! flag combination, and every lane count up to past two groups).
//!
//! ```
//! use piazza_primitives::blake3_lanes::{compress_many, Compression};
//! use piazza_primitives::blake3_words::{CHUNK_END, CHUNK_START, IV, ROOT};
//! let mut block = [0u8; 64];
//! block[..3].copy_from_slice(b"abc");
//! let mut jobs = [Compression {
//!     cv: IV,
//!     block: &block,
//!     block_len: 3,
//!     counter: 0,
//!     flags: CHUNK_START | CHUNK_END | ROOT,
//! }];
//! compress_many(&mut jobs);
//! assert_eq!(jobs[0].cv[0].to_le_bytes(), blake3::hash(b"abc").as_bytes()[..4]);
//! ```

use blake3::platform::{le_bytes_from_words_32, words_from_le_bytes_32, Platform};

use crate::blake3_words::{CHUNK_END, CHUNK_START, IV, ROOT};

/// Bytes of a BLAKE3 block.
pub const BLOCK_BYTES: usize = blake3::BLOCK_LEN;
/// Compressions made together by the AVX-512 path.
pub const LANES: usize = 16;

/// One BLAKE3 compression: its inputs, and in `cv` its output once [`compress_many`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression<'a> {
    /// The input chaining value; replaced by the output chaining value.
    pub cv: [u32; 8],
    /// The block, zero-padded past `block_len` as BLAKE3 requires.
    pub block: &'a [u8; BLOCK_BYTES],
    /// Bytes of `block` that are message (0..=64).
    pub block_len: u8,
    /// The chunk counter (or 0 for parents).
    pub counter: u64,
    /// Domain flags (`blake3_words`).
    pub flags: u8,
}

/// Compresses every job: each `cv` becomes the chaining value BLAKE3's compression function
/// gives for that job's inputs. Any count; sixteen at a time with AVX-512.
pub fn compress_many(jobs: &mut [Compression<'_>]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        for group in jobs.chunks_mut(LANES) {
            // SAFETY: AVX-512 F was detected on this CPU just above; `group` holds 1..=16
            // jobs, as `compress_lanes` requires.
            unsafe { avx512::compress_lanes(group) };
        }
        return;
    }
    compress_one_at_a_time(jobs);
}

/// The hashes of one-chunk messages whose blocks but the last are already compressed: each
/// message's chaining value so far (`cvs`: 32 little-endian bytes per message, as
/// `Platform::hash_many` writes them, its first block flagged as the chunk's start) and its
/// last block (`tails[i]`: `tail_len` bytes of message, then zeros), compressed as the chunk's
/// end and the root, sixteen at a time. In order.
///
/// # Panics
/// When `cvs` does not hold 32 bytes per tail (the caller's invariant).
pub fn finish_roots(cvs: &[u8], tails: &[[u8; BLOCK_BYTES]], tail_len: u8) -> Vec<[u8; 32]> {
    assert_eq!(cvs.len(), 32 * tails.len(), "one chaining value per tail");
    let mut jobs: Vec<Compression> = tails
        .iter()
        .zip(cvs.chunks_exact(32))
        .map(|(tail, cv)| Compression {
            cv: words_from_le_bytes_32(cv.try_into().expect("32-byte chunks")),
            block: tail,
            block_len: tail_len,
            counter: 0,
            flags: CHUNK_END | ROOT,
        })
        .collect();
    compress_many(&mut jobs);
    jobs.iter()
        .map(|job| le_bytes_from_words_32(&job.cv))
        .collect()
}

/// Whether this CPU has the sixteen AVX-512 lanes (without them every function here
/// compresses one block at a time, slower than `blake3::platform::Platform::hash_many` for
/// messages it can take).
pub fn lanes_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return true;
    }
    false
}

/// The fallback, and the tests' reference: one `blake3::platform` compression per job.
fn compress_one_at_a_time(jobs: &mut [Compression<'_>]) {
    let platform = Platform::detect();
    for job in jobs {
        platform.compress_in_place(
            &mut job.cv,
            job.block,
            job.block_len,
            job.counter,
            job.flags,
        );
    }
}

/// One BLAKE3 chunk of a message, compressed from the IV: its blocks are `first` (if any),
/// then `middle`'s whole blocks read in place, then `last` (if any), 1..=16 blocks in all.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    /// A first block kept apart from the others (a message's head, say).
    pub first: Option<&'a [u8; BLOCK_BYTES]>,
    /// Whole blocks: a multiple of 64 bytes.
    pub middle: &'a [u8],
    /// A final block kept apart (a zero-padded partial one, say) and its length (0..=64).
    pub last: Option<(&'a [u8; BLOCK_BYTES], u8)>,
    /// The chunk's index in its message.
    pub counter: u64,
    /// Whether the chunk is the whole message: its last block is then flagged as the root.
    pub root: bool,
}

impl<'a> Chunk<'a> {
    /// Blocks in the chunk.
    pub fn block_count(&self) -> usize {
        usize::from(self.first.is_some())
            + self.middle.len() / BLOCK_BYTES
            + usize::from(self.last.is_some())
    }

    /// Block `b` (below [`Chunk::block_count`]) and its length.
    fn block(&self, b: usize) -> (&'a [u8; BLOCK_BYTES], u8) {
        let middle_start = usize::from(self.first.is_some());
        let middle_blocks = self.middle.len() / BLOCK_BYTES;
        match (self.first, self.last) {
            (Some(first), _) if b == 0 => (first, BLOCK_BYTES as u8),
            (_, Some(last)) if b == middle_start + middle_blocks => last,
            _ => {
                let at = (b - middle_start) * BLOCK_BYTES;
                let block = self.middle[at..at + BLOCK_BYTES]
                    .try_into()
                    .expect("a 64-byte slice");
                (block, BLOCK_BYTES as u8)
            }
        }
    }

    /// The chunk's blocks into `list` (in order, from its start): their count and the last
    /// one's length.
    fn list_blocks(&self, list: &mut [&'a [u8; BLOCK_BYTES]; BLOCKS_PER_CHUNK]) -> (usize, u8) {
        let (middle, _) = self.middle.as_chunks::<BLOCK_BYTES>();
        let blocks = self
            .first
            .into_iter()
            .chain(middle)
            .chain(self.last.map(|(b, _)| b));
        let mut count = 0;
        for (slot, block) in list.iter_mut().zip(blocks) {
            *slot = block;
            count += 1;
        }
        let last_len = self.last.map_or(BLOCK_BYTES as u8, |(_, len)| len);
        (count, last_len)
    }

    /// The flags of block `b`: chunk start, chunk end, root.
    fn flags(&self, b: usize) -> u8 {
        let mut flags = 0;
        if b == 0 {
            flags |= CHUNK_START;
        }
        if b + 1 == self.block_count() {
            flags |= CHUNK_END;
            if self.root {
                flags |= ROOT;
            }
        }
        flags
    }

    fn check(&self) {
        assert!(
            self.middle.len().is_multiple_of(BLOCK_BYTES)
                && (1..=BLOCKS_PER_CHUNK).contains(&self.block_count()),
            "a chunk is 1..=16 whole blocks, its last possibly partial"
        );
    }
}

/// Blocks in a BLAKE3 chunk.
const BLOCKS_PER_CHUNK: usize = blake3::CHUNK_LEN / BLOCK_BYTES;

/// The chaining value (the root's output words, for a root chunk) of every chunk, into `out`
/// (as long as `chunks`). Any count; sixteen chunks at a time with AVX-512, each lane taking
/// the next chunk as its own ends, so chunks of different lengths keep the lanes full.
///
/// # Panics
/// When `out` is not as long as `chunks`, or a chunk is not 1..=16 blocks of which only the
/// last is partial (the caller's invariant, never input-dependent).
pub fn hash_chunks(chunks: &[Chunk<'_>], out: &mut [[u32; 8]]) {
    assert_eq!(chunks.len(), out.len(), "one output per chunk");
    chunks.iter().for_each(Chunk::check);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512 F was detected on this CPU just above.
        unsafe { avx512::hash_chunks_lanes(chunks, out) };
        return;
    }
    hash_chunks_one_at_a_time(chunks, out);
}

/// The fallback, and the tests' reference: each chunk's blocks through `blake3::platform`.
fn hash_chunks_one_at_a_time(chunks: &[Chunk<'_>], out: &mut [[u32; 8]]) {
    let platform = Platform::detect();
    for (chunk, cv) in chunks.iter().zip(out) {
        *cv = IV;
        for b in 0..chunk.block_count() {
            let (block, block_len) = chunk.block(b);
            platform.compress_in_place(cv, block, block_len, chunk.counter, chunk.flags(b));
        }
    }
}

/// One whole message of [`hash_messages`], as its blocks: `first` (its first 64 bytes,
/// zero-padded when it is shorter), then `middle`'s whole blocks read in place, then `last`
/// (a zero-padded partial final block) when the message ends inside a block after the first.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// Block 0.
    pub first: &'a [u8; BLOCK_BYTES],
    /// Whole blocks after the first: a multiple of 64 bytes.
    pub middle: &'a [u8],
    /// The partial final block, when there is one after the first.
    pub last: Option<&'a [u8; BLOCK_BYTES]>,
}

impl Message<'_> {
    /// Whether the blocks make a message of `len` bytes.
    fn fits(&self, len: usize) -> bool {
        let tail = len.saturating_sub(BLOCK_BYTES) % BLOCK_BYTES;
        let middle = len.saturating_sub(BLOCK_BYTES) - tail;
        self.middle.len() == middle && self.last.is_some() == (len > BLOCK_BYTES && tail > 0)
    }

    /// The message's bytes in order (the first `len` of its blocks').
    fn bytes(&self, len: usize) -> impl Iterator<Item = &[u8]> {
        let first = &self.first[..len.min(BLOCK_BYTES)];
        let tail = len.saturating_sub(BLOCK_BYTES) % BLOCK_BYTES;
        let last = self.last.map(|block| &block[..tail]);
        [first, self.middle].into_iter().chain(last)
    }
}

/// The BLAKE3 hash of every message of `messages`, each `len` bytes long, into `out` (as
/// long). With AVX-512, sixteen messages go through their blocks side by side: every lane
/// compresses block `b` of its own message at the same step with the same counter, flags and
/// length, so no lane waits or switches messages, and the chunks' chaining values merge into
/// each message's tree in the vectors (BLAKE3's merge order, the last parent the root).
/// Sixteen at a time, so fewer than about four messages are cheaper through `blake3::hash`.
///
/// # Panics
/// When `out` is not as long as `messages`, or a message's blocks do not make `len` bytes
/// (the caller's invariant, never input-dependent).
pub fn hash_messages(len: usize, messages: &[Message<'_>], out: &mut [[u8; 32]]) {
    assert_eq!(messages.len(), out.len(), "one hash per message");
    assert!(
        messages.iter().all(|m| m.fits(len)),
        "a message's blocks make `len` bytes"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        for (group, out) in messages.chunks(LANES).zip(out.chunks_mut(LANES)) {
            // SAFETY: AVX-512 F was detected on this CPU just above; `group` holds 1..=16
            // messages of `len` bytes and `out` as many hashes.
            unsafe { avx512::hash_messages_lanes(len, group, out) };
        }
        return;
    }
    hash_messages_one_at_a_time(len, messages, out);
}

/// The fallback, and the tests' reference: each message through `blake3::Hasher`.
fn hash_messages_one_at_a_time(len: usize, messages: &[Message<'_>], out: &mut [[u8; 32]]) {
    for (message, out) in messages.iter().zip(out) {
        let mut hasher = blake3::Hasher::new();
        for bytes in message.bytes(len) {
            hasher.update(bytes);
        }
        *out = *hasher.finalize().as_bytes();
    }
}

/// BLAKE3's message word order in each of its seven rounds: round 0 reads the words in order,
/// each later round the previous round's order permuted.
const SCHEDULE: [[usize; 16]; 7] = schedule();

const fn schedule() -> [[usize; 16]; 7] {
    const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
    let mut out = [[0; 16]; 7];
    let mut word = 0;
    while word < 16 {
        out[0][word] = word;
        word += 1;
    }
    let mut round = 1;
    while round < 7 {
        let mut word = 0;
        while word < 16 {
            out[round][word] = out[round - 1][PERMUTATION[word]];
            word += 1;
        }
        round += 1;
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Chunk, Compression, Message, BLOCKS_PER_CHUNK, BLOCK_BYTES, LANES, SCHEDULE};
    use crate::blake3_words::IV;
    use crate::blake3_words::{CHUNK_END, CHUNK_START, PARENT, ROOT};
    use std::arch::x86_64::*;

    /// Four G mixes side by side, step by step (independent chains, interleaved for the
    /// out-of-order core): G over state words `(a_k, b_k, c_k, d_k)` with message words
    /// `(x_k, y_k)`, k = 0..4.
    macro_rules! g4 {
        ($v:ident, [$($a:literal),*], [$($b:literal),*], [$($c:literal),*], [$($d:literal),*],
         [$($x:expr),*], [$($y:expr),*]) => {
            $( $v[$a] = _mm512_add_epi32(_mm512_add_epi32($v[$a], $x), $v[$b]); )*
            $( $v[$d] = _mm512_ror_epi32::<16>(_mm512_xor_si512($v[$d], $v[$a])); )*
            $( $v[$c] = _mm512_add_epi32($v[$c], $v[$d]); )*
            $( $v[$b] = _mm512_ror_epi32::<12>(_mm512_xor_si512($v[$b], $v[$c])); )*
            $( $v[$a] = _mm512_add_epi32(_mm512_add_epi32($v[$a], $y), $v[$b]); )*
            $( $v[$d] = _mm512_ror_epi32::<8>(_mm512_xor_si512($v[$d], $v[$a])); )*
            $( $v[$c] = _mm512_add_epi32($v[$c], $v[$d]); )*
            $( $v[$b] = _mm512_ror_epi32::<7>(_mm512_xor_si512($v[$b], $v[$c])); )*
        };
    }

    /// Round `r`: the columns, then the diagonals, message words in `SCHEDULE[r]`'s order.
    macro_rules! round {
        ($v:ident, $m:ident, $r:literal) => {
            let s = &SCHEDULE[$r];
            // Each message word read at its use, an operand of its addition (volatile, so
            // that LLVM does not hold all sixteen in registers and spill the state instead:
            // measured 10.5 -> 9.7 ns a block with the interleaved G mixes).
            // SAFETY: `$m` points at a borrowed, aligned array of 16 vectors; every index of
            // the schedule is below 16.
            let w = |i: usize| unsafe { std::ptr::read_volatile($m.add(s[i])) };
            g4!(
                $v,
                [0, 1, 2, 3],
                [4, 5, 6, 7],
                [8, 9, 10, 11],
                [12, 13, 14, 15],
                [w(0), w(2), w(4), w(6)],
                [w(1), w(3), w(5), w(7)]
            );
            g4!(
                $v,
                [0, 1, 2, 3],
                [5, 6, 7, 4],
                [10, 11, 8, 9],
                [15, 12, 13, 14],
                [w(8), w(10), w(12), w(14)],
                [w(9), w(11), w(13), w(15)]
            );
        };
    }

    /// BLAKE3's compression in every lane: chaining values `cv` (word `w` of lane `i` in lane
    /// `i` of vector `w`), message words `m` (likewise), and per lane the counter's low and
    /// high halves, the block length and the flags in `words`; the output chaining values. A
    /// macro, so that the whole compression is inlined into the caller (whose target features
    /// it uses) and the state stays in registers.
    macro_rules! compress {
        ($cv:expr, $m:expr, $words:expr) => {{
            let (cv, m, words): ([__m512i; 8], &[__m512i; 16], [__m512i; 4]) = ($cv, $m, $words);
            let m: *const __m512i = m.as_ptr();
            let mut v = [
                cv[0],
                cv[1],
                cv[2],
                cv[3],
                cv[4],
                cv[5],
                cv[6],
                cv[7],
                _mm512_set1_epi32(IV[0] as i32),
                _mm512_set1_epi32(IV[1] as i32),
                _mm512_set1_epi32(IV[2] as i32),
                _mm512_set1_epi32(IV[3] as i32),
                words[0],
                words[1],
                words[2],
                words[3],
            ];
            round!(v, m, 0);
            round!(v, m, 1);
            round!(v, m, 2);
            round!(v, m, 3);
            round!(v, m, 4);
            round!(v, m, 5);
            round!(v, m, 6);
            let out: [__m512i; 8] = std::array::from_fn(|w| _mm512_xor_si512(v[w], v[w + 8]));
            out
        }};
    }

    /// Compresses `jobs` (1..=16) in the sixteen 32-bit lanes of AVX-512 vectors: lane `i`
    /// holds job `i`; lanes past the count repeat job 0 and are not written back.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn compress_lanes(jobs: &mut [Compression<'_>]) {
        let n = jobs.len();
        assert!((1..=LANES).contains(&n), "1..=16 jobs per call");
        let blocks: [&[u8; BLOCK_BYTES]; LANES] =
            std::array::from_fn(|i| jobs[if i < n { i } else { 0 }].block);
        let m = load_transposed(&blocks);
        // Per-lane words past the chaining value: the counter's halves, length and flags.
        let mut words = [[0u32; LANES]; 4];
        for (i, job) in jobs.iter().enumerate() {
            words[0][i] = job.counter as u32;
            words[1][i] = (job.counter >> 32) as u32;
            words[2][i] = u32::from(job.block_len);
            words[3][i] = u32::from(job.flags);
        }
        // SAFETY: each `words[k]` is 16 u32, the 64 bytes an unaligned 512-bit load reads.
        let words = words.map(|lanes| unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) });
        let out = compress!(load_cvs(jobs), &m, words);
        store_cvs(&out, jobs);
    }

    /// Every chunk's chaining value into `out` (as long as `chunks`): one chunk per lane, a
    /// block per lane a step; a lane whose chunk ends writes its chaining value out, takes
    /// the next chunk and restarts from the IV. Each lane's block pointers are listed when it
    /// takes a chunk; counters, lengths and flags stay in vectors, flags and lengths derived
    /// from the block index by comparisons. Idle lanes (at the end) compress a zero block that
    /// nobody reads.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn hash_chunks_lanes<'a>(chunks: &[Chunk<'a>], out: &mut [[u32; 8]]) {
        assert_eq!(chunks.len(), out.len(), "one output per chunk");
        const IDLE: usize = usize::MAX;
        static ZERO: [u8; BLOCK_BYTES] = [0; BLOCK_BYTES];
        let zero: &'a [u8; BLOCK_BYTES] = &ZERO;
        let iv: [__m512i; 8] = std::array::from_fn(|w| _mm512_set1_epi32(IV[w] as i32));
        // Per lane: its chunk, that chunk's blocks, and (row by row, for the vectors below)
        // block count, last block length, root flag and counter halves.
        let mut lane_chunk = [IDLE; LANES];
        let mut lane_blocks = [[zero; BLOCKS_PER_CHUNK]; LANES];
        let mut lane_words = [[0u32; LANES]; 5];
        let mut next = 0;
        // Lane `lane` takes the next chunk, or goes idle (a block count no index reaches).
        let mut take = |lane: usize,
                        lane_chunk: &mut [usize; LANES],
                        lane_blocks: &mut [[&'a [u8; BLOCK_BYTES]; BLOCKS_PER_CHUNK]; LANES],
                        lane_words: &mut [[u32; LANES]; 5]| {
            let Some(chunk) = chunks.get(next) else {
                lane_chunk[lane] = IDLE;
                lane_blocks[lane][0] = zero;
                lane_words[0][lane] = u32::MAX;
                return;
            };
            lane_chunk[lane] = next;
            next += 1;
            let (count, last_len) = chunk.list_blocks(&mut lane_blocks[lane]);
            lane_words[0][lane] = count as u32;
            lane_words[1][lane] = u32::from(last_len);
            lane_words[2][lane] = if chunk.root { u32::from(ROOT) } else { 0 };
            lane_words[3][lane] = chunk.counter as u32;
            lane_words[4][lane] = (chunk.counter >> 32) as u32;
        };
        for lane in 0..LANES {
            take(lane, &mut lane_chunk, &mut lane_blocks, &mut lane_words);
        }
        // SAFETY: each `lane_words[k]` is 16 u32, the 64 bytes an unaligned 512-bit load reads.
        let load = |words: &[u32; LANES]| unsafe { _mm512_loadu_si512(words.as_ptr().cast()) };
        let mut vectors: [__m512i; 5] = std::array::from_fn(|k| load(&lane_words[k]));
        let (one, full) = (_mm512_set1_epi32(1), _mm512_set1_epi32(BLOCK_BYTES as i32));
        let (start, end) = (
            _mm512_set1_epi32(i32::from(CHUNK_START)),
            _mm512_set1_epi32(i32::from(CHUNK_END)),
        );
        let mut index = _mm512_setzero_si512();
        let mut lane_index = [0usize; LANES];
        let mut cv = iv;
        let mut blocks = [zero; LANES];
        let mut cv_words = [[0u32; LANES]; 8];
        while lane_chunk.iter().any(|&c| c != IDLE) {
            for lane in 0..LANES {
                let block = lane_blocks[lane][lane_index[lane] % BLOCKS_PER_CHUNK];
                blocks[lane] = block;
                // Two blocks ahead, as BLAKE3's own lanes do (a hint: the address need not be
                // valid, `prefetch` never faults).
                _mm_prefetch::<_MM_HINT_T0>(block.as_ptr().wrapping_add(2 * BLOCK_BYTES).cast());
            }
            let m = load_transposed(&blocks);
            let [count, last_len, root, counter_low, counter_high] = vectors;
            let first = _mm512_cmpeq_epi32_mask(index, _mm512_setzero_si512());
            let ending = _mm512_cmpeq_epi32_mask(_mm512_add_epi32(index, one), count);
            let flags = _mm512_or_si512(
                _mm512_maskz_mov_epi32(first, start),
                _mm512_maskz_mov_epi32(ending, _mm512_or_si512(end, root)),
            );
            let length = _mm512_mask_blend_epi32(ending, full, last_len);
            let words = [counter_low, counter_high, length, flags];
            cv = compress!(cv, &m, words);
            index = _mm512_add_epi32(index, one);
            for i in &mut lane_index {
                *i += 1;
            }
            if ending == 0 {
                continue;
            }
            for (w, lanes) in cv_words.iter_mut().enumerate() {
                // SAFETY: `lanes` is 16 u32, the 64 bytes an unaligned 512-bit store writes.
                unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), cv[w]) };
            }
            for lane in (0..LANES).filter(|lane| ending >> lane & 1 == 1) {
                // An idle lane never ends (its count is out of reach), and writes nothing.
                let Some(cv_out) = out.get_mut(lane_chunk[lane]) else {
                    continue;
                };
                *cv_out = std::array::from_fn(|w| cv_words[w][lane]);
                take(lane, &mut lane_chunk, &mut lane_blocks, &mut lane_words);
                lane_index[lane] = 0;
            }
            vectors = std::array::from_fn(|k| load(&lane_words[k]));
            index = _mm512_maskz_mov_epi32(!ending, index);
            cv = std::array::from_fn(|w| _mm512_mask_blend_epi32(ending, cv[w], iv[w]));
        }
    }

    /// Chaining values a message's tree holds at once on the stack (one per bit of its chunk
    /// count: messages up to 256 chunks); longer messages keep theirs on the heap.
    const STACK_DEPTH: usize = 8;

    /// [`super::hash_messages`] of up to sixteen messages of `len` bytes: lane `i` hashes
    /// message `i` (lanes past the count repeat message 0 and are not written out). Block `b`
    /// of every message at step `b`: chunk `b / 16`, its start at `b % 16 == 0`, its end at
    /// `b % 16 == 15` or the last block. A finished chunk's chaining value (not the last
    /// chunk's) joins a stack, merged with the ones below while the count of chunks so far is
    /// even (BLAKE3's incremental tree); the last chunk's then merges down the stack, the final
    /// parent flagged as the root (or the only chunk is). Parents read their two children
    /// straight from the vectors: word `w` of every lane's left child is vector `w`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `messages` holds 1..=16 messages whose blocks make
    /// `len` bytes, `out` as many hashes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn hash_messages_lanes(
        len: usize,
        messages: &[Message<'_>],
        out: &mut [[u8; 32]],
    ) {
        let n = messages.len();
        assert!(
            (1..=LANES).contains(&n) && out.len() == n,
            "1..=16 messages"
        );
        let message = |i: usize| &messages[if i < n { i } else { 0 }];
        let blocks = len.div_ceil(BLOCK_BYTES).max(1);
        let last_len = len - (blocks - 1) * BLOCK_BYTES;
        let chunks = blocks.div_ceil(BLOCKS_PER_CHUNK);
        let middle_blocks = message(0).middle.len() / BLOCK_BYTES;
        // Each lane's three parts, checked by the caller to make `len` bytes: block `b` of a
        // lane is its first, `middle + (b - 1) · 64`, or its last.
        let firsts: [*const u8; LANES] = std::array::from_fn(|i| message(i).first.as_ptr());
        let middles: [*const u8; LANES] = std::array::from_fn(|i| message(i).middle.as_ptr());
        let lasts: [*const u8; LANES] =
            std::array::from_fn(|i| message(i).last.unwrap_or(message(i).first).as_ptr());
        let splat = |word: u32| _mm512_set1_epi32(word as i32);
        let iv: [__m512i; 8] = std::array::from_fn(|w| splat(IV[w]));
        let zero = _mm512_setzero_si512();
        // A parent node of every lane: the children's words as the block, the key as the
        // chaining value.
        let parent = |left: &[__m512i; 8], right: &[__m512i; 8], flags: u8| -> [__m512i; 8] {
            let m: [__m512i; 16] =
                std::array::from_fn(|w| if w < 8 { left[w] } else { right[w - 8] });
            let words = [
                zero,
                zero,
                splat(BLOCK_BYTES as u32),
                splat(u32::from(flags)),
            ];
            compress!(iv, &m, words)
        };
        // Subtrees waiting for their right siblings (uninitialised past `depth`).
        let tree_depth = chunks.ilog2() as usize + 1;
        let mut on_stack = [std::mem::MaybeUninit::<[__m512i; 8]>::uninit(); STACK_DEPTH];
        let mut on_heap = Vec::new();
        let stack = if tree_depth <= STACK_DEPTH {
            &mut on_stack[..]
        } else {
            on_heap.resize(tree_depth, std::mem::MaybeUninit::uninit());
            &mut on_heap[..]
        };
        let mut depth = 0;
        let mut cv = iv;
        for b in 0..blocks {
            let (chunk, k) = (b / BLOCKS_PER_CHUNK, b % BLOCKS_PER_CHUNK);
            let final_block = b + 1 == blocks;
            let chunk_end = k + 1 == BLOCKS_PER_CHUNK || final_block;
            // Block `b` of every lane's message: the same part of each.
            let lane_blocks: [*const u8; LANES] = if b == 0 {
                firsts
            } else if b <= middle_blocks {
                let at = (b - 1) * BLOCK_BYTES;
                // SAFETY: block `b - 1` of every middle is inside it (`b <= middle_blocks`).
                std::array::from_fn(|i| unsafe { middles[i].add(at) })
            } else {
                lasts
            };
            if b + 2 <= middle_blocks {
                // Two blocks ahead, as BLAKE3's own lanes do (a hint: never faults).
                for block in lane_blocks {
                    _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(2 * BLOCK_BYTES).cast());
                }
            }
            // SAFETY: each pointer starts a 64-byte block of its message's parts.
            let m = unsafe { load_transposed_at(&lane_blocks) };
            let mut flags = 0;
            if k == 0 {
                flags |= CHUNK_START;
            }
            if chunk_end {
                flags |= CHUNK_END;
            }
            if final_block && chunks == 1 {
                flags |= ROOT;
            }
            let block_len = if final_block { last_len } else { BLOCK_BYTES };
            let words = [
                splat(chunk as u32),
                splat((chunk as u64 >> 32) as u32),
                splat(block_len as u32),
                splat(u32::from(flags)),
            ];
            cv = compress!(cv, &m, words);
            if chunk_end && !final_block {
                let mut node = cv;
                let mut total = chunk + 1;
                while total % 2 == 0 {
                    depth -= 1;
                    // SAFETY: entries below `depth` were written.
                    node = parent(unsafe { stack[depth].assume_init_ref() }, &node, PARENT);
                    total /= 2;
                }
                stack[depth].write(node);
                depth += 1;
                cv = iv;
            }
        }
        while depth > 0 {
            depth -= 1;
            let flags = if depth == 0 { PARENT | ROOT } else { PARENT };
            // SAFETY: entries below the old `depth` were written.
            cv = parent(unsafe { stack[depth].assume_init_ref() }, &cv, flags);
        }
        let mut words = [[0u32; LANES]; 8];
        for (lanes, vector) in words.iter_mut().zip(&cv) {
            // SAFETY: `lanes` is 16 u32, the 64 bytes an unaligned 512-bit store writes.
            unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), *vector) };
        }
        for (i, hash) in out.iter_mut().enumerate() {
            for (w, bytes) in hash.chunks_exact_mut(4).enumerate() {
                bytes.copy_from_slice(&words[w][i].to_le_bytes());
            }
        }
    }

    /// 64-bit picks of `_mm512_permutex2var_epi64` that join the 128-bit lanes 0 and 2 (`LOW`)
    /// or 1 and 3 (`HIGH`) of two vectors `a`, `b` as `[a, b, a, b]`.
    const JOIN_LOW: [i64; 8] = [0, 1, 8, 9, 4, 5, 12, 13];
    const JOIN_HIGH: [i64; 8] = [2, 3, 10, 11, 6, 7, 14, 15];

    /// An 8 × 8 transpose of 32-bit words within each 256-bit half of `rows`, up to the last
    /// step: `(low, high)` where 128-bit lane `L` of `low[k]` holds words 0..4 of the output
    /// row `k + 4 (L mod 2)` of the half `L / 2`, and `high[k]` its words 4..8.
    #[target_feature(enable = "avx512f")]
    fn transpose_halves(rows: &[__m512i; 8]) -> ([__m512i; 4], [__m512i; 4]) {
        let quads = |r: &[__m512i]| -> [__m512i; 4] {
            let low01 = _mm512_unpacklo_epi32(r[0], r[1]);
            let high01 = _mm512_unpackhi_epi32(r[0], r[1]);
            let low23 = _mm512_unpacklo_epi32(r[2], r[3]);
            let high23 = _mm512_unpackhi_epi32(r[2], r[3]);
            [
                _mm512_unpacklo_epi64(low01, low23),
                _mm512_unpackhi_epi64(low01, low23),
                _mm512_unpacklo_epi64(high01, high23),
                _mm512_unpackhi_epi64(high01, high23),
            ]
        };
        (quads(&rows[..4]), quads(&rows[4..]))
    }

    /// The jobs' chaining values, word `w` of job `i` in lane `i` of vector `w` (lanes past
    /// the count repeat job 0): job `i` and job `i + 8` loaded as one vector's halves, then
    /// transposed.
    #[target_feature(enable = "avx512f")]
    fn load_cvs(jobs: &[Compression<'_>]) -> [__m512i; 8] {
        let cv_of = |i: usize| -> *const __m256i {
            jobs.get(i)
                .map_or(jobs[0].cv.as_ptr(), |job| job.cv.as_ptr())
                .cast()
        };
        // SAFETY: each pointer is a job's `[u32; 8]`, the 32 bytes an unaligned 256-bit load
        // reads.
        let rows: [__m512i; 8] = std::array::from_fn(|i| unsafe {
            let low = _mm512_castsi256_si512(_mm256_loadu_si256(cv_of(i)));
            _mm512_inserti64x4::<1>(low, _mm256_loadu_si256(cv_of(i + 8)))
        });
        transpose_rows(&rows)
    }

    /// Rows `i` (`[a_i | b_i]`, eight words of each of two lanes' data `a_i` = lane `i`,
    /// `b_i` = lane `i + 8`) to columns: vector `w` holds word `w` of lane `i` in lane `i`.
    #[target_feature(enable = "avx512f")]
    fn transpose_rows(rows: &[__m512i; 8]) -> [__m512i; 8] {
        let (low, high) = transpose_halves(rows);
        // SAFETY: the picks are 8 i64, the 64 bytes an unaligned 512-bit load reads.
        let join_low = unsafe { _mm512_loadu_si512(JOIN_LOW.as_ptr().cast()) };
        let join_high = unsafe { _mm512_loadu_si512(JOIN_HIGH.as_ptr().cast()) };
        std::array::from_fn(|w| {
            let (k, join) = if w < 4 {
                (w, join_low)
            } else {
                (w - 4, join_high)
            };
            _mm512_permutex2var_epi64(low[k], join, high[k])
        })
    }

    /// Job `i`'s chaining value back from lane `i` of the eight word vectors `cvs`: the
    /// transpose of [`load_cvs`].
    #[target_feature(enable = "avx512f")]
    fn store_cvs(cvs: &[__m512i; 8], jobs: &mut [Compression<'_>]) {
        let (low, high) = transpose_halves(cvs);
        // SAFETY: the picks are 8 i64, the 64 bytes an unaligned 512-bit load reads.
        let join_low = unsafe { _mm512_loadu_si512(JOIN_LOW.as_ptr().cast()) };
        let join_high = unsafe { _mm512_loadu_si512(JOIN_HIGH.as_ptr().cast()) };
        for k in 0..4 {
            for (i, join) in [(k, join_low), (k + 4, join_high)] {
                // Job `i`'s words in the low half, job `i + 8`'s in the high half.
                let both = _mm512_permutex2var_epi64(low[k], join, high[k]);
                for (j, half) in [
                    (i, _mm512_castsi512_si256(both)),
                    (i + 8, _mm512_extracti64x4_epi64::<1>(both)),
                ] {
                    if let Some(job) = jobs.get_mut(j) {
                        // SAFETY: `job.cv` is `[u32; 8]`, the 32 bytes an unaligned 256-bit
                        // store writes.
                        unsafe { _mm256_storeu_si256(job.cv.as_mut_ptr().cast(), half) };
                    }
                }
            }
        }
    }

    /// The blocks' message words, word `w` of block `i` in lane `i` of vector `w` (blocks are
    /// little-endian words, as is x86): each half block of blocks `i` and `i + 8` loaded as
    /// one vector's halves, then the 8 × 16 transposes of [`load_cvs`].
    #[target_feature(enable = "avx512f")]
    fn load_transposed(blocks: &[&[u8; BLOCK_BYTES]; LANES]) -> [__m512i; 16] {
        // SAFETY: each pointer is a whole 64-byte block.
        unsafe { load_transposed_at(&blocks.map(|block| block.as_ptr())) }
    }

    /// [`load_transposed`] of the blocks at `blocks`. Safety: each pointer can be read for 64
    /// bytes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_transposed_at(blocks: &[*const u8; LANES]) -> [__m512i; 16] {
        let half = |h: usize| -> [__m512i; 8] {
            // SAFETY: bytes `32h..32h + 32` (h is 0 or 1) of each block are the 32 bytes an
            // unaligned 256-bit load reads, inside its 64 (the caller's contract).
            let rows: [__m512i; 8] = std::array::from_fn(|i| unsafe {
                let low = _mm256_loadu_si256(blocks[i].add(32 * h).cast());
                let high = _mm256_loadu_si256(blocks[i + 8].add(32 * h).cast());
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
            });
            transpose_rows(&rows)
        };
        let (low, high) = (half(0), half(1));
        std::array::from_fn(|w| if w < 8 { low[w] } else { high[w - 8] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// xorshift64: reproducible inputs without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Messages of one whole block and 1..=64 more bytes: the first block through
    /// `hash_many`, the rest through [`finish_roots`], equal `blake3::hash`.
    #[test]
    fn finished_roots_are_blake3_hashes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for tail_len in [1usize, 7, 31, 63, 64] {
            for count in [1usize, 5, 16, 17, 40] {
                let messages: Vec<Vec<u8>> = (0..count)
                    .map(|_| {
                        (0..BLOCK_BYTES + tail_len)
                            .map(|_| rng.next() as u8)
                            .collect()
                    })
                    .collect();
                let firsts: Vec<&[u8; BLOCK_BYTES]> = messages
                    .iter()
                    .map(|m| m[..BLOCK_BYTES].try_into().expect("a block"))
                    .collect();
                let mut cvs = vec![0u8; 32 * count];
                Platform::detect().hash_many(
                    &firsts,
                    &IV,
                    0,
                    blake3::IncrementCounter::No,
                    0,
                    CHUNK_START,
                    0,
                    &mut cvs,
                );
                let tails: Vec<[u8; BLOCK_BYTES]> = messages
                    .iter()
                    .map(|m| {
                        let mut tail = [0u8; BLOCK_BYTES];
                        tail[..tail_len].copy_from_slice(&m[BLOCK_BYTES..]);
                        tail
                    })
                    .collect();
                let expected: Vec<[u8; 32]> = messages
                    .iter()
                    .map(|m| *blake3::hash(m).as_bytes())
                    .collect();
                assert_eq!(
                    finish_roots(&cvs, &tails, tail_len as u8),
                    expected,
                    "{count} messages, {tail_len}-byte tails"
                );
            }
        }
    }

    /// `jobs` through [`compress_many`] (and the AVX-512 lanes directly, where the CPU has
    /// them) equal `blake3::platform`'s portable compression of each.
    fn check(jobs: &[Compression<'_>]) {
        let mut expected = jobs.to_vec();
        for job in &mut expected {
            Platform::portable().compress_in_place(
                &mut job.cv,
                job.block,
                job.block_len,
                job.counter,
                job.flags,
            );
        }
        let mut got = jobs.to_vec();
        compress_many(&mut got);
        assert_eq!(got, expected, "{} jobs", jobs.len());
        let mut got = jobs.to_vec();
        compress_one_at_a_time(&mut got);
        assert_eq!(got, expected, "{} jobs one at a time", jobs.len());
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let mut got = jobs.to_vec();
            for group in got.chunks_mut(LANES) {
                // SAFETY: AVX-512 F detected just above; groups of 1..=16.
                unsafe { avx512::compress_lanes(group) };
            }
            assert_eq!(got, expected, "{} jobs in AVX-512 lanes", jobs.len());
        }
    }

    #[test]
    fn lanes_equal_the_platform_compression() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let blocks: Vec<[u8; BLOCK_BYTES]> = (0..70)
            .map(|_| std::array::from_fn(|_| rng.next() as u8))
            .collect();
        let job = |rng: &mut Rng, i: usize| Compression {
            cv: std::array::from_fn(|_| rng.next() as u32),
            block: &blocks[i % blocks.len()],
            block_len: (rng.next() % 65) as u8,
            counter: rng.next() >> (rng.next() % 64),
            flags: (rng.next() % 16) as u8,
        };
        for count in (0..=2 * LANES + 3).chain([64, 70]) {
            let jobs: Vec<Compression> = (0..count).map(|i| job(&mut rng, i)).collect();
            check(&jobs);
        }
        // Every block length and every flag combination, in mixed lanes.
        let mut jobs: Vec<Compression> = Vec::new();
        for block_len in 0..=BLOCK_BYTES as u8 {
            for flags in 0..16u8 {
                let mut j = job(&mut rng, jobs.len());
                (j.block_len, j.flags) = (block_len, flags);
                jobs.push(j);
            }
        }
        check(&jobs);
    }

    /// A short message hashed with one compression equals `blake3::hash`.
    #[test]
    fn one_block_messages_are_blake3_hashes() {
        for len in 0..=BLOCK_BYTES {
            let message: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut block = [0u8; BLOCK_BYTES];
            block[..len].copy_from_slice(&message);
            let mut jobs = [Compression {
                cv: IV,
                block: &block,
                block_len: len as u8,
                counter: 0,
                flags: CHUNK_START | CHUNK_END | ROOT,
            }];
            compress_many(&mut jobs);
            let bytes: Vec<u8> = jobs[0].cv.iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(bytes, blake3::hash(&message).as_bytes(), "{len} bytes");
        }
    }

    /// A message's chunk `counter` (bytes `message`, the whole message when `root`) cut into
    /// the parts of a [`Chunk`]: a separate first block when `split_first`, the whole blocks in
    /// place, a zero-padded copy of a partial last block.
    fn cut<'a>(
        message: &'a [u8],
        pads: &'a [[u8; BLOCK_BYTES]; 2],
        split_first: bool,
        counter: u64,
        root: bool,
    ) -> Chunk<'a> {
        let whole = message.len() / BLOCK_BYTES;
        let partial = !message.len().is_multiple_of(BLOCK_BYTES) || message.is_empty();
        let split_first = split_first && whole > 0;
        let first = split_first.then_some(&pads[0]);
        let middle_start = if split_first { BLOCK_BYTES } else { 0 };
        let middle = &message[middle_start.min(whole * BLOCK_BYTES)..whole * BLOCK_BYTES];
        let last = partial.then_some((&pads[1], (message.len() % BLOCK_BYTES) as u8));
        Chunk {
            first,
            middle,
            last,
            counter,
            root,
        }
    }

    fn pads(message: &[u8]) -> [[u8; BLOCK_BYTES]; 2] {
        let whole = message.len() / BLOCK_BYTES;
        let mut pads = [[0u8; BLOCK_BYTES]; 2];
        if whole > 0 {
            pads[0].copy_from_slice(&message[..BLOCK_BYTES]);
        }
        let tail = &message[whole * BLOCK_BYTES..];
        pads[1][..tail.len()].copy_from_slice(tail);
        pads
    }

    /// Chunks of every length (whole or partial last block, a separate first block or not),
    /// counters and root flags, in any count: the lanes equal one block at a time, and a
    /// one-chunk message's root equals `blake3::hash`.
    #[test]
    fn chunks_equal_one_block_at_a_time() {
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        let data: Vec<u8> = (0..4 * blake3::CHUNK_LEN)
            .map(|_| rng.next() as u8)
            .collect();
        let lengths: Vec<usize> = (0..=blake3::CHUNK_LEN).collect();
        let pads: Vec<[[u8; BLOCK_BYTES]; 2]> = lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| pads(&data[i % 97..][..len]))
            .collect();
        let chunks: Vec<Chunk> = lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let counter = if i % 3 == 0 { rng.next() } else { 0 };
                cut(
                    &data[i % 97..][..len],
                    &pads[i],
                    i % 2 == 0,
                    counter,
                    i % 5 == 0,
                )
            })
            .collect();
        for count in [0, 1, 2, 15, 16, 17, 40, chunks.len()] {
            let mut expected = vec![[0u32; 8]; count];
            hash_chunks_one_at_a_time(&chunks[..count], &mut expected);
            let mut got = vec![[0u32; 8]; count];
            hash_chunks(&chunks[..count], &mut got);
            assert_eq!(got, expected, "{count} chunks");
        }
        for (i, &len) in lengths.iter().enumerate() {
            let message = &data[i % 97..][..len];
            let chunk = cut(message, &pads[i], i % 2 == 1, 0, true);
            let mut cv = [[0u32; 8]];
            hash_chunks(&[chunk; 1], &mut cv);
            let bytes: Vec<u8> = cv[0].iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(bytes, blake3::hash(message).as_bytes(), "{len} bytes");
        }
    }

    /// Messages of every length from 0 to past two chunks, and lengths that end a chunk, a
    /// tree level or a larger tree (up to 17 chunks, 100 and 300), sixteen at a time and in
    /// other counts (idle lanes, a second group): each is `blake3::hash` of its bytes, on the
    /// lanes and on the fallback.
    #[test]
    fn messages_side_by_side_are_blake3_hashes() {
        let mut rng = Rng(0x0bad_5eed_cafe_f00d);
        let chunk = blake3::CHUNK_LEN;
        let data: Vec<u8> = (0..302 * chunk).map(|_| rng.next() as u8).collect();
        let mut lengths: Vec<usize> = (0..=2 * chunk + 130).step_by(7).collect();
        lengths.extend([
            1,
            63,
            64,
            65,
            127,
            128,
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk,
            3 * chunk,
            3 * chunk + 64,
            4 * chunk,
            4 * chunk + 1,
            7 * chunk + 5,
            8 * chunk,
            16 * chunk,
            17 * chunk - 3,
            100 * chunk + 50,
            // A tree deeper than the stack holds (past 256 chunks).
            300 * chunk + 9,
        ]);
        for len in lengths {
            for count in [1usize, 3, 16, 17] {
                let bytes: Vec<&[u8]> = (0..count)
                    .map(|i| &data[(i * 131) % chunk..][..len])
                    .collect();
                let blocks: Vec<[[u8; BLOCK_BYTES]; 2]> = bytes
                    .iter()
                    .map(|message| {
                        let mut pads = [[0u8; BLOCK_BYTES]; 2];
                        let first = message.len().min(BLOCK_BYTES);
                        pads[0][..first].copy_from_slice(&message[..first]);
                        let tail = len.saturating_sub(BLOCK_BYTES) % BLOCK_BYTES;
                        pads[1][..tail].copy_from_slice(&message[len - tail..]);
                        pads
                    })
                    .collect();
                let messages: Vec<Message> = bytes
                    .iter()
                    .zip(&blocks)
                    .map(|(message, pads)| {
                        let tail = len.saturating_sub(BLOCK_BYTES) % BLOCK_BYTES;
                        Message {
                            first: &pads[0],
                            middle: &message[len.min(BLOCK_BYTES)..len - tail],
                            last: (len > BLOCK_BYTES && tail > 0).then_some(&pads[1]),
                        }
                    })
                    .collect();
                let expected: Vec<[u8; 32]> =
                    bytes.iter().map(|m| *blake3::hash(m).as_bytes()).collect();
                let mut got = vec![[0u8; 32]; count];
                hash_messages(len, &messages, &mut got);
                assert_eq!(got, expected, "{count} messages of {len} bytes");
                let mut fallback = vec![[0u8; 32]; count];
                hash_messages_one_at_a_time(len, &messages, &mut fallback);
                assert_eq!(
                    fallback, expected,
                    "{count} messages of {len} bytes, fallback"
                );
            }
        }
    }
}

//! Many independent BLAKE3 compressions at once: sixteen lanes of AVX-512 (runtime-detected),
//! one compression at a time through `blake3::platform` elsewhere.
//!
//! `blake3::platform::Platform::hash_many` gives every lane the same chaining value, counter and
//! flags at the start. The short blocks that end messages (a Merkle node's last bytes, a trace
//! leaf's last partial block) each need their own, so callers compressed them one at a time;
//! [`compress_many`] takes each compression's own chaining value, 64-byte block (borrowed, so
//! blocks are read in place), block length, counter and flags.
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

use blake3::platform::Platform;

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
    use super::{Compression, BLOCK_BYTES, LANES, SCHEDULE};
    use crate::blake3_words::IV;
    use std::arch::x86_64::*;

    /// One G mix of state words `a, b, c, d` (one per lane in each vector) with message
    /// vectors `x`, `y`.
    macro_rules! g {
        ($v:ident, $a:literal, $b:literal, $c:literal, $d:literal, $x:expr, $y:expr) => {
            $v[$a] = _mm512_add_epi32(_mm512_add_epi32($v[$a], $v[$b]), $x);
            $v[$d] = _mm512_ror_epi32::<16>(_mm512_xor_si512($v[$d], $v[$a]));
            $v[$c] = _mm512_add_epi32($v[$c], $v[$d]);
            $v[$b] = _mm512_ror_epi32::<12>(_mm512_xor_si512($v[$b], $v[$c]));
            $v[$a] = _mm512_add_epi32(_mm512_add_epi32($v[$a], $v[$b]), $y);
            $v[$d] = _mm512_ror_epi32::<8>(_mm512_xor_si512($v[$d], $v[$a]));
            $v[$c] = _mm512_add_epi32($v[$c], $v[$d]);
            $v[$b] = _mm512_ror_epi32::<7>(_mm512_xor_si512($v[$b], $v[$c]));
        };
    }

    /// Round `r`: the columns, then the diagonals, message words in `SCHEDULE[r]`'s order.
    macro_rules! round {
        ($v:ident, $m:ident, $r:literal) => {
            let s = &SCHEDULE[$r];
            g!($v, 0, 4, 8, 12, $m[s[0]], $m[s[1]]);
            g!($v, 1, 5, 9, 13, $m[s[2]], $m[s[3]]);
            g!($v, 2, 6, 10, 14, $m[s[4]], $m[s[5]]);
            g!($v, 3, 7, 11, 15, $m[s[6]], $m[s[7]]);
            g!($v, 0, 5, 10, 15, $m[s[8]], $m[s[9]]);
            g!($v, 1, 6, 11, 12, $m[s[10]], $m[s[11]]);
            g!($v, 2, 7, 8, 13, $m[s[12]], $m[s[13]]);
            g!($v, 3, 4, 9, 14, $m[s[14]], $m[s[15]]);
        };
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
        let load = |k: usize| unsafe { _mm512_loadu_si512(words[k].as_ptr().cast()) };
        let cv = load_cvs(jobs);
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
            load(0),
            load(1),
            load(2),
            load(3),
        ];
        round!(v, m, 0);
        round!(v, m, 1);
        round!(v, m, 2);
        round!(v, m, 3);
        round!(v, m, 4);
        round!(v, m, 5);
        round!(v, m, 6);
        let out: [__m512i; 8] = std::array::from_fn(|w| _mm512_xor_si512(v[w], v[w + 8]));
        store_cvs(&out, jobs);
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
        let (low, high) = transpose_halves(&rows);
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
    /// little-endian words, as is x86): a 16 × 16 transpose of 32-bit words.
    #[target_feature(enable = "avx512f")]
    fn load_transposed(blocks: &[&[u8; BLOCK_BYTES]; LANES]) -> [__m512i; 16] {
        // SAFETY: each block is 64 bytes, the size of an unaligned 512-bit load.
        let rows: [__m512i; LANES] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_si512(blocks[i].as_ptr().cast()) });
        // Within each 128-bit lane: rows 4g..4g+4 transposed, so that vector `quad[g][k]`
        // holds word `k + 4L` of those four rows in its 128-bit lane `L`.
        let quad: [[__m512i; 4]; 4] = std::array::from_fn(|g| {
            let r = &rows[4 * g..4 * g + 4];
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
        });
        // Then the 4 × 4 transpose of 128-bit lanes across the four row groups.
        let mut out = [_mm512_setzero_si512(); 16];
        for k in 0..4 {
            let [q0, q1, q2, q3] = [quad[0][k], quad[1][k], quad[2][k], quad[3][k]];
            let low01 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q0, q1);
            let high01 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q0, q1);
            let low23 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q2, q3);
            let high23 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q2, q3);
            out[k] = _mm512_shuffle_i32x4::<0b10_00_10_00>(low01, low23);
            out[k + 4] = _mm512_shuffle_i32x4::<0b11_01_11_01>(low01, low23);
            out[k + 8] = _mm512_shuffle_i32x4::<0b10_00_10_00>(high01, high23);
            out[k + 12] = _mm512_shuffle_i32x4::<0b11_01_11_01>(high01, high23);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blake3_words::{CHUNK_END, CHUNK_START, IV, ROOT};

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
}

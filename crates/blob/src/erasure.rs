//! Reed-Solomon coding of whole blobs into `k` data and `m` parity shards, and back from any `k`.
//!
//! Layout (the shared blob spec, `piazza_primitives::blob`): the blob is zero-padded to
//! `k × shard_len` bytes, where `shard_len` is `ceil(len / k)` rounded up to a multiple of
//! 64 bytes; data shard `i` is bytes `[i × shard_len, (i + 1) × shard_len)` of the padded blob;
//! parity shard `j` is parity shard `j` of `reed-solomon-erasure`'s systematic code over GF(2^8)
//! (`galois_8::ReedSolomon::new(k, m)`) over the `k` data shards. The code works byte by byte,
//! so coding in stripes of [`STRIPE_BYTES`] gives the same parity as coding whole shards while
//! keeping the working set in cache.

use piazza_primitives::blob as spec;
use piazza_primitives::Hash;
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::{commit, BlobError};

/// Data shards of a blob unless the caller says otherwise (see ARCHITECTURE.md: 4 + 2 keeps a
/// devnet to six storage providers and tolerates two lost shards at 1.5× the blob's size).
pub const DATA_SHARDS_DEFAULT: u16 = 4;
/// Parity shards of a blob unless the caller says otherwise.
pub const PARITY_SHARDS_DEFAULT: u16 = 2;
/// Most shards (data + parity) of one blob.
pub const SHARDS_MAX: u16 = 64;
/// Largest shard accepted anywhere (coding, the store, the shard service): a shard is held in
/// memory whole while it is checked against its root.
pub const SHARD_BYTES_MAX: u64 = 128 << 20;
/// Bytes of each shard coded at once (a multiple of 64): the coder's working set is
/// `(k + m) × STRIPE_BYTES`.
pub const STRIPE_BYTES: usize = 256 << 10;

/// How a blob is cut into shards: what the ledger's blob record stores besides the roots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub len_bytes: u64,
    pub k: u16,
    pub m: u16,
    pub shard_len: u64,
}

impl Layout {
    /// The layout of a blob of `len_bytes` in `k` data and `m` parity shards; refused when a
    /// count is zero, there are more than [`SHARDS_MAX`] shards or a shard would pass
    /// [`SHARD_BYTES_MAX`].
    pub fn new(len_bytes: u64, k: u16, m: u16) -> Result<Layout, BlobError> {
        if k == 0 || m == 0 || u32::from(k) + u32::from(m) > u32::from(SHARDS_MAX) {
            return Err(BlobError::ShardCount { k, m });
        }
        let shard_len = spec::shard_len(len_bytes, k).ok_or(BlobError::TooLarge { len_bytes })?;
        if shard_len > SHARD_BYTES_MAX {
            return Err(BlobError::TooLarge { len_bytes });
        }
        Ok(Layout {
            len_bytes,
            k,
            m,
            shard_len,
        })
    }

    /// Checks a layout read from outside (a ledger record, a peer) is the one [`Layout::new`]
    /// gives for its length and counts.
    pub fn check(&self) -> Result<(), BlobError> {
        let expected = Layout::new(self.len_bytes, self.k, self.m)?;
        if expected != *self {
            return Err(BlobError::Layout);
        }
        Ok(())
    }

    /// Data and parity shards together.
    pub fn shard_count(&self) -> u16 {
        self.k + self.m
    }

    fn shard_len_usize(&self) -> usize {
        // At most SHARD_BYTES_MAX, checked at construction.
        self.shard_len as usize
    }
}

/// What the chain records of a blob: its id, layout and one root per shard (data shards first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub id: Hash,
    pub layout: Layout,
    pub roots: Vec<Hash>,
}

impl Manifest {
    /// Checks a manifest read from outside: its layout follows from its length and counts, and
    /// it has one root per shard.
    pub fn check(&self) -> Result<(), BlobError> {
        self.layout.check()?;
        if self.roots.len() != usize::from(self.layout.shard_count()) {
            return Err(BlobError::Layout);
        }
        Ok(())
    }

    /// The root shard `index` must hash to.
    pub fn root(&self, index: u16) -> Result<&Hash, BlobError> {
        self.roots
            .get(usize::from(index))
            .ok_or(BlobError::ShardIndex { index })
    }
}

/// A blob cut into shards, each with its root: what `blob put` uploads and registers.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub layout: Layout,
    pub id: Hash,
    pub shards: Vec<Vec<u8>>,
    pub roots: Vec<Hash>,
}

impl Encoded {
    /// What the chain records of this blob.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            id: self.id,
            layout: self.layout,
            roots: self.roots.clone(),
        }
    }
}

/// Cuts `data` into `k` data and `m` parity shards and commits to each.
pub fn encode(data: &[u8], k: u16, m: u16) -> Result<Encoded, BlobError> {
    let layout = Layout::new(data.len() as u64, k, m)?;
    let shard_len = layout.shard_len_usize();
    let mut shards: Vec<Vec<u8>> = (0..usize::from(k))
        .map(|i| {
            let start = (i * shard_len).min(data.len());
            let end = ((i + 1) * shard_len).min(data.len());
            let mut shard = Vec::with_capacity(shard_len);
            shard.extend_from_slice(&data[start..end]);
            shard.resize(shard_len, 0);
            shard
        })
        .collect();
    let data_refs: Vec<&[u8]> = shards.iter().map(Vec::as_slice).collect();
    let parity = parity_of(&layout, &data_refs)?;
    shards.extend(parity);
    let (id, roots) = commitments(data, &shards);
    Ok(Encoded {
        layout,
        id,
        shards,
        roots,
    })
}

/// The blob id and every shard root, hashed on as many threads as the machine has cores (each
/// root is one thread's work; hashing, not coding, is most of an encode's time).
fn commitments(data: &[u8], shards: &[Vec<u8>]) -> (Hash, Vec<Hash>) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads < 2 {
        return (
            commit::blob_id(data),
            shards.iter().map(|s| commit::root_of(s)).collect(),
        );
    }
    let mut roots = vec![Hash::ZERO; shards.len()];
    let id = std::thread::scope(|scope| {
        let id = scope.spawn(|| commit::blob_id(data));
        let per_thread = shards.len().div_ceil(threads - 1).max(1);
        for (outs, ins) in roots.chunks_mut(per_thread).zip(shards.chunks(per_thread)) {
            scope.spawn(move || {
                for (out, shard) in outs.iter_mut().zip(ins) {
                    *out = commit::root_of(shard);
                }
            });
        }
        id.join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    (id, roots)
}

/// The code of `layout`'s shard counts.
fn code_of(layout: &Layout) -> Result<ReedSolomon, BlobError> {
    ReedSolomon::new(usize::from(layout.k), usize::from(layout.m)).map_err(coding)
}

/// The `m` parity shards over `k` data shards of `layout.shard_len` bytes each, coded stripe
/// by stripe straight into the parity buffers.
fn parity_of(layout: &Layout, data: &[&[u8]]) -> Result<Vec<Vec<u8>>, BlobError> {
    let shard_len = layout.shard_len_usize();
    let mut parity = vec![vec![0u8; shard_len]; usize::from(layout.m)];
    let code = code_of(layout)?;
    for start in (0..shard_len).step_by(STRIPE_BYTES) {
        let len = STRIPE_BYTES.min(shard_len - start);
        let inputs: Vec<&[u8]> = data.iter().map(|s| &s[start..start + len]).collect();
        let mut outputs: Vec<&mut [u8]> = parity
            .iter_mut()
            .map(|s| &mut s[start..start + len])
            .collect();
        code.encode_sep(&inputs, &mut outputs).map_err(coding)?;
    }
    Ok(parity)
}

fn coding(e: reed_solomon_erasure::Error) -> BlobError {
    BlobError::Coding(e.to_string())
}

/// Whether `bytes` are a shard of `shard_len` bytes whose root is `root`.
pub fn verify_shard(root: &Hash, shard_len: u64, bytes: &[u8]) -> bool {
    commit::verify_shard(root, shard_len, bytes)
}

/// The `k` data shards, one after another in `out` (`k × shard_len` bytes), from any `k` of
/// the blob's shards (`(index, bytes)`, each already of `layout.shard_len` bytes). Extra
/// shards past the first `k` distinct ones are ignored.
fn data_shards_into(
    layout: &Layout,
    shards: &[(u16, &[u8])],
    out: &mut [u8],
) -> Result<(), BlobError> {
    layout.check()?;
    let (k, m) = (usize::from(layout.k), usize::from(layout.m));
    let shard_len = layout.shard_len_usize();
    let mut chosen: Vec<Option<&[u8]>> = vec![None; k + m];
    let mut have = 0;
    for &(index, bytes) in shards {
        let slot = chosen
            .get_mut(usize::from(index))
            .ok_or(BlobError::ShardIndex { index })?;
        if bytes.len() != shard_len {
            return Err(BlobError::ShardLength {
                index,
                len_bytes: bytes.len() as u64,
            });
        }
        if slot.is_none() && have < k {
            *slot = Some(bytes);
            have += 1;
        }
    }
    if have < k {
        return Err(BlobError::TooFewShards { have, need: k });
    }
    if shard_len == 0 {
        return Ok(());
    }
    for (slot, shard) in out.chunks_exact_mut(shard_len).zip(&chosen[..k]) {
        if let Some(shard) = shard {
            slot.copy_from_slice(shard);
        }
    }
    if chosen[..k].iter().all(Option::is_some) {
        return Ok(());
    }
    // The chosen parity shards are copied a stripe at a time: the code reconstructs from
    // mutable buffers.
    let code = code_of(layout)?;
    let mut scratch = vec![vec![0u8; STRIPE_BYTES.min(shard_len)]; m];
    for start in (0..shard_len).step_by(STRIPE_BYTES) {
        let len = STRIPE_BYTES.min(shard_len - start);
        let mut pieces: Vec<(&mut [u8], bool)> = Vec::with_capacity(k + m);
        for (slot, shard) in out.chunks_exact_mut(shard_len).zip(&chosen[..k]) {
            pieces.push((&mut slot[start..start + len], shard.is_some()));
        }
        for (buffer, shard) in scratch.iter_mut().zip(&chosen[k..]) {
            let buffer = &mut buffer[..len];
            if let Some(shard) = shard {
                buffer.copy_from_slice(&shard[start..start + len]);
            }
            pieces.push((buffer, shard.is_some()));
        }
        code.reconstruct_data(&mut pieces).map_err(coding)?;
    }
    Ok(())
}

/// The zero-padded blob (`k × shard_len` bytes) from any `k` of its shards.
fn padded_blob(layout: &Layout, shards: &[(u16, &[u8])]) -> Result<Vec<u8>, BlobError> {
    let padded_len = usize::from(layout.k) * layout.shard_len_usize();
    let mut padded = vec![0u8; padded_len];
    data_shards_into(layout, shards, &mut padded)?;
    Ok(padded)
}

/// The blob from any `k` of its shards, checked against its id. Shards should be checked
/// against their roots first ([`verify_shard`]): a wrong shard gives wrong bytes, which the id
/// then refuses.
pub fn decode(layout: &Layout, id: &Hash, shards: &[(u16, &[u8])]) -> Result<Vec<u8>, BlobError> {
    let len = usize::try_from(layout.len_bytes).map_err(|_| BlobError::TooLarge {
        len_bytes: layout.len_bytes,
    })?;
    let mut blob = padded_blob(layout, shards)?;
    blob.truncate(len);
    if commit::blob_id(&blob) != *id {
        return Err(BlobError::IdMismatch);
    }
    Ok(blob)
}

/// Shard `index` rebuilt from any `k` others (a repair), checked against its root.
pub fn rebuild(
    layout: &Layout,
    index: u16,
    root: &Hash,
    shards: &[(u16, &[u8])],
) -> Result<Vec<u8>, BlobError> {
    if index >= layout.shard_count() {
        return Err(BlobError::ShardIndex { index });
    }
    let padded = padded_blob(layout, shards)?;
    let shard_len = layout.shard_len_usize();
    let shard = if index < layout.k {
        let start = usize::from(index) * shard_len;
        padded[start..start + shard_len].to_vec()
    } else {
        let data: Vec<&[u8]> = if shard_len == 0 {
            vec![&[][..]; usize::from(layout.k)]
        } else {
            padded.chunks_exact(shard_len).collect()
        };
        parity_of(layout, &data)?.swap_remove(usize::from(index - layout.k))
    };
    if !verify_shard(root, layout.shard_len, &shard) {
        return Err(BlobError::RootMismatch { index });
    }
    Ok(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_follow_the_spec_and_refuse_bad_counts() {
        let layout = Layout::new(1000, 4, 2).unwrap();
        assert_eq!(layout.shard_len, 256);
        assert_eq!(Layout::new(0, 4, 2).unwrap().shard_len, 0);
        assert!(matches!(
            Layout::new(10, 0, 2),
            Err(BlobError::ShardCount { .. })
        ));
        assert!(matches!(
            Layout::new(10, 4, 0),
            Err(BlobError::ShardCount { .. })
        ));
        assert!(matches!(
            Layout::new(10, 60, 5),
            Err(BlobError::ShardCount { .. })
        ));
        assert!(matches!(
            Layout::new(SHARD_BYTES_MAX * 4 + 1, 4, 2),
            Err(BlobError::TooLarge { .. })
        ));
        assert!(matches!(
            Layout::new(u64::MAX, 1, 1),
            Err(BlobError::TooLarge { .. })
        ));
        let mut forged = layout;
        forged.shard_len = 64;
        assert!(matches!(forged.check(), Err(BlobError::Layout)));
    }

    #[test]
    fn striped_parity_equals_whole_shard_parity() {
        // Three stripes, the last one short.
        let len = 4 * (2 * STRIPE_BYTES + 192);
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4099) as u8).collect();
        let encoded = encode(&data, 4, 2).unwrap();
        let mut whole = vec![vec![0u8; encoded.shards[0].len()]; 2];
        ReedSolomon::new(4, 2)
            .unwrap()
            .encode_sep(&encoded.shards[..4], &mut whole)
            .unwrap();
        assert_eq!(&encoded.shards[4..], &whole[..]);
    }

    #[test]
    fn wrong_inputs_are_refused() {
        let data = vec![9u8; 5000];
        let e = encode(&data, 4, 2).unwrap();
        let some: Vec<(u16, &[u8])> = e.shards[..3]
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u16, s.as_slice()))
            .collect();
        assert!(matches!(
            decode(&e.layout, &e.id, &some),
            Err(BlobError::TooFewShards { have: 3, need: 4 })
        ));
        let repeated: Vec<(u16, &[u8])> = (0..4).map(|_| (0, e.shards[0].as_slice())).collect();
        assert!(matches!(
            decode(&e.layout, &e.id, &repeated),
            Err(BlobError::TooFewShards { have: 1, need: 4 })
        ));
        let short = [(0u16, &e.shards[0][..10])];
        assert!(matches!(
            decode(&e.layout, &e.id, &short),
            Err(BlobError::ShardLength { index: 0, .. })
        ));
        let past = [(6u16, e.shards[0].as_slice())];
        assert!(matches!(
            decode(&e.layout, &e.id, &past),
            Err(BlobError::ShardIndex { index: 6 })
        ));
        // A corrupted parity shard decodes to other bytes, which the id refuses.
        let mut bad = e.shards[5].clone();
        bad[3] ^= 1;
        assert!(!verify_shard(&e.roots[5], e.layout.shard_len, &bad));
        let mixed: Vec<(u16, &[u8])> = vec![
            (1, &e.shards[1]),
            (2, &e.shards[2]),
            (3, &e.shards[3]),
            (5, &bad),
        ];
        assert!(matches!(
            decode(&e.layout, &e.id, &mixed),
            Err(BlobError::IdMismatch)
        ));
        assert!(matches!(
            rebuild(&e.layout, 0, &e.roots[0], &mixed),
            Err(BlobError::RootMismatch { index: 0 })
        ));
    }
}

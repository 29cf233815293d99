//! Round trips of the erasure layout: random sizes, any `k` of `k + m` shards.

use piazza_blob::commit;
use piazza_blob::erasure::{self, Layout};
use piazza_primitives::blob as spec;
use proptest::prelude::*;

/// Indices `0..n` in an order drawn from `seed` (a Fisher–Yates shuffle on a small LCG).
fn shuffled(n: u16, mut seed: u64) -> Vec<u16> {
    let mut order: Vec<u16> = (0..n).collect();
    for i in (1..order.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
    order
}

fn check_round_trip(data: &[u8], k: u16, m: u16, seed: u64) -> Result<(), TestCaseError> {
    let encoded = erasure::encode(data, k, m).unwrap();
    let layout = encoded.layout;
    prop_assert_eq!(layout, Layout::new(data.len() as u64, k, m).unwrap());
    prop_assert_eq!(
        Some(layout.shard_len),
        spec::shard_len(data.len() as u64, k)
    );
    prop_assert_eq!(encoded.id, spec::blob_id(data));
    prop_assert_eq!(encoded.shards.len(), usize::from(k + m));
    for (shard, root) in encoded.shards.iter().zip(&encoded.roots) {
        prop_assert_eq!(*root, spec::root_of(shard));
        prop_assert!(erasure::verify_shard(root, layout.shard_len, shard));
    }
    // The data shards are the zero-padded blob, in order.
    let mut padded = encoded.shards[..usize::from(k)].concat();
    prop_assert!(padded[data.len()..].iter().all(|&b| b == 0));
    padded.truncate(data.len());
    prop_assert_eq!(&padded[..], data);
    // Any k shards (an order drawn from the seed, its first k) give the blob back and rebuild
    // every missing shard.
    let order = shuffled(k + m, seed);
    let chosen: Vec<(u16, &[u8])> = order[..usize::from(k)]
        .iter()
        .map(|&i| (i, encoded.shards[usize::from(i)].as_slice()))
        .collect();
    prop_assert_eq!(
        erasure::decode(&layout, &encoded.id, &chosen).unwrap(),
        data.to_vec()
    );
    for &missing in &order[usize::from(k)..] {
        let rebuilt = erasure::rebuild(
            &layout,
            missing,
            &encoded.roots[usize::from(missing)],
            &chosen,
        )
        .unwrap();
        prop_assert_eq!(&rebuilt, &encoded.shards[usize::from(missing)]);
    }
    // k - 1 shards are not enough.
    prop_assert!(erasure::decode(&layout, &encoded.id, &chosen[1..]).is_err());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_k_of_k_plus_m_round_trip(
        len in prop_oneof![0usize..300, 0usize..20_000, 250_000usize..1_200_000],
        k in 1u16..9,
        m in 1u16..5,
        fill: u8,
        seed: u64,
    ) {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(151).wrapping_add(fill) ^ (i >> 11) as u8)
            .collect();
        check_round_trip(&data, k, m, seed)?;
    }
}

#[test]
fn default_layout_round_trips_across_stripes() {
    // Shards of three stripes and a bit, at the default 4 + 2.
    let len = 4 * (3 * erasure::STRIPE_BYTES) + 4097;
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    for seed in 0..4 {
        check_round_trip(
            &data,
            erasure::DATA_SHARDS_DEFAULT,
            erasure::PARITY_SHARDS_DEFAULT,
            seed,
        )
        .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The batched commitments are the spec's for any length: full and short last chunks,
    /// partial batches and odd Merkle levels.
    #[test]
    fn batched_commitments_equal_the_spec(len in 0usize..600_000, fill: u8, pick: u64) {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(97).wrapping_add(fill) ^ (i >> 9) as u8)
            .collect();
        prop_assert_eq!(commit::root_of(&data), spec::root_of(&data));
        prop_assert_eq!(commit::blob_id(&data), spec::blob_id(&data));
        let count = spec::chunk_count(len as u64);
        prop_assert_eq!(commit::prove(&data, count), None);
        if count > 0 {
            let index = pick % count;
            prop_assert_eq!(commit::prove(&data, index), spec::prove(&data, index));
        }
    }
}

//! Every state key the storage module owns. Numbers are big-endian so key order is numeric
//! order.

use piazza_primitives::{Address, Hash};

fn with_number(prefix: &[u8], number: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&number.to_be_bytes());
    key
}

fn with_address(prefix: &[u8], address: &Address) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&address.0);
    key
}

pub fn params() -> Vec<u8> {
    b"storage/params".to_vec()
}

pub fn provider(address: &Address) -> Vec<u8> {
    with_address(b"storage/provider/", address)
}

/// Every registered storage provider, sorted by address.
pub fn providers() -> Vec<u8> {
    b"storage/providers".to_vec()
}

/// The shards a provider holds now.
pub fn provider_shards(address: &Address) -> Vec<u8> {
    with_address(b"storage/provider_shards/", address)
}

pub fn deal(id: u64) -> Vec<u8> {
    with_number(b"storage/deal/", id)
}

pub fn next_deal() -> Vec<u8> {
    b"storage/next_deal".to_vec()
}

/// Deals not ended (pending or active): bounded by `ACTIVE_DEALS_MAX`.
pub fn active_count() -> Vec<u8> {
    b"storage/active_count".to_vec()
}

/// The deal keeping a blob now.
pub fn blob(id: &Hash) -> Vec<u8> {
    let mut key = b"storage/blob/".to_vec();
    key.extend_from_slice(&id.0);
    key
}

/// The deals of an owner that have not ended.
pub fn of_owner(address: &Address) -> Vec<u8> {
    with_address(b"storage/owner/", address)
}

/// Deals opened in earlier blocks, waiting for their shards' providers.
pub fn pending() -> Vec<u8> {
    b"storage/pending".to_vec()
}

/// Shards waiting for a new provider.
pub fn repairs() -> Vec<u8> {
    b"storage/repairs".to_vec()
}

/// The providers that failed shard `shard` of deal `deal` (missed or wrong answers): never
/// assigned that shard again. Deleted when the deal ends.
pub fn shard_failed(deal: u64, shard: u16) -> Vec<u8> {
    let mut key = with_number(b"storage/shard_failed/", deal);
    key.extend_from_slice(&shard.to_be_bytes());
    key
}

/// Deals whose next epoch (or end) is processed at `height`.
pub fn epochs(height: u64) -> Vec<u8> {
    with_number(b"storage/epochs/", height)
}

/// Deals with a challenge whose deadline is `height`.
pub fn deadlines(height: u64) -> Vec<u8> {
    with_number(b"storage/deadlines/", height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_numeric_order() {
        for key in [deal, epochs, deadlines] {
            assert!(key(1) < key(2) && key(255) < key(256) && key(u64::MAX - 1) < key(u64::MAX));
        }
    }
}

//! Every state key staking owns. Heights are big-endian so that key order is numeric order.

use super::Role;
use piazza_primitives::Address;

pub fn params() -> Vec<u8> {
    b"staking/params".to_vec()
}

pub fn bond(address: &Address, role: Role) -> Vec<u8> {
    let mut key = b"staking/bond/".to_vec();
    key.extend_from_slice(&address.0);
    key.push(role as u8);
    key
}

pub fn total(role: Role) -> Vec<u8> {
    let mut key = b"staking/total/".to_vec();
    key.push(role as u8);
    key
}

pub fn unbonding(address: &Address) -> Vec<u8> {
    let mut key = b"staking/unbonding/".to_vec();
    key.extend_from_slice(&address.0);
    key
}

pub fn release_queue(height: u64) -> Vec<u8> {
    let mut key = b"staking/release/".to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

/// A validator's record, by operator.
pub fn validator(operator: &Address) -> Vec<u8> {
    let mut key = b"staking/validator/".to_vec();
    key.extend_from_slice(&operator.0);
    key
}

/// Every validator's operator, sorted.
pub fn validator_index() -> Vec<u8> {
    b"staking/validators".to_vec()
}

/// The scheduled validator sets (the one in force and those of the next heights).
pub fn validator_schedule() -> Vec<u8> {
    b"staking/validator_schedule".to_vec()
}

/// Set when a validator bond or record changed in the current block.
pub fn validators_changed() -> Vec<u8> {
    b"staking/validators_changed".to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_keys_sort_by_height() {
        let heights = [0u64, 1, 255, 256, 65_535, 1 << 40, u64::MAX];
        for pair in heights.windows(2) {
            assert!(release_queue(pair[0]) < release_queue(pair[1]));
        }
    }
}

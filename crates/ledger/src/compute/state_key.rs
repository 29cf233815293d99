//! Every state key the compute module owns. Numbers are big-endian so key order is numeric order.

use piazza_primitives::Address;

pub fn params() -> Vec<u8> {
    b"compute/params".to_vec()
}

pub fn provider(address: &Address) -> Vec<u8> {
    let mut key = b"compute/provider/".to_vec();
    key.extend_from_slice(&address.0);
    key
}

pub fn serving(model: &str) -> Vec<u8> {
    let mut key = b"compute/serving/".to_vec();
    key.extend_from_slice(model.as_bytes());
    key
}

pub fn job(id: u64) -> Vec<u8> {
    let mut key = b"compute/job/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn next_job() -> Vec<u8> {
    b"compute/next_job".to_vec()
}

pub fn pending() -> Vec<u8> {
    b"compute/pending".to_vec()
}

pub fn assigned(address: &Address) -> Vec<u8> {
    let mut key = b"compute/assigned/".to_vec();
    key.extend_from_slice(&address.0);
    key
}

pub fn deadlines(height: u64) -> Vec<u8> {
    let mut key = b"compute/deadlines/".to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

pub fn settlements(height: u64) -> Vec<u8> {
    let mut key = b"compute/settlements/".to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

/// A posted job kept from settling (by a redundant group, an audit or a dispute).
pub fn held(id: u64) -> Vec<u8> {
    let mut key = b"compute/held/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Who receives a settled job's auditor-pool share (the auditor that attested it).
pub fn auditor_share(id: u64) -> Vec<u8> {
    let mut key = b"compute/auditor_share/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Jobs whose result was posted (or whose redundant copy closed) at a height, for review by
/// the modules above (audit draws with a later block's randomness, group comparison).
pub fn reviews(height: u64) -> Vec<u8> {
    let mut key = b"compute/reviews/".to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_keys_sort_numerically() {
        let values = [0u64, 1, 255, 256, 1 << 32, u64::MAX];
        for pair in values.windows(2) {
            assert!(job(pair[0]) < job(pair[1]));
            assert!(deadlines(pair[0]) < deadlines(pair[1]));
            assert!(settlements(pair[0]) < settlements(pair[1]));
        }
    }
}

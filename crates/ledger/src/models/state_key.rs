//! Every state key the models module owns.

pub fn record(name: &str) -> Vec<u8> {
    let mut key = b"models/record/".to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// A record's deposit and place in the index.
pub fn entry(name: &str) -> Vec<u8> {
    let mut key = b"models/entry/".to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// How many records the index holds.
pub fn count() -> Vec<u8> {
    b"models/count".to_vec()
}

/// One page of the index (big-endian page number, so pages sort in order).
pub fn page(page: u64) -> Vec<u8> {
    let mut key = b"models/page/".to_vec();
    key.extend_from_slice(&page.to_be_bytes());
    key
}

/// Retirement ids whose records leave at a height.
pub fn removals(height: u64) -> Vec<u8> {
    let mut key = b"models/removals/".to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

/// The name a retirement id removes.
pub fn removal(id: u64) -> Vec<u8> {
    let mut key = b"models/removal/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn next_removal() -> Vec<u8> {
    b"models/next_removal".to_vec()
}

//! Every state key the data module owns. Numbers are big-endian, so keys sort in numeric order.

use piazza_primitives::Address;

fn numbered(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn dataset(id: u64) -> Vec<u8> {
    numbered(b"data/dataset/", id)
}

pub fn next_dataset() -> Vec<u8> {
    b"data/next_dataset".to_vec()
}

/// A buyer's access to a dataset.
pub fn access(dataset: u64, buyer: &Address) -> Vec<u8> {
    let mut key = numbered(b"data/access/", dataset);
    key.extend_from_slice(&buyer.0);
    key
}

pub fn pool(id: u64) -> Vec<u8> {
    numbered(b"data/pool/", id)
}

pub fn next_pool() -> Vec<u8> {
    b"data/next_pool".to_vec()
}

/// A pool's accepted item at an index.
pub fn item(pool: u64, index: u32) -> Vec<u8> {
    let mut key = numbered(b"data/item/", pool);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// A job already used to validate a contribution (each proves one item once).
pub fn used_job(job: u64) -> Vec<u8> {
    numbered(b"data/used_job/", job)
}

pub fn label_task(id: u64) -> Vec<u8> {
    numbered(b"data/label_task/", id)
}

pub fn next_label_task() -> Vec<u8> {
    b"data/next_label_task".to_vec()
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbered_keys_sort_in_numeric_order() {
        let ids = [0u64, 1, 255, 256, 65_536, u64::MAX];
        for pair in ids.windows(2) {
            assert!(super::dataset(pair[0]) < super::dataset(pair[1]));
            assert!(super::item(pair[0], 0) < super::item(pair[1], 0));
        }
        assert!(super::item(1, 255) < super::item(1, 256));
    }
}

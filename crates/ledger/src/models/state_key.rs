//! Every state key the models module owns.

pub fn record(name: &str) -> Vec<u8> {
    let mut key = b"models/record/".to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn names() -> Vec<u8> {
    b"models/names".to_vec()
}

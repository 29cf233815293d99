//! Every state key the agents module owns. Numbers are big-endian so key order is numeric
//! order.

use piazza_primitives::Address;

fn with_number(prefix: &[u8], number: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&number.to_be_bytes());
    key
}

pub fn params() -> Vec<u8> {
    b"agents/params".to_vec()
}

pub fn agent(id: u64) -> Vec<u8> {
    with_number(b"agents/agent/", id)
}

pub fn next_agent() -> Vec<u8> {
    b"agents/next_agent".to_vec()
}

/// The agent registered under `name` (names are unique: an agent's share asset is named by it).
pub fn name(name: &str) -> Vec<u8> {
    let mut key = b"agents/name/".to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// The active agents carrying capability `tag`.
pub fn tag(tag: &str) -> Vec<u8> {
    let mut key = b"agents/tag/".to_vec();
    key.extend_from_slice(tag.as_bytes());
    key
}

/// The agents an account owns.
pub fn of_owner(owner: &Address) -> Vec<u8> {
    let mut key = b"agents/owner/".to_vec();
    key.extend_from_slice(&owner.0);
    key
}

pub fn call(id: u64) -> Vec<u8> {
    with_number(b"agents/call/", id)
}

pub fn next_call() -> Vec<u8> {
    b"agents/next_call".to_vec()
}

/// Calls whose answer deadline or release falls at `height`.
pub fn due(height: u64) -> Vec<u8> {
    with_number(b"agents/due/", height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_numeric_order() {
        for key in [agent, call, due] {
            assert!(key(1) < key(2) && key(255) < key(256) && key(u64::MAX - 1) < key(u64::MAX));
        }
    }
}

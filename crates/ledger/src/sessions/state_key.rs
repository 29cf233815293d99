//! Every state key the sessions module owns. Numbers are big-endian so key order is numeric
//! order.

use piazza_primitives::Address;

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
    b"sessions/params".to_vec()
}

pub fn session(id: u64) -> Vec<u8> {
    with_number(b"sessions/session/", id)
}

pub fn next_session() -> Vec<u8> {
    b"sessions/next_session".to_vec()
}

pub fn next_commit() -> Vec<u8> {
    b"sessions/next_commit".to_vec()
}

/// Sessions opened in earlier blocks, waiting for a provider.
pub fn pending() -> Vec<u8> {
    b"sessions/pending".to_vec()
}

/// The sessions of a client that are not closed yet.
pub fn of_client(address: &Address) -> Vec<u8> {
    with_address(b"sessions/client/", address)
}

/// The sessions a provider serves that are not closed yet.
pub fn of_provider(address: &Address) -> Vec<u8> {
    with_address(b"sessions/provider/", address)
}

pub fn commit(id: u64) -> Vec<u8> {
    with_number(b"sessions/commit/", id)
}

/// The id of commit number `index` of `session`.
pub fn session_commit(session: u64, index: u64) -> Vec<u8> {
    let mut key = with_number(b"sessions/session_commit/", session);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Commits whose receipts are drawn for audit at `height`.
pub fn draws(height: u64) -> Vec<u8> {
    with_number(b"sessions/draws/", height)
}

/// Commits whose audited receipts must be revealed by `height`.
pub fn reveal_deadlines(height: u64) -> Vec<u8> {
    with_number(b"sessions/reveal_deadlines/", height)
}

/// Commits whose challenge window ends at `height`.
pub fn payouts(height: u64) -> Vec<u8> {
    with_number(b"sessions/payouts/", height)
}

/// Commits whose jobs (revealed or challenged requests) are looked at `height`.
pub fn fraud_checks(height: u64) -> Vec<u8> {
    with_number(b"sessions/fraud_checks/", height)
}

/// Sessions that expire at `height`.
pub fn expiries(height: u64) -> Vec<u8> {
    with_number(b"sessions/expiries/", height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_numeric_order() {
        for key in [
            session,
            commit,
            draws,
            reveal_deadlines,
            payouts,
            fraud_checks,
            expiries,
        ] {
            assert!(key(1) < key(2) && key(255) < key(256) && key(u64::MAX - 1) < key(u64::MAX));
        }
        assert!(session_commit(1, 9) < session_commit(2, 0));
        assert!(session_commit(1, 255) < session_commit(1, 256));
    }
}

//! Every state key the bank owns.

use piazza_primitives::Address;

pub fn account(address: &Address) -> Vec<u8> {
    let mut key = b"bank/account/".to_vec();
    key.extend_from_slice(&address.0);
    key
}

pub fn supply() -> Vec<u8> {
    b"bank/supply".to_vec()
}

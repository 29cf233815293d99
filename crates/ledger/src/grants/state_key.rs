//! Every state key the grants module owns.

use piazza_primitives::{Address, PublicKey};

/// The grant `owner` gave `grantee`.
pub fn grant(owner: &Address, grantee: &PublicKey) -> Vec<u8> {
    let mut key = b"grants/grant/".to_vec();
    key.extend_from_slice(&owner.0);
    key.extend_from_slice(&grantee.0);
    key
}

/// How many live grants `owner` has given.
pub fn count(owner: &Address) -> Vec<u8> {
    let mut key = b"grants/count/".to_vec();
    key.extend_from_slice(&owner.0);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_primitives::SecretKey;

    #[test]
    fn keys_of_one_owner_share_a_prefix_and_differ_by_grantee() {
        let owner = Address([7; 20]);
        let a = grant(&owner, &SecretKey::from_seed([1; 32]).public_key());
        let b = grant(&owner, &SecretKey::from_seed([2; 32]).public_key());
        assert_ne!(a, b);
        assert_eq!(a[..33], b[..33]);
        assert!(!a.starts_with(&count(&owner)));
    }
}

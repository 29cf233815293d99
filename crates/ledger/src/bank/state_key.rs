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

/// The transfer-authorization nonces `from` settled whose validity has not ended.
pub fn authorization_nonces(from: &Address) -> Vec<u8> {
    let mut key = b"bank/authorization_nonces/".to_vec();
    key.extend_from_slice(&from.0);
    key
}

/// An asset's canonical id bytes (self-delimiting: a tag, then a length-prefixed name or a
/// fixed-width id), so keys that append an address after them never collide.
fn asset_id(prefix: &[u8], id: &super::assets::AssetId) -> Vec<u8> {
    use piazza_codec::Encode;
    let mut key = prefix.to_vec();
    key.extend_from_slice(&id.to_bytes());
    key
}

/// A share asset's state.
pub fn asset(id: &super::assets::AssetId) -> Vec<u8> {
    asset_id(b"bank/asset/", id)
}

/// One holder's units of an asset.
pub fn holding(id: &super::assets::AssetId, holder: &Address) -> Vec<u8> {
    let mut key = asset_id(b"bank/holding/", id);
    key.extend_from_slice(&holder.0);
    key
}

/// The list of an asset's holders.
pub fn holders(id: &super::assets::AssetId) -> Vec<u8> {
    asset_id(b"bank/holders/", id)
}

/// An offering (big-endian id, so offerings sort in order).
pub fn offering(id: u64) -> Vec<u8> {
    let mut key = b"bank/offering/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn next_offering() -> Vec<u8> {
    b"bank/next_offering".to_vec()
}

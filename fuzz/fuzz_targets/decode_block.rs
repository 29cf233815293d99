#![no_main]
//! Block and receipt decoders: never panic; whatever decodes re-encodes to the same bytes.

use libfuzzer_sys::fuzz_target;
use piazza_codec::{Decode, Encode};
use piazza_ledger::block::{Block, Receipt};

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode_bytes(data) {
        assert_eq!(block.to_bytes(), data);
        let _ = block.verify_signature();
    }
    if let Ok(receipt) = Receipt::from_bytes(data) {
        assert_eq!(receipt.to_bytes(), data);
    }
});

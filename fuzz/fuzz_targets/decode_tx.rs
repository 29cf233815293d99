#![no_main]
//! Transaction decoder: never panics; whatever decodes re-encodes to the same bytes.

use libfuzzer_sys::fuzz_target;
use piazza_codec::Encode;
use piazza_ledger::tx::SignedTransaction;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTransaction::decode_bytes(data) {
        assert_eq!(tx.to_bytes(), data);
        let _ = tx.verify_signature();
    }
});

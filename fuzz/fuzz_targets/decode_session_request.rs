#![no_main]
//! A session request, as the provider's endpoint reads it (canonical bytes, and the JSON body
//! carrying them as hex): never panics; whatever decodes re-encodes to the same bytes.

use libfuzzer_sys::fuzz_target;
use piazza_codec::{Decode, Encode};
use piazza_ledger::sessions::SignedRequest;
use piazza_session::wire::RequestBody;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = SignedRequest::from_bytes(data) {
        assert_eq!(request.to_bytes(), data);
        let _ = request.verify();
    }
    if let Ok((request, voucher)) = RequestBody::parse(data) {
        let _ = request.verify();
        let _ = voucher.map(|v| v.verify());
    }
});

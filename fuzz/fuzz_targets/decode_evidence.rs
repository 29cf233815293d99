#![no_main]
//! Arbitration evidence decoder: never panics; whatever decodes re-encodes to the same bytes.

use libfuzzer_sys::fuzz_target;
use piazza_arbiter::Evidence;

fuzz_target!(|data: &[u8]| {
    if let Ok(evidence) = Evidence::decode(data) {
        assert_eq!(evidence.encode(), data);
    }
});

#![no_main]
//! A session voucher (canonical bytes and JSON body) and the event stream a client reads
//! from a provider: never panic; whatever decodes re-encodes to the same bytes.

use libfuzzer_sys::fuzz_target;
use piazza_codec::{Decode, Encode};
use piazza_ledger::sessions::SignedVoucher;
use piazza_session::wire::{EventReader, VoucherBody};

fuzz_target!(|data: &[u8]| {
    if let Ok(voucher) = SignedVoucher::from_bytes(data) {
        assert_eq!(voucher.to_bytes(), data);
        let _ = voucher.verify();
    }
    let _ = VoucherBody::parse(data);
    let mut reader = EventReader::new();
    for piece in data.chunks(7) {
        if reader.push(piece).is_err() {
            break;
        }
    }
});

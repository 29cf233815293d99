#![no_main]
//! Chat input decoder: never panics; whatever decodes re-encodes to the same bytes, and the
//! engines' reading of the input as text gives the decoded messages.

use libfuzzer_sys::fuzz_target;
use piazza_primitives::chat::{ChatInput, CHAT_INPUT_MAGIC};

fuzz_target!(|data: &[u8]| {
    // Half the cases start with the magic so the fuzzer reaches the message grammar at once.
    let with_magic = [CHAT_INPUT_MAGIC, data].concat();
    for bytes in [data, &with_magic[..]] {
        if let Ok(chat) = ChatInput::decode(bytes) {
            assert_eq!(chat.encode(), bytes);
            assert!(std::str::from_utf8(bytes).is_ok(), "a chat input is UTF-8");
        }
    }
});

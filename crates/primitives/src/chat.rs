//! A chat job's input: the canonical encoding of a conversation (`ChatInput`).
//!
//! A chat job's input bytes are either a chat input (they start with [`CHAT_INPUT_MAGIC`]) or
//! plain text, which the engines read as one user message. Producers (client, gateway, CLI)
//! encode conversations with [`ChatInput::encode`]; the provider and the ledger's tokenization
//! arbiter read them back with [`ChatInput::decode`] (through `piazza_llm`), so the messages a
//! job means are decided by this code alone, not by a JSON parser.
//!
//! Format (version 1), every byte outside the contents is ASCII:
//! ```text
//! chat input = MAGIC message{1..=CHAT_MESSAGES_MAX}
//! MAGIC      = 0x1E "piazza-chat/1" 0x0A
//! message    = role 0x20 length 0x0A content 0x0A
//! role       = "system" | "user" | "assistant"
//! length     = the content's byte length in decimal, no leading zero ("0" when empty),
//!              at most CHAT_CONTENT_BYTES_MAX
//! content    = UTF-8 text of exactly `length` bytes
//! ```
//!
//! Invariants:
//! - Canonical: one conversation has one encoding, and [`ChatInput::decode`] accepts exactly
//!   the bytes [`ChatInput::encode`] produces (no trailing bytes, no leading zeros).
//! - Bounded: the decoder refuses inputs over [`CHAT_INPUT_BYTES_MAX`], more than
//!   [`CHAT_MESSAGES_MAX`] messages or contents over [`CHAT_CONTENT_BYTES_MAX`] with a
//!   [`ChatInputError`], never a panic, and allocates no more than the input's size.
//! - An encoded chat input is valid UTF-8 (ASCII framing around UTF-8 contents), so a reader
//!   that first turns a job's input into text (lossy UTF-8) sees exactly the encoded bytes.
//!
//! ```
//! use piazza_primitives::chat::{ChatInput, ChatMessage, ChatRole};
//! let chat = ChatInput::new(vec![
//!     ChatMessage::new(ChatRole::System, "Be brief."),
//!     ChatMessage::new(ChatRole::User, "Hi!"),
//! ])
//! .unwrap();
//! let bytes = chat.encode();
//! assert_eq!(bytes, b"\x1epiazza-chat/1\nsystem 9\nBe brief.\nuser 3\nHi!\n");
//! assert_eq!(ChatInput::decode(&bytes).unwrap(), chat);
//! assert!(ChatInput::decode(b"Hi!").is_err()); // plain text is not a chat input
//! ```

use std::fmt;

use thiserror::Error;

/// The first bytes of every chat input (ASCII record separator, name and version, newline).
pub const CHAT_INPUT_MAGIC: &[u8] = b"\x1epiazza-chat/1\n";
/// Most messages in one chat input.
pub const CHAT_MESSAGES_MAX: usize = 256;
/// Longest content of one message, in bytes.
pub const CHAT_CONTENT_BYTES_MAX: usize = 1 << 20;
/// Longest chat input the decoder reads, in bytes (far above a job input's limit).
pub const CHAT_INPUT_BYTES_MAX: usize = 4 << 20;
/// Most decimal digits of a content length (`CHAT_CONTENT_BYTES_MAX` has 7).
const LENGTH_DIGITS_MAX: usize = 7;

/// Who speaks a message. Other roles (OpenAI's `developer`, `tool`, …) are mapped or refused
/// at the edges, before encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    /// Every role, in tag order.
    pub const ALL: [ChatRole; 3] = [ChatRole::System, ChatRole::User, ChatRole::Assistant];

    /// The role's name in the encoding and in chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }

    /// The role named `name` exactly, if any.
    pub fn from_name(name: &str) -> Option<ChatRole> {
        ChatRole::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

impl fmt::Display for ChatRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: ChatRole, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// A conversation within the bounds: 1 to [`CHAT_MESSAGES_MAX`] messages, each content at
/// most [`CHAT_CONTENT_BYTES_MAX`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatInput {
    messages: Vec<ChatMessage>,
}

/// Why bytes are not a chat input, or messages not a valid one. Offsets are byte offsets into
/// the input.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChatInputError {
    #[error("not a chat input: it does not start with the chat input magic")]
    NotChatInput,
    #[error("chat input is {bytes} bytes, more than the {limit} bytes read")]
    InputTooLong { bytes: usize, limit: usize },
    #[error("a chat input holds 1 to {limit} messages, not {count}")]
    MessageCount { count: usize, limit: usize },
    #[error("message {index} has {bytes} content bytes, more than the limit {limit}")]
    ContentTooLong {
        index: usize,
        bytes: usize,
        limit: usize,
    },
    #[error("unknown role at offset {offset} (roles: system, user, assistant)")]
    UnknownRole { offset: usize },
    #[error("malformed chat input at offset {offset}: {expected}")]
    Malformed {
        offset: usize,
        expected: &'static str,
    },
    #[error("chat input ends at offset {offset}, inside a message")]
    Truncated { offset: usize },
    #[error("message content at offset {offset} is not UTF-8")]
    InvalidUtf8 { offset: usize },
}

impl ChatInput {
    /// A conversation, checked against the bounds.
    pub fn new(messages: Vec<ChatMessage>) -> Result<ChatInput, ChatInputError> {
        if messages.is_empty() || messages.len() > CHAT_MESSAGES_MAX {
            return Err(ChatInputError::MessageCount {
                count: messages.len(),
                limit: CHAT_MESSAGES_MAX,
            });
        }
        if let Some((index, message)) = messages
            .iter()
            .enumerate()
            .find(|(_, m)| m.content.len() > CHAT_CONTENT_BYTES_MAX)
        {
            return Err(ChatInputError::ContentTooLong {
                index,
                bytes: message.content.len(),
                limit: CHAT_CONTENT_BYTES_MAX,
            });
        }
        Ok(ChatInput { messages })
    }

    /// One user message.
    pub fn user(content: impl Into<String>) -> Result<ChatInput, ChatInputError> {
        ChatInput::new(vec![ChatMessage::new(ChatRole::User, content)])
    }

    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    pub fn into_messages(self) -> Vec<ChatMessage> {
        self.messages
    }

    /// The canonical bytes (valid UTF-8).
    pub fn encode(&self) -> Vec<u8> {
        let contents: usize = self.messages.iter().map(|m| m.content.len()).sum();
        let mut bytes =
            Vec::with_capacity(CHAT_INPUT_MAGIC.len() + contents + 24 * self.messages.len());
        bytes.extend_from_slice(CHAT_INPUT_MAGIC);
        for message in &self.messages {
            bytes.extend_from_slice(message.role.as_str().as_bytes());
            bytes.push(b' ');
            bytes.extend_from_slice(message.content.len().to_string().as_bytes());
            bytes.push(b'\n');
            bytes.extend_from_slice(message.content.as_bytes());
            bytes.push(b'\n');
        }
        bytes
    }

    /// Whether `bytes` claim to be a chat input (start with [`CHAT_INPUT_MAGIC`]); anything
    /// else is plain text.
    pub fn is_chat_input(bytes: &[u8]) -> bool {
        bytes.starts_with(CHAT_INPUT_MAGIC)
    }

    /// Reads a chat input; refuses plain text, bytes out of bounds and any non-canonical form.
    pub fn decode(bytes: &[u8]) -> Result<ChatInput, ChatInputError> {
        if bytes.len() > CHAT_INPUT_BYTES_MAX {
            return Err(ChatInputError::InputTooLong {
                bytes: bytes.len(),
                limit: CHAT_INPUT_BYTES_MAX,
            });
        }
        if !ChatInput::is_chat_input(bytes) {
            return Err(ChatInputError::NotChatInput);
        }
        let mut cursor = Cursor {
            bytes,
            offset: CHAT_INPUT_MAGIC.len(),
        };
        let mut messages = Vec::new();
        while cursor.offset < bytes.len() {
            if messages.len() == CHAT_MESSAGES_MAX {
                return Err(ChatInputError::MessageCount {
                    count: CHAT_MESSAGES_MAX + 1,
                    limit: CHAT_MESSAGES_MAX,
                });
            }
            messages.push(cursor.message(messages.len())?);
        }
        ChatInput::new(messages)
    }
}

/// The decoder's position in the input.
struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Cursor<'_> {
    fn message(&mut self, index: usize) -> Result<ChatMessage, ChatInputError> {
        let role_at = self.offset;
        let role = self.field(b' ', "assistant".len(), "a role and a space")?;
        let role = std::str::from_utf8(role)
            .ok()
            .and_then(ChatRole::from_name)
            .ok_or(ChatInputError::UnknownRole { offset: role_at })?;
        let length_at = self.offset;
        let digits = self.field(b'\n', LENGTH_DIGITS_MAX, "a decimal length and a newline")?;
        let length = decimal(digits).ok_or(ChatInputError::Malformed {
            offset: length_at,
            expected: "a decimal length without leading zeros",
        })?;
        if length > CHAT_CONTENT_BYTES_MAX {
            return Err(ChatInputError::ContentTooLong {
                index,
                bytes: length,
                limit: CHAT_CONTENT_BYTES_MAX,
            });
        }
        let content_at = self.offset;
        let end = content_at.saturating_add(length);
        let content = self
            .bytes
            .get(content_at..end)
            .ok_or(ChatInputError::Truncated {
                offset: self.bytes.len(),
            })?;
        let content = std::str::from_utf8(content)
            .map_err(|_| ChatInputError::InvalidUtf8 { offset: content_at })?;
        match self.bytes.get(end) {
            Some(b'\n') => {}
            Some(_) => {
                return Err(ChatInputError::Malformed {
                    offset: end,
                    expected: "a newline after the content",
                })
            }
            None => return Err(ChatInputError::Truncated { offset: end }),
        }
        self.offset = end + 1;
        Ok(ChatMessage::new(role, content))
    }

    /// The bytes before the next `terminator` (at most `len_max` of them), which is consumed.
    fn field(
        &mut self,
        terminator: u8,
        len_max: usize,
        expected: &'static str,
    ) -> Result<&[u8], ChatInputError> {
        let rest = &self.bytes[self.offset..];
        let window = &rest[..rest.len().min(len_max + 1)];
        let Some(len) = window.iter().position(|&b| b == terminator) else {
            return Err(if window.len() == rest.len() && rest.len() <= len_max {
                ChatInputError::Truncated {
                    offset: self.bytes.len(),
                }
            } else {
                ChatInputError::Malformed {
                    offset: self.offset,
                    expected,
                }
            });
        };
        let field = &rest[..len];
        self.offset += len + 1;
        Ok(field)
    }
}

/// A decimal number of ASCII digits with no leading zero ("0" itself is allowed).
fn decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    digits.iter().try_fold(0usize, |value, &digit| {
        digit
            .is_ascii_digit()
            .then(|| value * 10 + usize::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> ChatInput {
        ChatInput::new(vec![
            ChatMessage::new(ChatRole::System, "You are terse."),
            ChatMessage::new(ChatRole::User, "Grüße\n user 3\nhey"),
            ChatMessage::new(ChatRole::Assistant, ""),
            ChatMessage::new(ChatRole::User, "\x1epiazza-chat/1\n"),
        ])
        .unwrap()
    }

    /// Decodes `bytes` and expects `want` (the error's text for a refusal).
    fn check(bytes: &[u8], want: Result<&ChatInput, &str>) {
        let got = ChatInput::decode(bytes);
        match want {
            Ok(chat) => assert_eq!(
                got.as_ref(),
                Ok(chat),
                "{:?}",
                String::from_utf8_lossy(bytes)
            ),
            Err(text) => {
                let error = got.expect_err("refused").to_string();
                assert!(error.contains(text), "`{error}` does not say `{text}`");
            }
        }
    }

    fn with_messages(body: &str) -> Vec<u8> {
        [CHAT_INPUT_MAGIC, body.as_bytes()].concat()
    }

    #[test]
    fn round_trip_is_canonical_and_utf8() {
        let chat = conversation();
        let bytes = chat.encode();
        check(&bytes, Ok(&chat));
        assert!(std::str::from_utf8(&bytes).is_ok());
        assert_eq!(
            String::from_utf8_lossy(&bytes).as_bytes(),
            &bytes[..],
            "the lossy text view is the bytes themselves"
        );
        for role in ChatRole::ALL {
            assert_eq!(ChatRole::from_name(role.as_str()), Some(role));
        }
        // Contents that look like framing stay contents.
        assert_eq!(chat.messages()[1].content, "Grüße\n user 3\nhey");
    }

    #[test]
    fn plain_text_and_other_formats_are_not_chat_inputs() {
        check(
            b"Hello there",
            Err("does not start with the chat input magic"),
        );
        check(
            br#"[{"role":"user","content":"hi"}]"#,
            Err("does not start with the chat input magic"),
        );
        check(b"", Err("does not start"));
    }

    #[test]
    fn malformed_bytes_are_refused_with_the_place() {
        check(&with_messages(""), Err("1 to 256 messages, not 0"));
        check(
            &with_messages("tool 2\nhi\n"),
            Err("unknown role at offset 15"),
        );
        check(&with_messages("User 2\nhi\n"), Err("unknown role"));
        check(
            &with_messages("assistants 2\nhi\n"),
            Err("a role and a space"),
        );
        check(
            &with_messages("user 02\nhi\n"),
            Err("without leading zeros"),
        );
        check(
            &with_messages("user +2\nhi\n"),
            Err("without leading zeros"),
        );
        check(&with_messages("user \nhi\n"), Err("without leading zeros"));
        check(&with_messages("user 2\nhi"), Err("ends at offset 24"));
        check(&with_messages("user 3\nhi\n"), Err("ends at offset 25"));
        check(
            &with_messages("user 1\nhi\n"),
            Err("a newline after the content"),
        );
        check(&with_messages("user 2\nhi\nx"), Err("ends at offset 26"));
        check(
            &with_messages("user 12345678\n"),
            Err("a decimal length and a newline"),
        );
        check(&with_messages("user"), Err("ends at offset 19"));
        let mut bad_utf8 = with_messages("user 2\n");
        bad_utf8.extend_from_slice(&[0xC3, 0x28, b'\n']);
        check(&bad_utf8, Err("not UTF-8"));
        // A length that splits a character.
        check(&with_messages("user 1\né\n"), Err("not UTF-8"));
    }

    #[test]
    fn every_bound_is_refused_when_hit() {
        let too_long = CHAT_CONTENT_BYTES_MAX + 1;
        check(
            &with_messages(&format!("user {too_long}\n")),
            Err(&format!("{too_long} content bytes, more than the limit")),
        );
        check(
            &vec![b'x'; CHAT_INPUT_BYTES_MAX + 1],
            Err("more than the 4194304 bytes read"),
        );
        let full = ChatInput::new(vec![
            ChatMessage::new(ChatRole::User, "a");
            CHAT_MESSAGES_MAX
        ])
        .unwrap();
        check(&full.encode(), Ok(&full));
        let mut over = full.encode();
        over.extend_from_slice(b"user 1\na\n");
        check(&over, Err("not 257"));
        assert!(ChatInput::new(vec![]).is_err());
        assert!(ChatInput::new(vec![
            ChatMessage::new(ChatRole::User, "a");
            CHAT_MESSAGES_MAX + 1
        ])
        .is_err());
        assert!(ChatInput::user("x".repeat(too_long)).is_err());
        let largest = ChatInput::user("x".repeat(CHAT_CONTENT_BYTES_MAX)).unwrap();
        check(&largest.encode(), Ok(&largest));
    }

    proptest::proptest! {
        #[test]
        fn any_conversation_round_trips(
            messages in proptest::collection::vec((0usize..3, ".{0,40}"), 1..12)
        ) {
            let messages = messages
                .into_iter()
                .map(|(role, content)| ChatMessage::new(ChatRole::ALL[role], content))
                .collect();
            let chat = ChatInput::new(messages).unwrap();
            proptest::prop_assert_eq!(ChatInput::decode(&chat.encode()), Ok(chat));
        }

        #[test]
        fn any_bytes_after_the_magic_decode_canonically_or_are_refused(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)
        ) {
            let bytes = [CHAT_INPUT_MAGIC, &body].concat();
            if let Ok(chat) = ChatInput::decode(&bytes) {
                proptest::prop_assert_eq!(chat.encode(), bytes);
            }
        }
    }

    #[test]
    fn no_prefix_of_an_encoding_decodes_to_something_else() {
        let bytes = conversation().encode();
        for end in CHAT_INPUT_MAGIC.len()..bytes.len() {
            if let Ok(prefix) = ChatInput::decode(&bytes[..end]) {
                assert_eq!(prefix.encode(), &bytes[..end], "canonical at {end}");
                assert!(prefix.messages().len() < conversation().messages().len());
            }
        }
    }
}

//! A chat job's input as the engines read it: the canonical chat encoding gives its messages,
//! anything else is one user message; no JSON is parsed.

mod common;

use piazza_llm::{chat_messages_from_input, Message};
use piazza_primitives::chat::{ChatInput, ChatMessage, ChatRole};

/// Reads `input` as a provider does (lossy UTF-8, then `chat_messages_from_input`) and expects
/// `want` as (role, content) pairs.
fn check(input: &[u8], want: &[(&str, &str)]) {
    let text = String::from_utf8_lossy(input);
    let got = chat_messages_from_input(&text);
    let want: Vec<Message> = want.iter().map(|(r, c)| Message::new(r, c)).collect();
    assert_eq!(got, want, "input {text:?}");
}

fn conversation() -> ChatInput {
    ChatInput::new(vec![
        ChatMessage::new(ChatRole::System, "Answer in French."),
        ChatMessage::new(ChatRole::User, "Say hello."),
        ChatMessage::new(ChatRole::Assistant, "Bonjour."),
        ChatMessage::new(ChatRole::User, "Again, with ümlauts 🙂"),
    ])
    .unwrap()
}

#[test]
fn an_encoded_conversation_gives_its_messages() {
    check(
        &conversation().encode(),
        &[
            ("system", "Answer in French."),
            ("user", "Say hello."),
            ("assistant", "Bonjour."),
            ("user", "Again, with ümlauts 🙂"),
        ],
    );
}

#[test]
fn anything_else_is_one_user_message_of_the_whole_text() {
    check(b"Say hello.", &[("user", "Say hello.")]);
    // The old JSON form is plain text now: nothing parses it.
    let json = r#"[{"role":"system","content":"x"},{"role":"user","content":"y"}]"#;
    check(json.as_bytes(), &[("user", json)]);
    // The magic followed by bytes that do not decode: the text, as for any other input.
    let broken = "\x1epiazza-chat/1\nuser 99\nshort\n";
    check(broken.as_bytes(), &[("user", broken)]);
    check(b"", &[("user", "")]);
}

#[test]
fn plain_text_and_its_one_message_encoding_give_the_same_prompt() {
    // `piazza job submit --chat --input TEXT` and the gateway's one-message chat both reach
    // the model as the same prompt ids, hence the same trace root for the same parameters.
    let generator = common::generator();
    let plain = chat_messages_from_input("What is 2+2?");
    let encoded = ChatInput::user("What is 2+2?").unwrap().encode();
    let encoded = chat_messages_from_input(std::str::from_utf8(&encoded).unwrap());
    let ids = |messages: &[Message]| piazza_llm::chat_prompt_ids(generator, messages).unwrap();
    assert_eq!(ids(&plain), ids(&encoded));
    let system = ChatInput::new(vec![
        ChatMessage::new(ChatRole::System, "Be terse."),
        ChatMessage::new(ChatRole::User, "What is 2+2?"),
    ])
    .unwrap()
    .encode();
    let system = chat_messages_from_input(std::str::from_utf8(&system).unwrap());
    assert_ne!(
        ids(&plain),
        ids(&system),
        "the system message reaches the model"
    );
}

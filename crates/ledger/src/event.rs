//! Events: what a module reports happened, carried in receipts and block outcomes.

use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};

/// Most events one message may emit. Every message stays far below it (a redundant submission
/// emits one event per copy, at most `REDUNDANCY_MAX`; a dispute's end a handful); a message that
/// went past it would fail its transaction (`too_many_events`), never lose events.
pub const EVENTS_PER_MESSAGE_MAX: usize = 64;
/// Most attributes of one event.
pub const EVENT_ATTRIBUTES_MAX: usize = 16;
/// Longest event kind, attribute key or value, in bytes.
pub const EVENT_TEXT_BYTES_MAX: usize = 256;

/// Something a module reports happened: `bank.transfer {from, to, amount}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub kind: String,
    pub attributes: Vec<(String, String)>,
}

impl Event {
    /// An event; texts past [`EVENT_TEXT_BYTES_MAX`] are cut at a character boundary (a
    /// reason quoted from a transaction can be long), so every event decodes again.
    pub fn new(kind: &str, attributes: &[(&str, String)]) -> Event {
        debug_assert!(attributes.len() <= EVENT_ATTRIBUTES_MAX);
        Event {
            kind: bounded(kind),
            attributes: attributes
                .iter()
                .take(EVENT_ATTRIBUTES_MAX)
                .map(|(k, v)| (bounded(k), bounded(v)))
                .collect(),
        }
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Encode for Event {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.kind);
        w.len(self.attributes.len());
        for (k, v) in &self.attributes {
            w.str(k);
            w.str(v);
        }
    }
}

impl Decode for Event {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = r.string(EVENT_TEXT_BYTES_MAX)?;
        let n = r.len(EVENT_ATTRIBUTES_MAX)?;
        let mut attributes = Vec::with_capacity(n);
        for _ in 0..n {
            attributes.push((
                r.string(EVENT_TEXT_BYTES_MAX)?,
                r.string(EVENT_TEXT_BYTES_MAX)?,
            ));
        }
        Ok(Event { kind, attributes })
    }
}

fn bounded(text: &str) -> String {
    let mut end = text.len().min(EVENT_TEXT_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_decodes_again_however_long_its_texts() {
        let long = "é".repeat(EVENT_TEXT_BYTES_MAX);
        let event = Event::new("compute.job_declined", &[("reason", long)]);
        let value = event.attribute("reason").unwrap();
        assert!(value.len() <= EVENT_TEXT_BYTES_MAX && value.chars().all(|c| c == 'é'));
        let decoded = Event::from_bytes(&event.to_bytes()).unwrap();
        assert_eq!(decoded, event);
    }
}

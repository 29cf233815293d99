//! The text of a generation as its tokens arrive: token bytes decoded to UTF-8 and cut before
//! the first stop sequence. The one implementation used by the generator, by the arbiter when
//! it recomputes a job's output from its token ids, and by every daemon that compares outputs:
//! two copies could drift and slash an honest provider.

use crate::tokenizer::TextDecoder;

/// Where the first (leftmost) stop sequence begins in `text`; empty stop sequences never match.
pub fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|stop| !stop.is_empty())
        .filter_map(|stop| text.find(stop.as_str()))
        .min()
}

/// The text of a generation so far.
#[derive(Debug)]
pub struct StopText<'s> {
    decoder: TextDecoder,
    text: String,
    stops: &'s [String],
}

impl<'s> StopText<'s> {
    pub fn new(stops: &'s [String]) -> StopText<'s> {
        StopText {
            decoder: TextDecoder::default(),
            text: String::new(),
            stops,
        }
    }

    /// Append one token's bytes. Returns `true` when the text now contains a stop sequence: it
    /// has been cut where the first one begins, and the generation ends (push nothing more).
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let complete = self.decoder.push(bytes);
        self.text.push_str(&complete);
        match first_stop(&self.text, self.stops) {
            Some(at) => {
                self.text.truncate(at);
                true
            }
            None => false,
        }
    }

    /// End a generation that no stop sequence cut: an incomplete last character becomes
    /// U+FFFD.
    pub fn finish(&mut self) {
        let rest = self.decoder.finish();
        self.text.push_str(&rest);
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn into_text(self) -> String {
        self.text
    }

    /// End of the text that is safe to show while generating: a suffix that may begin a stop
    /// sequence is held back.
    pub fn safe_end(&self) -> usize {
        let text = &self.text;
        let mut end = text.len();
        for stop in self.stops.iter().filter(|s| !s.is_empty()) {
            let from = text.len().saturating_sub(stop.len() - 1);
            for start in from..text.len() {
                if start >= end {
                    break;
                }
                let Some(suffix) = text.get(start..) else {
                    continue;
                };
                if suffix.len() < stop.len() && stop.starts_with(suffix) {
                    end = start;
                    break;
                }
            }
        }
        end
    }
}

/// The text of a generation's new tokens, `token_bytes` giving each token's bytes: up to the
/// first end token (`eos`, not text), cut before the first stop sequence. What
/// [`crate::Generator::generate`] returns as its text for the same ids.
pub fn generation_text<'t>(
    ids: &[u32],
    token_bytes: impl Fn(u32) -> &'t [u8],
    eos: Option<u32>,
    stops: &[String],
) -> String {
    let mut text = StopText::new(stops);
    for &id in ids {
        if Some(id) == eos {
            break;
        }
        if text.push(token_bytes(id)) {
            return text.into_text();
        }
    }
    text.finish();
    text.into_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Feed `pieces` as tokens 0.. and return the text.
    fn check(pieces: &[&[u8]], eos: Option<u32>, stop_list: &[&str], expected: &str) {
        let ids: Vec<u32> = (0..pieces.len() as u32).collect();
        let text = generation_text(&ids, |id| pieces[id as usize], eos, &stops(stop_list));
        assert_eq!(text, expected, "pieces {pieces:?} stops {stop_list:?}");
    }

    #[test]
    fn cuts_before_the_leftmost_stop_across_tokens() {
        check(&[b"Hello", b" wor", b"ld!"], None, &[], "Hello world!");
        check(&[b"Hello", b" wor", b"ld!"], None, &["world"], "Hello ");
        check(&[b"ab", b"cd", b"ef"], None, &["de", "bc"], "a");
        check(&[b"ab", b"cd", b"ef"], None, &["", "zz"], "abcdef");
        // A stop found in the middle of a token drops the rest of that token and later ones.
        check(&[b"one. two", b". three"], None, &["."], "one");
    }

    #[test]
    fn the_end_token_is_not_text_and_split_characters_join() {
        let e_acute = "é".as_bytes();
        check(&[b"caf", &e_acute[..1], &e_acute[1..]], None, &[], "café");
        check(&[b"x", b"y", b"z"], Some(1), &[], "x");
        // An incomplete last character, not cut by a stop, ends as U+FFFD.
        check(&[b"caf", &e_acute[..1]], None, &[], "caf\u{FFFD}");
        check(&[b"caf", &e_acute[..1]], None, &["f"], "ca");
    }

    #[test]
    fn a_possible_stop_prefix_is_held_back() {
        let list = stops(&["</end>"]);
        let mut text = StopText::new(&list);
        assert!(!text.push(b"answer </e"));
        assert_eq!(&text.text()[..text.safe_end()], "answer ");
        assert!(!text.push(b"x"));
        assert_eq!(text.safe_end(), text.text().len());
        assert!(text.push(b" </end> more"));
        assert_eq!(text.text(), "answer </ex ");
    }
}

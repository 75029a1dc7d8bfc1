//! When a generation stops: the token ids that end it, and stop strings matched on the decoded text.
//!
//! The stop steps of [`TextStream`](super::TextStream), which the command line and the server share so that
//! both stop at the same place. Stop strings are matched
//! on text, not ids, because one string may be spelled by many different token sequences; text that could
//! still grow into a stop string is held back until it either completes one or cannot.

use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// Ids that end a generation: the model's EOS ids, the tokenizer's, and the end of a turn (`<end_of_turn>`,
/// Gemma 4's `<turn|>`).
pub fn stop_token_ids(model: &Model, tok: &Tokenizer) -> Vec<u32> {
    let mut v = model.config.eos_ids.clone();
    v.extend(tok.eos_id());
    v.extend(crate::tokenizer::END_OF_TURN.iter().filter_map(|p| tok.token_id(p)));
    v.sort_unstable();
    v.dedup();
    v
}

/// Text held back because it might be the start of a stop string.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// Empty strings are ignored (they would match everywhere).
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), pending: String::new() }
    }

    /// Add text; returns what is safe to emit and whether a stop string was hit (the text before it is emitted).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Hold back the longest suffix that could still grow into a stop string.
        let mut hold = 0;
        for s in &self.stops {
            for k in (1..s.len().min(self.pending.len() + 1)).rev() {
                if self.pending.is_char_boundary(self.pending.len() - k) && s.is_char_boundary(k) && self.pending.ends_with(&s[..k]) {
                    hold = hold.max(k);
                    break;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// The text still held back, at the end of a generation that hit no stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let mut m = StopMatcher::new(vec!["\n\n".into(), "END".into()]);
        assert_eq!(m.push("hello\n"), ("hello".into(), false));
        assert_eq!(m.push("world"), ("\nworld".into(), false));
        assert_eq!(m.push(" EN"), (" ".into(), false));
        assert_eq!(m.push("D more"), ("".into(), true));
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("a\n\n"), ("a\n\n".into(), false));
    }
}

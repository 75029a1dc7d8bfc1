//! The text of one generation, token by token: the one pipeline that the command line and the server share.
//!
//! Each sampled id goes through, in order: the stop ids (an id that ends the generation has no text), the
//! streaming decoder (a character spelled by several byte tokens comes out whole, once complete), and the stop
//! strings (text that may be the start of one is held back; a match cuts the text there and ends the
//! generation). At the end, [`TextStream::finish`] releases whatever is still held back.
//!
//! A chat stream can also split off Gemma 4's thought channel ([`TextStream::split_thoughts`]): what the model
//! writes between `<|channel>thought\n` and `<channel|>` comes out as [`Step::reasoning`], not as the answer's
//! text, as transformers' Gemma 4 response parser fills `reasoning_content`. Stop strings apply to the answer
//! only. As that parser does, such a stream strips the whitespace around the answer and around the thoughts
//! (leading whitespace is dropped, trailing whitespace held until more text follows).

use super::stop::StopMatcher;
use crate::tokenizer::{ControlTokens, StreamDecoder, Tokenizer};

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// The token budget or the context ran out.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What stopped a [`TextStream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// This stop id (EOS, `<end_of_turn>`, ...). It is not part of the output: not in [`TextStream::ids`],
    /// its text never written.
    Id(u32),
    /// A stop string, completed by the last id pushed (which is part of the output).
    String,
}

/// What one id released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// The text safe to emit now (possibly empty): never half a character, never text that may still turn out
    /// to start a stop string, never a stop string or anything after one.
    pub text: String,
    /// Text of the model's thoughts released by this id (only with [`TextStream::split_thoughts`]).
    pub reasoning: String,
    /// Set when the stream has stopped: with this id, or before it (an id pushed after a stop is ignored).
    pub stop: Option<Stop>,
}

/// What [`TextStream::finish`] released, and why the generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    /// The text still held back (empty after a stop string: what followed it is dropped).
    pub text: String,
    /// The end of unfinished thoughts (a generation that ended inside the thought channel).
    pub reasoning: String,
    /// [`FinishReason::Stop`] when a stop id or a stop string ended the stream, [`FinishReason::Length`]
    /// when the caller ended it (token budget, context, interruption).
    pub reason: FinishReason,
}

/// Sampled ids in, text out, for one generation. Control tokens (`<start_of_turn>`, ...) and `<unk>` have no
/// text, as with [`Tokenizer::decode`].
pub struct TextStream<'t> {
    decoder: StreamDecoder<'t>,
    stops: StopMatcher,
    stop_ids: Vec<u32>,
    /// The ids of the output: every id pushed before the end, stop ids excepted.
    ids: Vec<u32>,
    stopped: Option<Stop>,
    /// Stopped or finished: nothing is held back any more, and further ids are ignored.
    ended: bool,
    /// Gemma 4's thought channel, when split off: its ids and where the stream stands.
    thoughts: Option<Thoughts>,
}

/// The thought channel's marker ids and whether the stream is inside it.
#[derive(Debug, Clone)]
struct Thoughts {
    open: u32,
    close: u32,
    at: Channel,
    answer: Trim,
    reasoning: Trim,
}

/// Strips a streamed text at both ends: leading whitespace is dropped, trailing whitespace held back until
/// more text follows it (and dropped if none does).
#[derive(Debug, Clone, Default)]
struct Trim {
    started: bool,
    held: String,
}

impl Trim {
    fn push(&mut self, text: &str) -> String {
        let text = if self.started { text } else { text.trim_start() };
        if text.is_empty() {
            return String::new();
        }
        self.started = true;
        let body = text.trim_end();
        if body.is_empty() {
            self.held.push_str(text);
            return String::new();
        }
        let mut out = std::mem::take(&mut self.held);
        out.push_str(body);
        self.held.push_str(&text[body.len()..]);
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Channel {
    /// The answer (outside the channel).
    Answer,
    /// After `<|channel>`: the channel's name line (`thought\n`), dropped.
    Name(String),
    /// Inside the channel: the model's thoughts.
    Thinking,
}

impl<'t> TextStream<'t> {
    /// A stream that ends at any of `stop_ids` (see [`stop_token_ids`](super::stop_token_ids)) or at the
    /// first occurrence of any of `stop_strings` in the text (empty ones are ignored).
    pub fn new(tok: &'t Tokenizer, stop_ids: Vec<u32>, stop_strings: Vec<String>) -> Self {
        TextStream {
            decoder: StreamDecoder::new(tok, ControlTokens::Skip),
            stops: StopMatcher::new(stop_strings),
            stop_ids,
            ids: Vec::new(),
            stopped: None,
            ended: false,
            thoughts: None,
        }
    }

    /// Splits the thought channel `(open, close)` (see [`Tokenizer::thought_channel`]) off the answer: the
    /// text between `open` + its name line and `close` comes out as [`Step::reasoning`]. The marker ids stay in
    /// [`TextStream::ids`] (the model read them) but have no text.
    pub fn split_thoughts(mut self, channel: Option<(u32, u32)>) -> Self {
        self.thoughts = channel.map(|(open, close)| Thoughts {
            open,
            close,
            at: Channel::Answer,
            answer: Trim::default(),
            reasoning: Trim::default(),
        });
        self
    }

    /// Whether `id` ends the stream when pushed.
    pub fn is_stop_id(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }

    /// Feeds the next sampled id.
    ///
    /// A stop id ends the stream: its own text is never emitted, and everything held back is released with
    /// this step (it can no longer grow into a stop string). Any other id is part of the output; its text is
    /// released as far as it is safe, and when the text completes a stop string the stream ends there, the
    /// text cut before the stop string. An id the tokenizer lacks (a model vocabulary padded past the
    /// tokenizer's) has no text. Once the stream has ended, ids are ignored.
    pub fn push(&mut self, id: u32) -> Step {
        if self.ended {
            return Step { stop: self.stopped, ..Step::default() };
        }
        if self.is_stop_id(id) {
            let (text, reasoning) = self.flush();
            self.stopped = Some(Stop::Id(id));
            return Step { text, reasoning, stop: self.stopped };
        }
        self.ids.push(id);
        if let Some(step) = self.switch_channel(id) {
            return step;
        }
        let piece = self.decoder.push(id).unwrap_or_default();
        if let Some(reasoning) = self.thought_text(piece.clone()) {
            return Step { reasoning: self.trimmed_reasoning(&reasoning), ..Step::default() };
        }
        let (text, hit) = self.stops.push(&piece);
        if hit {
            self.stopped = Some(Stop::String);
            self.ended = true;
        }
        Step { text: self.trimmed_answer(text), stop: self.stopped, ..Step::default() }
    }

    /// The answer's text, stripped at its ends when thoughts are split off.
    fn trimmed_answer(&mut self, text: String) -> String {
        match &mut self.thoughts {
            Some(th) => th.answer.push(&text),
            None => text,
        }
    }

    fn trimmed_reasoning(&mut self, text: &str) -> String {
        self.thoughts.as_mut().map(|th| th.reasoning.push(text)).unwrap_or_default()
    }

    /// A thought channel's marker: enters or leaves the channel. The decoder's unfinished bytes end with the
    /// part they belong to.
    fn switch_channel(&mut self, id: u32) -> Option<Step> {
        let th = self.thoughts.as_mut()?;
        let entering = id == th.open && th.at == Channel::Answer;
        let leaving = id == th.close && th.at != Channel::Answer;
        if !entering && !leaving {
            return None;
        }
        let tail = self.decoder.finish();
        let was = std::mem::replace(&mut th.at, if entering { Channel::Name(String::new()) } else { Channel::Answer });
        Some(match was {
            Channel::Answer => {
                let (text, hit) = self.stops.push(&tail);
                if hit {
                    self.stopped = Some(Stop::String);
                    self.ended = true;
                }
                Step { text: self.trimmed_answer(text), stop: self.stopped, ..Step::default() }
            }
            Channel::Thinking => Step { reasoning: self.trimmed_reasoning(&tail), ..Step::default() },
            Channel::Name(_) => Step::default(),
        })
    }

    /// Inside the thought channel, the text of the reasoning (after the channel's name line); `None` outside.
    fn thought_text(&mut self, piece: String) -> Option<String> {
        let th = self.thoughts.as_mut()?;
        match &mut th.at {
            Channel::Answer => None,
            Channel::Thinking => Some(piece),
            Channel::Name(name) => {
                name.push_str(&piece);
                let rest = name.split_once('\n').map(|(_, rest)| rest.to_string());
                if rest.is_some() {
                    th.at = Channel::Thinking;
                }
                Some(rest.unwrap_or_default())
            }
        }
    }

    /// Ends the stream: releases what is still held back (an unfinished character as one U+FFFD per byte, a
    /// possible start of a stop string as it is), unless the stream has already ended. Further calls release
    /// nothing.
    pub fn finish(&mut self) -> StreamEnd {
        let (text, reasoning) = if self.ended { Default::default() } else { self.flush() };
        let reason = if self.stopped.is_some() { FinishReason::Stop } else { FinishReason::Length };
        StreamEnd { text, reasoning, reason }
    }

    /// The output's ids so far: those pushed before the end, stop ids excepted.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// What stopped the stream, if anything did.
    pub fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    /// Releases everything held back and ends the stream: `(answer text, reasoning)`. The decoder's last
    /// bytes belong to the part the stream is in; in the answer they may still complete a stop string (one
    /// containing U+FFFD), which then cuts the text as usual.
    fn flush(&mut self) -> (String, String) {
        self.ended = true;
        let tail = self.decoder.finish();
        if let Some(th) = &self.thoughts {
            if th.at != Channel::Answer {
                let reasoning = if th.at == Channel::Thinking { self.trimmed_reasoning(&tail) } else { String::new() };
                let text = self.stops.finish();
                return (self.trimmed_answer(text), reasoning);
            }
        }
        let (mut text, hit) = self.stops.push(&tail);
        if hit {
            self.stopped = Some(Stop::String);
        } else {
            text.push_str(&self.stops.finish());
        }
        (self.trimmed_answer(text), String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::tests::tiny;

    /// The tiny vocabulary's `<eos>`.
    const EOS: u32 = 1;

    fn id(t: &Tokenizer, piece: &str) -> u32 {
        t.token_id(piece).unwrap_or_else(|| panic!("no piece {piece:?}"))
    }

    type Run = (Vec<String>, Option<Stop>, StreamEnd, Vec<u32>);

    /// Pushes `pieces` one by one, then finishes: each step's text, the last step's stop, the end, the ids.
    fn run(t: &Tokenizer, stop_strings: &[&str], pieces: &[&str]) -> Run {
        let mut s = TextStream::new(t, vec![EOS], stop_strings.iter().map(|s| s.to_string()).collect());
        let mut texts = Vec::new();
        let mut stop = None;
        for p in pieces {
            let step = s.push(id(t, p));
            texts.push(step.text);
            stop = step.stop;
        }
        let end = s.finish();
        (texts, stop, end, s.ids().to_vec())
    }

    #[test]
    fn stop_string_spanning_two_tokens_cuts_the_text() {
        let t = tiny();
        // "ta" + "st" = "tast": the "a" is held back (it may start "as"), then the match cuts before it.
        let (texts, stop, end, ids) = run(&t, &["as"], &["ta", "st"]);
        assert_eq!(texts, ["t", ""]);
        assert_eq!(stop, Some(Stop::String));
        assert_eq!(end, StreamEnd { text: String::new(), reasoning: String::new(), reason: FinishReason::Stop });
        // The token that completed the stop string is part of the output.
        assert_eq!(ids, [id(&t, "ta"), id(&t, "st")]);
    }

    #[test]
    fn stop_string_at_the_very_end() {
        let t = tiny();
        let (texts, stop, end, _) = run(&t, &["st"], &["hi", "▁a", "st"]);
        assert_eq!(texts, ["hi", " a", ""]);
        assert_eq!(stop, Some(Stop::String));
        assert_eq!(end.reason, FinishReason::Stop);
        assert_eq!(end.text, "");
        // Text after a stop string, in the same token, is dropped.
        let (texts, stop, _, _) = run(&t, &["a"], &["hi", "ta"]);
        assert_eq!(texts, ["hi", "t"]);
        assert_eq!(stop, Some(Stop::String));
    }

    #[test]
    fn a_prefix_that_is_not_a_stop_string_is_released() {
        let t = tiny();
        // "h" may start "hit"; "hi" still may; "hic" cannot.
        let (texts, stop, end, _) = run(&t, &["hit"], &["▁a", "h", "i", "c"]);
        assert_eq!(texts, [" a", "", "", "hic"]);
        assert_eq!(stop, None);
        assert_eq!(end, StreamEnd { text: String::new(), reasoning: String::new(), reason: FinishReason::Length });
        // Still a possible prefix when the budget runs out: finish releases it.
        let (texts, _, end, _) = run(&t, &["hit"], &["▁a", "hi"]);
        assert_eq!(texts, [" a", ""]);
        assert_eq!(end, StreamEnd { text: "hi".into(), reasoning: String::new(), reason: FinishReason::Length });
    }

    #[test]
    fn a_character_split_across_byte_tokens_comes_out_whole() {
        let t = tiny();
        // "€" is E2 82 AC, three byte-fallback tokens in the tiny vocabulary.
        let (texts, _, end, ids) = run(&t, &[], &["a", "<0xE2>", "<0x82>", "<0xAC>", "b"]);
        assert_eq!(texts, ["a", "", "", "€", "b"]);
        assert_eq!(end.text, "");
        assert_eq!(ids.len(), 5);
        // A stop string matched on the whole character, never on its bytes.
        let (texts, stop, _, _) = run(&t, &["€b"], &["a", "<0xE2>", "<0x82>", "<0xAC>", "b"]);
        assert_eq!(texts, ["a", "", "", "", ""]);
        assert_eq!(stop, Some(Stop::String));
        // An unfinished character at the end: one U+FFFD per byte.
        let (texts, _, end, _) = run(&t, &[], &["a", "<0xE2>", "<0x82>"]);
        assert_eq!(texts, ["a", "", ""]);
        assert_eq!(end, StreamEnd { text: "\u{FFFD}\u{FFFD}".into(), reasoning: String::new(), reason: FinishReason::Length });
    }

    #[test]
    fn a_stop_id_ends_without_its_text_releasing_what_is_held() {
        let t = tiny();
        let (texts, stop, end, ids) = run(&t, &["hit"], &["▁a", "hi", "<eos>", "c"]);
        // "hi" was held back as a possible "hit"; the stop id releases it; "c" after the end is ignored.
        assert_eq!(texts, [" a", "", "hi", ""]);
        assert_eq!(stop, Some(Stop::Id(EOS)));
        assert_eq!(end, StreamEnd { text: String::new(), reasoning: String::new(), reason: FinishReason::Stop });
        assert_eq!(ids, [id(&t, "▁a"), id(&t, "hi")]);
        // Bytes of an unfinished character are released too.
        let (texts, stop, _, _) = run(&t, &[], &["<0xE2>", "<eos>"]);
        assert_eq!(texts, ["", "\u{FFFD}"]);
        assert_eq!(stop, Some(Stop::Id(EOS)));
    }

    #[test]
    fn finish_releases_everything_held_back() {
        let t = tiny();
        // A held prefix of a stop string and an unfinished character, both at the end.
        let (texts, stop, end, _) = run(&t, &["ab"], &["hi", "▁a", "<0xC3>"]);
        assert_eq!(texts, ["hi", " ", ""]);
        assert_eq!(stop, None);
        assert_eq!(end, StreamEnd { text: "a\u{FFFD}".into(), reasoning: String::new(), reason: FinishReason::Length });
        // The flushed bytes may complete a stop string: the text is cut and the reason is Stop.
        let (texts, _, end, _) = run(&t, &["i\u{FFFD}"], &["hi", "<0xC3>"]);
        assert_eq!(texts, ["h", ""]);
        assert_eq!(end, StreamEnd { text: String::new(), reasoning: String::new(), reason: FinishReason::Stop });
        // A second finish releases nothing.
        let mut s = TextStream::new(&t, vec![EOS], vec!["hit".into()]);
        assert_eq!(s.push(id(&t, "hi")).text, "");
        assert_eq!(s.finish().text, "hi");
        assert_eq!(s.finish().text, "");
        assert_eq!(s.push(id(&t, "a")), Step::default());
    }

    #[test]
    fn control_and_unknown_ids_have_no_text_but_are_output() {
        let t = tiny();
        let mut s = TextStream::new(&t, vec![EOS], vec![]);
        assert_eq!(s.push(id(&t, "<start_of_turn>")).text, "");
        assert_eq!(s.push(u32::MAX), Step::default());
        assert_eq!(s.push(id(&t, "a")).text, "a");
        assert_eq!(s.ids(), [id(&t, "<start_of_turn>"), u32::MAX, id(&t, "a")]);
        assert!(s.is_stop_id(EOS) && !s.is_stop_id(id(&t, "a")));
    }
}

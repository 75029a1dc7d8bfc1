//! Ids back to text, all at once or one id at a time.
//!
//! Pieces turn `▁` back into spaces; byte pieces `<0xXX>` are collected and released only as complete UTF-8
//! characters, so a character spelled by several byte tokens is never cut in half when streaming. Bytes that
//! can never form a character (a stray continuation byte, a truncated sequence followed by a normal piece)
//! become one U+FFFD each, as Hugging Face's byte-fallback decoder writes them. Whole-sequence decoding is
//! the streaming decoder run to the end, so the two always agree.

use super::{Tokenizer, TokenKind};

/// What decoding does with control tokens (`<bos>`, `<start_of_turn>`, ...) and `<unk>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlTokens {
    /// Leave them out (Hugging Face's `skip_special_tokens=True`).
    #[default]
    Skip,
    /// Write their piece text, e.g. `<end_of_turn>`.
    Render,
}

/// Decodes a stream of ids, returning at each step the text completed by that id.
pub struct StreamDecoder<'t> {
    tok: &'t Tokenizer,
    control: ControlTokens,
    /// Bytes of a character still waiting for its remaining byte tokens (at most 3).
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tok: &'t Tokenizer, control: ControlTokens) -> Self {
        StreamDecoder { tok, control, pending: Vec::with_capacity(4) }
    }

    /// Feeds one id; returns the text that is complete now (possibly empty). An id outside the vocabulary
    /// is an error and leaves the decoder as it was.
    pub fn push(&mut self, id: u32) -> crate::Result<String> {
        let mut out = String::new();
        self.push_into(id, &mut out)?;
        Ok(out)
    }

    /// As [`push`](Self::push), appending to `out`.
    pub fn push_into(&mut self, id: u32, out: &mut String) -> crate::Result<()> {
        let Some(kind) = self.tok.kind(id) else {
            return Err(crate::Error::TokenOutOfVocab { id, vocab_size: self.tok.vocab_size() });
        };
        if kind == TokenKind::Byte {
            if let Some(b) = self.tok.byte_value(id) {
                self.pending.push(b);
                self.drain_complete(out);
                return Ok(());
            }
        }
        if self.control == ControlTokens::Skip && matches!(kind, TokenKind::Control | TokenKind::Unknown) {
            return Ok(());
        }
        self.flush_into(out);
        push_piece(self.tok.piece(id).unwrap_or_default(), out);
        Ok(())
    }

    /// Ends the stream: bytes of an unfinished character come out as U+FFFD.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.flush_into(&mut out);
        out
    }

    /// Releases every complete character at the front of `pending`, and U+FFFD for bytes that cannot start
    /// or continue one; an incomplete but still valid tail stays pending.
    fn drain_complete(&mut self, out: &mut String) {
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[start..start + valid]).unwrap());
                    start += valid;
                    match e.error_len() {
                        Some(bad) => {
                            push_replacements(bad, out);
                            start += bad;
                        }
                        None => break, // an incomplete character: wait for more bytes
                    }
                }
            }
        }
        self.pending.drain(..start);
    }

    fn flush_into(&mut self, out: &mut String) {
        push_replacements(self.pending.len(), out);
        self.pending.clear();
    }
}

/// `n` replacement characters, one per byte that cannot be decoded.
fn push_replacements(n: usize, out: &mut String) {
    for _ in 0..n {
        out.push('\u{FFFD}');
    }
}

/// A piece's text, `▁` written as a space.
fn push_piece(piece: &str, out: &mut String) {
    for (i, part) in piece.split('\u{2581}').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(part);
    }
}

impl Tokenizer {
    /// The text of `ids`, control tokens left out. Errors on an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> crate::Result<String> {
        self.decode_with(ids, ControlTokens::Skip)
    }

    /// The text of `ids`, with control tokens skipped or written out.
    pub fn decode_with(&self, ids: &[u32], control: ControlTokens) -> crate::Result<String> {
        let mut d = StreamDecoder::new(self, control);
        let mut out = String::with_capacity(ids.len() * 4);
        for &id in ids {
            d.push_into(id, &mut out)?;
        }
        d.flush_into(&mut out);
        Ok(out)
    }

    /// A streaming decoder over this tokenizer.
    pub fn stream_decoder(&self, control: ControlTokens) -> StreamDecoder<'_> {
        StreamDecoder::new(self, control)
    }
}

//! The vocabulary every loader fills: pieces, merge scores, token kinds and the special ids.
//!
//! The three sources (`tokenizer.json`, `tokenizer.model`, GGUF metadata) describe the same SentencePiece
//! vocabulary in different words; each loader translates its file into this one struct, and the encoder and
//! decoder only ever see a `Vocab`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// What a token is, in SentencePiece's terms (the GGUF `token_type` numbering is SentencePiece's too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An ordinary piece, produced by BPE merges.
    Normal,
    /// `<unk>`: emitted only when a character has no piece and there are no byte pieces.
    Unknown,
    /// `<bos>`, `<eos>`, `<start_of_turn>`, ...: matched in text only when special-token parsing is on.
    Control,
    /// Pieces matched verbatim in the text before BPE, always (runs of newlines and tabs, html tags, ...).
    UserDefined,
    /// Reserved ids that never come out of encoding.
    Unused,
    /// `<0x00>`..`<0xFF>`: byte fallback for characters that have no piece.
    Byte,
}

impl TokenKind {
    /// From SentencePiece's `Type` enum, which GGUF's `tokenizer.ggml.token_type` reuses.
    pub fn from_sentencepiece(code: i64) -> Option<TokenKind> {
        Some(match code {
            1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => return None,
        })
    }
}

/// Merge score of a piece that BPE must never produce (control tokens, byte pieces, ...).
pub const NO_MERGE: f32 = f32::NEG_INFINITY;

/// A SentencePiece-style BPE vocabulary. Ids are indices into the three parallel vectors.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    /// Piece text, with spaces written as `▁` (U+2581) as SentencePiece stores them.
    pub pieces: Vec<String>,
    /// Merge priority: of two adjacent symbols whose concatenation is a piece, the pair whose piece has the
    /// highest score is merged first. [`NO_MERGE`] marks pieces that merging never produces.
    pub scores: Vec<f32>,
    pub kinds: Vec<TokenKind>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
    /// Whether encoding prepends BOS by default.
    pub add_bos: bool,
    /// The Jinja chat template shipped with the vocabulary, if any.
    pub chat_template: Option<String>,
}

impl Vocab {
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Checks the invariants the encoder relies on; `source` names the file for the error message.
    pub fn validate(&self, source: &str) -> crate::Result<()> {
        let n = self.pieces.len();
        if n == 0 {
            return Err(tok_err(source, "the vocabulary is empty"));
        }
        if self.scores.len() != n || self.kinds.len() != n {
            return Err(tok_err(
                source,
                format!("{n} pieces but {} scores and {} token kinds", self.scores.len(), self.kinds.len()),
            ));
        }
        if n > u32::MAX as usize / 2 {
            return Err(tok_err(source, format!("{n} pieces is more than a u32 id can address")));
        }
        for (name, id) in [("bos", self.bos), ("eos", self.eos), ("pad", self.pad), ("unk", self.unk)] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(tok_err(source, format!("{name} token id {id} is outside the {n}-piece vocabulary")));
                }
            }
        }
        Ok(())
    }
}

/// A tokenizer error naming its source file.
pub(crate) fn tok_err(source: &str, what: impl std::fmt::Display) -> crate::Error {
    crate::Error::Tokenizer(format!("{source}: {what}"))
}

/// The value of a byte piece `<0xAB>`, if `piece` is one.
pub(crate) fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// A small multiplicative hasher for the piece table. The std SipHash is DoS-resistant but several times
/// slower on the short strings BPE looks up millions of times; the keys here are the model's own pieces.
#[derive(Default, Clone, Copy)]
pub(crate) struct PieceHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl PieceHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for PieceHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.mix(b as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its bucket index from the low bits and a tag from the top.
        self.0 ^ (self.0 >> 29)
    }
}

pub(crate) type PieceMap = HashMap<Box<str>, u32, BuildHasherDefault<PieceHasher>>;

/// Piece text → id. On duplicate pieces the lowest id wins, as in SentencePiece.
pub(crate) fn piece_map(pieces: &[String]) -> PieceMap {
    let mut map = PieceMap::with_capacity_and_hasher(pieces.len(), Default::default());
    for (id, p) in pieces.iter().enumerate().rev() {
        map.insert(p.as_str().into(), id as u32);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_pieces() {
        assert_eq!(parse_byte_piece("<0x0A>"), Some(10));
        assert_eq!(parse_byte_piece("<0xff>"), Some(255));
        assert_eq!(parse_byte_piece("<0x0>"), None);
        assert_eq!(parse_byte_piece("<0xZZ>"), None);
        assert_eq!(parse_byte_piece("0x41"), None);
    }

    #[test]
    fn duplicate_pieces_keep_lowest_id() {
        let m = piece_map(&["a".into(), "b".into(), "a".into()]);
        assert_eq!(m.get("a"), Some(&0));
        assert_eq!(m.get("b"), Some(&1));
    }
}

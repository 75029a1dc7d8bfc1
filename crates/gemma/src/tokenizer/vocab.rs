//! The vocabulary every loader fills: pieces, merge scores, token kinds and the special ids.
//!
//! The three sources (`tokenizer.json`, `tokenizer.model`, GGUF metadata) describe the same SentencePiece
//! vocabulary in different words; each loader translates its file into this one struct, and the encoder and
//! decoder only ever see a `Vocab`.

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
        let bytes: usize = self.pieces.iter().map(|p| p.len()).sum();
        if bytes >= u32::MAX as usize {
            return Err(tok_err(source, format!("the pieces total {bytes} bytes, past the 4 GiB the index addresses")));
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

/// Piece text → id: an open-addressing hash table over one contiguous copy of all piece texts.
///
/// BPE looks up millions of short strings, most of them not pieces; and a GGUF vocabulary has 262k pieces to
/// index at load time. A `HashMap<String, u32>` would spend most of its load time allocating one box per
/// piece and its look-ups chasing them, so the texts live in one arena and each slot carries what a probe
/// needs: 32 bits of the hash, which settle almost every mismatch, and where the text is, so that a match
/// costs one more memory access.
#[derive(Clone)]
pub(crate) struct PieceIndex {
    arena: String,
    slots: Vec<Slot>,
    mask: usize,
    /// One bit per hash value (mod its size) of every piece: a 256 KiB filter that stays in cache and
    /// answers most look-ups of non-pieces without touching the 8 MiB of slots.
    filter: Vec<u64>,
}

const FILTER_WORDS: usize = 1 << 15;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// id + 1; 0 marks an empty slot.
    id1: u32,
    tag: u32,
    start: u32,
    len: u32,
}

/// 64-bit hash of a byte string: a multiply-rotate over 8-byte words, then a final avalanche so that both
/// the low bits (the slot) and the high bits (the tag) depend on every input byte.
#[inline]
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(c.try_into().unwrap())).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl PieceIndex {
    /// Indexes `pieces`; on duplicate texts the lowest id wins, as in SentencePiece.
    pub(crate) fn new(pieces: &[String]) -> PieceIndex {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let size = (pieces.len() * 2).next_power_of_two().max(16);
        let mut index = PieceIndex {
            arena: String::with_capacity(total),
            slots: vec![Slot::default(); size],
            mask: size - 1,
            filter: vec![0; FILTER_WORDS],
        };
        for (id, p) in pieces.iter().enumerate() {
            index.insert(p, id as u32);
        }
        index
    }

    #[inline]
    fn text(&self, s: &Slot) -> &str {
        &self.arena[s.start as usize..(s.start + s.len) as usize]
    }

    fn insert(&mut self, key: &str, id: u32) {
        let h = hash(key.as_bytes());
        let bit = (h >> 32) as usize % (FILTER_WORDS * 64);
        self.filter[bit / 64] |= 1 << (bit % 64);
        let tag = (h >> 32) as u32;
        let mut i = h as usize & self.mask;
        loop {
            let s = self.slots[i];
            if s.id1 == 0 {
                let start = self.arena.len() as u32;
                self.arena.push_str(key);
                self.slots[i] = Slot { id1: id + 1, tag, start, len: key.len() as u32 };
                return;
            }
            if s.tag == tag && self.text(&s) == key {
                return; // a lower id already has this text
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The id of the piece whose text is `key`.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<u32> {
        let h = hash(key.as_bytes());
        let bit = (h >> 32) as usize % (FILTER_WORDS * 64);
        if self.filter[bit / 64] & (1 << (bit % 64)) == 0 {
            return None;
        }
        let tag = (h >> 32) as u32;
        let mut i = h as usize & self.mask;
        loop {
            let s = &self.slots[i];
            if s.id1 == 0 {
                return None;
            }
            if s.tag == tag && s.len as usize == key.len() && self.text(s) == key {
                return Some(s.id1 - 1);
            }
            i = (i + 1) & self.mask;
        }
    }
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
        let m = PieceIndex::new(&["a".into(), "b".into(), "a".into()]);
        assert_eq!(m.get("a"), Some(0));
        assert_eq!(m.get("b"), Some(1));
        assert_eq!(m.get("c"), None);
        assert_eq!(m.get(""), None);
    }

    #[test]
    fn index_finds_every_piece() {
        let pieces: Vec<String> = (0..5000).map(|i| format!("piece{i}▁{}", "x".repeat(i % 13))).collect();
        let m = PieceIndex::new(&pieces);
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(m.get(p), Some(i as u32));
        }
        assert_eq!(m.get("piece"), None);
    }
}

//! SentencePiece BPE over one normalised segment, in O(n log n).
//!
//! The segment starts as one symbol per character, kept in a doubly linked list. Every adjacent pair whose
//! concatenation is a vocabulary piece goes into a max-heap keyed by that piece's score, ties going to the
//! leftmost pair (SentencePiece's order, and Hugging Face's for merges derived from scores). Popping the best
//! pair merges it and pushes the two new pairs it forms with its neighbours; heap entries made stale by an
//! earlier merge are recognised by their recorded byte length and dropped. Symbols are spans of the segment,
//! so the concatenation of a pair is a slice of the text and looking it up allocates nothing.
//!
//! Whatever is left that is not a piece (a character outside the vocabulary) falls back to its UTF-8 bytes
//! as `<0xXX>` pieces, or to `<unk>` when the vocabulary has no byte pieces.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::{PieceIndex, NO_MERGE};

pub(crate) const NONE: u32 = u32::MAX;

/// What BPE needs from the vocabulary, precomputed once per tokenizer.
pub(crate) struct Bpe {
    pub(crate) map: PieceIndex,
    pub(crate) scores: Vec<f32>,
    /// Id of each ASCII character's piece (NONE if absent): spares a hash look-up for most initial symbols.
    pub(crate) ascii: [u32; 128],
    /// Id of `<0xXX>` for each byte value, NONE where the vocabulary lacks it.
    pub(crate) byte_ids: [u32; 256],
    pub(crate) unk: u32,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    end: u32,
    prev: u32,
    next: u32,
    /// The piece this span is, NONE if it is none (before byte fallback).
    id: u32,
}

/// A candidate merge of the symbol at `left` with its successor.
#[derive(Clone, Copy)]
struct Pair {
    score: f32,
    left: u32,
    /// Byte length of the merged span when the pair was pushed; a different length later means stale.
    len: u32,
    id: u32,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    /// Greater = merged first: higher score, then the leftmost position.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// Segments longer than this are cut (at a character boundary) so that positions fit in u32.
const MAX_SEGMENT: usize = (u32::MAX / 2) as usize;

impl Bpe {
    pub(crate) fn new(map: PieceIndex, scores: Vec<f32>, byte_ids: [u32; 256], unk: u32) -> Bpe {
        let mut ascii = [NONE; 128];
        for (c, slot) in ascii.iter_mut().enumerate() {
            let s = [c as u8];
            if let Some(id) = map.get(std::str::from_utf8(&s).unwrap()) {
                *slot = id;
            }
        }
        Bpe { map, scores, ascii, byte_ids, unk }
    }

    /// Appends the ids of `text` (already normalised: spaces as `▁`) to `out`.
    pub(crate) fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let mut rest = text;
        while rest.len() > MAX_SEGMENT {
            let mut cut = MAX_SEGMENT;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            self.encode_segment(&rest[..cut], out);
            rest = &rest[cut..];
        }
        self.encode_segment(rest, out);
    }

    fn encode_segment(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut syms = self.initial_symbols(text);
        let mut heap: Vec<Pair> = Vec::with_capacity(syms.len());
        for i in 0..syms.len().saturating_sub(1) {
            if let Some(p) = self.pair(text, &syms, i as u32) {
                heap.push(p);
            }
        }
        let mut heap = BinaryHeap::from(heap);
        while let Some(p) = heap.pop() {
            let left = p.left as usize;
            let l = syms[left];
            // Stale if the left symbol was absorbed by its predecessor, or either side has grown since.
            if l.end == l.start || l.next == NONE || syms[l.next as usize].end - l.start != p.len {
                continue;
            }
            let right = l.next as usize;
            let r = syms[right];
            syms[left].end = r.end;
            syms[left].next = r.next;
            syms[left].id = p.id;
            syms[right].end = syms[right].start; // dead
            if r.next != NONE {
                syms[r.next as usize].prev = p.left;
            }
            if l.prev != NONE {
                if let Some(q) = self.pair(text, &syms, l.prev) {
                    heap.push(q);
                }
            }
            if let Some(q) = self.pair(text, &syms, p.left) {
                heap.push(q);
            }
        }
        self.emit(text, &syms, out);
    }

    /// One symbol per character.
    fn initial_symbols(&self, text: &str) -> Vec<Symbol> {
        let mut syms = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let end = start + c.len_utf8();
            let id = if (c as u32) < 128 {
                self.ascii[c as usize]
            } else {
                self.map.get(&text[start..end]).unwrap_or(NONE)
            };
            let i = syms.len() as u32;
            syms.push(Symbol { start: start as u32, end: end as u32, prev: i.wrapping_sub(1), next: i + 1, id });
        }
        let last = syms.len() - 1;
        syms[last].next = NONE;
        syms
    }

    /// The merge of symbol `left` with its successor, if their concatenation is a piece BPE may produce.
    #[inline]
    fn pair(&self, text: &str, syms: &[Symbol], left: u32) -> Option<Pair> {
        let l = &syms[left as usize];
        if l.next == NONE {
            return None;
        }
        let end = syms[l.next as usize].end;
        let id = self.map.get(&text[l.start as usize..end as usize])?;
        let score = self.scores[id as usize];
        if score == NO_MERGE {
            return None;
        }
        Some(Pair { score, left, len: end - l.start, id })
    }

    /// Writes the final symbols' ids, with byte fallback for those that are not pieces.
    fn emit(&self, text: &str, syms: &[Symbol], out: &mut Vec<u32>) {
        let mut i = 0u32;
        let mut last_was_unk = false;
        while i != NONE {
            let s = &syms[i as usize];
            if s.id != NONE {
                out.push(s.id);
                last_was_unk = false;
            } else {
                let bytes = &text.as_bytes()[s.start as usize..s.end as usize];
                if bytes.iter().all(|&b| self.byte_ids[b as usize] != NONE) {
                    out.extend(bytes.iter().map(|&b| self.byte_ids[b as usize]));
                    last_was_unk = false;
                } else if !last_was_unk && self.unk != NONE {
                    // Consecutive unknown characters become one <unk>, as both references do.
                    out.push(self.unk);
                    last_was_unk = true;
                }
            }
            i = s.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::vocab::PieceIndex;

    fn bpe(pieces: &[(&str, f32)]) -> Bpe {
        let p: Vec<String> = pieces.iter().map(|x| x.0.to_string()).collect();
        let mut byte_ids = [NONE; 256];
        for (i, s) in p.iter().enumerate() {
            if let Some(b) = crate::tokenizer::vocab::parse_byte_piece(s) {
                byte_ids[b as usize] = i as u32;
            }
        }
        Bpe::new(PieceIndex::new(&p), pieces.iter().map(|x| x.1).collect(), byte_ids, 0)
    }

    fn enc(b: &Bpe, s: &str) -> Vec<u32> {
        let mut v = Vec::new();
        b.encode(s, &mut v);
        v
    }

    #[test]
    fn merges_by_score_then_leftmost() {
        // 0 unk, 1 a, 2 b, 3 c, 4 ab, 5 bc, 6 abc
        let b = bpe(&[("<unk>", NO_MERGE), ("a", 0.), ("b", 0.), ("c", 0.), ("ab", -2.), ("bc", -1.), ("abc", -3.)]);
        assert_eq!(enc(&b, "abc"), vec![6]); // bc first (higher score), then a+bc
        assert_eq!(enc(&b, "ab"), vec![4]);
        assert_eq!(enc(&b, "abab"), vec![4, 4]);
        let b = bpe(&[("<unk>", NO_MERGE), ("a", 0.), ("aa", -1.)]);
        assert_eq!(enc(&b, "aaa"), vec![2, 1]); // tie between the two "aa": leftmost
    }

    #[test]
    fn no_merge_pieces_are_never_formed() {
        let b = bpe(&[("<unk>", NO_MERGE), ("a", 0.), ("b", 0.), ("ab", NO_MERGE)]);
        assert_eq!(enc(&b, "ab"), vec![1, 2]);
    }

    #[test]
    fn byte_fallback_and_unk() {
        let b = bpe(&[("<unk>", NO_MERGE), ("a", 0.), ("<0xC3>", NO_MERGE), ("<0xA9>", NO_MERGE)]);
        assert_eq!(enc(&b, "aé"), vec![1, 2, 3]);
        assert_eq!(enc(&b, "xyaz"), vec![0, 1, 0]); // no byte pieces for x, y, z: one fused <unk> per run
    }
}

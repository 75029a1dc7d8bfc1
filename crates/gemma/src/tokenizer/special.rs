//! Finding special and user-defined tokens in raw text before BPE.
//!
//! Hugging Face `tokenizers` (the reference) cuts the raw, un-normalised text at every occurrence of an added
//! token, taking at each position the leftmost, then longest, match; the pieces in between go through
//! normalisation and BPE. Matching is on the raw text, so the user-defined piece `▁▁` matches two literal
//! U+2581 characters and not two spaces (spaces reach `▁▁` through BPE merges instead).
//!
//! A byte trie with a 256-way root keeps the scan at one table look-up for most positions.

const NONE: u32 = u32::MAX;

#[derive(Default, Clone)]
struct Node {
    /// Children, sorted by byte.
    edges: Vec<(u8, u32)>,
    /// The token that ends here, or NONE.
    token: u32,
}

/// A set of literal token strings, matched leftmost-longest.
#[derive(Clone)]
pub(crate) struct Matcher {
    /// Root children by first byte (NONE where no token starts with that byte).
    root: Box<[u32; 256]>,
    nodes: Vec<Node>,
    max_len: usize,
}

/// A piece of the input: raw text for BPE, or an already-matched token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Token(u32),
}

impl Matcher {
    /// A matcher over `(text, id)`; empty strings are ignored, and on duplicate strings the lowest id wins.
    pub(crate) fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, u32)>) -> Matcher {
        let mut m = Matcher { root: Box::new([NONE; 256]), nodes: Vec::new(), max_len: 0 };
        for (text, id) in tokens {
            m.insert(text.as_bytes(), id);
        }
        m
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn insert(&mut self, text: &[u8], id: u32) {
        let Some((&first, rest)) = text.split_first() else { return };
        self.max_len = self.max_len.max(text.len());
        let mut node = self.root[first as usize];
        if node == NONE {
            node = self.new_node();
            self.root[first as usize] = node;
        }
        for &b in rest {
            node = match self.nodes[node as usize].edges.binary_search_by_key(&b, |e| e.0) {
                Ok(i) => self.nodes[node as usize].edges[i].1,
                Err(i) => {
                    let child = self.new_node();
                    self.nodes[node as usize].edges.insert(i, (b, child));
                    child
                }
            };
        }
        let slot = &mut self.nodes[node as usize].token;
        if *slot == NONE || id < *slot {
            *slot = id;
        }
    }

    fn new_node(&mut self) -> u32 {
        self.nodes.push(Node { edges: Vec::new(), token: NONE });
        (self.nodes.len() - 1) as u32
    }

    /// The longest token starting at `text[0]`: (its length in bytes, its id).
    #[inline]
    fn longest_at(&self, text: &[u8]) -> Option<(usize, u32)> {
        let mut node = self.root[text[0] as usize];
        let mut best = None;
        let mut i = 1;
        while node != NONE {
            let n = &self.nodes[node as usize];
            if n.token != NONE {
                best = Some((i, n.token));
            }
            let Some(&b) = text.get(i) else { break };
            node = match n.edges.binary_search_by_key(&b, |e| e.0) {
                Ok(k) => n.edges[k].1,
                Err(_) => NONE,
            };
            i += 1;
        }
        best
    }

    /// Cuts `text` into raw-text segments and matched tokens, leftmost-longest, in order.
    pub(crate) fn split<'a>(&self, text: &'a str, out: &mut Vec<Segment<'a>>) {
        if self.is_empty() {
            if !text.is_empty() {
                out.push(Segment::Text(text));
            }
            return;
        }
        let bytes = text.as_bytes();
        let mut plain_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // Tokens are whole UTF-8 strings, so a match can only start on a character boundary.
            if (bytes[i] & 0xC0) != 0x80 && self.root[bytes[i] as usize] != NONE {
                if let Some((len, id)) = self.longest_at(&bytes[i..]) {
                    if plain_start < i {
                        out.push(Segment::Text(&text[plain_start..i]));
                    }
                    out.push(Segment::Token(id));
                    i += len;
                    plain_start = i;
                    continue;
                }
            }
            i += 1;
        }
        if plain_start < bytes.len() {
            out.push(Segment::Text(&text[plain_start..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split<'a>(m: &Matcher, s: &'a str) -> Vec<Segment<'a>> {
        let mut v = Vec::new();
        m.split(s, &mut v);
        v
    }

    #[test]
    fn leftmost_longest() {
        let m = Matcher::new([("<b>", 1), ("\n", 2), ("\n\n", 3), ("ab", 4), ("bcd", 5)]);
        use Segment::*;
        assert_eq!(split(&m, "x<b>y"), vec![Text("x"), Token(1), Text("y")]);
        assert_eq!(split(&m, "\n\n\n"), vec![Token(3), Token(2)]);
        // Leftmost wins over longest: "ab" starts before "bcd".
        assert_eq!(split(&m, "abcd"), vec![Token(4), Text("cd")]);
        assert_eq!(split(&m, "<b"), vec![Text("<b")]);
        assert_eq!(split(&m, ""), vec![]);
    }

    #[test]
    fn multibyte_text_and_tokens() {
        let m = Matcher::new([("▁▁", 7)]);
        use Segment::*;
        assert_eq!(split(&m, "é▁▁▁ü"), vec![Text("é"), Token(7), Text("▁ü")]);
    }
}

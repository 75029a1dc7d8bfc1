//! Vocabulary from a SentencePiece `tokenizer.model` (a serialised `ModelProto`), read with a minimal
//! protobuf wire-format reader: only the pieces and a handful of trainer and normaliser flags are needed.
//!
//! Field numbers, from sentencepiece_model.proto:
//! - `ModelProto`: 1 pieces (repeated), 2 trainer_spec, 3 normalizer_spec.
//! - `SentencePiece`: 1 piece, 2 score (float), 3 type (enum, default NORMAL).
//! - `TrainerSpec`: 3 model_type (BPE = 2), 35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id.
//! - `NormalizerSpec`: 1 name, 2 precompiled_charsmap, 3 add_dummy_prefix (default true),
//!   4 remove_extra_whitespaces (default true), 5 escape_whitespaces (default true).

use std::path::Path;

use super::vocab::{tok_err, TokenKind, Vocab, NO_MERGE};

/// A protobuf field: its number and its payload.
enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

/// Iterates the fields of one message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("field runs past the end")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next (field number, value), or None at the end of the message.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.take(usize::try_from(n).map_err(|_| "length overflows")?)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, field)))
    }
}

/// The flags read from `trainer_spec` and `normalizer_spec`, with protobuf defaults.
struct Spec {
    model_type: u64,
    byte_fallback: bool,
    unk_id: i64,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
    normalizer_name: String,
    has_charsmap: bool,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            model_type: 1, // UNIGRAM, the protobuf default
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            normalizer_name: String::new(),
            has_charsmap: false,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// Reads a `tokenizer.model` file.
pub fn vocab_from_sentencepiece_model(path: &Path) -> crate::Result<Vocab> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
    vocab_from_sentencepiece_bytes(&bytes, &path.display().to_string())
}

/// As [`vocab_from_sentencepiece_model`], from the file's bytes; `src` names the file in errors.
pub fn vocab_from_sentencepiece_bytes(bytes: &[u8], src: &str) -> crate::Result<Vocab> {
    let (mut pieces, mut scores, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
    let mut spec = Spec::default();
    let mut r = Reader::new(bytes);
    let err = |what: String| tok_err(src, format!("not a SentencePiece model: {what}"));
    while let Some((num, field)) = r.next().map_err(err)? {
        match (num, field) {
            (1, Field::Bytes(b)) => {
                let (p, s, k) = piece(b).map_err(|e| err(format!("piece {}: {e}", pieces.len())))?;
                pieces.push(p);
                scores.push(s);
                kinds.push(k);
            }
            (2, Field::Bytes(b)) => trainer_spec(b, &mut spec).map_err(|e| err(format!("trainer_spec: {e}")))?,
            (3, Field::Bytes(b)) => normalizer_spec(b, &mut spec).map_err(|e| err(format!("normalizer_spec: {e}")))?,
            _ => {}
        }
    }
    check_spec(&spec, src)?;
    for (s, k) in scores.iter_mut().zip(&kinds) {
        if !matches!(k, TokenKind::Normal | TokenKind::UserDefined) || !s.is_finite() {
            *s = NO_MERGE;
        }
    }
    let id = |v: i64| u32::try_from(v).ok().filter(|&i| (i as usize) < pieces.len());
    let mut vocab = Vocab {
        bos: id(spec.bos_id),
        eos: id(spec.eos_id),
        pad: id(spec.pad_id),
        unk: id(spec.unk_id),
        // SentencePiece leaves BOS to the caller; every Gemma checkpoint prepends it.
        add_bos: true,
        chat_template: None,
        pieces,
        scores,
        kinds,
    };
    if !spec.byte_fallback {
        for k in vocab.kinds.iter_mut().filter(|k| **k == TokenKind::Byte) {
            *k = TokenKind::Unused;
        }
    }
    super::rank_user_defined_first(&mut vocab);
    vocab.validate(src)?;
    Ok(vocab)
}

fn piece(b: &[u8]) -> Result<(String, f32, TokenKind), String> {
    let (mut text, mut score, mut kind) = (None, 0f32, TokenKind::Normal);
    let mut r = Reader::new(b);
    while let Some((num, f)) = r.next()? {
        match (num, f) {
            (1, Field::Bytes(s)) => text = Some(String::from_utf8(s.to_vec()).map_err(|_| "piece is not UTF-8")?),
            (2, Field::Fixed32(x)) => score = f32::from_bits(x),
            (3, Field::Varint(t)) => {
                kind = TokenKind::from_sentencepiece(t as i64).ok_or_else(|| format!("unknown piece type {t}"))?
            }
            _ => {}
        }
    }
    Ok((text.ok_or("no piece text")?, score, kind))
}

fn trainer_spec(b: &[u8], spec: &mut Spec) -> Result<(), String> {
    let mut r = Reader::new(b);
    while let Some((num, f)) = r.next()? {
        if let Field::Varint(v) = f {
            // int32 fields are sign-extended to 64 bits on the wire.
            let signed = v as i64;
            match num {
                3 => spec.model_type = v,
                35 => spec.byte_fallback = v != 0,
                40 => spec.unk_id = signed,
                41 => spec.bos_id = signed,
                42 => spec.eos_id = signed,
                43 => spec.pad_id = signed,
                _ => {}
            }
        }
    }
    Ok(())
}

fn normalizer_spec(b: &[u8], spec: &mut Spec) -> Result<(), String> {
    let mut r = Reader::new(b);
    while let Some((num, f)) = r.next()? {
        match (num, f) {
            (1, Field::Bytes(s)) => spec.normalizer_name = String::from_utf8_lossy(s).into_owned(),
            (2, Field::Bytes(s)) => spec.has_charsmap = !s.is_empty(),
            (3, Field::Varint(v)) => spec.add_dummy_prefix = v != 0,
            (4, Field::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
            (5, Field::Varint(v)) => spec.escape_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(())
}

/// Gemma's models are BPE with identity normalisation, no dummy prefix, no whitespace squashing; a model
/// that asks for more would be encoded wrongly, so it is refused.
fn check_spec(s: &Spec, src: &str) -> crate::Result<()> {
    let refuse = |what: &str| Err(tok_err(src, format!("{what}; only Gemma-style SentencePiece BPE models are supported")));
    if s.model_type != 2 {
        return refuse(&format!("trainer_spec.model_type is {} (not BPE = 2)", s.model_type));
    }
    if s.has_charsmap && s.normalizer_name != "identity" {
        return refuse(&format!("normalizer_spec.name is `{}` with a character map", s.normalizer_name));
    }
    if s.add_dummy_prefix {
        return refuse("normalizer_spec.add_dummy_prefix is true");
    }
    if s.remove_extra_whitespaces {
        return refuse("normalizer_spec.remove_extra_whitespaces is true");
    }
    if !s.escape_whitespaces {
        return refuse("normalizer_spec.escape_whitespaces is false");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes_field(num: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn varint_field(num: u64, v: u64, out: &mut Vec<u8>) {
        varint(num << 3, out);
        varint(v, out);
    }
    fn piece_msg(p: &str, score: f32, kind: u64) -> Vec<u8> {
        let mut m = Vec::new();
        bytes_field(1, p.as_bytes(), &mut m);
        varint(2 << 3 | 5, &mut m);
        m.extend_from_slice(&score.to_le_bytes());
        varint_field(3, kind, &mut m);
        m
    }

    fn model(dummy_prefix: bool) -> Vec<u8> {
        let mut f = Vec::new();
        for (p, s, k) in [("<unk>", 0., 2), ("<s>", 0., 3), ("</s>", 0., 3), ("<0x41>", 0., 6), ("a", -1., 1), ("▁▁", 0., 4)] {
            bytes_field(1, &piece_msg(p, s, k), &mut f);
        }
        let mut t = Vec::new();
        varint_field(3, 2, &mut t);
        varint_field(35, 1, &mut t);
        varint_field(43, u64::MAX, &mut t); // pad_id = -1
        bytes_field(2, &t, &mut f);
        let mut n = Vec::new();
        bytes_field(1, b"identity", &mut n);
        varint_field(3, dummy_prefix as u64, &mut n);
        varint_field(4, 0, &mut n);
        bytes_field(3, &n, &mut f);
        f
    }

    #[test]
    fn reads_a_handmade_model() {
        let v = vocab_from_sentencepiece_bytes(&model(false), "m").unwrap();
        assert_eq!(v.pieces, ["<unk>", "<s>", "</s>", "<0x41>", "a", "▁▁"]);
        assert_eq!(v.kinds[3], TokenKind::Byte);
        assert_eq!(v.kinds[5], TokenKind::UserDefined);
        assert_eq!((v.unk, v.bos, v.eos, v.pad), (Some(0), Some(1), Some(2), None));
        assert_eq!(v.scores[1], NO_MERGE);
        assert!(v.scores[5] > v.scores[4], "user-defined pieces rank above learned merges");
    }

    #[test]
    fn refuses_dummy_prefix_and_garbage() {
        let e = vocab_from_sentencepiece_bytes(&model(true), "x.model").unwrap_err().to_string();
        assert!(e.contains("x.model") && e.contains("add_dummy_prefix"), "{e}");
        assert!(vocab_from_sentencepiece_bytes(&[0x0a, 0xff], "y.model").is_err());
        assert!(vocab_from_sentencepiece_bytes(b"{\"json\": 1}", "z.model").is_err());
    }
}

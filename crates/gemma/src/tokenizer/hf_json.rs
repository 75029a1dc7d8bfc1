//! Vocabulary from a Hugging Face `tokenizer.json` (a BPE model converted from Gemma's SentencePiece model).
//!
//! The file has no piece scores, only the merges list in priority order. SentencePiece's rule "merge the
//! pair whose concatenation has the highest score" becomes "the pair whose concatenation is produced by the
//! earliest merge": each piece gets score `-rank` of the first merge that produces it, and pieces no merge
//! produces (control and most user-defined tokens) are never formed by BPE.
//!
//! Added tokens become [`TokenKind::Control`] when `special` and [`TokenKind::UserDefined`] otherwise, which
//! is how `tokenizers` treats them: non-special ones are matched in the text even with special-token parsing
//! off. Only the normaliser Gemma uses (spaces to `▁`) is accepted; anything else is an error, not a guess.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;

use super::vocab::{parse_byte_piece, tok_err, PieceIndex, TokenKind, Vocab, NO_MERGE};

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    added_tokens: Vec<Added>,
    #[serde(default)]
    normalizer: Json,
    #[serde(default)]
    pre_tokenizer: Json,
    #[serde(default)]
    post_processor: Json,
    model: Model,
}

#[derive(Deserialize)]
struct Added {
    id: u32,
    content: String,
    #[serde(default)]
    special: bool,
}

#[derive(Deserialize)]
struct Model {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    vocab: Entries,
    #[serde(default)]
    merges: Vec<Merge>,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(default)]
    unk_token: Option<String>,
}

/// `model.vocab` read straight into a list: a 262k-entry map through `serde_json::Value` is needlessly slow.
struct Entries(Vec<(String, u32)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from piece to id")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(e) = map.next_entry::<String, u32>()? {
                    v.push(e);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// One merge, written `"a b"` (older files) or `["a", "b"]`.
pub(super) struct Merge(pub String, pub String);

impl<'de> Deserialize<'de> for Merge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Merge;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge as \"a b\" or [\"a\", \"b\"]")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Merge, E> {
                let (a, b) = s.split_once(' ').ok_or_else(|| E::custom(format!("merge `{s}` has no space")))?;
                Ok(Merge(a.to_string(), b.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge, A::Error> {
                let a = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let b = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Merge(a, b))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads `path` (a `tokenizer.json`) into a vocabulary.
pub fn vocab_from_tokenizer_json(path: &Path) -> crate::Result<Vocab> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
    vocab_from_tokenizer_json_bytes(&bytes, &path.display().to_string())
}

/// As [`vocab_from_tokenizer_json`], from the file's bytes; `src` names the file in errors.
pub fn vocab_from_tokenizer_json_bytes(bytes: &[u8], src: &str) -> crate::Result<Vocab> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| tok_err(src, format!("not a tokenizer.json: {e}")))?;
    check_model_type(&file.model, src)?;
    check_normalizer(&file.normalizer, src)?;
    check_pre_tokenizer(&file.pre_tokenizer, src)?;
    let (pieces, mut kinds) = pieces_and_kinds(&file, src)?;
    let scores = scores_from_merges(&pieces, &file.model.merges, src)?;
    for (i, p) in pieces.iter().enumerate() {
        if kinds[i] == TokenKind::Normal && file.model.byte_fallback && parse_byte_piece(p).is_some() {
            kinds[i] = TokenKind::Byte;
        }
    }
    let find = |s: &str| pieces.iter().position(|p| p == s).map(|i| i as u32);
    let unk = file.model.unk_token.as_deref().and_then(find);
    if let Some(u) = unk {
        kinds[u as usize] = TokenKind::Unknown;
    }
    let (add_bos, template_bos) = bos_from_post_processor(&file.post_processor, &file.added_tokens);
    let vocab = Vocab {
        bos: template_bos.or_else(|| find("<bos>")),
        eos: find("<eos>"),
        pad: find("<pad>"),
        unk,
        add_bos,
        chat_template: None,
        pieces,
        scores,
        kinds,
    };
    vocab.validate(src)?;
    Ok(vocab)
}

fn check_model_type(model: &Model, src: &str) -> crate::Result<()> {
    match model.kind.as_deref() {
        None | Some("BPE") => Ok(()),
        Some(t) => Err(tok_err(src, format!("model.type is `{t}`; Gemma tokenizers are `BPE`"))),
    }
}

/// Gemma's normaliser replaces each space by `▁`, and does nothing else.
fn check_normalizer(n: &Json, src: &str) -> crate::Result<()> {
    let is_space_replace = |n: &Json| {
        n["type"] == "Replace" && n["pattern"]["String"] == " " && n["content"] == "\u{2581}"
    };
    let ok = is_space_replace(n)
        || (n["type"] == "Sequence"
            && n["normalizers"].as_array().is_some_and(|a| a.len() == 1 && is_space_replace(&a[0])));
    if ok {
        Ok(())
    } else {
        Err(tok_err(src, format!("normalizer {n} is not Gemma's (replace \" \" by \"▁\"), which is all this tokenizer implements")))
    }
}

/// Gemma 3's files split on " " after the normaliser has removed every space: a no-op, accepted as such.
fn check_pre_tokenizer(p: &Json, src: &str) -> crate::Result<()> {
    if p.is_null() || (p["type"] == "Split" && p["pattern"]["String"] == " ") {
        Ok(())
    } else {
        Err(tok_err(src, format!("pre_tokenizer {p} would split the text; Gemma's tokenizer does not")))
    }
}

/// Pieces by id from `model.vocab` and `added_tokens`; every id below the largest must have a piece.
fn pieces_and_kinds(file: &File, src: &str) -> crate::Result<(Vec<String>, Vec<TokenKind>)> {
    let entries = &file.model.vocab.0;
    let n = entries.iter().map(|e| e.1).chain(file.added_tokens.iter().map(|a| a.id)).max().map_or(0, |m| m as usize + 1);
    // Ids are dense; checking it before allocating keeps a stray huge id from asking for gigabytes.
    if n > entries.len() + file.added_tokens.len() {
        return Err(tok_err(src, format!("token id {} leaves gaps: only {} pieces are listed", n - 1, entries.len())));
    }
    let mut pieces: Vec<Option<String>> = vec![None; n];
    for (p, id) in entries {
        pieces[*id as usize] = Some(p.clone());
    }
    let mut kinds = vec![TokenKind::Normal; n];
    for a in &file.added_tokens {
        let slot = &mut pieces[a.id as usize];
        if slot.as_deref().is_some_and(|p| p != a.content) {
            return Err(tok_err(src, format!("added token {} `{}` has a different piece in model.vocab", a.id, a.content)));
        }
        *slot = Some(a.content.clone());
        kinds[a.id as usize] = if a.special { TokenKind::Control } else { TokenKind::UserDefined };
    }
    let pieces = pieces
        .into_iter()
        .enumerate()
        .map(|(id, p)| p.ok_or_else(|| tok_err(src, format!("token id {id} has no piece in model.vocab or added_tokens"))))
        .collect::<crate::Result<Vec<_>>>()?;
    Ok((pieces, kinds))
}

/// Score of each piece: minus the rank of the first merge that produces it; NO_MERGE if none does.
pub(super) fn scores_from_merges(pieces: &[String], merges: &[Merge], src: &str) -> crate::Result<Vec<f32>> {
    if merges.len() >= 1 << 24 {
        return Err(tok_err(src, format!("{} merges: ranks past 2^24 would not be exact as scores", merges.len())));
    }
    let map = PieceIndex::new(pieces);
    let mut scores = vec![NO_MERGE; pieces.len()];
    let mut joined = String::new();
    for (rank, Merge(a, b)) in merges.iter().enumerate() {
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        let Some(id) = map.get(joined.as_str()) else {
            return Err(tok_err(src, format!("merge #{rank} `{a}` + `{b}` makes `{joined}`, which is not in model.vocab")));
        };
        if scores[id as usize] == NO_MERGE {
            scores[id as usize] = -(rank as f32);
        }
    }
    Ok(scores)
}

/// Whether the post-processor prepends a special token, and which: `tokenizers`' way of adding BOS.
fn bos_from_post_processor(pp: &Json, added: &[Added]) -> (bool, Option<u32>) {
    let first = match pp["type"].as_str() {
        Some("TemplateProcessing") => &pp["single"][0],
        Some("Sequence") => {
            let Some(t) = pp["processors"].as_array().and_then(|a| a.iter().find(|p| p["type"] == "TemplateProcessing"))
            else {
                return (false, None);
            };
            &t["single"][0]
        }
        _ => return (false, None),
    };
    let Some(name) = first["SpecialToken"]["id"].as_str() else { return (false, None) };
    let id = pp["special_tokens"][name]["ids"][0]
        .as_u64()
        .map(|i| i as u32)
        .or_else(|| added.iter().find(|a| a.content == name).map(|a| a.id));
    (id.is_some(), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"{
        "added_tokens": [
            {"id": 0, "content": "<pad>", "special": true},
            {"id": 1, "content": "<eos>", "special": true},
            {"id": 2, "content": "<bos>", "special": true},
            {"id": 3, "content": "<unk>", "special": true},
            {"id": 4, "content": "\n", "special": false}
        ],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true,
            "vocab": {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "\n": 4, "<0x41>": 5, "a": 6, "b": 7, "ab": 8, "▁": 9, "▁ab": 10},
            "merges": [["a", "b"], "▁ ab"]}
    }"#;

    #[test]
    fn reads_pieces_kinds_and_ranks() {
        let v = vocab_from_tokenizer_json_bytes(TINY.as_bytes(), "tiny").unwrap();
        assert_eq!(v.len(), 11);
        assert_eq!((v.bos, v.eos, v.pad, v.unk, v.add_bos), (Some(2), Some(1), Some(0), Some(3), true));
        assert_eq!(v.kinds[2], TokenKind::Control);
        assert_eq!(v.kinds[3], TokenKind::Unknown);
        assert_eq!(v.kinds[4], TokenKind::UserDefined);
        assert_eq!(v.kinds[5], TokenKind::Byte);
        assert_eq!(v.scores[8], 0.0);
        assert_eq!(v.scores[10], -1.0);
        assert_eq!(v.scores[6], NO_MERGE);
    }

    #[test]
    fn rejects_other_normalizers() {
        let bad = TINY.replace(r#""type": "Replace""#, r#""type": "NFKC""#);
        let e = vocab_from_tokenizer_json_bytes(bad.as_bytes(), "tiny.json").unwrap_err().to_string();
        assert!(e.contains("tiny.json") && e.contains("normalizer"), "{e}");
    }

    #[test]
    fn rejects_sparse_ids() {
        let bad = TINY.replace(r#""▁ab": 10"#, r#""▁ab": 4000000000"#);
        let e = vocab_from_tokenizer_json_bytes(bad.as_bytes(), "tiny.json").unwrap_err().to_string();
        assert!(e.contains("gaps"), "{e}");
    }

    #[test]
    fn rejects_merge_outside_vocab() {
        let bad = TINY.replace(r#"["a", "b"]"#, r#"["b", "a"]"#);
        let e = vocab_from_tokenizer_json_bytes(bad.as_bytes(), "tiny.json").unwrap_err().to_string();
        assert!(e.contains("merge #0"), "{e}");
    }
}

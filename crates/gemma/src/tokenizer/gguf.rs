//! Vocabulary from GGUF metadata (`tokenizer.ggml.*`), as llama.cpp's converter writes it for Gemma.
//!
//! Two things in those files differ from the SentencePiece model they were converted from, and are undone
//! here so that a GGUF encodes exactly like the `tokenizer.json` of the same model:
//! - user-defined pieces are stored with real spaces (`"  "` for SentencePiece's `▁▁`), because llama.cpp
//!   matches them in the raw text; we store pieces the SentencePiece way and turn the spaces back into `▁`;
//! - every non-normal piece gets the placeholder score -1000, whereas SentencePiece ranks user-defined
//!   pieces above all learned merges (see [`super::rank_user_defined_first`]).
//!
//! Gemma 4's files (`tokenizer.ggml.model` = `gemma4`) are written from `tokenizer.json` instead: the pieces as
//! they are there, placeholder scores, and the merges list (`tokenizer.ggml.merges`, "a b" in priority order),
//! from which the merge scores are taken exactly as from `tokenizer.json`.
//!
//! Token kinds are taken as the file declares them. For Gemma 3, llama.cpp's converter declares `<unusedN>`
//! and `<mask>` control and `<start_of_image>`/`<end_of_image>` user-defined, the reverse of
//! `tokenizer.json`; so with special-token parsing off those strings encode differently by source, exactly
//! as Hugging Face `tokenizers` does when given each file's flags (tests/fixtures/tokenizer/README.md).

use std::collections::BTreeMap;

use super::vocab::{tok_err, TokenKind, Vocab, NO_MERGE};
use crate::formats::gguf::Value;

const SRC: &str = "GGUF metadata";

/// Builds the vocabulary from a GGUF file's metadata.
pub fn vocab_from_gguf(meta: &BTreeMap<String, Value>) -> crate::Result<Vocab> {
    let merges_file = match meta.get("tokenizer.ggml.model") {
        Some(Value::String(m)) if m == "llama" => false,
        Some(Value::String(m)) if m == "gemma4" => true,
        Some(Value::String(m)) => {
            return Err(tok_err(
                SRC,
                format!("tokenizer.ggml.model is `{m}`; Gemma uses `llama` (SentencePiece BPE) or, for Gemma 4, `gemma4` (BPE with merges)"),
            ))
        }
        Some(_) => return Err(tok_err(SRC, "tokenizer.ggml.model is not a string")),
        None => return Err(tok_err(SRC, "no tokenizer.ggml.model: the file carries no tokenizer")),
    };
    if let Some(Value::Bool(true)) = meta.get("tokenizer.ggml.add_space_prefix") {
        return Err(tok_err(SRC, "tokenizer.ggml.add_space_prefix is true; Gemma tokenizers add no dummy prefix"));
    }
    let tokens = array(meta, "tokenizer.ggml.tokens")?.ok_or_else(|| tok_err(SRC, "no tokenizer.ggml.tokens"))?;
    let n = tokens.len();
    let kinds = match array(meta, "tokenizer.ggml.token_type")? {
        Some(types) => kinds(types, n)?,
        None => vec![TokenKind::Normal; n],
    };
    let mut pieces = Vec::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        let Value::String(s) = t else {
            return Err(tok_err(SRC, format!("tokenizer.ggml.tokens[{i}] is not a string")));
        };
        pieces.push(if kinds[i] == TokenKind::UserDefined { s.replace(' ', "\u{2581}") } else { s.clone() });
    }
    let scores = match (merges_file, array(meta, "tokenizer.ggml.scores")?) {
        (true, _) => {
            let merges = array(meta, "tokenizer.ggml.merges")?.ok_or_else(|| tok_err(SRC, "no tokenizer.ggml.merges: a `gemma4` tokenizer is BPE by merges"))?;
            super::hf_json::scores_from_merges(&pieces, &merges_list(merges)?, SRC)?
        }
        (false, Some(s)) => scores(s, &kinds)?,
        (false, None) => return Err(tok_err(SRC, "no tokenizer.ggml.scores: SentencePiece BPE needs the piece scores")),
    };
    let mut vocab = Vocab {
        pieces,
        scores,
        kinds,
        bos: id(meta, "tokenizer.ggml.bos_token_id")?,
        eos: id(meta, "tokenizer.ggml.eos_token_id")?,
        pad: id(meta, "tokenizer.ggml.padding_token_id")?,
        unk: id(meta, "tokenizer.ggml.unknown_token_id")?,
        add_bos: !matches!(meta.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(false))),
        chat_template: match meta.get("tokenizer.chat_template") {
            Some(Value::String(t)) => Some(t.clone()),
            _ => None,
        },
    };
    if !merges_file {
        super::rank_user_defined_first(&mut vocab);
    }
    vocab.validate(SRC)?;
    Ok(vocab)
}

fn array<'a>(meta: &'a BTreeMap<String, Value>, key: &str) -> crate::Result<Option<&'a [Value]>> {
    match meta.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(tok_err(SRC, format!("{key} is not an array"))),
    }
}

fn kinds(types: &[Value], n: usize) -> crate::Result<Vec<TokenKind>> {
    if types.len() != n {
        return Err(tok_err(SRC, format!("tokenizer.ggml.token_type has {} entries for {n} tokens", types.len())));
    }
    types
        .iter()
        .enumerate()
        .map(|(i, v)| {
            int(v)
                .and_then(TokenKind::from_sentencepiece)
                .ok_or_else(|| tok_err(SRC, format!("tokenizer.ggml.token_type[{i}] = {v:?} is not a token type 1..6")))
        })
        .collect()
}

/// `tokenizer.ggml.merges`: "left right" strings (the pieces themselves hold no ASCII space: spaces are `▁`).
fn merges_list(values: &[Value]) -> crate::Result<Vec<super::hf_json::Merge>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(m) => match m.split_once(' ') {
                Some((a, b)) => Ok(super::hf_json::Merge(a.to_string(), b.to_string())),
                None => Err(tok_err(SRC, format!("tokenizer.ggml.merges[{i}] = {m:?} is not two pieces separated by a space"))),
            },
            _ => Err(tok_err(SRC, format!("tokenizer.ggml.merges[{i}] is not a string"))),
        })
        .collect()
}

/// File scores for normal pieces; pieces BPE never produces get NO_MERGE.
fn scores(values: &[Value], kinds: &[TokenKind]) -> crate::Result<Vec<f32>> {
    if values.len() != kinds.len() {
        return Err(tok_err(SRC, format!("tokenizer.ggml.scores has {} entries for {} tokens", values.len(), kinds.len())));
    }
    values
        .iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (v, k))| {
            let s = match v {
                Value::F32(x) => *x,
                Value::F64(x) => *x as f32,
                _ => return Err(tok_err(SRC, format!("tokenizer.ggml.scores[{i}] is not a float"))),
            };
            Ok(match k {
                TokenKind::Normal | TokenKind::UserDefined if s.is_finite() => s,
                _ => NO_MERGE,
            })
        })
        .collect()
}

fn int(v: &Value) -> Option<i64> {
    Some(match *v {
        Value::U8(x) => x as i64,
        Value::I8(x) => x as i64,
        Value::U16(x) => x as i64,
        Value::I16(x) => x as i64,
        Value::U32(x) => x as i64,
        Value::I32(x) => x as i64,
        Value::U64(x) => i64::try_from(x).ok()?,
        Value::I64(x) => x,
        _ => return None,
    })
}

/// An optional token id; negative values mean "none", as llama.cpp writes them.
fn id(meta: &BTreeMap<String, Value>, key: &str) -> crate::Result<Option<u32>> {
    let Some(v) = meta.get(key) else { return Ok(None) };
    match int(v) {
        Some(x) if x < 0 => Ok(None),
        Some(x) if x <= u32::MAX as i64 => Ok(Some(x as u32)),
        _ => Err(tok_err(SRC, format!("{key} = {v:?} is not a token id"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(extra: &[(&str, Value)]) -> BTreeMap<String, Value> {
        let s = |x: &str| Value::String(x.into());
        let tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "  ", "<0x41>", "a", "▁a"];
        let types = [3, 3, 3, 2, 4, 6, 1, 1];
        let scores = [-1000., -1000., -1000., -1000., -1000., 0., -5., -6.];
        let mut m: BTreeMap<String, Value> = [
            ("tokenizer.ggml.model", s("llama")),
            ("tokenizer.ggml.tokens", Value::Array(tokens.iter().map(|t| s(t)).collect())),
            ("tokenizer.ggml.token_type", Value::Array(types.iter().map(|&t| Value::I32(t)).collect())),
            ("tokenizer.ggml.scores", Value::Array(scores.iter().map(|&x| Value::F32(x)).collect())),
            ("tokenizer.ggml.bos_token_id", Value::U32(2)),
            ("tokenizer.ggml.eos_token_id", Value::U32(1)),
            ("tokenizer.ggml.unknown_token_id", Value::U32(3)),
            ("tokenizer.ggml.padding_token_id", Value::U32(0)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.chat_template", s("{{ bos_token }}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            m.insert(k.to_string(), v.clone());
        }
        m
    }

    #[test]
    fn reads_gemma_style_metadata() {
        let v = vocab_from_gguf(&meta(&[])).unwrap();
        assert_eq!(v.pieces[4], "▁▁", "user-defined spaces are stored the SentencePiece way");
        assert_eq!(v.kinds[..6], [TokenKind::Control, TokenKind::Control, TokenKind::Control, TokenKind::Unknown, TokenKind::UserDefined, TokenKind::Byte]);
        assert_eq!((v.bos, v.eos, v.pad, v.unk, v.add_bos), (Some(2), Some(1), Some(0), Some(3), true));
        assert_eq!(v.scores[0], NO_MERGE);
        assert_eq!(v.scores[5], NO_MERGE);
        assert!(v.scores[4] > v.scores[6], "user-defined pieces rank above every merge");
        assert_eq!(v.chat_template.as_deref(), Some("{{ bos_token }}"));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let err = |m: BTreeMap<String, Value>| vocab_from_gguf(&m).unwrap_err().to_string();
        assert!(err(meta(&[("tokenizer.ggml.model", Value::String("gpt2".into()))])).contains("gpt2"));
        assert!(err(meta(&[("tokenizer.ggml.add_space_prefix", Value::Bool(true))])).contains("add_space_prefix"));
        assert!(err(meta(&[("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.)]))])).contains("scores"));
        assert!(err(meta(&[("tokenizer.ggml.token_type", Value::U32(1))])).contains("token_type"));
        assert!(err(meta(&[("tokenizer.ggml.bos_token_id", Value::U32(99))])).contains("bos"));
        let mut no_tokens = meta(&[]);
        no_tokens.remove("tokenizer.ggml.tokens");
        assert!(err(no_tokens).contains("tokenizer.ggml.tokens"));
    }

    #[test]
    fn encodes_through_the_user_defined_run() {
        let tok = crate::tokenizer::Tokenizer::from_gguf_metadata(&meta(&[])).unwrap();
        let raw = crate::tokenizer::EncodeOptions { add_bos: false, parse_special: false };
        // "  a": the two spaces merge into ▁▁ first (user-defined outranks ▁a), then a stays alone.
        assert_eq!(tok.encode("  a", raw), vec![4, 6]);
        assert_eq!(tok.encode(" a", raw), vec![7]);
        assert_eq!(tok.decode(&[4, 6]).unwrap(), "  a");
    }
}

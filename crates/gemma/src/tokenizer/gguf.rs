//! Vocabulary from GGUF metadata (`tokenizer.ggml.*`), as llama.cpp's converter writes it for Gemma.
//!
//! Two things in those files differ from the SentencePiece model they were converted from, and are undone
//! here so that a GGUF encodes exactly like the `tokenizer.json` of the same model:
//! - user-defined pieces are stored with real spaces (`"  "` for SentencePiece's `▁▁`), because llama.cpp
//!   matches them in the raw text; we store pieces the SentencePiece way and turn the spaces back into `▁`;
//! - every non-normal piece gets the placeholder score -1000, whereas SentencePiece ranks user-defined
//!   pieces above all learned merges (see [`super::rank_user_defined_first`]).

use std::collections::BTreeMap;

use super::vocab::{tok_err, TokenKind, Vocab, NO_MERGE};
use crate::formats::gguf::Value;

const SRC: &str = "GGUF metadata";

/// Builds the vocabulary from a GGUF file's metadata.
pub fn vocab_from_gguf(meta: &BTreeMap<String, Value>) -> crate::Result<Vocab> {
    match meta.get("tokenizer.ggml.model") {
        Some(Value::String(m)) if m == "llama" => {}
        Some(Value::String(m)) => {
            return Err(tok_err(SRC, format!("tokenizer.ggml.model is `{m}`; Gemma uses `llama` (SentencePiece BPE)")))
        }
        Some(_) => return Err(tok_err(SRC, "tokenizer.ggml.model is not a string")),
        None => return Err(tok_err(SRC, "no tokenizer.ggml.model: the file carries no tokenizer")),
    }
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
    let scores = match array(meta, "tokenizer.ggml.scores")? {
        Some(s) => scores(s, &kinds)?,
        None => return Err(tok_err(SRC, "no tokenizer.ggml.scores: SentencePiece BPE needs the piece scores")),
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
    super::rank_user_defined_first(&mut vocab);
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

//! The Gemma tokenizer: SentencePiece BPE with byte fallback, exact to the id, from any of the three files a
//! Gemma checkpoint may carry (`tokenizer.json`, `tokenizer.model`, GGUF metadata), plus chat templates.
//!
//! Encoding, as Gemma's tokenizer does it (Hugging Face `tokenizers` with Gemma's `tokenizer.json` is the
//! reference the tests compare against, id for id):
//! 1. the raw text is cut at added tokens, leftmost-longest: user-defined pieces (runs of newlines and
//!    tabs, html tags, ...) always, control tokens (`<bos>`, `<start_of_turn>`, ...) only when
//!    [`EncodeOptions::parse_special`] is on ([`special`]);
//! 2. in the text between them each space becomes `▁` — no dummy prefix, no splitting on whitespace, so a
//!    merge may span several spaces;
//! 3. BPE merges adjacent symbols by piece score, with byte fallback for characters outside the vocabulary
//!    ([`bpe`]).
//!
//! Decoding and streaming decoding are in [`decode`], chat templates in [`chat`], CodeGemma's
//! fill-in-the-middle prompts in [`fim`].

mod bpe;
pub mod chat;
pub mod decode;
pub mod fim;
pub mod gguf;
pub mod hf_json;
mod special;
pub mod spm;
pub mod vocab;

use std::collections::BTreeMap;
use std::path::Path;

pub use chat::{ChatTemplate, Message};
pub use decode::{ControlTokens, StreamDecoder};
pub use fim::FimTokens;
pub use vocab::{TokenKind, Vocab};

use bpe::{Bpe, NONE};
use special::{Matcher, Segment};
use vocab::{parse_byte_piece, PieceIndex, NO_MERGE};

/// How to encode a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Prepend the BOS token (when the vocabulary has one).
    pub add_bos: bool,
    /// Match control-token strings such as `<start_of_turn>` in the text as single tokens. Turn it off for
    /// untrusted text, where `<eos>` must stay five characters. User-defined tokens are matched either way.
    pub parse_special: bool,
}

impl Default for EncodeOptions {
    /// BOS added and special tokens parsed, as Hugging Face's `encode` does by default.
    fn default() -> Self {
        EncodeOptions { add_bos: true, parse_special: true }
    }
}

/// A loaded tokenizer. Cheap to share by reference; encoding and decoding take `&self`.
pub struct Tokenizer {
    vocab: Vocab,
    bpe: Bpe,
    /// User-defined tokens: matched whatever the options.
    user_defined: Matcher,
    /// User-defined and control tokens: matched with `parse_special`.
    with_control: Matcher,
}

impl Tokenizer {
    /// Builds the tokenizer from a filled vocabulary.
    pub fn from_vocab(vocab: Vocab) -> crate::Result<Tokenizer> {
        vocab.validate("vocabulary")?;
        let mut byte_ids = [NONE; 256];
        for (id, (p, k)) in vocab.pieces.iter().zip(&vocab.kinds).enumerate() {
            if *k == TokenKind::Byte {
                if let Some(b) = parse_byte_piece(p) {
                    if byte_ids[b as usize] == NONE {
                        byte_ids[b as usize] = id as u32;
                    }
                }
            }
        }
        let matched = |want: &dyn Fn(TokenKind) -> bool| {
            Matcher::new(
                vocab.pieces.iter().zip(&vocab.kinds).enumerate().filter(|(_, (_, k))| want(**k)).map(|(i, (p, _))| (p.as_str(), i as u32)),
            )
        };
        let user_defined = matched(&|k| k == TokenKind::UserDefined);
        let with_control = matched(&|k| matches!(k, TokenKind::UserDefined | TokenKind::Control | TokenKind::Unknown));
        let bpe = Bpe::new(PieceIndex::new(&vocab.pieces), vocab.scores.clone(), byte_ids, vocab.unk.unwrap_or(NONE));
        Ok(Tokenizer { vocab, bpe, user_defined, with_control })
    }

    /// From a GGUF file's metadata (`tokenizer.ggml.*`).
    pub fn from_gguf_metadata(meta: &BTreeMap<String, crate::formats::gguf::Value>) -> crate::Result<Tokenizer> {
        Tokenizer::from_vocab(gguf::vocab_from_gguf(meta)?)
    }

    /// From a Hugging Face `tokenizer.json`.
    pub fn from_tokenizer_json(path: &Path) -> crate::Result<Tokenizer> {
        Tokenizer::from_vocab(hf_json::vocab_from_tokenizer_json(path)?)
    }

    /// From a SentencePiece `tokenizer.model`.
    pub fn from_sentencepiece_model(path: &Path) -> crate::Result<Tokenizer> {
        Tokenizer::from_vocab(spm::vocab_from_sentencepiece_model(path)?)
    }

    /// From a checkpoint directory: `tokenizer.json` if present, else `tokenizer.model`; the chat template
    /// and `add_bos_token` come from `tokenizer_config.json` when there is one; a `chat_template.jinja` file
    /// (where transformers 5 saves the template) takes precedence.
    pub fn from_dir(dir: &Path) -> crate::Result<Tokenizer> {
        let (json, model) = (dir.join("tokenizer.json"), dir.join("tokenizer.model"));
        let mut vocab = if json.is_file() {
            hf_json::vocab_from_tokenizer_json(&json)?
        } else if model.is_file() {
            spm::vocab_from_sentencepiece_model(&model)?
        } else {
            return Err(crate::Error::Tokenizer(format!("{}: no tokenizer.json or tokenizer.model", dir.display())));
        };
        let config = dir.join("tokenizer_config.json");
        if config.is_file() {
            let c = chat::read_tokenizer_config(&config)?;
            vocab.chat_template = c.chat_template.or(vocab.chat_template);
            vocab.add_bos = c.add_bos_token.unwrap_or(vocab.add_bos);
        }
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            vocab.chat_template = Some(std::fs::read_to_string(&jinja).map_err(|e| crate::Error::io(&jinja, e))?);
        }
        Tokenizer::from_vocab(vocab)
    }

    /// Encodes `text` into token ids.
    pub fn encode(&self, text: &str, opts: EncodeOptions) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if opts.add_bos {
            out.extend(self.vocab.bos);
        }
        let matcher = if opts.parse_special { &self.with_control } else { &self.user_defined };
        let mut segments = Vec::new();
        matcher.split(text, &mut segments);
        let mut normalized = String::new();
        for seg in segments {
            match seg {
                Segment::Token(id) => out.push(id),
                Segment::Text(t) => {
                    normalize_into(t, &mut normalized);
                    self.bpe.encode(&normalized, &mut out);
                }
            }
        }
        out
    }

    /// The encoding options this vocabulary asks for: its own `add_bos`, special tokens parsed.
    pub fn default_options(&self) -> EncodeOptions {
        EncodeOptions { add_bos: self.vocab.add_bos, parse_special: true }
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The piece text of `id` (spaces as `▁`), None outside the vocabulary.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.vocab.pieces.get(id as usize).map(|s| s.as_str())
    }

    /// The id of a piece, written as stored (`▁the`, `<start_of_turn>`, `<0x0A>`).
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.bpe.map.get(piece)
    }

    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.vocab.kinds.get(id as usize).copied()
    }

    /// Whether `id` is a control token (or `<unk>`), which decoding skips by default.
    pub fn is_control(&self, id: u32) -> bool {
        matches!(self.kind(id), Some(TokenKind::Control | TokenKind::Unknown))
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.vocab.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.vocab.eos
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.vocab.pad
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.vocab.unk
    }

    /// Ids that end a generated reply: EOS and, for instruction-tuned Gemma, the end of the model's turn
    /// (`<end_of_turn>`; Gemma 4's `<turn|>`).
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.vocab.eos.into_iter().collect();
        for end in END_OF_TURN {
            ids.extend(self.token_id(end).filter(|id| !ids.contains(id)));
        }
        ids
    }

    /// The vocabulary's chat template, or when it ships none the built-in turn format of its generation:
    /// Gemma 4's when the vocabulary has Gemma 4's `<|turn>` token, else Gemma 1-3's.
    pub fn chat_template(&self) -> ChatTemplate {
        let bos = self.vocab.bos.and_then(|i| self.piece(i)).unwrap_or("<bos>").to_string();
        let eos = self.vocab.eos.and_then(|i| self.piece(i)).unwrap_or("<eos>").to_string();
        match &self.vocab.chat_template {
            Some(t) => ChatTemplate::new(t.clone(), bos, eos),
            None if self.token_id("<|turn>").is_some() => ChatTemplate::gemma4(bos, eos),
            None => ChatTemplate::gemma(bos, eos),
        }
    }

    /// Gemma 4's thought channel, `(open, close)`: the ids of `<|channel>` and `<channel|>` when the vocabulary
    /// has both. A model that thinks writes `<|channel>thought\n…<channel|>` before its answer.
    pub fn thought_channel(&self) -> Option<(u32, u32)> {
        Some((self.token_id("<|channel>")?, self.token_id("<channel|>")?))
    }

    fn byte_value(&self, id: u32) -> Option<u8> {
        parse_byte_piece(self.piece(id)?)
    }
}

/// The pieces that end the model's turn: Gemma 1-3's and Gemma 4's.
pub const END_OF_TURN: [&str; 2] = ["<end_of_turn>", "<turn|>"];

/// Gemma's whole normaliser: each space becomes `▁`.
fn normalize_into(text: &str, out: &mut String) {
    out.clear();
    out.reserve(text.len() + text.len() / 4);
    let mut rest = text;
    while let Some(i) = rest.find(' ') {
        out.push_str(&rest[..i]);
        out.push('\u{2581}');
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// Gives every user-defined piece a score above all normal pieces, longer pieces first.
///
/// SentencePiece scores user-defined pieces 0, above every learned merge (those are negative), and the
/// `tokenizer.json` converted from it lists their merges first, longest first. GGUF files replace the score
/// with a placeholder, so the score sources are brought to that order here; it matters for runs of spaces,
/// which reach the user-defined `▁▁`..`▁▁▁…` pieces through merges rather than by matching.
pub(crate) fn rank_user_defined_first(vocab: &mut Vocab) {
    let top = vocab
        .scores
        .iter()
        .zip(&vocab.kinds)
        .filter(|(s, k)| **k == TokenKind::Normal && **s != NO_MERGE)
        .map(|(s, _)| *s)
        .fold(f32::NEG_INFINITY, f32::max);
    let base = if top.is_finite() { top + 1.0 } else { 0.0 };
    for ((s, k), p) in vocab.scores.iter_mut().zip(&vocab.kinds).zip(&vocab.pieces) {
        if *k == TokenKind::UserDefined {
            *s = base + p.chars().count() as f32;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

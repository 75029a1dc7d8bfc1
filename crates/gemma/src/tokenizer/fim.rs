//! CodeGemma fill-in-the-middle prompts: `<|fim_prefix|>PREFIX<|fim_suffix|>SUFFIX<|fim_middle|>`, after
//! which the model writes the middle and ends it with `<|file_separator|>`, another FIM token or EOS.
//!
//! Prefix and suffix are code, not markup: they are encoded with special tokens off, so a file that happens
//! to contain `<eos>` cannot end the prompt early.

use super::{EncodeOptions, Tokenizer};

/// The ids of the three FIM markers, and of `<|file_separator|>` when the vocabulary has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FimTokens {
    pub prefix: u32,
    pub suffix: u32,
    pub middle: u32,
    pub file_separator: Option<u32>,
}

impl FimTokens {
    /// The markers of `tok`'s vocabulary; an error naming the first one missing (non-CodeGemma models).
    pub fn of(tok: &Tokenizer) -> crate::Result<FimTokens> {
        let id = |p: &str| {
            tok.token_id(p).ok_or_else(|| {
                crate::Error::Invalid(format!("this model's vocabulary has no {p} token: fill-in-the-middle needs a CodeGemma model"))
            })
        };
        Ok(FimTokens {
            prefix: id("<|fim_prefix|>")?,
            suffix: id("<|fim_suffix|>")?,
            middle: id("<|fim_middle|>")?,
            file_separator: tok.token_id("<|file_separator|>"),
        })
    }

    /// `[BOS] <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>`.
    pub fn prompt(&self, tok: &Tokenizer, prefix: &str, suffix: &str) -> Vec<u32> {
        let plain = EncodeOptions { add_bos: false, parse_special: false };
        let mut ids: Vec<u32> = tok.bos_id().into_iter().collect();
        ids.push(self.prefix);
        ids.extend(tok.encode(prefix, plain));
        ids.push(self.suffix);
        ids.extend(tok.encode(suffix, plain));
        ids.push(self.middle);
        ids
    }

    /// Ids that end the middle, besides the usual stop ids.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut v = vec![self.prefix, self.suffix, self.middle];
        v.extend(self.file_separator);
        v
    }
}

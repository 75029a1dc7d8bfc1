//! `gemma complete`: CodeGemma fill-in-the-middle — the code between a prefix and a suffix.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gemma::runtime::{Generation, TextStream};
use gemma::tokenizer::FimTokens;

use super::common::{self, ModelArgs, SamplingArgs};

#[derive(clap::Args)]
#[command(after_help = "The prompt is <|fim_prefix|>PREFIX<|fim_suffix|>SUFFIX<|fim_middle|>;
generation stops at <|file_separator|>, another <|fim_*|> token or EOS, and
only the middle is printed. It needs a CodeGemma model (the default model has
no FIM tokens), e.g. google/codegemma-2b in the Hugging Face cache.

Examples:
  gemma complete -m google/codegemma-2b --prefix \"def add(a, b):\\n    \" \\
    --suffix \"\\n\\nprint(add(1, 2))\"
  gemma complete -m google/codegemma-2b --file src/main.py --line 12 --column 5")]
pub struct Args {
    /// Code before the cursor.
    #[arg(long, conflicts_with = "file")]
    prefix: Option<String>,
    /// Code after the cursor.
    #[arg(long, conflicts_with = "file", default_value = "")]
    suffix: String,
    /// A source file to split at --line and --column (1-based).
    #[arg(long, requires_all = ["line", "column"])]
    file: Option<PathBuf>,
    /// With --file: the cursor's line, counted from 1.
    #[arg(long)]
    line: Option<usize>,
    /// With --file: the cursor's column in characters, counted from 1.
    #[arg(long)]
    column: Option<usize>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 128)]
    max_tokens: usize,
}

/// Split `text` at a 1-based (line, column), the column counted in characters.
pub fn split_at_cursor(text: &str, line: usize, column: usize) -> Result<(String, String)> {
    if line == 0 || column == 0 {
        bail!("--line and --column count from 1");
    }
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let content = l.trim_end_matches('\n');
            let n_chars = content.chars().count();
            if column > n_chars + 1 {
                bail!("line {line} has {n_chars} characters; --column {column} is past its end");
            }
            let byte = content.char_indices().nth(column - 1).map(|(b, _)| b).unwrap_or(content.len());
            return Ok((text[..offset + byte].to_string(), text[offset + byte..].to_string()));
        }
        offset += l.len();
    }
    bail!("the file has {} lines; --line {line} is past its end", text.split_inclusive('\n').count())
}

pub fn run(a: Args) -> Result<()> {
    let (prefix, suffix) = match (&a.prefix, &a.file) {
        (Some(p), None) => (p.clone(), a.suffix.clone()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            split_at_cursor(&text, a.line.unwrap_or(0), a.column.unwrap_or(0))?
        }
        _ => bail!("give --prefix (and --suffix), or --file with --line and --column"),
    };
    let sampler = a.sampling.config()?;
    let l = common::load(&a.model)?;
    let (model, tok) = (&l.model, &l.tokenizer);
    let fim = FimTokens::of(tok)?;
    let ids = fim.prompt(tok, &prefix, &suffix);
    let mut stops = gemma::runtime::stop_token_ids(model, tok);
    stops.extend(fim.stop_ids());
    let ctx = model.config.context_len.min(8192);
    if ids.len() >= ctx {
        bail!("prefix and suffix are {} tokens, the context {ctx}", ids.len());
    }
    let mut gen = Generation::new(model, ctx, sampler);
    gen.feed(&l.pool, &ids, |_| {})?;
    let mut stream = TextStream::new(tok, stops, Vec::new());
    let mut out = std::io::stdout().lock();
    gen.generate(&l.pool, &mut stream, a.max_tokens, |piece| -> Result<bool> {
        out.write_all(piece.as_bytes())?;
        out.flush()?;
        Ok(true)
    })?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_at_cursor;

    #[test]
    fn cursor_split() {
        let t = "def f():\n    return 1\n";
        assert_eq!(split_at_cursor(t, 2, 5).unwrap(), ("def f():\n    ".into(), "return 1\n".into()));
        assert_eq!(split_at_cursor(t, 1, 1).unwrap(), ("".into(), t.into()));
        assert!(split_at_cursor(t, 5, 1).is_err());
        assert!(split_at_cursor(t, 1, 50).is_err());
    }
}

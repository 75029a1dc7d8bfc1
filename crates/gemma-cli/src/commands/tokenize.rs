//! `gemma tokenize` and `gemma detokenize`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use gemma::tokenizer::EncodeOptions;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  gemma tokenize \"The capital of France is\"      → 2,818,5279,529,7001,563
  gemma tokenize --json --no-bos \"<start_of_turn>user\"
  gemma tokenize -m model.gguf \"Hello\"
  gemma logits --ids $(gemma tokenize \"Hello\") --top 3")]
pub struct TokenizeArgs {
    /// The text to tokenize; `-` reads standard input.
    text: String,
    /// A .gguf file, a checkpoint folder (tokenizer.json or tokenizer.model), or org/name in the Hugging Face
    /// cache. Default: the default model.
    #[arg(short, long, value_name = "PATH|ORG/NAME")]
    model: Option<PathBuf>,
    /// Print {"ids": [...], "pieces": [...]} instead of comma-separated ids.
    #[arg(long)]
    json: bool,
    /// Do not add the BOS token.
    #[arg(long)]
    no_bos: bool,
    /// Treat special-token strings like `<start_of_turn>` as plain text.
    #[arg(long)]
    no_special: bool,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  gemma detokenize 2,818,5279,529,7001,563\n  gemma detokenize -m model.gguf --render-special 2,818,5279")]
pub struct DetokenizeArgs {
    /// Comma-separated token ids.
    #[arg(value_delimiter = ',', required = true)]
    ids: Vec<u32>,
    /// A .gguf file, a checkpoint folder, or org/name in the Hugging Face cache. Default: the default model.
    #[arg(short, long, value_name = "PATH|ORG/NAME")]
    model: Option<PathBuf>,
    /// Write control tokens such as `<bos>` as text instead of leaving them out.
    #[arg(long)]
    render_special: bool,
}

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let path = super::common::resolve_model(&a.model, false)?;
    let tok = gemma::load_tokenizer(&path).with_context(|| format!("loading the tokenizer of {}", path.display()))?;
    let text = super::common::read_prompt(Some(&a.text), None)?;
    let ids = tok.encode(&text, EncodeOptions { add_bos: !a.no_bos, parse_special: !a.no_special });
    if a.json {
        let pieces: Vec<&str> = ids.iter().map(|&i| tok.piece(i).unwrap_or("")).collect();
        println!("{}", serde_json::json!({"ids": ids, "pieces": pieces}));
    } else {
        println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    }
    Ok(())
}

pub fn detokenize(a: DetokenizeArgs) -> Result<()> {
    let path = super::common::resolve_model(&a.model, false)?;
    let tok = gemma::load_tokenizer(&path).with_context(|| format!("loading the tokenizer of {}", path.display()))?;
    let control = if a.render_special { gemma::tokenizer::ControlTokens::Render } else { gemma::tokenizer::ControlTokens::Skip };
    println!("{}", tok.decode_with(&a.ids, control)?);
    Ok(())
}

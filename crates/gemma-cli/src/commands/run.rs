//! `gemma run`: complete a prompt, streaming the text as it is generated.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use gemma::runtime::{stop_token_ids, Generation, TextStream};
use gemma::tokenizer::EncodeOptions;

use super::common::{self, ModelArgs, SamplingArgs};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  gemma run \"The capital of France is\"                 default model, fetched on first use
  gemma run -m model.gguf -n 64 --temperature 0 \"def fibonacci(n):\"
  gemma run -f prompt.txt --seed 7 --stop \"\\n\\n\"
  echo \"Once upon a time\" | gemma run - --json")]
pub struct Args {
    /// The prompt; `-` reads standard input.
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 256)]
    max_tokens: usize,
    /// Stop when the text contains this string (repeatable); it is not printed.
    #[arg(long, value_name = "STRING")]
    stop: Vec<String>,
    /// Context size in tokens (prompt + generation); default: the model's, at most 8192.
    #[arg(short, long)]
    ctx_size: Option<usize>,
    /// Keep the end of a prompt longer than the context instead of failing.
    #[arg(long)]
    truncate: bool,
    /// Do not add the BOS token.
    #[arg(long)]
    no_bos: bool,
    /// Treat special-token strings like `<start_of_turn>` in the prompt as plain text.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object (text, ids, finish_reason, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let prompt = common::read_prompt(a.prompt.as_deref(), a.file.as_deref())?;
    let sampler = a.sampling.config()?;
    let l = common::load(&a.model)?;
    let (model, tok) = (&l.model, &l.tokenizer);
    let ctx = a.ctx_size.unwrap_or(model.config.context_len.min(8192));
    if ctx < 2 || ctx > model.config.context_len {
        bail!("invalid option: --ctx-size must be between 2 and the model's context of {}", model.config.context_len);
    }
    let mut ids = tok.encode(&prompt, EncodeOptions { add_bos: !a.no_bos, parse_special: !a.raw });
    if ids.is_empty() {
        bail!("the prompt is empty (and --no-bos leaves no token to start from)");
    }
    if ids.len() >= ctx {
        if !a.truncate {
            bail!("the prompt is {} tokens, the context {ctx}: shorten it, raise --ctx-size, or pass --truncate to keep its end", ids.len());
        }
        // Keep the BOS and the end of the prompt, leaving room to generate.
        let keep = ctx / 2;
        let bos = (!a.no_bos).then_some(ids[0]);
        let tail = ids.split_off(ids.len() - keep);
        ids = bos.into_iter().chain(tail).collect();
    }
    let mut gen = Generation::new(model, ctx, sampler);
    let t_prompt = Instant::now();
    let bar = common::progress_bar(a.model.quiet || a.json, ids.len() as u64, "prompt");
    gen.feed(&l.pool, &ids, |done| {
        if let Some(b) = &bar {
            b.set_position(done as u64)
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let prompt_time = t_prompt.elapsed();

    let t_gen = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut stream = TextStream::new(tok, stop_token_ids(model, tok), a.stop.clone());
    let mut text = String::new();
    let finish = gen.generate(&l.pool, &mut stream, a.max_tokens, |piece| -> Result<bool> {
        text.push_str(piece);
        if !a.json {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
        }
        Ok(true)
    })?;
    let generated = stream.ids();
    let gen_time = t_gen.elapsed();
    let (pp, tg) = (common::rate(ids.len(), prompt_time), common::rate(generated.len(), gen_time));
    if a.json {
        let j = serde_json::json!({
            "text": text,
            "ids": generated,
            "finish_reason": finish.as_str(),
            "timings": {
                "load_ms": l.load_time.as_secs_f64() * 1e3,
                "prompt_tokens": ids.len(),
                "prompt_ms": prompt_time.as_secs_f64() * 1e3,
                "prompt_tokens_per_s": pp,
                "generated_tokens": generated.len(),
                "generation_ms": gen_time.as_secs_f64() * 1e3,
                "generation_tokens_per_s": tg,
                "rss_bytes": common::memory_usage().map(|m| m.0),
                "peak_rss_bytes": common::memory_usage().map(|m| m.1),
            }
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(out)?;
        if !a.model.quiet {
            eprintln!(
                "prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | load: {:.0} ms | {} | finish: {}",
                ids.len(),
                pp,
                generated.len(),
                tg,
                l.load_time.as_secs_f64() * 1e3,
                common::memory_line(),
                finish.as_str()
            );
        }
    }
    Ok(())
}

//! `gemma perplexity`: perplexity of a text file, computed the way `llama-perplexity` does.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gemma::model::{Chunk, LogitsWanted, Scratch};
use gemma::tokenizer::EncodeOptions;

use super::common::{self, ModelArgs};

#[derive(clap::Args)]
#[command(after_help = "How it is computed (as llama.cpp's llama-perplexity): the text is tokenized
once, with BOS, and cut into non-overlapping chunks of --ctx tokens (the
remainder is dropped); each chunk's first token is replaced by BOS and the
chunk is evaluated from an empty cache; the second half of each chunk is
scored: perplexity = exp(mean negative log-likelihood of those tokens).

Examples:
  gemma perplexity -f README.md --chunks 4
  gemma perplexity -m model.gguf -f text.txt --ctx 512 --json")]
pub struct Args {
    /// The text file.
    #[arg(short, long)]
    file: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many chunks (0 = all).
    #[arg(long, default_value_t = 0)]
    chunks: usize,
    /// Print {"perplexity": X, "tokens": N, "chunks": C}.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let l = common::load(&a.model)?;
    let (model, tok) = (&l.model, &l.tokenizer);
    if a.ctx < 4 || a.ctx > model.config.context_len {
        bail!("invalid option: --ctx must be between 4 and the model's context of {}", model.config.context_len);
    }
    let ids = tok.encode(&text, EncodeOptions { add_bos: true, parse_special: false });
    let mut n_chunks = ids.len() / a.ctx;
    if a.chunks > 0 {
        n_chunks = n_chunks.min(a.chunks);
    }
    if n_chunks == 0 {
        bail!("{} has {} tokens, fewer than one chunk of --ctx {}", a.file.display(), ids.len(), a.ctx);
    }
    let bos = tok.bos_id().unwrap_or(model.config.bos_id);
    let vocab = model.config.vocab_size;
    let first = a.ctx / 2;
    let bar = common::progress_bar(a.model.quiet || a.json, n_chunks as u64, "perplexity");
    let (mut nll, mut count) = (0f64, 0usize);
    let mut scratch = Scratch::new();
    let t0 = Instant::now();
    for c in 0..n_chunks {
        let mut chunk = ids[c * a.ctx..(c + 1) * a.ctx].to_vec();
        chunk[0] = bos;
        let mut state = model.new_state(a.ctx);
        let mut chunks = [Chunk::new(&chunk, &mut state, LogitsWanted::All)];
        model.forward(&l.pool, &mut chunks, &mut scratch)?;
        let logits = scratch.logits(0, vocab);
        for j in first..a.ctx - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            nll -= log_softmax_at(row, chunk[j + 1] as usize);
            count += 1;
        }
        if let Some(b) = &bar {
            b.set_position(c as u64 + 1);
            b.set_message(format!("perplexity {:.4}", (nll / count as f64).exp()));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let ppl = (nll / count as f64).exp();
    if a.json {
        println!("{}", serde_json::json!({"perplexity": ppl, "tokens": n_chunks * a.ctx, "chunks": n_chunks, "scored": count}));
    } else {
        println!("perplexity: {ppl:.4} over {n_chunks} chunks of {} tokens ({count} scored)", a.ctx);
        if !a.model.quiet {
            eprintln!("{:.1} s, {:.1} tok/s", t0.elapsed().as_secs_f64(), common::rate(n_chunks * a.ctx, t0.elapsed()));
        }
    }
    Ok(())
}

/// log softmax(row)[i], in f64.
fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[i] as f64 - max - sum.ln()
}

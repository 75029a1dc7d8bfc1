//! `gemma chat`: an interactive conversation with the model's chat template. The KV cache is kept between
//! turns: each turn renders the whole conversation, and only the tokens after what the cache already holds
//! are fed (the history is not re-processed).
//!
//! When the rendered conversation departs from what the state has read (an answer that re-tokenizes
//! differently, a `/load`ed conversation), the state is rewound to the common prefix where it can be; where it
//! cannot, the conversation is read again from the start. A recurrent model (RecurrentGemma) never rewinds:
//! its state folds every position into fixed-size vectors (`SeqState::truncate` refuses), so such a turn
//! always re-reads, and only a turn that extends what was read is fed incrementally.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use gemma::runtime::{Generation, TextStream};
use gemma::tokenizer::Message;

use super::common::{self, ModelArgs, SamplingArgs};

#[derive(clap::Args)]
#[command(after_help = "In the chat:
  /reset        forget the conversation          /save FILE   save it as JSON
  /load FILE    load a saved conversation        /help        this list
  /exit         leave (or Ctrl-D)                Ctrl-C       stop the current answer

Examples:
  gemma chat
  gemma chat -m model.gguf --system \"Answer in one sentence.\"
  printf 'Hi!\\nWhat is 2+2?\\n' | gemma chat -q")]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// A system prompt (Gemma folds it into the first user turn).
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per answer.
    #[arg(short = 'n', long, default_value_t = 1024)]
    max_tokens: usize,
    /// Context size in tokens for the whole conversation; default: the model's, at most 8192.
    #[arg(short, long)]
    ctx_size: Option<usize>,
}

/// Set while an answer is being generated; Ctrl-C then stops the answer instead of leaving.
static GENERATING: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const HELP: &str = "/reset  /save FILE  /load FILE  /help  /exit   (Ctrl-C stops an answer, Ctrl-D leaves)";

pub fn run(a: Args) -> Result<()> {
    let sampler = a.sampling.config()?;
    let l = common::load(&a.model)?;
    let (model, tok) = (&l.model, &l.tokenizer);
    let ctx = a.ctx_size.unwrap_or(model.config.context_len.min(8192)).min(model.config.context_len);
    let template = tok.chat_template();
    let stop_ids = gemma::runtime::stop_token_ids(model, tok);
    let interactive = std::io::stdin().is_terminal();
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            INTERRUPTED.store(true, Ordering::SeqCst);
        } else {
            eprintln!();
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;

    let mut messages: Vec<Message> = Vec::new();
    if let Some(s) = &a.system {
        messages.push(Message::new("system", s.clone()));
    }
    let mut gen = Generation::new(model, ctx, sampler);
    if interactive && !a.model.quiet {
        eprintln!("gemma chat — {} — {HELP}", l.path.display());
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading standard input")?;
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if let Some(cmd) = input.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').map(|(n, r)| (n, r.trim())).unwrap_or((cmd, ""));
            match name {
                "exit" | "quit" => break,
                "help" => eprintln!("{HELP}"),
                "reset" => {
                    messages.retain(|m| m.role == "system");
                    gen.state.reset();
                    gen.history.clear();
                    eprintln!("(conversation reset)");
                }
                "save" if !arg.is_empty() => {
                    let j = serde_json::to_string_pretty(&messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect::<Vec<_>>())?;
                    std::fs::write(arg, j).with_context(|| format!("writing {arg}"))?;
                    eprintln!("(saved {} messages to {arg})", messages.len());
                }
                "load" if !arg.is_empty() => match load_messages(arg) {
                    Ok(m) => {
                        messages = m;
                        eprintln!("(loaded {} messages from {arg}; the cache is rebuilt on the next turn)", messages.len());
                    }
                    Err(e) => eprintln!("error: {e:#}"),
                },
                _ => eprintln!("unknown command /{name}; {HELP}"),
            }
            continue;
        }
        messages.push(Message::new("user", input.to_string()));
        match answer(&l, &mut gen, &template, &messages, &stop_ids, a.max_tokens) {
            Ok(reply) => messages.push(Message::new("assistant", reply)),
            Err(e) => {
                messages.pop();
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(())
}

fn load_messages(path: &str) -> Result<Vec<Message>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let v: Vec<serde_json::Value> = serde_json::from_str(&text).with_context(|| format!("{path}: expected a JSON list of {{role, content}}"))?;
    v.iter()
        .map(|m| match (m["role"].as_str(), m["content"].as_str()) {
            (Some(r), Some(c)) => Ok(Message::new(r, c)),
            _ => bail!("{path}: every message needs string fields `role` and `content`"),
        })
        .collect()
}

/// Render the conversation, feed what the cache lacks, and stream the model's answer.
fn answer(
    l: &common::Loaded,
    gen: &mut Generation,
    template: &gemma::tokenizer::ChatTemplate,
    messages: &[Message],
    stop_ids: &[u32],
    max_tokens: usize,
) -> Result<String> {
    let tok = &l.tokenizer;
    let ids = tok.encode_chat(template, messages)?;
    // Reuse the cache for the longest common prefix with what it holds; a state that cannot go back that far
    // (a recurrent one, a sliding-window ring that no longer holds it) starts over and re-reads.
    let common = gen.history.iter().zip(&ids).take_while(|(a, b)| a == b).count();
    let keep = if common == ids.len() { common - 1 } else { common };
    if keep < gen.history.len() && !gen.state.truncate(keep) {
        gen.state.reset();
        gen.history.clear();
    }
    gen.history.truncate(gen.state.pos);
    let fed_from = gen.history.len();
    if ids.len() - fed_from >= gen.remaining() {
        bail!("the conversation ({} tokens) no longer fits the context of {}: /reset to start over", ids.len(), gen.state.max_pos);
    }
    gen.feed(&l.pool, &ids[fed_from..], |_| {})?;
    let mut stream = TextStream::new(tok, stop_ids.to_vec(), Vec::new());
    let mut out = std::io::stdout().lock();
    let mut reply = String::new();
    INTERRUPTED.store(false, Ordering::SeqCst);
    GENERATING.store(true, Ordering::SeqCst);
    let result = gen.generate(&l.pool, &mut stream, max_tokens, |piece| -> Result<bool> {
        reply.push_str(piece);
        out.write_all(piece.as_bytes())?;
        out.flush()?;
        Ok(!INTERRUPTED.load(Ordering::SeqCst))
    });
    GENERATING.store(false, Ordering::SeqCst);
    result?;
    writeln!(out)?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("(stopped)");
    }
    Ok(reply)
}

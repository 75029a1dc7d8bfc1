//! `gemma chat`: an interactive conversation with the model's chat template. The KV cache is kept between
//! turns: each turn renders the whole conversation, and only the tokens after what the cache already holds
//! are fed (the history is not re-processed).
//!
//! When the rendered conversation departs from what the state has read (an answer that re-tokenizes
//! differently, a `/load`ed conversation), the state is rewound to the common prefix where it can be; where it
//! cannot, the conversation is read again from the start. A recurrent model (RecurrentGemma) never rewinds:
//! its state folds every position into fixed-size vectors (`SeqState::truncate` refuses), so such a turn
//! always re-reads, and only a turn that extends what was read is fed incrementally.
//!
//! Images (Gemma 3 with its vision tower, or a GGUF with `--mmproj`): `/image FILE` encodes a picture at once
//! and attaches it to the next message, where the chat template sees it as an image part before the text
//! (`<start_of_image>`, expanded to the image's soft tokens as `Gemma3Processor` does). Its rows are kept
//! with the conversation, so the image is encoded once; its tokens stay in the cache like any other, and a
//! rewind never stops inside an image's block.
//!
//! Gemma 4 can think before it answers (`--think`, the template's `enable_thinking`): its thoughts, written in
//! a thought channel, are kept out of the answer and the conversation; `--show-thinking` prints them (dimmed,
//! on standard error) as they come.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use gemma::model::config::Projector;
use gemma::model::EmbeddingRows;
use gemma::runtime::{Generation, TextStream};
use gemma::tokenizer::Message;

use super::common::{self, ModelArgs, SamplingArgs};

#[derive(clap::Args)]
#[command(after_help = "In the chat:
  /reset        forget the conversation          /save FILE   save it as JSON
  /load FILE    load a saved conversation        /help        this list
  /image FILE   attach a picture to your next message (Gemma 3 4B and up)
  /exit         leave (or Ctrl-D)                Ctrl-C       stop the current answer

The default model is a base model: it continues text rather than answering.
Chat with an instruction-tuned (-it) model, e.g. one in the Hugging Face cache.

Examples:
  gemma chat -m google/gemma-3-1b-it
  gemma chat -m model.gguf --system \"Answer in one sentence.\"
  printf 'Hi!\\nWhat is 2+2?\\n' | gemma chat -m google/gemma-3-1b-it -q
  printf '/image cat.jpg\\nWhat is in it?\\n' | gemma chat -m ./gemma-3-4b-it -q
  gemma chat -m gemma-3-4b-it-q4_k_m.gguf \\
    --mmproj mmproj-gemma-3-4b-it-f16.gguf
  gemma chat -m gemma-4-E2B-it-Q4_K_M.gguf --think --show-thinking")]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// A system prompt (Gemma 1-3 fold it into the first user turn; Gemma 4 has a system turn).
    #[arg(long)]
    system: Option<String>,
    /// Gemma 4: let the model think before it answers (the chat template's `enable_thinking`). Its thoughts
    /// are not part of the answer; see --show-thinking.
    #[arg(long)]
    think: bool,
    /// Print the model's thoughts (Gemma 4's thought channel) on standard error as they come, dimmed on a
    /// terminal. They are never part of the answer or of the conversation.
    #[arg(long)]
    show_thinking: bool,
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

const HELP: &str = "/reset  /save FILE  /load FILE  /image FILE  /help  /exit   (Ctrl-C stops an answer, Ctrl-D leaves)";

/// Where an image part stands in a message's text for Gemma 3's chat template.
const IMAGE_MARKER: &str = "<start_of_image>";

/// An image of the conversation: the file it came from and its rows, (tokens_per_image, d_model).
struct Attached {
    /// Index in the conversation of the message that carries it.
    message: usize,
    path: PathBuf,
    rows: Vec<f32>,
}

pub fn run(a: Args) -> Result<()> {
    let sampler = a.sampling.config()?;
    let l = common::load(&a.model)?;
    if a.model.verbose {
        eprintln!("seed: {} (--seed {} repeats this conversation)", sampler.seed, sampler.seed);
    }
    common::warn_if_base_model(&l, a.model.quiet, "in a chat");
    let (model, tok) = (&l.model, &l.tokenizer);
    let ctx = a.ctx_size.unwrap_or(model.config.context_len.min(8192)).min(model.config.context_len);
    let template = tok.chat_template().with_thinking(a.think);
    if a.think && tok.thought_channel().is_none() && !a.model.quiet {
        eprintln!("warning: --think: this vocabulary has no thought channel (<|channel>, <channel|>): the template may ignore it");
    }
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
    // The conversation's images in order, and those waiting for the next message.
    let mut attached: Vec<Attached> = Vec::new();
    let mut pending: Vec<(PathBuf, Vec<f32>)> = Vec::new();
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
                    attached.clear();
                    pending.clear();
                    gen.state.reset();
                    gen.history.clear();
                    eprintln!("(conversation reset)");
                }
                "save" if !arg.is_empty() => {
                    let list: Vec<serde_json::Value> = messages
                        .iter()
                        .enumerate()
                        .map(|(i, m)| {
                            let images: Vec<String> = attached.iter().filter(|im| im.message == i).map(|im| im.path.display().to_string()).collect();
                            match images.is_empty() {
                                true => serde_json::json!({"role": m.role, "content": m.content}),
                                false => serde_json::json!({"role": m.role, "content": m.content, "images": images}),
                            }
                        })
                        .collect();
                    std::fs::write(arg, serde_json::to_string_pretty(&list)?).with_context(|| format!("writing {arg}"))?;
                    eprintln!("(saved {} messages to {arg})", messages.len());
                }
                "load" if !arg.is_empty() => match load_messages(arg).and_then(|(m, paths)| {
                    let images = paths.into_iter().map(|(message, path)| Ok(Attached { message, rows: encode_image(&l, &path)?, path })).collect::<Result<Vec<_>>>()?;
                    Ok((m, images))
                }) {
                    Ok((m, images)) => {
                        messages = m;
                        attached = images;
                        pending.clear();
                        eprintln!("(loaded {} messages from {arg}; the cache is rebuilt on the next turn)", messages.len());
                    }
                    Err(e) => eprintln!("error: {e:#}"),
                },
                "image" if !arg.is_empty() => {
                    let t = std::time::Instant::now();
                    match encode_image(&l, Path::new(arg)) {
                        Ok(rows) => {
                            pending.push((PathBuf::from(arg), rows));
                            eprintln!("(image {arg} encoded in {:.1} s; it goes with your next message)", t.elapsed().as_secs_f64());
                        }
                        Err(e) => eprintln!("error: {e:#}"),
                    }
                }
                _ => eprintln!("unknown command /{name}; {HELP}"),
            }
            continue;
        }
        // The pending images stand before the text, as a user's image parts usually do.
        let n_images = pending.len();
        messages.push(Message::new("user", format!("{}{input}", IMAGE_MARKER.repeat(n_images))));
        attached.extend(pending.drain(..).map(|(path, rows)| Attached { message: messages.len() - 1, path, rows }));
        match answer(&l, &mut gen, &template, &messages, &attached, &stop_ids, a.max_tokens, a.show_thinking) {
            Ok(reply) => messages.push(Message::new("assistant", reply)),
            Err(e) => {
                // The message and its images go back to where they were: the images wait for the next one.
                messages.pop();
                let from = attached.len() - n_images;
                pending.extend(attached.drain(from..).map(|im| (im.path, im.rows)));
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(())
}

/// A conversation saved by `/save`: its messages, and each image's message index and path.
fn load_messages(path: &str) -> Result<(Vec<Message>, Vec<(usize, PathBuf)>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let v: Vec<serde_json::Value> = serde_json::from_str(&text).with_context(|| format!("{path}: expected a JSON list of {{role, content}}"))?;
    let mut images = Vec::new();
    let messages = v
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (Some(r), Some(c)) = (m["role"].as_str(), m["content"].as_str()) else {
                bail!("{path}: every message needs string fields `role` and `content`");
            };
            for p in m["images"].as_array().into_iter().flatten() {
                images.push((i, PathBuf::from(p.as_str().with_context(|| format!("{path}: message {i}: `images` holds file names"))?)));
            }
            Ok(Message::new(r, c))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((messages, images))
}

/// Load, preprocess and encode an image for the chat (Gemma 3's vision tower).
fn encode_image(l: &common::Loaded, path: &Path) -> Result<Vec<f32>> {
    let v = match &l.model.config.vision {
        None => bail!(
            "/image: {} has no image encoder (a text-only model; a Gemma 3 .gguf takes its vision tower from --mmproj FILE)",
            l.path.display()
        ),
        Some(v) if v.projector == Projector::PaliGemma => {
            bail!("/image: PaliGemma has no chat template (it answers one task prompt about one image): use `gemma run --image FILE \"caption en\"`")
        }
        Some(v) => v,
    };
    let img = gemma::runtime::image::load_image(path)?;
    let pixels = gemma::runtime::multimodal::model_pixels(&img, v);
    l.model.embed_image(&l.pool, &pixels).with_context(|| format!("encoding {}", path.display()))
}

/// Render the conversation, feed what the cache lacks, and stream the model's answer (its thoughts to standard
/// error with `show_thinking`); returns the answer.
#[allow(clippy::too_many_arguments)]
fn answer(
    l: &common::Loaded,
    gen: &mut Generation,
    template: &gemma::tokenizer::ChatTemplate,
    messages: &[Message],
    images: &[Attached],
    stop_ids: &[u32],
    max_tokens: usize,
    show_thinking: bool,
) -> Result<String> {
    let tok = &l.tokenizer;
    let (ids, spans) = match (&l.model.config.vision, images.is_empty()) {
        (_, true) => (tok.encode_chat(template, messages)?, Vec::new()),
        (None, false) => bail!("this model has no image encoder"),
        (Some(v), false) => {
            let p = gemma::runtime::multimodal::gemma3_prompt(tok, v, &template.render(messages, true)?)?;
            if p.image_at.len() != images.len() {
                bail!("the conversation holds {} {IMAGE_MARKER} for {} image(s): {IMAGE_MARKER} stands for an image; attach images with /image FILE", p.image_at.len(), images.len());
            }
            (p.ids, p.bidirectional)
        }
    };
    // Reuse the cache for the longest common prefix with what it holds; a state that cannot go back that far
    // (a recurrent one, a sliding-window ring that no longer holds it) starts over and re-reads. An image's
    // block is read whole: a rewind into one goes back to its start.
    let common = gen.history.iter().zip(&ids).take_while(|(a, b)| a == b).count();
    let mut keep = if common == ids.len() { common - 1 } else { common };
    if let Some(s) = spans.iter().find(|s| s.start < keep && keep < s.end) {
        keep = s.start;
    }
    if keep < gen.history.len() && !gen.state.truncate(keep) {
        gen.state.reset();
        gen.history.clear();
    }
    gen.history.truncate(gen.state.pos);
    let fed_from = gen.history.len();
    if ids.len() - fed_from >= gen.remaining() {
        bail!("the conversation ({} tokens) no longer fits the context of {}: /reset to start over", ids.len(), gen.state.max_pos);
    }
    // The images not in the cache yet, relative to what is fed.
    let new: Vec<(&Range<usize>, &Attached)> = spans.iter().zip(images).filter(|(s, _)| s.start >= fed_from).collect();
    if new.is_empty() {
        gen.feed(&l.pool, &ids[fed_from..], |_| {})?;
    } else {
        let rows: Vec<EmbeddingRows> = new.iter().map(|(s, im)| EmbeddingRows { at: s.start - fed_from, data: &im.rows }).collect();
        let spans: Vec<Range<usize>> = new.iter().map(|(s, _)| s.start - fed_from..s.end - fed_from).collect();
        gen.feed_multimodal(&l.pool, &ids[fed_from..], &rows, &spans)?;
    }
    let mut stream = TextStream::new(tok, stop_ids.to_vec(), Vec::new()).split_thoughts(tok.thought_channel());
    let mut out = std::io::stdout().lock();
    let mut reply = String::new();
    let mut thoughts = Thoughts::new(show_thinking);
    INTERRUPTED.store(false, Ordering::SeqCst);
    GENERATING.store(true, Ordering::SeqCst);
    let result = gen.generate_parts(&l.pool, &mut stream, max_tokens, |piece, thought| -> Result<bool> {
        thoughts.write(thought)?;
        if !piece.is_empty() {
            thoughts.end()?;
        }
        reply.push_str(piece);
        out.write_all(piece.as_bytes())?;
        out.flush()?;
        Ok(!INTERRUPTED.load(Ordering::SeqCst))
    });
    GENERATING.store(false, Ordering::SeqCst);
    thoughts.end()?;
    result?;
    writeln!(out)?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("(stopped)");
    }
    Ok(reply)
}

/// The model's thoughts on standard error (with --show-thinking): dimmed on a terminal, ended by a newline
/// before the answer starts.
struct Thoughts {
    show: bool,
    dim: bool,
    open: bool,
}

impl Thoughts {
    fn new(show: bool) -> Self {
        Thoughts { show, dim: std::io::stderr().is_terminal(), open: false }
    }

    fn write(&mut self, text: &str) -> Result<()> {
        if !self.show || text.is_empty() {
            return Ok(());
        }
        let mut err = std::io::stderr().lock();
        if !self.open && self.dim {
            err.write_all(b"\x1b[2m")?;
        }
        self.open = true;
        err.write_all(text.as_bytes())?;
        err.flush()?;
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        if self.open {
            let mut err = std::io::stderr().lock();
            err.write_all(if self.dim { b"\x1b[0m\n" } else { b"\n" })?;
            err.flush()?;
            self.open = false;
        }
        Ok(())
    }
}

//! `gemma run`: complete a prompt, streaming the text as it is generated.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use gemma::model::config::Projector;
use gemma::runtime::{stop_token_ids, Generation, TextStream};
use gemma::tokenizer::EncodeOptions;

use super::common::{self, ModelArgs, SamplingArgs};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  gemma run \"The capital of France is\"      default model, fetched on first use
  gemma run -n 32 --temperature 0 \"The capital of France is\"
  gemma run -m model.gguf -n 64 --temperature 0 \"def fibonacci(n):\"
  gemma run -f prompt.txt --seed 7 --stop \"\\n\\n\"
  echo \"Once upon a time\" | gemma run - --json
  gemma run -m ./paligemma-3b-pt-224 --image photo.jpg \"caption en\"
  gemma run -m ./paligemma-3b-pt-224 --image photo.jpg \"detect cat ; dog\" \\
    --json --annotate boxes.png

Each run draws a fresh seed (-v prints it, --json includes it); --seed repeats a
run.

With --image (PaliGemma), the prompt is a task as the model was trained on:
`caption en`, `answer en what is in the picture?`, `ocr`, `detect cat ; dog`,
`segment cat`; it is laid out as the processor does (the image's tokens,
<bos>, the prompt, a newline). Detections come back as <locNNNN> tokens, which
--json turns into {\"label\", \"box\": [x0, y0, x1, y1]} in pixels of the
original image and --annotate draws. Segmentation codes (<segNNN>) are printed,
not decoded (their VQ-VAE is not part of the checkpoint). With a Gemma 3 4B+
checkpoint the prompt is a user turn instead (\"Describe this image.\"),
rendered by the chat template with the image before the text, as transformers'
Gemma3Processor does. A Gemma 3 .gguf takes its vision tower from llama.cpp's
mmproj file:
  gemma run -m gemma-3-4b-it.gguf --mmproj mmproj.gguf --image photo.jpg \\
    \"Describe this image.\"")]
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
    /// Print one JSON object (text, ids, finish_reason, seed, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// An image for a vision-language model: PaliGemma (the prompt is then a task such as `caption en`) or
    /// Gemma 3 4B+ (the prompt is a user turn, put through the chat template after the image).
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// With --image: write the image with the detected boxes and labels drawn on it (PNG).
    #[arg(long, value_name = "OUT.png", requires = "image")]
    annotate: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let prompt = common::read_prompt(a.prompt.as_deref(), a.file.as_deref())?;
    let sampler = a.sampling.config()?;
    let l = common::load(&a.model)?;
    if a.model.verbose {
        eprintln!("seed: {} (--seed {} repeats this run)", sampler.seed, sampler.seed);
    }
    let (model, tok) = (&l.model, &l.tokenizer);
    let ctx = a.ctx_size.unwrap_or(model.config.context_len.min(8192));
    if ctx < 2 || ctx > model.config.context_len {
        bail!("invalid option: --ctx-size must be between 2 and the model's context of {}", model.config.context_len);
    }
    if let Some(path) = &a.image {
        return run_with_image(&a, &l, &prompt, path, ctx, sampler);
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
    let seed = sampler.seed;
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
    let (text, generated, finish) = stream_answer(&a, &l, &mut gen, &mut out)?;
    let gen_time = t_gen.elapsed();
    let (pp, tg) = (common::rate(ids.len(), prompt_time), common::rate(generated.len(), gen_time));
    if a.json {
        let j = serde_json::json!({
            "text": text,
            "ids": generated,
            "finish_reason": finish.as_str(),
            "seed": seed,
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

/// `gemma run --image`: the prompt laid out as PaliGemma's processor does, fed in one pass with the image's
/// rows, then generation as usual; detections parsed from the answer.
fn run_with_image(a: &Args, l: &common::Loaded, prompt: &str, path: &std::path::Path, ctx: usize, sampler: gemma::runtime::SamplerConfig) -> Result<()> {
    let (model, tok) = (&l.model, &l.tokenizer);
    let Some(v) = &model.config.vision else {
        bail!("--image: {} has no image encoder (it is a text-only model; a Gemma 3 .gguf takes its vision tower from --mmproj FILE)", l.path.display());
    };
    let t_image = Instant::now();
    let mut images = super::vision::ImageInputs::default();
    images.push(model, &l.pool, &path.to_path_buf())?;
    let image_time = t_image.elapsed();
    let p = match v.projector {
        Projector::PaliGemma => gemma::runtime::multimodal::paligemma_prompt(tok, v, 1, prompt.trim_end(), None)?,
        // Gemma 3: one user turn through the chat template, the image part first (as `<start_of_image>`),
        // then the processor's expansion of it.
        Projector::Gemma3 => {
            let turn = gemma::tokenizer::Message::new("user", format!("<start_of_image>{}", prompt.trim_end()));
            let rendered = tok.chat_template().render(&[turn], true)?;
            gemma::runtime::multimodal::gemma3_prompt(tok, v, &rendered)?
        }
    };
    if p.ids.len() >= ctx {
        bail!("the prompt with its image is {} tokens, the context {ctx}: shorten it or raise --ctx-size", p.ids.len());
    }
    images.at = p.image_at.clone();
    let seed = sampler.seed;
    let mut gen = Generation::new(model, ctx, sampler);
    let t_prompt = Instant::now();
    gen.feed_multimodal(&l.pool, &p.ids, &images.rows(), &p.bidirectional)?;
    let prompt_time = t_prompt.elapsed();

    let t_gen = Instant::now();
    let mut out = std::io::stdout().lock();
    let (text, generated, finish) = stream_answer(a, l, &mut gen, &mut out)?;
    let gen_time = t_gen.elapsed();
    let img = &images.images[0];
    let detections = gemma::runtime::detect::parse_detections(&text, img.width(), img.height());
    if let Some(out_path) = &a.annotate {
        gemma::runtime::annotate::save_png(&gemma::runtime::annotate::draw_detections(img, &detections), out_path)?;
    }
    let (pp, tg) = (common::rate(p.ids.len(), prompt_time), common::rate(generated.len(), gen_time));
    if a.json {
        let j = serde_json::json!({
            "text": text,
            "ids": generated,
            "finish_reason": finish.as_str(),
            "detections": detections,
            "seed": seed,
            "image": {"path": path.display().to_string(), "width": img.width(), "height": img.height()},
            "timings": {
                "load_ms": l.load_time.as_secs_f64() * 1e3,
                "image_ms": image_time.as_secs_f64() * 1e3,
                "prompt_tokens": p.ids.len(),
                "prompt_ms": prompt_time.as_secs_f64() * 1e3,
                "prompt_tokens_per_s": pp,
                "generated_tokens": generated.len(),
                "generation_ms": gen_time.as_secs_f64() * 1e3,
                "generation_tokens_per_s": tg,
                "peak_rss_bytes": common::memory_usage().map(|m| m.1),
            }
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(out)?;
        for d in &detections {
            let [x0, y0, x1, y1] = d.bbox;
            writeln!(out, "  {}: ({x0:.0}, {y0:.0}) – ({x1:.0}, {y1:.0})", if d.label.is_empty() { "?" } else { &d.label })?;
        }
        if !a.model.quiet {
            eprintln!(
                "image: {}×{} encoded in {:.0} ms | prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | {} | finish: {}",
                img.width(),
                img.height(),
                image_time.as_secs_f64() * 1e3,
                p.ids.len(),
                pp,
                generated.len(),
                tg,
                common::memory_line(),
                finish.as_str()
            );
            if let Some(o) = &a.annotate {
                eprintln!("wrote {} ({} box(es))", o.display(), detections.len());
            }
        }
    }
    Ok(())
}

/// Generate after the prompt, streaming the text to `out` unless `--json`; the text, ids and finish reason.
fn stream_answer(a: &Args, l: &common::Loaded, gen: &mut Generation, out: &mut impl Write) -> Result<(String, Vec<u32>, gemma::runtime::FinishReason)> {
    let (model, tok) = (&l.model, &l.tokenizer);
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
    Ok((text, stream.ids().to_vec(), finish))
}

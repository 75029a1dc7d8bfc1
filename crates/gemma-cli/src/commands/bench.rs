//! `gemma bench`: prompt processing and generation speed, in the spirit of `llama-bench`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use gemma::kernels::ThreadPool;
use gemma::model::{Chunk, LogitsWanted, Model, Scratch, SeqState};

use super::common;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  gemma bench                     default model: pp512, tg128, all cores, 3 reps
  gemma bench -m model.gguf -p 64,512 -n 128 -t 1,2 -r 5 --json
  gemma bench -p 0 -n 128 -t 1,2 --bandwidth    decode against memory bandwidth
  gemma bench -p 0 -n 64 -d 128,4096            decode after 128 and 4096 positions

pp N: an N-token prompt processed in one pass (tokens/s).
imageS: (vision models) one S×S image through the encoder and projector
  (images/s; the text's ms per image).
tg N: N tokens generated one at a time after a 1-token prompt (tokens/s);
  sampling is skipped, so the measured loop is the forward pass, as llama-bench
  measures it.
@ dD: the same test after D positions of context (prefilled once, untimed, in
  512-token chunks; each repetition starts from a copy of that state), as
  llama-bench's -d. A Gemma KV cache grows with D and attention reads all of
  it; RecurrentGemma's state does not grow past its attention window.
Decoding reads every weight once per token, so tg also prints the weight bytes
streamed per second; with --bandwidth that is set against the measured read
bandwidth (ceiling = bandwidth / bytes per token). Side by side with
llama.cpp: scripts/bench-vs-llamacpp.sh.")]
pub struct Args {
    /// A .gguf file or checkpoint folder (default: the default model, fetched if missing).
    #[arg(short, long)]
    model: Option<std::path::PathBuf>,
    /// Prompt lengths to test (comma-separated; 0 to skip).
    #[arg(short = 'p', long, value_delimiter = ',', default_value = "512")]
    prompt: Vec<usize>,
    /// Generation lengths to test (comma-separated; 0 to skip).
    #[arg(short = 'n', long, value_delimiter = ',', default_value = "128")]
    gen: Vec<usize>,
    /// Thread counts to test (comma-separated).
    #[arg(short, long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Context depths to test at (comma-separated positions already in the sequence before each test).
    #[arg(short = 'd', long, value_delimiter = ',', default_value = "0")]
    depth: Vec<usize>,
    /// Repetitions of each test.
    #[arg(short, long, default_value_t = 3)]
    reps: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also measure memory read bandwidth at each thread count (streams a 1 GiB buffer, which adds 1 GiB to
    /// peak memory), and report decode as a fraction of that ceiling.
    #[arg(long)]
    bandwidth: bool,
}

struct Row {
    test: String,
    /// What `mean` counts per second: "tokens", or "images" for the image encoder.
    unit: &'static str,
    threads: usize,
    mean: f64,
    stddev: f64,
    /// For tg: weight bytes streamed per second; and the measured read bandwidth at this thread count.
    gbps: Option<f64>,
    bandwidth: Option<f64>,
}

pub fn run(a: Args) -> Result<()> {
    if a.reps == 0 {
        bail!("invalid option: --reps must be at least 1");
    }
    let path = common::resolve_model(&a.model, a.json)?;
    let t0 = Instant::now();
    let model = gemma::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let threads = if a.threads.is_empty() { vec![super::default_threads()] } else { a.threads.clone() };
    let kernel = gemma::kernels::dot::Kernels::get().name;
    let per_token = model.weights.bytes_per_token();
    let mut rows = Vec::new();
    // Per image row, in order: the share of the encode time spent in attention between patches.
    let mut attention_share = Vec::new();
    for &t in &threads {
        if t == 0 {
            bail!("invalid option: --threads must be at least 1");
        }
        let pool = ThreadPool::new(t);
        let bandwidth = a.bandwidth.then(|| gemma::kernels::bandwidth::read_bandwidth(&pool, 1 << 30, 5) / 1e9);
        if let Some(v) = &model.config.vision {
            let size = v.encoder.image_size;
            let pixels: Vec<f32> = (0..3 * size * size).map(|i| ((i * 2654435761) % 255) as f32 / 127.5 - 1.0).collect();
            let mut shares = Vec::new();
            let r = measure(a.reps, || {
                let (_, times) = model.embed_image_timed(&pool, &pixels)?;
                shares.push(times.attention.as_secs_f64() / times.total.as_secs_f64());
                Ok(1.0 / times.total.as_secs_f64())
            })?;
            attention_share.push(shares.iter().sum::<f64>() / shares.len() as f64);
            rows.push(Row { test: format!("image{size}"), unit: "images", threads: t, mean: r.0, stddev: r.1, gbps: None, bandwidth: None });
        }
        for &d in &a.depth {
            let longest = a.prompt.iter().chain(&a.gen).max().copied().unwrap_or(0);
            let context = prefill(&model, &pool, d, d + longest + 1)?;
            let name = |test: String| if d == 0 { test } else { format!("{test} @ d{d}") };
            for &p in a.prompt.iter().filter(|&&p| p > 0) {
                let r = measure(a.reps, || pp(&model, &pool, &context, p))?;
                rows.push(Row { test: name(format!("pp{p}")), unit: "tokens", threads: t, mean: r.0, stddev: r.1, gbps: None, bandwidth: None });
            }
            for &n in a.gen.iter().filter(|&&n| n > 0) {
                let r = measure(a.reps, || tg(&model, &pool, &context, n))?;
                rows.push(Row { test: name(format!("tg{n}")), unit: "tokens", threads: t, mean: r.0, stddev: r.1, gbps: Some(r.0 * per_token as f64 / 1e9), bandwidth });
            }
        }
    }
    let weights_bytes: usize = model.weights.matrices().map(|m| m.n_bytes()).sum();
    if a.json {
        let mut shares = attention_share.iter();
        let results: Vec<_> = rows
            .iter()
            .map(|r| {
                let key = if r.unit == "images" { "images_per_s" } else { "tokens_per_s" };
                let mut v = serde_json::json!({"test": r.test, "threads": r.threads, key: r.mean, "stddev": r.stddev});
                if r.unit == "images" {
                    v["attention_share"] = shares.next().copied().into();
                }
                if let Some(g) = r.gbps {
                    v["weights_gb_per_s"] = g.into();
                }
                if let Some(b) = r.bandwidth {
                    v["read_bandwidth_gb_per_s"] = b.into();
                    v["fraction_of_ceiling"] = (r.gbps.unwrap_or(0.0) / b).into();
                }
                v
            })
            .collect();
        println!("{}", serde_json::json!({"results": results, "kernel": kernel, "model": path.display().to_string(), "weights_bytes": weights_bytes, "weights_bytes_per_token": per_token, "load_ms": load_ms, "peak_rss_bytes": super::common::memory_usage().map(|m| m.1)}));
    } else {
        println!("model: {}  ({:.1} MB of weights, {:.1} MB read per decoded token, loaded in {load_ms:.0} ms)  kernels: {kernel}", path.display(), weights_bytes as f64 / 1e6, per_token as f64 / 1e6);
        println!("{:<14} {:>8} {:>14} {:>10}  {}", "test", "threads", "tokens/s", "± stddev", "weights streamed");
        let mut shares = attention_share.iter();
        for r in rows {
            let extra = match (r.gbps, r.bandwidth) {
                (Some(g), Some(b)) => format!("{g:.1} GB/s = {:.0}% of the {b:.1} GB/s read bandwidth (ceiling {:.1} tok/s)", 100.0 * g / b, b * 1e9 / per_token as f64),
                (Some(g), None) => format!("{g:.1} GB/s"),
                _ if r.unit == "images" => format!(
                    "images/s: one image ({} tokens) in {:.0} ms, {:.0}% of it in attention between patches",
                    model.config.vision.as_ref().map_or(0, |v| v.tokens_per_image),
                    1e3 / r.mean,
                    100.0 * shares.next().copied().unwrap_or(0.0)
                ),
                _ => String::new(),
            };
            println!("{:<14} {:>8} {:>14.2} {:>10.2}  {extra}", r.test, r.threads, r.mean, r.stddev);
        }
        println!("{}", super::common::memory_line());
    }
    Ok(())
}

/// Mean and standard deviation of the rate `f` returns over `reps` runs, after one warm-up run (it pages the
/// weights in and grows the buffers) unless that took over ten seconds, as an image through a large encoder
/// on few threads does: such a run counts as the first repetition.
fn measure(reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<(f64, f64)> {
    let t = Instant::now();
    let first = f()?;
    let mut v: Vec<f64> = if t.elapsed().as_secs_f64() > 10.0 { vec![first] } else { Vec::new() };
    while v.len() < reps.max(1) {
        v.push(f()?);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    Ok((mean, var.sqrt()))
}

/// Deterministic pseudo-random token ids (not BOS/EOS/PAD).
fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| 3 + ((i as u64 * 2654435761) % (vocab as u64 - 3)) as u32).collect()
}

/// A sequence state holding `depth` positions of context (pseudo-random tokens, in 512-token chunks), with
/// room for `max_pos` positions in all. The tests below time copies of it.
fn prefill(model: &Model, pool: &ThreadPool, depth: usize, max_pos: usize) -> Result<SeqState> {
    let ids = tokens(depth, model.config.vocab_size);
    let mut state = model.new_state(max_pos);
    if state.max_pos < max_pos {
        bail!("--depth {depth} plus the longest test needs {max_pos} positions; this model's context is {}", state.max_pos);
    }
    let mut scratch = Scratch::new();
    for piece in ids.chunks(512) {
        let mut chunks = [Chunk::new(piece, &mut state, LogitsWanted::None)];
        model.forward(pool, &mut chunks, &mut scratch)?;
    }
    Ok(state)
}

fn pp(model: &Model, pool: &ThreadPool, context: &SeqState, n: usize) -> Result<f64> {
    let ids = tokens(n, model.config.vocab_size);
    let mut state = context.clone();
    let mut scratch = Scratch::new();
    let t = Instant::now();
    let mut chunks = [Chunk::new(&ids, &mut state, LogitsWanted::Last)];
    model.forward(pool, &mut chunks, &mut scratch)?;
    Ok(common::rate(n, t.elapsed()))
}

fn tg(model: &Model, pool: &ThreadPool, context: &SeqState, n: usize) -> Result<f64> {
    let ids = tokens(n + 1, model.config.vocab_size);
    let mut state = context.clone();
    let mut scratch = Scratch::new();
    let mut chunks = [Chunk::new(&ids[..1], &mut state, LogitsWanted::Last)];
    model.forward(pool, &mut chunks, &mut scratch)?;
    let t = Instant::now();
    for i in 1..=n {
        let mut chunks = [Chunk::new(&ids[i..i + 1], &mut state, LogitsWanted::Last)];
        model.forward(pool, &mut chunks, &mut scratch)?;
    }
    Ok(common::rate(n, t.elapsed()))
}

//! `gemma logits`: the logits of every position for given ids, as JSON on stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gemma::kernels::ThreadPool;
use gemma::model::{Chunk, LogitsWanted, Scratch};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  gemma logits --ids 2,818,5279,529,7001,563 --top 2       default model
  gemma logits -m ./gemma-2b --ids 2,651,6037
  gemma logits -m model.gguf --ids 2,818,5279 --decode --top 5
  gemma logits -m ./paligemma-3b-pt-224 --image cat.jpg \\
    --ids 257152,...,257152,2,6737,...,108
  gemma logits -m gemma-3-4b-it.gguf --mmproj mmproj.gguf --image cat.jpg \\
    --ids 2,105,...

With --image, the ids carry the image placeholders exactly as the model's
processor lays them out (PaliGemma: tokens_per_image `<image>` ids per image,
then <bos>, the prompt and a newline; Gemma 3: a block of `<image_soft_token>`
ids per image). Each image goes through the model's preprocessing (resized to
its size unless it already is) and the encoder, and its rows replace one block
of placeholders, in order. PaliGemma's prefix (the first --prefix-len ids,
default all) attends bidirectionally; Gemma 3's image blocks do. With --decode
the bidirectional part goes in one pass, the rest one id at a time.")]
pub struct Args {
    /// A .gguf file, a checkpoint folder (config.json + *.safetensors), or org/name of a model in the
    /// Hugging Face cache. Default: the default model (as `gemma run`).
    #[arg(short, long, value_name = "PATH|ORG/NAME")]
    model: Option<PathBuf>,
    /// llama.cpp's mmproj .gguf (vision tower and projector) for a Gemma 3 text .gguf given as --model.
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,
    /// Comma-separated token ids (include BOS = 2 yourself).
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
    /// Feed the ids one at a time through the KV cache instead of one prefill.
    #[arg(long)]
    decode: bool,
    /// Print only the K best (id, logit) pairs per position instead of whole rows.
    #[arg(long, value_name = "K")]
    top: Option<usize>,
    /// An image for the model's placeholders (repeat for several images, in order).
    #[arg(long, value_name = "FILE")]
    image: Vec<PathBuf>,
    /// PaliGemma: how many leading ids form the bidirectional prefix (default: all of them).
    #[arg(long, value_name = "N")]
    prefix_len: Option<usize>,
    /// Threads for the matrix kernels (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    let path = super::common::resolve_model(&a.model, false)?;
    let model = match &a.mmproj {
        Some(mm) => gemma::load_with_mmproj(&path, mm).with_context(|| format!("loading {} with the vision tower of {}", path.display(), mm.display()))?,
        None => gemma::load(&path).with_context(|| format!("loading {}", path.display()))?,
    };
    if a.ids.is_empty() {
        bail!("--ids is empty");
    }
    let pool = ThreadPool::new(a.threads.unwrap_or_else(super::default_threads));
    let vocab = model.config.vocab_size;
    let mut state = model.new_state(a.ids.len());
    let mut scratch = Scratch::new();
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(a.ids.len());
    let images = super::vision::ImageInputs::for_ids(&model, &pool, &a.image, &a.ids, a.prefix_len)?;
    if !images.is_empty() {
        // The bidirectional part in one pass (a span must not be split), the rest as asked.
        let first = if a.decode { images.bidirectional_end() } else { a.ids.len() };
        let mut chunk = Chunk::new(&a.ids[..first], &mut state, LogitsWanted::All);
        let embedding_rows = images.rows();
        chunk.rows = &embedding_rows;
        chunk.bidirectional = &images.bidirectional;
        model.forward(&pool, &mut [chunk], &mut scratch)?;
        rows.extend(scratch.logits(0, vocab).chunks_exact(vocab).map(<[f32]>::to_vec));
        for id in &a.ids[first..] {
            let mut chunks = [Chunk::new(std::slice::from_ref(id), &mut state, LogitsWanted::Last)];
            model.forward(&pool, &mut chunks, &mut scratch)?;
            rows.push(scratch.logits(0, vocab).to_vec());
        }
    } else if a.decode {
        for id in &a.ids {
            let mut chunks = [Chunk::new(std::slice::from_ref(id), &mut state, LogitsWanted::Last)];
            model.forward(&pool, &mut chunks, &mut scratch)?;
            rows.push(scratch.logits(0, vocab).to_vec());
        }
    } else {
        let mut chunks = [Chunk::new(&a.ids, &mut state, LogitsWanted::All)];
        model.forward(&pool, &mut chunks, &mut scratch)?;
        rows.extend(scratch.logits(0, vocab).chunks_exact(vocab).map(<[f32]>::to_vec));
    }
    let out = std::io::stdout().lock();
    let mut out = std::io::BufWriter::new(out);
    let ids = serde_json::to_string(&a.ids)?;
    match a.top {
        Some(k) => {
            let top: Vec<Vec<(u32, f32)>> = rows.iter().map(|r| top_k(r, k)).collect();
            writeln!(out, "{{\"ids\": {ids}, \"top\": {}}}", serde_json::to_string(&top)?)?;
        }
        None => {
            write!(out, "{{\"ids\": {ids}, \"logits\": [")?;
            for (i, r) in rows.iter().enumerate() {
                if i > 0 {
                    write!(out, ", ")?;
                }
                write!(out, "{}", serde_json::to_string(r)?)?;
            }
            writeln!(out, "]}}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The `k` largest (id, logit) pairs, best first (ties: lower id first).
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

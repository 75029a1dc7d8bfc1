//! Encode throughput on the tokenizer parity corpus, in MB/s, single-threaded; plus load time.
//!
//! `cargo run --release -p gemma --example tokenize_bench -- [model.gguf | tokenizer.json | tokenizer.model]`
//! (default: `$GEMMA_MODEL`). Compare with `tools/fixtures/make_tokenizer_fixtures.py bench`, which
//! measures Hugging Face `tokenizers` on the same corpus the same way.


use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gemma::tokenizer::{EncodeOptions, Tokenizer};

/// Runs `f` repeatedly for at least `budget`; returns the best MB/s over the runs for `bytes` per run.
fn throughput(bytes: usize, budget: Duration, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut tokens = 0;
    while start.elapsed() < budget {
        let t = Instant::now();
        tokens = f();
        best = best.min(t.elapsed());
    }
    (bytes as f64 / 1e6 / best.as_secs_f64(), tokens)
}

fn load(path: &Path) -> Result<Tokenizer, String> {
    let name = path.to_string_lossy();
    if name.ends_with(".gguf") {
        let meta = gemma::formats::gguf::load(path).map_err(|e| e.to_string())?.metadata;
        let t = Instant::now();
        let vocab = gemma::tokenizer::gguf::vocab_from_gguf(&meta).map_err(|e| e.to_string())?;
        let read = t.elapsed();
        let tok = Tokenizer::from_vocab(vocab).map_err(|e| e.to_string())?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "built from GGUF metadata in {:.1} ms ({:.1} ms reading the vocabulary, {:.1} ms indexing it; metadata already parsed)",
            ms(t.elapsed()),
            ms(read),
            ms(t.elapsed() - read)
        );
        Ok(tok)
    } else if name.ends_with(".json") {
        Tokenizer::from_tokenizer_json(path).map_err(|e| e.to_string())
    } else {
        Tokenizer::from_sentencepiece_model(path).map_err(|e| e.to_string())
    }
}

fn main() -> Result<(), String> {
    let path = std::env::args().nth(1).map(PathBuf::from).or_else(|| std::env::var_os("GEMMA_MODEL").map(PathBuf::from));
    let Some(path) = path else { return Err("give a tokenizer file or set GEMMA_MODEL".into()) };
    let tok = load(&path)?;
    let corpus_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer/corpus.txt");
    let corpus = std::fs::read_to_string(&corpus_path).map_err(|e| format!("{}: {e}", corpus_path.display()))?;
    let lines: Vec<&str> = corpus.lines().collect();
    let budget = Duration::from_secs(2);
    for parse_special in [true, false] {
        let opts = EncodeOptions { add_bos: true, parse_special };
        let (mbs, n) = throughput(corpus.len(), budget, || lines.iter().map(|l| tok.encode(l, opts).len()).sum());
        println!("line by line, special {}: {mbs:.2} MB/s ({n} tokens per pass)", if parse_special { "on " } else { "off" });
    }
    // One long text: the corpus 50 times over (~1 MB), a single encode call.
    let big = corpus.repeat(50);
    let opts = EncodeOptions::default();
    let (mbs, n) = throughput(big.len(), budget, || tok.encode(&big, opts).len());
    println!("one {:.2} MB text: {mbs:.2} MB/s ({n} tokens)", big.len() as f64 / 1e6);
    Ok(())
}

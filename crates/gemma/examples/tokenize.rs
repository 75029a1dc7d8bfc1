//! Encodes texts with a Gemma tokenizer: one JSON string per input line on stdin, one JSON array of ids
//! per output line on stdout (BOS added). Used to compare against reference tokenizers in bulk.
//!
//! `cargo run --release --example tokenize -- <model.gguf | tokenizer.json | tokenizer.model | dir> [--no-special]`


use std::io::{BufRead, Write};
use std::path::Path;

use gemma::tokenizer::{EncodeOptions, Tokenizer};

/// Loads a tokenizer from whichever kind of file `path` is.
pub fn load(path: &Path) -> Result<Tokenizer, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let r = if path.is_dir() {
        Tokenizer::from_dir(path)
    } else if name.ends_with(".gguf") {
        Tokenizer::from_gguf_metadata(&gemma::formats::gguf::load(path).map_err(|e| e.to_string())?.metadata)
    } else if name.ends_with(".json") {
        Tokenizer::from_tokenizer_json(path)
    } else {
        Tokenizer::from_sentencepiece_model(path)
    };
    r.map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        return Err("usage: tokenize <model.gguf | tokenizer.json | tokenizer.model | dir> [--no-special]".into());
    };
    let tok = load(Path::new(path))?;
    let opts = EncodeOptions { add_bos: true, parse_special: !args.iter().any(|a| a == "--no-special") };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let text: String = serde_json::from_str(&line).map_err(|e| format!("stdin: {e}"))?;
        let ids = tok.encode(&text, opts);
        writeln!(out, "{}", serde_json::to_string(&ids).unwrap()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

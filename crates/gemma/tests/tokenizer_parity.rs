//! Tokenizer parity with the references recorded by `tools/fixtures/make_tokenizer_fixtures.py`:
//! - Gemma 3's vocabulary from a GGUF file (env `GEMMA_MODEL`) and from `tokenizer.json`
//!   (env `GEMMA_TOKENIZER_JSON`) against Hugging Face `tokenizers`, special-token parsing on and off;
//! - a small Gemma-configured SentencePiece model (committed) against `sentencepiece`;
//! - chat templates against `transformers`' `apply_chat_template`.
//!
//! Every mismatch is reported with its corpus unit, and any mismatch fails the test. Sources whose file is
//! not available are skipped with a notice (see tests/fixtures/tokenizer/README.md for how to get them).


use std::path::{Path, PathBuf};
use std::time::Instant;

use gemma::tokenizer::{ChatTemplate, ControlTokens, EncodeOptions, Message, Tokenizer};
use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer")
}

fn read_jsonl(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn env_path(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.exists() => Some(p),
        Some(p) => {
            println!("NOTICE: {var}={} does not exist; skipping", p.display());
            None
        }
        None => {
            println!("NOTICE: {var} is not set; skipping the parity checks that need it");
            None
        }
    }
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(70).collect();
    format!("{s:?}")
}

/// Describes the first difference between two id lists with the pieces around it.
fn describe(tok: &Tokenizer, want: &[u32], got: &[u32]) -> String {
    let at = want.iter().zip(got).take_while(|(a, b)| a == b).count();
    let show = |v: &[u32]| -> String {
        v.iter().skip(at).take(6).map(|&i| format!("{i}:{:?}", tok.piece(i).unwrap_or("?"))).collect::<Vec<_>>().join(" ")
    };
    format!("first difference at {at} of {}/{}: expected [{}] got [{}]", want.len(), got.len(), show(want), show(got))
}

/// Compares encodings of every corpus unit, both special-token modes; returns the number of mismatches.
fn check_corpus(name: &str, tok: &Tokenizer, gguf_flavour: bool) -> usize {
    let rows = read_jsonl(&fixtures().join("expected.jsonl"));
    let mut failures = 0;
    for (mode, key, parse_special) in [("special on", "on", true), ("special off", "off", false)] {
        let opts = EncodeOptions { add_bos: true, parse_special };
        let mut matched = 0;
        let start = Instant::now();
        for (i, row) in rows.iter().enumerate() {
            let text = row["text"].as_str().unwrap();
            let want_key = format!("gguf_{key}");
            let want = ids(if gguf_flavour && row.get(&want_key).is_some() { &row[&want_key] } else { &row[key] });
            let got = tok.encode(text, opts);
            if got == want {
                matched += 1;
            } else {
                println!("MISMATCH {name} {mode} unit {}: {} {}", i + 1, short(text), describe(tok, &want, &got));
            }
        }
        println!("{name}: {mode}: {matched}/{} units match ({:?})", rows.len(), start.elapsed());
        failures += rows.len() - matched;
    }
    failures
}

/// decode(encode(x)) == x over the corpus (special parsing off; `▁` maps to a space, so those units are
/// left out), and streaming decoding agrees with whole decoding.
fn check_round_trip(name: &str, tok: &Tokenizer) -> usize {
    let rows = read_jsonl(&fixtures().join("expected.jsonl"));
    let mut failures = 0;
    let mut checked = 0;
    for (i, row) in rows.iter().enumerate() {
        let text = row["text"].as_str().unwrap();
        let ids = tok.encode(text, EncodeOptions { add_bos: true, parse_special: false });
        let whole = tok.decode(&ids).unwrap();
        let mut d = tok.stream_decoder(ControlTokens::Skip);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&d.push(id).unwrap());
        }
        streamed.push_str(&d.finish());
        if streamed != whole {
            println!("MISMATCH {name} streaming vs whole decode, unit {}: {}", i + 1, short(text));
            failures += 1;
        }
        if text.contains('\u{2581}') {
            continue;
        }
        checked += 1;
        if whole != text {
            println!("MISMATCH {name} round trip unit {}: {} -> {}", i + 1, short(text), short(&whole));
            failures += 1;
        }
    }
    println!("{name}: round trip checked on {checked} units, {failures} failures");
    failures
}

#[test]
fn gguf_vocabulary_matches_hf_tokenizers() {
    let Some(path) = env_path("GEMMA_MODEL") else { return };
    let meta = gemma::formats::gguf::load(&path).unwrap().metadata;
    let start = Instant::now();
    let tok = Tokenizer::from_gguf_metadata(&meta).unwrap();
    let load = start.elapsed();
    println!("GGUF: built the {}-piece tokenizer from metadata in {load:?}", tok.vocab_size());
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id(), tok.unk_id()), (Some(2), Some(1), Some(0), Some(3)));
    let failures = check_corpus("GGUF", &tok, true) + check_round_trip("GGUF", &tok);
    assert_eq!(failures, 0, "GGUF tokenizer: {failures} mismatches (listed above)");
}

#[test]
fn tokenizer_json_matches_hf_tokenizers() {
    let Some(path) = env_path("GEMMA_TOKENIZER_JSON") else { return };
    let start = Instant::now();
    let tok = Tokenizer::from_tokenizer_json(&path).unwrap();
    println!("tokenizer.json: loaded {} pieces in {:?}", tok.vocab_size(), start.elapsed());
    let failures = check_corpus("tokenizer.json", &tok, false) + check_round_trip("tokenizer.json", &tok);
    assert_eq!(failures, 0, "tokenizer.json tokenizer: {failures} mismatches (listed above)");
}

#[test]
fn tiny_sentencepiece_model_matches_sentencepiece() {
    let dir = fixtures().join("tiny_spm");
    let tok = Tokenizer::from_sentencepiece_model(&dir.join("tiny.model")).unwrap();
    let rows = read_jsonl(&dir.join("expected.jsonl"));
    let opts = EncodeOptions { add_bos: false, parse_special: false };
    let mut matched = 0;
    for (i, row) in rows.iter().enumerate() {
        let text = row["text"].as_str().unwrap();
        let (want, got) = (ids(&row["ids"]), tok.encode(text, opts));
        if want == got {
            matched += 1;
        } else {
            println!("MISMATCH tiny.model unit {}: {} {}", i + 1, short(text), describe(&tok, &want, &got));
        }
    }
    println!("tiny.model: {matched}/{} units match sentencepiece", rows.len());
    assert_eq!(matched, rows.len(), "tiny.model: {} mismatches (listed above)", rows.len() - matched);
}

fn messages(v: &Json) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

#[test]
fn chat_templates_match_transformers() {
    let rows = read_jsonl(&fixtures().join("chat.jsonl"));
    let official = std::fs::read_to_string(fixtures().join("gemma3_chat_template.jinja")).unwrap();
    let templates = [
        ("official Gemma 3 template", ChatTemplate::new(official, "<bos>".into(), "<eos>".into())),
        ("built-in Gemma format", ChatTemplate::gemma("<bos>".into(), "<eos>".into())),
    ];
    let tok = env_path("GEMMA_MODEL").map(|p| Tokenizer::from_gguf_metadata(&gemma::formats::gguf::load(&p).unwrap().metadata).unwrap());
    let mut failures = 0;
    for (name, t) in &templates {
        for (i, row) in rows.iter().enumerate() {
            let msgs = messages(&row["messages"]);
            let got = t.render(&msgs, row["add_generation_prompt"].as_bool().unwrap()).unwrap();
            if got != row["text"].as_str().unwrap() {
                println!("MISMATCH {name} chat {}: expected {:?} got {got:?}", i + 1, row["text"]);
                failures += 1;
            }
        }
        println!("{name}: {}/{} conversations render as transformers does", rows.len() - failures, rows.len());
    }
    if let Some(tok) = &tok {
        for (i, row) in rows.iter().enumerate() {
            let got = tok.encode(row["text"].as_str().unwrap(), EncodeOptions { add_bos: false, parse_special: true });
            if got != ids(&row["ids"]) {
                println!("MISMATCH chat {} ids: {}", i + 1, describe(tok, &ids(&row["ids"]), &got));
                failures += 1;
            }
        }
        println!("chat ids: checked {} rendered conversations with the GGUF vocabulary", rows.len());
    }
    assert_eq!(failures, 0, "{failures} chat mismatches (listed above)");
}

#[test]
fn from_dir_reads_the_model_and_the_config() {
    let dir = std::env::temp_dir().join(format!("gemma-tok-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("tiny_spm/tiny.model"), dir.join("tokenizer.model")).unwrap();
    let none = Tokenizer::from_dir(&dir).unwrap();
    assert!(none.chat_template().source().contains("<start_of_turn>"), "built-in Gemma format");
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"chat_template": "{{ bos_token }}X", "add_bos_token": false}"#).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.chat_template().render(&[], false).unwrap(), "<bos>X");
    assert!(!tok.default_options().add_bos);
    std::fs::remove_dir_all(&dir).unwrap();
    let e = Tokenizer::from_dir(&dir).err().unwrap().to_string();
    assert!(e.contains("no tokenizer.json or tokenizer.model"), "{e}");
}

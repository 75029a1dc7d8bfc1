//! Gemma 4 chat against transformers (tests/fixtures/tiny/gemma4_chat, tools/fixtures/make_gemma4_chat.py): the
//! tiny E2B checkpoint with a tokenizer that has Gemma 4's `<|turn>`, `<turn|>`, `<|think|>`, `<|channel>` and
//! `<channel|>` tokens and no chat template of its own.
//!
//! - The built-in Gemma 4 template renders every conversation exactly as transformers' `apply_chat_template`
//!   renders the same template (system and developer turns, multi-turn, a model message with its thoughts,
//!   consecutive model messages, thinking on and off); the tokenizer picks it for a Gemma 4 vocabulary.
//! - Greedy chats: the prompt ids equal transformers', the answer's ids equal `generate`'s, ending at `<turn|>`
//!   where it does, and the answer's text and thoughts equal what transformers' Gemma 4 response parser makes
//!   of them.
//! - The thought channel: hand-picked generations split into answer and thoughts as that parser splits them,
//!   fed to the text stream one id at a time.

use std::path::{Path, PathBuf};

use gemma::kernels::ThreadPool;
use gemma::runtime::{stop_token_ids, Generation, SamplerConfig, TextStream};
use gemma::tokenizer::{ChatTemplate, Message, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Msg {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct Rendered {
    messages: Vec<Msg>,
    enable_thinking: bool,
    add_generation_prompt: bool,
    text: String,
}

#[derive(Deserialize)]
struct Greedy {
    messages: Vec<Msg>,
    enable_thinking: bool,
    prompt_ids: Vec<u32>,
    generated: Vec<u32>,
    content: String,
    reasoning: Option<String>,
}

#[derive(Deserialize)]
struct Parsed {
    text: String,
    ids: Vec<u32>,
    content: String,
    reasoning: Option<String>,
}

#[derive(Deserialize)]
struct Expected {
    template: Vec<Rendered>,
    greedy: Vec<Greedy>,
    parse: Vec<Parsed>,
}

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

fn expected() -> Expected {
    serde_json::from_str(&std::fs::read_to_string(tiny().join("gemma4_chat/expected.json")).unwrap()).unwrap()
}

fn messages(m: &[Msg]) -> Vec<Message> {
    m.iter().map(|m| Message::new(m.role.clone(), m.content.clone())).collect()
}

/// The chat checkpoint: gemma4_e2b's config and weights with gemma4_chat's tokenizer and generation config.
fn checkpoint() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gemma4_chat_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = |from: &str, name: &str| std::fs::copy(tiny().join(from).join(name), dir.join(name)).unwrap();
    copy("gemma4_e2b", "config.json");
    copy("gemma4_e2b", "model.safetensors");
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        copy("gemma4_chat", f);
    }
    dir
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(&tiny().join("gemma4_chat")).unwrap()
}

#[test]
fn builtin_template_renders_as_transformers() {
    let e = expected();
    let tok = tokenizer();
    assert!(tok.vocab().chat_template.is_none(), "the fixture ships no template");
    let builtin = tok.chat_template();
    assert_eq!(builtin.source(), ChatTemplate::gemma4(String::new(), String::new()).source(), "a Gemma 4 vocabulary gets Gemma 4's format");
    for r in &e.template {
        let got = builtin.clone().with_thinking(r.enable_thinking).render(&messages(&r.messages), r.add_generation_prompt).unwrap();
        assert_eq!(got, r.text, "thinking {} generation prompt {}", r.enable_thinking, r.add_generation_prompt);
    }
}

/// Splits `ids` as a chat answer is split: (answer, thoughts).
fn split(tok: &Tokenizer, ids: &[u32]) -> (String, String) {
    let mut s = TextStream::new(tok, Vec::new(), Vec::new()).split_thoughts(tok.thought_channel());
    let (mut text, mut reasoning) = (String::new(), String::new());
    for &id in ids {
        let step = s.push(id);
        text.push_str(&step.text);
        reasoning.push_str(&step.reasoning);
    }
    let end = s.finish();
    text.push_str(&end.text);
    reasoning.push_str(&end.reasoning);
    (text, reasoning)
}

#[test]
fn thought_channel_splits_as_transformers_parser() {
    let tok = tokenizer();
    assert!(tok.thought_channel().is_some());
    for p in expected().parse {
        let opts = gemma::tokenizer::EncodeOptions { add_bos: false, parse_special: true };
        assert_eq!(tok.encode(&p.text, opts), p.ids, "{:?} encodes as transformers encodes it", p.text);
        let (text, reasoning) = split(&tok, &p.ids);
        assert_eq!(text, p.content, "answer of {:?}", p.text);
        assert_eq!(reasoning, p.reasoning.unwrap_or_default(), "thoughts of {:?}", p.text);
    }
}

fn greedy_chat(dir: &Path, g: &Greedy, pool: &ThreadPool) -> (Vec<u32>, Vec<u32>, String, String) {
    let (model, tok) = gemma::load_with_tokenizer(dir).unwrap();
    let template = tok.chat_template().with_thinking(g.enable_thinking);
    let ids = tok.encode_chat(&template, &messages(&g.messages)).unwrap();
    let mut gen = Generation::new(&model, 256, SamplerConfig::greedy());
    gen.feed(pool, &ids, |_| {}).unwrap();
    let stops = stop_token_ids(&model, &tok);
    let mut stream = TextStream::new(&tok, stops.clone(), Vec::new()).split_thoughts(tok.thought_channel());
    let (mut text, mut reasoning) = (String::new(), String::new());
    gen.generate_parts(pool, &mut stream, 24, |t, r| -> gemma::Result<bool> {
        text.push_str(t);
        reasoning.push_str(r);
        Ok(true)
    })
    .unwrap();
    let mut out = stream.ids().to_vec();
    if let Some(gemma::runtime::Stop::Id(id)) = stream.stopped() {
        out.push(id);
    }
    (ids, out, text, reasoning)
}

#[test]
fn greedy_chats_match_transformers() {
    let dir = checkpoint();
    let pool = ThreadPool::new(1);
    let tok = tokenizer();
    let turn_end = tok.token_id("<turn|>").unwrap();
    let e = expected();
    assert!(e.greedy.iter().any(|g| g.generated.last() == Some(&turn_end)), "one answer ends its turn");
    for g in &e.greedy {
        let (prompt, generated, text, reasoning) = greedy_chat(&dir, g, &pool);
        assert_eq!(prompt, g.prompt_ids, "thinking {}", g.enable_thinking);
        assert_eq!(generated, g.generated, "thinking {}", g.enable_thinking);
        assert_eq!(text, g.content);
        assert_eq!(reasoning, g.reasoning.clone().unwrap_or_default());
    }
    let _ = std::fs::remove_dir_all(dir);
}

//! What the server tests share: engines (the tiny random Gemma 3 checkpoint with a tokenizer cut to its
//! vocabulary, the tiny PaliGemma with its own tokenizer, or the real model from `GEMMA_MODEL`), images as
//! data URLs, a server on a free loopback port, and a small blocking HTTP/1.1 client that can send anything
//! (malformed bodies, half a stream then hang up).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use gemma::kernels::ThreadPool;
use gemma::tokenizer::{TokenKind, Tokenizer, Vocab};
use gemma_server::{Engine, Options, Server};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny Gemma 3 checkpoint (vocab 512, context 512) with the tiny SentencePiece vocabulary cut to its
/// first 512 pieces (BOS 2, EOS 1 as in the checkpoint's config). With `fim`, the last three pieces become
/// CodeGemma's FIM markers.
pub fn tiny_engine(fim: bool) -> Engine {
    tiny_engine_of("gemma3", fim)
}

/// As [`tiny_engine`], with another tiny checkpoint of tests/fixtures/tiny (`recurrent_gemma`: RecurrentGemma).
pub fn tiny_engine_of(case: &str, fim: bool) -> Engine {
    let model = gemma::load(&repo().join("tests/fixtures/tiny").join(case)).expect("tiny model");
    let n = model.config.vocab_size;
    let mut v: Vocab = gemma::tokenizer::spm::vocab_from_sentencepiece_model(&repo().join("tests/fixtures/tokenizer/tiny_spm/tiny.model"))
        .expect("tiny tokenizer");
    v.pieces.truncate(n);
    v.scores.truncate(n);
    v.kinds.truncate(n);
    v.bos = Some(2);
    v.eos = Some(1);
    v.add_bos = true;
    if fim {
        for (i, p) in ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"].iter().enumerate() {
            let id = n - 3 + i;
            v.pieces[id] = p.to_string();
            v.kinds[id] = TokenKind::Control;
            v.scores[id] = gemma::tokenizer::vocab::NO_MERGE;
        }
    }
    let tokenizer = Tokenizer::from_vocab(v).expect("cut vocabulary");
    Engine { model, tokenizer, pool: ThreadPool::new(2) }
}

/// The tiny PaliGemma 1 checkpoint (tests/fixtures/tiny/paligemma: SigLIP 32 × 32 px, 16 image tokens) with
/// its tokenizer.
pub fn paligemma_engine() -> Engine {
    let (model, tokenizer) = gemma::load_with_tokenizer(&paligemma_dir()).expect("tiny PaliGemma");
    Engine { model, tokenizer, pool: ThreadPool::new(2) }
}

pub fn gemma3_vision_engine() -> Engine {
    let (model, tokenizer) = gemma::load_with_tokenizer(&gemma3_vision_dir()).expect("tiny Gemma 3 with vision");
    Engine { model, tokenizer, pool: ThreadPool::new(2) }
}

/// The tiny Gemma 4 E2B checkpoint with tests/fixtures/tiny/gemma4_chat's tokenizer (Gemma 4's turn and channel
/// tokens, no template: the built-in Gemma 4 format).
pub fn gemma4_chat_engine() -> Engine {
    let model = gemma::load(&repo().join("tests/fixtures/tiny/gemma4_e2b")).expect("tiny Gemma 4");
    let tokenizer = Tokenizer::from_dir(&repo().join("tests/fixtures/tiny/gemma4_chat")).expect("Gemma 4 chat tokenizer");
    Engine { model, tokenizer, pool: ThreadPool::new(2) }
}

pub fn gemma4_chat_expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("tests/fixtures/tiny/gemma4_chat/expected.json")).unwrap()).unwrap()
}

pub fn gemma3_vision_dir() -> PathBuf {
    repo().join("tests/fixtures/tiny/gemma3_vision")
}

/// The conversations of tests/fixtures/tiny/gemma3_vision/chat_greedy.json as OpenAI chat bodies (images as
/// data URLs, in their places among the text parts), with transformers' greedy answer to each.
pub fn gemma3_chat_cases() -> Vec<(Value, String)> {
    let cases: Value = serde_json::from_slice(&std::fs::read(gemma3_vision_dir().join("chat_greedy.json")).unwrap()).unwrap();
    let part = |c: &Value| match c["type"].as_str() {
        Some("image") => {
            let png = std::fs::read(gemma3_vision_dir().join(c["path"].as_str().unwrap())).unwrap();
            serde_json::json!({"type": "image_url", "image_url": {"url": data_url("image/png", &png)}})
        }
        _ => serde_json::json!({"type": "text", "text": c["text"]}),
    };
    cases
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let messages: Vec<Value> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| serde_json::json!({"role": m["role"], "content": m["content"].as_array().unwrap().iter().map(part).collect::<Vec<_>>()}))
                .collect();
            let n = case["generated"].as_array().unwrap().len();
            (serde_json::json!({"messages": messages, "max_tokens": n, "temperature": 0}), case["text"].as_str().unwrap().to_string())
        })
        .collect()
}

pub fn paligemma_dir() -> PathBuf {
    repo().join("tests/fixtures/tiny/paligemma")
}

/// The fixture's `greedy` case, made by transformers: its prompt text, prompt length (with the image's
/// placeholders) and the text of its 10 generated ids as this tokenizer decodes them.
pub struct Greedy {
    pub prompt: String,
    pub prompt_tokens: u64,
    pub ids: Vec<u32>,
    pub text: String,
}

pub fn paligemma_greedy() -> Greedy {
    let e: Value = serde_json::from_slice(&std::fs::read(paligemma_dir().join("expected.json")).unwrap()).unwrap();
    let g = &e["greedy"];
    let ids: Vec<u32> = g["generated"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let tok = gemma::load_tokenizer(&paligemma_dir()).unwrap();
    Greedy {
        prompt: g["text"].as_str().unwrap().to_string(),
        prompt_tokens: g["prompt_ids"].as_array().unwrap().len() as u64,
        text: tok.decode(&ids).unwrap(),
        ids,
    }
}

/// `data:<mime>;base64,...` of `bytes`.
pub fn data_url(mime: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The fixture's image (32 × 32 PNG) as a data URL.
pub fn image_url() -> String {
    data_url("image/png", &std::fs::read(paligemma_dir().join("image.png")).unwrap())
}

/// A PNG whose header says `width` × `height` (the rest of the file is the fixture's): enough for a decoder
/// to refuse its size before reading pixels.
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = std::fs::read(paligemma_dir().join("image.png")).unwrap();
    // Signature (8), IHDR's length and type (8), then width and height; the chunk's CRC follows its 13 bytes.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// PNG's CRC-32 (ISO-HDLC), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// A chat body with one user message of `parts`.
pub fn image_chat(parts: Value, max_tokens: usize) -> Value {
    serde_json::json!({"messages": [{"role": "user", "content": parts}], "max_tokens": max_tokens, "temperature": 0})
}

/// The real model, or None (with a notice) when `GEMMA_MODEL` is unset.
pub fn real_engine() -> Option<Engine> {
    let Some(path) = std::env::var_os("GEMMA_MODEL") else {
        eprintln!("skipped: set GEMMA_MODEL to gemma-3-270m-q4_k_m.gguf (scripts/fetch-model.sh) to run the real-model server tests");
        return None;
    };
    let (model, tokenizer) = gemma::load_with_tokenizer(std::path::Path::new(&path)).expect("real model");
    Some(Engine { model, tokenizer, pool: ThreadPool::new(2) })
}

/// Options for a server on a free loopback port.
pub fn options(ctx: usize) -> Options {
    Options { addr: SocketAddr::from(([127, 0, 0, 1], 0)), ctx_size: ctx, ..Options::new("tiny") }
}

pub fn start(engine: Engine, opts: Options) -> Server {
    Server::start(engine, opts).expect("server starts")
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// The `data:` payloads of a server-sent-event body.
    pub fn events(&self) -> Vec<String> {
        self.body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
    }
    /// The OpenAI error object, checked for its four fields.
    pub fn error(&self) -> Value {
        let e = self.json()["error"].clone();
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "error object lacks `{k}`: {}", self.body);
        }
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.body);
        e
    }
}

/// Send one request (the connection closes after it) and read the whole response.
pub fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = connect(addr, method, path, headers, body);
    read_response(&mut s)
}

pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    send(addr, "POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    send(addr, "GET", path, &[], b"")
}

/// Open a connection and send a request, leaving the response unread.
pub fn connect(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) and close before reading a large body: that is not the client's failure.
    let _ = s.write_all(body);
    BufReader::new(s)
}

/// Status line and headers.
pub fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

/// One chunk of a chunked body (None at the end).
pub fn read_chunk(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let n = usize::from_str_radix(line.trim(), 16).ok()?;
    let mut data = vec![0; n + 2];
    r.read_exact(&mut data).ok()?;
    data.truncate(n);
    (n > 0).then_some(data)
}

pub fn read_response(r: &mut BufReader<TcpStream>) -> Resp {
    let (status, headers) = read_head(r);
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        while let Some(c) = read_chunk(r) {
            body.extend(c);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Resp { status, headers, body: String::from_utf8(body).expect("UTF-8 body") }
}

/// A completion request's text, finish reason and completion tokens, from a JSON body or a stream.
pub fn outcome(r: &Resp, stream: bool) -> (String, String, u64) {
    assert_eq!(r.status, 200, "{}", r.body);
    if !stream {
        let j = r.json();
        let c = &j["choices"][0];
        let text = c["text"].as_str().or(c["message"]["content"].as_str()).unwrap().to_string();
        return (text, c["finish_reason"].as_str().unwrap().to_string(), j["usage"]["completion_tokens"].as_u64().unwrap());
    }
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", r.body);
    let (mut text, mut finish, mut tokens) = (String::new(), String::new(), 0);
    for e in &events[..events.len() - 1] {
        let j: Value = serde_json::from_str(e).unwrap();
        assert!(j.get("error").is_none(), "{e}");
        if let Some(u) = j["usage"].as_object() {
            tokens = u["completion_tokens"].as_u64().unwrap();
        }
        let Some(c) = j["choices"].get(0) else { continue };
        text.push_str(c["text"].as_str().or(c["delta"]["content"].as_str()).unwrap_or(""));
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish, tokens)
}

/// A value from `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    let page = get(addr, "/metrics").body;
    let line = page.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')));
    line.unwrap_or_else(|| panic!("no {name} in {page}")).parse().unwrap()
}

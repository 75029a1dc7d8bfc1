//! What the server tests share: engines (the tiny random Gemma 3 checkpoint with a tokenizer cut to its
//! vocabulary, or the real model from `GEMMA_MODEL`), a server on a free loopback port, and a small blocking
//! HTTP/1.1 client that can send anything (malformed bodies, half a stream then hang up).

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

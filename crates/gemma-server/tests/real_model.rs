//! Server behaviour that needs generations slow enough to act during them: a full queue, a client hanging
//! up mid-stream, a shutdown whose grace runs out. Uses the real Gemma 3 270M (`GEMMA_MODEL`); skipped,
//! with a notice, without it.

mod support;

use std::time::{Duration, Instant};

use gemma_server::Options;
use serde_json::json;
use support::*;

/// Poll until `f` holds (or fail after 60 s).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn long_stream() -> Vec<u8> {
    json!({"prompt": "Once upon a time", "max_tokens": 1000, "temperature": 0, "stream": true}).to_string().into_bytes()
}

#[test]
fn full_queue_gets_503_with_retry_after_and_hangups_cancel() {
    let Some(engine) = real_engine() else { return };
    let server = start(engine, Options { parallel: 1, queue: 1, ..options(2048) });
    let addr = server.addr();
    // The one slot: a long stream, held open. Headers come once it has its first token.
    let mut holder = connect(addr, "POST", "/v1/completions", &[], &long_stream());
    assert_eq!(read_head(&mut holder).0, 200);
    assert!(read_chunk(&mut holder).is_some());
    // The one queue place: a short request, waiting on its own thread.
    let queued = std::thread::spawn(move || post(addr, "/v1/completions", &json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0})));
    eventually("a queued request", || metric(addr, "gemma_queue_depth") == 1.0);
    // Full: refused at once, with Retry-After.
    let r = post(addr, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.error()["code"], "server_busy");
    assert_eq!(metric(addr, "gemma_requests_rejected_busy_total"), 1.0);
    // Hanging up frees the slot: the queued request runs, and the long one stops well short of 1000 tokens.
    drop(holder);
    let r = queued.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("the cancel to be counted", || metric(addr, "gemma_requests_cancelled_total") == 1.0);
    assert!(metric(addr, "gemma_generated_tokens_total") < 500.0);
    // A client that hangs up before its (non-streamed) answer cancels it too.
    let before = metric(addr, "gemma_generated_tokens_total");
    let waiting = connect(addr, "POST", "/v1/completions", &[], json!({"prompt": "Once upon a time", "max_tokens": 1000}).to_string().as_bytes());
    eventually("the request to start", || metric(addr, "gemma_generated_tokens_total") > before);
    drop(waiting);
    eventually("the second cancel", || metric(addr, "gemma_requests_cancelled_total") == 2.0);
    eventually("the slot to be free", || metric(addr, "gemma_active_sequences") == 0.0);
    assert!(metric(addr, "gemma_generated_tokens_total") < before + 500.0);
}

#[test]
fn shutdown_grace_cancels_what_is_still_running() {
    let Some(engine) = real_engine() else { return };
    let server = start(engine, Options { shutdown_grace: Duration::from_millis(300), ..options(2048) });
    let addr = server.addr();
    let mut stream = connect(addr, "POST", "/v1/completions", &[], &long_stream());
    assert_eq!(read_head(&mut stream).0, 200);
    let t0 = Instant::now();
    server.shutdown();
    let mut body = Vec::new();
    while let Some(c) = read_chunk(&mut stream) {
        body.extend(c);
    }
    let body = String::from_utf8(body).unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert!(body.contains("\"code\":\"shutting_down\""), "{body}");
    server.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20), "shutdown took {:?}", t0.elapsed());
}

//! The server over HTTP with the tiny random checkpoint: OpenAI shapes, streaming, batching that leaves
//! greedy outputs unchanged, fill-in-the-middle, bad input with OpenAI error objects, API keys, metrics and
//! shutdown. (Tests that need generations long enough to race against are in `real_model.rs`.)

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

#[test]
fn completion_chat_and_stream_shapes() {
    let server = start(tiny_engine(false), options(512));
    let addr = server.addr();

    let r = post(addr, "/v1/completions", &json!({"model": "tiny", "prompt": "The quick brown fox", "max_tokens": 5, "temperature": 0}));
    let j = r.json();
    assert_eq!(j["object"], "text_completion", "{j}");
    assert_eq!(j["model"], "tiny");
    let usage = &j["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 1);
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 5);
    assert_eq!(usage["total_tokens"], usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap());
    assert!(["stop", "length"].contains(&j["choices"][0]["finish_reason"].as_str().unwrap()));

    let r = post(addr, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}));
    let j = r.json();
    assert_eq!(j["object"], "chat.completion", "{j}");
    assert_eq!(j["choices"][0]["message"]["role"], "assistant");
    assert!(j["id"].as_str().unwrap().starts_with("chatcmpl-"));

    // Streaming gives the same text as the whole response, chunk by chunk, then [DONE].
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let mut body = if path == "/v1/completions" {
            json!({"prompt": "It was a bright cold day", "max_tokens": 12, "temperature": 0})
        } else {
            json!({"messages": [{"role": "user", "content": "It was a bright cold day"}], "max_tokens": 12, "temperature": 0})
        };
        let whole = outcome(&post(addr, path, &body), false);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let r = post(addr, path, &body);
        assert!(r.header("content-type").unwrap().starts_with("text/event-stream"), "{:?}", r.headers);
        assert_eq!(outcome(&r, true), whole, "{path}");
        if path == "/v1/chat/completions" {
            let first: Value = serde_json::from_str(&r.events()[0]).unwrap();
            assert_eq!(first["object"], "chat.completion.chunk");
            assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        }
    }

    let j = get(addr, "/v1/models").json();
    assert_eq!(j["data"][0]["id"], "tiny");
    assert_eq!(get(addr, "/v1/models/tiny").json()["object"], "model");
    assert_eq!(get(addr, "/v1/models/other").status, 404);
    assert_eq!(get(addr, "/health").json()["status"], "ok");
}

#[test]
fn max_tokens_and_stop_strings() {
    let server = start(tiny_engine(false), options(512));
    let addr = server.addr();
    let body = json!({"prompt": "Tokenizers turn text into integers", "max_tokens": 40, "temperature": 0});
    let (text, finish, n) = outcome(&post(addr, "/v1/completions", &body), false);
    if finish == "length" {
        assert_eq!(n, 40);
    }
    // Stop at a piece of the greedy text: the output is what came before it.
    let cut = text.char_indices().map(|(i, _)| i).nth(text.chars().count() / 2).unwrap();
    let stop: String = text[cut..].chars().take(3).collect();
    let want = &text[..text.find(&stop).unwrap()];
    for stream in [false, true] {
        let body = json!({"prompt": "Tokenizers turn text into integers", "max_tokens": 40, "temperature": 0, "stop": [stop], "stream": stream});
        let (got, finish, _) = outcome(&post(addr, "/v1/completions", &body), stream);
        assert_eq!((got.as_str(), finish.as_str()), (want, "stop"), "stop {stop:?}, stream {stream}");
    }
    // Without max_tokens a chat reply may run to the end of the context.
    let body = json!({"messages": [{"role": "user", "content": "a"}], "temperature": 0});
    let (_, finish, n) = outcome(&post(addr, "/v1/chat/completions", &body), false);
    assert!(finish == "stop" || n > 16, "{finish} {n}");
}

/// Requests decoded together (and prompts read in chunks among other sequences' decode steps) give
/// exactly what each gives alone, with greedy sampling.
#[test]
fn batching_leaves_greedy_outputs_unchanged() {
    batching_leaves_greedy_outputs_unchanged_with("gemma3");
}

/// The same with RecurrentGemma: each slot's recurrent state (conv window, RG-LRU h) and attention ring
/// advance with its own chunks, whatever else shares the pass; a slot reused by the next request starts clean.
#[test]
fn batching_leaves_greedy_outputs_unchanged_recurrent_gemma() {
    batching_leaves_greedy_outputs_unchanged_with("recurrent_gemma");
}

fn batching_leaves_greedy_outputs_unchanged_with(case: &str) {
    let tiny_engine = |fim| tiny_engine_of(case, fim);
    let prompts: Vec<String> = (0..12).map(|i| format!("{} number {i} of the quick brown fox", "It was a bright cold day in April, ".repeat(1 + i % 4))).collect();
    let request = |i: usize| {
        let stream = i % 3 == 0;
        if i % 2 == 0 {
            (json!({"prompt": prompts[i], "max_tokens": 8 + 5 * (i % 4), "temperature": 0, "stream": stream}), "/v1/completions", stream)
        } else {
            let m = json!([{"role": "user", "content": prompts[i]}]);
            (json!({"messages": m, "max_tokens": 8 + 5 * (i % 4), "temperature": 0, "stream": stream}), "/v1/chat/completions", stream)
        }
    };
    let alone: Vec<_> = {
        let server = start(tiny_engine(false), gemma_server::Options { parallel: 1, ..options(512) });
        (0..prompts.len())
            .map(|i| {
                let (body, path, stream) = request(i);
                outcome(&post(server.addr(), path, &body), stream)
            })
            .collect()
    };
    // The comparison means something only if the answers run for a while.
    let long = alone.iter().filter(|o| o.2 >= 8).count();
    assert!(long >= prompts.len() / 2, "{case}: only {long} answers of 8+ tokens: {alone:?}");
    // Four slots and a prompt budget of 7 tokens a pass: prompts are read over many passes, mixed with decoding.
    let server = start(tiny_engine(false), gemma_server::Options { parallel: 4, prefill_chunk: 7, ..options(512) });
    let addr = server.addr();
    for round in 0..2 {
        let together: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..prompts.len())
                .map(|i| {
                    let (body, path, stream) = request(i);
                    s.spawn(move || outcome(&post(addr, path, &body), stream))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(a, b, "request {i}, round {round}");
        }
    }
    let passes = metric(addr, "gemma_forward_passes_total");
    let seqs = metric(addr, "gemma_batched_sequences_total");
    assert!(seqs > passes, "no pass carried more than one sequence: {seqs} sequences over {passes} passes");
}

#[test]
fn fill_in_the_middle_with_suffix() {
    let server = start(tiny_engine(true), options(512));
    let r = post(server.addr(), "/v1/completions", &json!({"prompt": "def add(a, b):", "suffix": "return c", "max_tokens": 6, "temperature": 0}));
    let j = r.json();
    assert_eq!(r.status, 200, "{j}");
    // BOS, three markers, and the two texts.
    assert!(j["usage"]["prompt_tokens"].as_u64().unwrap() > 4 + 2, "{j}");
    drop(server);

    let server = start(tiny_engine(false), options(512));
    let r = post(server.addr(), "/v1/completions", &json!({"prompt": "def f():", "suffix": "\n", "max_tokens": 6}));
    assert_eq!(r.status, 400);
    let e = r.error();
    assert_eq!(e["param"], "suffix");
    assert!(e["message"].as_str().unwrap().contains("<|fim_prefix|>"), "{e}");
}

#[test]
fn bad_requests_get_openai_errors() {
    let server = start(tiny_engine(false), gemma_server::Options { max_body_bytes: Some(4096), ..options(64) });
    let addr = server.addr();
    let raw = |path: &str, body: &str| send(addr, "POST", path, &[("Content-Type", "application/json")], body.as_bytes());
    let chat = "/v1/chat/completions";
    let cmpl = "/v1/completions";
    let long_prompt = "the quick brown fox jumps over the lazy dog ".repeat(20);
    // (path, body, status, param, code)
    let cases: Vec<(&str, String, u16, Option<&str>, Option<&str>)> = vec![
        (chat, "{\"messages\": [".into(), 400, None, None),
        (chat, "not json".into(), 400, None, None),
        (chat, "[]".into(), 400, None, None),
        (chat, json!({"model": "x"}).to_string(), 400, Some("messages"), None),
        (chat, json!({"messages": "hi"}).to_string(), 400, Some("messages"), None),
        (chat, json!({"messages": []}).to_string(), 400, Some("messages"), None),
        (chat, json!({"messages": [{"role": "user"}]}).to_string(), 400, Some("messages[0].content"), None),
        (chat, json!({"messages": [{"role": "robot", "content": "x"}]}).to_string(), 400, Some("messages[0].role"), None),
        (chat, json!({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}).to_string(), 400, Some("messages"), None),
        (chat, json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).to_string(), 400, Some("temperature"), None),
        (chat, json!({"messages": [{"role": "user", "content": "x"}], "temperature": 3}).to_string(), 400, Some("temperature"), None),
        (chat, json!({"messages": [{"role": "user", "content": "x"}], "top_p": 0}).to_string(), 400, Some("top_p"), None),
        (chat, json!({"messages": [{"role": "user", "content": "x"}], "n": 2}).to_string(), 400, Some("n"), None),
        (chat, json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).to_string(), 400, Some("max_tokens"), None),
        (chat, json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000}).to_string(), 400, Some("max_tokens"), Some("context_length_exceeded")),
        (chat, json!({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}).to_string(), 400, Some("stop"), None),
        (chat, json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true}).to_string(), 400, Some("logprobs"), None),
        (cmpl, json!({"max_tokens": 5}).to_string(), 400, Some("prompt"), None),
        (cmpl, json!({"prompt": 5}).to_string(), 400, Some("prompt"), None),
        (cmpl, json!({"prompt": [1, 2, 100000]}).to_string(), 400, Some("prompt"), None),
        (cmpl, json!({"prompt": long_prompt}).to_string(), 400, Some("prompt"), Some("context_length_exceeded")),
        (cmpl, json!({"prompt": "x", "max_tokens": -3}).to_string(), 400, Some("max_tokens"), None),
        (cmpl, json!({"prompt": "x".repeat(5000)}).to_string(), 413, None, Some("request_too_large")),
    ];
    for (path, body, status, param, code) in &cases {
        let r = raw(path, body);
        assert_eq!(r.status, *status, "{path} {body}: {}", r.body);
        let e = r.error();
        assert_eq!(e["param"].as_str(), *param, "{body}: {e}");
        assert_eq!(e["code"].as_str(), *code, "{body}: {e}");
        assert_eq!(e["type"], if *status == 413 || *status == 400 { "invalid_request_error" } else { "server_error" });
    }
    let r = get(addr, "/v1/chat/completions");
    assert_eq!(r.status, 405);
    r.error();
    let r = get(addr, "/nowhere");
    assert_eq!(r.status, 404);
    r.error();
    // And the server still serves.
    let (_, _, n) = outcome(&post(addr, cmpl, &json!({"prompt": "ok", "max_tokens": 3, "temperature": 0})), false);
    assert!(n <= 3);
    let m = get(addr, "/metrics").body;
    assert!(m.contains("gemma_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"} 17"), "{m}");
}

#[test]
fn api_key_is_required_when_set() {
    let server = start(tiny_engine(false), gemma_server::Options { api_key: Some("sesame".into()), ..options(512) });
    let addr = server.addr();
    let body = json!({"prompt": "x", "max_tokens": 2}).to_string();
    let with = |auth: &[(&str, &str)]| send(addr, "POST", "/v1/completions", auth, body.as_bytes());
    for auth in [&[][..], &[("Authorization", "Bearer wrong")][..], &[("Authorization", "sesame")][..]] {
        let r = with(auth);
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.error()["code"], "invalid_api_key");
    }
    assert_eq!(with(&[("Authorization", "Bearer sesame")]).status, 200);
    assert_eq!(get(addr, "/v1/models").status, 401);
    assert_eq!(get(addr, "/health").status, 200);
}

#[test]
fn shutdown_finishes_running_streams_then_refuses() {
    let server = start(tiny_engine(false), options(512));
    let addr = server.addr();
    let mut r = connect(addr, "POST", "/v1/completions", &[], json!({"prompt": "x", "max_tokens": 400, "temperature": 0, "stream": true}).to_string().as_bytes());
    let (status, _) = read_head(&mut r);
    assert_eq!(status, 200);
    server.shutdown();
    let mut body = Vec::new();
    while let Some(c) = read_chunk(&mut r) {
        body.extend(c);
    }
    let body = String::from_utf8(body).unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert!(body.contains("\"finish_reason\":\"length\"") || body.contains("\"finish_reason\":\"stop\""), "{body}");
    server.wait().unwrap();
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "still listening");
}

/// The chat body of the fixture's greedy case: the image and `caption en`, 10 tokens.
fn caption_request(g: &Greedy) -> Value {
    image_chat(json!([{"type": "text", "text": g.prompt}, {"type": "image_url", "image_url": {"url": image_url(), "detail": "low"}}]), 10)
}

/// An image in a chat request to PaliGemma gives transformers' greedy tokens for the same image and prompt
/// (tests/fixtures/tiny/paligemma/expected.json), whole or streamed, with the image before or after the text.
#[test]
fn paligemma_image_chat_matches_transformers() {
    let g = paligemma_greedy();
    let server = start(paligemma_engine(), options(512));
    let addr = server.addr();
    let r = post(addr, "/v1/chat/completions", &caption_request(&g));
    let j = r.json();
    assert_eq!(r.status, 200, "{j}");
    assert_eq!(j["choices"][0]["message"]["content"].as_str(), Some(g.text.as_str()), "{j} (ids {:?})", g.ids);
    assert_eq!(j["choices"][0]["finish_reason"], "length");
    assert_eq!((j["usage"]["prompt_tokens"].as_u64(), j["usage"]["completion_tokens"].as_u64()), (Some(g.prompt_tokens), Some(10)));
    let mut body = caption_request(&g);
    body["stream"] = json!(true);
    assert_eq!(outcome(&post(addr, "/v1/chat/completions", &body), true), (g.text.clone(), "length".into(), 0));
    // The image first, the task in two text parts and a system message (not part of PaliGemma's prompt).
    let parts = json!([{"type": "image_url", "image_url": {"url": image_url()}}, {"type": "text", "text": "caption"}, {"type": "text", "text": " en"}]);
    let body = json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}], "max_tokens": 10, "temperature": 0});
    assert_eq!(outcome(&post(addr, "/v1/chat/completions", &body), false), (g.text.clone(), "length".into(), 10));
}

/// Gemma 3 with images: each conversation of the fixture's chat_greedy.json (two images in one message; an image
/// in an earlier turn; images in two turns), sent as OpenAI image_url parts, gets transformers' greedy answer,
/// alone or three at once, with prompt chunks large or smaller than an image's block (which is never split).
/// An image sent twice in one request is encoded once; a text part that holds `<start_of_image>` is refused.
#[test]
fn gemma3_image_chats_match_transformers() {
    let cases = gemma3_chat_cases();
    for prefill_chunk in [128, 3] {
        let server = start(gemma3_vision_engine(), gemma_server::Options { parallel: 4, prefill_chunk, ..options(512) });
        let addr = server.addr();
        for (body, text) in &cases {
            let r = post(addr, "/v1/chat/completions", body);
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["choices"][0]["message"]["content"].as_str(), Some(text.as_str()), "prefill chunk {prefill_chunk}");
        }
        let answers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = cases.iter().map(|(body, _)| s.spawn(move || outcome(&post(addr, "/v1/chat/completions", body), false))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for ((_, text), a) in cases.iter().zip(&answers) {
            assert_eq!(&a.0, text, "batched, prefill chunk {prefill_chunk}");
        }
        assert_eq!(metric(addr, "gemma_images_encoded_total"), 2.0 * (2.0 + 1.0 + 2.0), "every image part encoded once");
    }
    let server = start(gemma3_vision_engine(), options(512));
    let addr = server.addr();
    let png = std::fs::read(gemma3_vision_dir().join("image.png")).unwrap();
    let img = json!({"type": "image_url", "image_url": {"url": data_url("image/png", &png)}});
    let r = post(addr, "/v1/chat/completions", &image_chat(json!([img, {"type": "text", "text": "Twice?"}, img]), 2));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["usage"]["prompt_tokens"].as_u64().unwrap() > 2 * 16);
    assert_eq!(metric(addr, "gemma_images_encoded_total"), 1.0, "the same image twice in a request is encoded once");
    let r = post(addr, "/v1/chat/completions", &image_chat(json!([img, {"type": "text", "text": "and <start_of_image> here"}]), 2));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "messages[0].content[1].text");
    // Text alone still goes through the template.
    let r = post(addr, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}));
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Image requests decoded among other sequences (a long text generation, other image requests) give the same
/// tokens as alone, and so does the text; with `--prefill-chunk 4`, smaller than the 20-token prefix, the
/// prefix is still read in one chunk (split, its image rows would not fit a chunk, and the bidirectional
/// span would be cut) while a text prompt is read 4 tokens a pass.
#[test]
fn paligemma_images_batch_with_other_requests() {
    let g = paligemma_greedy();
    let text_body = json!({"prompt": "the quick brown fox jumps over the lazy dog", "max_tokens": 300, "temperature": 0, "stream": true});
    let text_alone = {
        let server = start(paligemma_engine(), gemma_server::Options { parallel: 1, ..options(512) });
        outcome(&post(server.addr(), "/v1/completions", &text_body), true)
    };
    for prefill_chunk in [128, 4] {
        let server = start(paligemma_engine(), gemma_server::Options { parallel: 4, prefill_chunk, ..options(512) });
        let addr = server.addr();
        // Alone, the prefix longer than the chunk.
        assert_eq!(outcome(&post(addr, "/v1/chat/completions", &caption_request(&g)), false).0, g.text, "prefill chunk {prefill_chunk}");
        // A long text generation holds a slot; image requests come while it runs.
        let mut stream = connect(addr, "POST", "/v1/completions", &[], text_body.to_string().as_bytes());
        let (status, _) = read_head(&mut stream);
        assert_eq!(status, 200);
        let first = read_chunk(&mut stream).expect("a first event");
        let answers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(|| outcome(&post(addr, "/v1/chat/completions", &caption_request(&g)), false))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for a in &answers {
            assert_eq!(a, &(g.text.clone(), "length".to_string(), 10), "prefill chunk {prefill_chunk}");
        }
        let mut body = first;
        while let Some(c) = read_chunk(&mut stream) {
            body.extend(c);
        }
        let text = Resp { status, headers: Vec::new(), body: String::from_utf8(body).unwrap() };
        assert_eq!(outcome(&text, true), text_alone, "the text generation, prefill chunk {prefill_chunk}");
        let passes = metric(addr, "gemma_forward_passes_total");
        let seqs = metric(addr, "gemma_batched_sequences_total");
        assert!(seqs > passes, "no pass carried more than one sequence: {seqs} sequences over {passes} passes");
    }
}

#[test]
fn bad_image_requests_get_400s() {
    let g = paligemma_greedy();
    let server = start(paligemma_engine(), options(512));
    let addr = server.addr();
    let chat = "/v1/chat/completions";
    let with_url = |url: &str| image_chat(json!([{"type": "text", "text": "caption en"}, {"type": "image_url", "image_url": {"url": url}}]), 4);
    let png = std::fs::read(paligemma_dir().join("image.png")).unwrap();
    let two = image_chat(
        json!([{"type": "image_url", "image_url": {"url": image_url()}}, {"type": "text", "text": "caption en"}, {"type": "image_url", "image_url": {"url": image_url()}}]),
        4,
    );
    let after = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url()}}]}, {"role": "assistant", "content": "a cat"}]});
    // (body, param, what the message says)
    let cases: Vec<(Value, &str, &str)> = vec![
        (with_url("https://example.com/cat.png"), "messages[0].content[1].image_url.url", "remote URLs and file paths are not fetched"),
        (with_url("/home/me/cat.png"), "messages[0].content[1].image_url.url", "send the image inline as a data: URL"),
        (with_url("data:image/png,rawbytes"), "messages[0].content[1].image_url.url", "only base64"),
        (with_url("data:image/png;base64,iVBOR%%%not base64"), "messages[0].content[1]", "base64"),
        (with_url(&data_url("image/png", b"hello, I am text")), "messages[0].content[1]", "messages[0].content[1]: not"),
        (with_url(&data_url("image/png", &png[..png.len() / 2])), "messages[0].content[1]", "PNG"),
        (with_url(&data_url("image/gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")), "messages[0].content[1]", "GIF"),
        (with_url(&data_url("image/png", &png_claiming(20000, 20000))), "messages[0].content[1]", "over the limit"),
        (image_chat(json!([{"type": "image_url"}]), 4), "messages[0].content[0].image_url", "needs `image_url`"),
        (image_chat(json!([{"type": "input_audio", "input_audio": {}}]), 4), "messages[0].content", "only text and image_url"),
        (two, "messages", "exactly one image"),
        (after, "messages[1].role", "the last message must be the user's"),
        (json!({"messages": [{"role": "user", "content": "caption en"}]}), "messages", "an image"),
    ];
    for (body, param, says) in &cases {
        let r = post(addr, chat, body);
        let e = r.error();
        assert_eq!(r.status, 400, "{e}");
        assert_eq!((e["type"].as_str(), e["param"].as_str()), (Some("invalid_request_error"), Some(*param)), "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{e} should say {says:?}");
    }
    // Bodies up to 20 MiB by default for a model that takes images; over that a 413.
    let mut body = caption_request(&g).to_string();
    body.insert_str(1, &" ".repeat(2 << 20));
    let r = send(addr, "POST", chat, &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    body.insert_str(1, &" ".repeat(19 << 20));
    let r = send(addr, "POST", chat, &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!((r.status, r.error()["code"].as_str()), (413, Some("request_too_large")));
    // And it still serves.
    assert_eq!(outcome(&post(addr, chat, &caption_request(&g)), false).0, g.text);
    drop(server);

    // A text-only model says so.
    let server = start(tiny_engine_of("gemma_mqa", false), options(512));
    let r = post(server.addr(), chat, &caption_request(&g));
    let e = r.error();
    assert_eq!((r.status, e["param"].as_str()), (400, Some("messages[0].content[1]")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("text-only"), "{e}");
}

/// A PaliGemma answer with location tokens carries its boxes as `detections` in the whole chat response (the
/// tiny random model's greedy answer to `detect` about image_b.png begins with four of them); a streamed
/// answer is the same text, without them.
#[test]
fn paligemma_answers_carry_detections() {
    let server = start(paligemma_engine(), options(512));
    let addr = server.addr();
    let url = data_url("image/png", &std::fs::read(paligemma_dir().join("image_b.png")).unwrap());
    let mut body = image_chat(json!([{"type": "text", "text": "detect"}, {"type": "image_url", "image_url": {"url": url}}]), 12);
    let r = post(addr, "/v1/chat/completions", &body);
    let j = r.json();
    let message = &j["choices"][0]["message"];
    let text = message["content"].as_str().unwrap();
    let want = gemma::runtime::detect::parse_detections(text, 32, 32);
    assert!(!want.is_empty(), "no boxes in {text:?}");
    assert_eq!(message["detections"], json!(want), "{j}");
    assert_eq!(message["detections"][0]["box"].as_array().unwrap().len(), 4, "{j}");
    body["stream"] = json!(true);
    let r = post(addr, "/v1/chat/completions", &body);
    assert_eq!(outcome(&r, true).0, text);
    assert!(!r.body.contains("detections"), "{}", r.body);
}

/// Gemma 4 chats (tests/fixtures/tiny/gemma4_chat, by tools/fixtures/make_gemma4_chat.py): the conversation through
/// the built-in Gemma 4 template, thinking switched by `chat_template_kwargs.enable_thinking`, gives transformers'
/// prompt and greedy answer, ending at `<turn|>` where transformers' does, streamed or not; the answer's text is what
/// transformers' Gemma 4 response parser makes of it (no thoughts here: `reasoning_content` absent). A template
/// variable other than `enable_thinking` is a 400 naming it.
#[test]
fn gemma4_chats_match_transformers() {
    let server = start(gemma4_chat_engine(), options(256));
    let addr = server.addr();
    let e = gemma4_chat_expected();
    let turn_end = e["special_ids"]["<turn|>"].as_u64().unwrap();
    let mut stops = 0;
    for g in e["greedy"].as_array().unwrap() {
        let mut body = json!({"messages": g["messages"], "max_tokens": 24, "temperature": 0,
                              "chat_template_kwargs": {"enable_thinking": g["enable_thinking"]}});
        let r = post(addr, "/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        let generated = g["generated"].as_array().unwrap();
        let stopped = [1, turn_end].contains(&generated.last().unwrap().as_u64().unwrap());
        stops += stopped as usize;
        let message = &j["choices"][0]["message"];
        assert_eq!(message["content"], g["content"], "thinking {}", g["enable_thinking"]);
        assert!(message.get("reasoning_content").is_none(), "{j}");
        assert_eq!(j["choices"][0]["finish_reason"], if stopped { "stop" } else { "length" });
        assert_eq!(j["usage"]["prompt_tokens"].as_u64().unwrap() as usize, g["prompt_ids"].as_array().unwrap().len());
        assert_eq!(j["usage"]["completion_tokens"].as_u64().unwrap() as usize, generated.len() - stopped as usize);
        body["stream"] = json!(true);
        assert_eq!(outcome(&post(addr, "/v1/chat/completions", &body), true).0, g["content"].as_str().unwrap());
    }
    assert!(stops > 0, "one answer ends its turn");
    let r = post(addr, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "Hi"}], "chat_template_kwargs": {"tools_in_user": true}}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "chat_template_kwargs.tools_in_user");
    let r = post(addr, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "Hi"}], "chat_template_kwargs": {"enable_thinking": "yes"}}));
    assert_eq!(r.status, 400, "{}", r.body);
}

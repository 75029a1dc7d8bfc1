//! OpenAI response bodies: whole responses, stream chunks (`chat.completion.chunk`, `text_completion`) and
//! the usage object, built as JSON values in the shapes OpenAI's API reference gives.
//!
//! One extension: the message of a whole (non-streaming) chat answer about an image carries
//! `"detections": [{"label", "box": [x0, y0, x1, y1]}]` when the text holds PaliGemma's location tokens
//! (`<loc0123>`...; the answer to `detect cat`), the boxes in pixels of the image as sent. A streamed
//! answer is text only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use gemma::runtime::detect::parse_detections;
use gemma::runtime::FinishReason;
use serde_json::{json, Value};

use crate::scheduler::Finished;

/// Which API a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// What every body and chunk of one response repeats.
#[derive(Debug, Clone)]
pub struct Meta {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    /// Whether stream chunks carry `"usage": null` (the client asked for a final usage chunk).
    pub include_usage: bool,
    /// The size of the request's image (width, height), which a chat answer's detections are scaled to.
    pub image_size: Option<(u32, u32)>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Meta {
    pub fn new(endpoint: Endpoint, model: String, include_usage: bool) -> Meta {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        let created = unix_now();
        // Unique within a server run and unlikely to repeat across runs.
        let id = format!("{prefix}-{created:x}{:06x}", NEXT.fetch_add(1, Ordering::Relaxed));
        Meta { endpoint, id, created, model, include_usage, image_size: None }
    }

    fn object(&self, stream: bool) -> &'static str {
        match (self.endpoint, stream) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// The whole response of a non-streaming request. A chat answer's `reasoning` (Gemma 4's thoughts) goes in
    /// the message's `reasoning_content`, as llama.cpp's and vLLM's servers put it, when there is any.
    pub fn response(&self, text: &str, reasoning: &str, f: &Finished) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut message = json!({ "role": "assistant", "content": text });
                if !reasoning.is_empty() {
                    message["reasoning_content"] = json!(reasoning);
                }
                if let Some((w, h)) = self.image_size {
                    let found = parse_detections(text, w, h);
                    if !found.is_empty() {
                        message["detections"] = json!(found);
                    }
                }
                json!({ "index": 0, "message": message, "logprobs": null, "finish_reason": f.reason.as_str() })
            }
            Endpoint::Completion => json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": f.reason.as_str() }),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(f),
        })
    }

    /// The chunk that opens a chat stream: the assistant role, no text yet.
    pub fn role_chunk(&self) -> Value {
        self.chunk_with(json!({ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }))
    }

    /// A stream chunk: a piece of text, or the closing chunk with the finish reason.
    pub fn chunk(&self, text: &str, finish: Option<FinishReason>) -> Value {
        let reason = finish.map(FinishReason::as_str);
        let choice = match (self.endpoint, finish) {
            (Endpoint::Chat, None) => json!({ "index": 0, "delta": { "content": text }, "logprobs": null, "finish_reason": null }),
            (Endpoint::Chat, Some(_)) => json!({ "index": 0, "delta": {}, "logprobs": null, "finish_reason": reason }),
            (Endpoint::Completion, _) => json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": reason }),
        };
        self.chunk_with(choice)
    }

    /// A chat stream chunk with a piece of the model's thoughts: `delta.reasoning_content`.
    pub fn reasoning_chunk(&self, text: &str) -> Value {
        self.chunk_with(json!({ "index": 0, "delta": { "reasoning_content": text }, "logprobs": null, "finish_reason": null }))
    }

    /// The last chunk when `stream_options.include_usage` is set: no choices, the usage.
    pub fn usage_chunk(&self, f: &Finished) -> Value {
        let mut c = self.chunk_with(Value::Null);
        c["choices"] = json!([]);
        c["usage"] = usage(f);
        c
    }

    fn chunk_with(&self, choice: Value) -> Value {
        let mut c = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }
}

fn usage(f: &Finished) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let f = Finished { reason: FinishReason::Length, prompt_tokens: 3, completion_tokens: 2 };
        let m = Meta::new(Endpoint::Chat, "m".into(), false);
        let r = m.response("hi", "", &f);
        assert_eq!(r["object"], "chat.completion");
        assert_eq!(r["choices"][0]["message"]["content"], "hi");
        assert_eq!(r["choices"][0]["finish_reason"], "length");
        assert_eq!(r["usage"]["total_tokens"], 5);
        assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(m.chunk("x", None)["choices"][0]["delta"]["content"], "x");
        assert_eq!(m.chunk("", Some(FinishReason::Stop))["choices"][0]["finish_reason"], "stop");
        let m = Meta::new(Endpoint::Completion, "m".into(), true);
        assert_eq!(m.chunk("x", None)["choices"][0]["text"], "x");
        assert!(m.chunk("x", None).as_object().unwrap().contains_key("usage"));
        let u = m.usage_chunk(&f);
        assert_eq!((u["choices"].as_array().unwrap().len(), &u["usage"]["prompt_tokens"]), (0, &json!(3)));
    }

    #[test]
    fn detections_in_answers_about_an_image() {
        let f = Finished { reason: FinishReason::Stop, prompt_tokens: 3, completion_tokens: 9 };
        let mut m = Meta::new(Endpoint::Chat, "m".into(), false);
        let text = "<loc0256><loc0000><loc0512><loc1024> cat ; <loc0000><loc0512><loc1024><loc1024> dog";
        // Without an image, or without location tokens, there is no `detections`.
        assert!(m.response(text, "", &f)["choices"][0]["message"].get("detections").is_none());
        m.image_size = Some((200, 100));
        assert!(m.response("a cat", "", &f)["choices"][0]["message"].get("detections").is_none());
        let r = m.response(text, "", &f);
        let d = &r["choices"][0]["message"]["detections"];
        assert_eq!(d, &json!([{"label": "cat", "box": [0.0, 25.0, 200.0, 50.0]}, {"label": "dog", "box": [100.0, 0.0, 200.0, 100.0]}]), "{r}");
        assert_eq!(r["choices"][0]["message"]["content"], text);
    }
}

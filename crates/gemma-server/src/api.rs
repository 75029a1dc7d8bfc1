//! OpenAI request bodies, as clients send them, and their validation into a scheduler [`Job`].
//!
//! Fields, defaults and ranges follow OpenAI's API reference: `temperature` in [0, 2] (default 1), `top_p`
//! in (0, 1] (default 1), penalties in [-2, 2], at most 4 `stop` strings, `n` = 1. Two extensions take the
//! CLI's sampler options: `top_k` (0 = off) and `min_p` (0 = off), plus `repeat_penalty` (1 = off); they are
//! off unless given, so a client that sends only OpenAI fields gets OpenAI's semantics. Unknown fields are
//! ignored, as OpenAI ignores them; fields this server cannot honour (`logprobs`, `tools`, `n` > 1, ...)
//! are refused with a 400 rather than silently dropped.

use gemma::runtime::SamplerConfig;
use gemma::tokenizer::{ChatTemplate, FimTokens, Message, Tokenizer};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// Fields shared by `/v1/chat/completions` and `/v1/completions`.
#[derive(Debug, Default, Deserialize)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<StopParam>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logit_bias: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopParam {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// The newer name of `max_tokens` for chat.
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub tools: Option<Vec<Value>>,
    pub response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
}

/// A message's content: a string, or a list of parts of which only text parts are understood.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptParam,
    /// Text after the completion: turns the request into CodeGemma fill-in-the-middle.
    pub suffix: Option<String>,
    pub echo: Option<bool>,
    pub best_of: Option<i64>,
    pub logprobs: Option<Value>,
}

/// `prompt`: a string or token ids, alone or in a list of one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptParam {
    Text(String),
    Ids(Vec<i64>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<i64>>),
}

/// A request body: the endpoint's own fields and the shared ones.
#[derive(Debug)]
pub struct Request<T> {
    pub body: T,
    pub common: CommonParams,
}

/// Parse a JSON body; errors name the field at fault. (The shared fields are read in a second pass over the
/// same value rather than with `#[serde(flatten)]`, which would lose the field names in type errors.)
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<Request<T>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    Ok(Request { body: from_value(&value)?, common: from_value(&value)? })
}

fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is reported at its parent; name the field itself.
        let param = match inner.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            Some(f) if path == "." => f.to_string(),
            Some(f) => format!("{path}.{f}"),
            None => path,
        };
        let inner = inner.replace("data did not match any variant of untagged enum", "unexpected type for");
        ApiError::invalid_param(param.clone(), format!("invalid `{param}`: {inner}"))
    })
}

/// What the server knows that validation needs.
pub struct Limits<'a> {
    pub tokenizer: &'a Tokenizer,
    pub template: &'a ChatTemplate,
    /// Positions per sequence.
    pub ctx: usize,
    /// The model's vocabulary size (token ids in a prompt must be below it).
    pub vocab: usize,
    /// The model's stop ids.
    pub stop_ids: &'a [u32],
}

/// A validated request: the job's content and how to answer.
#[derive(Debug)]
pub struct Prepared {
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    pub max_tokens: usize,
    pub stop_strings: Vec<String>,
    pub stop_ids: Vec<u32>,
    pub stream: bool,
    pub include_usage: bool,
    /// The model name to echo back.
    pub model: Option<String>,
}

impl Request<ChatRequest> {
    pub fn prepare(self, l: &Limits) -> Result<Prepared, ApiError> {
        let Request { body: req, common } = self;
        if req.logprobs == Some(true) {
            return Err(unsupported("logprobs"));
        }
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(unsupported("tools"));
        }
        if let Some(f) = &req.response_format {
            if f.get("type").and_then(Value::as_str) != Some("text") {
                return Err(ApiError::invalid_param("response_format", "only {\"type\": \"text\"} is supported"));
            }
        }
        if req.messages.is_empty() {
            return Err(ApiError::invalid_param("messages", "`messages` must hold at least one message"));
        }
        let messages = req.messages.iter().enumerate().map(|(i, m)| to_message(i, m)).collect::<Result<Vec<_>, _>>()?;
        let prompt = l
            .tokenizer
            .encode_chat(l.template, &messages)
            .map_err(|e| ApiError::invalid_param("messages", format!("the chat template refused the conversation: {e}")))?;
        let max_tokens = match (req.max_completion_tokens, common.max_tokens) {
            (Some(m), _) => Some(("max_completion_tokens", m)),
            (None, Some(m)) => Some(("max_tokens", m)),
            (None, None) => None,
        };
        // Chat's default, as OpenAI's: until the reply ends or the context is full.
        let prompt = Prompt { ids: prompt, param: "messages", stop_ids: l.stop_ids.to_vec(), max_tokens, default_max: usize::MAX };
        prepare_common(common, prompt, l)
    }
}

impl Request<CompletionRequest> {
    pub fn prepare(self, l: &Limits) -> Result<Prepared, ApiError> {
        let Request { body: req, common } = self;
        if req.echo == Some(true) {
            return Err(unsupported("echo"));
        }
        if req.best_of.is_some_and(|b| b != 1) {
            return Err(unsupported("best_of"));
        }
        if req.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(unsupported("logprobs"));
        }
        let mut stop_ids = l.stop_ids.to_vec();
        let prompt = match (req.prompt, req.suffix) {
            (prompt, Some(suffix)) => {
                let prefix = match prompt {
                    PromptParam::Text(t) => t,
                    PromptParam::Texts(mut t) if t.len() == 1 => t.remove(0),
                    _ => return Err(ApiError::invalid_param("prompt", "with `suffix`, `prompt` must be one string (the code before the gap)")),
                };
                let fim = FimTokens::of(l.tokenizer).map_err(|e| ApiError::invalid_param("suffix", e.to_string()))?;
                stop_ids.extend(fim.stop_ids());
                fim.prompt(l.tokenizer, &prefix, &suffix)
            }
            (PromptParam::Text(t), None) => l.tokenizer.encode(&t, l.tokenizer.default_options()),
            (PromptParam::Texts(mut t), None) if t.len() == 1 => l.tokenizer.encode(&t.remove(0), l.tokenizer.default_options()),
            (PromptParam::Ids(ids), None) => check_ids(&ids, l.vocab)?,
            (PromptParam::IdLists(mut lists), None) if lists.len() == 1 => check_ids(&lists.remove(0), l.vocab)?,
            _ => return Err(ApiError::invalid_param("prompt", "only one prompt per request is supported")),
        };
        // Legacy completions default to 16 tokens, as OpenAI's.
        let max_tokens = common.max_tokens.map(|m| ("max_tokens", m));
        let prompt = Prompt { ids: prompt, param: "prompt", stop_ids, max_tokens, default_max: 16 };
        prepare_common(common, prompt, l)
    }
}

fn unsupported(field: &str) -> ApiError {
    ApiError::invalid_param(field, format!("`{field}` is not supported by this server"))
}

fn to_message(i: usize, m: &ChatMessage) -> Result<Message, ApiError> {
    let param = |f: &str| format!("messages[{i}].{f}");
    let role = match m.role.as_str() {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        other => return Err(ApiError::invalid_param(param("role"), format!("unsupported role `{other}`: use system, user or assistant"))),
    };
    let content = match &m.content {
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => text.push_str(t),
                    _ => return Err(ApiError::invalid_param(param("content"), format!("unsupported content part of type `{}`: only text", p.kind))),
                }
            }
            text
        }
        None => return Err(ApiError::invalid_param(param("content"), "every message needs a `content`")),
    };
    Ok(Message::new(role, content))
}

fn check_ids(ids: &[i64], vocab: usize) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .map(|&i| {
            u32::try_from(i)
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| ApiError::invalid_param("prompt", format!("token id {i} is outside the vocabulary (size {vocab})")))
        })
        .collect()
}

/// What an endpoint built from its own fields: the prompt and what it implies for the shared ones.
struct Prompt {
    ids: Vec<u32>,
    /// The field errors about the prompt name.
    param: &'static str,
    stop_ids: Vec<u32>,
    /// The token budget asked for, with the field that asked.
    max_tokens: Option<(&'static str, i64)>,
    /// The budget when none is asked for (capped by the context).
    default_max: usize,
}

/// Validate the shared fields against the prompt and the context, and build the sampler.
fn prepare_common(c: CommonParams, p: Prompt, l: &Limits) -> Result<Prepared, ApiError> {
    if c.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid_param("n", "only n = 1 is supported"));
    }
    if c.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(unsupported("logit_bias"));
    }
    if p.ids.is_empty() {
        return Err(ApiError::invalid_param(p.param, "the prompt is empty"));
    }
    if p.ids.len() >= l.ctx {
        return Err(context_exceeded(
            p.param,
            format!("the prompt is {} tokens, but the context is {} (with room for at least one generated token)", p.ids.len(), l.ctx),
        ));
    }
    let room = l.ctx - p.ids.len();
    let max_tokens = match p.max_tokens {
        None => p.default_max.min(room),
        Some((name, m)) if m < 1 => return Err(ApiError::invalid_param(name, format!("`{name}` must be at least 1, got {m}"))),
        Some((name, m)) if m as u64 > room as u64 => {
            return Err(context_exceeded(
                name,
                format!(
                    "the context is {} tokens, but {} were requested ({} in the prompt, {m} to generate); lower `{name}` to at most {room}",
                    l.ctx,
                    p.ids.len() as u64 + m as u64,
                    p.ids.len()
                ),
            ))
        }
        Some((_, m)) => m as usize,
    };
    let sampler = sampler_config(&c, l.ctx)?;
    let stop_strings = match c.stop {
        None => Vec::new(),
        Some(StopParam::One(s)) => vec![s],
        Some(StopParam::Many(v)) if v.len() <= 4 => v,
        Some(StopParam::Many(_)) => return Err(ApiError::invalid_param("stop", "at most 4 stop strings")),
    };
    Ok(Prepared {
        prompt: p.ids,
        sampler,
        max_tokens,
        stop_strings,
        stop_ids: p.stop_ids,
        stream: c.stream.unwrap_or(false),
        include_usage: c.stream_options.is_some_and(|o| o.include_usage),
        model: c.model,
    })
}

fn context_exceeded(param: &str, message: String) -> ApiError {
    ApiError::invalid_param(param, message).with_code("context_length_exceeded")
}

/// The sampler a request asks for; every field checked against its range.
fn sampler_config(c: &CommonParams, ctx: usize) -> Result<SamplerConfig, ApiError> {
    let ranged = |name: &str, v: Option<f64>, default: f64, ok: fn(f64) -> bool, range: &str| -> Result<f32, ApiError> {
        match v {
            None => Ok(default as f32),
            Some(x) if x.is_finite() && ok(x) => Ok(x as f32),
            Some(x) => Err(ApiError::invalid_param(name, format!("`{name}` must be in {range}, got {x}"))),
        }
    };
    let top_k = match c.top_k {
        None => 0,
        Some(k) if k >= 0 => k as usize,
        Some(k) => return Err(ApiError::invalid_param("top_k", format!("`top_k` must be >= 0 (0 = off), got {k}"))),
    };
    let config = SamplerConfig {
        temperature: ranged("temperature", c.temperature, 1.0, |x| (0.0..=2.0).contains(&x), "[0, 2]")?,
        top_p: ranged("top_p", c.top_p, 1.0, |x| x > 0.0 && x <= 1.0, "(0, 1]")?,
        min_p: ranged("min_p", c.min_p, 0.0, |x| (0.0..=1.0).contains(&x), "[0, 1]")?,
        repeat_penalty: ranged("repeat_penalty", c.repeat_penalty, 1.0, |x| x > 0.0, "(0, inf)")?,
        presence_penalty: ranged("presence_penalty", c.presence_penalty, 0.0, |x| (-2.0..=2.0).contains(&x), "[-2, 2]")?,
        frequency_penalty: ranged("frequency_penalty", c.frequency_penalty, 0.0, |x| (-2.0..=2.0).contains(&x), "[-2, 2]")?,
        top_k,
        // OpenAI's penalties count every token so far, not a recent window.
        repeat_last_n: ctx,
        seed: c.seed.map(|s| s as u64).unwrap_or_else(random_seed),
    };
    // The ranges above are at least as strict as the sampler's own; this only guards against drift.
    config.validate().map_err(ApiError::invalid)?;
    Ok(config)
}

/// A seed for requests that give none: OpenAI's sampling is not reproducible without one.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse::<ChatRequest>(b"{\"messages\": [], \"temperature\": \"hot\"}").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"), "{e:?}");
        let e = parse::<ChatRequest>(b"{\"model\": \"x\"}").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"), "{e:?}");
        assert!(e.message.contains("missing field"), "{e:?}");
        let e = parse::<ChatRequest>(b"{\"messages\": [{\"role\": \"user\"}, {\"content\": \"x\"}]}").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[1].role"), "{e:?}");
        let e = parse::<CompletionRequest>(b"{\"prompt\": {\"a\": 1}}").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"), "{e:?}");
        let e = parse::<CompletionRequest>(b"{\"prompt\": \"x\",").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e:?}");
        assert!(parse::<CompletionRequest>(b"[1]").is_err());
    }

    #[test]
    fn sampler_ranges() {
        let c = |f: fn(&mut CommonParams)| {
            let mut p = CommonParams::default();
            f(&mut p);
            sampler_config(&p, 100)
        };
        assert_eq!(c(|p| p.temperature = Some(2.5)).unwrap_err().param.as_deref(), Some("temperature"));
        assert_eq!(c(|p| p.top_p = Some(0.0)).unwrap_err().param.as_deref(), Some("top_p"));
        assert_eq!(c(|p| p.top_k = Some(-1)).unwrap_err().param.as_deref(), Some("top_k"));
        assert_eq!(c(|p| p.presence_penalty = Some(-2.5)).unwrap_err().param.as_deref(), Some("presence_penalty"));
        let s = c(|p| {
            p.temperature = Some(0.0);
            p.seed = Some(-1);
        })
        .unwrap();
        assert_eq!((s.temperature, s.top_k, s.top_p, s.min_p, s.seed), (0.0, 0, 1.0, 0.0, u64::MAX));
    }
}

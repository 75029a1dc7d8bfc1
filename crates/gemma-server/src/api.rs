//! OpenAI request bodies, as clients send them, and their validation into a scheduler [`Job`].
//!
//! Fields and ranges follow OpenAI's API reference: `temperature` in [0, 2], `top_p` in (0, 1], penalties in
//! [-2, 2], at most 4 `stop` strings, `n` = 1. Three extensions take the CLI's sampler options: `top_k`
//! (0 = off), `min_p` (0 = off) and `repeat_penalty` (1 = off). A field the request leaves out takes the
//! server's [`Defaults`]: the sampling the model recommends (`gemma serve` reads `generation_config.json` or
//! the GGUF's `general.sampling.*`), else the CLI's (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), and a
//! length limit (a chat answer 1024 tokens, a completion 256, as `gemma chat` and `gemma run`), never more
//! than the context holds. A field given explicitly always wins. Unknown fields are ignored, as OpenAI
//! ignores them; fields this server cannot honour (`logprobs`, `tools`, `n` > 1, ...) are refused with a 400
//! rather than silently dropped.
//!
//! Images: a chat message's content may hold `{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`
//! parts (OpenAI's shape; `detail` is accepted and ignored). Only inline `data:` URLs with base64 data are
//! read: this server fetches nothing, neither remote URLs nor file paths. The image is decoded (PNG, JPEG or
//! WebP) and preprocessed here, on the HTTP side, so that the scheduler thread only runs the vision encoder.
//! Which models take images, and how the prompt is laid out, is told by [`ChatRequest`]'s `prepare`. Parts
//! with the same data are decoded and encoded once per request.

use std::sync::Arc;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use gemma::model::config::{Projector, VisionConfig};
use gemma::runtime::image::decode_image;
use gemma::runtime::multimodal::{gemma3_prompt, model_pixels, paligemma_prompt};
use gemma::runtime::SamplerConfig;
use gemma::tokenizer::{ChatTemplate, FimTokens, Message, Tokenizer};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::scheduler::ImageInput;

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
    /// Variables for the chat template, as vLLM's and llama.cpp's servers take them; only `enable_thinking`
    /// (Gemma 4: think before answering) is honoured.
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
}

/// A message's content: a string, or a list of parts (text and images).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// `{"type": "text", "text": ...}` or `{"type": "image_url", "image_url": {"url": ..., "detail": ...}}`.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub image_url: Option<ImageUrl>,
}

#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    /// OpenAI's `auto`/`low`/`high`: the model's processor decides the resolution, so it is ignored.
    pub detail: Option<String>,
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

/// What a request gets for the fields it leaves out. `Default` is the CLI's: `gemma run`'s sampler, and the
/// lengths of `gemma chat -n` and `gemma run -n`.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    /// `max_tokens` of a chat answer.
    pub chat_max_tokens: usize,
    /// `max_tokens` of a completion.
    pub completion_max_tokens: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        let s = SamplerConfig::default();
        Defaults {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            chat_max_tokens: 1024,
            completion_max_tokens: 256,
        }
    }
}

impl std::fmt::Display for Defaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "temperature {}, top_k {}, top_p {}, min_p {}, repeat_penalty {}, max_tokens {} (chat) / {} (completions)",
            self.temperature, self.top_k, self.top_p, self.min_p, self.repeat_penalty, self.chat_max_tokens, self.completion_max_tokens
        )
    }
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
    /// The model's vision tower, if it has one.
    pub vision: Option<&'a VisionConfig>,
    /// Values for omitted fields.
    pub defaults: &'a Defaults,
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
    /// The request's images in prompt order, decoded and preprocessed for the vision encoder.
    pub images: Vec<ImageInput>,
    /// PaliGemma's image's size in pixels (width, height), for the boxes of its answer.
    pub image_size: Option<(u32, u32)>,
    /// A chat answer: Gemma 4's thoughts go to `reasoning_content`, not into the text.
    pub split_thoughts: bool,
}

impl Request<ChatRequest> {
    /// The conversation as a prompt: through the model's chat template, or, with an image, as the model's
    /// processor lays it out.
    ///
    /// Gemma 3 (a checkpoint with its vision tower, or a GGUF with `--mmproj`): a message's image parts go
    /// through the chat template as `<start_of_image>` where they stand among its text parts (each text part
    /// trimmed, as Gemma 3's template trims them), then each `<start_of_image>` is expanded to the image's
    /// block of soft tokens as `Gemma3Processor` does; any number of images, in any messages. A text part
    /// may not itself hold `<start_of_image>` (it would stand for an image that was not sent).
    ///
    /// PaliGemma has no chat template: it is a single-turn task model trained on prompts such as
    /// `caption en`, `detect cat`, `answer en what is this?` after exactly one image. So a request with an
    /// image takes exactly one (a 400 otherwise), the last message must be the user's, and the text parts of
    /// that message are the task prompt, laid out by `paligemma_prompt` (image placeholders, `<bos>`, the
    /// prompt, `\n`: the prefix, which attends bidirectionally) instead of the template; earlier messages have
    /// no place in that layout and are not part of the prompt. A chat request without an image cannot be laid
    /// out for PaliGemma and is refused (raw text goes through `/v1/completions`). An image for a text-only
    /// model is a 400 saying so.
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
        let template = l.template.clone().with_thinking(enable_thinking(req.chat_template_kwargs.as_ref())?);
        let l = &Limits { template: &template, ..*l };
        let mut images = Vec::new();
        let gemma3 = l.vision.is_some_and(|v| v.projector == Projector::Gemma3);
        let messages =
            req.messages.iter().enumerate().map(|(i, m)| to_message(i, m, &mut images, gemma3)).collect::<Result<Vec<_>, _>>()?;
        let paligemma = l.vision.filter(|v| v.projector == Projector::PaliGemma);
        let (prompt, images, image_size) = match (images.is_empty(), paligemma) {
            (true, None) => {
                let ids = l
                    .tokenizer
                    .encode_chat(l.template, &messages)
                    .map_err(|e| ApiError::invalid_param("messages", format!("the chat template refused the conversation: {e}")))?;
                (ids, Vec::new(), None)
            }
            (true, Some(_)) => {
                return Err(ApiError::invalid_param(
                    "messages",
                    "this model is PaliGemma, which answers about an image and has no chat template: send one image_url part with the task \
                     (e.g. `caption en`), or raw text to /v1/completions",
                ))
            }
            (false, Some(v)) => {
                let (ids, image, size) = paligemma_image_prompt(l, v, &messages, images)?;
                (ids, vec![image], Some(size))
            }
            (false, None) => {
                let (ids, images) = gemma3_image_prompt(l, &messages, images)?;
                (ids, images, None)
            }
        };
        let max_tokens = match (req.max_completion_tokens, common.max_tokens) {
            (Some(m), _) => Some(("max_completion_tokens", m)),
            (None, Some(m)) => Some(("max_tokens", m)),
            (None, None) => None,
        };
        // Chat's default, as OpenAI's: until the reply ends or the context is full.
        let prompt = Prompt { ids: prompt, param: "messages", stop_ids: l.stop_ids.to_vec(), max_tokens, default_max: l.defaults.chat_max_tokens };
        let mut p = prepare_common(common, prompt, l)?;
        p.images = images;
        p.image_size = image_size;
        p.split_thoughts = true;
        Ok(p)
    }
}

/// An image part as sent: where it is, and its data URL's payload (still base64).
struct ImagePart<'a> {
    /// `messages[i].content[j]`, the name errors about it give.
    param: String,
    base64: &'a str,
}

/// An image part, decoded and preprocessed for `v`'s encoder: its pixels (shared with any earlier part of the
/// request with the same data, so that the scheduler encodes it once) and its size (width, height).
fn image_pixels(
    v: &VisionConfig,
    part: &ImagePart,
    seen: &mut Vec<(String, Arc<Vec<f32>>, (u32, u32))>,
) -> Result<(Arc<Vec<f32>>, (u32, u32)), ApiError> {
    if let Some((_, pixels, size)) = seen.iter().find(|(data, _, _)| data == part.base64) {
        return Ok((pixels.clone(), *size));
    }
    let bytes = decode_base64(part.base64).map_err(|e| {
        ApiError::invalid_param(part.param.clone(), format!("{}: the data URL's base64 data does not decode: {e}", part.param))
    })?;
    let image = decode_image(&bytes, &part.param).map_err(|e| ApiError::invalid_param(part.param.clone(), e.to_string()))?;
    drop(bytes);
    let (pixels, size) = (Arc::new(model_pixels(&image, v)), (image.width(), image.height()));
    seen.push((part.base64.to_string(), pixels.clone(), size));
    Ok((pixels, size))
}

/// PaliGemma's prompt for a request with images (see `prepare` of `Request<ChatRequest>`): the checks, then
/// the image decoded and preprocessed, and the prompt laid out around it; with the image's size.
fn paligemma_image_prompt(
    l: &Limits,
    v: &VisionConfig,
    messages: &[Message],
    images: Vec<ImagePart>,
) -> Result<(Vec<u32>, ImageInput, (u32, u32)), ApiError> {
    if images.len() != 1 {
        return Err(ApiError::invalid_param(
            "messages",
            format!("PaliGemma takes exactly one image per request (it was trained on one); this request has {}", images.len()),
        ));
    }
    let last = messages.last().expect("at least one message");
    if last.role != "user" {
        return Err(ApiError::invalid_param(
            format!("messages[{}].role", messages.len() - 1),
            "with an image, the last message must be the user's: its text is PaliGemma's task prompt (e.g. `caption en`)",
        ));
    }
    let (pixels, size) = image_pixels(v, &images[0], &mut Vec::new())?;
    let p = paligemma_prompt(l.tokenizer, v, 1, last.content.trim_end(), None)
        .map_err(|e| ApiError::invalid_param("messages", format!("cannot lay out PaliGemma's prompt: {e}")))?;
    let input = ImageInput { pixels, at: p.image_at[0], span: p.bidirectional[0].clone() };
    Ok((p.ids, input, size))
}

/// Gemma 3's prompt for a request with images (see `prepare` of `Request<ChatRequest>`): the conversation
/// through the chat template, each image's `<start_of_image>` expanded to its block; each image decoded and
/// preprocessed once, whatever number of parts carry it.
fn gemma3_image_prompt(l: &Limits, messages: &[Message], images: Vec<ImagePart>) -> Result<(Vec<u32>, Vec<ImageInput>), ApiError> {
    let Some(v) = l.vision else {
        return Err(ApiError::invalid_param(images[0].param.clone(), "this model is text-only (it has no vision tower): it cannot take images"));
    };
    let rendered = l
        .template
        .render(messages, true)
        .map_err(|e| ApiError::invalid_param("messages", format!("the chat template refused the conversation: {e}")))?;
    let p = gemma3_prompt(l.tokenizer, v, &rendered)
        .map_err(|e| ApiError::invalid_param("messages", format!("cannot lay out Gemma 3's prompt: {e}")))?;
    if p.image_at.len() != images.len() {
        return Err(ApiError::invalid_param(
            "messages",
            format!(
                "the conversation holds {} `<start_of_image>` for {} image part(s): `<start_of_image>` in a message's text stands for an \
                 image; send images as image_url parts only",
                p.image_at.len(),
                images.len()
            ),
        ));
    }
    let mut seen = Vec::new();
    let mut inputs = Vec::with_capacity(images.len());
    for (part, span) in images.iter().zip(&p.bidirectional) {
        let (pixels, _) = image_pixels(v, part, &mut seen)?;
        inputs.push(ImageInput { pixels, at: span.start, span: span.clone() });
    }
    Ok((p.ids, inputs))
}

/// Standard base64, padded or not, with any ASCII whitespace (line breaks of wrapped data) left out.
fn decode_base64(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if data.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        return ENGINE.decode(compact);
    }
    ENGINE.decode(data)
}

/// The base64 payload of `data:[<media type>][;parameters];base64,<data>`. Anything else, a remote URL or a
/// path above all, is refused: the server fetches nothing.
fn data_url_payload<'a>(url: &'a str, param: &str) -> Result<&'a str, ApiError> {
    let refuse = |why: String| ApiError::invalid_param(param.to_string(), why);
    let Some(rest) = url.get(..5).filter(|s| s.eq_ignore_ascii_case("data:")).map(|_| &url[5..]) else {
        let shown: String = url.chars().take(60).collect();
        return Err(refuse(format!(
            "`{shown}` is not a data: URL: remote URLs and file paths are not fetched by this server; send the image inline as \
             a data: URL (data:image/png;base64,...)"
        )));
    };
    let Some((head, payload)) = rest.split_once(',') else {
        return Err(refuse("a data: URL needs a comma before its data (data:image/png;base64,...)".into()));
    };
    if !head.split(';').skip(1).any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err(refuse("only base64 data: URLs are read (data:image/png;base64,...)".into()));
    }
    Ok(payload)
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
        let prompt = Prompt { ids: prompt, param: "prompt", stop_ids, max_tokens, default_max: l.defaults.completion_max_tokens };
        prepare_common(common, prompt, l)
    }
}

/// Where an image part stands in a Gemma 3 message's text (the template's rendering of an image part).
const IMAGE_MARKER: &str = "<start_of_image>";

/// `chat_template_kwargs.enable_thinking` (default off); any other variable is refused, naming it.
fn enable_thinking(kwargs: Option<&serde_json::Map<String, Value>>) -> Result<bool, ApiError> {
    let Some(kwargs) = kwargs else { return Ok(false) };
    let mut on = false;
    for (k, v) in kwargs {
        let param = format!("chat_template_kwargs.{k}");
        match (k.as_str(), v) {
            ("enable_thinking", Value::Bool(b)) => on = *b,
            ("enable_thinking", _) => return Err(ApiError::invalid_param(param, "`enable_thinking` must be true or false")),
            _ => return Err(ApiError::invalid_param(param.clone(), format!("`{param}` is not supported: only `enable_thinking` is"))),
        }
    }
    Ok(on)
}

fn unsupported(field: &str) -> ApiError {
    ApiError::invalid_param(field, format!("`{field}` is not supported by this server"))
}

/// A message for the chat template; its image parts, if any, are added to `images`. With `image_markers`
/// (Gemma 3), an image part stands in the text as `<start_of_image>` and a message with images has each text
/// part trimmed, as Gemma 3's template renders a list of parts; a text part may not hold the marker itself.
fn to_message<'a>(i: usize, m: &'a ChatMessage, images: &mut Vec<ImagePart<'a>>, image_markers: bool) -> Result<Message, ApiError> {
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
            let with_images = image_markers && parts.iter().any(|p| p.kind == "image_url");
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), &p.text, &p.image_url) {
                    ("text", Some(t), _) if image_markers && t.contains(IMAGE_MARKER) => {
                        return Err(ApiError::invalid_param(
                            param(&format!("content[{j}].text")),
                            "the text holds `<start_of_image>`, which stands for an image: send images as image_url parts",
                        ))
                    }
                    ("text", Some(t), _) if with_images => text.push_str(t.trim()),
                    ("text", Some(t), _) => text.push_str(t),
                    ("image_url", _, Some(u)) => {
                        let at = param(&format!("content[{j}]"));
                        let base64 = data_url_payload(&u.url, &format!("{at}.image_url.url"))?;
                        images.push(ImagePart { param: at, base64 });
                        if image_markers {
                            text.push_str(IMAGE_MARKER);
                        }
                    }
                    ("image_url", _, None) => {
                        return Err(ApiError::invalid_param(
                            param(&format!("content[{j}].image_url")),
                            "an image_url part needs `image_url`: {\"url\": \"data:image/png;base64,...\"}",
                        ))
                    }
                    _ => {
                        return Err(ApiError::invalid_param(
                            param("content"),
                            format!("unsupported content part of type `{}`: only text and image_url", p.kind),
                        ))
                    }
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
    let sampler = sampler_config(&c, l.ctx, l.defaults)?;
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
        images: Vec::new(),
        image_size: None,
        split_thoughts: false,
    })
}

fn context_exceeded(param: &str, message: String) -> ApiError {
    ApiError::invalid_param(param, message).with_code("context_length_exceeded")
}

/// The sampler a request asks for; every field checked against its range.
fn sampler_config(c: &CommonParams, ctx: usize, d: &Defaults) -> Result<SamplerConfig, ApiError> {
    let ranged = |name: &str, v: Option<f64>, default: f64, ok: fn(f64) -> bool, range: &str| -> Result<f32, ApiError> {
        match v {
            None => Ok(default as f32),
            Some(x) if x.is_finite() && ok(x) => Ok(x as f32),
            Some(x) => Err(ApiError::invalid_param(name, format!("`{name}` must be in {range}, got {x}"))),
        }
    };
    let top_k = match c.top_k {
        None => d.top_k,
        Some(k) if k >= 0 => k as usize,
        Some(k) => return Err(ApiError::invalid_param("top_k", format!("`top_k` must be >= 0 (0 = off), got {k}"))),
    };
    let config = SamplerConfig {
        temperature: ranged("temperature", c.temperature, d.temperature as f64, |x| (0.0..=2.0).contains(&x), "[0, 2]")?,
        top_p: ranged("top_p", c.top_p, d.top_p as f64, |x| x > 0.0 && x <= 1.0, "(0, 1]")?,
        min_p: ranged("min_p", c.min_p, d.min_p as f64, |x| (0.0..=1.0).contains(&x), "[0, 1]")?,
        repeat_penalty: ranged("repeat_penalty", c.repeat_penalty, d.repeat_penalty as f64, |x| x > 0.0, "(0, inf)")?,
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
    fn data_urls() {
        fn p(u: &str) -> Result<&str, String> {
            data_url_payload(u, "x").map_err(|e| e.message)
        }
        assert_eq!(p("data:image/png;base64,iVBO"), Ok("iVBO"));
        assert_eq!(p("DATA:image/jpeg;name=a.jpg;base64,/9j/"), Ok("/9j/"));
        assert_eq!(p("data:;base64,"), Ok(""));
        assert!(p("https://example.com/a.png").unwrap_err().contains("not fetched"));
        assert!(p("file:///tmp/a.png").unwrap_err().contains("not fetched"));
        assert!(p("data:image/png,raw").unwrap_err().contains("only base64"));
        assert!(p("data:image/png;base64").unwrap_err().contains("comma"));
        // Padded or not, wrapped or not.
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64("aGVs\r\nbG8=").unwrap(), b"hello");
        assert!(decode_base64("aGk*").is_err());
    }

    #[test]
    fn sampler_ranges() {
        let c = |f: fn(&mut CommonParams)| {
            let mut p = CommonParams::default();
            f(&mut p);
            sampler_config(&p, 100, &Defaults { top_k: 0, top_p: 1.0, min_p: 0.0, ..Defaults::default() })
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

    #[test]
    fn omitted_fields_take_the_defaults_given_ones_win() {
        let d = Defaults { temperature: 0.7, top_k: 64, top_p: 0.9, min_p: 0.1, repeat_penalty: 1.1, ..Defaults::default() };
        let s = sampler_config(&CommonParams::default(), 100, &d).unwrap();
        assert_eq!((s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty), (0.7, 64, 0.9, 0.1, 1.1));
        let given = CommonParams { temperature: Some(0.0), top_k: Some(0), top_p: Some(1.0), min_p: Some(0.0), repeat_penalty: Some(1.0), ..CommonParams::default() };
        let s = sampler_config(&given, 100, &d).unwrap();
        assert_eq!((s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty), (0.0, 0, 1.0, 0.0, 1.0));
    }
}

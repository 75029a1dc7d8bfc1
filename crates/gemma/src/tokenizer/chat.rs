//! Chat templates: the Jinja template a checkpoint ships (GGUF `tokenizer.chat_template`, or
//! `chat_template` in `tokenizer_config.json`), rendered with minijinja the way `transformers`'
//! `apply_chat_template` renders it, or Gemma's turn format when the checkpoint has none.
//!
//! Gemma's format:
//! ```text
//! <bos><start_of_turn>user
//! {system prompt}\n\n{first user message}<end_of_turn>
//! <start_of_turn>model
//! {reply}<end_of_turn>
//! <start_of_turn>model
//! ```
//! Gemma 1-3 have no system role: a leading system message is folded into the first user turn. Gemma 4
//! writes turns as `<|turn>user\n…<turn|>`, has a system turn and a thinking switch (`enable_thinking`,
//! [`ChatTemplate::with_thinking`]); its built-in format is `templates/gemma4.jinja`, used when a vocabulary
//! with Gemma 4's turn tokens ships no template.

use std::path::Path;

use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

/// One chat message. `role` is `system`, `user` or `assistant` (Gemma's templates write `assistant` as
/// `model`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: content.into() }
    }
}

/// A chat template with the special-token strings it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    /// Passed to the template as `enable_thinking` (Gemma 4: the model thinks in a thought channel first).
    thinking: bool,
}

/// Gemma 4's turn format, used when a checkpoint with Gemma 4's vocabulary ships no template; see the file.
const GEMMA4_TEMPLATE: &str = include_str!("templates/gemma4.jinja");

/// Gemma's turn format, used when a checkpoint ships no template. Written to render exactly what the
/// official Gemma 3 template renders for text conversations (the tests hold it to that); as there, the
/// system prompt is kept verbatim and the turns are trimmed.
const GEMMA_TEMPLATE: &str = "{{ bos_token }}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system = messages[0].content ~ '\n\n' -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = '' -%}
  {%- set turns = messages -%}
{%- endif -%}
{%- for m in turns -%}
  {%- if (m.role == 'user') != (loop.index0 is even) -%}
    {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
  {%- endif -%}
  {{ '<start_of_turn>' ~ ('model' if m.role == 'assistant' else m.role) ~ '\n' ~ (system if loop.first else '') }}
  {{- m.content | trim ~ '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

impl ChatTemplate {
    /// A template from its Jinja source.
    pub fn new(source: String, bos_token: String, eos_token: String) -> Self {
        ChatTemplate { source, bos_token, eos_token, thinking: false }
    }

    /// Gemma's built-in turn format.
    pub fn gemma(bos_token: String, eos_token: String) -> Self {
        ChatTemplate::new(GEMMA_TEMPLATE.to_string(), bos_token, eos_token)
    }

    /// Gemma 4's built-in turn format (`<|turn>role\n…<turn|>`, a system turn, the thinking switch).
    pub fn gemma4(bos_token: String, eos_token: String) -> Self {
        ChatTemplate::new(GEMMA4_TEMPLATE.to_string(), bos_token, eos_token)
    }

    /// The same template with `enable_thinking` set: Gemma 4's templates then ask the model to think first
    /// (`<|think|>` in the system turn) instead of opening its turn with an empty thought channel. Templates
    /// that do not read the variable are unaffected.
    pub fn with_thinking(mut self, on: bool) -> Self {
        self.thinking = on;
        self
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends with the opening of the model's
    /// turn. The result starts with the BOS string, so encode it with `add_bos: false` and special tokens
    /// parsed.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> crate::Result<String> {
        let env = environment();
        let err = |e: minijinja::Error| crate::Error::Tokenizer(format!("chat template: {e:#}"));
        let tmpl = env.template_from_str(&self.source).map_err(err)?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            enable_thinking => self.thinking,
        })
        .map_err(err)
    }
}

impl super::Tokenizer {
    /// The ids of a conversation rendered with `template`, ready for the model's reply: the template's text
    /// encoded with special tokens parsed (its turn markers are control tokens), starting with BOS exactly
    /// once whether or not the template writes it.
    pub fn encode_chat(&self, template: &ChatTemplate, messages: &[Message]) -> crate::Result<Vec<u32>> {
        let text = template.render(messages, true)?;
        let mut ids = self.encode(&text, super::EncodeOptions { add_bos: false, parse_special: true });
        if let Some(bos) = self.bos_id() {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }
}

/// A Jinja environment configured as `transformers` configures its own: blocks trimmed and left-stripped,
/// `raise_exception` available, and the Python `str`/`dict`/`list` methods templates call (`.strip()`,
/// `.split(x)`, `.startswith(x)`, `.get(k)`, `.items()`, ...: minijinja-contrib's pycompat).
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function("raise_exception", |msg: String| -> Result<Value, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env
}

/// The fields of `tokenizer_config.json` the tokenizer uses.
#[derive(Debug, Default)]
pub struct TokenizerConfig {
    pub chat_template: Option<String>,
    pub add_bos_token: Option<bool>,
}

/// Reads `chat_template` (a string, or a list of `{name, template}` of which `default` is taken) and
/// `add_bos_token` from a `tokenizer_config.json`.
pub fn read_tokenizer_config(path: &Path) -> crate::Result<TokenizerConfig> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| crate::Error::format(path, e.to_string()))?;
    let chat_template = match &json["chat_template"] {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .or(list.first())
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => return Err(crate::Error::config(path, "chat_template", "is neither a string nor a list of templates")),
    };
    Ok(TokenizerConfig { chat_template, add_bos_token: json["add_bos_token"].as_bool() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma() -> ChatTemplate {
        ChatTemplate::gemma("<bos>".into(), "<eos>".into())
    }

    #[test]
    fn builtin_gemma_format() {
        let msgs = [
            Message::new("system", "Be brief."),
            Message::new("user", " Hi! "),
            Message::new("assistant", "Hello."),
            Message::new("user", "Bye"),
        ];
        assert_eq!(
            gemma().render(&msgs, true).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(gemma().render(&msgs[1..2], false).unwrap(), "<bos><start_of_turn>user\nHi!<end_of_turn>\n");
    }

    #[test]
    fn roles_must_alternate() {
        let msgs = [Message::new("user", "a"), Message::new("user", "b")];
        let e = gemma().render(&msgs, true).unwrap_err().to_string();
        assert!(e.contains("alternate"), "{e}");
    }

    #[test]
    fn python_string_methods() {
        let t = ChatTemplate::new("{{ messages[0].content.strip().upper() }}".into(), String::new(), String::new());
        assert_eq!(t.render(&[Message::new("user", "  hi ")], false).unwrap(), "HI");
        // What Gemma 4's official template calls: str.split and dict.get.
        let t = ChatTemplate::new("{{ messages[0].content.split('|')[1] }}{{ messages[0].get('x', 'none') }}".into(), String::new(), String::new());
        assert_eq!(t.render(&[Message::new("user", "a|b")], false).unwrap(), "bnone");
    }

    fn gemma4() -> ChatTemplate {
        ChatTemplate::gemma4("<bos>".into(), "<eos>".into())
    }

    /// The published Gemma 4 format (google/gemma-4-*-it chat_template.jinja, 2026-07-09), written out by hand
    /// for a few conversations; tests/gemma4_chat.rs holds the built-in to transformers' rendering of it
    /// for many more.
    #[test]
    fn builtin_gemma4_format() {
        let msgs = [Message::new("user", " Hi! ")];
        assert_eq!(gemma4().render(&msgs, true).unwrap(), "<bos><|turn>user\nHi!<turn|>\n<|turn>model\n<|channel>thought\n<channel|>");
        assert_eq!(
            gemma4().with_thinking(true).render(&msgs, true).unwrap(),
            "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nHi!<turn|>\n<|turn>model\n"
        );
        let msgs = [
            Message::new("system", " Be brief. "),
            Message::new("user", "Hi"),
            Message::new("assistant", "<|channel>thought\nThey greet me.<channel|>Hello."),
            Message::new("user", "Bye"),
        ];
        assert_eq!(
            gemma4().with_thinking(true).render(&msgs, false).unwrap(),
            "<bos><|turn>system\n<|think|>\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\nHello.<turn|>\n\
             <|turn>user\nBye<turn|>\n"
        );
    }

    #[test]
    fn bad_template_is_an_error() {
        let t = ChatTemplate::new("{% for %}".into(), String::new(), String::new());
        assert!(t.render(&[], false).unwrap_err().to_string().starts_with("chat template:"));
    }
}

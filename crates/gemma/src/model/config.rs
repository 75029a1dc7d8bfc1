//! Model configuration in two stages, like a compiler's raw → validated arguments:
//! - [`RawConfig`]: what a checkpoint says, every field optional, filled from a Hugging Face `config.json`
//!   (legacy Hub keys or transformers-5 keys) or from GGUF metadata;
//! - [`Config`]: validated, with the family's documented defaults applied and every derived value computed
//!   once (query scale, per-layer attention window, per-layer RoPE). The decoder reads only `Config`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Error, Result};

/// The Gemma generation a checkpoint belongs to. It selects *defaults* for keys a file omits; behaviour is
/// driven by the resolved fields of [`Config`], never by the family directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Gemma,
    Gemma2,
    Gemma3,
}

impl Family {
    pub fn from_model_type(t: &str) -> Option<Family> {
        match t {
            "gemma" => Some(Family::Gemma),
            "gemma2" => Some(Family::Gemma2),
            "gemma3" | "gemma3_text" => Some(Family::Gemma3),
            _ => None,
        }
    }
    /// transformers' class-name prefix (`Gemma`, `Gemma2`, `Gemma3`).
    pub fn class_prefix(self) -> &'static str {
        match self {
            Family::Gemma => "Gemma",
            Family::Gemma2 => "Gemma2",
            Family::Gemma3 => "Gemma3",
        }
    }
}

/// Where a layer's attention may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionScope {
    /// Every earlier position.
    Global,
    /// The last `window` positions, the query's own included (key j is visible from query i iff i - j < window),
    /// as transformers' sliding-window mask and llama.cpp's standard SWA define it.
    Local { window: usize },
}

/// Rotary embedding parameters of one layer: `inv_freq[i] = 1 / (base^(2i/d) · linear_factor)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    pub base: f32,
    /// Linear position interpolation ("linear" `rope_scaling`): positions are divided by this factor.
    pub linear_factor: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSpec {
    pub scope: AttentionScope,
    pub rope: Rope,
}

/// The validated configuration: everything the decoder needs, nothing it must infer.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub family: Family,
    pub vocab_size: usize,
    /// Width of the residual stream (`hidden_size`).
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// 1 = multi-query (MQA), n_heads = multi-head (MHA), in between = grouped-query (GQA).
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Width of the GeGLU hidden layer (`intermediate_size`).
    pub ffn_dim: usize,
    /// Longest sequence the model was trained for (`max_position_embeddings`).
    pub context_len: usize,
    pub norm_eps: f32,
    /// Multiplies q·k: `query_pre_attn_scalar^-1/2` (Gemma 2/3) or `head_dim^-1/2` (Gemma 1).
    pub query_scale: f32,
    /// Attention scores are soft-capped `c·tanh(s/c)` before the mask (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Output logits are soft-capped (Gemma 2).
    pub final_softcap: Option<f32>,
    /// RMSNorm on each query and key head before RoPE (Gemma 3).
    pub qk_norm: bool,
    /// Norms after attention and after the MLP too, not only before ("sandwich", Gemma 2/3).
    pub sandwich_norms: bool,
    /// One entry per layer: attention window and RoPE.
    pub layers: Vec<LayerSpec>,
    pub tie_embeddings: bool,
    pub bos_id: u32,
    pub eos_ids: Vec<u32>,
    pub pad_id: u32,
}

impl Config {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
    pub fn attention_kind(&self) -> &'static str {
        match self.n_kv_heads {
            1 => "MQA",
            k if k == self.n_heads => "MHA",
            _ => "GQA",
        }
    }
    /// The largest attention window of any layer (None if some layer is global).
    pub fn max_window(&self) -> Option<usize> {
        self.layers.iter().try_fold(0, |m, l| match l.scope {
            AttentionScope::Local { window } => Some(m.max(window)),
            AttentionScope::Global => None,
        })
    }
}

/// One layer's attention type as `layer_types` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    Full,
    Sliding,
}

/// What a checkpoint says, before defaults and validation. `None` = the key is absent.
/// For soft-caps, `Some(None)` is an explicit `null` (no capping), which differs from absent (family default).
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub source: PathBuf,
    pub family: Option<Family>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub query_pre_attn_scalar: Option<f64>,
    pub attn_logit_softcapping: Option<Option<f64>>,
    pub final_logit_softcapping: Option<Option<f64>>,
    pub sliding_window: Option<usize>,
    pub sliding_window_pattern: Option<usize>,
    pub layer_types: Option<Vec<LayerType>>,
    /// RoPE of global (full-attention) layers.
    pub rope_global: Option<Rope>,
    /// RoPE of local (sliding) layers, where it differs (Gemma 3's `rope_local_base_freq`).
    pub rope_local: Option<Rope>,
    pub tie_word_embeddings: Option<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Option<Vec<u32>>,
    pub pad_token_id: Option<u32>,
}

/// Per-family defaults: transformers' `GemmaConfig`, `Gemma2Config` and `Gemma3TextConfig` constructor
/// defaults (transformers 4.50+/5.x), which is what transformers applies when a key is absent.
struct Defaults {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    max_position_embeddings: usize,
    rope_theta: f32,
    rope_local_base_freq: Option<f32>,
    query_pre_attn_scalar: Option<f64>,
    sliding_window: Option<usize>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
}

fn defaults(f: Family) -> Defaults {
    match f {
        Family::Gemma => Defaults {
            vocab_size: 256000,
            hidden_size: 3072,
            intermediate_size: 24576,
            num_hidden_layers: 28,
            num_attention_heads: 16,
            num_key_value_heads: 16,
            head_dim: 256,
            max_position_embeddings: 8192,
            rope_theta: 10000.0,
            rope_local_base_freq: None,
            query_pre_attn_scalar: None,
            sliding_window: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
        },
        Family::Gemma2 => Defaults {
            vocab_size: 256000,
            hidden_size: 2304,
            intermediate_size: 9216,
            num_hidden_layers: 26,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            head_dim: 256,
            max_position_embeddings: 8192,
            rope_theta: 10000.0,
            rope_local_base_freq: None,
            query_pre_attn_scalar: Some(256.0),
            sliding_window: Some(4096),
            attn_logit_softcapping: Some(50.0),
            final_logit_softcapping: Some(30.0),
        },
        Family::Gemma3 => Defaults {
            vocab_size: 262208,
            hidden_size: 2304,
            intermediate_size: 9216,
            num_hidden_layers: 26,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            head_dim: 256,
            max_position_embeddings: 131072,
            rope_theta: 1_000_000.0,
            rope_local_base_freq: Some(10000.0),
            query_pre_attn_scalar: Some(256.0),
            sliding_window: Some(4096),
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
        },
    }
}

impl Config {
    /// Read and validate a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Config> {
        Config::from_raw(RawConfig::from_hf_file(path)?)
    }

    /// Apply the family's defaults to what the checkpoint says, validate, and derive per-layer values.
    pub fn from_raw(raw: RawConfig) -> Result<Config> {
        let file = raw.source.clone();
        let err = |field: &str, what: String| Error::config(&file, field, what);
        let family = raw.family.ok_or_else(|| err("model_type", "missing".into()))?;
        let d = defaults(family);
        let n_layers = raw.num_hidden_layers.unwrap_or(d.num_hidden_layers);
        let n_heads = raw.num_attention_heads.unwrap_or(d.num_attention_heads);
        let n_kv_heads = raw.num_key_value_heads.unwrap_or(d.num_key_value_heads);
        let head_dim = raw.head_dim.unwrap_or(d.head_dim);
        let d_model = raw.hidden_size.unwrap_or(d.hidden_size);
        for (name, v) in [
            ("num_hidden_layers", n_layers),
            ("num_attention_heads", n_heads),
            ("num_key_value_heads", n_kv_heads),
            ("head_dim", head_dim),
            ("hidden_size", d_model),
        ] {
            if v == 0 {
                return Err(err(name, "must be positive".into()));
            }
        }
        if n_heads % n_kv_heads != 0 {
            return Err(err("num_key_value_heads", format!("{n_kv_heads} does not divide num_attention_heads = {n_heads}")));
        }
        if head_dim % 2 != 0 {
            return Err(err("head_dim", format!("{head_dim} is odd; RoPE rotates pairs of dimensions")));
        }
        let query_pre_attn_scalar = raw.query_pre_attn_scalar.or(d.query_pre_attn_scalar).unwrap_or(head_dim as f64);
        if !(query_pre_attn_scalar > 0.0) {
            return Err(err("query_pre_attn_scalar", format!("{query_pre_attn_scalar} must be positive")));
        }
        let softcap = |v: Option<Option<f64>>, default: Option<f64>, name: &str| -> Result<Option<f32>> {
            match v.unwrap_or(default) {
                Some(c) if !(c > 0.0) => Err(err(name, format!("{c} must be positive or null"))),
                c => Ok(c.map(|c| c as f32)),
            }
        };
        let attn_softcap = softcap(raw.attn_logit_softcapping, d.attn_logit_softcapping, "attn_logit_softcapping")?;
        let final_softcap = softcap(raw.final_logit_softcapping, d.final_logit_softcapping, "final_logit_softcapping")?;

        // Which layers slide: `layer_types` when given, else the family's pattern (Gemma 2 alternates starting
        // with a sliding layer; Gemma 3 has `sliding_window_pattern - 1` sliding layers then one global).
        let layer_types: Vec<LayerType> = match &raw.layer_types {
            Some(t) => {
                if t.len() != n_layers {
                    return Err(err("layer_types", format!("has {} entries for {n_layers} layers", t.len())));
                }
                t.clone()
            }
            None => (0..n_layers)
                .map(|i| match family {
                    Family::Gemma => LayerType::Full,
                    Family::Gemma2 => {
                        if i % 2 == 0 {
                            LayerType::Sliding
                        } else {
                            LayerType::Full
                        }
                    }
                    Family::Gemma3 => {
                        let p = raw.sliding_window_pattern.unwrap_or(6).max(1);
                        if (i + 1) % p == 0 {
                            LayerType::Full
                        } else {
                            LayerType::Sliding
                        }
                    }
                })
                .collect(),
        };
        let window = raw.sliding_window.or(d.sliding_window);
        let global_rope = raw.rope_global.unwrap_or(Rope { base: d.rope_theta, linear_factor: 1.0 });
        let local_rope = raw
            .rope_local
            .or(d.rope_local_base_freq.map(|base| Rope { base, linear_factor: 1.0 }))
            .unwrap_or(global_rope);
        let mut layers = Vec::with_capacity(n_layers);
        for (i, t) in layer_types.iter().enumerate() {
            layers.push(match t {
                LayerType::Full => LayerSpec { scope: AttentionScope::Global, rope: global_rope },
                LayerType::Sliding => {
                    let w = window.ok_or_else(|| err("sliding_window", format!("layer {i} is sliding but no window is given")))?;
                    if w == 0 {
                        return Err(err("sliding_window", "must be positive".into()));
                    }
                    LayerSpec { scope: AttentionScope::Local { window: w }, rope: local_rope }
                }
            });
        }
        for (name, r) in [("rope_theta", global_rope), ("rope_local_base_freq", local_rope)] {
            if !(r.base > 1.0) || !(r.linear_factor > 0.0) {
                return Err(err(name, format!("RoPE base {} / factor {} out of range", r.base, r.linear_factor)));
            }
        }
        let eps = raw.rms_norm_eps.unwrap_or(1e-6);
        if !(eps > 0.0 && eps < 1.0) {
            return Err(err("rms_norm_eps", format!("{eps} out of range")));
        }
        let vocab_size = raw.vocab_size.unwrap_or(d.vocab_size);
        Ok(Config {
            family,
            vocab_size,
            d_model,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: raw.intermediate_size.unwrap_or(d.intermediate_size),
            context_len: raw.max_position_embeddings.unwrap_or(d.max_position_embeddings),
            norm_eps: eps as f32,
            // transformers: `self.scaling = config.query_pre_attn_scalar**-0.5` (Gemma 2/3), `head_dim**-0.5` (Gemma).
            query_scale: (query_pre_attn_scalar.powf(-0.5)) as f32,
            attn_softcap,
            final_softcap,
            qk_norm: family == Family::Gemma3,
            sandwich_norms: family != Family::Gemma,
            layers,
            tie_embeddings: raw.tie_word_embeddings.unwrap_or(true),
            bos_id: raw.bos_token_id.unwrap_or(2),
            eos_ids: raw.eos_token_ids.unwrap_or_else(|| vec![1]),
            pad_id: raw.pad_token_id.unwrap_or(0),
        })
    }
}

impl RawConfig {
    pub fn from_hf_file(path: &Path) -> Result<RawConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        RawConfig::from_hf_json(&v, path)
    }

    /// Read a transformers config (either key spelling). A multimodal `gemma3` config contributes its `text_config`.
    pub fn from_hf_json(v: &Value, path: &Path) -> Result<RawConfig> {
        let err = |field: &str, what: String| Error::config(path, field, what);
        let model_type = v.get("model_type").and_then(Value::as_str).ok_or_else(|| err("model_type", "missing".into()))?;
        let family = Family::from_model_type(model_type).ok_or_else(|| Error::UnknownArchitecture(model_type.into()))?;
        let (c, outer) = match (model_type, v.get("text_config")) {
            ("gemma3", Some(t)) => (t, Some(v)),
            _ => (v, None),
        };
        let usize_key = |k: &str| -> Result<Option<usize>> {
            match c.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| err(k, format!("expected a non-negative integer, got {x}"))),
            }
        };
        let f64_key = |k: &str| -> Result<Option<f64>> {
            match c.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_f64().map(Some).ok_or_else(|| err(k, format!("expected a number, got {x}"))),
            }
        };
        let nullable_f64 = |k: &str| -> Result<Option<Option<f64>>> {
            match c.get(k) {
                None => Ok(None),
                Some(Value::Null) => Ok(Some(None)),
                Some(x) => x.as_f64().map(|f| Some(Some(f))).ok_or_else(|| err(k, format!("expected a number or null, got {x}"))),
            }
        };
        // The activation: Gemma computes tanh-approximated GELU whatever the legacy `hidden_act: "gelu"` says
        // (transformers warns and uses gelu_pytorch_tanh; Google's reference code does the same).
        for k in ["hidden_activation", "hidden_act"] {
            if let Some(a) = c.get(k).and_then(Value::as_str) {
                if !matches!(a, "gelu" | "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new") {
                    return Err(err(k, format!("`{a}` is not supported: Gemma uses tanh-approximated GELU")));
                }
            }
        }
        if c.get("attention_bias").and_then(Value::as_bool) == Some(true) {
            return Err(err("attention_bias", "true is not supported: Gemma's projections have no bias".into()));
        }
        let layer_types = match c.get("layer_types") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, t)| match t.as_str() {
                        Some("full_attention") => Ok(LayerType::Full),
                        Some("sliding_attention") => Ok(LayerType::Sliding),
                        _ => Err(err(&format!("layer_types[{i}]"), format!("expected \"full_attention\" or \"sliding_attention\", got {t}"))),
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(x) => return Err(err("layer_types", format!("expected a list, got {x}"))),
        };
        let (rope_global, rope_local) = parse_rope(c, path)?;
        let token_id = |k: &str| -> Result<Option<u32>> {
            let x = c.get(k).or_else(|| outer.and_then(|o| o.get(k)));
            match x {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => Ok(a.first().and_then(Value::as_u64).map(|n| n as u32)),
                Some(x) => x.as_u64().map(|n| Some(n as u32)).ok_or_else(|| err(k, format!("expected a token id, got {x}"))),
            }
        };
        let eos_token_ids = match c.get("eos_token_id").or_else(|| outer.and_then(|o| o.get("eos_token_id"))) {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_u64).map(|n| n as u32).collect()),
            Some(x) => Some(vec![x.as_u64().ok_or_else(|| err("eos_token_id", format!("expected a token id, got {x}")))? as u32]),
        };
        Ok(RawConfig {
            source: path.to_path_buf(),
            family: Some(family),
            vocab_size: usize_key("vocab_size")?,
            hidden_size: usize_key("hidden_size")?,
            intermediate_size: usize_key("intermediate_size")?,
            num_hidden_layers: usize_key("num_hidden_layers")?,
            num_attention_heads: usize_key("num_attention_heads")?,
            num_key_value_heads: usize_key("num_key_value_heads")?,
            head_dim: usize_key("head_dim")?,
            max_position_embeddings: usize_key("max_position_embeddings")?,
            rms_norm_eps: f64_key("rms_norm_eps")?,
            query_pre_attn_scalar: f64_key("query_pre_attn_scalar")?,
            attn_logit_softcapping: nullable_f64("attn_logit_softcapping")?,
            final_logit_softcapping: nullable_f64("final_logit_softcapping")?,
            sliding_window: usize_key("sliding_window")?,
            sliding_window_pattern: usize_key("sliding_window_pattern")?,
            layer_types,
            rope_global,
            rope_local,
            tie_word_embeddings: c.get("tie_word_embeddings").or_else(|| outer.and_then(|o| o.get("tie_word_embeddings"))).and_then(Value::as_bool),
            bos_token_id: token_id("bos_token_id")?,
            eos_token_ids,
            pad_token_id: token_id("pad_token_id")?,
        })
    }
}

/// RoPE of global and local layers from either spelling:
/// - legacy: `rope_theta`, `rope_scaling: {rope_type|type: "linear", factor}` (global layers only, as
///   transformers' Gemma 3 applies it) and `rope_local_base_freq` (local layers);
/// - transformers 5: `rope_parameters`, either one `{rope_type, rope_theta, factor?}` for all layers, or one per
///   layer type: `{"full_attention": {...}, "sliding_attention": {...}}`.
fn parse_rope(c: &Value, path: &Path) -> Result<(Option<Rope>, Option<Rope>)> {
    let one = |p: &Value, field: &str, default_theta: Option<f64>| -> Result<Option<Rope>> {
        let theta = p.get("rope_theta").and_then(Value::as_f64).or(default_theta);
        let Some(theta) = theta else { return Ok(None) };
        let kind = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str).unwrap_or("default");
        let factor = match kind {
            "default" => 1.0,
            "linear" => p.get("factor").and_then(Value::as_f64).ok_or_else(|| Error::config(path, field, "linear RoPE scaling needs `factor`"))?,
            other => {
                return Err(Error::config(path, field, format!("RoPE type `{other}` is not supported (Gemma uses default or linear)")))
            }
        };
        Ok(Some(Rope { base: theta as f32, linear_factor: factor as f32 }))
    };
    if let Some(p) = c.get("rope_parameters").filter(|p| p.is_object()) {
        if p.get("full_attention").is_some() || p.get("sliding_attention").is_some() {
            let g = match p.get("full_attention") {
                Some(x) => one(x, "rope_parameters.full_attention", None)?,
                None => None,
            };
            let l = match p.get("sliding_attention") {
                Some(x) => one(x, "rope_parameters.sliding_attention", None)?,
                None => None,
            };
            return Ok((g, l));
        }
        let r = one(p, "rope_parameters", c.get("rope_theta").and_then(Value::as_f64))?;
        return Ok((r, None));
    }
    let theta = c.get("rope_theta").and_then(Value::as_f64);
    let global = match c.get("rope_scaling").filter(|s| s.is_object()) {
        Some(s) => {
            let mut s = s.clone();
            if let (Some(obj), Some(t)) = (s.as_object_mut(), theta) {
                obj.insert("rope_theta".into(), t.into());
            }
            one(&s, "rope_scaling", None)?.or(theta.map(|t| Rope { base: t as f32, linear_factor: 1.0 }))
        }
        None => theta.map(|t| Rope { base: t as f32, linear_factor: 1.0 }),
    };
    // When scaling is given without a theta, the family default theta applies: handled in from_raw via None.
    let local = c.get("rope_local_base_freq").and_then(Value::as_f64).map(|b| Rope { base: b as f32, linear_factor: 1.0 });
    Ok((global, local))
}

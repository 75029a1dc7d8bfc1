//! Model configuration in two stages, like a compiler's raw → validated arguments:
//! - [`RawConfig`]: what a checkpoint says, every field optional, filled by a *config source*: a Hugging Face
//!   `config.json` ([`hf`], legacy Hub keys or transformers-5 keys) or GGUF metadata ([`gguf`]);
//! - [`Config`]: validated, with the family's documented defaults applied and every derived value computed
//!   once (query scale, per-layer block kind, attention window and RoPE). The decoder reads only `Config`.
//!
//! A layer is a *mixer* (attention, or Griffin's recurrent block) plus the shared MLP and norms; per-layer
//! differences live in [`LayerSpec`], model-wide ones in [`Config`] fields, and an image encoder's in
//! [`VisionConfig`]. A new family member is new fields here, never a new decoder.

pub mod gguf;
pub mod hf;
mod vision;

use std::path::{Path, PathBuf};

pub use vision::{Projector, RawVision, SiglipConfig, VisionConfig};

use crate::{Error, Result};

/// The Gemma generation a checkpoint belongs to. It selects *defaults* for keys a file omits; behaviour is
/// driven by the resolved fields of [`Config`], never by the family directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Gemma,
    Gemma2,
    Gemma3,
    /// Griffin: RG-LRU recurrent blocks beside local attention (transformers' `recurrent_gemma`).
    RecurrentGemma,
}

impl Family {
    pub fn from_model_type(t: &str) -> Option<Family> {
        match t {
            "gemma" => Some(Family::Gemma),
            "gemma2" => Some(Family::Gemma2),
            "gemma3" | "gemma3_text" => Some(Family::Gemma3),
            "recurrent_gemma" => Some(Family::RecurrentGemma),
            _ => None,
        }
    }
    /// transformers' class-name prefix (`Gemma`, `Gemma2`, `Gemma3`).
    pub fn class_prefix(self) -> &'static str {
        match self {
            Family::Gemma => "Gemma",
            Family::Gemma2 => "Gemma2",
            Family::Gemma3 => "Gemma3",
            Family::RecurrentGemma => "RecurrentGemma",
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

/// An attention mixer: multi-head attention over the layer's KV cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec {
    pub scope: AttentionScope,
    pub rope: Rope,
    /// Leading dimensions of each query/key head that RoPE rotates (`partial_rotary_factor · head_dim`; all
    /// of `head_dim` except in RecurrentGemma, which rotates half and passes the rest through).
    pub rotary_dims: usize,
}

/// Griffin's recurrent mixer (transformers' `RecurrentGemmaRecurrentBlock`): two branches of width
/// `lru_width` from the residual stream, a causal depthwise conv1d and the RG-LRU on one, GELU on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentSpec {
    /// Width of the recurrence (`lru_width`).
    pub lru_width: usize,
    /// Taps of the causal depthwise convolution (`conv1d_width`); the state keeps the last `conv1d_width - 1`.
    pub conv1d_width: usize,
    /// Blocks of the block-diagonal RG-LRU gates (`num_attention_heads`): `lru_width / n_blocks` each.
    pub n_blocks: usize,
}

/// What mixes information across positions in one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mixer {
    Attention(AttentionSpec),
    Recurrent(RecurrentSpec),
}

/// One residual block: a mixer, then the shared MLP (norm placement is model-wide: [`Config::sandwich_norms`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSpec {
    pub mixer: Mixer,
}

impl LayerSpec {
    /// The attention mixer's spec, if this layer attends.
    pub fn attention(&self) -> Option<&AttentionSpec> {
        match &self.mixer {
            Mixer::Attention(a) => Some(a),
            Mixer::Recurrent(_) => None,
        }
    }
    pub fn recurrent(&self) -> Option<&RecurrentSpec> {
        match &self.mixer {
            Mixer::Recurrent(r) => Some(r),
            Mixer::Attention(_) => None,
        }
    }
}

/// Which linear layers carry a bias (all are bias-free in Gemma 1-3; RecurrentGemma's attention output and
/// MLP projections have one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Biases {
    pub attn_out: bool,
    pub mlp: bool,
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
    /// Width of the GeGLU hidden layer (`intermediate_size`; RecurrentGemma's MLP is `intermediate_size / 2`).
    pub ffn_dim: usize,
    pub biases: Biases,
    /// Longest sequence the model was trained for (`max_position_embeddings`).
    pub context_len: usize,
    pub norm_eps: f32,
    /// Multiplies q·k: `query_pre_attn_scalar^-1/2` (Gemma 2/3) or `head_dim^-1/2` (Gemma 1).
    pub query_scale: f32,
    /// Attention scores are soft-capped `c·tanh(s/c)` before the mask (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Output logits are soft-capped (Gemma 2, RecurrentGemma).
    pub final_softcap: Option<f32>,
    /// The embedding multiplier `sqrt(d_model)` is rounded to bf16 whatever type the weights are stored in
    /// (RecurrentGemma: transformers keeps it in a bf16 buffer, `normalizer`, as Google's code does, so the 2B
    /// multiplies by 50.5, not 50.596). Otherwise it is rounded to the embedding's stored type (Gemma 1-3).
    pub embed_scale_bf16: bool,
    /// RMSNorm on each query and key head before RoPE (Gemma 3).
    pub qk_norm: bool,
    /// Norms after attention and after the MLP too, not only before ("sandwich", Gemma 2/3).
    pub sandwich_norms: bool,
    /// One entry per layer: its mixer (attention with window and RoPE, or recurrent).
    pub layers: Vec<LayerSpec>,
    pub tie_embeddings: bool,
    pub bos_id: u32,
    pub eos_ids: Vec<u32>,
    pub pad_id: u32,
    /// The image encoder and projector of a vision-language checkpoint (PaliGemma, Gemma 3 4B+).
    pub vision: Option<VisionConfig>,
    /// Added to a sequence index to give its RoPE position: 1 for PaliGemma, which counts positions from 1
    /// (transformers: `position_ids = cache_position + 1`), 0 otherwise.
    pub position_offset: usize,
    /// In a local layer the sliding window also bounds the past keys of a bidirectional span (Gemma 3's image
    /// blocks: transformers AND's its window after OR'ing the blocks in); otherwise a position in a span sees
    /// the whole span (PaliGemma 2's prefix). Moot when spans are shorter than the window, as in the releases.
    pub window_bounds_spans: bool,
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
        self.layers
            .iter()
            .filter_map(LayerSpec::attention)
            .try_fold(0, |m, a| match a.scope {
                AttentionScope::Local { window } => Some(m.max(window)),
                AttentionScope::Global => None,
            })
    }
    /// The attention layers' specs, in layer order.
    pub fn attention_layers(&self) -> impl Iterator<Item = &AttentionSpec> {
        self.layers.iter().filter_map(LayerSpec::attention)
    }
    /// transformers' class name of the whole model (`GemmaForCausalLM`, `PaliGemmaForConditionalGeneration`).
    pub fn class_name(&self) -> String {
        match &self.vision {
            Some(v) if v.projector == Projector::PaliGemma => {
                "PaliGemmaForConditionalGeneration".into()
            }
            _ => format!("{}ForCausalLM", self.family.class_prefix()),
        }
    }
}

/// One layer's block type as `layer_types` / `block_types` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// `full_attention`
    Full,
    /// `sliding_attention` (RecurrentGemma's `attention` blocks are local too)
    Sliding,
    /// RecurrentGemma's `recurrent` blocks
    Recurrent,
}

/// What a checkpoint says, before defaults and validation. `None` = the key is absent.
/// For soft-caps, `Some(None)` is an explicit `null` (no capping), which differs from absent (family default).
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub source: PathBuf,
    /// Where the decoder's keys sit in the source (`text_config.` in a vision-language config), so that
    /// errors name the real field.
    pub field_prefix: String,
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
    /// Per layer, or (RecurrentGemma's `block_types`) a pattern that repeats over the layers.
    pub layer_types: Option<Vec<LayerType>>,
    /// `layer_types` is a repeating pattern (`block_types`) rather than one entry per layer.
    pub layer_types_repeat: bool,
    pub partial_rotary_factor: Option<f64>,
    pub lru_width: Option<usize>,
    pub conv1d_width: Option<usize>,
    /// RoPE of global (full-attention) layers.
    pub rope_global: Option<Rope>,
    /// RoPE of local (sliding) layers, where it differs (Gemma 3's `rope_local_base_freq`).
    pub rope_local: Option<Rope>,
    /// The global layers' linear RoPE factor when the file gives one but no theta (the Hub's Gemma 3 4B-27B
    /// configs: `rope_scaling` without `rope_theta`); it applies to the family's default theta.
    pub rope_global_factor: Option<f32>,
    pub tie_word_embeddings: Option<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Option<Vec<u32>>,
    pub pad_token_id: Option<u32>,
    pub vision: Option<RawVision>,
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
    partial_rotary_factor: Option<f64>,
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
            partial_rotary_factor: None,
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
            partial_rotary_factor: None,
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
            partial_rotary_factor: None,
            sliding_window: Some(4096),
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
        },
        // transformers' `RecurrentGemmaConfig`: intermediate 3 x 2560, head_dim = hidden / heads, KV heads =
        // heads, window 2048 (`attention_window_size`), logits capped at 30 (`logits_soft_cap`). It has no
        // trained context key; 8192 is the sequence length of its training (RecurrentGemma report, sec. 2).
        // The window is applied as transformers' sliding-window mask does (the current key and 2047 earlier
        // ones, like every `AttentionScope::Local`); Google's `recurrentgemma` code keeps one more (q - k <=
        // 2048), so the two disagree from position 2048 on. We follow transformers, the reference we test.
        Family::RecurrentGemma => Defaults {
            vocab_size: 256000,
            hidden_size: 2560,
            intermediate_size: 3 * 2560,
            num_hidden_layers: 26,
            num_attention_heads: 10,
            num_key_value_heads: 0,
            head_dim: 0,
            max_position_embeddings: 8192,
            rope_theta: 10000.0,
            rope_local_base_freq: None,
            query_pre_attn_scalar: None,
            partial_rotary_factor: Some(0.5),
            sliding_window: Some(2048),
            attn_logit_softcapping: None,
            final_logit_softcapping: Some(30.0),
        },
    }
}

impl Config {
    /// Read and validate a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Config> {
        Config::from_raw(RawConfig::from_hf_file(path)?)
    }

    /// Read and validate a parsed Hugging Face config (any family member's `model_type`); `path` names it in
    /// errors.
    pub fn from_hf_json(v: &serde_json::Value, path: &Path) -> Result<Config> {
        Config::from_raw(RawConfig::from_hf_json(v, path)?)
    }

    /// Apply the family's defaults to what the checkpoint says, validate, and derive per-layer values.
    /// Errors name the source file and the field: a zero or missing dimension, a head count that does not
    /// divide, a layer list of the wrong length, an out-of-range norm epsilon or RoPE base.
    pub fn from_raw(raw: RawConfig) -> Result<Config> {
        let file = raw.source.clone();
        let prefix = raw.field_prefix.clone();
        let err = |field: &str, what: String| Error::config(&file, format!("{prefix}{field}"), what);
        let family = raw
            .family
            .ok_or_else(|| err("model_type", "missing".into()))?;
        let d = defaults(family);
        let n_layers = raw.num_hidden_layers.unwrap_or(d.num_hidden_layers);
        let n_heads = raw.num_attention_heads.unwrap_or(d.num_attention_heads);
        let d_model = raw.hidden_size.unwrap_or(d.hidden_size);
        let vocab_size = raw.vocab_size.unwrap_or(d.vocab_size);
        let intermediate = raw.intermediate_size.unwrap_or(d.intermediate_size);
        positive(
            &err,
            &[
                ("num_hidden_layers", n_layers),
                ("num_attention_heads", n_heads),
                ("hidden_size", d_model),
                ("vocab_size", vocab_size),
                ("intermediate_size", intermediate),
            ],
        )?;
        // RecurrentGemma derives these from the head count (defaults of 0 above mean "derive").
        let n_kv_heads = raw
            .num_key_value_heads
            .unwrap_or(if d.num_key_value_heads == 0 {
                n_heads
            } else {
                d.num_key_value_heads
            });
        let head_dim = raw.head_dim.unwrap_or(if d.head_dim == 0 {
            d_model / n_heads
        } else {
            d.head_dim
        });
        positive(
            &err,
            &[("num_key_value_heads", n_kv_heads), ("head_dim", head_dim)],
        )?;
        if n_heads % n_kv_heads != 0 {
            return Err(err(
                "num_key_value_heads",
                format!("{n_kv_heads} does not divide num_attention_heads = {n_heads}"),
            ));
        }
        if head_dim % 2 != 0 {
            return Err(err(
                "head_dim",
                format!("{head_dim} is odd; RoPE rotates pairs of dimensions"),
            ));
        }
        let query_pre_attn_scalar = raw
            .query_pre_attn_scalar
            .or(d.query_pre_attn_scalar)
            .unwrap_or(head_dim as f64);
        if !(query_pre_attn_scalar > 0.0) {
            return Err(err(
                "query_pre_attn_scalar",
                format!("{query_pre_attn_scalar} must be positive"),
            ));
        }
        let softcap = |v: Option<Option<f64>>,
                       default: Option<f64>,
                       name: &str|
         -> Result<Option<f32>> {
            match v.unwrap_or(default) {
                Some(c) if !(c > 0.0) => Err(err(name, format!("{c} must be positive or null"))),
                c => Ok(c.map(|c| c as f32)),
            }
        };
        let attn_softcap = softcap(
            raw.attn_logit_softcapping,
            d.attn_logit_softcapping,
            "attn_logit_softcapping",
        )?;
        let final_softcap = softcap(
            raw.final_logit_softcapping,
            d.final_logit_softcapping,
            "final_logit_softcapping",
        )?;

        let layer_types = layer_types(&raw, family, n_layers, &err)?;
        let window = raw.sliding_window.or(d.sliding_window);
        let global_rope = raw.rope_global.unwrap_or(Rope {
            base: d.rope_theta,
            linear_factor: raw.rope_global_factor.unwrap_or(1.0),
        });
        let local_rope = raw
            .rope_local
            .or(d.rope_local_base_freq.map(|base| Rope {
                base,
                linear_factor: 1.0,
            }))
            .unwrap_or(global_rope);
        for (name, r) in [
            ("rope_theta", global_rope),
            ("rope_local_base_freq", local_rope),
        ] {
            if !(r.base > 1.0) || !(r.linear_factor > 0.0) {
                return Err(err(
                    name,
                    format!(
                        "RoPE base {} / factor {} out of range",
                        r.base, r.linear_factor
                    ),
                ));
            }
        }
        let rotary_dims = match raw.partial_rotary_factor.or(d.partial_rotary_factor) {
            None => head_dim,
            Some(f) if f > 0.0 && f <= 1.0 && (f * head_dim as f64).round() as usize % 2 == 0 => (f * head_dim as f64).round() as usize,
            Some(f) => return Err(err("partial_rotary_factor", format!("{f} must be in (0, 1] and rotate an even number of the {head_dim} head dimensions"))),
        };
        let recurrent = match family {
            Family::RecurrentGemma => {
                let spec = RecurrentSpec {
                    lru_width: raw.lru_width.unwrap_or(d_model),
                    conv1d_width: raw.conv1d_width.unwrap_or(4),
                    n_blocks: n_heads,
                };
                positive(
                    &err,
                    &[
                        ("lru_width", spec.lru_width),
                        ("conv1d_width", spec.conv1d_width),
                    ],
                )?;
                if spec.lru_width % n_heads != 0 {
                    return Err(err("lru_width", format!("{} is not a multiple of num_attention_heads = {n_heads} (the RG-LRU gates are block-diagonal per head)", spec.lru_width)));
                }
                Some(spec)
            }
            _ => None,
        };
        let mut layers = Vec::with_capacity(n_layers);
        for (i, t) in layer_types.iter().enumerate() {
            let attention = |scope, rope| LayerSpec {
                mixer: Mixer::Attention(AttentionSpec {
                    scope,
                    rope,
                    rotary_dims,
                }),
            };
            layers.push(match t {
                LayerType::Full => attention(AttentionScope::Global, global_rope),
                LayerType::Sliding => {
                    let w = window.ok_or_else(|| {
                        err(
                            "sliding_window",
                            format!("layer {i} is sliding but no window is given"),
                        )
                    })?;
                    if w == 0 {
                        return Err(err("sliding_window", "must be positive".into()));
                    }
                    attention(AttentionScope::Local { window: w }, local_rope)
                }
                LayerType::Recurrent => match recurrent {
                    Some(spec) => LayerSpec {
                        mixer: Mixer::Recurrent(spec),
                    },
                    None => {
                        return Err(err(
                            "layer_types",
                            format!("layer {i} is recurrent, which only recurrent_gemma has"),
                        ))
                    }
                },
            });
        }
        let eps = raw.rms_norm_eps.unwrap_or(1e-6);
        if !(eps > 0.0 && eps < 1.0) {
            return Err(err("rms_norm_eps", format!("{eps} out of range")));
        }
        let vision = raw
            .vision
            .as_ref()
            .map(|v| v.validate(&file, d_model))
            .transpose()?;
        let is_recurrent = family == Family::RecurrentGemma;
        Ok(Config {
            family,
            vocab_size,
            d_model,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            // transformers' RecurrentGemmaMlp is `intermediate_size // 2` wide.
            ffn_dim: if is_recurrent {
                intermediate / 2
            } else {
                intermediate
            },
            biases: Biases {
                attn_out: is_recurrent,
                mlp: is_recurrent,
            },
            context_len: raw
                .max_position_embeddings
                .unwrap_or(d.max_position_embeddings),
            norm_eps: eps as f32,
            // transformers: `self.scaling = config.query_pre_attn_scalar**-0.5` (Gemma 2/3), `head_dim**-0.5` (Gemma).
            query_scale: (query_pre_attn_scalar.powf(-0.5)) as f32,
            attn_softcap,
            final_softcap,
            embed_scale_bf16: is_recurrent,
            qk_norm: family == Family::Gemma3,
            sandwich_norms: matches!(family, Family::Gemma2 | Family::Gemma3),
            layers,
            tie_embeddings: raw.tie_word_embeddings.unwrap_or(true),
            bos_id: raw.bos_token_id.unwrap_or(2),
            eos_ids: raw.eos_token_ids.unwrap_or_else(|| vec![1]),
            pad_id: raw.pad_token_id.unwrap_or(0),
            position_offset: match &vision {
                Some(v) if v.projector == Projector::PaliGemma => 1,
                _ => 0,
            },
            window_bounds_spans: matches!(&vision, Some(v) if v.projector == Projector::Gemma3),
            vision,
        })
    }
}

/// Every named dimension must be positive: a zero would divide by zero or build empty matrices later.
fn positive(err: &impl Fn(&str, String) -> Error, dims: &[(&str, usize)]) -> Result<()> {
    match dims.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(err(name, "must be positive".into())),
        None => Ok(()),
    }
}

/// Each layer's block type: `layer_types` when given (per layer, or RecurrentGemma's repeating
/// `block_types`), else the family's pattern (Gemma 2 alternates starting with a sliding layer; Gemma 3 has
/// `sliding_window_pattern - 1` sliding layers then one global; RecurrentGemma repeats recurrent, recurrent,
/// attention).
fn layer_types(
    raw: &RawConfig,
    family: Family,
    n_layers: usize,
    err: &impl Fn(&str, String) -> Error,
) -> Result<Vec<LayerType>> {
    use LayerType::*;
    let (pattern, field): (Vec<LayerType>, &str) = match (&raw.layer_types, family) {
        (Some(t), _) if raw.layer_types_repeat => (t.clone(), "block_types"),
        (Some(t), _) => {
            if t.len() != n_layers {
                return Err(err(
                    "layer_types",
                    format!("has {} entries for {n_layers} layers", t.len()),
                ));
            }
            return Ok(t.clone());
        }
        (None, Family::Gemma) => (vec![Full], "model_type"),
        (None, Family::Gemma2) => (vec![Sliding, Full], "model_type"),
        (None, Family::Gemma3) => {
            let p = raw.sliding_window_pattern.unwrap_or(6).max(1);
            let mut v = vec![Sliding; p - 1];
            v.push(Full);
            (v, "sliding_window_pattern")
        }
        (None, Family::RecurrentGemma) => (vec![Recurrent, Recurrent, Sliding], "block_types"),
    };
    if pattern.is_empty() {
        return Err(err(field, "is empty".into()));
    }
    Ok((0..n_layers).map(|i| pattern[i % pattern.len()]).collect())
}

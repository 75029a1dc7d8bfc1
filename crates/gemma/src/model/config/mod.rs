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
    /// Gemma 4's text model (transformers' `gemma4_text`, or the `text_config` of a multimodal `gemma4`).
    Gemma4,
}

impl Family {
    pub fn from_model_type(t: &str) -> Option<Family> {
        match t {
            "gemma" => Some(Family::Gemma),
            "gemma2" => Some(Family::Gemma2),
            "gemma3" | "gemma3_text" => Some(Family::Gemma3),
            "recurrent_gemma" => Some(Family::RecurrentGemma),
            "gemma4" | "gemma4_text" => Some(Family::Gemma4),
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
            Family::Gemma4 => "Gemma4",
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

/// An attention mixer: multi-head attention over the layer's KV cache (or, KV-shared, another layer's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec {
    pub scope: AttentionScope,
    pub rope: Rope,
    /// Leading dimensions of each query/key head that RoPE rotates (`partial_rotary_factor · head_dim`; all
    /// of `head_dim` except in RecurrentGemma, which rotates half and passes the rest through). Dimension i
    /// pairs with i + rotary_dims / 2 and turns at `inv_freq[i] = 1 / base^(2i / rotary_dims)`.
    pub rotary_dims: usize,
    /// How many of the `rotary_dims / 2` frequencies turn; the others are 0 (cos 1, sin 0: the pair passes
    /// through). All of them, except with Gemma 4's "proportional" RoPE, where the frequencies are those of the
    /// whole head but only the first `int(partial_rotary_factor · head_dim // 2)` rotate (transformers'
    /// `_compute_proportional_rope_parameters` pads `inv_freq` with zeros).
    pub rope_pairs: usize,
    /// Values per query/key/value head in this layer (Gemma 4's global layers have their own,
    /// `global_head_dim`; otherwise `Config::head_dim`).
    pub head_dim: usize,
    /// Key/value heads in this layer (Gemma 4's global layers may have their own, `num_global_key_value_heads`).
    pub n_kv_heads: usize,
    /// KV sharing (Gemma 4's last `num_kv_shared_layers` layers): this layer computes no keys or values and
    /// attends over those of the given earlier layer (the last non-shared layer of its type), storing nothing.
    pub kv_source: Option<usize>,
    /// No v_proj: the values are the keys as projected, before the key norm and RoPE (Gemma 4's
    /// `attention_k_eq_v`, global layers only).
    pub k_eq_v: bool,
}

impl AttentionSpec {
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// Gemma 4's per-layer embeddings (PLE, transformers' `hidden_size_per_layer_input`): a second table gives each
/// token `dim` values per layer, mixed with a projection of the main embedding; each layer gates its slice into
/// the residual stream after the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerLayerInput {
    /// Values per layer (`hidden_size_per_layer_input`).
    pub dim: usize,
    /// Rows of the per-layer table (`vocab_size_per_layer_input`).
    pub vocab_size: usize,
}

/// Gemma 4's mixture of experts beside the dense MLP (`enable_moe_block`): a router picks `top_k` of
/// `n_experts` GeGLU experts per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeSpec {
    pub n_experts: usize,
    pub top_k: usize,
    /// Width of each expert's hidden layer (`moe_intermediate_size`).
    pub ffn_dim: usize,
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
    /// Width of this layer's MLP: `Config::ffn_dim`, doubled in Gemma 4's KV-shared layers with
    /// `use_double_wide_mlp`.
    pub ffn_dim: usize,
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
    /// Multiplies q·k: `query_pre_attn_scalar^-1/2` (Gemma 2/3), `head_dim^-1/2` (Gemma 1), 1 (Gemma 4, whose
    /// q and k norms set the scale).
    pub query_scale: f32,
    /// Attention scores are soft-capped `c·tanh(s/c)` before the mask (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Output logits are soft-capped (Gemma 2, RecurrentGemma).
    pub final_softcap: Option<f32>,
    /// The embedding multiplier `sqrt(d_model)` is rounded to bf16 whatever type the weights are stored in
    /// (RecurrentGemma: transformers keeps it in a bf16 buffer, `normalizer`, as Google's code does, so the 2B
    /// multiplies by 50.5, not 50.596). Otherwise it is rounded to the embedding's stored type (Gemma 1-3).
    pub embed_scale_bf16: bool,
    /// RMSNorm on each query and key head before RoPE (Gemma 3, 4).
    pub qk_norm: bool,
    /// RMSNorm without a weight on each value head (Gemma 4's `v_norm`).
    pub v_norm: bool,
    /// Norm weights are used as `1 + w` (Gemma 1-3, RecurrentGemma); Gemma 4 multiplies by `w` itself.
    pub norm_plus_one: bool,
    /// Each layer ends by multiplying the residual stream by a stored scalar (Gemma 4's `layer_scalar`).
    pub layer_scalar: bool,
    /// Gemma 4's per-layer embeddings (E2B, E4B).
    pub per_layer_input: Option<PerLayerInput>,
    /// Gemma 4's mixture of experts beside every layer's MLP (26B-A4B).
    pub moe: Option<MoeSpec>,
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
    /// The widest query row of any layer, `n_heads · head_dim` (buffers are sized by it).
    pub fn max_q_dim(&self) -> usize {
        self.attention_layers().map(|a| self.n_heads * a.head_dim).max().unwrap_or(self.q_dim())
    }
    /// The widest key/value row of any layer.
    pub fn max_kv_dim(&self) -> usize {
        self.attention_layers().map(AttentionSpec::kv_dim).max().unwrap_or(self.kv_dim())
    }
    /// The widest MLP of any layer.
    pub fn max_ffn_dim(&self) -> usize {
        self.layers.iter().map(|l| l.ffn_dim).max().unwrap_or(self.ffn_dim)
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
    /// Gemma 4's "proportional" RoPE (`rope_type: proportional`) of global / local layers: its
    /// `partial_rotary_factor`.
    pub rope_global_proportional: Option<f64>,
    pub rope_local_proportional: Option<f64>,
    /// Gemma 4, the Hub's spelling: head size and KV heads of global layers (`global_head_dim`,
    /// `num_global_key_value_heads`).
    pub global_head_dim: Option<usize>,
    pub num_global_key_value_heads: Option<usize>,
    /// Gemma 4, transformers 5.24's spelling (`per_layer_config`): per layer index, its own head_dim and KV heads.
    /// When given, it replaces the two keys above, as in transformers.
    pub per_layer_heads: Option<Vec<(usize, Option<usize>, Option<usize>)>>,
    pub attention_k_eq_v: Option<bool>,
    pub num_kv_shared_layers: Option<usize>,
    pub use_double_wide_mlp: Option<bool>,
    pub hidden_size_per_layer_input: Option<usize>,
    pub vocab_size_per_layer_input: Option<usize>,
    pub enable_moe_block: Option<bool>,
    pub num_experts: Option<usize>,
    pub top_k_experts: Option<usize>,
    pub moe_intermediate_size: Option<usize>,
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
    /// Gemma 4: global layers' RoPE is "proportional" with this partial_rotary_factor when the file says nothing.
    rope_global_proportional: Option<f64>,
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
            rope_global_proportional: None,
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
            rope_global_proportional: None,
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
            rope_global_proportional: None,
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
            rope_global_proportional: None,
            sliding_window: Some(2048),
            attn_logit_softcapping: None,
            final_logit_softcapping: Some(30.0),
        },
        // transformers 5.24's `Gemma4TextConfig`: sliding layers RoPE "default" theta 1e4, full layers
        // "proportional" theta 1e6 with partial_rotary_factor 0.25, window 512, no soft-caps unless given.
        Family::Gemma4 => Defaults {
            vocab_size: 262_144,
            hidden_size: 2304,
            intermediate_size: 9216,
            num_hidden_layers: 30,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            head_dim: 256,
            max_position_embeddings: 131_072,
            rope_theta: 1_000_000.0,
            rope_local_base_freq: Some(10000.0),
            query_pre_attn_scalar: None,
            partial_rotary_factor: None,
            rope_global_proportional: Some(0.25),
            sliding_window: Some(512),
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
        let partial = raw.partial_rotary_factor.or(d.partial_rotary_factor);
        // (rotary_dims, rope_pairs) of a layer with heads of `hd` and, for Gemma 4's proportional RoPE, its factor.
        let rotary = |hd: usize, proportional: Option<f64>| -> Result<(usize, usize)> {
            match (proportional, partial) {
                // transformers: `rope_angles = int(partial_rotary_factor * head_dim // 2)` of head_dim / 2.
                (Some(f), _) if (0.0..=1.0).contains(&f) => Ok((hd, (f * hd as f64 / 2.0).floor() as usize)),
                (Some(f), _) => Err(err("rope_parameters.partial_rotary_factor", format!("{f} must be in [0, 1]"))),
                (None, None) => Ok((hd, hd / 2)),
                (None, Some(f)) if f > 0.0 && f <= 1.0 && (f * hd as f64).round() as usize % 2 == 0 => {
                    let r = (f * hd as f64).round() as usize;
                    Ok((r, r / 2))
                }
                (None, Some(f)) => Err(err("partial_rotary_factor", format!("{f} must be in (0, 1] and rotate an even number of the {hd} head dimensions"))),
            }
        };
        let is4 = family == Family::Gemma4;
        let mut layer_types = layer_types;
        if is4 {
            // transformers: "Last layer must use `full_attention`" (Gemma4TextConfig forces it, with a warning).
            if let Some(last) = layer_types.last_mut() {
                *last = LayerType::Full;
            }
        }
        let (global_prop, local_prop) = match (raw.rope_global, raw.rope_local) {
            (None, _) => (d.rope_global_proportional, raw.rope_local_proportional),
            _ => (raw.rope_global_proportional, raw.rope_local_proportional),
        };
        let k_eq_v = raw.attention_k_eq_v.unwrap_or(false);
        let heads = layer_heads(&raw, &layer_types, (head_dim, n_kv_heads), k_eq_v, n_heads, &err)?;
        let kv_sources = kv_sources(&layer_types, raw.num_kv_shared_layers.unwrap_or(0), &heads, &err)?;
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
        let is_recurrent = family == Family::RecurrentGemma;
        // transformers' RecurrentGemmaMlp is `intermediate_size // 2` wide.
        let ffn_dim = if is_recurrent { intermediate / 2 } else { intermediate };
        let double_wide = raw.use_double_wide_mlp.unwrap_or(false);
        let mut layers = Vec::with_capacity(n_layers);
        for (i, t) in layer_types.iter().enumerate() {
            let (hd, nkv) = heads[i];
            let kv_source = kv_sources[i];
            let layer_ffn = if double_wide && kv_source.is_some() { 2 * ffn_dim } else { ffn_dim };
            let attention = |scope, rope, proportional| -> Result<LayerSpec> {
                let (rotary_dims, rope_pairs) = rotary(hd, proportional)?;
                Ok(LayerSpec {
                    mixer: Mixer::Attention(AttentionSpec {
                        scope,
                        rope,
                        rotary_dims,
                        rope_pairs,
                        head_dim: hd,
                        n_kv_heads: nkv,
                        kv_source,
                        k_eq_v: k_eq_v && *t == LayerType::Full,
                    }),
                    ffn_dim: layer_ffn,
                })
            };
            layers.push(match t {
                LayerType::Full => attention(AttentionScope::Global, global_rope, global_prop)?,
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
                    attention(AttentionScope::Local { window: w }, local_rope, local_prop)?
                }
                LayerType::Recurrent => match recurrent {
                    Some(spec) => LayerSpec {
                        mixer: Mixer::Recurrent(spec),
                        ffn_dim,
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
        let per_layer_input = match raw.hidden_size_per_layer_input {
            _ if !is4 => None,
            // transformers' default is 256; 0 (or null) turns the per-layer embeddings off (26B, 31B).
            Some(0) => None,
            dim => {
                let vocab = raw.vocab_size_per_layer_input.unwrap_or(262_144);
                positive(&err, &[("vocab_size_per_layer_input", vocab)])?;
                Some(PerLayerInput { dim: dim.unwrap_or(256), vocab_size: vocab })
            }
        };
        let moe = match raw.enable_moe_block {
            Some(true) => {
                let need = |k: &str, v: Option<usize>| v.filter(|&n| n > 0).ok_or_else(|| err(k, "must be a positive integer with enable_moe_block".into()));
                let spec = MoeSpec {
                    n_experts: need("num_experts", raw.num_experts)?,
                    top_k: need("top_k_experts", raw.top_k_experts)?,
                    ffn_dim: need("moe_intermediate_size", raw.moe_intermediate_size)?,
                };
                if spec.top_k > spec.n_experts {
                    return Err(err("top_k_experts", format!("{} > num_experts = {}", spec.top_k, spec.n_experts)));
                }
                Some(spec)
            }
            _ => None,
        };
        Ok(Config {
            family,
            vocab_size,
            d_model,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            biases: Biases {
                attn_out: is_recurrent,
                mlp: is_recurrent,
            },
            context_len: raw
                .max_position_embeddings
                .unwrap_or(d.max_position_embeddings),
            norm_eps: eps as f32,
            // transformers: `self.scaling = config.query_pre_attn_scalar**-0.5` (Gemma 2/3), `head_dim**-0.5` (Gemma).
            // Gemma 4: `self.scaling = 1.0`.
            query_scale: if is4 { 1.0 } else { (query_pre_attn_scalar.powf(-0.5)) as f32 },
            attn_softcap,
            final_softcap,
            embed_scale_bf16: is_recurrent,
            qk_norm: matches!(family, Family::Gemma3 | Family::Gemma4),
            v_norm: is4,
            norm_plus_one: !is4,
            layer_scalar: is4,
            per_layer_input,
            moe,
            sandwich_norms: matches!(family, Family::Gemma2 | Family::Gemma3 | Family::Gemma4),
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
        (None, Family::Gemma3 | Family::Gemma4) => {
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

/// Head size and KV heads of every layer, as transformers 5.24's `Gemma4TextConfig` derives them: the
/// `per_layer_config` overrides when the file has them; otherwise (the Hub's spelling) global layers get
/// `global_head_dim` (default 512) and, only with `attention_k_eq_v`, `num_global_key_value_heads`. Other
/// families: the model-wide values.
fn layer_heads(
    raw: &RawConfig,
    types: &[LayerType],
    base: (usize, usize),
    k_eq_v: bool,
    n_heads: usize,
    err: &impl Fn(&str, String) -> Error,
) -> Result<Vec<(usize, usize)>> {
    let mut heads = vec![base; types.len()];
    match &raw.per_layer_heads {
        Some(list) => {
            for &(i, hd, kv) in list {
                let h = heads.get_mut(i).ok_or_else(|| err("per_layer_config", format!("layer {i} of {}", types.len())))?;
                *h = (hd.unwrap_or(h.0), kv.unwrap_or(h.1));
            }
        }
        None if raw.family == Some(Family::Gemma4) => {
            let global = (
                raw.global_head_dim.unwrap_or(512),
                raw.num_global_key_value_heads.filter(|_| k_eq_v).unwrap_or(base.1),
            );
            for (h, t) in heads.iter_mut().zip(types) {
                if *t == LayerType::Full {
                    *h = global;
                }
            }
        }
        None => {}
    }
    for (i, &(hd, kv)) in heads.iter().enumerate() {
        if hd == 0 || hd % 2 != 0 || kv == 0 || n_heads % kv != 0 {
            return Err(err(
                "per_layer_config",
                format!("layer {i}: head_dim {hd} must be even and positive, num_key_value_heads {kv} must divide num_attention_heads = {n_heads}"),
            ));
        }
    }
    Ok(heads)
}

/// Gemma 4's KV sharing: the last `n_shared` layers read the keys and values of the last earlier non-shared
/// layer of their own type (transformers' `kv_sharing_modes`: "reuse" reads what the "store" layer of that
/// type left), so every shared layer's type must occur among the others, with the same head layout.
fn kv_sources(
    types: &[LayerType],
    n_shared: usize,
    heads: &[(usize, usize)],
    err: &impl Fn(&str, String) -> Error,
) -> Result<Vec<Option<usize>>> {
    let n = types.len();
    if n_shared == 0 {
        return Ok(vec![None; n]);
    }
    if n_shared >= n {
        return Err(err("num_kv_shared_layers", format!("{n_shared} of {n} layers leaves none to compute keys and values")));
    }
    let first = n - n_shared;
    let mut src = vec![None; n];
    for i in first..n {
        let j = (0..first).rev().find(|&j| types[j] == types[i]).ok_or_else(|| {
            err("num_kv_shared_layers", format!("shared layer {i} is {:?} but no earlier layer of that type computes keys and values", types[i]))
        })?;
        if heads[j] != heads[i] {
            return Err(err("per_layer_config", format!("shared layer {i} has heads {:?}, its source layer {j} {:?}", heads[i], heads[j])));
        }
        src[i] = Some(j);
    }
    Ok(src)
}

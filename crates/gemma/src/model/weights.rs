//! The weights of a Gemma decoder, as stored (bf16, f16, f32 or GGUF block quants), immutable after load.
//! Only norm scales, biases and scalars are widened to f32, with Gemma 1-3's `1 + w` folded into the norms
//! (Gemma 4's norms multiply by `w` itself). A mixture of experts' 3-D tensors become one matrix per expert,
//! each a view of its slice of the file.
//!
//! Tensors are found through a [`Role`] (what the tensor is) and a per-format name table ([`NameScheme`]):
//! a misspelt name cannot compile, and a name a format lacks is an error naming the role, never a panic.

use crate::formats::{Tensor, TensorStore};
use crate::kernels::Matrix;
use crate::quant::DType;
use crate::{Error, Result};

use super::config::{AttentionSpec, Config, Family, Mixer, MoeSpec, PerLayerInput, RecurrentSpec};
use super::siglip::VisionWeights;

/// Norm weights hold `w` with the `1 + w` left to the reader (transformers) or `1 + w` already (llama.cpp's
/// GGUF converter adds the 1 when it writes Gemma norms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormConvention {
    AddOne,
    Stored,
}

/// How a checkpoint names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameScheme {
    /// transformers: `model.layers.0.self_attn.q_proj.weight`, ...
    HuggingFace,
    /// llama.cpp: `blk.0.attn_q.weight`, ...
    Gguf,
}

/// What a tensor is, independent of any file's naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Embed,
    FinalNorm,
    LmHead,
    /// Norm before the mixer (`input_layernorm`, Griffin's `temporal_pre_norm`).
    MixerNorm,
    /// Norm after the mixer (Gemma 2/3's `post_attention_layernorm`).
    PostMixerNorm,
    /// Norm before the MLP (Gemma 1's `post_attention_layernorm`, Gemma 2/3's `pre_feedforward_layernorm`,
    /// Griffin's `channel_pre_norm`).
    MlpNorm,
    PostMlpNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnO,
    AttnOBias,
    AttnQNorm,
    AttnKNorm,
    MlpGate,
    MlpUp,
    MlpDown,
    MlpGateBias,
    MlpUpBias,
    MlpDownBias,
    /// Griffin's recurrent block: the GELU branch `linear_y`, the recurrence branch `linear_x`, `linear_out`.
    RecY,
    RecYBias,
    RecX,
    RecXBias,
    RecOut,
    RecOutBias,
    /// Depthwise causal conv1d: weight (lru_width, 1, conv1d_width) and bias.
    RecConv,
    RecConvBias,
    /// RG-LRU: Λ (`recurrent_param`), block-diagonal input / recurrence gates with their biases.
    RgLruParam,
    RgLruInputGate,
    RgLruInputGateBias,
    RgLruRecurrentGate,
    RgLruRecurrentGateBias,
    /// Gemma 4's per-layer embeddings: the table (vocab_pl, n_layers · dim), the projection of the main
    /// embedding (n_layers · dim, d_model) and its norm (dim) — model-wide; per layer the gate (dim, d_model),
    /// the projection back (d_model, dim) and the norm after it.
    PleEmbed,
    PleModelProj,
    PleProjNorm,
    PleGate,
    PleProj,
    PostPleNorm,
    /// Gemma 4's per-layer output scalar (`layer_scalar`, shape (1)).
    LayerScalar,
    /// Gemma 4's mixture of experts: router (n_experts, d_model), its scale (d_model) and per-expert scale
    /// (n_experts); experts' fused gate/up (n_experts, 2 · moe_ffn, d_model) and down (n_experts, d_model, moe_ffn);
    /// the dense MLP's own post-norm, the experts' pre- and post-norms.
    RouterProj,
    RouterScale,
    RouterExpertScale,
    ExpertsGateUp,
    ExpertsDown,
    PostMlpNorm1,
    PreMoeNorm,
    PostMoeNorm,
}

impl Role {
    /// Every role that exists once per layer.
    pub const PER_LAYER: &'static [Role] = {
        use Role::*;
        &[
            MixerNorm, PostMixerNorm, MlpNorm, PostMlpNorm, AttnQ, AttnK, AttnV, AttnO, AttnOBias, AttnQNorm, AttnKNorm,
            MlpGate, MlpUp, MlpDown, MlpGateBias, MlpUpBias, MlpDownBias, RecY, RecYBias, RecX, RecXBias, RecOut,
            RecOutBias, RecConv, RecConvBias, RgLruParam, RgLruInputGate, RgLruInputGateBias, RgLruRecurrentGate,
            RgLruRecurrentGateBias, PleGate, PleProj, PostPleNorm, LayerScalar, RouterProj, RouterScale,
            RouterExpertScale, ExpertsGateUp, ExpertsDown, PostMlpNorm1, PreMoeNorm, PostMoeNorm,
        ]
    };
}

impl NameScheme {
    /// The tensor name of `role` (in layer `layer` for per-layer roles), or None where the format has none.
    pub fn name(self, family: Family, role: Role, layer: usize) -> Option<String> {
        use Role::*;
        let global = match (self, role) {
            (NameScheme::HuggingFace, Embed) => Some("model.embed_tokens.weight".into()),
            (NameScheme::HuggingFace, FinalNorm) if family == Family::RecurrentGemma => {
                Some("model.final_norm.weight".into())
            }
            (NameScheme::HuggingFace, FinalNorm) => Some("model.norm.weight".into()),
            (NameScheme::HuggingFace, LmHead) => Some("lm_head.weight".into()),
            (NameScheme::HuggingFace, PleEmbed) => Some("model.embed_tokens_per_layer.weight".into()),
            (NameScheme::HuggingFace, PleModelProj) => Some("model.per_layer_model_projection.weight".into()),
            (NameScheme::HuggingFace, PleProjNorm) => Some("model.per_layer_projection_norm.weight".into()),
            (NameScheme::Gguf, Embed) => Some("token_embd.weight".into()),
            (NameScheme::Gguf, FinalNorm) => Some("output_norm.weight".into()),
            (NameScheme::Gguf, LmHead) => Some("output.weight".into()),
            (NameScheme::Gguf, PleEmbed) => Some("per_layer_token_embd.weight".into()),
            (NameScheme::Gguf, PleModelProj) => Some("per_layer_model_proj.weight".into()),
            (NameScheme::Gguf, PleProjNorm) => Some("per_layer_proj_norm.weight".into()),
            _ => None,
        };
        if matches!(role, Embed | FinalNorm | LmHead | PleEmbed | PleModelProj | PleProjNorm) {
            return global;
        }
        let sub = match self {
            NameScheme::HuggingFace => hf_layer_name(family, role)?,
            NameScheme::Gguf => gguf_layer_name(role)?,
        };
        Some(match self {
            NameScheme::HuggingFace => format!("model.layers.{layer}.{sub}"),
            NameScheme::Gguf => format!("blk.{layer}.{sub}"),
        })
    }
}

/// transformers' names inside `model.layers.{i}`.
fn hf_layer_name(family: Family, role: Role) -> Option<&'static str> {
    use Role::*;
    let griffin = family == Family::RecurrentGemma;
    Some(match role {
        MixerNorm if griffin => "temporal_pre_norm.weight",
        MlpNorm if griffin => "channel_pre_norm.weight",
        MixerNorm => "input_layernorm.weight",
        PostMixerNorm => "post_attention_layernorm.weight",
        // Gemma 1 has one norm before the MLP, which transformers calls `post_attention_layernorm`.
        MlpNorm if family == Family::Gemma => "post_attention_layernorm.weight",
        MlpNorm => "pre_feedforward_layernorm.weight",
        PostMlpNorm => "post_feedforward_layernorm.weight",
        AttnQ if griffin => "temporal_block.q_proj.weight",
        AttnK if griffin => "temporal_block.k_proj.weight",
        AttnV if griffin => "temporal_block.v_proj.weight",
        AttnO if griffin => "temporal_block.o_proj.weight",
        AttnOBias if griffin => "temporal_block.o_proj.bias",
        AttnQ => "self_attn.q_proj.weight",
        AttnK => "self_attn.k_proj.weight",
        AttnV => "self_attn.v_proj.weight",
        AttnO => "self_attn.o_proj.weight",
        AttnOBias => "self_attn.o_proj.bias",
        AttnQNorm => "self_attn.q_norm.weight",
        AttnKNorm => "self_attn.k_norm.weight",
        MlpGate if griffin => "mlp_block.gate_proj.weight",
        MlpUp if griffin => "mlp_block.up_proj.weight",
        MlpDown if griffin => "mlp_block.down_proj.weight",
        MlpGateBias => "mlp_block.gate_proj.bias",
        MlpUpBias => "mlp_block.up_proj.bias",
        MlpDownBias => "mlp_block.down_proj.bias",
        MlpGate => "mlp.gate_proj.weight",
        MlpUp => "mlp.up_proj.weight",
        MlpDown => "mlp.down_proj.weight",
        RecY => "temporal_block.linear_y.weight",
        RecYBias => "temporal_block.linear_y.bias",
        RecX => "temporal_block.linear_x.weight",
        RecXBias => "temporal_block.linear_x.bias",
        RecOut => "temporal_block.linear_out.weight",
        RecOutBias => "temporal_block.linear_out.bias",
        RecConv => "temporal_block.conv_1d.weight",
        RecConvBias => "temporal_block.conv_1d.bias",
        RgLruParam => "temporal_block.rg_lru.recurrent_param",
        RgLruInputGate => "temporal_block.rg_lru.input_gate_weight",
        RgLruInputGateBias => "temporal_block.rg_lru.input_gate_bias",
        RgLruRecurrentGate => "temporal_block.rg_lru.recurrent_gate_weight",
        RgLruRecurrentGateBias => "temporal_block.rg_lru.recurrent_gate_bias",
        PleGate => "per_layer_input_gate.weight",
        PleProj => "per_layer_projection.weight",
        PostPleNorm => "post_per_layer_input_norm.weight",
        LayerScalar => "layer_scalar",
        RouterProj => "router.proj.weight",
        RouterScale => "router.scale",
        RouterExpertScale => "router.per_expert_scale",
        ExpertsGateUp => "experts.gate_up_proj",
        ExpertsDown => "experts.down_proj",
        PostMlpNorm1 => "post_feedforward_layernorm_1.weight",
        PreMoeNorm => "pre_feedforward_layernorm_2.weight",
        PostMoeNorm => "post_feedforward_layernorm_2.weight",
        Embed | FinalNorm | LmHead | PleEmbed | PleModelProj | PleProjNorm => return None,
    })
}

/// llama.cpp's names inside `blk.{i}` (`src/llama-arch.cpp`; Gemma 4's as its converter writes them,
/// `gguf-py/gguf/constants.py` and `tensor_mapping.py`). It has no RecurrentGemma and no biases for Gemma.
/// Gemma 4's mixture of experts keeps transformers' layouts: the router's `scale` and per-expert scale ride on
/// `ffn_gate_inp` and `ffn_down_exps`, and the experts' gate and up stay fused (gate rows first).
fn gguf_layer_name(role: Role) -> Option<&'static str> {
    use Role::*;
    Some(match role {
        MixerNorm => "attn_norm.weight",
        PostMixerNorm => "post_attention_norm.weight",
        // llama.cpp calls the pre-FFN norm `ffn_norm` in every generation.
        MlpNorm => "ffn_norm.weight",
        PostMlpNorm => "post_ffw_norm.weight",
        AttnQ => "attn_q.weight",
        AttnK => "attn_k.weight",
        AttnV => "attn_v.weight",
        AttnO => "attn_output.weight",
        AttnQNorm => "attn_q_norm.weight",
        AttnKNorm => "attn_k_norm.weight",
        MlpGate => "ffn_gate.weight",
        MlpUp => "ffn_up.weight",
        MlpDown => "ffn_down.weight",
        PleGate => "inp_gate.weight",
        PleProj => "proj.weight",
        PostPleNorm => "post_norm.weight",
        LayerScalar => "layer_output_scale.weight",
        RouterProj => "ffn_gate_inp.weight",
        RouterScale => "ffn_gate_inp.scale",
        RouterExpertScale => "ffn_down_exps.scale",
        ExpertsGateUp => "ffn_gate_up_exps.weight",
        ExpertsDown => "ffn_down_exps.weight",
        PostMlpNorm1 => "post_ffw_norm_1.weight",
        PreMoeNorm => "pre_ffw_norm_2.weight",
        PostMoeNorm => "post_ffw_norm_2.weight",
        _ => return None,
    })
}

/// Attention projections. (rows, cols) as stored, row-major; q_dim and kv_dim are the layer's own.
#[derive(Debug)]
pub struct AttentionWeights {
    /// (q_dim, d_model)
    pub q: Matrix,
    /// (kv_dim, d_model); None in a KV-shared layer.
    pub k: Option<Matrix>,
    /// (kv_dim, d_model); None in a KV-shared layer and with `k_eq_v`.
    pub v: Option<Matrix>,
    /// (d_model, q_dim)
    pub o: Matrix,
    /// (d_model) when `config.biases.attn_out`.
    pub o_bias: Option<Vec<f32>>,
    /// (head_dim) each, when `config.qk_norm`; f32 with `1 + w` applied.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
}

/// Griffin's recurrent block (transformers' `RecurrentGemmaRecurrentBlock`), w = lru_width.
#[derive(Debug)]
pub struct RecurrentWeights {
    /// (w, d_model) each, with (w) biases.
    pub linear_y: Matrix,
    pub linear_y_bias: Vec<f32>,
    pub linear_x: Matrix,
    pub linear_x_bias: Vec<f32>,
    /// (d_model, w) and (d_model)
    pub linear_out: Matrix,
    pub linear_out_bias: Vec<f32>,
    /// (w, conv1d_width): tap k of channel c at [c * conv1d_width + k]; and (w).
    pub conv: Vec<f32>,
    pub conv_bias: Vec<f32>,
    /// Λ, (w)
    pub rg_lru_param: Vec<f32>,
    /// (n_blocks, w / n_blocks, w / n_blocks), stored [block, in, out] (not transposed like a Linear), and
    /// (n_blocks, w / n_blocks) biases.
    pub input_gate: Vec<f32>,
    pub input_gate_bias: Vec<f32>,
    pub recurrent_gate: Vec<f32>,
    pub recurrent_gate_bias: Vec<f32>,
}

/// A layer's mixer weights, one variant per [`Mixer`] kind.
#[derive(Debug)]
pub enum MixerWeights {
    Attention(AttentionWeights),
    Recurrent(RecurrentWeights),
}

/// The GeGLU MLP: down(gelu(gate(x)) * up(x)).
#[derive(Debug)]
pub struct MlpWeights {
    /// (ffn_dim, d_model)
    pub gate: Matrix,
    /// (ffn_dim, d_model)
    pub up: Matrix,
    /// (d_model, ffn_dim)
    pub down: Matrix,
    /// (ffn_dim), (ffn_dim), (d_model) when `config.biases.mlp`.
    pub bias: Option<[Vec<f32>; 3]>,
}

/// Gemma 4's per-layer-input branch of one layer.
#[derive(Debug)]
pub struct PleLayerWeights {
    /// (dim, d_model)
    pub gate: Matrix,
    /// (d_model, dim)
    pub proj: Matrix,
    /// (d_model)
    pub post_norm: Vec<f32>,
}

/// Gemma 4's model-wide per-layer-embedding weights.
#[derive(Debug)]
pub struct PleWeights {
    /// (vocab_pl, n_layers · dim): each token's inputs of every layer.
    pub embed: Matrix,
    /// (n_layers · dim, d_model)
    pub proj: Matrix,
    /// (dim)
    pub norm: Vec<f32>,
}

/// Gemma 4's mixture of experts of one layer.
#[derive(Debug)]
pub struct MoeWeights {
    /// Experts per token (the config's `top_k`), for byte counts.
    pub top_k: usize,
    /// (n_experts, d_model)
    pub router: Matrix,
    /// (d_model): multiplies the router's unit-normed input.
    pub router_scale: Vec<f32>,
    /// (n_experts): multiplies each chosen expert's weight.
    pub expert_scale: Vec<f32>,
    /// Per expert (2 · moe_ffn, d_model): the gate rows, then the up rows.
    pub gate_up: Vec<Matrix>,
    /// Per expert (d_model, moe_ffn).
    pub down: Vec<Matrix>,
    /// (d_model) each: the dense MLP's output norm (`post_feedforward_layernorm_1`), the experts' input
    /// norm (`pre_feedforward_layernorm_2`) and output norm (`post_feedforward_layernorm_2`).
    pub post_mlp_norm: Vec<f32>,
    pub pre_norm: Vec<f32>,
    pub post_norm: Vec<f32>,
}

/// One residual block. Norm scales are f32 with `1 + w` applied where the config says so.
#[derive(Debug)]
pub struct LayerWeights {
    pub mixer_norm: Vec<f32>,
    pub mixer: MixerWeights,
    /// After the mixer, when `config.sandwich_norms`.
    pub post_mixer_norm: Option<Vec<f32>>,
    pub mlp_norm: Vec<f32>,
    pub mlp: MlpWeights,
    pub post_mlp_norm: Option<Vec<f32>>,
    /// Gemma 4: the per-layer-input branch after the MLP.
    pub per_layer_input: Option<PleLayerWeights>,
    /// Gemma 4: the mixture of experts beside the MLP.
    pub moe: Option<MoeWeights>,
    /// Gemma 4: multiplies the residual stream at the end of the layer.
    pub scalar: Option<f32>,
}

impl LayerWeights {
    /// The layer's matrices that a decoded token reads in full (experts: see [`LayerWeights::experts`]).
    pub fn matrices(&self) -> Vec<&Matrix> {
        let mut m = match &self.mixer {
            MixerWeights::Attention(a) => [Some(&a.q), a.k.as_ref(), a.v.as_ref(), Some(&a.o)].into_iter().flatten().collect(),
            MixerWeights::Recurrent(r) => vec![&r.linear_y, &r.linear_x, &r.linear_out],
        };
        m.extend([&self.mlp.gate, &self.mlp.up, &self.mlp.down]);
        if let Some(p) = &self.per_layer_input {
            m.extend([&p.gate, &p.proj]);
        }
        if let Some(e) = &self.moe {
            m.push(&e.router);
        }
        m
    }
    /// Every expert's matrices (a token reads only those of its routed experts).
    pub fn experts(&self) -> impl Iterator<Item = &Matrix> {
        self.moe.iter().flat_map(|e| e.gate_up.iter().chain(&e.down))
    }
}

#[derive(Debug)]
pub struct Weights {
    /// (vocab, d_model); also the output projection when tied.
    pub embed: Matrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// (vocab, d_model) when not tied to the embedding.
    pub lm_head: Option<Matrix>,
    /// The image encoder and projector, when `config.vision` is set.
    pub vision: Option<VisionWeights>,
    /// Gemma 4's per-layer embeddings, when `config.per_layer_input` is set.
    pub per_layer_input: Option<PleWeights>,
}

impl Weights {
    pub fn output(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Weight bytes one decoded token reads: every layer matrix, the output projection, the per-layer
    /// embeddings' projection, and of a mixture of experts only the `top_k` experts it is routed to (the
    /// embedding lookups read one row, left out).
    pub fn bytes_per_token(&self) -> usize {
        let per_expert = |l: &LayerWeights| {
            l.moe.as_ref().map_or(0, |e| e.top_k * (e.gate_up[0].n_bytes() + e.down[0].n_bytes()))
        };
        self.output().n_bytes()
            + self.per_layer_input.as_ref().map_or(0, |p| p.proj.n_bytes())
            + self
                .layers
                .iter()
                .map(|l| l.matrices().iter().map(|m| m.n_bytes()).sum::<usize>() + per_expert(l))
                .sum::<usize>()
    }

    /// Every matrix (the image tower's included), for byte counts and summaries.
    pub fn matrices(&self) -> impl Iterator<Item = &Matrix> {
        std::iter::once(&self.embed)
            .chain(self.lm_head.iter())
            .chain(self.per_layer_input.iter().flat_map(|p| [&p.embed, &p.proj]))
            .chain(self.layers.iter().flat_map(|l| l.matrices().into_iter().chain(l.experts())))
            .chain(self.vision.iter().flat_map(VisionWeights::matrices))
    }

    /// Pick the tensors a config needs out of a store, checking every shape. Errors: a missing tensor (by its
    /// name in this format, or the role when the format has no name for it), a wrong shape or a type whose
    /// blocks do not fit the row length.
    pub fn from_store(
        cfg: &Config,
        store: &TensorStore,
        names: NameScheme,
        norms: NormConvention,
    ) -> Result<Weights> {
        let r = Reader {
            cfg,
            store,
            names,
            norms,
        };
        let d = cfg.d_model;
        let embed = r.matrix(Role::Embed, 0, cfg.vocab_size, d)?;
        let lm_head = match r.find(Role::LmHead, 0) {
            Some((name, t)) if !cfg.tie_embeddings || names == NameScheme::Gguf => {
                Some(to_matrix(&store.path, &name, t, cfg.vocab_size, d)?)
            }
            // A tied checkpoint may still carry a copy of the embedding as lm_head: the embedding is used.
            Some(_) => None,
            None if cfg.tie_embeddings => None,
            None => return Err(r.missing(Role::LmHead, 0)),
        };
        let layers = (0..cfg.n_layers)
            .map(|i| r.layer(i))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = r.norm(Role::FinalNorm, 0, d)?;
        let per_layer_input = cfg.per_layer_input.map(|p| r.ple(&p)).transpose()?;
        // A GGUF's tower lives in a separate mmproj file (`VisionWeights::from_mmproj`, attached by the loader).
        let vision = cfg
            .vision
            .as_ref()
            .filter(|_| names == NameScheme::HuggingFace)
            .map(|v| VisionWeights::from_store(v, d, store))
            .transpose()?;
        Ok(Weights {
            embed,
            layers,
            final_norm,
            lm_head,
            vision,
            per_layer_input,
        })
    }
}

/// Reads tensors by role, checking shapes; errors name the file and the tensor.
struct Reader<'a> {
    cfg: &'a Config,
    store: &'a TensorStore,
    names: NameScheme,
    norms: NormConvention,
}

impl Reader<'_> {
    /// The tensor of `role`, under its name or, for transformers' names, under the text model's name in a
    /// vision-language checkpoint: `model.language_model.*` (transformers 5; Gemma 4's released checkpoints,
    /// whose towers this crate does not read) or `language_model.model.*` and `language_model.lm_head.*` (the
    /// Hub's PaliGemma and Gemma 3 checkpoints).
    fn find(&self, role: Role, layer: usize) -> Option<(String, &Tensor)> {
        let name = self.names.name(self.cfg.family, role, layer)?;
        let mut candidates = vec![name];
        if self.names == NameScheme::HuggingFace {
            let n = candidates[0].clone();
            match n.strip_prefix("model.") {
                Some(rest) => candidates.extend([format!("model.language_model.{rest}"), format!("language_model.model.{rest}")]),
                None => candidates.push(format!("language_model.{n}")),
            }
        }
        candidates.into_iter().find_map(|n| self.store.get(&n).map(|t| (n, t)))
    }
    fn missing(&self, role: Role, layer: usize) -> Error {
        let name = self
            .names
            .name(self.cfg.family, role, layer)
            .unwrap_or_else(|| {
                format!("{role:?} of layer {layer} (this format has no name for it)")
            });
        Error::MissingTensor {
            file: self.store.path.clone(),
            name,
        }
    }
    fn get(&self, role: Role, layer: usize) -> Result<(String, &Tensor)> {
        self.find(role, layer)
            .ok_or_else(|| self.missing(role, layer))
    }
    fn matrix(&self, role: Role, layer: usize, rows: usize, cols: usize) -> Result<Matrix> {
        let (name, t) = self.get(role, layer)?;
        to_matrix(&self.store.path, &name, t, rows, cols)
    }
    /// A small tensor widened to f32, of exactly `shape`.
    fn vector(&self, role: Role, layer: usize, shape: &[usize]) -> Result<Vec<f32>> {
        let (name, t) = self.get(role, layer)?;
        check_shape(&self.store.path, &name, t, shape)?;
        Ok(t.to_f32_vec())
    }
    fn norm(&self, role: Role, layer: usize, n: usize) -> Result<Vec<f32>> {
        let mut w = self.vector(role, layer, &[n])?;
        if self.norms == NormConvention::AddOne && self.cfg.norm_plus_one {
            w.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(w)
    }

    fn layer(&self, i: usize) -> Result<LayerWeights> {
        let c = self.cfg;
        let d = c.d_model;
        let mixer = match c.layers[i].mixer {
            Mixer::Attention(_) => MixerWeights::Attention(self.attention(i)?),
            Mixer::Recurrent(spec) => MixerWeights::Recurrent(self.recurrent(i, &spec)?),
        };
        let (f, bias) = (c.layers[i].ffn_dim, c.biases.mlp);
        let mlp = MlpWeights {
            gate: self.matrix(Role::MlpGate, i, f, d)?,
            up: self.matrix(Role::MlpUp, i, f, d)?,
            down: self.matrix(Role::MlpDown, i, d, f)?,
            bias: bias
                .then(|| {
                    Ok::<_, Error>([
                        self.vector(Role::MlpGateBias, i, &[f])?,
                        self.vector(Role::MlpUpBias, i, &[f])?,
                        self.vector(Role::MlpDownBias, i, &[d])?,
                    ])
                })
                .transpose()?,
        };
        let sandwich = c.sandwich_norms;
        Ok(LayerWeights {
            mixer_norm: self.norm(Role::MixerNorm, i, d)?,
            mixer,
            post_mixer_norm: sandwich
                .then(|| self.norm(Role::PostMixerNorm, i, d))
                .transpose()?,
            mlp_norm: self.norm(Role::MlpNorm, i, d)?,
            mlp,
            post_mlp_norm: sandwich
                .then(|| self.norm(Role::PostMlpNorm, i, d))
                .transpose()?,
            per_layer_input: c
                .per_layer_input
                .map(|p| {
                    Ok::<_, Error>(PleLayerWeights {
                        gate: self.matrix(Role::PleGate, i, p.dim, d)?,
                        proj: self.matrix(Role::PleProj, i, d, p.dim)?,
                        post_norm: self.norm(Role::PostPleNorm, i, d)?,
                    })
                })
                .transpose()?,
            moe: c.moe.map(|m| self.moe(i, &m)).transpose()?,
            scalar: c.layer_scalar.then(|| Ok::<_, Error>(self.vector(Role::LayerScalar, i, &[1])?[0])).transpose()?,
        })
    }

    fn ple(&self, p: &PerLayerInput) -> Result<PleWeights> {
        let (d, all) = (self.cfg.d_model, self.cfg.n_layers * p.dim);
        Ok(PleWeights {
            embed: self.matrix(Role::PleEmbed, 0, p.vocab_size, all)?,
            proj: self.matrix(Role::PleModelProj, 0, all, d)?,
            norm: self.norm(Role::PleProjNorm, 0, p.dim)?,
        })
    }

    fn moe(&self, i: usize, m: &MoeSpec) -> Result<MoeWeights> {
        let (d, e, f) = (self.cfg.d_model, m.n_experts, m.ffn_dim);
        Ok(MoeWeights {
            top_k: m.top_k,
            router: self.matrix(Role::RouterProj, i, e, d)?,
            router_scale: self.vector(Role::RouterScale, i, &[d])?,
            expert_scale: self.vector(Role::RouterExpertScale, i, &[e])?,
            gate_up: self.experts(Role::ExpertsGateUp, i, e, 2 * f, d)?,
            down: self.experts(Role::ExpertsDown, i, e, d, f)?,
            post_mlp_norm: self.norm(Role::PostMlpNorm1, i, d)?,
            pre_norm: self.norm(Role::PreMoeNorm, i, d)?,
            post_norm: self.norm(Role::PostMoeNorm, i, d)?,
        })
    }

    /// A (n, rows, cols) tensor as n matrices, each a view of its slice of the file.
    fn experts(&self, role: Role, layer: usize, n: usize, rows: usize, cols: usize) -> Result<Vec<Matrix>> {
        let (name, t) = self.get(role, layer)?;
        check_shape(&self.store.path, &name, t, &[n, rows, cols])?;
        let per = t.data.len() / n;
        (0..n)
            .map(|e| {
                let part = Tensor { dtype: t.dtype, shape: vec![rows, cols], data: t.data.slice(e * per, per) };
                to_matrix(&self.store.path, &format!("{name}[{e}]"), &part, rows, cols)
            })
            .collect()
    }

    fn attention(&self, i: usize) -> Result<AttentionWeights> {
        let c = self.cfg;
        let a: &AttentionSpec = c.layers[i].attention().expect("an attention layer");
        let (d, hd, kvd, qd) = (c.d_model, a.head_dim, a.kv_dim(), c.n_heads * a.head_dim);
        let own_kv = a.kv_source.is_none();
        Ok(AttentionWeights {
            q: self.matrix(Role::AttnQ, i, qd, d)?,
            k: own_kv.then(|| self.matrix(Role::AttnK, i, kvd, d)).transpose()?,
            v: (own_kv && !a.k_eq_v).then(|| self.matrix(Role::AttnV, i, kvd, d)).transpose()?,
            o: self.matrix(Role::AttnO, i, d, qd)?,
            o_bias: c
                .biases
                .attn_out
                .then(|| self.vector(Role::AttnOBias, i, &[d]))
                .transpose()?,
            q_norm: c
                .qk_norm
                .then(|| self.norm(Role::AttnQNorm, i, hd))
                .transpose()?,
            k_norm: (c.qk_norm && own_kv)
                .then(|| self.norm(Role::AttnKNorm, i, hd))
                .transpose()?,
        })
    }

    fn recurrent(&self, i: usize, s: &RecurrentSpec) -> Result<RecurrentWeights> {
        let (d, w, nb) = (self.cfg.d_model, s.lru_width, s.n_blocks);
        let bw = w / nb;
        Ok(RecurrentWeights {
            linear_y: self.matrix(Role::RecY, i, w, d)?,
            linear_y_bias: self.vector(Role::RecYBias, i, &[w])?,
            linear_x: self.matrix(Role::RecX, i, w, d)?,
            linear_x_bias: self.vector(Role::RecXBias, i, &[w])?,
            linear_out: self.matrix(Role::RecOut, i, d, w)?,
            linear_out_bias: self.vector(Role::RecOutBias, i, &[d])?,
            conv: self.vector(Role::RecConv, i, &[w, 1, s.conv1d_width])?,
            conv_bias: self.vector(Role::RecConvBias, i, &[w])?,
            rg_lru_param: self.vector(Role::RgLruParam, i, &[w])?,
            input_gate: self.vector(Role::RgLruInputGate, i, &[nb, bw, bw])?,
            input_gate_bias: self.vector(Role::RgLruInputGateBias, i, &[nb, bw])?,
            recurrent_gate: self.vector(Role::RgLruRecurrentGate, i, &[nb, bw, bw])?,
            recurrent_gate_bias: self.vector(Role::RgLruRecurrentGateBias, i, &[nb, bw])?,
        })
    }
}

pub(super) fn check_shape(file: &std::path::Path, name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape != want {
        return Err(Error::ShapeMismatch {
            file: file.into(),
            name: name.into(),
            expected: want.to_vec(),
            got: t.shape.clone(),
        });
    }
    Ok(())
}

pub(super) fn to_matrix(
    file: &std::path::Path,
    name: &str,
    t: &Tensor,
    rows: usize,
    cols: usize,
) -> Result<Matrix> {
    check_shape(file, name, t, &[rows, cols])?;
    if t.dtype.row_bytes(cols).is_none() {
        return Err(Error::UnsupportedDType {
            file: file.into(),
            name: name.into(),
            dtype: t.dtype.name().into(),
            what: format!(
                "needs rows of a multiple of {} elements, not {cols}",
                t.dtype.block_len()
            ),
        });
    }
    let mut data = t.data.clone();
    if t.dtype == DType::F32 && !data.is_aligned(4) {
        data = data.copy_aligned();
    }
    Ok(Matrix::new(t.dtype, rows, cols, data).in_kernel_layout())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every per-layer role of every family has a distinct Hugging Face name (a typo in the table that
    /// made two roles read one tensor would be caught here).
    #[test]
    fn hf_names_are_distinct_per_family() {
        use Role::*;
        let roles = Role::PER_LAYER;
        for family in [Family::Gemma2, Family::RecurrentGemma] {
            let mut names: Vec<String> = roles
                .iter()
                .filter_map(|&r| NameScheme::HuggingFace.name(family, r, 3))
                .collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "{family:?}");
        }
        // Gemma 1's pre-MLP norm is transformers' `post_attention_layernorm`.
        assert_eq!(
            NameScheme::HuggingFace
                .name(Family::Gemma, MlpNorm, 0)
                .unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(NameScheme::Gguf.name(Family::Gemma, RecX, 0), None);
    }
}

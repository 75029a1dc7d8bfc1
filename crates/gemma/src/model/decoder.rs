//! The Gemma decoder: one forward pass for every generation, driven by [`Config`].
//!
//! A call processes a batch of *chunks*, each some new positions of one sequence with that sequence's own
//! state, so one-shot prefill, chunked prefill, token-by-token decode and a server's batch of sequences at
//! different positions all go through the same code. The rows of all chunks are stacked into one activation
//! matrix, so every weight matrix is read once per call; mixers that look across positions (attention,
//! recurrence) then run per sequence against its own state.
//!
//! `forward` reads as the architecture: embed → for each layer, `x += mixer(norm(x))` then
//! `x += mlp(norm(x))` → final norm and logits. A layer's mixer is its [`MixerWeights`] variant. Gemma 4 adds
//! optional parts, each a config field: a mixture of experts beside the MLP ([`Model::moe_block`]), a per-layer
//! input gated in after it ([`Model::ple_block`]), a scalar on the layer's output, and KV-shared layers that
//! attend over an earlier layer's cache. Since a KV-shared layer writes no state, only the rows whose logits are
//! asked for go through the shared layers (transformers' `_maybe_slice_kv_shared_inputs` shortcut, for every
//! chunking here).

use std::ops::Range;

use super::config::{AttentionScope, AttentionSpec, Config};
use super::griffin::{recurrent_block, RecurrentScratch};
use super::state::{state_layout, LayerState, SeqState};
use super::weights::{AttentionWeights, LayerWeights, MixerWeights, MlpWeights, MoeWeights, PleLayerWeights, Weights};
use crate::kernels::ops::{
    geglu, rms_norm, rms_norm_inplace, rms_norm_unit_inplace, rope_apply_cs, rope_cos_sin, rope_inv_freq, softcap,
    softmax,
};
use crate::kernels::attention::{attend, Heads, Mask};
use crate::kernels::{matmul, matmul_many, ActCache, ThreadPool};
use crate::quant::DType;
use crate::{Error, Result};

/// A loaded model: validated config and immutable weights. `forward` takes `&self`: many sequences, one model.
pub struct Model {
    pub config: Config,
    pub weights: Weights,
    /// `sqrt(d_model)`, rounded to the embedding's stored type as transformers does
    /// (`torch.tensor(hidden_size**0.5, dtype=embed.dtype)`), f32 for quantized embeddings as llama.cpp does;
    /// always rounded to bf16 when the config says so (`Config::embed_scale_bf16`, RecurrentGemma).
    pub embed_scale: f32,
    /// `sqrt(per-layer input dim)`, rounded to the per-layer table's stored type like `embed_scale` (Gemma 4).
    ple_scale: f32,
    /// The distinct RoPE inverse-frequency tables (a layer's rotary_dims / 2 each, zeros where a pair does not
    /// turn): one or two (local and global layers).
    inv_freqs: Vec<Vec<f32>>,
    /// Per layer: its table in `inv_freqs` (attention layers only).
    layer_rope: Vec<usize>,
    /// The first KV-shared layer (all later ones are shared too): from it on only rows with logits wanted run.
    first_shared: Option<usize>,
    /// What a [`SeqState`] for this model looks like (checked before a forward pass touches any state).
    layout: Vec<(u8, usize, usize)>,
}

/// Which positions of a chunk need output logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    None,
    Last,
    All,
}

/// Ready-made embedding rows (image features projected to d_model) that replace the embeddings of some of
/// a chunk's tokens (their placeholders). Used as given: not multiplied by the embedding scale.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingRows<'a> {
    /// Offset in the chunk of the first replaced token.
    pub at: usize,
    /// (n, d_model) row-major.
    pub data: &'a [f32],
}

/// New positions of one sequence: token ids (embedded and scaled), some of whose rows may be replaced by
/// ready-made embeddings, with the spans that attend bidirectionally.
pub struct Chunk<'a> {
    pub tokens: &'a [u32],
    /// Rows replacing the embeddings of tokens of this chunk (sorted, disjoint).
    pub rows: &'a [EmbeddingRows<'a>],
    /// Offsets in this chunk (sorted, disjoint) whose positions see each other both ways: PaliGemma's prefix,
    /// one Gemma 3 image's soft tokens. A span must lie inside one chunk, since its first query sees its last
    /// key; outside the spans attention is causal.
    pub bidirectional: &'a [Range<usize>],
    pub state: &'a mut SeqState,
    pub logits: LogitsWanted,
}

impl<'a> Chunk<'a> {
    /// Token ids only, causal.
    pub fn new(tokens: &'a [u32], state: &'a mut SeqState, logits: LogitsWanted) -> Self {
        Chunk {
            tokens,
            rows: &[],
            bidirectional: &[],
            state,
            logits,
        }
    }
    pub fn n(&self) -> usize {
        self.tokens.len()
    }
}

/// The rows of one chunk that are still computed: offsets `first..first + n` of the chunk (all of them, until
/// the KV-shared layers, which only need the rows whose logits are asked for).
#[derive(Debug, Clone, Copy)]
struct Span {
    first: usize,
    n: usize,
}

/// Activation buffers, reused across calls so that decoding does not allocate once they have grown.
#[derive(Default)]
pub struct Scratch {
    /// (T, d_model) residual stream
    x: Vec<f32>,
    /// (T, d_model) normed input of a sub-block
    x_norm: Vec<f32>,
    /// (T, q_dim)
    q: Vec<f32>,
    /// (T, kv_dim)
    k: Vec<f32>,
    v: Vec<f32>,
    /// (T, q_dim) attention output before o_proj
    att: Vec<f32>,
    /// (T, d_model) sub-block output
    out: Vec<f32>,
    /// (T, ffn_dim)
    gate: Vec<f32>,
    up: Vec<f32>,
    acts: ActCache,
    /// (rows wanted, d_model) and (rows wanted, vocab)
    wanted_x: Vec<f32>,
    logits: Vec<f32>,
    /// (rope tables, T, rope_dims): cos and sin of every token's angles, shared by all layers with that table.
    rope: Vec<f32>,
    /// Per chunk: the range of rows of `logits` it asked for.
    logit_rows: Vec<Range<usize>>,
    /// The recurrent (Griffin) mixer's buffers.
    rec: RecurrentScratch,
    /// Rows of the batch whose logits were asked for (kept here so that decoding does not allocate).
    wanted: Vec<usize>,
    /// Per chunk: the rows still computed.
    spans: Vec<Span>,
    /// (T, n_layers · ple_dim): every row's per-layer inputs (Gemma 4); (n_layers · ple_dim) one token's table row.
    ple: Vec<f32>,
    ple_tok: Vec<f32>,
    /// (T, ple_dim): the per-layer branch's gate, and this layer's slice of `ple`.
    ple_gate: Vec<f32>,
    ple_up: Vec<f32>,
    /// The mixture of experts' buffers.
    moe: MoeScratch,
}

/// Buffers of the mixture of experts.
#[derive(Default)]
struct MoeScratch {
    /// (T, d_model): the router's input, then the experts' input.
    x: Vec<f32>,
    /// (T, d_model): the experts' weighted sum.
    out: Vec<f32>,
    /// (T, n_experts): router scores, then probabilities.
    probs: Vec<f32>,
    /// (T, top_k): each row's experts and weights.
    routes: Vec<(usize, f32)>,
    /// The rows routed to one expert and their weights.
    rows: Vec<(usize, f32)>,
    /// (rows, d_model), (rows, 2 · moe_ffn), (rows, moe_ffn), (rows, d_model): one expert's input, gate/up,
    /// hidden and output.
    ex_x: Vec<f32>,
    ex_gu: Vec<f32>,
    ex_h: Vec<f32>,
    ex_out: Vec<f32>,
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }
    /// Logits of chunk `i` of the last forward call: (rows, vocab) flattened, rows as asked for.
    pub fn logits(&self, i: usize, vocab: usize) -> &[f32] {
        let r = &self.logit_rows[i];
        &self.logits[r.start * vocab..r.end * vocab]
    }
    /// Size every buffer for `t` rows of this config.
    fn grow(&mut self, c: &Config, t: usize) {
        let (d, qd, kvd, fd) = (c.d_model, c.max_q_dim(), c.max_kv_dim(), c.max_ffn_dim());
        if let Some(p) = c.per_layer_input {
            grow(&mut self.ple, t * c.n_layers * p.dim);
            grow(&mut self.ple_tok, c.n_layers * p.dim);
            grow(&mut self.ple_gate, t * p.dim);
            grow(&mut self.ple_up, t * p.dim);
        }
        if let Some(m) = c.moe {
            grow(&mut self.moe.x, t * d);
            grow(&mut self.moe.out, t * d);
            grow(&mut self.moe.probs, t * m.n_experts);
        }
        for (v, n) in [
            (&mut self.x, d),
            (&mut self.x_norm, d),
            (&mut self.out, d),
            (&mut self.q, qd),
            (&mut self.att, qd),
            (&mut self.k, kvd),
            (&mut self.v, kvd),
            (&mut self.gate, fd),
            (&mut self.up, fd),
        ] {
            grow(v, t * n);
        }
    }
}

pub(super) fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

impl Model {
    /// A model from a validated config and weights loaded for it. (Infallible today; a `Result` so that a
    /// config the decoder cannot run is refused here, with [`Error::Unsupported`], never mid-pass.)
    pub fn new(config: Config, weights: Weights) -> Result<Model> {
        // transformers: `embed_scale.to(weight.dtype)`: the multiplier is rounded to the table's stored type.
        let rounded = |s: f32, dtype: DType| match dtype {
            DType::BF16 => half::bf16::from_f32(s).to_f32(),
            DType::F16 => half::f16::from_f32(s).to_f32(),
            _ => s,
        };
        let embed_scale = match (config.d_model as f32).sqrt() {
            s if config.embed_scale_bf16 => half::bf16::from_f32(s).to_f32(),
            s => rounded(s, weights.embed.dtype),
        };
        let ple_scale = match (&config.per_layer_input, &weights.per_layer_input) {
            (Some(p), Some(w)) => rounded((p.dim as f32).sqrt(), w.embed.dtype),
            _ => 1.0,
        };
        let mut inv_freqs: Vec<Vec<f32>> = Vec::new();
        let mut layer_rope = Vec::new();
        for l in &config.layers {
            let Some(a) = l.attention() else {
                layer_rope.push(usize::MAX);
                continue;
            };
            let mut f = rope_inv_freq(a.rotary_dims, a.rope.base, a.rope.linear_factor);
            f[a.rope_pairs..].fill(0.0);
            let i = inv_freqs.iter().position(|g| *g == f).unwrap_or_else(|| {
                inv_freqs.push(f);
                inv_freqs.len() - 1
            });
            layer_rope.push(i);
        }
        let layout = state_layout(&config);
        let first_shared = config.layers.iter().position(|l| l.attention().is_some_and(|a| a.kv_source.is_some()));
        Ok(Model {
            config,
            weights,
            embed_scale,
            ple_scale,
            inv_freqs,
            layer_rope,
            first_shared,
            layout,
        })
    }

    /// A fresh state for a sequence of at most `max_pos` positions (capped at the model's context).
    pub fn new_state(&self, max_pos: usize) -> SeqState {
        SeqState::new(&self.config, max_pos.min(self.config.context_len))
    }

    /// The text-stream rows of one image, (tokens_per_image, d_model): the SigLIP encoder and the projector
    /// ([`VisionWeights::embed_image`](super::siglip::VisionWeights::embed_image)), to pass as
    /// [`EmbeddingRows`] in place of the image's placeholder tokens. `pixels`: (3, image_size, image_size),
    /// preprocessed. Errors: a model without a vision tower, or pixels of another size.
    pub fn embed_image(&self, pool: &ThreadPool, pixels: &[f32]) -> Result<Vec<f32>> {
        self.embed_image_timed(pool, pixels).map(|(rows, _)| rows)
    }

    /// [`Model::embed_image`], with the share of its time spent in attention between patches.
    pub fn embed_image_timed(&self, pool: &ThreadPool, pixels: &[f32]) -> Result<(Vec<f32>, super::siglip::EncodeTimes)> {
        match (&self.config.vision, &self.weights.vision) {
            (Some(cfg), Some(w)) => w.embed_image_timed(cfg, pool, pixels),
            _ => Err(Error::Unsupported { feature: "images with a text-only model".into() }),
        }
    }

    /// Run the new positions of every chunk through the model, appending them to each chunk's state; the
    /// logits asked for are left in `scratch` (see [`Scratch::logits`]). Fails, before touching any state, on
    /// an out-of-vocabulary id, a chunk that would pass its sequence's `max_pos`, a state made for another
    /// model, or embedding rows / bidirectional spans that do not fit their chunk.
    pub fn forward(&self, pool: &ThreadPool, chunks: &mut [Chunk], s: &mut Scratch) -> Result<()> {
        for ch in chunks.iter() {
            self.validate(ch)?;
        }
        let t_total: usize = chunks.iter().map(Chunk::n).sum();
        s.grow(&self.config, t_total);
        s.spans.clear();
        s.spans.extend(chunks.iter().map(|ch| Span { first: 0, n: ch.n() }));
        self.embed(chunks, &mut s.x[..t_total * self.config.d_model]);
        if self.config.per_layer_input.is_some() {
            self.per_layer_inputs(pool, chunks, t_total, s);
        }
        self.rope_tables(chunks, t_total, s);
        for ch in chunks.iter_mut() {
            let (pos, n) = (ch.state.pos, ch.n());
            for l in &mut ch.state.layers {
                if let LayerState::Kv(kv) = l {
                    kv.reserve(pos, n);
                }
            }
        }
        let mut t = t_total;
        for (l, lw) in self.weights.layers.iter().enumerate() {
            if Some(l) == self.first_shared {
                t = self.keep_wanted_rows(chunks, t, s);
                self.rope_tables(chunks, t, s);
            }
            self.layer(pool, l, lw, chunks, t, s);
        }
        self.logits(pool, chunks, t, s);
        Ok(())
    }

    /// Drop the rows whose logits no chunk asked for (a chunk's last row for `Last`, none for `None`), moving
    /// the rest of the residual stream and per-layer inputs down; returns the rows left. Only valid once no
    /// later layer writes state, i.e. from the first KV-shared layer on.
    fn keep_wanted_rows(&self, chunks: &[Chunk], t: usize, s: &mut Scratch) -> usize {
        let d = self.config.d_model;
        let ple = self.config.per_layer_input.map_or(0, |p| p.dim * self.config.n_layers);
        let (mut from, mut to) = (0, 0);
        for (ch, sp) in chunks.iter().zip(s.spans.iter_mut()) {
            debug_assert_eq!((sp.first, sp.n), (0, ch.n()));
            let keep = match ch.logits {
                LogitsWanted::All => ch.n(),
                LogitsWanted::Last => ch.n().min(1),
                LogitsWanted::None => 0,
            };
            let src = from + ch.n() - keep;
            if src != to {
                s.x.copy_within(src * d..(src + keep) * d, to * d);
                s.ple.copy_within(src * ple..(src + keep) * ple, to * ple);
            }
            *sp = Span { first: ch.n() - keep, n: keep };
            from += ch.n();
            to += keep;
        }
        debug_assert_eq!(from, t);
        to
    }

    fn validate(&self, ch: &Chunk) -> Result<()> {
        let c = &self.config;
        if *ch.state.layout != *self.layout {
            return Err(Error::ForeignState {
                state_layers: ch.state.layout.len(),
                model_layers: self.layout.len(),
            });
        }
        let vocab_size = c.per_layer_input.map_or(c.vocab_size, |p| p.vocab_size.min(c.vocab_size));
        if let Some(&id) = ch.tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(Error::TokenOutOfVocab { id, vocab_size });
        }
        if ch.state.pos + ch.n() > ch.state.max_pos {
            return Err(Error::ContextFull {
                needed: ch.state.pos + ch.n(),
                max_pos: ch.state.max_pos,
            });
        }
        let mut end = 0;
        for r in ch.rows {
            let n = r.data.len() / c.d_model;
            if r.data.len() % c.d_model != 0 || r.at < end || r.at + n > ch.n() {
                return Err(Error::Invalid(format!(
                    "embedding rows at offset {} ({} values) do not fit a chunk of {} positions as whole rows of d_model = {}, after the previous rows",
                    r.at,
                    r.data.len(),
                    ch.n(),
                    c.d_model
                )));
            }
            end = r.at + n;
        }
        end = 0;
        for sp in ch.bidirectional {
            if sp.start < end || sp.start > sp.end || sp.end > ch.n() {
                return Err(Error::Invalid(format!(
                    "bidirectional span {sp:?} does not lie inside the chunk's {} positions after the previous span",
                    ch.n()
                )));
            }
            end = sp.end;
        }
        Ok(())
    }

    /// Token embeddings × sqrt(d_model) into `x` (T, d_model), then the ready-made rows over their tokens.
    fn embed(&self, chunks: &[Chunk], x: &mut [f32]) {
        let d = self.config.d_model;
        let rows = x.chunks_exact_mut(d);
        for (&tok, x) in chunks.iter().flat_map(|ch| ch.tokens).zip(rows) {
            self.weights.embed.dequantize_row(tok as usize, x);
            x.iter_mut().for_each(|v| *v *= self.embed_scale);
        }
        let mut row0 = 0;
        for ch in chunks {
            for r in ch.rows {
                let at = (row0 + r.at) * d;
                x[at..at + r.data.len()].copy_from_slice(r.data);
            }
            row0 += ch.n();
        }
    }

    /// Gemma 4's per-layer inputs of every row, (T, n_layers · dim), from the embedded rows `x` and the tokens
    /// (transformers' `get_per_layer_inputs` + `project_per_layer_inputs`):
    /// `(norm(proj(x) · d_model^-1/2) + table[token] · sqrt(dim)) · 2^-1/2`, the norm per layer's slice.
    fn per_layer_inputs(&self, pool: &ThreadPool, chunks: &[Chunk], t: usize, s: &mut Scratch) {
        let (c, w) = (&self.config, self.weights.per_layer_input.as_ref().expect("loaded with the config"));
        let (d, dim) = (c.d_model, c.per_layer_input.expect("checked by the caller").dim);
        let all = c.n_layers * dim;
        let ple = &mut s.ple[..t * all];
        matmul(pool, &w.proj, &s.x[..t * d], ple, &mut s.acts);
        let (proj_scale, mix) = ((d as f32).powf(-0.5), 0.5f32.sqrt());
        let tok = &mut s.ple_tok[..all];
        for (&id, row) in chunks.iter().flat_map(|ch| ch.tokens).zip(ple.chunks_exact_mut(all)) {
            w.embed.dequantize_row(id as usize, tok);
            for (p, e) in row.chunks_exact_mut(dim).zip(tok.chunks_exact(dim)) {
                p.iter_mut().for_each(|v| *v *= proj_scale);
                rms_norm_inplace(p, &w.norm, c.norm_eps);
                p.iter_mut().zip(e).for_each(|(v, &e)| *v = (*v + e * self.ple_scale) * mix);
            }
        }
    }

    /// cos/sin of every computed row's angles, once per RoPE table rather than per layer and head: table f
    /// holds (t, width_f) values, the tables one after the other.
    fn rope_tables(&self, chunks: &[Chunk], t: usize, s: &mut Scratch) {
        grow(&mut s.rope, t * self.inv_freqs.iter().map(|f| 2 * f.len()).sum::<usize>());
        let mut at = 0;
        for inv in &self.inv_freqs {
            let w = 2 * inv.len();
            for (ch, sp) in chunks.iter().zip(&s.spans) {
                for i in sp.first..sp.first + sp.n {
                    rope_cos_sin(self.config.position_offset + ch.state.pos + i, inv, &mut s.rope[at..at + w]);
                    at += w;
                }
            }
        }
    }

    /// Layer `l`'s RoPE table in `s.rope` for `t` rows: (offset, width).
    fn rope_table(&self, l: usize, t: usize) -> (usize, usize) {
        let f = self.layer_rope[l];
        let before: usize = self.inv_freqs[..f].iter().map(|g| 2 * g.len()).sum();
        (t * before, 2 * self.inv_freqs[f].len())
    }

    /// One residual block: `x += post_norm(mixer(norm(x)))`, then `x += post_norm(mlp(norm(x)))`.
    fn layer(
        &self,
        pool: &ThreadPool,
        l: usize,
        lw: &LayerWeights,
        chunks: &mut [Chunk],
        t: usize,
        s: &mut Scratch,
    ) {
        let (d, eps) = (self.config.d_model, self.config.norm_eps);
        norm_rows(&s.x[..t * d], &lw.mixer_norm, eps, &mut s.x_norm[..t * d]);
        match &lw.mixer {
            MixerWeights::Attention(aw) => self.attention_block(pool, l, aw, chunks, t, s),
            MixerWeights::Recurrent(rw) => recurrent_block(
                pool,
                l,
                rw,
                chunks,
                &s.x_norm[..t * d],
                &mut s.out[..t * d],
                &mut s.acts,
                &mut s.rec,
            ),
        }
        add_residual(
            &mut s.x[..t * d],
            &mut s.out[..t * d],
            lw.post_mixer_norm.as_deref(),
            eps,
            d,
        );
        norm_rows(&s.x[..t * d], &lw.mlp_norm, eps, &mut s.x_norm[..t * d]);
        self.mlp_block(pool, &lw.mlp, self.config.layers[l].ffn_dim, t, s);
        if let Some(moe) = &lw.moe {
            // transformers: `post_feedforward_layernorm_1(mlp(..)) + post_feedforward_layernorm_2(experts(..))`,
            // both from the same residual stream, then the layer's post-feedforward norm of the sum.
            s.out[..t * d].chunks_exact_mut(d).for_each(|r| rms_norm_inplace(r, &moe.post_mlp_norm, eps));
            self.moe_block(pool, moe, t, s);
            s.out[..t * d].iter_mut().zip(&s.moe.out[..t * d]).for_each(|(a, b)| *a += b);
        }
        add_residual(
            &mut s.x[..t * d],
            &mut s.out[..t * d],
            lw.post_mlp_norm.as_deref(),
            eps,
            d,
        );
        if let Some(p) = &lw.per_layer_input {
            self.ple_block(pool, l, p, t, s);
        }
        if let Some(c) = lw.scalar {
            // transformers: `hidden_states *= self.layer_scalar`, the residual stream included.
            s.x[..t * d].iter_mut().for_each(|v| *v *= c);
        }
    }

    /// Gemma 4's per-layer input branch: `x += norm(proj(gelu_tanh(gate(x)) · per_layer_input[l]))`.
    fn ple_block(&self, pool: &ThreadPool, l: usize, w: &PleLayerWeights, t: usize, s: &mut Scratch) {
        let (d, dim) = (self.config.d_model, w.gate.rows);
        let all = self.config.n_layers * dim;
        let (gate, up) = (&mut s.ple_gate[..t * dim], &mut s.ple_up[..t * dim]);
        matmul(pool, &w.gate, &s.x[..t * d], gate, &mut s.acts);
        for (u, p) in up.chunks_exact_mut(dim).zip(s.ple.chunks_exact(all)) {
            u.copy_from_slice(&p[l * dim..(l + 1) * dim]);
        }
        geglu(gate, up);
        matmul(pool, &w.proj, gate, &mut s.out[..t * d], &mut s.acts);
        add_residual(&mut s.x[..t * d], &mut s.out[..t * d], Some(&w.post_norm), self.config.norm_eps, d);
    }

    /// Gemma 4's mixture of experts on the residual stream `x` into `s.moe.out` (T, d_model), computing only
    /// the experts each row is routed to (transformers' `Gemma4TextRouter` + `Gemma4TextExperts`):
    /// - router: `probs = softmax(proj(unit_norm(x) · scale · d_model^-1/2))`; the `top_k` largest, divided by
    ///   their sum, times `per_expert_scale` of each;
    /// - expert e on `pre_norm(x)`: `down_e(gelu_tanh(gate) · up)` with `[gate; up] = gate_up_e(..)`;
    /// - out = Σ over the row's experts (in expert order, as transformers' `index_add_`) of weight · expert.
    fn moe_block(&self, pool: &ThreadPool, w: &MoeWeights, t: usize, s: &mut Scratch) {
        let (c, d) = (&self.config, self.config.d_model);
        let spec = c.moe.expect("loaded with the config");
        let (n_e, k, f) = (spec.n_experts, spec.top_k, spec.ffn_dim);
        let m = &mut s.moe;
        let root = (d as f32).powf(-0.5);
        for (xr, r) in s.x[..t * d].chunks_exact(d).zip(m.x.chunks_exact_mut(d)) {
            rms_norm(xr, &w.router_scale, c.norm_eps, r);
            r.iter_mut().for_each(|v| *v *= root);
        }
        matmul(pool, &w.router, &m.x[..t * d], &mut m.probs[..t * n_e], &mut s.acts);
        m.routes.clear();
        for p in m.probs[..t * n_e].chunks_exact_mut(n_e) {
            softmax(p);
            let start = m.routes.len();
            for _ in 0..k {
                // The largest remaining probability (the lowest index on a tie, as torch.topk on CPU).
                let (e, &pe) = p
                    .iter()
                    .enumerate()
                    .filter(|(e, _)| !m.routes[start..].iter().any(|r| r.0 == *e))
                    .fold((usize::MAX, &f32::NEG_INFINITY), |best, cur| if *cur.1 > *best.1 { cur } else { best });
                m.routes.push((e, pe));
            }
            let sum: f32 = m.routes[start..].iter().map(|r| r.1).sum();
            for r in &mut m.routes[start..] {
                r.1 = r.1 / sum * w.expert_scale[r.0];
            }
        }
        norm_rows(&s.x[..t * d], &w.pre_norm, c.norm_eps, &mut m.x[..t * d]);
        m.out[..t * d].fill(0.0);
        for e in 0..n_e {
            m.rows.clear();
            m.rows.extend(m.routes.iter().enumerate().filter(|(_, r)| r.0 == e).map(|(i, r)| (i / k, r.1)));
            let n = m.rows.len();
            if n == 0 {
                continue;
            }
            for b in [&mut m.ex_x, &mut m.ex_out] {
                grow(b, n * d);
            }
            grow(&mut m.ex_gu, n * 2 * f);
            grow(&mut m.ex_h, n * f);
            for (i, &(r, _)) in m.rows.iter().enumerate() {
                m.ex_x[i * d..(i + 1) * d].copy_from_slice(&m.x[r * d..(r + 1) * d]);
            }
            matmul(pool, &w.gate_up[e], &m.ex_x[..n * d], &mut m.ex_gu[..n * 2 * f], &mut s.acts);
            for (gu, h) in m.ex_gu[..n * 2 * f].chunks_exact_mut(2 * f).zip(m.ex_h.chunks_exact_mut(f)) {
                let (gate, up) = gu.split_at_mut(f);
                geglu(gate, up);
                h.copy_from_slice(gate);
            }
            matmul(pool, &w.down[e], &m.ex_h[..n * f], &mut m.ex_out[..n * d], &mut s.acts);
            for (i, &(r, wt)) in m.rows.iter().enumerate() {
                let o = &m.ex_out[i * d..(i + 1) * d];
                m.out[r * d..(r + 1) * d].iter_mut().zip(o).for_each(|(a, &b)| *a += wt * b);
            }
        }
        m.out[..t * d].chunks_exact_mut(d).for_each(|r| rms_norm_inplace(r, &w.post_norm, c.norm_eps));
    }

    /// `out = o(attention(rope(qk_norm(q)), rope(qk_norm(k)), v_norm(v)))` of `x_norm`, appending each chunk's
    /// keys and values to its sequence's cache first; a KV-shared layer computes only q and attends over its
    /// source layer's cache (already holding this chunk: the source comes earlier). With `k_eq_v` the values
    /// are the projected keys before their norm and RoPE.
    fn attention_block(
        &self,
        pool: &ThreadPool,
        l: usize,
        w: &AttentionWeights,
        chunks: &mut [Chunk],
        t: usize,
        s: &mut Scratch,
    ) {
        let c = &self.config;
        let a: &AttentionSpec = c.layers[l].attention().expect("an attention layer");
        let (d, hd, kvd) = (c.d_model, a.head_dim, a.kv_dim());
        let qd = c.n_heads * hd;
        let (q, k, v, att) = (
            &mut s.q[..t * qd],
            &mut s.k[..t * kvd],
            &mut s.v[..t * kvd],
            &mut s.att[..t * qd],
        );
        let x = &s.x_norm[..t * d];
        match (&w.k, &w.v) {
            (Some(wk), Some(wv)) => matmul_many(pool, x, &mut [(&w.q, &mut *q), (wk, &mut *k), (wv, &mut *v)], &mut s.acts),
            (Some(wk), None) => {
                matmul_many(pool, x, &mut [(&w.q, &mut *q), (wk, &mut *k)], &mut s.acts);
                v.copy_from_slice(k);
            }
            _ => matmul(pool, &w.q, x, q, &mut s.acts),
        }
        let own = a.kv_source.is_none();
        if let Some(qn) = &w.q_norm {
            q.chunks_exact_mut(hd).for_each(|h| rms_norm_inplace(h, qn, c.norm_eps));
        }
        if let (Some(kn), true) = (&w.k_norm, own) {
            k.chunks_exact_mut(hd).for_each(|h| rms_norm_inplace(h, kn, c.norm_eps));
        }
        if c.v_norm && own {
            v.chunks_exact_mut(hd).for_each(|h| rms_norm_unit_inplace(h, c.norm_eps));
        }
        let (at, rd) = self.rope_table(l, t);
        for (r, cs) in s.rope[at..at + t * rd].chunks_exact(rd).enumerate() {
            q[r * qd..(r + 1) * qd]
                .chunks_exact_mut(hd)
                .for_each(|h| rope_apply_cs(&mut h[..rd], cs));
            if own {
                k[r * kvd..(r + 1) * kvd]
                    .chunks_exact_mut(hd)
                    .for_each(|h| rope_apply_cs(&mut h[..rd], cs));
            }
        }
        let heads = Heads { n_heads: c.n_heads, n_kv_heads: a.n_kv_heads, head_dim: hd, scale: c.query_scale, softcap: c.attn_softcap };
        let mut row = 0;
        for (ch, sp) in chunks.iter_mut().zip(&s.spans) {
            let (p0, n, q0) = (ch.state.pos, sp.n, ch.state.pos + sp.first);
            if let LayerState::Kv(kv) = &mut ch.state.layers[l] {
                // Append this chunk's keys and values, then attend: the ring was sized to keep what it needs.
                for i in 0..n {
                    let slot = kv.slot(q0 + i);
                    kv.k[slot * kvd..(slot + 1) * kvd].copy_from_slice(&k[(row + i) * kvd..(row + i + 1) * kvd]);
                    kv.v[slot * kvd..(slot + 1) * kvd].copy_from_slice(&v[(row + i) * kvd..(row + i + 1) * kvd]);
                }
            }
            let kv = match &ch.state.layers[a.kv_source.unwrap_or(l)] {
                LayerState::Kv(kv) => kv,
                _ => unreachable!("state layout checked in forward"),
            };
            // The chunk's bidirectional spans in absolute positions (no allocation when there are none).
            let spans: Vec<Range<usize>> = ch.bidirectional.iter().map(|r| p0 + r.start..p0 + r.end).collect();
            let (view, mask) = (kv.view(p0 + ch.n()), layer_mask(a.scope, &spans, c.window_bounds_spans));
            let (q, att) = (&q[row * qd..(row + n) * qd], &mut att[row * qd..(row + n) * qd]);
            attend(pool, &heads, q, q0, &view, &mask, att);
            row += n;
        }
        let out = &mut s.out[..t * d];
        matmul(pool, &w.o, att, out, &mut s.acts);
        if let Some(b) = &w.o_bias {
            add_bias(out, b);
        }
    }

    /// `out = down(gelu_tanh(gate(x_norm)) · up(x_norm))`, with biases where the config has them.
    fn mlp_block(&self, pool: &ThreadPool, w: &MlpWeights, f: usize, t: usize, s: &mut Scratch) {
        let d = self.config.d_model;
        let (gate, up) = (&mut s.gate[..t * f], &mut s.up[..t * f]);
        matmul_many(
            pool,
            &s.x_norm[..t * d],
            &mut [(&w.gate, &mut *gate), (&w.up, &mut *up)],
            &mut s.acts,
        );
        if let Some([bg, bu, _]) = &w.bias {
            add_bias(gate, bg);
            add_bias(up, bu);
        }
        geglu(gate, up);
        matmul(pool, &w.down, gate, &mut s.out[..t * d], &mut s.acts);
        if let Some([_, _, bd]) = &w.bias {
            add_bias(&mut s.out[..t * d], bd);
        }
    }

    /// Final norm and output projection, only for the rows asked for; advances every chunk's position.
    fn logits(&self, pool: &ThreadPool, chunks: &mut [Chunk], t: usize, s: &mut Scratch) {
        let c = &self.config;
        let d = c.d_model;
        s.logit_rows.clear();
        let mut wanted = std::mem::take(&mut s.wanted);
        wanted.clear();
        let mut row = 0;
        // A chunk's computed rows always end with its last one, and include every row asked for.
        for (ch, sp) in chunks.iter_mut().zip(&s.spans) {
            let n = sp.n;
            let start = wanted.len();
            match ch.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last if n > 0 => wanted.push(row + n - 1),
                LogitsWanted::Last => {}
                LogitsWanted::All => wanted.extend(row..row + n),
            }
            s.logit_rows.push(start..wanted.len());
            ch.state.pos += ch.n();
            row += n;
        }
        debug_assert_eq!(row, t);
        grow(&mut s.wanted_x, wanted.len() * d);
        for (i, &r) in wanted.iter().enumerate() {
            rms_norm(
                &s.x[r * d..(r + 1) * d],
                &self.weights.final_norm,
                c.norm_eps,
                &mut s.wanted_x[i * d..(i + 1) * d],
            );
        }
        s.logits.resize(wanted.len() * c.vocab_size, 0.0);
        matmul(
            pool,
            self.weights.output(),
            &s.wanted_x[..wanted.len() * d],
            &mut s.logits,
            &mut s.acts,
        );
        if let Some(cap) = c.final_softcap {
            softcap(&mut s.logits, cap);
        }
        s.wanted = wanted;
    }
}

/// RMSNorm of every row of `x` (rows of `scale.len()`) into `out`.
fn norm_rows(x: &[f32], scale: &[f32], eps: f32, out: &mut [f32]) {
    let d = scale.len();
    for (xr, nr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        rms_norm(xr, scale, eps, nr);
    }
}

/// `y[r] += b` for every row r.
pub(super) fn add_bias(y: &mut [f32], b: &[f32]) {
    for r in y.chunks_exact_mut(b.len()) {
        r.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    }
}

/// `x += norm(y)` (with a post-norm) or `x += y`.
fn add_residual(x: &mut [f32], y: &mut [f32], post_norm: Option<&[f32]>, eps: f32, d: usize) {
    if let Some(pn) = post_norm {
        y.chunks_exact_mut(d)
            .for_each(|r| rms_norm_inplace(r, pn, eps));
    }
    x.iter_mut().zip(y.iter()).for_each(|(a, b)| *a += b);
}

/// The mask of a layer's attention scope (global layers see every earlier position, local ones a sliding
/// window), with the chunk's bidirectional spans (absolute positions) OR'ed in; with `window_bounds_spans`
/// (Gemma 3) a local layer's window still bounds the past inside a span.
fn layer_mask(scope: AttentionScope, bidirectional: &[Range<usize>], window_bounds_spans: bool) -> Mask<'_> {
    let mask = match scope {
        AttentionScope::Global => Mask::causal(),
        AttentionScope::Local { window } => Mask::sliding(window),
    };
    Mask { window_bounds_spans, ..mask.with_bidirectional(bidirectional) }
}

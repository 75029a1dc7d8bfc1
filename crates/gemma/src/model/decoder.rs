//! The Gemma decoder: one forward pass for every generation, driven by [`Config`].
//!
//! A call processes a batch of *chunks*, each some new positions of one sequence with that sequence's own
//! state, so one-shot prefill, chunked prefill, token-by-token decode and a server's batch of sequences at
//! different positions all go through the same code. The rows of all chunks are stacked into one activation
//! matrix, so every weight matrix is read once per call; mixers that look across positions (attention,
//! recurrence) then run per sequence against its own state.
//!
//! `forward` reads as the architecture: embed → for each layer, `x += mixer(norm(x))` then
//! `x += mlp(norm(x))` → final norm and logits. A layer's mixer is its [`MixerWeights`] variant.

use std::ops::Range;

use super::config::{AttentionScope, Config};
use super::griffin::{recurrent_block, RecurrentScratch};
use super::state::{state_layout, LayerState, SeqState};
use super::weights::{AttentionWeights, LayerWeights, MixerWeights, MlpWeights, Weights};
use crate::kernels::ops::{
    geglu, rms_norm, rms_norm_inplace, rope_apply_cs, rope_cos_sin, rope_inv_freq, softcap,
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
    /// The distinct RoPE inverse-frequency tables (rope_dims / 2 each): one or two (local and global layers).
    inv_freqs: Vec<Vec<f32>>,
    /// Per layer: its table in `inv_freqs` (attention layers only).
    layer_rope: Vec<usize>,
    /// Leading dimensions of each head that RoPE rotates (`head_dim`, or less with a partial rotary factor);
    /// the rest pass through unrotated, as transformers' `apply_rotary_pos_emb` on `query_rot`.
    rope_dims: usize,
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
        let (d, qd, kvd, fd) = (c.d_model, c.q_dim(), c.kv_dim(), c.ffn_dim);
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
    /// Errors: a config the decoder cannot run ([`Error::Unsupported`]: rotary widths that differ per layer).
    pub fn new(config: Config, weights: Weights) -> Result<Model> {
        // One table width for all layers: the RoPE tables are shared by every layer with the same frequencies.
        let rope_dims = config.attention_layers().next().map_or(config.head_dim, |a| a.rotary_dims);
        if config.attention_layers().any(|a| a.rotary_dims != rope_dims) {
            return Err(Error::Unsupported {
                feature: "rotary dimensions that differ between layers".into(),
            });
        }
        let embed_scale = {
            let s = (config.d_model as f32).sqrt();
            match weights.embed.dtype {
                _ if config.embed_scale_bf16 => half::bf16::from_f32(s).to_f32(),
                DType::BF16 => half::bf16::from_f32(s).to_f32(),
                DType::F16 => half::f16::from_f32(s).to_f32(),
                _ => s,
            }
        };
        let mut inv_freqs: Vec<Vec<f32>> = Vec::new();
        let mut layer_rope = Vec::new();
        for l in &config.layers {
            let Some(a) = l.attention() else {
                layer_rope.push(usize::MAX);
                continue;
            };
            let f = rope_inv_freq(rope_dims, a.rope.base, a.rope.linear_factor);
            let i = inv_freqs.iter().position(|g| *g == f).unwrap_or_else(|| {
                inv_freqs.push(f);
                inv_freqs.len() - 1
            });
            layer_rope.push(i);
        }
        let layout = state_layout(&config);
        Ok(Model {
            config,
            weights,
            embed_scale,
            inv_freqs,
            layer_rope,
            rope_dims,
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
        self.embed(chunks, &mut s.x[..t_total * self.config.d_model]);
        self.rope_tables(chunks, t_total, s);
        for ch in chunks.iter_mut() {
            let (pos, n) = (ch.state.pos, ch.n());
            for l in &mut ch.state.layers {
                if let LayerState::Kv(kv) = l {
                    kv.reserve(pos, n);
                }
            }
        }
        for (l, lw) in self.weights.layers.iter().enumerate() {
            self.layer(pool, l, lw, chunks, t_total, s);
        }
        self.logits(pool, chunks, t_total, s);
        Ok(())
    }

    fn validate(&self, ch: &Chunk) -> Result<()> {
        let c = &self.config;
        if *ch.state.layout != *self.layout {
            return Err(Error::ForeignState {
                state_layers: ch.state.layout.len(),
                model_layers: self.layout.len(),
            });
        }
        if let Some(&id) = ch.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::TokenOutOfVocab {
                id,
                vocab_size: c.vocab_size,
            });
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

    /// cos/sin of every row's angles, once per RoPE table rather than per layer and head.
    fn rope_tables(&self, chunks: &[Chunk], t_total: usize, s: &mut Scratch) {
        let hd = self.rope_dims;
        grow(&mut s.rope, self.inv_freqs.len() * t_total * hd);
        for (f, inv) in self.inv_freqs.iter().enumerate() {
            let mut row = 0;
            for ch in chunks {
                for i in 0..ch.n() {
                    let at = (f * t_total + row) * hd;
                    rope_cos_sin(self.config.position_offset + ch.state.pos + i, inv, &mut s.rope[at..at + hd]);
                    row += 1;
                }
            }
        }
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
        self.mlp_block(pool, &lw.mlp, t, s);
        add_residual(
            &mut s.x[..t * d],
            &mut s.out[..t * d],
            lw.post_mlp_norm.as_deref(),
            eps,
            d,
        );
    }

    /// `out = o(attention(rope(qk_norm(q)), rope(qk_norm(k)), v))` of `x_norm`, appending each chunk's keys and
    /// values to its sequence's cache first.
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
        let (d, qd, kvd, hd) = (c.d_model, c.q_dim(), c.kv_dim(), c.head_dim);
        let (q, k, v, att) = (
            &mut s.q[..t * qd],
            &mut s.k[..t * kvd],
            &mut s.v[..t * kvd],
            &mut s.att[..t * qd],
        );
        matmul_many(
            pool,
            &s.x_norm[..t * d],
            &mut [(&w.q, &mut *q), (&w.k, &mut *k), (&w.v, &mut *v)],
            &mut s.acts,
        );
        if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
            q.chunks_exact_mut(hd)
                .for_each(|h| rms_norm_inplace(h, qn, c.norm_eps));
            k.chunks_exact_mut(hd)
                .for_each(|h| rms_norm_inplace(h, kn, c.norm_eps));
        }
        let rd = self.rope_dims;
        let table = &s.rope[self.layer_rope[l] * t * rd..(self.layer_rope[l] + 1) * t * rd];
        for (r, cs) in table.chunks_exact(rd).enumerate() {
            q[r * qd..(r + 1) * qd]
                .chunks_exact_mut(hd)
                .for_each(|h| rope_apply_cs(&mut h[..rd], cs));
            k[r * kvd..(r + 1) * kvd]
                .chunks_exact_mut(hd)
                .for_each(|h| rope_apply_cs(&mut h[..rd], cs));
        }
        let (heads, scope) = (self.heads(), self.config.layers[l].attention().expect("an attention layer").scope);
        let mut row = 0;
        for ch in chunks.iter_mut() {
            let (n, p0) = (ch.n(), ch.state.pos);
            let LayerState::Kv(kv) = &mut ch.state.layers[l] else {
                unreachable!("state layout checked in forward")
            };
            // Append this chunk's keys and values, then attend: the ring was sized to keep what it needs.
            for i in 0..n {
                let slot = kv.slot(p0 + i);
                kv.k[slot * kvd..(slot + 1) * kvd]
                    .copy_from_slice(&k[(row + i) * kvd..(row + i + 1) * kvd]);
                kv.v[slot * kvd..(slot + 1) * kvd]
                    .copy_from_slice(&v[(row + i) * kvd..(row + i + 1) * kvd]);
            }
            // The chunk's bidirectional spans in absolute positions (no allocation when there are none).
            let spans: Vec<Range<usize>> = ch.bidirectional.iter().map(|r| p0 + r.start..p0 + r.end).collect();
            let (view, mask) = (kv.view(p0 + n), layer_mask(scope, &spans, self.config.window_bounds_spans));
            let (q, att) = (&q[row * qd..(row + n) * qd], &mut att[row * qd..(row + n) * qd]);
            attend(pool, &heads, q, p0, &view, &mask, att);
            row += n;
        }
        let out = &mut s.out[..t * d];
        matmul(pool, &w.o, att, out, &mut s.acts);
        if let Some(b) = &w.o_bias {
            add_bias(out, b);
        }
    }

    /// `out = down(gelu_tanh(gate(x_norm)) · up(x_norm))`, with biases where the config has them.
    fn mlp_block(&self, pool: &ThreadPool, w: &MlpWeights, t: usize, s: &mut Scratch) {
        let (d, f) = (self.config.d_model, self.config.ffn_dim);
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
        for ch in chunks.iter_mut() {
            let n = ch.n();
            let start = wanted.len();
            match ch.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last if n > 0 => wanted.push(row + n - 1),
                LogitsWanted::Last => {}
                LogitsWanted::All => wanted.extend(row..row + n),
            }
            s.logit_rows.push(start..wanted.len());
            ch.state.pos += n;
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

    /// The attention kernel's head layout and scaling, from the config.
    fn heads(&self) -> Heads {
        let c = &self.config;
        let (n_heads, n_kv_heads, head_dim) = (c.n_heads, c.n_kv_heads, c.head_dim);
        Heads { n_heads, n_kv_heads, head_dim, scale: c.query_scale, softcap: c.attn_softcap }
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

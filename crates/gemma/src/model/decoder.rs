//! The Gemma decoder: one forward pass for every generation, driven by [`Config`].
//!
//! A call processes a batch of *chunks*, each some new tokens of one sequence with that sequence's own state,
//! so one-shot prefill, chunked prefill, token-by-token decode and a server's batch of sequences at different
//! positions all go through the same code. The tokens of all chunks are stacked into one activation matrix, so
//! every weight matrix is read once per call; attention then runs per sequence against its own cache.

use super::config::Config;
use super::state::SeqState;
use super::weights::Weights;
use crate::kernels::ops::{geglu, rms_norm, rms_norm_inplace, rope_apply_cs, rope_cos_sin, rope_inv_freq, softcap};
use crate::kernels::{matmul, matmul_many, ActCache, SyncPtr, ThreadPool};
use crate::quant::DType;
use crate::{Error, Result};

/// A loaded model: validated config and immutable weights. `forward` takes `&self`: many sequences, one model.
pub struct Model {
    pub config: Config,
    pub weights: Weights,
    /// `sqrt(d_model)`, rounded to the embedding's stored type as transformers does
    /// (`torch.tensor(hidden_size**0.5, dtype=embed.dtype)`), f32 for quantized embeddings as llama.cpp does.
    pub embed_scale: f32,
    /// The distinct RoPE inverse-frequency tables (head_dim / 2 each): one or two (local and global layers).
    inv_freqs: Vec<Vec<f32>>,
    /// Per layer: its table in `inv_freqs`.
    layer_rope: Vec<usize>,
}

/// Which positions of a chunk need output logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    None,
    Last,
    All,
}

/// New tokens of one sequence.
pub struct Chunk<'a> {
    pub tokens: &'a [u32],
    pub state: &'a mut SeqState,
    pub logits: LogitsWanted,
}

/// Activation buffers, reused across calls so that decoding does not allocate once they have grown.
#[derive(Default)]
pub struct Scratch {
    /// (T, d_model) residual stream
    x: Vec<f32>,
    /// (T, d_model) normed input of a sub-block
    xn: Vec<f32>,
    /// (T, q_dim)
    q: Vec<f32>,
    /// (T, kv_dim)
    k: Vec<f32>,
    v: Vec<f32>,
    /// (T, q_dim) attention output before o_proj
    att: Vec<f32>,
    /// (T, d_model) sub-block output
    y: Vec<f32>,
    /// (T, ffn_dim)
    gate: Vec<f32>,
    up: Vec<f32>,
    acts: ActCache,
    /// (rows wanted, d_model) and (rows wanted, vocab)
    last: Vec<f32>,
    logits: Vec<f32>,
    /// (rope tables, T, head_dim): cos and sin of every token's angles, shared by all layers with that table.
    rope: Vec<f32>,
    /// Per chunk: the range of rows of `logits` it asked for.
    logit_rows: Vec<std::ops::Range<usize>>,
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
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

impl Model {
    pub fn new(config: Config, weights: Weights) -> Model {
        let embed_scale = {
            let s = (config.d_model as f32).sqrt();
            match weights.embed.dtype {
                DType::BF16 => half::bf16::from_f32(s).to_f32(),
                DType::F16 => half::f16::from_f32(s).to_f32(),
                _ => s,
            }
        };
        let mut inv_freqs: Vec<Vec<f32>> = Vec::new();
        let mut layer_rope = Vec::new();
        for l in &config.layers {
            let f = rope_inv_freq(config.head_dim, l.rope.base, l.rope.linear_factor);
            let i = inv_freqs.iter().position(|g| *g == f).unwrap_or_else(|| {
                inv_freqs.push(f);
                inv_freqs.len() - 1
            });
            layer_rope.push(i);
        }
        Model { config, weights, embed_scale, inv_freqs, layer_rope }
    }

    /// A fresh state for a sequence of at most `max_pos` positions (capped at the model's context).
    pub fn new_state(&self, max_pos: usize) -> SeqState {
        SeqState::new(&self.config, max_pos.min(self.config.context_len))
    }

    /// Run the new tokens of every chunk through the model, appending them to each chunk's state; the logits
    /// asked for are left in `scratch` (see [`Scratch::logits`]). Fails, before touching any state, on an
    /// out-of-vocabulary id or a chunk that would pass its sequence's `max_pos`.
    pub fn forward(&self, pool: &ThreadPool, chunks: &mut [Chunk], s: &mut Scratch) -> Result<()> {
        let c = &self.config;
        for ch in chunks.iter() {
            if let Some(&bad) = ch.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(Error::Invalid(format!("token id {bad} is outside the vocabulary (size {})", c.vocab_size)));
            }
            if ch.state.pos + ch.tokens.len() > ch.state.max_pos {
                return Err(Error::Invalid(format!(
                    "sequence would reach {} positions, past its context of {}",
                    ch.state.pos + ch.tokens.len(),
                    ch.state.max_pos
                )));
            }
        }
        let t_total: usize = chunks.iter().map(|ch| ch.tokens.len()).sum();
        let (d, qd, kvd, fd) = (c.d_model, c.q_dim(), c.kv_dim(), c.ffn_dim);
        grow(&mut s.x, t_total * d);
        grow(&mut s.xn, t_total * d);
        grow(&mut s.y, t_total * d);
        grow(&mut s.q, t_total * qd);
        grow(&mut s.att, t_total * qd);
        grow(&mut s.k, t_total * kvd);
        grow(&mut s.v, t_total * kvd);
        grow(&mut s.gate, t_total * fd);
        grow(&mut s.up, t_total * fd);

        // Embedding lookup, scaled by sqrt(d_model).
        let w = &self.weights;
        let mut row = 0;
        for ch in chunks.iter() {
            for &tok in ch.tokens {
                let x = &mut s.x[row * d..(row + 1) * d];
                w.embed.dequantize_row(tok as usize, x);
                x.iter_mut().for_each(|v| *v *= self.embed_scale);
                row += 1;
            }
        }
        // cos/sin of every token's angles, once per RoPE table rather than per layer and head.
        let hd = c.head_dim;
        grow(&mut s.rope, self.inv_freqs.len() * t_total * hd);
        for (f, inv) in self.inv_freqs.iter().enumerate() {
            let mut row = 0;
            for ch in chunks.iter() {
                for i in 0..ch.tokens.len() {
                    let at = (f * t_total + row) * hd;
                    rope_cos_sin(ch.state.pos + i, inv, &mut s.rope[at..at + hd]);
                    row += 1;
                }
            }
        }
        let rope = &s.rope[..self.inv_freqs.len() * t_total * hd];
        for ch in chunks.iter_mut() {
            for (l, kv) in ch.state.layers.iter_mut().enumerate() {
                debug_assert!(l < c.n_layers);
                kv.reserve(ch.state.pos, ch.tokens.len());
            }
        }

        let (x, xn, y) = (&mut s.x[..t_total * d], &mut s.xn[..t_total * d], &mut s.y[..t_total * d]);
        let (q, k, v, att) =
            (&mut s.q[..t_total * qd], &mut s.k[..t_total * kvd], &mut s.v[..t_total * kvd], &mut s.att[..t_total * qd]);
        let (gate, up) = (&mut s.gate[..t_total * fd], &mut s.up[..t_total * fd]);
        for (l, lw) in w.layers.iter().enumerate() {
            // --- attention block: x += post_norm(o(attn(rope(norm(q)), rope(norm(k)), v))) ---
            for (xr, nr) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)) {
                rms_norm(xr, &lw.attn_norm, c.norm_eps, nr);
            }
            matmul_many(pool, xn, &mut [(&lw.q, &mut *q), (&lw.k, &mut *k), (&lw.v, &mut *v)], &mut s.acts);
            if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
                q.chunks_exact_mut(c.head_dim).for_each(|h| rms_norm_inplace(h, qn, c.norm_eps));
                k.chunks_exact_mut(c.head_dim).for_each(|h| rms_norm_inplace(h, kn, c.norm_eps));
            }
            let mut row = 0;
            for ch in chunks.iter_mut() {
                let n = ch.tokens.len();
                let p0 = ch.state.pos;
                for i in 0..n {
                    let r = row + i;
                    let at = (self.layer_rope[l] * t_total + r) * hd;
                    let cs = &rope[at..at + hd];
                    q[r * qd..(r + 1) * qd].chunks_exact_mut(hd).for_each(|h| rope_apply_cs(h, cs));
                    k[r * kvd..(r + 1) * kvd].chunks_exact_mut(hd).for_each(|h| rope_apply_cs(h, cs));
                }
                // Append this chunk's keys and values, then attend: the ring was sized to keep what it needs.
                let kv = &mut ch.state.layers[l];
                for i in 0..n {
                    let slot = kv.slot(p0 + i);
                    kv.k[slot * kvd..(slot + 1) * kvd].copy_from_slice(&k[(row + i) * kvd..(row + i + 1) * kvd]);
                    kv.v[slot * kvd..(slot + 1) * kvd].copy_from_slice(&v[(row + i) * kvd..(row + i + 1) * kvd]);
                }
                self.attend(pool, kv, p0, &q[row * qd..(row + n) * qd], &mut att[row * qd..(row + n) * qd]);
                row += n;
            }
            matmul(pool, &lw.o, att, y, &mut s.acts);
            add_residual(x, y, lw.post_attn_norm.as_deref(), c.norm_eps, d);

            // --- MLP block: x += post_norm(down(gelu(gate(norm(x))) · up(norm(x)))) ---
            for (xr, nr) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)) {
                rms_norm(xr, &lw.ffn_norm, c.norm_eps, nr);
            }
            matmul_many(pool, xn, &mut [(&lw.gate, &mut *gate), (&lw.up, &mut *up)], &mut s.acts);
            geglu(gate, up);
            matmul(pool, &lw.down, gate, y, &mut s.acts);
            add_residual(x, y, lw.post_ffn_norm.as_deref(), c.norm_eps, d);
        }

        // Final norm and output projection, only for the rows asked for.
        s.logit_rows.clear();
        let mut wanted = std::mem::take(&mut s.wanted);
        wanted.clear();
        let mut row = 0;
        for ch in chunks.iter_mut() {
            let n = ch.tokens.len();
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
        let vocab = c.vocab_size;
        grow(&mut s.last, wanted.len() * d);
        for (i, &r) in wanted.iter().enumerate() {
            rms_norm(&x[r * d..(r + 1) * d], &w.final_norm, c.norm_eps, &mut s.last[i * d..(i + 1) * d]);
        }
        s.logits.resize(wanted.len() * vocab, 0.0);
        matmul(pool, w.output(), &s.last[..wanted.len() * d], &mut s.logits, &mut s.acts);
        if let Some(cap) = c.final_softcap {
            softcap(&mut s.logits, cap);
        }
        s.wanted = wanted;
        Ok(())
    }

    /// Causal attention of `n` new queries (positions `p0..p0+n`, already in the cache) over the cached keys
    /// each may see; softmax computed online in blocks of keys (FlashAttention's recurrence), with no score
    /// matrix. A task takes a few queries and the query heads of one key/value head (grouped-query attention),
    /// so that each key and value row it reads serves all of them while it is in L1.
    fn attend(&self, pool: &ThreadPool, kv: &super::state::KvLayer, p0: usize, q: &[f32], out: &mut [f32]) {
        /// Rows (query, head) per task, and keys per block of the online softmax.
        const ROWS: usize = 16;
        const BLOCK: usize = 32;
        let c = &self.config;
        let (hd, qd, kvd, group) = (c.head_dim, c.q_dim(), c.kv_dim(), c.group_size());
        let n = q.len() / qd;
        let n_kv = c.n_kv_heads;
        let (scale, cap) = (c.query_scale, c.attn_softcap);
        let ops = crate::kernels::ops::Ops::get();
        // Heads per task: the whole group, unless that leaves threads idle (decoding one token).
        let threads = pool.n_threads();
        let hpt = if n * n_kv >= threads { group.min(ROWS) } else { 1 };
        let h_chunks = group.div_ceil(hpt);
        // Queries per task: fill ROWS, but keep a few tasks per thread for balance (causal rows differ in length).
        let qpt = (ROWS / hpt).max(1).min(n.div_ceil(4 * threads)).max(1);
        let q_blocks = n.div_ceil(qpt);
        let out_ptr = SyncPtr(out.as_mut_ptr());
        pool.run(q_blocks * n_kv * h_chunks, &|task| {
            let (qb, rest) = (task / (n_kv * h_chunks), task % (n_kv * h_chunks));
            let (kvh, hc) = (rest / h_chunks, rest % h_chunks);
            let (i0, i1) = (qb * qpt, (qb * qpt + qpt).min(n));
            let h0 = kvh * group + hc * hpt;
            let h1 = (h0 + hpt).min((kvh + 1) * group);
            let nh = h1 - h0;
            let rows = (i1 - i0) * nh;
            // Row r is query i0 + r / nh, head h0 + r % nh.
            let qs: [&[f32]; ROWS] = std::array::from_fn(|r| {
                if r >= rows {
                    return &[][..];
                }
                let (i, h) = (i0 + r / nh, h0 + r % nh);
                &q[i * qd + h * hd..i * qd + (h + 1) * hd]
            });
            let mut o: [&mut [f32]; ROWS] = std::array::from_fn(|r| {
                if r >= rows {
                    return &mut [][..];
                }
                let (i, h) = (i0 + r / nh, h0 + r % nh);
                // SAFETY: this task alone writes out[i][h·hd..(h+1)·hd] for its queries i and heads h.
                unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(i * qd + h * hd), hd) }
            });
            o[..rows].iter_mut().for_each(|o| o.fill(0.0));
            let mut scores = [0f32; ROWS * BLOCK];
            let (mut m, mut sum) = ([f32::NEG_INFINITY; ROWS], [0f32; ROWS]);
            let (mut keys, mut vals): ([&[f32]; BLOCK], [&[f32]; BLOCK]) = ([&[]; BLOCK], [&[]; BLOCK]);
            // Keys visible to query i: first_visible(p0 + i) ..= p0 + i; the task walks their union in blocks
            // small enough to stay in L1 while every query goes over them. Blocks are aligned to multiples of
            // BLOCK so that a query's sums do not depend on which task it fell in (chunking, threads).
            let (lo, hi) = (kv.first_visible(p0 + i0), p0 + i1);
            let mut j0 = lo / BLOCK * BLOCK;
            while j0 < hi {
                let j1 = (j0 + BLOCK).min(hi);
                for j in j0..j1 {
                    let at = kv.slot(j) * kvd + kvh * hd;
                    keys[j - j0] = &kv.k[at..at + hd];
                    vals[j - j0] = &kv.v[at..at + hd];
                }
                for qi in 0..i1 - i0 {
                    // This query's visible part of the block, shared by its heads.
                    let pos = p0 + i0 + qi;
                    let (a, b) = (kv.first_visible(pos).max(j0), (pos + 1).min(j1));
                    if a >= b {
                        continue;
                    }
                    let w = b - a;
                    (ops.dots)(&qs[qi * nh..(qi + 1) * nh], &keys[a - j0..b - j0], &mut scores[..nh * w]);
                    for (hh, sc) in scores[..nh * w].chunks_exact_mut(w).enumerate() {
                        let r = qi * nh + hh;
                        (ops.scale)(sc, scale);
                        if let Some(cap) = cap {
                            (ops.softcap)(sc, cap);
                        }
                        let m_new = sc.iter().copied().fold(m[r], f32::max);
                        let keep = if m_new > m[r] { (m[r] - m_new).exp() } else { 1.0 };
                        sum[r] = sum[r] * keep + (ops.exp_sum)(sc, m_new);
                        m[r] = m_new;
                        (ops.weighted_sum)(o[r], keep, sc, &vals[a - j0..b - j0]);
                    }
                }
                j0 = j1;
            }
            for r in 0..rows {
                (ops.scale)(o[r], 1.0 / sum[r]);
            }
        });
    }
}

/// `x += norm(y)` (with a post-norm) or `x += y`.
fn add_residual(x: &mut [f32], y: &mut [f32], post_norm: Option<&[f32]>, eps: f32, d: usize) {
    if let Some(pn) = post_norm {
        y.chunks_exact_mut(d).for_each(|r| rms_norm_inplace(r, pn, eps));
    }
    x.iter_mut().zip(y.iter()).for_each(|(a, b)| *a += b);
}

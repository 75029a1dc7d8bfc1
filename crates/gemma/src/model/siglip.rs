//! The image side of a vision-language model: the SigLIP encoder (transformers' `SiglipVisionTransformer`
//! without its pooling head) and the projector into the text stream (PaliGemma's or Gemma 3's).
//!
//! ```text
//! patches  = the image cut into p×p squares, row-major; each flattened channel-major (c, y, x)
//! h        = patches · W_patchᵀ + b + position_embedding         the strided conv as one matmul
//! h       += attn(LN₁(h))      every layer: pre-LN, MHA with biases, no mask, scale 1/√head_dim
//! h       += fc₂(gelu_tanh(fc₁(LN₂(h))))
//! features = post_LN(h)                                           (n_patches, vision d_model)
//! rows     = PaliGemma: features · Wᵀ + b
//!            Gemma 3:   avg-pool side×side → √tokens×√tokens, RMSNorm (1 + w), · W   (W stored [in, out])
//! ```
//!
//! The encoder runs on the decoder's kernels (packed SIMD matmuls, the attention kernel with no mask); one
//! call holds one image's activations and frees them on return.

use std::time::{Duration, Instant};

use crate::formats::{Tensor, TensorStore};
use crate::kernels::attention::{attend, Heads, KvView, Mask};
use crate::kernels::ops::{gelu_tanh, layer_norm, rms_norm};
use crate::kernels::{matmul, matmul_many, ActCache, Matrix, ThreadPool};
use crate::{Error, Result};

use super::config::{Projector, SiglipConfig, VisionConfig};
use super::decoder::add_bias;
use super::weights::{check_shape, to_matrix};

/// A LayerNorm's weight and bias, f32, (d).
#[derive(Debug)]
pub struct LayerNormWeights {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// One pre-LN encoder layer; every matrix (out, in) with an f32 bias.
#[derive(Debug)]
pub struct SiglipLayer {
    pub ln1: LayerNormWeights,
    /// (d, d) each
    pub q: Matrix,
    pub k: Matrix,
    pub v: Matrix,
    pub o: Matrix,
    /// (d) each: q, k, v, o
    pub qkvo_bias: [Vec<f32>; 4],
    pub ln2: LayerNormWeights,
    /// (ffn, d) and (ffn)
    pub fc1: Matrix,
    pub fc1_bias: Vec<f32>,
    /// (d, ffn) and (d)
    pub fc2: Matrix,
    pub fc2_bias: Vec<f32>,
}

/// How image features become text-stream rows.
#[derive(Debug)]
pub enum ProjectorWeights {
    /// (text d_model, vision d_model) and (text d_model).
    PaliGemma { w: Matrix, b: Vec<f32> },
    /// `mm_soft_emb_norm` (vision d_model, `1 + w` applied) and `mm_input_projection_weight` transposed
    /// to (text d_model, vision d_model).
    Gemma3 { norm: Vec<f32>, w: Matrix },
}

/// The vision tower's weights: SigLIP and the projector.
#[derive(Debug)]
pub struct VisionWeights {
    /// (d, 3·p·p): the patch-embedding convolution's kernels, one row per output channel.
    pub patch: Matrix,
    pub patch_bias: Vec<f32>,
    /// (n_patches, d), f32.
    pub position: Vec<f32>,
    pub layers: Vec<SiglipLayer>,
    pub post_ln: LayerNormWeights,
    pub projector: ProjectorWeights,
}

impl VisionWeights {
    /// Every matrix (encoder and projector), for byte counts.
    pub fn matrices(&self) -> impl Iterator<Item = &Matrix> {
        let proj = match &self.projector {
            ProjectorWeights::PaliGemma { w, .. } | ProjectorWeights::Gemma3 { w, .. } => w,
        };
        std::iter::once(&self.patch)
            .chain(self.layers.iter().flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.fc1, &l.fc2]))
            .chain(std::iter::once(proj))
    }

    /// Read the tower of `cfg` from `store`, under the Hub checkpoints' names (`vision_tower.vision_model.*`,
    /// `multi_modal_projector.*`), transformers 5's (`vision_tower.*`) or its in-memory ones (`model.` before
    /// either). Errors: a missing tensor (named as the Hub has it) or a wrong shape.
    pub fn from_store(cfg: &VisionConfig, text_d_model: usize, store: &TensorStore) -> Result<VisionWeights> {
        let r = VisionReader { store };
        // The tower's prefix: the Hub's `vision_tower.vision_model.`, transformers 5's save-time
        // `vision_tower.`, or either under the in-memory `model.`.
        let tower = ["vision_tower.vision_model.", "vision_tower.", "model.vision_tower.vision_model.", "model.vision_tower."]
            .into_iter()
            .find(|p| store.get(&format!("{p}post_layernorm.weight")).is_some())
            .unwrap_or("vision_tower.vision_model.");
        let proj = ["multi_modal_projector.", "model.multi_modal_projector."]
            .into_iter()
            .find(|p| store.tensors.keys().any(|k| k.starts_with(p)))
            .unwrap_or("multi_modal_projector.");
        let e = &cfg.encoder;
        let (d, f, p) = (e.d_model, e.ffn_dim, e.patch_size);
        let patch_name = format!("{tower}embeddings.patch_embedding.weight");
        let (name, t) = r.get(&patch_name)?;
        check_shape(&store.path, &name, t, &[d, 3, p, p])?;
        let patch = to_matrix(&store.path, &name, &reshaped(t, &[d, 3 * p * p]), d, 3 * p * p)?;
        let layer = |i: usize| -> Result<SiglipLayer> {
            let l = format!("{tower}encoder.layers.{i}.");
            let lin = |n: &str, rows, cols| r.matrix(&format!("{l}{n}.weight"), rows, cols);
            let bias = |n: &str, len| r.vector(&format!("{l}{n}.bias"), &[len]);
            Ok(SiglipLayer {
                ln1: r.layer_norm(&format!("{l}layer_norm1"), d)?,
                q: lin("self_attn.q_proj", d, d)?,
                k: lin("self_attn.k_proj", d, d)?,
                v: lin("self_attn.v_proj", d, d)?,
                o: lin("self_attn.out_proj", d, d)?,
                qkvo_bias: [
                    bias("self_attn.q_proj", d)?,
                    bias("self_attn.k_proj", d)?,
                    bias("self_attn.v_proj", d)?,
                    bias("self_attn.out_proj", d)?,
                ],
                ln2: r.layer_norm(&format!("{l}layer_norm2"), d)?,
                fc1: lin("mlp.fc1", f, d)?,
                fc1_bias: bias("mlp.fc1", f)?,
                fc2: lin("mlp.fc2", d, f)?,
                fc2_bias: bias("mlp.fc2", d)?,
            })
        };
        let projector = match cfg.projector {
            Projector::PaliGemma => ProjectorWeights::PaliGemma {
                w: r.matrix(&format!("{proj}linear.weight"), text_d_model, d)?,
                b: r.vector(&format!("{proj}linear.bias"), &[text_d_model])?,
            },
            Projector::Gemma3 => {
                let w = r.gemma3_projection(&format!("{proj}mm_input_projection_weight"), d, text_d_model)?;
                let mut norm = r.vector(&format!("{proj}mm_soft_emb_norm.weight"), &[d])?;
                norm.iter_mut().for_each(|x| *x += 1.0);
                ProjectorWeights::Gemma3 { norm, w }
            }
        };
        Ok(VisionWeights {
            patch,
            patch_bias: r.vector(&format!("{tower}embeddings.patch_embedding.bias"), &[d])?,
            position: r.vector(&format!("{tower}embeddings.position_embedding.weight"), &[e.n_patches(), d])?,
            layers: (0..e.n_layers).map(layer).collect::<Result<_>>()?,
            post_ln: r.layer_norm(&format!("{tower}post_layernorm"), d)?,
            projector,
        })
    }

    /// Read a Gemma 3 tower from llama.cpp's mmproj GGUF (`v.*`, `mm.*`, as `convert_hf_to_gguf.py --mmproj`
    /// names them; shapes row-major as the GGUF reader gives them, the same as transformers' except where
    /// noted). `mm.soft_emb_norm.weight` is stored as `1 + w` and used as stored; `mm.input_projection.weight`
    /// is transformers' (in, out) matrix (clip.cpp transposes it when it multiplies), transposed here as in
    /// [`from_store`](Self::from_store). Errors: another projector, a missing tensor (by its GGUF name), a
    /// wrong shape.
    pub fn from_mmproj(cfg: &VisionConfig, text_d_model: usize, store: &TensorStore) -> Result<VisionWeights> {
        if cfg.projector != Projector::Gemma3 {
            return Err(Error::Unsupported { feature: format!("{}: an mmproj tower other than Gemma 3's", store.path.display()) });
        }
        let r = VisionReader { store };
        let e = &cfg.encoder;
        let (d, f, p) = (e.d_model, e.ffn_dim, e.patch_size);
        let (name, t) = r.get("v.patch_embd.weight")?;
        check_shape(&store.path, &name, t, &[d, 3, p, p])?;
        let patch = to_matrix(&store.path, &name, &reshaped(t, &[d, 3 * p * p]), d, 3 * p * p)?;
        let layer = |i: usize| -> Result<SiglipLayer> {
            let l = format!("v.blk.{i}.");
            let lin = |n: &str, rows, cols| r.matrix(&format!("{l}{n}.weight"), rows, cols);
            let bias = |n: &str, len| r.vector(&format!("{l}{n}.bias"), &[len]);
            Ok(SiglipLayer {
                ln1: r.layer_norm(&format!("{l}ln1"), d)?,
                q: lin("attn_q", d, d)?,
                k: lin("attn_k", d, d)?,
                v: lin("attn_v", d, d)?,
                o: lin("attn_out", d, d)?,
                qkvo_bias: [bias("attn_q", d)?, bias("attn_k", d)?, bias("attn_v", d)?, bias("attn_out", d)?],
                ln2: r.layer_norm(&format!("{l}ln2"), d)?,
                fc1: lin("ffn_up", f, d)?,
                fc1_bias: bias("ffn_up", f)?,
                fc2: lin("ffn_down", d, f)?,
                fc2_bias: bias("ffn_down", d)?,
            })
        };
        Ok(VisionWeights {
            patch,
            patch_bias: r.vector("v.patch_embd.bias", &[d])?,
            position: r.vector("v.position_embd.weight", &[e.n_patches(), d])?,
            layers: (0..e.n_layers).map(layer).collect::<Result<_>>()?,
            post_ln: r.layer_norm("v.post_ln", d)?,
            projector: ProjectorWeights::Gemma3 {
                norm: r.vector("mm.soft_emb_norm.weight", &[d])?,
                w: r.gemma3_projection("mm.input_projection.weight", d, text_d_model)?,
            },
        })
    }

    /// The text-stream rows of one image: SigLIP, then the projector. `pixels` is the preprocessed image,
    /// (3, image_size, image_size) channel-major f32 (see `runtime::image::preprocess`); the result is
    /// (tokens_per_image, text d_model), ready to replace the image's placeholder tokens as
    /// [`EmbeddingRows`](super::EmbeddingRows) (not multiplied by the embedding scale).
    /// Errors: `pixels` of another length.
    pub fn embed_image(&self, cfg: &VisionConfig, pool: &ThreadPool, pixels: &[f32]) -> Result<Vec<f32>> {
        self.embed_image_timed(cfg, pool, pixels).map(|(rows, _)| rows)
    }

    /// [`VisionWeights::embed_image`], with where its time went.
    pub fn embed_image_timed(&self, cfg: &VisionConfig, pool: &ThreadPool, pixels: &[f32]) -> Result<(Vec<f32>, EncodeTimes)> {
        let start = Instant::now();
        let mut times = EncodeTimes::default();
        let features = self.encode_timed(&cfg.encoder, pool, pixels, &mut times.attention)?;
        let rows = self.project(cfg, pool, &features);
        times.total = start.elapsed();
        Ok((rows, times))
    }

    /// SigLIP's last hidden state after the post-LayerNorm: (n_patches, vision d_model).
    pub fn encode(&self, e: &SiglipConfig, pool: &ThreadPool, pixels: &[f32]) -> Result<Vec<f32>> {
        let mut attention = Duration::ZERO;
        self.encode_timed(e, pool, pixels, &mut attention)
    }

    /// [`VisionWeights::encode`], adding the time spent in attention between patches to `attention`.
    fn encode_timed(&self, e: &SiglipConfig, pool: &ThreadPool, pixels: &[f32], attention: &mut Duration) -> Result<Vec<f32>> {
        let side = e.image_size;
        if pixels.len() != 3 * side * side {
            return Err(Error::Invalid(format!(
                "an image for this model has 3 × {side} × {side} = {} values, not {}",
                3 * side * side,
                pixels.len()
            )));
        }
        let (n, d, eps) = (e.n_patches(), e.d_model, e.norm_eps as f32);
        let mut acts = ActCache::default();
        let mut h = vec![0.0; n * d];
        matmul(pool, &self.patch, &patches(pixels, side, e.patch_size), &mut h, &mut acts);
        for (row, pos) in h.chunks_exact_mut(d).zip(self.position.chunks_exact(d)) {
            for ((x, b), p) in row.iter_mut().zip(&self.patch_bias).zip(pos) {
                *x += b + p;
            }
        }
        let mut s = EncoderScratch::new(n, d, e.ffn_dim);
        let heads = Heads {
            n_heads: e.n_heads,
            n_kv_heads: e.n_heads,
            head_dim: e.head_dim(),
            scale: (e.head_dim() as f32).powf(-0.5),
            softcap: None,
        };
        for l in &self.layers {
            encoder_layer(pool, l, &heads, eps, &mut h, &mut s, &mut acts, attention);
        }
        for row in h.chunks_exact_mut(d) {
            s.norm[..d].copy_from_slice(row);
            layer_norm(&s.norm[..d], &self.post_ln.w, &self.post_ln.b, eps, row);
        }
        Ok(h)
    }

    /// Image features (n_patches, vision d_model) to text-stream rows (tokens_per_image, text d_model).
    pub fn project(&self, cfg: &VisionConfig, pool: &ThreadPool, features: &[f32]) -> Vec<f32> {
        let e = &cfg.encoder;
        let mut acts = ActCache::default();
        let mut out = vec![0.0; cfg.tokens_per_image * cfg.projection_dim];
        match &self.projector {
            ProjectorWeights::PaliGemma { w, b } => {
                matmul(pool, w, features, &mut out, &mut acts);
                add_bias(&mut out, b);
            }
            ProjectorWeights::Gemma3 { norm, w } => {
                let mut pooled = avg_pool(features, e.patches_per_side(), e.d_model, cfg.tokens_per_image);
                for row in pooled.chunks_exact_mut(e.d_model) {
                    let x = row.to_vec();
                    rms_norm(&x, norm, e.norm_eps as f32, row);
                }
                matmul(pool, w, &pooled, &mut out, &mut acts);
            }
        }
        out
    }
}

/// Where one image's encoding time went (`gemma bench`'s image row).
#[derive(Debug, Default, Clone, Copy)]
pub struct EncodeTimes {
    /// Attention between patches (scores, softmax, weighted sum; not the q/k/v/o projections).
    pub attention: Duration,
    /// The whole of [`VisionWeights::embed_image`]: patches, encoder layers, projector.
    pub total: Duration,
}

/// The image cut into `p`×`p` patches, row-major over the grid, each flattened as (channel, y, x): the
/// column order of the patch-embedding convolution's kernels. (n_patches, 3·p·p).
fn patches(pixels: &[f32], side: usize, p: usize) -> Vec<f32> {
    let per_side = side / p;
    let mut out = Vec::with_capacity(pixels.len());
    for py in 0..per_side {
        for px in 0..per_side {
            for c in 0..3 {
                for y in 0..p {
                    let at = (c * side + py * p + y) * side + px * p;
                    out.extend_from_slice(&pixels[at..at + p]);
                }
            }
        }
    }
    out
}

/// Average pooling of a (side × side) grid of d-wide rows to `tokens` rows (a square grid), with a square
/// kernel and equal stride (transformers' `nn.AvgPool2d(kernel, stride=kernel)` over the patch grid).
fn avg_pool(features: &[f32], side: usize, d: usize, tokens: usize) -> Vec<f32> {
    let out_side = (tokens as f64).sqrt().round() as usize;
    let k = side / out_side;
    let mut out = vec![0.0f32; tokens * d];
    for oy in 0..out_side {
        for ox in 0..out_side {
            let o = &mut out[(oy * out_side + ox) * d..][..d];
            for y in oy * k..(oy + 1) * k {
                for x in ox * k..(ox + 1) * k {
                    o.iter_mut().zip(&features[(y * side + x) * d..][..d]).for_each(|(o, f)| *o += f);
                }
            }
            let inv = 1.0 / (k * k) as f32;
            o.iter_mut().for_each(|v| *v *= inv);
        }
    }
    out
}

/// One image's activation buffers.
struct EncoderScratch {
    norm: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    out: Vec<f32>,
    ffn: Vec<f32>,
}

impl EncoderScratch {
    fn new(n: usize, d: usize, f: usize) -> Self {
        let buf = || vec![0.0; n * d];
        EncoderScratch { norm: buf(), q: buf(), k: buf(), v: buf(), att: buf(), out: buf(), ffn: vec![0.0; n * f] }
    }
}

/// `h += o(attn(LN₁(h)))`, then `h += fc₂(gelu(fc₁(LN₂(h))))`.
fn encoder_layer(
    pool: &ThreadPool,
    l: &SiglipLayer,
    heads: &Heads,
    eps: f32,
    h: &mut [f32],
    s: &mut EncoderScratch,
    acts: &mut ActCache,
    attention: &mut Duration,
) {
    let d = l.ln1.w.len();
    let n = h.len() / d;
    for (x, y) in h.chunks_exact(d).zip(s.norm.chunks_exact_mut(d)) {
        layer_norm(x, &l.ln1.w, &l.ln1.b, eps, y);
    }
    matmul_many(pool, &s.norm, &mut [(&l.q, &mut s.q[..]), (&l.k, &mut s.k[..]), (&l.v, &mut s.v[..])], acts);
    for (y, b) in [(&mut s.q, &l.qkvo_bias[0]), (&mut s.k, &l.qkvo_bias[1]), (&mut s.v, &l.qkvo_bias[2])] {
        add_bias(y, b);
    }
    let kv = KvView { k: &s.k, v: &s.v, ring: 0, len: n };
    let t = Instant::now();
    attend(pool, heads, &s.q, 0, &kv, &Mask::none(), &mut s.att);
    *attention += t.elapsed();
    matmul(pool, &l.o, &s.att, &mut s.out, acts);
    add_bias(&mut s.out, &l.qkvo_bias[3]);
    h.iter_mut().zip(&s.out).for_each(|(h, o)| *h += o);

    for (x, y) in h.chunks_exact(d).zip(s.norm.chunks_exact_mut(d)) {
        layer_norm(x, &l.ln2.w, &l.ln2.b, eps, y);
    }
    matmul(pool, &l.fc1, &s.norm, &mut s.ffn, acts);
    add_bias(&mut s.ffn, &l.fc1_bias);
    s.ffn.iter_mut().for_each(|x| *x = gelu_tanh(*x));
    matmul(pool, &l.fc2, &s.ffn, &mut s.out, acts);
    add_bias(&mut s.out, &l.fc2_bias);
    h.iter_mut().zip(&s.out).for_each(|(h, o)| *h += o);
}

/// Reads the tower's tensors by name; errors name the file and the tensor.
struct VisionReader<'a> {
    store: &'a TensorStore,
}

impl VisionReader<'_> {
    fn get(&self, name: &str) -> Result<(String, &Tensor)> {
        match self.store.get(name) {
            Some(t) => Ok((name.to_string(), t)),
            None => Err(Error::MissingTensor { file: self.store.path.clone(), name: name.to_string() }),
        }
    }
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let (name, t) = self.get(name)?;
        to_matrix(&self.store.path, &name, t, rows, cols)
    }
    fn vector(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (name, t) = self.get(name)?;
        check_shape(&self.store.path, &name, t, shape)?;
        Ok(t.to_f32_vec())
    }
    /// Gemma 3's projection, stored (in = vision d, out = text d), as a (text d, vision d) matrix.
    fn gemma3_projection(&self, name: &str, d: usize, text_d_model: usize) -> Result<Matrix> {
        let (name, t) = self.get(name)?;
        check_shape(&self.store.path, &name, t, &[d, text_d_model])?;
        if t.dtype.block_len() != 1 {
            return Err(Error::UnsupportedDType {
                file: self.store.path.clone(),
                name,
                dtype: t.dtype.name().into(),
                what: "is stored (in, out) and must be transposed: only plain float types can be".into(),
            });
        }
        to_matrix(&self.store.path, &name, &transposed(t), text_d_model, d)
    }
    fn layer_norm(&self, name: &str, d: usize) -> Result<LayerNormWeights> {
        Ok(LayerNormWeights { w: self.vector(&format!("{name}.weight"), &[d])?, b: self.vector(&format!("{name}.bias"), &[d])? })
    }
}

/// The same bytes seen with another shape (same element count).
fn reshaped(t: &Tensor, shape: &[usize]) -> Tensor {
    Tensor { shape: shape.to_vec(), ..t.clone() }
}

/// A 2-D tensor of a plain float type transposed (rows and columns swapped), element bytes kept as stored.
fn transposed(t: &Tensor) -> Tensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let es = t.bytes().len() / (r * c).max(1);
    let src = t.bytes();
    let mut out = vec![0u8; src.len()];
    for i in 0..r {
        for j in 0..c {
            out[(j * r + i) * es..][..es].copy_from_slice(&src[(i * c + j) * es..][..es]);
        }
    }
    Tensor { shape: vec![c, r], data: crate::formats::Bytes::from_vec(out), ..t.clone() }
}

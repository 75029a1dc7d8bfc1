//! The weights of a Gemma decoder, as stored (bf16, f16, f32 or GGUF block quants), immutable after load.
//! Only the norm scales are widened to f32, with Gemma's `1 + w` folded in.

use crate::formats::{Tensor, TensorStore};
use crate::kernels::Matrix;
use crate::quant::DType;
use crate::{Error, Result};

use super::config::Config;

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

impl NameScheme {
    fn global(self, what: Global) -> &'static str {
        use Global::*;
        match (self, what) {
            (NameScheme::HuggingFace, Embed) => "model.embed_tokens.weight",
            (NameScheme::HuggingFace, FinalNorm) => "model.norm.weight",
            (NameScheme::HuggingFace, LmHead) => "lm_head.weight",
            (NameScheme::Gguf, Embed) => "token_embd.weight",
            (NameScheme::Gguf, FinalNorm) => "output_norm.weight",
            (NameScheme::Gguf, LmHead) => "output.weight",
        }
    }

    fn layer(self, i: usize, what: &str) -> String {
        match self {
            NameScheme::HuggingFace => {
                let sub = match what {
                    "q" => "self_attn.q_proj",
                    "k" => "self_attn.k_proj",
                    "v" => "self_attn.v_proj",
                    "o" => "self_attn.o_proj",
                    "q_norm" => "self_attn.q_norm",
                    "k_norm" => "self_attn.k_norm",
                    "attn_norm" => "input_layernorm",
                    "post_attn_norm" => "post_attention_layernorm",
                    "pre_ffn_norm" => "pre_feedforward_layernorm",
                    "post_ffn_norm" => "post_feedforward_layernorm",
                    "gate" => "mlp.gate_proj",
                    "up" => "mlp.up_proj",
                    "down" => "mlp.down_proj",
                    _ => unreachable!(),
                };
                format!("model.layers.{i}.{sub}.weight")
            }
            NameScheme::Gguf => {
                let sub = match what {
                    "q" => "attn_q",
                    "k" => "attn_k",
                    "v" => "attn_v",
                    "o" => "attn_output",
                    "q_norm" => "attn_q_norm",
                    "k_norm" => "attn_k_norm",
                    "attn_norm" => "attn_norm",
                    "post_attn_norm" => "post_attention_norm",
                    // llama.cpp calls the pre-FFN norm `ffn_norm` in every generation.
                    "pre_ffn_norm" => "ffn_norm",
                    "post_ffn_norm" => "post_ffw_norm",
                    "gate" => "ffn_gate",
                    "up" => "ffn_up",
                    "down" => "ffn_down",
                    _ => unreachable!(),
                };
                format!("blk.{i}.{sub}.weight")
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Global {
    Embed,
    FinalNorm,
    LmHead,
}

/// One decoder layer. Norm scales are f32 with `1 + w` applied.
#[derive(Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// (q_dim, d_model)
    pub q: Matrix,
    /// (kv_dim, d_model)
    pub k: Matrix,
    /// (kv_dim, d_model)
    pub v: Matrix,
    /// (d_model, q_dim)
    pub o: Matrix,
    /// (head_dim) each, when `config.qk_norm`.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// After attention, when `config.sandwich_norms`.
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub post_ffn_norm: Option<Vec<f32>>,
    /// (ffn_dim, d_model)
    pub gate: Matrix,
    /// (ffn_dim, d_model)
    pub up: Matrix,
    /// (d_model, ffn_dim)
    pub down: Matrix,
}

#[derive(Debug)]
pub struct Weights {
    /// (vocab, d_model); also the output projection when tied.
    pub embed: Matrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// (vocab, d_model) when not tied to the embedding.
    pub lm_head: Option<Matrix>,
}

impl Weights {
    pub fn output(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Weight bytes one decoded token reads: every layer matrix and the output projection (the embedding
    /// lookup reads one row, left out).
    pub fn bytes_per_token(&self) -> usize {
        self.output().n_bytes() + self.layers.iter().flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]).map(|m| m.n_bytes()).sum::<usize>()
    }

    /// Every matrix, for byte counts and summaries.
    pub fn matrices(&self) -> impl Iterator<Item = &Matrix> {
        std::iter::once(&self.embed)
            .chain(self.lm_head.iter())
            .chain(self.layers.iter().flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]))
    }

    /// Pick the tensors a config needs out of a store, checking every shape.
    pub fn from_store(cfg: &Config, store: &TensorStore, names: NameScheme, norms: NormConvention) -> Result<Weights> {
        let file = &store.path;
        let get = |name: &str| store.get(name).ok_or_else(|| Error::MissingTensor { file: file.clone(), name: name.into() });
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<Matrix> { to_matrix(file, name, get(name)?, rows, cols) };
        let norm = |name: &str, n: usize| -> Result<Vec<f32>> {
            let t = get(name)?;
            check_shape(file, name, t, &[n])?;
            let mut w = t.to_f32_vec();
            if norms == NormConvention::AddOne {
                w.iter_mut().for_each(|x| *x += 1.0);
            }
            Ok(w)
        };
        let (d, hd) = (cfg.d_model, cfg.head_dim);
        let embed = to_matrix(file, names.global(Global::Embed), get(names.global(Global::Embed))?, cfg.vocab_size, d)?;
        let lm_head = match store.get(names.global(Global::LmHead)) {
            Some(t) if !cfg.tie_embeddings || names == NameScheme::Gguf => {
                Some(to_matrix(file, names.global(Global::LmHead), t, cfg.vocab_size, d)?)
            }
            // A tied checkpoint may still carry a copy of the embedding as lm_head: the embedding is used.
            Some(_) => None,
            None if cfg.tie_embeddings => None,
            None => return Err(Error::MissingTensor { file: file.clone(), name: names.global(Global::LmHead).into() }),
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |w: &str| names.layer(i, w);
            // Gemma 1 has one norm before the MLP, which transformers calls `post_attention_layernorm`;
            // Gemma 2/3 call it `pre_feedforward_layernorm` and use `post_attention_layernorm` after attention.
            let ffn_norm_name = match (cfg.sandwich_norms, names) {
                (false, NameScheme::HuggingFace) => n("post_attn_norm"),
                _ => n("pre_ffn_norm"),
            };
            layers.push(LayerWeights {
                attn_norm: norm(&n("attn_norm"), d)?,
                q: matrix(&n("q"), cfg.q_dim(), d)?,
                k: matrix(&n("k"), cfg.kv_dim(), d)?,
                v: matrix(&n("v"), cfg.kv_dim(), d)?,
                o: matrix(&n("o"), d, cfg.q_dim())?,
                q_norm: cfg.qk_norm.then(|| norm(&n("q_norm"), hd)).transpose()?,
                k_norm: cfg.qk_norm.then(|| norm(&n("k_norm"), hd)).transpose()?,
                post_attn_norm: cfg.sandwich_norms.then(|| norm(&n("post_attn_norm"), d)).transpose()?,
                ffn_norm: norm(&ffn_norm_name, d)?,
                post_ffn_norm: cfg.sandwich_norms.then(|| norm(&n("post_ffn_norm"), d)).transpose()?,
                gate: matrix(&n("gate"), cfg.ffn_dim, d)?,
                up: matrix(&n("up"), cfg.ffn_dim, d)?,
                down: matrix(&n("down"), d, cfg.ffn_dim)?,
            });
        }
        let final_norm = norm(names.global(Global::FinalNorm), d)?;
        Ok(Weights { embed, layers, final_norm, lm_head })
    }
}

fn check_shape(file: &std::path::Path, name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape != want {
        return Err(Error::ShapeMismatch { file: file.into(), name: name.into(), expected: want.to_vec(), got: t.shape.clone() });
    }
    Ok(())
}

fn to_matrix(file: &std::path::Path, name: &str, t: &Tensor, rows: usize, cols: usize) -> Result<Matrix> {
    check_shape(file, name, t, &[rows, cols])?;
    if t.dtype.row_bytes(cols).is_none() {
        return Err(Error::UnsupportedDType {
            file: file.into(),
            name: name.into(),
            dtype: t.dtype.name().into(),
            what: format!("needs rows of a multiple of {} elements, not {cols}", t.dtype.block_len()),
        });
    }
    let mut data = t.data.clone();
    if t.dtype == DType::F32 && !data.is_aligned(4) {
        data = data.copy_aligned();
    }
    Ok(Matrix::new(t.dtype, rows, cols, data).in_kernel_layout())
}

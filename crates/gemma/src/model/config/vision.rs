//! The image side of a vision-language checkpoint: a SigLIP encoder (transformers' `SiglipVisionConfig`) and
//! the projector that maps its rows into the text model's embedding space (PaliGemma: one Linear with bias;
//! Gemma 3: average pooling to `mm_tokens_per_image`, RMSNorm, a matrix without bias).

use std::path::Path;

use crate::{Error, Result};

/// How image features reach the text stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projector {
    /// `PaliGemmaMultiModalProjector`: Linear(vision d_model → projection_dim) with bias, every patch a token.
    PaliGemma,
    /// `Gemma3MultiModalProjector`: patches average-pooled to `tokens_per_image`, RMSNorm, projection.
    Gemma3,
}

/// SigLIP vision tower hyper-parameters (pre-LN encoder, no pooling head).
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipConfig {
    pub d_model: usize,
    pub ffn_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Side of the square input image, pixels.
    pub image_size: usize,
    /// Side of a square patch, pixels (the stride of the patch-embedding convolution).
    pub patch_size: usize,
    /// LayerNorm epsilon (`layer_norm_eps`).
    pub norm_eps: f64,
}

impl SiglipConfig {
    /// Patches per side of the image.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Patch rows the encoder produces per image.
    pub fn n_patches(&self) -> usize {
        self.patches_per_side().pow(2)
    }
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }
}

/// Validated vision config: encoder, projector, and how images appear in the token stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub encoder: SiglipConfig,
    pub projector: Projector,
    /// Width the projector maps to; equals the text model's d_model.
    pub projection_dim: usize,
    /// Image rows in the text stream per image (PaliGemma: every patch; Gemma 3: after pooling).
    pub tokens_per_image: usize,
    /// The placeholder token id whose embeddings image rows replace (`image_token_index`).
    pub image_token_id: u32,
}

/// A vision config as the file gives it (keys of `vision_config` and the outer config), before defaults.
#[derive(Debug, Clone, Default)]
pub struct RawVision {
    pub projector: Option<Projector>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub image_size: Option<usize>,
    pub patch_size: Option<usize>,
    pub layer_norm_eps: Option<f64>,
    pub projection_dim: Option<usize>,
    pub mm_tokens_per_image: Option<usize>,
    pub image_token_index: Option<u32>,
}

impl RawVision {
    /// transformers' `SiglipVisionConfig` defaults as PaliGemma and Gemma 3 instantiate it (so400m: 1152 wide,
    /// 27 layers, 16 heads, patch 14), and the projectors' checks. Errors name `vision_config.<key>`.
    pub fn validate(&self, file: &Path, text_d_model: usize) -> Result<VisionConfig> {
        let err = |field: &str, what: String| Error::config(file, field, what);
        let projector = self.projector.ok_or_else(|| {
            err(
                "model_type",
                "a vision config without a known projector".into(),
            )
        })?;
        let encoder = SiglipConfig {
            d_model: self.hidden_size.unwrap_or(1152),
            ffn_dim: self.intermediate_size.unwrap_or(4304),
            n_layers: self.num_hidden_layers.unwrap_or(27),
            n_heads: self.num_attention_heads.unwrap_or(16),
            image_size: self.image_size.unwrap_or(match projector {
                Projector::PaliGemma => 224,
                Projector::Gemma3 => 896,
            }),
            patch_size: self.patch_size.unwrap_or(14),
            norm_eps: self.layer_norm_eps.unwrap_or(1e-6),
        };
        for (k, v) in [
            ("hidden_size", encoder.d_model),
            ("intermediate_size", encoder.ffn_dim),
            ("num_hidden_layers", encoder.n_layers),
            ("num_attention_heads", encoder.n_heads),
            ("image_size", encoder.image_size),
            ("patch_size", encoder.patch_size),
        ] {
            if v == 0 {
                return Err(err(
                    &format!("vision_config.{k}"),
                    "must be positive".into(),
                ));
            }
        }
        if encoder.d_model % encoder.n_heads != 0 {
            return Err(err(
                "vision_config.num_attention_heads",
                format!(
                    "{} does not divide hidden_size = {}",
                    encoder.n_heads, encoder.d_model
                ),
            ));
        }
        if encoder.image_size % encoder.patch_size != 0 {
            return Err(err(
                "vision_config.patch_size",
                format!(
                    "{} does not divide image_size = {}",
                    encoder.patch_size, encoder.image_size
                ),
            ));
        }
        if !(encoder.norm_eps > 0.0 && encoder.norm_eps < 1.0) {
            return Err(err(
                "vision_config.layer_norm_eps",
                format!("{} out of range", encoder.norm_eps),
            ));
        }
        let projection_dim = self.projection_dim.unwrap_or(text_d_model);
        if projection_dim != text_d_model {
            return Err(err(
                "projection_dim",
                format!(
                    "{projection_dim} differs from the text model's hidden_size {text_d_model}"
                ),
            ));
        }
        let tokens_per_image = match projector {
            Projector::PaliGemma => encoder.n_patches(),
            Projector::Gemma3 => {
                let t = self.mm_tokens_per_image.unwrap_or(256);
                // Pooling kernel = patches per side / sqrt(tokens): both must be whole numbers.
                let side = (t as f64).sqrt().round() as usize;
                if t == 0 || side * side != t || encoder.patches_per_side() % side != 0 {
                    return Err(err(
                        "mm_tokens_per_image",
                        format!(
                            "{t} must be a square whose side divides the {} patches per side",
                            encoder.patches_per_side()
                        ),
                    ));
                }
                t
            }
        };
        let image_token_id = self.image_token_index.unwrap_or(match projector {
            Projector::PaliGemma => 257152,
            Projector::Gemma3 => 262144,
        });
        Ok(VisionConfig {
            encoder,
            projector,
            projection_dim,
            tokens_per_image,
            image_token_id,
        })
    }
}

//! Images on the command line: load each file, preprocess it for the model, encode it, and say where its
//! rows go in the ids.

use std::ops::Range;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gemma::kernels::ThreadPool;
use gemma::model::config::Projector;
use gemma::model::{EmbeddingRows, Model};
use gemma::runtime::image::{load_image, Image};
use gemma::runtime::multimodal::model_pixels;

/// Encoded images and their places in a prompt.
#[derive(Default)]
pub struct ImageInputs {
    /// Offset in the ids of each image's first placeholder.
    pub at: Vec<usize>,
    /// Each image's rows, (tokens_per_image, d_model).
    pub data: Vec<Vec<f32>>,
    /// Spans of the ids that attend bidirectionally.
    pub bidirectional: Vec<Range<usize>>,
    /// The images as loaded (orientation applied), for drawing on them.
    pub images: Vec<Image>,
}

impl ImageInputs {
    /// The images of `paths` for ids that already hold their placeholders (`gemma logits`). PaliGemma: the
    /// first `prefix_len` ids (default all) attend bidirectionally; Gemma 3: each image's block does.
    pub fn for_ids(model: &Model, pool: &ThreadPool, paths: &[PathBuf], ids: &[u32], prefix_len: Option<usize>) -> Result<Self> {
        if paths.is_empty() {
            if prefix_len.is_some() {
                bail!("--prefix-len only applies with --image");
            }
            return Ok(Self::default());
        }
        let Some(v) = &model.config.vision else {
            bail!("--image: this model has no image encoder (it is a text-only checkpoint)");
        };
        let at = gemma::runtime::multimodal::find_images(ids, v, paths.len())?;
        let bidirectional = match v.projector {
            Projector::PaliGemma => {
                let n = prefix_len.unwrap_or(ids.len());
                if n > ids.len() {
                    bail!("--prefix-len {n} is longer than the {} ids", ids.len());
                }
                vec![0..n]
            }
            Projector::Gemma3 => {
                if prefix_len.is_some() {
                    bail!("--prefix-len is PaliGemma's; in Gemma 3 only each image's block attends both ways");
                }
                at.iter().map(|&i| i..i + v.tokens_per_image).collect()
            }
        };
        let mut out = ImageInputs { at, bidirectional, ..Default::default() };
        for p in paths {
            out.push(model, pool, p)?;
        }
        Ok(out)
    }

    /// Load, preprocess and encode one image file, appending its rows.
    pub fn push(&mut self, model: &Model, pool: &ThreadPool, path: &PathBuf) -> Result<()> {
        let v = model.config.vision.as_ref().context("this model has no image encoder")?;
        let img = load_image(path)?;
        let pixels = model_pixels(&img, v);
        self.data.push(model.embed_image(pool, &pixels).with_context(|| format!("encoding {}", path.display()))?);
        self.images.push(img);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rows(&self) -> Vec<EmbeddingRows<'_>> {
        self.at.iter().zip(&self.data).map(|(&at, data)| EmbeddingRows { at, data }).collect()
    }

    /// Where the last bidirectional span ends (0 if none).
    pub fn bidirectional_end(&self) -> usize {
        self.bidirectional.last().map_or(0, |r| r.end)
    }
}

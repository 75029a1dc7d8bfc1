//! Prompts with images, laid out token for token as transformers' processors lay them out, with the
//! places where each image's rows go and the spans that attend bidirectionally.

use std::ops::Range;

use super::image::{preprocess, Image, Resample};
use crate::model::config::{Projector, VisionConfig};
use crate::tokenizer::{EncodeOptions, Tokenizer};
use crate::{Error, Result};

/// A tokenized prompt with image placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePrompt {
    /// Token ids, with `tokens_per_image` placeholders (`image_token_id`) where each image's rows go.
    pub ids: Vec<u32>,
    /// Offset in `ids` of each image's first placeholder, in image order.
    pub image_at: Vec<usize>,
    /// Spans of `ids` that attend bidirectionally (sorted, disjoint).
    pub bidirectional: Vec<Range<usize>>,
}

/// An image as the model's processor prepares it: resized to the encoder's size (PaliGemma's
/// `SiglipImageProcessor`: bicubic; Gemma 3's: bilinear; both Pillow's, bit for bit), × 1/255,
/// (x − 0.5) / 0.5. (3, image_size, image_size), channels first, for [`Model::embed_image`](crate::model::Model::embed_image).
pub fn model_pixels(image: &Image, v: &VisionConfig) -> Vec<f32> {
    let filter = match v.projector {
        Projector::PaliGemma => Resample::Bicubic,
        Projector::Gemma3 => Resample::Bilinear,
    };
    preprocess(image, v.encoder.image_size as u32, [0.5; 3], [0.5; 3], filter)
}

/// `PaliGemmaProcessor`'s layout: `<image>` × (tokens_per_image · n_images), `<bos>`, the prompt, `\n`
/// (the prefix, attending bidirectionally), then with a suffix: its tokens and `<eos>` (causal).
/// The prompt is a task such as `caption en`, `answer en what is this?`, `detect cat ; dog`, `ocr`.
/// Control-token strings in the prompt are not parsed (a user's `<eos>` stays text); `<locNNNN>` and the
/// other user-defined tokens are, as the processor's tokenizer does.
pub fn paligemma_prompt(
    tok: &Tokenizer,
    v: &VisionConfig,
    n_images: usize,
    prompt: &str,
    suffix: Option<&str>,
) -> Result<ImagePrompt> {
    let bos = tok.bos_id().ok_or_else(|| Error::Tokenizer("the tokenizer has no <bos> token, which PaliGemma prompts begin with".into()))?;
    let text = EncodeOptions { add_bos: false, parse_special: false };
    let n = v.tokens_per_image;
    let mut ids = vec![v.image_token_id; n * n_images];
    ids.push(bos);
    ids.extend(tok.encode(&format!("{prompt}\n"), text));
    let prefix = ids.len();
    if let Some(s) = suffix {
        ids.extend(tok.encode(s, text));
        ids.push(tok.eos_id().ok_or_else(|| Error::Tokenizer("the tokenizer has no <eos> token to end a suffix".into()))?);
    }
    Ok(ImagePrompt { ids, image_at: (0..n_images).map(|i| i * n).collect(), bidirectional: vec![0..prefix] })
}

/// `Gemma3Processor`'s layout of a prompt already rendered by the chat template (where an image part is one
/// `<start_of_image>`): each `<start_of_image>` becomes `\n\n<start_of_image>` + `tokens_per_image` ×
/// `<image_soft_token>` + `<end_of_image>\n\n`, and the whole text is tokenized (special tokens parsed, no
/// BOS added: the template wrote it), so the newlines merge with their neighbours as the processor's
/// tokenizer merges them. Each image's soft tokens attend bidirectionally among themselves.
/// Errors: a tokenizer without the three image tokens.
pub fn gemma3_prompt(tok: &Tokenizer, v: &VisionConfig, rendered: &str) -> Result<ImagePrompt> {
    let piece = |id: u32| {
        tok.piece(id).map(str::to_string).ok_or_else(|| Error::Tokenizer(format!("the tokenizer has no token {id}, which the config names as an image token")))
    };
    let boi = tok.token_id("<start_of_image>").ok_or_else(|| Error::Tokenizer("the tokenizer has no <start_of_image> token".into()))?;
    let (boi_piece, soft) = (piece(boi)?, piece(v.image_token_id)?);
    let eoi = tok.token_id("<end_of_image>").map(piece).transpose()?.unwrap_or_else(|| "<end_of_image>".into());
    let block = format!("\n\n{boi_piece}{}{eoi}\n\n", soft.repeat(v.tokens_per_image));
    let ids = tok.encode(&rendered.replace(&boi_piece, &block), EncodeOptions { add_bos: false, parse_special: true });
    let n_images = rendered.matches(&boi_piece).count();
    let image_at = find_images(&ids, v, n_images)?;
    let bidirectional = image_at.iter().map(|&i| i..i + v.tokens_per_image).collect();
    Ok(ImagePrompt { ids, image_at, bidirectional })
}

/// Placeholders laid out by the caller (e.g. `gemma logits --ids`): each run of `tokens_per_image`
/// consecutive `image_token_id`s is one image. Errors: a run whose length is not a multiple of
/// `tokens_per_image`, or a number of images other than `n_images`.
pub fn find_images(ids: &[u32], v: &VisionConfig, n_images: usize) -> Result<Vec<usize>> {
    let n = v.tokens_per_image;
    let mut at = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        if ids[i] != v.image_token_id {
            i += 1;
            continue;
        }
        let run = ids[i..].iter().take_while(|&&t| t == v.image_token_id).count();
        if run % n != 0 {
            return Err(Error::Invalid(format!(
                "{run} image placeholders (id {}) at offset {i}: each image takes exactly {n}",
                v.image_token_id
            )));
        }
        at.extend((0..run / n).map(|k| i + k * n));
        i += run;
    }
    if at.len() != n_images {
        return Err(Error::Invalid(format!(
            "the ids hold placeholders for {} image(s) ({n} ids of {} each), but {n_images} image(s) were given",
            at.len(),
            v.image_token_id
        )));
    }
    Ok(at)
}

/// Where the next chunk of a prompt ends when `fed` of its `len` tokens have been read: after at most `budget`
/// more tokens, but never inside a bidirectional span (`spans` sorted and disjoint; a span's first query sees
/// its last key, so a span is read in one chunk). A span the chunk would cut is left to the next chunk when
/// the chunk can stop before it, or read whole when it starts the chunk (the chunk is then longer than
/// `budget`). `budget` 0 reads nothing.
pub fn chunk_end(fed: usize, len: usize, budget: usize, spans: &[Range<usize>]) -> usize {
    let end = (fed + budget).min(len);
    match spans.iter().find(|s| s.start < end && end < s.end) {
        Some(s) if s.start > fed => s.start,
        Some(s) => s.end,
        None => end,
    }
}

#[cfg(test)]
mod tests {
    use super::chunk_end;

    #[test]
    fn chunks_never_cut_a_span() {
        let spans = [2..6, 8..9, 10..20];
        // Budget 3 from 0 would cut 2..6: stop before it; from 2 the span goes whole.
        assert_eq!(chunk_end(0, 30, 3, &spans), 2);
        assert_eq!(chunk_end(2, 30, 3, &spans), 6);
        assert_eq!(chunk_end(6, 30, 3, &spans), 9);
        assert_eq!(chunk_end(9, 30, 3, &spans), 10);
        assert_eq!(chunk_end(10, 30, 1, &spans), 20);
        assert_eq!(chunk_end(20, 30, 100, &spans), 30);
        assert_eq!(chunk_end(0, 30, 0, &spans), 0);
        // PaliGemma: the prefix spans from 0, so any budget reads it whole.
        assert_eq!(chunk_end(0, 300, 128, &[0..260]), 260);
        // Walking with budget 1 reads every span whole and every token once.
        let (mut fed, mut chunks) = (0, Vec::new());
        while fed < 30 {
            let e = chunk_end(fed, 30, 1, &spans);
            chunks.push(fed..e);
            fed = e;
        }
        for s in &spans {
            assert!(chunks.contains(s), "{s:?} not read whole: {chunks:?}");
        }
    }
}

//! Gemma 3 with images against transformers 5.24 on a tiny random `Gemma3ForConditionalGeneration`
//! (tests/fixtures/tiny/gemma3_vision, made by tools/fixtures/make_gemma3_vision.py): SigLIP, the projector
//! (2×2 average pool, RMSNorm, matrix), the prompt as `Gemma3Processor` expands a chat-template rendering,
//! every position's logits for one and two images in one pass and in chunks cut at the image blocks (a block
//! is never split), a wide image through the bilinear resize, and greedy generation.
//!
//! The tiny model's sliding window (8) is shorter than an image's 16 soft tokens, so the test also pins
//! transformers' mask there: a soft token sees its whole block ahead but only the window behind
//! (`Config::window_bounds_spans`). Tolerance: 1e-4 against the forward pass in f64, as tests/paligemma.rs.

use std::ops::Range;
use std::path::PathBuf;

use gemma::kernels::ThreadPool;
use gemma::model::{Chunk, EmbeddingRows, LogitsWanted, Model, Scratch};
use gemma::runtime::multimodal::{gemma3_prompt, model_pixels};
use gemma::runtime::sampler::argmax;
use serde::Deserialize;

const TOL: f32 = 1e-4;

#[derive(Deserialize)]
struct Case {
    prompt: Option<String>,
    ids: Vec<u32>,
    image_offsets: Option<Vec<usize>>,
    logits_f64: Vec<Vec<f32>>,
    pixel_values: Option<Vec<Vec<Vec<f32>>>>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt_ids: Vec<u32>,
    generated: Vec<u32>,
}

#[derive(Deserialize)]
struct Expected {
    mm_tokens_per_image: usize,
    pixel_values: Vec<Vec<Vec<f32>>>,
    siglip: Vec<Vec<f32>>,
    projected: Vec<Vec<f32>>,
    one_image: Case,
    two_images: Case,
    wide_image: Case,
    greedy: Greedy,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/gemma3_vision")
}

fn expected() -> Expected {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn flat(p: &[Vec<Vec<f32>>]) -> Vec<f32> {
    p.iter().flatten().flatten().copied().collect()
}

/// The image files' rows, loaded and preprocessed as the model's processor does.
fn image_rows(model: &Model, pool: &ThreadPool, files: &[&str]) -> Vec<Vec<f32>> {
    let v = model.config.vision.as_ref().unwrap();
    files.iter().map(|f| model.embed_image(pool, &model_pixels(&gemma::runtime::load_image(dir().join(f)).unwrap(), v)).unwrap()).collect()
}

/// Logits of every position, the ids fed in chunks ending at `cuts` (each image block inside one chunk).
fn logits(model: &Model, pool: &ThreadPool, ids: &[u32], at: &[usize], images: &[Vec<f32>], cuts: &[usize]) -> Vec<Vec<f32>> {
    let (vocab, n) = (model.config.vocab_size, model.config.vision.as_ref().unwrap().tokens_per_image);
    let mut state = model.new_state(ids.len());
    let mut scratch = Scratch::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([ids.len()].iter()).filter(|&&c| c > 0) {
        let rows: Vec<EmbeddingRows> = at.iter().zip(images).filter(|(&a, _)| a >= start && a < end).map(|(&a, d)| EmbeddingRows { at: a - start, data: d }).collect();
        let spans: Vec<Range<usize>> = rows.iter().map(|r| r.at..r.at + n).collect();
        let mut chunk = Chunk::new(&ids[start..end], &mut state, LogitsWanted::All);
        chunk.rows = &rows;
        chunk.bidirectional = &spans;
        model.forward(pool, &mut [chunk], &mut scratch).unwrap();
        out.extend(scratch.logits(0, vocab).chunks_exact(vocab).map(<[f32]>::to_vec));
        start = end;
    }
    out
}

#[test]
fn image_tower_matches_transformers() {
    let e = expected();
    let model = gemma::load(&dir()).unwrap();
    let v = model.config.vision.clone().unwrap();
    assert_eq!(v.tokens_per_image, e.mm_tokens_per_image);
    let pool = ThreadPool::new(2);
    let w = model.weights.vision.as_ref().unwrap();
    let features = w.encode(&v.encoder, &pool, &flat(&e.pixel_values)).unwrap();
    let d = max_diff(&features, &e.siglip.concat());
    assert!(d <= TOL, "SigLIP output differs by {d}");
    let d = max_diff(&w.project(&v, &pool, &features), &e.projected.concat());
    assert!(d <= TOL, "projected rows differ by {d}");
    // The PNG through the processor's preprocessing gives the same pixels, and a wide one is resized as
    // Pillow's bilinear does.
    let img = gemma::runtime::load_image(dir().join("image.png")).unwrap();
    assert_eq!(model_pixels(&img, &v), flat(&e.pixel_values));
    let wide = gemma::runtime::load_image(dir().join("image_wide.png")).unwrap();
    let d = max_diff(&model_pixels(&wide, &v), &flat(e.wide_image.pixel_values.as_ref().unwrap()));
    assert!(d <= 1e-6, "wide image pixels differ by {d}");
}

#[test]
fn one_and_two_images_in_one_pass_and_in_chunks() {
    let e = expected();
    let (model, tok) = gemma::load_with_tokenizer(&dir()).unwrap();
    let v = model.config.vision.clone().unwrap();
    for threads in [1, 2] {
        let pool = ThreadPool::new(threads);
        for (c, files) in [(&e.one_image, &["image.png"][..]), (&e.two_images, &["image.png", "image_b.png"][..]), (&e.wide_image, &["image_wide.png"][..])] {
            let at = gemma::runtime::multimodal::find_images(&c.ids, &v, files.len()).unwrap();
            if let Some(offsets) = &c.image_offsets {
                assert_eq!(&at, offsets);
            }
            if let Some(prompt) = &c.prompt {
                let p = gemma3_prompt(&tok, &v, prompt).unwrap();
                assert_eq!(p.ids, c.ids, "the processor's expansion of {prompt:?}");
                assert_eq!(p.image_at, at);
            }
            let images = image_rows(&model, &pool, files);
            let n = v.tokens_per_image;
            // One pass; cut before and after each block; then each block followed by token-by-token decoding.
            let around: Vec<usize> = at.iter().flat_map(|&a| [a, a + n]).collect();
            let mut decode: Vec<usize> = Vec::new();
            let mut p = 0;
            while p < c.ids.len() {
                match at.iter().find(|&&a| a == p) {
                    Some(&a) => p = a + n,
                    None => p += 1,
                }
                decode.push(p);
            }
            for cuts in [vec![], around, decode] {
                let got = logits(&model, &pool, &c.ids, &at, &images, &cuts);
                let d = got.iter().zip(&c.logits_f64).map(|(g, w)| max_diff(g, w)).fold(0.0, f32::max);
                assert_eq!(got.len(), c.logits_f64.len());
                assert!(d <= TOL, "{:?} cuts {cuts:?}, {threads} threads: logits differ by {d}", files);
            }
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let e = expected();
    let model = gemma::load(&dir()).unwrap();
    let v = model.config.vision.clone().unwrap();
    let pool = ThreadPool::new(2);
    let ids = &e.greedy.prompt_ids;
    let at = gemma::runtime::multimodal::find_images(ids, &v, 1).unwrap();
    let image = &image_rows(&model, &pool, &["image.png"])[0];
    let mut gen = gemma::runtime::Generation::new(&model, 64, gemma::runtime::SamplerConfig::greedy());
    let rows = [EmbeddingRows { at: at[0], data: image }];
    gen.feed_multimodal(&pool, ids, &rows, &[at[0]..at[0] + v.tokens_per_image]).unwrap();
    let mut out = Vec::new();
    for _ in 0..e.greedy.generated.len() {
        let t = argmax(gen.logits());
        out.push(t);
        gen.feed(&pool, &[t], |_| {}).unwrap();
    }
    assert_eq!(out, e.greedy.generated);
}

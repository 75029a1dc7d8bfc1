//! PaliGemma 1 and 2 against transformers 5.24 on tiny random checkpoints (tests/fixtures/tiny/paligemma*,
//! made by tools/fixtures/make_paligemma.py; eager attention, f32): the SigLIP output, the projected image
//! rows, every position's logits of a prefix-only prompt and of prefix + suffix, the greedy continuation, and
//! the prompt as `PaliGemmaProcessor` lays it out. PaliGemma 2's sliding window (6) is shorter than its
//! 25-token prefix, so the bidirectional prefix must override the window, as transformers' OR of masks does.
//!
//! Tolerance: 1e-4 on logits of O(10) with f32 weights (summation order only), as in conformance.rs, against
//! the same forward pass in float64: transformers' own f32 logits stray from it by up to 1.6e-4 at one position
//! of PaliGemma 1's prefix (ours by 3.6e-5), so the f32 reference alone would judge its own rounding. The
//! Hub-layout copy (bf16 shards under the Hub's tensor names) is compared with transformers running the same
//! bf16 weights upcast, at the same tolerance.

use std::ops::Range;
use std::path::PathBuf;

use gemma::kernels::ThreadPool;
use gemma::model::{Chunk, EmbeddingRows, LogitsWanted, Model, Scratch};
use gemma::runtime::multimodal::paligemma_prompt;
use gemma::runtime::sampler::argmax;
use serde::Deserialize;

const TOL: f32 = 1e-4;

#[derive(Deserialize)]
struct Case {
    text: String,
    suffix: Option<String>,
    ids: Vec<u32>,
    prefix_len: usize,
    /// transformers in f32, and the same forward pass in f64.
    logits: Vec<Vec<f32>>,
    logits_f64: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt_ids: Vec<u32>,
    generated: Vec<u32>,
}

#[derive(Deserialize)]
struct Expected {
    image_tokens: usize,
    pixel_values: Vec<Vec<Vec<f32>>>,
    siglip: Vec<Vec<f32>>,
    projected: Vec<Vec<f32>>,
    prefix: Case,
    /// Not in the Hub-layout copy.
    prefix_suffix: Option<Case>,
    greedy: Greedy,
}

fn dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny").join(case)
}

fn expected(case: &str) -> Expected {
    serde_json::from_str(&std::fs::read_to_string(dir(case).join("expected.json")).unwrap()).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn max_diff_rows(got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    assert_eq!(got.len(), want.len(), "rows");
    got.iter().zip(want).map(|(g, w)| max_diff(g, w)).fold(0.0, f32::max)
}

fn pixels(e: &Expected) -> Vec<f32> {
    e.pixel_values.iter().flatten().flatten().copied().collect()
}

/// The logits of every position: `ids[..first]` in one pass (image rows at 0, prefix bidirectional), the
/// rest one token at a time.
fn logits(model: &Model, pool: &ThreadPool, ids: &[u32], image: &[f32], prefix: Range<usize>, first: usize) -> Vec<Vec<f32>> {
    let vocab = model.config.vocab_size;
    let mut state = model.new_state(ids.len());
    let mut scratch = Scratch::new();
    let rows = [EmbeddingRows { at: 0, data: image }];
    let spans = [prefix];
    let mut chunk = Chunk::new(&ids[..first], &mut state, LogitsWanted::All);
    chunk.rows = &rows;
    chunk.bidirectional = &spans;
    model.forward(pool, &mut [chunk], &mut scratch).unwrap();
    let mut out: Vec<Vec<f32>> = scratch.logits(0, vocab).chunks_exact(vocab).map(<[f32]>::to_vec).collect();
    for id in &ids[first..] {
        let mut chunks = [Chunk::new(std::slice::from_ref(id), &mut state, LogitsWanted::All)];
        model.forward(pool, &mut chunks, &mut scratch).unwrap();
        out.push(scratch.logits(0, vocab).to_vec());
    }
    out
}

fn check_case(case: &str) {
    let e = expected(case);
    let (model, tok) = gemma::load_with_tokenizer(&dir(case)).unwrap();
    let v = model.config.vision.clone().expect("a vision config");
    assert_eq!(v.tokens_per_image, e.image_tokens);
    for threads in [1, 2] {
        let pool = ThreadPool::new(threads);
        let (w, vcfg) = (model.weights.vision.as_ref().unwrap(), &v);
        let features = w.encode(&vcfg.encoder, &pool, &pixels(&e)).unwrap();
        let d = max_diff(&features, &e.siglip.concat());
        assert!(d <= TOL, "{case}: SigLIP output differs by {d}");
        let image = model.embed_image(&pool, &pixels(&e)).unwrap();
        let d = max_diff(&image, &e.projected.concat());
        assert!(d <= TOL, "{case}: projected image rows differ by {d}");

        for c in std::iter::once(&e.prefix).chain(&e.prefix_suffix) {
            // The prompt as the processor lays it out.
            let p = paligemma_prompt(&tok, &v, 1, &c.text, c.suffix.as_deref()).unwrap();
            assert_eq!(p.ids, c.ids, "{case}: prompt ids for {:?}", c.text);
            assert_eq!(p.bidirectional, vec![0..c.prefix_len]);
            // One pass, and the prefix in one pass followed by token-by-token decoding.
            for first in [c.ids.len(), c.prefix_len] {
                let got = logits(&model, &pool, &c.ids, &image, 0..c.prefix_len, first);
                let d = max_diff_rows(&got, &c.logits_f64);
                let d32 = max_diff_rows(&got, &c.logits);
                assert!(d <= TOL, "{case} {:?} (first pass {first} ids, {threads} threads): logits differ by {d} from f64 ({d32} from transformers' f32)", c.text);
            }
        }
    }
    // Greedy generation through the cache.
    let pool = ThreadPool::new(2);
    let image = model.embed_image(&pool, &pixels(&e)).unwrap();
    let mut gen = gemma::runtime::Generation::new(&model, 64, gemma::runtime::SamplerConfig::greedy());
    let n = e.greedy.prompt_ids.len();
    gen.feed_multimodal(&pool, &e.greedy.prompt_ids, &[EmbeddingRows { at: 0, data: &image }], &[0..n]).unwrap();
    let mut out = Vec::new();
    for _ in 0..e.greedy.generated.len() {
        let t = argmax(gen.logits());
        out.push(t);
        gen.feed(&pool, &[t], |_| {}).unwrap();
    }
    assert_eq!(out, e.greedy.generated, "{case}: greedy continuation");
}

#[test]
fn paligemma_1_matches_transformers() {
    check_case("paligemma");
}

#[test]
fn paligemma_2_matches_transformers() {
    check_case("paligemma2");
}

/// The Hub's layout: sharded bf16 safetensors, `vision_tower.vision_model.*`, the legacy config spelling.
#[test]
fn paligemma_hub_layout_loads_and_matches() {
    check_case("paligemma_hub");
}

/// A PaliGemma sequence batched with a text-only one gives the same logits as alone: rows and spans belong
/// to their chunk.
#[test]
fn image_prefix_in_a_batch_with_another_sequence() {
    let e = expected("paligemma");
    let model = gemma::load(&dir("paligemma")).unwrap();
    let pool = ThreadPool::new(2);
    let image = model.embed_image(&pool, &pixels(&e)).unwrap();
    let vocab = model.config.vocab_size;
    let c = e.prefix_suffix.as_ref().unwrap();
    let other: Vec<u32> = vec![2, 300, 301, 302, 303];
    let (mut sa, mut sb) = (model.new_state(64), model.new_state(64));
    let mut scratch = Scratch::new();
    let rows = [EmbeddingRows { at: 0, data: &image }];
    let spans = [0..c.prefix_len];
    let mut a = Chunk::new(&c.ids[..c.prefix_len], &mut sa, LogitsWanted::All);
    a.rows = &rows;
    a.bidirectional = &spans;
    let b = Chunk::new(&other, &mut sb, LogitsWanted::All);
    model.forward(&pool, &mut [b, a], &mut scratch).unwrap();
    let got: Vec<Vec<f32>> = scratch.logits(1, vocab).chunks_exact(vocab).map(<[f32]>::to_vec).collect();
    let d = max_diff_rows(&got, &c.logits_f64[..c.prefix_len]);
    assert!(d <= TOL, "batched prefix logits differ by {d}");
}

/// A prefix cannot be split: a bidirectional span reaching past its chunk is refused, not computed wrong.
#[test]
fn a_split_prefix_is_refused() {
    let e = expected("paligemma");
    let model = gemma::load(&dir("paligemma")).unwrap();
    let pool = ThreadPool::new(1);
    let image = model.embed_image(&pool, &pixels(&e)).unwrap();
    let mut state = model.new_state(64);
    let mut scratch = Scratch::new();
    let rows = [EmbeddingRows { at: 0, data: &image }];
    let spans = [0..e.prefix.prefix_len];
    let mut chunk = Chunk::new(&e.prefix.ids[..18], &mut state, LogitsWanted::All);
    chunk.rows = &rows;
    chunk.bidirectional = &spans;
    assert!(model.forward(&pool, &mut [chunk], &mut scratch).is_err());
    assert_eq!(state.pos, 0, "a refused chunk leaves the state untouched");
}

#[test]
fn wrong_sized_pixels_are_an_error() {
    let model = gemma::load(&dir("paligemma")).unwrap();
    let pool = ThreadPool::new(1);
    let err = model.embed_image(&pool, &[0.0; 10]).unwrap_err().to_string();
    assert!(err.contains("3 × 32 × 32"), "{err}");
    let text_only = gemma::load(&dir("gemma_mqa")).unwrap();
    assert!(text_only.embed_image(&pool, &[0.0; 3072]).is_err());
}

/// A real photo end to end (tests/fixtures/images/photo.jpg, 97×61): ours decodes the JPEG with the `image`
/// crate where transformers uses Pillow (libjpeg-turbo), which differs by a few levels; everything after the
/// decode (Pillow's bicubic resize, the processor's arithmetic) is bit-exact (tests/image.rs). This measures
/// what the decoder difference does to the pixels and to the tiny model's logits.
#[test]
fn a_jpeg_photo_end_to_end_differs_from_pillow_only_by_the_decoder() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/images");
    let exp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap()).unwrap();
    let entry = &exp["images"]["photo.jpg"];
    let pil = b64(entry["pixels"].as_str().unwrap());
    let (w, h) = (entry["width"].as_u64().unwrap() as u32, entry["height"].as_u64().unwrap() as u32);
    let pil_image = gemma::runtime::Image::from_rgb8(w, h, pil).unwrap();
    let ours_image = gemma::runtime::load_image(root.join("photo.jpg")).unwrap();
    let levels = ours_image.as_rgb8().iter().zip(pil_image.as_rgb8()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();

    let (model, _) = gemma::load_with_tokenizer(&dir("paligemma")).unwrap();
    let v = model.config.vision.clone().unwrap();
    let (a, b) = (gemma::runtime::multimodal::model_pixels(&pil_image, &v), gemma::runtime::multimodal::model_pixels(&ours_image, &v));
    let pixel_diff = max_diff(&a, &b) * 127.5; // back to 8-bit levels
    let pool = ThreadPool::new(1);
    let e = expected("paligemma");
    let c = &e.prefix;
    let run = |pixels: &[f32]| logits(&model, &pool, &c.ids, &model.embed_image(&pool, pixels).unwrap(), 0..c.prefix_len, c.ids.len());
    let d = max_diff_rows(&run(&a), &run(&b));
    eprintln!("photo.jpg: decoded pixels differ by up to {levels} levels; after the 32 px resize by {pixel_diff:.2}; tiny PaliGemma's logits by {d:.4}");
    assert!(levels <= 3, "the JPEG decoders differ by {levels} levels");
    assert!(pixel_diff <= levels as f32 + 1e-3, "the resize cannot widen the difference: {pixel_diff}");
}

fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    bytes.chunks(4).flat_map(|q| {
        let n = q.iter().enumerate().fold(0u32, |n, (i, &v)| n | (v as u32) << (18 - 6 * i));
        [(n >> 16) as u8, (n >> 8) as u8, n as u8].into_iter().take(q.len() - 1)
    }).collect()
}

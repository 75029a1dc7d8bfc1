//! Gemma 3 with images against transformers 5.24 on a tiny random `Gemma3ForConditionalGeneration`
//! (tests/fixtures/tiny/gemma3_vision, made by tools/fixtures/make_gemma3_vision.py): SigLIP, the projector
//! (2×2 average pool, RMSNorm, matrix), the prompt as `Gemma3Processor` expands a chat-template rendering,
//! every position's logits for one and two images in one pass and in chunks cut at the image blocks (a block
//! is never split), a wide image through the bilinear resize, and greedy generation.
//!
//! The tiny model's sliding window (8) is shorter than an image's 16 soft tokens, so the test also pins
//! transformers' mask there: a soft token sees its whole block ahead but only the window behind
//! (`Config::window_bounds_spans`). Tolerance: 1e-4 against the forward pass in f64, as tests/paligemma.rs.
//! The same weights also load under the Hub's names and transformers 5's module names (renamed copies made
//! in a scratch folder), and the text model alone runs as a Gemma3ForCausalLM checkpoint cut out of them.

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

/// A copy of the fixture in a scratch folder with its tensors renamed by `rename` (None drops one), written as
/// `shards` safetensors files (by first-name order, with an index when more than one), the other files copied
/// but config.json taken from `config` (a file of the fixture, or JSON text when it starts with `{`).
fn renamed_copy(tag: &str, config: &str, shards: usize, rename: impl Fn(&str) -> Option<String>) -> PathBuf {
    use gemma::formats::safetensors;
    let out = std::env::temp_dir().join(format!("gemma-rs-test-g3names-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json", "preprocessor_config.json", "processor_config.json"] {
        std::fs::copy(dir().join(f), out.join(f)).unwrap();
    }
    let text = if config.starts_with('{') { config.to_string() } else { std::fs::read_to_string(dir().join(config)).unwrap() };
    std::fs::write(out.join("config.json"), text).unwrap();
    let store = safetensors::load_file(&dir().join("model.safetensors")).unwrap();
    let mut kept: Vec<(String, &gemma::formats::Tensor)> = store.tensors.iter().filter_map(|(n, t)| rename(n).map(|m| (m, t))).collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let per = kept.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in kept.chunks(per).enumerate() {
        let file = if shards == 1 { "model.safetensors".to_string() } else { format!("model-{:05}-of-{shards:05}.safetensors", i + 1) };
        let refs: Vec<(&str, gemma::quant::DType, &[usize], &[u8])> = part.iter().map(|(n, t)| (n.as_str(), t.dtype, t.shape.as_slice(), t.bytes())).collect();
        std::fs::write(out.join(&file), safetensors::serialize(&refs)).unwrap();
        for (n, _) in part {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    if shards > 1 {
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(out.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
    }
    out
}

/// Every position's logits of a text-only prompt.
fn text_logits(model: &Model, pool: &ThreadPool, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut state = model.new_state(ids.len());
    let mut scratch = Scratch::new();
    model.forward(pool, &mut [Chunk::new(ids, &mut state, LogitsWanted::All)], &mut scratch).unwrap();
    scratch.logits(0, model.config.vocab_size).chunks_exact(model.config.vocab_size).map(<[f32]>::to_vec).collect()
}

/// The same weights under the names users' checkpoints carry load and give transformers' logits (one and two
/// images, within 1e-4), and the text before the first image gives transformers' logits too. The fixture is
/// what transformers 5.24 `save_pretrained` writes (`language_model.model.*`, `vision_tower.*`,
/// `multi_modal_projector.*`); the copies are
/// - the Hub's Gemma 3 checkpoints (google/gemma-3-4b-it, written by transformers 4.50): the SigLIP tower under
///   `vision_tower.vision_model.*`, the legacy config.json (config.legacy.json), two shards and an index; there
///   is no `lm_head` tensor (tied embeddings);
/// - transformers 5's module names, as a `save_file(model.state_dict())` writes them: `model.language_model.*`,
///   `model.vision_tower.*`, `model.multi_modal_projector.*`.
#[test]
fn hub_and_transformers5_tensor_names_load() {
    let e = expected();
    let hub = renamed_copy("hub", "config.legacy.json", 2, |n| Some(n.strip_prefix("vision_tower.").map_or(n.to_string(), |r| format!("vision_tower.vision_model.{r}"))));
    let t5 = renamed_copy("t5", "config.json", 1, |n| {
        Some(match n.strip_prefix("language_model.model.") {
            Some(r) => format!("model.language_model.{r}"),
            None => format!("model.{n}"),
        })
    });
    let pool = ThreadPool::new(2);
    for d in [&hub, &t5] {
        let model = gemma::load(d).unwrap_or_else(|err| panic!("{}: {err}", d.display()));
        let v = model.config.vision.clone().unwrap();
        for (c, files) in [(&e.one_image, &["image.png"][..]), (&e.two_images, &["image.png", "image_b.png"][..])] {
            let at = gemma::runtime::multimodal::find_images(&c.ids, &v, files.len()).unwrap();
            let images = image_rows(&model, &pool, files);
            let got = logits(&model, &pool, &c.ids, &at, &images, &[]);
            let diff = got.iter().zip(&c.logits_f64).map(|(g, w)| max_diff(g, w)).fold(0.0, f32::max);
            assert!(diff <= TOL, "{}: {files:?} logits differ by {diff}", d.display());
            // Text alone: the positions before the first image see no image rows.
            let first = at[0];
            let got = text_logits(&model, &pool, &c.ids[..first]);
            let diff = got.iter().zip(&c.logits_f64[..first]).map(|(g, w)| max_diff(g, w)).fold(0.0, f32::max);
            assert!(diff <= TOL, "{}: text-only logits differ by {diff}", d.display());
        }
    }
    for d in [hub, t5] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The text model alone, as a Gemma3ForCausalLM checkpoint cut out of the multimodal one (its `text_config` as
/// config.json, the `language_model.model.*` tensors as `model.*`, no vision tower): transformers' logits for
/// the text before the image, and the same logits as the multimodal checkpoint for a whole text-only chat
/// prompt, which the multimodal checkpoint runs as it runs any text.
#[test]
fn text_part_alone_runs() {
    let e = expected();
    let full: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap();
    let mut text = full["text_config"].clone();
    text["architectures"] = serde_json::json!(["Gemma3ForCausalLM"]);
    let d = renamed_copy("text", &text.to_string(), 1, |n| n.strip_prefix("language_model.").map(str::to_string));
    let (model, tok) = gemma::load_with_tokenizer(&d).unwrap();
    assert!(model.config.vision.is_none() && model.weights.vision.is_none());
    let pool = ThreadPool::new(2);
    let c = &e.one_image;
    let first = c.image_offsets.as_ref().unwrap()[0];
    let got = text_logits(&model, &pool, &c.ids[..first]);
    let diff = got.iter().zip(&c.logits_f64[..first]).map(|(g, w)| max_diff(g, w)).fold(0.0, f32::max);
    assert!(diff <= TOL, "text model: logits differ by {diff}");
    let multimodal = gemma::load(&dir()).unwrap();
    let ids = tok.encode("<start_of_turn>user\nDescribe the weather today.<end_of_turn>\n<start_of_turn>model\n", Default::default());
    assert!(ids.len() > 10, "{ids:?}");
    let (a, b) = (text_logits(&model, &pool, &ids), text_logits(&multimodal, &pool, &ids));
    let diff = a.iter().zip(&b).map(|(x, y)| max_diff(x, y)).fold(0.0, f32::max);
    assert!(diff <= 1e-6, "text model and multimodal checkpoint differ by {diff} on a text prompt");
    let _ = std::fs::remove_dir_all(d);
}

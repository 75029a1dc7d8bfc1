//! Gemma 4 from llama.cpp's GGUF files (`general.architecture` = `gemma4`): tests/fixtures/tiny/gemma4_{e2b,moe}/gguf,
//! written by llama.cpp's own `convert_hf_to_gguf.py` from the same tiny checkpoints
//! (tools/fixtures/make_gemma4_gguf.py), against the folders' transformers references.
//!
//! - The config read from the GGUF metadata (per-layer head sizes and KV heads, KV sharing, the double-wide MLP
//!   of the shared layers, the proportional RoPE from `rope_freqs.weight`, the per-layer embeddings, the mixture
//!   of experts, K = V from the absent `attn_v`) is the folder's, layer for layer.
//! - F32: every position's logits within 1e-4 of transformers (f64) in prefill, token-by-token decode, chunked
//!   prefill and two threads; greedy identical.
//! - Q8_0: the converter quantizes every matrix whose rows are a multiple of 32 (the embedding included); ours are
//!   compared with transformers on the dequantized weights, within the measured difference with 1.5x room.
//! - llama.cpp (llama-cpp-python 0.3.36, F32 KV cache): where it runs the file, its logits (llamacpp.json) are
//!   compared with ours, within the bound the fixture README records for llama.cpp against transformers.

use std::path::PathBuf;

use gemma::kernels::ThreadPool;
use gemma::model::{Chunk, LogitsWanted, Model, Scratch};
use gemma::runtime::sampler::argmax;
use serde::Deserialize;

const F32_TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Greedy {
    prompt: Vec<u32>,
    generated: Vec<u32>,
}

#[derive(Deserialize)]
struct Expected {
    ids: Vec<u32>,
    logits_f64: Vec<Vec<f32>>,
    greedy: Greedy,
}

#[derive(Deserialize)]
struct LlamaFile {
    max_abs_diff_vs_transformers_f64: f32,
    logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct LlamaCpp {
    ids: Vec<u32>,
    files: std::collections::HashMap<String, LlamaFile>,
}

fn case_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny").join(case)
}

fn gguf(case: &str, ty: &str) -> PathBuf {
    case_dir(case).join("gguf").join(format!("model.{ty}.gguf"))
}

fn expected(case: &str) -> Expected {
    serde_json::from_str(&std::fs::read_to_string(case_dir(case).join("expected.json")).unwrap()).unwrap()
}

fn run_chunked(model: &Model, pool: &ThreadPool, ids: &[u32], sizes: &[usize]) -> Vec<Vec<f32>> {
    let vocab = model.config.vocab_size;
    let mut state = model.new_state(ids.len());
    let mut scratch = Scratch::new();
    let (mut rows, mut at, mut k) = (Vec::new(), 0, 0);
    while at < ids.len() {
        let n = sizes[k % sizes.len()].min(ids.len() - at);
        let mut chunks = [Chunk::new(&ids[at..at + n], &mut state, LogitsWanted::All)];
        model.forward(pool, &mut chunks, &mut scratch).unwrap();
        rows.extend(scratch.logits(0, vocab).chunks_exact(vocab).map(<[f32]>::to_vec));
        at += n;
        k += 1;
    }
    rows
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "number of positions");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) })
}

fn greedy(model: &Model, pool: &ThreadPool, prompt: &[u32], n: usize) -> Vec<u32> {
    let vocab = model.config.vocab_size;
    let mut state = model.new_state(prompt.len() + n);
    let mut scratch = Scratch::new();
    let mut chunks = [Chunk::new(prompt, &mut state, LogitsWanted::Last)];
    model.forward(pool, &mut chunks, &mut scratch).unwrap();
    let mut next = argmax(scratch.logits(0, vocab));
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next);
        let tok = [next];
        let mut chunks = [Chunk::new(&tok, &mut state, LogitsWanted::Last)];
        model.forward(pool, &mut chunks, &mut scratch).unwrap();
        next = argmax(scratch.logits(0, vocab));
    }
    out
}

/// The GGUF's config is the folder's, except the per-layer table's rows (cut to the 512 llama.cpp requires).
fn check_config(case: &str) {
    let folder = gemma::load_config(&case_dir(case)).unwrap();
    for ty in ["f32", "q8_0"] {
        let mut c = gemma::load_config(&gguf(case, ty)).unwrap();
        assert_eq!(c.norm_eps, folder.norm_eps);
        if let (Some(p), Some(f)) = (c.per_layer_input.as_mut(), folder.per_layer_input) {
            assert_eq!(p.vocab_size, c.vocab_size, "{case}: per-layer rows");
            p.vocab_size = f.vocab_size;
        }
        assert_eq!(c.layers, folder.layers, "{case} {ty}: layers");
        assert_eq!(c.per_layer_input, folder.per_layer_input, "{case} {ty}");
        assert_eq!(c.moe, folder.moe, "{case} {ty}");
        assert_eq!(
            (c.vocab_size, c.d_model, c.n_heads, c.final_softcap, c.query_scale, c.norm_plus_one, c.v_norm, c.layer_scalar),
            (folder.vocab_size, folder.d_model, folder.n_heads, folder.final_softcap, folder.query_scale, folder.norm_plus_one, folder.v_norm, folder.layer_scalar),
            "{case} {ty}"
        );
    }
}

/// F32: every path within 1e-4 of transformers' f64 logits, greedy identical.
fn check_f32(case: &str) {
    let want = expected(case);
    let model = gemma::load(&gguf(case, "f32")).unwrap();
    let (pool1, pool2) = (ThreadPool::new(1), ThreadPool::new(2));
    let n = want.ids.len();
    for (path, pool, sizes) in [
        ("prefill", &pool2, &[n][..]),
        ("prefill 1 thread", &pool1, &[n][..]),
        ("decode", &pool2, &[1][..]),
        ("chunked 7,2,5", &pool2, &[7, 2, 5][..]),
    ] {
        let d = max_diff(&run_chunked(&model, pool, &want.ids, sizes), &want.logits_f64);
        println!("{case} f32 {path}: max |diff| vs transformers f64 = {d:.2e}");
        assert!(d <= F32_TOLERANCE, "{case} f32 {path}: {d}");
    }
    assert_eq!(greedy(&model, &pool2, &want.greedy.prompt, want.greedy.generated.len()), want.greedy.generated);
}

#[derive(Deserialize)]
struct Dequantized {
    ids: Vec<u32>,
    max_abs_diff_vs_f32_weights: f32,
    logits: Vec<Vec<f32>>,
}

/// Q8_0 against transformers run on the same Q8_0 weights dequantized (q8_0_dequantized.json): what is left is
/// our kernels' own rounding (activations quantized to 8 bits per block of 32, as llama.cpp's Q8_0 dot product
/// does), bounded by `tol`; decode equals prefill as tightly as F32; and against the f32 truth the Q8_0 file is
/// off by the weight rounding, which the fixture measured.
fn check_q8(case: &str, tol: f32) {
    let want = expected(case);
    let dq: Dequantized =
        serde_json::from_str(&std::fs::read_to_string(case_dir(case).join("gguf/q8_0_dequantized.json")).unwrap()).unwrap();
    assert_eq!(dq.ids, want.ids);
    let pool = ThreadPool::new(2);
    let q8 = gemma::load(&gguf(case, "q8_0")).unwrap();
    let n = want.ids.len();
    let prefill = run_chunked(&q8, &pool, &want.ids, &[n]);
    let d_ref = max_diff(&prefill, &dq.logits);
    let d_truth = max_diff(&prefill, &want.logits_f64);
    let d_decode = max_diff(&run_chunked(&q8, &pool, &want.ids, &[1]), &prefill);
    println!(
        "{case} q8_0: max |diff| vs transformers on the dequantized weights = {d_ref:.3e}; vs the f32 truth {d_truth:.3e} \
         (weight rounding alone {:.3e}); decode vs prefill {d_decode:.2e}",
        dq.max_abs_diff_vs_f32_weights
    );
    assert!(d_ref <= tol, "{case} q8_0 vs dequantized reference: {d_ref} > {tol}");
    assert!(d_decode <= F32_TOLERANCE, "{case} q8_0 decode vs prefill: {d_decode}");
}

/// llama.cpp's logits for the file, where it ran it: ours agree within what llama.cpp itself is from
/// transformers (plus the F32 tolerance), and the argmax agrees where llama.cpp's top two are apart.
fn check_llamacpp(case: &str, ty: &str) -> bool {
    let l: LlamaCpp =
        serde_json::from_str(&std::fs::read_to_string(case_dir(case).join("gguf/llamacpp.json")).unwrap()).unwrap();
    let Some(f) = l.files.get(ty) else { return false };
    let model = gemma::load(&gguf(case, ty)).unwrap();
    let ours = run_chunked(&model, &ThreadPool::new(2), &l.ids, &[l.ids.len()]);
    let d = max_diff(&ours, &f.logits);
    println!("{case} {ty}: max |diff| vs llama.cpp = {d:.3e} (llama.cpp vs transformers f64: {:.3e})", f.max_abs_diff_vs_transformers_f64);
    assert!(d <= f.max_abs_diff_vs_transformers_f64 + 2e-3, "{case} {ty}: ours vs llama.cpp {d}");
    for (i, (a, b)) in ours.iter().zip(&f.logits).enumerate() {
        let mut s = b.clone();
        s.sort_by(|x, y| y.total_cmp(x));
        if s[0] - s[1] > 2.0 * d {
            assert_eq!(argmax(a), argmax(b), "{case} {ty}: argmax at {i}");
        }
    }
    true
}

#[test]
fn e2b_config_from_gguf_metadata() {
    check_config("gemma4_e2b");
}

#[test]
fn moe_config_from_gguf_metadata() {
    check_config("gemma4_moe");
}

#[test]
fn e2b_f32_gguf_matches_transformers() {
    check_f32("gemma4_e2b");
}

#[test]
fn moe_f32_gguf_matches_transformers() {
    check_f32("gemma4_moe");
}

#[test]
fn e2b_q8_0_gguf_within_rounding() {
    check_q8("gemma4_e2b", Q8_TOLERANCE_E2B);
}

#[test]
fn moe_q8_0_gguf_within_rounding() {
    check_q8("gemma4_moe", Q8_TOLERANCE_MOE);
}

#[test]
fn moe_agrees_with_llama_cpp() {
    assert!(check_llamacpp("gemma4_moe", "f32"), "llama.cpp ran the MoE file when the fixture was made");
    check_llamacpp("gemma4_moe", "q8_0");
}

#[test]
fn e2b_agrees_with_llama_cpp_where_it_runs() {
    // llama-cpp-python 0.3.36 aborts on the E2B-like file (see its README); nothing to compare then.
    for ty in ["f32", "q8_0"] {
        check_llamacpp("gemma4_e2b", ty);
    }
}

// Measured (ours vs transformers on the dequantized Q8_0 weights): 0.705 (E2B-like), 5.04 (MoE) with 1.5x room.
// These tiny random models amplify small perturbations (weight rounding alone moves the logits by 0.74 and 2.37,
// and llama.cpp's own Q8_0 run of the MoE file is 5.1 from the truth; a flipped top-2 expert choice moves a
// row's logits by whole units): a loose bound, not an exactness claim, which F32 makes.
const Q8_TOLERANCE_E2B: f32 = 1.06;
const Q8_TOLERANCE_MOE: f32 = 7.6;

#[derive(Deserialize)]
struct Tokenized {
    texts: Vec<String>,
    llamacpp: Vec<Vec<u32>>,
    transformers: Vec<Vec<u32>>,
}

/// Gemma 4's GGUF tokenizer (`tokenizer.ggml.model` = `gemma4`: tokenizer.json's pieces and its merges list) encodes
/// as llama.cpp does with the file and as transformers does with the tokenizer.json it was converted from
/// (tools/fixtures/gemma4_gguf_tokenize.py), and decodes back to the text.
#[test]
fn gemma4_gguf_tokenizer_matches_llamacpp_and_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/gemma4_moe/gguf");
    let r: Tokenized = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenize.json")).unwrap()).unwrap();
    let tok = gemma::load_tokenizer(&dir.join("model.f32.gguf")).unwrap();
    let opts = gemma::tokenizer::EncodeOptions { add_bos: false, parse_special: false };
    for ((text, ll), hf) in r.texts.iter().zip(&r.llamacpp).zip(&r.transformers) {
        assert_eq!(ll, hf, "the references disagree on {text:?}");
        let ids = tok.encode(text, opts);
        assert_eq!(&ids, ll, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), *text, "{text:?}");
    }
}

//! Bad checkpoints give an error that names the file and what was expected, never a panic.

use std::path::{Path, PathBuf};

use gemma::formats::safetensors;
use gemma::load;

fn tiny(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny").join(case)
}

/// A scratch copy of a fixture folder that a test may break.
fn scratch_copy(case: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gemma-rs-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(tiny(case)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> String {
    match load::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrite model.safetensors keeping only the tensors `keep` accepts, transformed by `f`.
fn rewrite(dir: &Path, f: impl Fn(&str, &gemma::formats::Tensor) -> Option<(Vec<usize>, Vec<u8>)>) {
    let path = dir.join("model.safetensors");
    let store = safetensors::load_file(&path).unwrap();
    let kept: Vec<(String, gemma::quant::DType, Vec<usize>, Vec<u8>)> =
        store.tensors.iter().filter_map(|(n, t)| f(n, t).map(|(s, b)| (n.clone(), t.dtype, s, b))).collect();
    let refs: Vec<(&str, gemma::quant::DType, &[usize], &[u8])> = kept.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice())).collect();
    let img = safetensors::serialize(&refs);
    drop(store);
    std::fs::write(&path, img).unwrap();
}

#[test]
fn missing_tensor() {
    let dir = scratch_copy("gemma_mqa", "missing");
    rewrite(&dir, |n, t| (n != "model.layers.1.mlp.up_proj.weight").then(|| (t.shape.clone(), t.bytes().to_vec())));
    let e = load_err(&dir);
    assert!(e.contains("missing tensor `model.layers.1.mlp.up_proj.weight`"), "{e}");
}

#[test]
fn wrong_shape() {
    let dir = scratch_copy("gemma_mqa", "shape");
    rewrite(&dir, |n, t| {
        if n == "model.layers.0.self_attn.k_proj.weight" {
            // (16, 64) -> (8, 128): same bytes, wrong shape.
            Some((vec![t.shape[0] / 2, t.shape[1] * 2], t.bytes().to_vec()))
        } else {
            Some((t.shape.clone(), t.bytes().to_vec()))
        }
    });
    let e = load_err(&dir);
    assert!(e.contains("`model.layers.0.self_attn.k_proj.weight` has shape [8, 128], expected [16, 64]"), "{e}");
}

#[test]
fn truncated_file() {
    let dir = scratch_copy("gemma_mqa", "trunc");
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors") && e.contains("data_offsets"), "{e}");
}

#[test]
fn unknown_model_type() {
    let dir = scratch_copy("gemma_mqa", "arch");
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).unwrap().replace("\"model_type\": \"gemma\"", "\"model_type\": \"mistral\"");
    std::fs::write(&p, text).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("unknown architecture `mistral`"), "{e}");
}

#[test]
fn folder_without_config() {
    let dir = std::env::temp_dir().join(format!("gemma-rs-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("no config.json"), "{e}");
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    let model = load::load(&tiny("gemma_mqa")).unwrap();
    let pool = gemma::kernels::ThreadPool::new(1);
    let mut state = model.new_state(4);
    let mut scratch = gemma::model::Scratch::new();
    let ids = [2u32, 5, 6, 7, 8];
    let mut chunks = [gemma::model::Chunk::new(&ids, &mut state, gemma::model::LogitsWanted::Last)];
    let e = model.forward(&pool, &mut chunks, &mut scratch).unwrap_err().to_string();
    assert!(e.contains("past its context of 4"), "{e}");
    let ids = [2u32, 9999];
    let mut chunks = [gemma::model::Chunk::new(&ids, &mut state, gemma::model::LogitsWanted::Last)];
    let e = model.forward(&pool, &mut chunks, &mut scratch).unwrap_err().to_string();
    assert!(e.contains("token id 9999"), "{e}");
}

//! The `gemma` binary, run as a person would: outputs checked against transformers fixtures, and bad input
//! giving one clear line on stderr with a non-zero exit code (never a panic or backtrace).

use std::path::PathBuf;
use std::process::{Command, Output};

fn gemma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma")).args(args).env("RUST_BACKTRACE", "1").output().expect("run gemma")
}

fn tiny(case: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny").join(case).to_string_lossy().into_owned()
}

fn stdout_json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

/// A failure is one line on stderr, names the problem, exits non-zero, and never panics.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "succeeded; stderr: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE") && !err.contains("stack backtrace"), "{err}");
}

#[test]
fn logits_match_transformers_in_prefill_and_decode() {
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(PathBuf::from(tiny("gemma2")).join("expected.json")).unwrap()).unwrap();
    let ids: Vec<String> = want["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let ids = ids.join(",");
    let model = tiny("gemma2");
    for extra in [&[][..], &["--decode"][..]] {
        let mut args = vec!["logits", "--model", &model, "--ids", &ids];
        args.extend_from_slice(extra);
        let got = stdout_json(&gemma(&args));
        assert_eq!(got["ids"], want["ids"]);
        let (g, w) = (got["logits"].as_array().unwrap(), want["logits"].as_array().unwrap());
        assert_eq!(g.len(), w.len());
        for (gr, wr) in g.iter().zip(w) {
            for (a, b) in gr.as_array().unwrap().iter().zip(wr.as_array().unwrap()) {
                assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4, "{extra:?}");
            }
        }
    }
}

#[test]
fn logits_top_k_is_sorted_best_first() {
    let got = stdout_json(&gemma(&["logits", "--model", &tiny("gemma_mqa"), "--ids", "2,328,384", "--top", "3"]));
    let top = got["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    for row in top {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 3);
        let l: Vec<f64> = row.iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(l[0] >= l[1] && l[1] >= l[2]);
    }
}

#[test]
fn inspect_preset_prints_tree_and_count() {
    let o = gemma(&["inspect", "--preset", "gemma-2b"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(out.starts_with("GemmaForCausalLM(\n"));
    assert!(out.contains("Total parameters: 2,506,172,416"));
}

#[test]
fn inspect_model_folder() {
    let o = gemma(&["inspect", "--model", &tiny("gemma3"), "--explain"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("Gemma3ForCausalLM(") && out.contains("sliding_window = 6"), "{out}");
}

#[test]
fn errors_are_one_clear_line() {
    assert_clean_failure(&gemma(&["logits", "--model", "/nonexistent/model", "--ids", "2"]), "/nonexistent/model");
    assert_clean_failure(&gemma(&["inspect", "--preset", "gemma-5"]), "unknown preset `gemma-5`");
    assert_clean_failure(&gemma(&["logits", "--model", &tiny("gemma_mqa"), "--ids", "2,99999"]), "token id 99999");
    assert_clean_failure(&gemma(&["logits", "--model", &tiny("gemma_mqa"), "--ids", "2,x"]), "invalid value 'x'");
    let empty = std::env::temp_dir().join(format!("gemma-cli-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    assert_clean_failure(&gemma(&["inspect", "--model", empty.to_str().unwrap()]), "no config.json");
}

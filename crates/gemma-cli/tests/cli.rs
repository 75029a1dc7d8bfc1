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

fn expected(case: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(PathBuf::from(tiny(case)).join("expected.json")).unwrap()).unwrap()
}

#[test]
fn logits_match_transformers_in_prefill_and_decode() {
    logits_match_transformers("gemma2");
}

#[test]
fn recurrent_gemma_logits_match_transformers_in_prefill_and_decode() {
    logits_match_transformers("recurrent_gemma");
}

fn logits_match_transformers(case: &str) {
    let want = expected(case);
    let ids: Vec<String> = want["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let ids = ids.join(",");
    let model = tiny(case);
    for extra in [&[][..], &["--decode"][..]] {
        let mut args = vec!["logits", "--model", &model, "--ids", &ids];
        args.extend_from_slice(extra);
        let got = stdout_json(&gemma(&args));
        assert_eq!(got["ids"], want["ids"]);
        let (g, w) = (got["logits"].as_array().unwrap(), want["logits"].as_array().unwrap());
        assert_eq!(g.len(), w.len());
        for (gr, wr) in g.iter().zip(w) {
            for (a, b) in gr.as_array().unwrap().iter().zip(wr.as_array().unwrap()) {
                assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4, "{case} {extra:?}");
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

/// `gemma inspect --help` lists every preset.
#[test]
fn inspect_help_lists_every_preset() {
    let o = gemma(&["inspect", "--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    let listed: Vec<&str> = out.split_whitespace().collect();
    for (name, _) in gemma::model::presets::PRESETS {
        assert!(listed.contains(name), "{name} missing from:\n{out}");
    }
}

/// A PaliGemma preset by its Hub name: transformers' count (tests/fixtures/presets/counts.json) and what the
/// 4096 image tokens of 896 px cost.
#[test]
fn inspect_paligemma_896_explains_its_image_tokens() {
    let o = gemma(&["inspect", "--preset", "paligemma-3b-pt-896", "--explain"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.starts_with("PaliGemmaForConditionalGeneration(\n"), "{out}");
    assert!(out.contains("Total parameters: 2,927,890,160"), "{out}");
    assert!(out.contains("image tokens = 4096: every patch"), "{out}");
}

/// Gemma 3 4B, 12B and 27B print the whole Gemma3ForConditionalGeneration (vision tower, projector, language
/// model) as transformers 4.50 did (tests/fixtures/presets/2025), with transformers' exact counts; 1B stays the
/// text-only Gemma3ForCausalLM.
#[test]
fn inspect_gemma3_presets_print_the_multimodal_model() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/presets");
    for (name, key, total) in [("gemma3-4b", "gemma-3-4b", "4,300,079,472"), ("gemma3-12b", "gemma-3-12b", "12,187,325,040"), ("gemma3-27b", "gemma-3-27b", "27,432,406,640")] {
        let o = gemma(&["inspect", "--preset", name, "--explain"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let want = std::fs::read_to_string(fixtures.join(format!("2025/{key}.txt"))).unwrap();
        assert!(out.starts_with(&want), "{name}:\n{out}");
        assert!(out.contains(&format!("Total parameters: {total}")), "{out}");
        assert!(out.contains("image tokens = 256: the 4096 patch rows are average-pooled in 4 x 4 blocks"), "{out}");
        // The table row: the projector's count includes its matrix, which the tree does not list.
        let row = out.lines().find(|l| l.starts_with("multi_modal_projector ")).unwrap_or_default();
        assert_eq!(row.split_whitespace().nth(1), Some("Gemma3MultiModalProjector"), "{out}");
    }
    let o = gemma(&["inspect", "--preset", "gemma3-1b"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("Gemma3ForCausalLM(\n") && out.contains("Total parameters: 999,885,952"), "{out}");
}

/// Gemma 4 presets print Gemma4ForCausalLM as transformers 5.24 does (tests/fixtures/presets/gemma-4-*.txt,
/// per-layer widths) with its exact counts, and `--explain` gives E2B's KV cache per token with and without
/// the sharing of its last 20 layers: 15 caching layers (12 sliding x 2 x 256, 3 global x 2 x 512 numbers) =
/// 18 KiB in bf16, against 35 layers (28 x 2 x 256 + 7 x 2 x 512) = 42 KiB.
#[test]
fn inspect_gemma4_presets() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/presets");
    for (name, total) in [("gemma4-e2b", "4,628,569,344"), ("gemma4-e4b", "7,463,013,376"), ("gemma4-26b-a4b", "25,233,141,760"), ("gemma4-31b", "30,697,345,280")] {
        let o = gemma(&["inspect", "--preset", name, "--explain"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let want = std::fs::read_to_string(fixtures.join(format!("{}.txt", name.replace("gemma4", "gemma-4")))).unwrap();
        assert!(out.starts_with(&want), "{name}:\n{out}");
        assert!(out.contains(&format!("Total parameters: {total}")), "{out}");
    }
    let o = gemma(&["inspect", "--preset", "gemma4-e2b", "--explain"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("num_kv_shared_layers = 20: the last 20 of 35 layers compute no keys or values"), "{out}");
    assert!(out.contains("KV cache per token (bf16, every layer's own key/value width): 18.0 KiB with sharing, 42.0 KiB without (57% saved)"), "{out}");
    let o = gemma(&["inspect", "--preset", "gemma4-31b", "--explain"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("num_kv_shared_layers"));
}

/// The RecurrentGemma folder (safetensors + tokenizer.json) through the text commands: its tokenizer gives the
/// ids `tokenizers` gave, and run, bench and perplexity complete.
#[test]
fn recurrent_gemma_folder_runs_every_text_command() {
    let model = tiny("recurrent_gemma");
    for sample in expected("recurrent_gemma")["tokenizer"].as_array().unwrap() {
        let o = gemma(&["tokenize", "--model", &model, sample["text"].as_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let want: Vec<String> = sample["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), want.join(","), "{sample}");
    }
    let o = gemma(&["run", "--model", &model, "-q", "--temperature", "0", "-n", "8", "The quick brown fox"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = gemma(&["bench", "--model", &model, "-p", "16", "-n", "8", "-t", "1,2", "-d", "0,20", "-r", "1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tests: Vec<&str> = j["results"].as_array().unwrap().iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert!(tests.contains(&"tg8 @ d20"), "{tests:?}");
    // The model loads for fill-in-the-middle; the tiny vocabulary has no FIM tokens, which is said plainly.
    let o = gemma(&["complete", "--model", &model, "-q", "--prefix", "def f(x):", "-n", "4"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("<|fim_prefix|>"), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::env::temp_dir().join(format!("gemma-cli-ppl-{}.txt", std::process::id()));
    std::fs::write(&text, "The quick brown fox jumps over the lazy dog. The cat sat on the mat and the dog sat on the log.").unwrap();
    let j = stdout_json(&gemma(&["perplexity", "--model", &model, "-q", "-f", text.to_str().unwrap(), "--ctx", "8", "--json"]));
    assert!(j["perplexity"].as_f64().unwrap().is_finite(), "{j}");
    let _ = std::fs::remove_file(text);
}

/// A recurrent state cannot be rewound: a chat turn either extends it (the rendered conversation starts with
/// what the state has read) or re-reads the conversation from the start. Either way the second answer is the
/// one a fresh chat gives when the first turn is loaded from a file.
#[test]
fn recurrent_gemma_chat_turns_equal_a_fresh_read() {
    use std::io::Write;
    use std::process::Stdio;
    let model = tiny("recurrent_gemma");
    let chat = |input: &str| -> Vec<String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gemma"))
            .args(["chat", "--model", &model, "-q", "--temperature", "0", "-n", "6"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
    };
    let saved = std::env::temp_dir().join(format!("gemma-cli-chat-{}.json", std::process::id()));
    let saved = saved.to_str().unwrap();
    let two = chat(&format!("The quick brown fox\n/save {saved}\nthe state of the model\n"));
    assert_eq!(two.len(), 2, "{two:?}");
    let fresh = chat(&format!("/load {saved}\nthe state of the model\n"));
    assert_eq!(fresh, two[1..], "second answer after one turn vs a fresh read of the same conversation");
    let _ = std::fs::remove_file(saved);
}

/// `gemma chat` with pictures (Gemma 3): `/image FILE` attaches an image to the next message, and every answer
/// is transformers' greedy answer to the same conversation (tests/fixtures/tiny/gemma3_vision/chat_greedy.json,
/// by tools/fixtures/gemma3_vision_chat_greedy.py): two images in one message; an image in the first turn, then a
/// turn of text (the image's tokens stay in the cache), then another image. A conversation saved with its
/// images and loaded again gives the same next answer; a bad image is an error line and the chat goes on.
#[test]
fn gemma3_chat_with_images_matches_transformers() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = PathBuf::from(tiny("gemma3_vision"));
    let chat = |input: &str| -> (String, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gemma"))
            .args(["chat", "--model", dir.to_str().unwrap(), "-q", "--temperature", "0", "-n", "10"])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("chat_greedy.json")).unwrap()).unwrap();
    let text = |i: usize| want[i]["text"].as_str().unwrap().to_string();
    // The user's text of the last message of a case.
    let asked = |i: usize| {
        let m = want[i]["messages"].as_array().unwrap();
        m.last().unwrap()["content"].as_array().unwrap().iter().find_map(|c| c["text"].as_str()).unwrap().to_string()
    };
    let (out, _) = chat(&format!("/image image.png\n/image image_b.png\n{}\n", asked(0)));
    assert_eq!(out, format!("{}\n", text(0)), "two images in one message");
    let first = expected("gemma3_vision")["greedy"]["text"].as_str().unwrap().to_string();
    let saved = std::env::temp_dir().join(format!("gemma-cli-chat-images-{}.json", std::process::id()));
    let saved = saved.to_str().unwrap();
    let (out, err) = chat(&format!(
        "/image image.png\nDescribe this image.\n/image no-such-file.png\n{}\n/save {saved}\n/image image_b.png\n{}\n",
        asked(1),
        asked(2)
    ));
    assert_eq!(out, format!("{first}\n{}\n{}\n", text(1), text(2)), "three turns with images");
    assert!(err.contains("no-such-file.png") && err.lines().filter(|l| l.contains("No such file")).count() == 1, "{err}");
    assert!(!err.contains("(os error 2): No such file"), "the OS error said twice: {err}");
    let (out, _) = chat(&format!("/load {saved}\n/image image_b.png\n{}\n", asked(2)));
    assert_eq!(out, format!("{}\n", text(2)), "the saved conversation, its image re-read, then the third turn");
    let _ = std::fs::remove_file(saved);
    // A text-only model and PaliGemma say why they take no /image.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma"))
        .args(["chat", "--model", &tiny("paligemma"), "-q"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("/image {}\n", dir.join("image.png").display()).as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("PaliGemma has no chat template"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn inspect_recurrentgemma_states_its_constant_state() {
    let o = gemma(&["inspect", "--preset", "recurrentgemma-2b", "--explain"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 18 recurrent layers x 40 KiB + 8 rings of 2048 f32 keys and values (MQA, 256 wide) = 32.7 MiB, at 8k
    // positions as after a million; Gemma 2B's f32 KV cache at 8k: 18 layers x 2 x 256 x 4 bytes x 8192.
    assert!(out.contains("state per sequence (f32, as gemma-rs keeps it, decoding one token at a time): 32.7 MiB at 8192 positions"), "{out}");
    assert!(out.contains("and 32.7 MiB after a million positions"), "{out}");
    assert!(out.contains("Gemma 2B's KV cache (18 layers, MQA, 2 x 256 numbers per layer per token) at 8192 positions: 288.0 MiB in f32"), "{out}");
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

/// `gemma logits --image`: the image file goes through the model's preprocessing and encoder; the logits of
/// the prefix-only and prefix + suffix prompts match transformers' f64 forward pass, in one pass and with the
/// suffix decoded one id at a time (--decode; the prefix stays one pass).
#[test]
fn paligemma_logits_with_an_image_file() {
    for case in ["paligemma", "paligemma2"] {
        let want = expected(case);
        let model = tiny(case);
        let image = PathBuf::from(&model).join("image.png").to_string_lossy().into_owned();
        for c in ["prefix", "prefix_suffix"] {
            let ids: Vec<String> = want[c]["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
            let (ids, prefix) = (ids.join(","), want[c]["prefix_len"].to_string());
            for extra in [&[][..], &["--decode"][..]] {
                let mut args = vec!["logits", "--model", &model, "--image", &image, "--ids", &ids, "--prefix-len", &prefix];
                args.extend_from_slice(extra);
                let got = stdout_json(&gemma(&args));
                let (g, w) = (got["logits"].as_array().unwrap(), want[c]["logits_f64"].as_array().unwrap());
                assert_eq!(g.len(), w.len());
                for (gr, wr) in g.iter().zip(w) {
                    for (a, b) in gr.as_array().unwrap().iter().zip(wr.as_array().unwrap()) {
                        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4, "{case} {c} {extra:?}");
                    }
                }
            }
        }
    }
}

/// `gemma run --image`: the prompt laid out as PaliGemma's processor does, greedy ids as transformers'
/// `generate`; --json carries detections (none from a random model) and --annotate writes a PNG of the
/// original size. Bad inputs fail cleanly.
#[test]
fn paligemma_run_with_an_image() {
    let want = expected("paligemma");
    let model = tiny("paligemma");
    let image = PathBuf::from(&model).join("image.png").to_string_lossy().into_owned();
    let out = std::env::temp_dir().join(format!("gemma-cli-annotate-{}.png", std::process::id()));
    let n = want["greedy"]["generated"].as_array().unwrap().len().to_string();
    let j = stdout_json(&gemma(&["run", "-m", &model, "--image", &image, "caption en", "--temperature", "0", "-n", &n, "--json", "--annotate", out.to_str().unwrap()]));
    assert_eq!(j["ids"], want["greedy"]["generated"]);
    assert_eq!(j["detections"], serde_json::json!([]));
    assert_eq!((j["image"]["width"].as_u64(), j["image"]["height"].as_u64()), (Some(32), Some(32)));
    assert_eq!(image::image_dimensions(&out).unwrap(), (32, 32));
    let _ = std::fs::remove_file(&out);

    let text = std::env::temp_dir().join(format!("gemma-cli-not-an-image-{}.png", std::process::id()));
    std::fs::write(&text, "just some text, named .png").unwrap();
    let o = gemma(&["run", "-m", &model, "--image", text.to_str().unwrap(), "caption en"]);
    assert_clean_failure(&o, "not an image");
    let _ = std::fs::remove_file(&text);
    let o = gemma(&["run", "-m", &model, "--image", "/no/such/file.png", "caption en"]);
    assert_clean_failure(&o, "/no/such/file.png");
    let o = gemma(&["run", "-m", &tiny("recurrent_gemma"), "--image", &image, "caption en"]);
    assert_clean_failure(&o, "no image encoder");
    let o = gemma(&["logits", "--model", &model, "--image", &image, "--ids", "2,3,4"]);
    assert_clean_failure(&o, "placeholders for 0 image(s)");
}

/// Gemma 3 with an image: `gemma run --image` renders one user turn through the chat template, expands the
/// image as `Gemma3Processor` does, and generates transformers' greedy ids; `gemma logits --image` takes ids
/// with the soft-token placeholders.
#[test]
fn gemma3_run_and_logits_with_an_image() {
    let want = expected("gemma3_vision");
    let model = tiny("gemma3_vision");
    let image = PathBuf::from(&model).join("image.png").to_string_lossy().into_owned();
    let n = want["greedy"]["generated"].as_array().unwrap().len().to_string();
    let j = stdout_json(&gemma(&["run", "-m", &model, "--image", &image, "Describe this image.", "--temperature", "0", "-n", &n, "--json"]));
    assert_eq!(j["ids"], want["greedy"]["generated"]);
    assert_eq!(j["timings"]["prompt_tokens"], want["one_image"]["ids"].as_array().unwrap().len());
    let ids: Vec<String> = want["one_image"]["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let got = stdout_json(&gemma(&["logits", "--model", &model, "--image", &image, "--ids", &ids.join(",")]));
    let (g, w) = (got["logits"].as_array().unwrap(), want["one_image"]["logits_f64"].as_array().unwrap());
    assert_eq!(g.len(), w.len());
    for (gr, wr) in g.iter().zip(w) {
        for (a, b) in gr.as_array().unwrap().iter().zip(wr.as_array().unwrap()) {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4);
        }
    }
    let o = gemma(&["logits", "--model", &model, "--image", &image, "--ids", &ids.join(","), "--prefix-len", "3"]);
    assert_clean_failure(&o, "--prefix-len is PaliGemma's");
}

/// The same model as llama.cpp's GGUF pair: `--mmproj` adds the vision tower to the text .gguf, for `gemma run`
/// and `gemma logits` (the projection is F16 in the mmproj file: logits within 3e-2, see
/// crates/gemma/tests/gemma3_vision_gguf.rs); a text .gguf given as --mmproj fails cleanly.
#[test]
fn gemma3_gguf_with_mmproj() {
    let want = expected("gemma3_vision");
    let dir = PathBuf::from(tiny("gemma3_vision"));
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let (text, mmproj, image) = (path("gguf/text.gguf"), path("gguf/mmproj.gguf"), path("image.png"));
    let n = want["greedy"]["generated"].as_array().unwrap().len().to_string();
    let j = stdout_json(&gemma(&["run", "-m", &text, "--mmproj", &mmproj, "--image", &image, "Describe this image.", "--temperature", "0", "-n", &n, "--json"]));
    assert_eq!(j["ids"], want["greedy"]["generated"]);
    assert_eq!(j["timings"]["prompt_tokens"], want["one_image"]["ids"].as_array().unwrap().len());
    let ids: Vec<String> = want["one_image"]["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let got = stdout_json(&gemma(&["logits", "--model", &text, "--mmproj", &mmproj, "--image", &image, "--ids", &ids.join(",")]));
    let (g, w) = (got["logits"].as_array().unwrap(), want["one_image"]["logits_f64"].as_array().unwrap());
    assert_eq!(g.len(), w.len());
    for (gr, wr) in g.iter().zip(w) {
        for (a, b) in gr.as_array().unwrap().iter().zip(wr.as_array().unwrap()) {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 3e-2);
        }
    }
    let o = gemma(&["run", "-m", &text, "--mmproj", &text, "--image", &image, "Describe this image."]);
    assert_clean_failure(&o, "not an mmproj file");
    let o = gemma(&["run", "-m", &text, "--image", &image, "Describe this image."]);
    assert_clean_failure(&o, "--mmproj");
}

/// `gemma chat` with Gemma 4 (tests/fixtures/tiny/gemma4_chat's tokenizer on the tiny E2B checkpoint, assembled in a
/// temporary folder): with and without `--think`, each answer is transformers' greedy answer to the same
/// conversation through the Gemma 4 template, ending at `<turn|>` where transformers' does; an earlier
/// conversation (a system turn, a model turn) comes in by `/load`. `--show-thinking` shows no thoughts where the
/// model had none.
#[test]
fn gemma4_chat_matches_transformers() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = std::env::temp_dir().join(format!("gemma-cli-gemma4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (from, f) in [("gemma4_e2b", "config.json"), ("gemma4_e2b", "model.safetensors"), ("gemma4_chat", "tokenizer.json"),
                      ("gemma4_chat", "tokenizer_config.json"), ("gemma4_chat", "generation_config.json")] {
        std::fs::copy(PathBuf::from(tiny(from)).join(f), dir.join(f)).unwrap();
    }
    let e = expected("gemma4_chat");
    for (i, g) in e["greedy"].as_array().unwrap().iter().enumerate() {
        let messages = g["messages"].as_array().unwrap();
        let (last, earlier) = messages.split_last().unwrap();
        let mut input = String::new();
        if !earlier.is_empty() {
            let saved = dir.join(format!("conversation{i}.json"));
            std::fs::write(&saved, serde_json::to_string(earlier).unwrap()).unwrap();
            input.push_str(&format!("/load {}\n", saved.display()));
        }
        input.push_str(&format!("{}\n", last["content"].as_str().unwrap()));
        let mut args = vec!["chat", "--model", dir.to_str().unwrap(), "-q", "--temperature", "0", "-n", "24", "--show-thinking"];
        if g["enable_thinking"] == true {
            args.push("--think");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_gemma")).args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{}\n", g["content"].as_str().unwrap()), "case {i}");
        assert!(!err.contains("warning"), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

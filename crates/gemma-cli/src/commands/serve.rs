//! `gemma serve`: the OpenAI-compatible server (the `gemma-server` crate); this is only its options.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use gemma_server::{Engine, Options, Server};

use super::common::{self, ModelArgs};

#[derive(clap::Args)]
#[command(after_help = "Endpoints (OpenAI's API):
  POST /v1/chat/completions  chat through the model's chat template (\"stream\": true
                             gives SSE); PaliGemma: one image_url part (a data: URL)
                             and the task, e.g. \"caption en\"
  POST /v1/completions       complete a prompt; with \"suffix\", CodeGemma
                             fill-in-the-middle
  GET  /v1/models            the model served
  GET  /health               200 while serving
  GET  /metrics              Prometheus text: requests, tokens, queue depth, tok/s

Request fields: temperature, top_p, max_tokens, stop, seed, presence_penalty,
frequency_penalty, and the extensions top_k, min_p, repeat_penalty. A field a
request leaves out takes the model's recommended value (generation_config.json
of a checkpoint folder, general.sampling.* of a GGUF) where it names one, else
the CLI's default (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
repeat_penalty 1); max_tokens defaults to 1024 for chat and 256 for
completions, within the context. Fields a request gives always win. The
startup line says which defaults are in force.

Up to --parallel requests generate together, one batched forward pass per
step; --queue more wait for a slot; beyond that the answer is 503 with
Retry-After. SIGINT/SIGTERM stop accepting and give running requests
--shutdown-grace seconds; a second signal cancels them.

Logging (stderr): one line per request, as llama.cpp's server logs them:
client, method, path, status, prompt and generated tokens, time to first
token, total time (successful /health and /metrics polls are left out).
-q turns it off with the startup line; -v adds the model's config.

Examples:
  gemma serve                         default model on http://127.0.0.1:8080
  gemma serve -m model.gguf --port 8000 --parallel 8 --ctx-size 8192
  GEMMA_API_KEY=secret gemma serve    clients must send the key as Bearer
  curl http://127.0.0.1:8080/v1/completions \\
    -H 'Content-Type: application/json' \\
    -d '{\"prompt\": \"The capital of France is\", \"max_tokens\": 16}'")]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free one, printed at startup).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests generating at once (sequence slots), batched into one forward pass per step.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Positions per request, prompt and generation; default: the model's context, at most 4096.
    #[arg(short, long)]
    ctx_size: Option<usize>,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health.
    #[arg(long, env = "GEMMA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests that may wait for a free slot before new ones get 503.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Largest request body accepted, in bytes (413 beyond); default 1 MiB, 20 MiB for a model that takes
    /// images (PaliGemma: images come base64-encoded in data: URLs).
    #[arg(long)]
    max_body: Option<usize>,
    /// Most prompt tokens read per forward pass: larger reads prompts faster, smaller keeps the other
    /// requests' tokens flowing while a long prompt is read.
    #[arg(long, default_value_t = 128)]
    prefill_chunk: usize,
    /// Seconds running requests may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 10.0)]
    shutdown_grace: f64,
}

pub fn run(a: Args) -> Result<()> {
    if !(a.shutdown_grace >= 0.0 && a.shutdown_grace.is_finite()) {
        anyhow::bail!("invalid option: --shutdown-grace must be a number of seconds >= 0");
    }
    let l = common::load(&a.model)?;
    let model_id = super::models::display_name(&l.path);
    let ctx = a.ctx_size.unwrap_or(l.model.config.context_len.min(4096));
    let (defaults, defaults_from) = super::models::server_defaults(&l.path)?;
    let defaults_line = format!("defaults for omitted fields: {defaults} ({defaults_from})");
    let opts = Options {
        addr: SocketAddr::new(a.host, a.port),
        parallel: a.parallel,
        ctx_size: ctx,
        queue: a.queue,
        api_key: a.api_key,
        max_body_bytes: a.max_body,
        prefill_chunk: a.prefill_chunk,
        shutdown_grace: Duration::from_secs_f64(a.shutdown_grace),
        handle_signals: true,
        defaults,
        access_log: !a.model.quiet,
        ..Options::new(model_id.clone())
    };
    let threads = l.pool.n_threads();
    let (parallel, auth) = (opts.parallel, if opts.api_key.is_some() { ", API key required" } else { "" });
    common::warn_if_base_model(&l, a.model.quiet, "in /v1/chat/completions");
    let engine = Engine { model: l.model, tokenizer: l.tokenizer, pool: l.pool };
    let server = Server::start(engine, opts).with_context(|| format!("starting the server on {}:{}", a.host, a.port))?;
    if !a.model.quiet {
        eprintln!(
            "gemma serve: {model_id} on http://{} ({parallel} slots x {ctx} positions, {threads} threads{auth}); Ctrl-C to stop",
            server.addr()
        );
        eprintln!("gemma serve: {defaults_line}");
    }
    server.wait().context("serving")?;
    if !a.model.quiet {
        eprintln!("gemma serve: stopped");
    }
    Ok(())
}

//! gemma-server: an OpenAI-compatible HTTP server over the gemma engine, with continuous batching.
//!
//! Two threads of control meet here. The async side ([`http`], on a small tokio runtime) parses and
//! validates requests ([`api`]), answers with OpenAI's bodies and stream chunks ([`responses`]) or error
//! objects ([`error`]), and counts what it does ([`metrics`]). The compute side ([`scheduler`], one OS
//! thread) owns the model, the kernel thread pool and the sequence slots, and runs every active sequence
//! through one batched forward pass per step. They talk over channels: a bounded queue of jobs one way, an
//! event channel per job the other.
//!
//! Shutdown is graceful: [`Server::shutdown`] (or SIGINT/SIGTERM with [`Options::handle_signals`]) stops
//! accepting connections and requests, lets running generations finish for [`Options::shutdown_grace`],
//! then cancels what is left; a second signal cancels at once.

pub mod api;
pub mod error;
mod http;
pub mod metrics;
pub mod responses;
pub mod scheduler;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gemma::kernels::ThreadPool;
use gemma::model::Model;
use gemma::tokenizer::Tokenizer;
use tokio::sync::watch;

use metrics::Metrics;
use scheduler::{Scheduler, SchedulerConfig};

/// What the server runs: a loaded model, its tokenizer and the kernel thread pool.
pub struct Engine {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub pool: ThreadPool,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    /// Sequence slots: requests generating at once.
    pub parallel: usize,
    /// Positions per sequence (prompt + generation).
    pub ctx_size: usize,
    /// Requests that may wait for a slot; more are refused with 503 and `Retry-After`.
    pub queue: usize,
    /// With a key, requests must send `Authorization: Bearer <key>` (`/health` excepted).
    pub api_key: Option<String>,
    /// Largest request body; `None`: [`MAX_BODY`], or [`MAX_BODY_IMAGES`] for a model that takes images.
    pub max_body_bytes: Option<usize>,
    /// Most prompt tokens read per forward pass, so that a long prompt does not stall the others' decoding.
    pub prefill_chunk: usize,
    /// How long running generations may go on after a shutdown request before they are cancelled.
    pub shutdown_grace: Duration,
    /// The name `/v1/models` lists.
    pub model_id: String,
    /// Shut down on SIGINT/SIGTERM (a second one cancels running generations at once).
    pub handle_signals: bool,
    /// What a request gets for the sampling fields and `max_tokens` it leaves out.
    pub defaults: api::Defaults,
    /// One line per request on stderr ([`http`]'s access log: client, method, path, status, tokens, time to
    /// first token, total time), as llama.cpp's server logs its requests.
    pub access_log: bool,
}

impl Options {
    /// Defaults for a model: 127.0.0.1:8080, 4 slots of 4096 positions, a queue of 64, 1 MiB bodies (20 MiB
    /// for a model that takes images), 128 prompt tokens per pass, 10 s of shutdown grace, the CLI's sampling
    /// for omitted fields, no access log.
    pub fn new(model_id: impl Into<String>) -> Options {
        Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            parallel: 4,
            ctx_size: 4096,
            queue: 64,
            api_key: None,
            max_body_bytes: None,
            prefill_chunk: 128,
            shutdown_grace: Duration::from_secs(10),
            model_id: model_id.into(),
            handle_signals: false,
            defaults: api::Defaults::default(),
            access_log: false,
        }
    }

    fn check(&self, model: &Model) -> io::Result<()> {
        let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
        let ctx = model.config.context_len;
        if self.parallel == 0 {
            return bad("--parallel must be at least 1".into());
        }
        if self.ctx_size < 2 || self.ctx_size > ctx {
            return bad(format!("--ctx-size must be between 2 and the model's context of {ctx}, got {}", self.ctx_size));
        }
        if self.queue == 0 || self.prefill_chunk == 0 || self.max_body_bytes == Some(0) {
            return bad("--queue, --prefill-chunk and --max-body must be at least 1".into());
        }
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return bad("--api-key must not be empty".into());
        }
        Ok(())
    }
}

/// The default body limit of a text-only model: 1 MiB.
pub const MAX_BODY: usize = 1 << 20;

/// The default body limit of a model with a vision tower: 20 MiB, for an image of up to about 15 MB (data
/// URLs are base64: 4 bytes for every 3 of the file).
pub const MAX_BODY_IMAGES: usize = 20 << 20;

/// Stop requests, in increasing force.
const RUNNING: u8 = 0;
const DRAIN: u8 = 1;
const CANCEL: u8 = 2;

/// A running server. Dropping it cancels what is running and waits for the threads to end.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<u8>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// Bind, start the scheduler thread and the HTTP runtime, and return at once.
    pub fn start(engine: Engine, opts: Options) -> io::Result<Server> {
        opts.check(&engine.model)?;
        let listener = std::net::TcpListener::bind(opts.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop_ids = gemma::runtime::stop_token_ids(&engine.model, &engine.tokenizer);
        let vocab = engine.model.config.vocab_size;
        let vision = engine.model.config.vision.clone();
        let max_body = opts.max_body_bytes.unwrap_or(if vision.is_some() { MAX_BODY_IMAGES } else { MAX_BODY });
        let tokenizer = Arc::new(engine.tokenizer);
        let metrics = Arc::new(Metrics::default());
        let config = SchedulerConfig { slots: opts.parallel, ctx: opts.ctx_size, queue: opts.queue, prefill_chunk: opts.prefill_chunk };
        let (scheduler, scheduler_thread) = Scheduler::spawn(engine.model, tokenizer.clone(), engine.pool, config, metrics.clone())?;
        let shared = Arc::new(http::Shared {
            template: tokenizer.chat_template(),
            tokenizer,
            ctx: opts.ctx_size,
            vocab,
            stop_ids,
            vision,
            model_id: opts.model_id.clone(),
            created: responses::unix_now(),
            api_key: opts.api_key.clone(),
            max_body,
            defaults: opts.defaults.clone(),
            access_log: opts.access_log,
            scheduler: scheduler.clone(),
            metrics,
            preparing: Arc::new(tokio::sync::Semaphore::new(http::PREPARE_AT_ONCE)),
        });
        // The handlers only parse, tokenize and relay: two threads are plenty next to the compute threads.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("gemma-http").enable_all().build()?;
        let (stop, stop_rx) = watch::channel(RUNNING);
        let signal_tx = stop.clone();
        let relay_to = scheduler.clone();
        let thread = std::thread::Builder::new().name("gemma-server".into()).spawn(move || {
            let result = rt.block_on(async move {
                if opts.handle_signals {
                    tokio::spawn(escalate_on_signals(signal_tx, opts.shutdown_grace));
                }
                tokio::spawn(relay_stops(stop_rx.clone(), relay_to, opts.shutdown_grace));
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let drained = wait_for(stop_rx.clone(), DRAIN);
                let app = http::router(shared).into_make_service_with_connect_info::<SocketAddr>();
                let serving = axum::serve(listener, app).with_graceful_shutdown(drained);
                tokio::select! {
                    r = serving => r,
                    // A client that stops reading could hold its connection open for ever.
                    _ = hard_deadline(stop_rx, opts.shutdown_grace) => Ok(()),
                }
            });
            // Every connection is closed; nothing can submit any more.
            scheduler.shutdown(Duration::ZERO);
            let _ = scheduler_thread.join();
            result
        })?;
        Ok(Server { addr, stop, thread: Some(thread) })
    }

    /// The address the server listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting; running generations get the shutdown grace to finish.
    pub fn shutdown(&self) {
        self.stop.send_if_modified(|s| raise(s, DRAIN));
    }

    /// Stop accepting and cancel running generations now.
    pub fn cancel(&self) {
        self.stop.send_if_modified(|s| raise(s, CANCEL));
    }

    /// Wait until the server has shut down (after [`shutdown`](Self::shutdown), or a signal).
    pub fn wait(mut self) -> io::Result<()> {
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap_or_else(|_| Err(io::Error::other("the server thread panicked"))))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.cancel();
            let _ = t.join();
        }
    }
}

fn raise(s: &mut u8, to: u8) -> bool {
    let changed = *s < to;
    *s = (*s).max(to);
    changed
}

async fn wait_for(mut rx: watch::Receiver<u8>, level: u8) {
    let _ = rx.wait_for(|&s| s >= level).await;
}

/// How long connections may take to close after the last generation was cancelled.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Resolves when the server must stop whatever its connections are doing: the shutdown grace plus
/// [`CLOSE_GRACE`] after a drain, or `CLOSE_GRACE` after a cancel.
async fn hard_deadline(rx: watch::Receiver<u8>, grace: Duration) {
    wait_for(rx.clone(), DRAIN).await;
    tokio::select! {
        _ = tokio::time::sleep(grace) => {},
        _ = wait_for(rx, CANCEL) => {},
    }
    tokio::time::sleep(CLOSE_GRACE).await;
}

/// Pass stop requests on to the scheduler: draining with the grace, then cancelling.
async fn relay_stops(rx: watch::Receiver<u8>, scheduler: Scheduler, grace: Duration) {
    wait_for(rx.clone(), DRAIN).await;
    scheduler.shutdown(grace);
    wait_for(rx, CANCEL).await;
    scheduler.shutdown(Duration::ZERO);
}

/// SIGINT or SIGTERM: drain; a second one: cancel.
async fn escalate_on_signals(stop: watch::Sender<u8>, grace: Duration) {
    for level in [DRAIN, CANCEL] {
        if wait_for_signal().await.is_err() {
            return;
        }
        stop.send_if_modified(|s| raise(s, level));
        if level == DRAIN {
            eprintln!("gemma serve: shutting down; running requests have {} s to finish (again to cancel them now)", grace.as_secs_f32());
        } else {
            eprintln!("gemma serve: cancelling running requests");
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> io::Result<()> {
    tokio::signal::ctrl_c().await
}

//! The HTTP side: routes, API-key check, body limit, request counting, and the generation handlers that
//! hand a validated job to the scheduler and turn its events into a JSON body or server-sent events.
//!
//! A handler waits for the job's first event before answering, so that a request refused from the queue
//! (shutdown) still gets an HTTP error status; once text has been sent, a failure can only be reported
//! inside the stream, as an `{"error": ...}` event before `data: [DONE]` (OpenAI's clients raise it).
//! Dropping a handler (client gone) drops the job's event receiver, which the scheduler takes as a cancel.
//!
//! A chat body is parsed and prepared on tokio's blocking pool: with an image that means base64 and image
//! decoding and resizing, tens of milliseconds that must not hold up the async workers (nor the scheduler
//! thread, which only encodes the preprocessed pixels). At most [`PREPARE_AT_ONCE`] are prepared at once, since
//! decoding a large image holds hundreds of MB for a moment (a small PNG may claim up to the engine's
//! 64 Mi-pixel limit). The body limit ([`Shared::max_body`]) is 1 MiB by default, 20 MiB for a model with a
//! vision tower (images travel base64-encoded, 4/3 of their size).
//!
//! With [`Shared::access_log`], every request leaves one line on stderr when it is done ([`AccessEntry`]):
//! client address, method, path, status, and for generations the prompt and generated tokens, the time to
//! the first token and the total time (for a stream, until its last event). Successful `/health` and
//! `/metrics` polls are left out, as they come every few seconds from probes and scrapers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::Stream;
use gemma::model::config::VisionConfig;
use gemma::tokenizer::{ChatTemplate, Tokenizer};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::Semaphore;

use crate::api::{self, ChatRequest, CompletionRequest, Defaults, Limits, Prepared};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::responses::{Endpoint, Meta};
use crate::scheduler::{Event, Failure, Job, Scheduler, SubmitError};

/// What every handler shares.
pub(crate) struct Shared {
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub ctx: usize,
    pub vocab: usize,
    pub stop_ids: Vec<u32>,
    pub vision: Option<VisionConfig>,
    pub model_id: String,
    pub created: u64,
    pub api_key: Option<String>,
    pub max_body: usize,
    pub defaults: Defaults,
    /// One line per request on stderr.
    pub access_log: bool,
    pub scheduler: Scheduler,
    pub metrics: Arc<Metrics>,
    /// Permits to prepare a chat request ([`PREPARE_AT_ONCE`]).
    pub preparing: Arc<Semaphore>,
}

/// Chat requests parsed and prepared (images decoded) at once; more wait for a turn.
pub(crate) const PREPARE_AT_ONCE: usize = 2;

type App = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint: see /v1/chat/completions, /v1/completions, /v1/models") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // The limit applies to the `Bytes` extractor; the handlers turn its 413 into an OpenAI error.
        .layer(DefaultBodyLimit::max(shared.max_body))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .layer(middleware::from_fn_with_state(shared.clone(), log_access))
        .with_state(shared)
}

/// One request's access-log line, printed when the last holder lets go of it: this middleware once the
/// response head is ready, a streamed body after its last event.
pub(crate) struct AccessEntry {
    start: Instant,
    client: Option<SocketAddr>,
    method: String,
    path: String,
    state: Mutex<AccessState>,
}

#[derive(Default)]
struct AccessState {
    status: u16,
    prompt_tokens: Option<usize>,
    generated_tokens: Option<usize>,
    first_token: Option<Duration>,
}

/// What the generation handlers carry along to fill in the log line.
type Access = Option<Arc<AccessEntry>>;

impl AccessEntry {
    fn update(&self, f: impl FnOnce(&mut AccessState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The first event of a generation: the prompt is read and the first token sampled.
    fn first_event(&self) {
        let t = self.start.elapsed();
        self.update(|s| {
            s.first_token.get_or_insert(t);
        })
    }

    fn finished(&self, f: &crate::scheduler::Finished) {
        self.update(|s| {
            s.prompt_tokens = Some(f.prompt_tokens);
            s.generated_tokens = Some(f.completion_tokens);
        })
    }

    /// `127.0.0.1:51234 POST /v1/completions 200 | prompt 6 tok, generated 12 tok | first token 85 ms | total 412 ms`
    fn line(&self) -> String {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let client = self.client.map_or_else(|| "-".to_string(), |a| a.to_string());
        let mut line = format!("{client} {} {} {}", self.method, self.path, s.status);
        if let Some(p) = s.prompt_tokens {
            line += &format!(" | prompt {p} tok, generated {} tok", s.generated_tokens.unwrap_or(0));
        }
        if let Some(t) = s.first_token {
            line += &format!(" | first token {}", ms(t));
        }
        line + &format!(" | total {}", ms(self.start.elapsed()))
    }
}

fn ms(d: Duration) -> String {
    match d.as_secs_f64() {
        s if s >= 10.0 => format!("{s:.1} s"),
        s if s >= 0.01 => format!("{:.0} ms", s * 1e3),
        s => format!("{:.2} ms", s * 1e3),
    }
}

impl Drop for AccessEntry {
    fn drop(&mut self) {
        let status = self.state.lock().map(|s| s.status).unwrap_or(0);
        if status == 200 && (self.path == "/health" || self.path == "/metrics") {
            return;
        }
        eprintln!("gemma serve: {}", self.line());
    }
}

/// The access log (when on): start an entry the handlers can fill in, set its status, and let it print.
async fn log_access(State(app): App, mut req: Request, next: Next) -> Response {
    if !app.access_log {
        return next.run(req).await;
    }
    let entry = Arc::new(AccessEntry {
        start: Instant::now(),
        client: req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        state: Mutex::default(),
    });
    req.extensions_mut().insert(entry.clone());
    let r = next.run(req).await;
    entry.update(|s| s.status = r.status().as_u16());
    r
}

/// Count every answer by endpoint and status for `/metrics`.
async fn count(State(app): App, req: Request, next: Next) -> Response {
    let endpoint = endpoint_label(req.uri().path());
    let r = next.run(req).await;
    app.metrics.count_request(endpoint, r.status().as_u16());
    r
}

/// A fixed label per route, so that arbitrary paths cannot grow the metrics without bound.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/completions" => "/v1/completions",
        "/v1/models" => "/v1/models",
        "/health" => "/health",
        "/metrics" => "/metrics",
        p if p.starts_with("/v1/models/") => "/v1/models/{id}",
        _ => "other",
    }
}

/// With `--api-key`, every endpoint but `/health` wants `Authorization: Bearer <key>`.
async fn authorize(State(app): App, req: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if req.uri().path() != "/health" && !given.is_some_and(|g| same_secret(g.trim().as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Equality whose time does not depend on where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(app): App) -> Response {
    if app.scheduler.accepting() {
        Json(json!({ "status": "ok" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "shutting down" }))).into_response()
    }
}

async fn metrics(State(app): App) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

fn model_object(app: &Shared) -> Value {
    json!({ "id": app.model_id, "object": "model", "created": app.created, "owned_by": "gemma-rs" })
}

async fn models(State(app): App) -> Json<Value> {
    Json(json!({ "object": "list", "data": [model_object(&app)] }))
}

async fn model(State(app): App, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id == app.model_id {
        Ok(Json(model_object(&app)))
    } else {
        Err(ApiError::not_found(format!("no model `{id}`: this server runs `{}`", app.model_id)).with_param("model"))
    }
}

async fn chat(State(app): App, access: Option<Extension<Arc<AccessEntry>>>, body: Result<Bytes, BytesRejection>) -> Response {
    let prepared = match body_bytes(body, app.max_body) {
        Ok(b) => {
            let shared = app.clone();
            // The permit goes with the work, which runs to its end even if the client hangs up meanwhile.
            let permit = app.preparing.clone().acquire_owned().await;
            let work = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                api::parse::<ChatRequest>(&b).and_then(|r| r.prepare(&limits(&shared)))
            });
            work.await.unwrap_or_else(|e| Err(ApiError::internal(format!("preparing the request failed: {e}"))))
        }
        Err(e) => Err(e),
    };
    respond(app, prepared, Endpoint::Chat, access.map(|e| e.0)).await
}

async fn completions(State(app): App, access: Option<Extension<Arc<AccessEntry>>>, body: Result<Bytes, BytesRejection>) -> Response {
    let prepared = body_bytes(body, app.max_body).and_then(|b| api::parse::<CompletionRequest>(&b)).and_then(|r| r.prepare(&limits(&app)));
    respond(app, prepared, Endpoint::Completion, access.map(|e| e.0)).await
}

fn limits(app: &Shared) -> Limits<'_> {
    Limits {
        tokenizer: &app.tokenizer,
        template: &app.template,
        ctx: app.ctx,
        vocab: app.vocab,
        stop_ids: &app.stop_ids,
        vision: app.vision.as_ref(),
        defaults: &app.defaults,
    }
}

fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|r| if r.status() == StatusCode::PAYLOAD_TOO_LARGE { ApiError::too_large(limit) } else { ApiError::invalid(r.body_text()) })
}

async fn respond(app: Arc<Shared>, prepared: Result<Prepared, ApiError>, endpoint: Endpoint, access: Access) -> Response {
    match prepared {
        Ok(p) => generate(&app, p, endpoint, access).await.unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

fn failure_error(f: Failure) -> ApiError {
    match f {
        Failure::ShuttingDown => ApiError::shutting_down(),
        Failure::Internal(m) => ApiError::internal(format!("generation failed: {m}")),
    }
}

/// Submit the job; answer with the whole completion, or stream it.
async fn generate(app: &Shared, p: Prepared, endpoint: Endpoint, access: Access) -> Result<Response, ApiError> {
    let (events, mut rx) = unbounded_channel();
    if let Some(a) = &access {
        let n = p.prompt.len();
        a.update(|s| s.prompt_tokens = Some(n));
    }
    let job = Job {
        prompt: p.prompt,
        sampler: p.sampler,
        max_tokens: p.max_tokens,
        stop_strings: p.stop_strings,
        stop_ids: p.stop_ids,
        images: p.images,
        split_thoughts: p.split_thoughts,
        events,
    };
    app.scheduler.submit(job).map_err(|e| match e {
        SubmitError::Busy => ApiError::busy(),
        SubmitError::ShuttingDown => ApiError::shutting_down(),
    })?;
    let mut meta = Meta::new(endpoint, p.model.unwrap_or_else(|| app.model_id.clone()), p.stream && p.include_usage);
    meta.image_size = p.image_size;
    let first = match rx.recv().await {
        None => return Err(ApiError::shutting_down()),
        Some(Event::Failed(f)) => return Err(failure_error(f)),
        Some(e) => e,
    };
    if let Some(a) = &access {
        a.first_event();
    }
    if p.stream {
        return Ok(Sse::new(sse_events(EventStream::new(meta, first, rx, access))).into_response());
    }
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut next = Some(first);
    loop {
        let event = match next.take() {
            Some(e) => Some(e),
            None => rx.recv().await,
        };
        match event {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Reasoning(t)) => reasoning.push_str(&t),
            Some(Event::Done(f)) => {
                if let Some(a) = &access {
                    a.finished(&f);
                }
                return Ok(Json(meta.response(&text, &reasoning, &f)).into_response());
            }
            Some(Event::Failed(f)) => return Err(failure_error(f)),
            None => return Err(ApiError::shutting_down()),
        }
    }
}

/// A job's events as server-sent events: the chunks, then `data: [DONE]`.
struct EventStream {
    meta: Meta,
    first: Option<Event>,
    rx: UnboundedReceiver<Event>,
    queue: VecDeque<SseEvent>,
    ended: bool,
    /// The request's access-log entry, printed when the stream is done with it.
    access: Access,
}

impl EventStream {
    fn new(meta: Meta, first: Event, rx: UnboundedReceiver<Event>, access: Access) -> Self {
        let mut queue = VecDeque::new();
        if meta.endpoint == Endpoint::Chat {
            queue.push_back(data(&meta.role_chunk()));
        }
        EventStream { meta, first: Some(first), rx, queue, ended: false, access }
    }

    async fn next(&mut self) -> Option<SseEvent> {
        while self.queue.is_empty() && !self.ended {
            let event = match self.first.take() {
                Some(e) => Some(e),
                None => self.rx.recv().await,
            };
            match event {
                Some(Event::Text(t)) => self.queue.push_back(data(&self.meta.chunk(&t, None))),
                Some(Event::Reasoning(t)) => self.queue.push_back(data(&self.meta.reasoning_chunk(&t))),
                Some(Event::Done(f)) => {
                    if let Some(a) = &self.access {
                        a.finished(&f);
                    }
                    self.queue.push_back(data(&self.meta.chunk("", Some(f.reason))));
                    if self.meta.include_usage {
                        self.queue.push_back(data(&self.meta.usage_chunk(&f)));
                    }
                    self.end();
                }
                Some(Event::Failed(f)) => {
                    self.queue.push_back(data(&failure_error(f).body()));
                    self.end();
                }
                None => {
                    self.queue.push_back(data(&ApiError::shutting_down().body()));
                    self.end();
                }
            }
        }
        self.queue.pop_front()
    }

    fn end(&mut self) {
        self.queue.push_back(SseEvent::default().data("[DONE]"));
        self.ended = true;
    }
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

fn sse_events(s: EventStream) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(s, |mut s| async move { s.next().await.map(|e| (Ok(e), s)) })
}

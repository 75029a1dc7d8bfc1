//! The batch scheduler: continuous batching on one OS thread that owns the model, the kernel thread pool
//! and the sequence slots.
//!
//! The forward pass is synchronous and CPU-bound, so it runs here rather than on the async runtime; HTTP
//! handlers talk to this thread over channels. Each step is one `Model::forward` over a batch of chunks:
//! one token for every sequence that is generating, plus up to `prefill_chunk` prompt tokens of the
//! sequences still reading their prompts (oldest first). A long prompt is thus read over several steps while
//! the other sequences keep decoding, and a new prompt is read in the same pass as their decode steps.
//! Requests wait in a bounded queue and are admitted between steps whenever a slot is free; a finished,
//! failed or cancelled sequence gives its slot back at once. A request is cancelled as soon as the receiver
//! of its events is gone (the client disconnected and the handler was dropped).
//!
//! Batching does not change what a sequence generates: the decoder computes each row of a batch on its
//! own (per-row activation quantization, per-row dot products, per-sequence attention), so a greedy
//! sequence gets the same tokens alone or among others, and however its prompt was chunked.
//!
//! A job with images has them encoded when it is admitted (the vision encoder runs here, where the model is;
//! an image sent twice in a request is encoded once), and their rows kept with the prompt until the chunk
//! that holds them is read. Each image's bidirectional span — PaliGemma's prefix (the image rows and the text
//! after them), a Gemma 3 image's soft tokens — is read in one chunk whatever `prefill_chunk` says, since
//! its first query sees its last key (`gemma::runtime::multimodal::chunk_end`): a chunk that would cut a span
//! stops before it, and a chunk that starts with one reads it whole, so a pass may read more than
//! `prefill_chunk` prompt tokens by at most one span. The rows are dropped once read; generation then goes
//! on as for any other sequence, batched with the others.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gemma::kernels::ThreadPool;
use gemma::model::{Chunk, EmbeddingRows, LogitsWanted, Model, Scratch, SeqState};
use gemma::runtime::multimodal::chunk_end;
use gemma::runtime::{FinishReason, Sampler, SamplerConfig, TextStream};
use gemma::tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;

/// How often an idle scheduler looks at the shutdown flags.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// A generation, validated by the HTTP layer: its prompt and `max_tokens` fit the context.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    /// Most tokens to generate, at least 1.
    pub max_tokens: usize,
    pub stop_strings: Vec<String>,
    /// Ids that end the generation; they are not part of the output.
    pub stop_ids: Vec<u32>,
    /// Images whose rows replace placeholders of the prompt, in prompt order.
    pub images: Vec<ImageInput>,
    /// Split Gemma 4's thought channel off the text (a chat answer): it comes as `Event::Reasoning`.
    pub split_thoughts: bool,
    pub events: UnboundedSender<Event>,
}

/// A job's image, decoded and preprocessed by the HTTP side (off this thread); encoded on admission.
#[derive(Debug)]
pub struct ImageInput {
    /// (3, image_size, image_size), as `gemma::runtime::multimodal::model_pixels` gives them; parts of a
    /// request with the same data share them, and are encoded once.
    pub pixels: Arc<Vec<f32>>,
    /// Offset in the prompt of the image's first placeholder (`tokens_per_image` of them).
    pub at: usize,
    /// The span of the prompt that holds the placeholders and attends bidirectionally, read in one chunk
    /// (PaliGemma: the whole prefix from 0; Gemma 3: the placeholders).
    pub span: Range<usize>,
}

/// An admitted job's image: its rows in the text stream, until the chunk that holds them has been read.
struct ImageRows {
    /// (tokens_per_image, d_model)
    rows: Arc<Vec<f32>>,
    at: usize,
    span: Range<usize>,
}

/// What a job's handler receives, in order: text pieces, then `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The next piece of the output (never empty).
    Text(String),
    /// The next piece of the model's thoughts (never empty; only with `Job::split_thoughts`).
    Reasoning(String),
    Done(Finished),
    /// The generation cannot go on; the text already sent stands.
    Failed(Failure),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Refused from the queue, or cancelled when the shutdown grace ran out.
    ShuttingDown,
    /// The engine failed (a bug: inputs are validated before they get here).
    Internal(String),
}

/// How a generation ended, with its token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences generating at once (`--parallel`).
    pub slots: usize,
    /// Positions per sequence, prompt and generation (`--ctx-size`).
    pub ctx: usize,
    /// Requests that may wait for a slot before new ones are refused.
    pub queue: usize,
    /// Most prompt tokens read per forward pass, over all sequences.
    pub prefill_chunk: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// Every slot is busy and the queue is full.
    Busy,
    ShuttingDown,
}

/// Flags the HTTP side sets and the scheduler reads between steps.
#[derive(Default)]
struct Control {
    /// Admit nothing new; finish what is running.
    draining: AtomicBool,
    /// When draining, cancel what is still running at this instant.
    cancel_at: Mutex<Option<Instant>>,
    /// Cleared when the scheduler thread ends, normally or not.
    running: AtomicBool,
}

/// The HTTP side's handle on the scheduler thread. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    tx: SyncSender<Job>,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
}

impl Scheduler {
    /// Start the scheduler thread. The thread ends after [`Scheduler::shutdown`] once its sequences are done.
    pub fn spawn(
        model: Model,
        tokenizer: Arc<Tokenizer>,
        pool: ThreadPool,
        config: SchedulerConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Scheduler, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(config.queue);
        let control = Arc::new(Control { running: AtomicBool::new(true), ..Default::default() });
        metrics.slots.store(config.slots, Ordering::Relaxed);
        let handle = Scheduler { tx, control: control.clone(), metrics: metrics.clone() };
        let thread = std::thread::Builder::new().name("gemma-scheduler".into()).spawn(move || {
            let _running = RunningGuard(&control);
            Worker {
                model: &model,
                tok: &tokenizer,
                pool: &pool,
                rx,
                control: &control,
                metrics: &metrics,
                config,
                active: Vec::new(),
                free: Vec::new(),
                scratch: Scratch::new(),
                disconnected: false,
            }
            .run();
        })?;
        Ok((handle, thread))
    }

    /// Queue a job, or refuse it at once when the queue is full or the server is stopping.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        if self.control.draining.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        // Counted before sending so the scheduler's decrement can never come first.
        self.metrics.queue_depth.fetch_add(1, Ordering::SeqCst);
        let r = self.tx.try_send(job);
        if r.is_err() {
            self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
        }
        match r {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.metrics.rejected_busy.fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Busy)
            }
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::ShuttingDown),
        }
    }

    /// Stop admitting requests (queued ones fail), let running ones finish, and cancel those still running
    /// after `grace`. Calling again can only shorten the grace.
    pub fn shutdown(&self, grace: Duration) {
        self.control.draining.store(true, Ordering::SeqCst);
        let at = Instant::now() + grace;
        let mut c = self.control.cancel_at.lock().unwrap();
        *c = Some(c.map_or(at, |old| old.min(at)));
    }

    /// Whether new requests are still taken.
    pub fn accepting(&self) -> bool {
        self.control.running.load(Ordering::SeqCst) && !self.control.draining.load(Ordering::SeqCst)
    }
}

/// Marks the scheduler as gone when its thread ends, even by a panic.
struct RunningGuard<'a>(&'a Control);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// One sequence holding a slot.
struct Seq<'t> {
    job: Job,
    state: SeqState,
    /// Prompt tokens already through the model.
    fed: usize,
    /// The last generated token, fed at the next step.
    last: [u32; 1],
    sampler: Sampler,
    /// Prompt and generated tokens, for the sampler's penalties.
    history: Vec<u32>,
    /// The generated ids and their text (stop ids, stop strings, streaming decoding).
    text: TextStream<'t>,
    /// The images not read yet, in prompt order.
    images: Vec<ImageRows>,
}

impl<'t> Seq<'t> {
    fn reading_prompt(&self) -> bool {
        self.fed < self.job.prompt.len()
    }

    /// Tokens generated so far (stop ids are not counted).
    fn generated(&self) -> usize {
        self.text.ids().len()
    }

    /// Sample the next token from this sequence's logits and send its text; `true` when the sequence ends.
    fn advance(&mut self, logits: &[f32]) -> bool {
        let tok = self.sampler.sample(logits, &self.history);
        let step = self.text.push(tok);
        self.send_reasoning(step.reasoning);
        self.send_text(step.text);
        if step.stop.is_some() {
            return true;
        }
        // Feeding the token back needs a position; without one the sequence is as long as it can be.
        if self.generated() >= self.job.max_tokens || self.state.pos >= self.state.max_pos {
            return true;
        }
        self.history.push(tok);
        self.last = [tok];
        false
    }

    fn send_text(&self, text: String) {
        if !text.is_empty() {
            let _ = self.job.events.send(Event::Text(text));
        }
    }

    fn send_reasoning(&self, text: String) {
        if !text.is_empty() {
            let _ = self.job.events.send(Event::Reasoning(text));
        }
    }

    /// Send what the text stream still holds, then `Done`.
    fn finish(&mut self) {
        let end = self.text.finish();
        self.send_reasoning(end.reasoning);
        self.send_text(end.text);
        let done = Finished { reason: end.reason, prompt_tokens: self.job.prompt.len(), completion_tokens: self.generated() };
        let _ = self.job.events.send(Event::Done(done));
    }
}

/// The scheduler thread's state.
struct Worker<'a> {
    model: &'a Model,
    tok: &'a Tokenizer,
    pool: &'a ThreadPool,
    rx: Receiver<Job>,
    control: &'a Control,
    metrics: &'a Metrics,
    config: SchedulerConfig,
    /// In admission order: older sequences get the prompt budget first.
    active: Vec<Seq<'a>>,
    /// Caches of finished sequences, kept for reuse so that a slot's buffers are allocated once.
    free: Vec<SeqState>,
    scratch: Scratch,
    /// The job channel's senders are all gone.
    disconnected: bool,
}

impl<'a> Worker<'a> {
    fn run(&mut self) {
        loop {
            if self.control.draining.load(Ordering::SeqCst) {
                self.reject_queued();
                if self.past_grace() {
                    self.fail_all();
                }
                if self.active.is_empty() {
                    break;
                }
            } else {
                self.admit();
                if self.disconnected && self.active.is_empty() {
                    break;
                }
            }
            self.drop_cancelled();
            if !self.active.is_empty() {
                self.step();
            }
            self.metrics.active.store(self.active.len(), Ordering::Relaxed);
        }
        self.metrics.active.store(0, Ordering::Relaxed);
    }

    /// Fill free slots from the queue; when nothing is running, wait a little for a request.
    fn admit(&mut self) {
        while self.active.len() < self.config.slots {
            let job = if self.active.is_empty() {
                match self.rx.recv_timeout(IDLE_POLL) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) => return,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.disconnected = true;
                        return;
                    }
                }
            } else {
                match self.rx.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty) => return,
                    Err(TryRecvError::Disconnected) => {
                        self.disconnected = true;
                        return;
                    }
                }
            };
            self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
            if job.events.is_closed() {
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.start(job);
        }
    }

    fn start(&mut self, mut job: Job) {
        // The pixels are dropped here; the rows live until the chunk that holds them is read.
        let mut encoded: Vec<(Arc<Vec<f32>>, Arc<Vec<f32>>)> = Vec::new();
        let mut images = Vec::with_capacity(job.images.len());
        for im in std::mem::take(&mut job.images) {
            let rows = match encoded.iter().find(|(p, _)| Arc::ptr_eq(p, &im.pixels)) {
                Some((_, rows)) => rows.clone(),
                None => match self.model.embed_image(self.pool, &im.pixels) {
                    Ok(rows) => {
                        self.metrics.images_encoded.fetch_add(1, Ordering::Relaxed);
                        let rows = Arc::new(rows);
                        encoded.push((im.pixels.clone(), rows.clone()));
                        rows
                    }
                    Err(e) => {
                        // The HTTP side checked the model and preprocessed for it: this is a bug.
                        let _ = job.events.send(Event::Failed(Failure::Internal(format!("encoding an image: {e}"))));
                        return;
                    }
                },
            };
            images.push(ImageRows { rows, at: im.at, span: im.span });
        }
        drop(encoded);
        let state = self.free.pop().unwrap_or_else(|| self.model.new_state(self.config.ctx));
        let mut history = Vec::with_capacity(job.prompt.len() + job.max_tokens);
        history.extend_from_slice(&job.prompt);
        self.active.push(Seq {
            sampler: Sampler::new(job.sampler.clone()),
            text: TextStream::new(self.tok, job.stop_ids.clone(), job.stop_strings.clone())
                .split_thoughts(if job.split_thoughts { self.tok.thought_channel() } else { None }),
            state,
            fed: 0,
            last: [0],
            history,
            images,
            job,
        });
    }

    fn release(&mut self, mut s: Seq<'a>) {
        s.state.reset();
        self.free.push(s.state);
    }

    fn reject_queued(&mut self) {
        while let Ok(job) = self.rx.try_recv() {
            self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
            let _ = job.events.send(Event::Failed(Failure::ShuttingDown));
        }
    }

    fn past_grace(&self) -> bool {
        self.control.cancel_at.lock().unwrap().is_some_and(|t| Instant::now() >= t)
    }

    /// Cancel every running sequence (the shutdown grace is over).
    fn fail_all(&mut self) {
        for s in std::mem::take(&mut self.active) {
            let _ = s.job.events.send(Event::Failed(Failure::ShuttingDown));
            self.release(s);
        }
    }

    /// Free the slots of sequences whose client has gone.
    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].job.events.is_closed() {
                let s = self.active.remove(i);
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                self.release(s);
            } else {
                i += 1;
            }
        }
    }

    /// One forward pass over every active sequence, then sampling for those that reached a new token.
    fn step(&mut self) {
        let vocab = self.model.config.vocab_size;
        let mut budget = self.config.prefill_chunk;
        // Per chunk: the sequence it belongs to and the prompt tokens it carries (0 for a decode step).
        let mut plan = Vec::with_capacity(self.active.len());
        // The images read in this pass, taken from their sequences (dropped after the pass), per chunk of `plan`.
        let mut images: Vec<Vec<ImageRows>> = Vec::new();
        for (i, s) in self.active.iter_mut().enumerate() {
            if s.reading_prompt() {
                let spans: Vec<Range<usize>> = s.images.iter().map(|im| im.span.clone()).collect();
                let n = chunk_end(s.fed, s.job.prompt.len(), budget, &spans) - s.fed;
                if n == 0 {
                    continue;
                }
                budget = budget.saturating_sub(n);
                let read = s.images.iter().take_while(|im| im.span.end <= s.fed + n).count();
                images.push(s.images.drain(..read).collect());
                plan.push((i, n));
            } else {
                images.push(Vec::new());
                plan.push((i, 0));
            }
        }
        // Rows and spans relative to their chunk's first token.
        let fed: Vec<usize> = plan.iter().map(|&(i, _)| self.active[i].fed).collect();
        let rows: Vec<Vec<EmbeddingRows>> = images
            .iter()
            .zip(&fed)
            .map(|(ims, &f)| ims.iter().map(|im| EmbeddingRows { at: im.at - f, data: &im.rows }).collect())
            .collect();
        let spans: Vec<Vec<Range<usize>>> =
            images.iter().zip(&fed).map(|(ims, &f)| ims.iter().map(|im| im.span.start - f..im.span.end - f).collect()).collect();
        let mut chunks = Vec::with_capacity(plan.len());
        let mut seqs = self.active.iter_mut().enumerate();
        for (k, &(i, n)) in plan.iter().enumerate() {
            let (_, s) = seqs.find(|(j, _)| *j == i).expect("the plan is in sequence order");
            let mut chunk = if n > 0 {
                let last = s.fed + n == s.job.prompt.len();
                let logits = if last { LogitsWanted::Last } else { LogitsWanted::None };
                Chunk::new(&s.job.prompt[s.fed..s.fed + n], &mut s.state, logits)
            } else {
                Chunk::new(&s.last, &mut s.state, LogitsWanted::Last)
            };
            chunk.rows = &rows[k];
            chunk.bidirectional = &spans[k];
            chunks.push(chunk);
        }
        let result = self.model.forward(self.pool, &mut chunks, &mut self.scratch);
        drop(chunks);
        // The images read in this pass are not needed any more.
        drop(rows);
        drop(images);
        if let Err(e) = result {
            // Inputs are validated before submission, so this is a bug; fail the batch, keep serving.
            let why = Failure::Internal(e.to_string());
            let ids: Vec<usize> = plan.iter().map(|&(i, _)| i).collect();
            for &i in ids.iter().rev() {
                let s = self.active.remove(i);
                let _ = s.job.events.send(Event::Failed(why.clone()));
                self.release(s);
            }
            return;
        }
        let mut ended = Vec::new();
        let mut generated = 0;
        for (k, &(i, n)) in plan.iter().enumerate() {
            let s = &mut self.active[i];
            s.fed += n;
            if s.reading_prompt() {
                continue;
            }
            let before = s.generated();
            let ended_now = s.advance(self.scratch.logits(k, vocab));
            generated += s.generated() - before;
            if ended_now {
                s.finish();
                ended.push(i);
            }
        }
        let prompt_tokens = plan.iter().map(|&(_, n)| n).sum();
        self.metrics.record_pass(plan.len(), prompt_tokens, generated);
        for &i in ended.iter().rev() {
            let s = self.active.remove(i);
            self.release(s);
        }
    }
}

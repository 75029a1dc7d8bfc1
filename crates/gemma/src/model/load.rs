//! Open a model from a path: a checkpoint folder (config.json + safetensors) or a .gguf file.

use std::path::Path;

use super::config::Config;
use super::decoder::Model;
use super::weights::{NameScheme, NormConvention, Weights};
use crate::formats::safetensors;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// What kind of file or folder a model path is.
pub enum ModelPath<'a> {
    /// A Hugging Face checkpoint folder.
    HfDir(&'a Path),
    /// A GGUF file.
    Gguf(&'a Path),
}

impl<'a> ModelPath<'a> {
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
        ModelPath::Gguf(file) => crate::formats::gguf::load_model(file),
    }
}

pub fn load_hf_dir(dir: &Path) -> Result<Model> {
    let config = Config::from_hf_file(&dir.join("config.json"))?;
    let store = safetensors::load_dir(dir)?;
    let weights = Weights::from_store(&config, &store, NameScheme::HuggingFace, NormConvention::AddOne)?;
    Ok(Model::new(config, weights))
}

/// Load a model and its tokenizer (GGUF metadata, or the folder's tokenizer.json / tokenizer.model), reading a
/// GGUF file's header once.
pub fn load_with_tokenizer(path: &Path) -> Result<(Model, Tokenizer)> {
    match ModelPath::classify(path)? {
        ModelPath::HfDir(dir) => Ok((load_hf_dir(dir)?, Tokenizer::from_dir(dir)?)),
        ModelPath::Gguf(file) => {
            let f = crate::formats::gguf::load(file)?;
            Ok((crate::formats::gguf::model_from_file(&f)?, Tokenizer::from_gguf_metadata(&f.metadata)?))
        }
    }
}

/// Load only the tokenizer of a model path.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    match ModelPath::classify(path)? {
        ModelPath::HfDir(dir) => Tokenizer::from_dir(dir),
        ModelPath::Gguf(file) => Tokenizer::from_gguf_metadata(&crate::formats::gguf::load(file)?.metadata),
    }
}

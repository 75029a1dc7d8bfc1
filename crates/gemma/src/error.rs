//! The library's error type. Every variant names the file, tensor or field at fault and what was expected,
//! so that a front end can print it as one line for a person.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The OS error is part of the message rather than a `source()`, so that a report of the chain
    /// (anyhow's `{:#}`) does not say it twice.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },

    /// A file whose bytes do not follow its format (truncated, corrupt, lying offsets).
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },

    #[error("{file}: field `{field}`: {what}")]
    Config { file: PathBuf, field: String, what: String },

    #[error("{file}: missing tensor `{name}`")]
    MissingTensor { file: PathBuf, name: String },

    #[error("{file}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch { file: PathBuf, name: String, expected: Vec<usize>, got: Vec<usize> },

    #[error("{file}: tensor `{name}` has type {dtype}, which {what}")]
    UnsupportedDType { file: PathBuf, name: String, dtype: String, what: String },

    /// A `model_type` / `general.architecture` no config source knows.
    #[error("unknown architecture `{0}`: not a member of the Gemma family that gemma-rs reads")]
    UnknownArchitecture(String),

    /// A token id at or past the vocabulary size.
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfVocab { id: u32, vocab_size: usize },

    /// A sequence would pass the context it was created with.
    #[error("sequence would reach {needed} positions, past its context of {max_pos}")]
    ContextFull { needed: usize, max_pos: usize },

    /// A sequence state made for a model with another layer layout (layer count, kinds or widths).
    #[error("this sequence state was made for another model (its layers: {state_layers}; this model's: {model_layers})")]
    ForeignState { state_layers: usize, model_layers: usize },

    /// Something the file or request asks for that this version of gemma-rs does not implement.
    #[error("{feature} is not supported yet")]
    Unsupported { feature: String },

    #[error("{0}")]
    Tokenizer(String),

    /// A file given as an image that is none: no PNG, JPEG or WebP signature, nor another image format's.
    #[error("{path}: not an image (expected a PNG, JPEG or WebP file)")]
    NotAnImage { path: PathBuf },

    /// An image in a format gemma-rs does not decode (GIF, TIFF, BMP, ...).
    #[error("{path}: a {format} image, which gemma-rs does not read (expected PNG, JPEG or WebP)")]
    UnsupportedImage { path: PathBuf, format: String },

    /// An image whose header states more pixels than gemma-rs decodes; refused before any pixel is read.
    #[error("{path}: the image is {width}x{height} pixels, over the limit of {max_pixels} pixels")]
    ImageTooLarge { path: PathBuf, width: u32, height: u32, max_pixels: u64 },

    /// A request the model cannot serve as asked (prompt longer than the context, bad token id, ...).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }
    pub fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format { path: path.into(), what: what.into() }
    }
    pub fn config(file: impl Into<PathBuf>, field: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Config { file: file.into(), field: field.into(), what: what.into() }
    }
}

//! The engine's errors as Python exceptions: `FileNotFoundError` for a path that is not there, `ValueError`
//! for a request the model cannot serve as asked (a prompt past the context, a token outside the vocabulary,
//! a file given as an image that is none), and `gemma_rs.GemmaError` for everything else (a corrupt or
//! unsupported checkpoint, ...). The message is the engine's, one line naming the file or field at fault.

use gemma::Error;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(
    gemma_rs,
    GemmaError,
    PyException,
    "An error of the gemma-rs engine that is neither a missing file nor a bad argument: a corrupt or unsupported checkpoint, a tokenizer without a token a prompt needs, ..."
);

/// The Python exception for an engine error.
pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Io { path, error } if error.kind() == std::io::ErrorKind::NotFound => not_found(&path, error.to_string()),
        Error::Invalid(_)
        | Error::TokenOutOfVocab { .. }
        | Error::ContextFull { .. }
        | Error::NotAnImage { .. }
        | Error::UnsupportedImage { .. }
        | Error::ImageTooLarge { .. } => PyValueError::new_err(msg),
        _ => GemmaError::new_err(msg),
    }
}

/// `FileNotFoundError` with `errno` ENOENT, `strerror` what went wrong and `filename` the path, as `open()`
/// raises it: `[Errno 2] {what}: '{path}'`.
pub fn not_found(path: &std::path::Path, what: String) -> PyErr {
    PyFileNotFoundError::new_err((2, what, path.display().to_string()))
}

pub fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

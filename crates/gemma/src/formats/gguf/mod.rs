//! GGUF, llama.cpp's model format (versions 2 and 3), little-endian:
//!
//! ```text
//! "GGUF"  u32 version  u64 n_tensors  u64 n_kv
//! n_kv ×      { string key, u32 value_type, value }
//! n_tensors × { string name, u32 n_dims, u64 dims[n_dims] (innermost first), u32 ggml_type, u64 offset }
//! padding to `general.alignment` (default 32), then the data section; each tensor's `offset` is relative to it
//! ```
//! Strings are a u64 byte length and UTF-8 bytes; an array value is a u32 element type, a u64 count and the
//! elements (arrays may nest).
//!
//! [`parse`] reads the header and metadata into memory and leaves the tensor data in the (memory-mapped) file:
//! each [`Tensor`] is a slice of it, with its dimensions reversed to row-major. Every count and length read
//! from the file is checked against the bytes that remain *before* anything is allocated for it, so a corrupt
//! or hostile file gives an [`Error::Format`] naming the key or tensor and the byte offset, never a panic or a
//! huge allocation. The model layer's `config::gguf` turns a Gemma file's metadata into a
//! model configuration.

mod reader;
mod writer;

use std::collections::BTreeMap;
use std::path::Path;

pub use reader::parse;
pub use writer::GgufWriter;

use super::{Bytes, TensorStore};
use crate::{Error, Result};

/// A metadata value. Arrays keep their element values (the tokenizer's 262k strings among them).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// GGUF's name for the value's type (`u32`, `string`, `array`, ...), for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// Any integer type holding a non-negative value (writers differ in which integer type they use).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// A float, or an integer read as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short rendering for error messages (arrays by their length only).
    fn brief(&self) -> String {
        match self {
            Value::String(s) => {
                // At most 40 bytes, cut at a character boundary.
                let cut = (0..=s.len().min(40)).rev().find(|&j| s.is_char_boundary(j)).unwrap_or(0);
                let more = if cut < s.len() { "..." } else { "" };
                format!("string {:?}{more}", &s[..cut])
            }
            Value::Array(a) => format!("array of {} values", a.len()),
            Value::Bool(b) => format!("bool {b}"),
            Value::F32(v) => format!("f32 {v}"),
            Value::F64(v) => format!("f64 {v}"),
            v => format!("{} {}", v.type_name(), v.as_i64().map(|i| i.to_string()).unwrap_or_else(|| format!("{:?}", v))),
        }
    }
}

/// A parsed GGUF file: metadata by key, and the tensors (shapes row-major, data mapped).
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: TensorStore,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufFile(v{}, {} keys, {} tensors)", self.version, self.metadata.len(), self.tensors.tensors.len())
    }
}

/// Memory-map and parse a GGUF file.
pub fn load(path: &Path) -> Result<GgufFile> {
    parse(path, Bytes::map_file(path)?)
}

impl GgufFile {
    /// The file the data came from.
    pub fn path(&self) -> &Path {
        &self.tensors.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn typed<'a, T>(&'a self, key: &str, want: &str, conv: impl FnOnce(&'a Value) -> Option<T>) -> Result<Option<T>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => conv(v).map(Some).ok_or_else(|| Error::config(self.path(), key, format!("expected {want}, found {}", v.brief()))),
        }
    }

    /// An integer key that fits a u32; `Ok(None)` if absent, an error naming the key if of another type.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>> {
        self.typed(key, "an integer in u32 range", |v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
    }

    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    /// A float key (f32, f64, or an integer), as f32.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        self.typed(key, "a number", |v| v.as_f64().map(|f| f as f32))
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }

    pub fn get_arr(&self, key: &str) -> Result<Option<&[Value]>> {
        self.typed(key, "an array", Value::as_array)
    }

    /// `general.architecture` (required by the format).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")?
            .ok_or_else(|| Error::config(self.path(), "general.architecture", "missing (every GGUF model file names its architecture)"))
    }
}

#[cfg(test)]
mod tests;

//! GGUF reader (llama.cpp's model format): header, typed metadata, tensor infos, memory-mapped data.

use std::collections::BTreeMap;
use std::path::Path;

use super::TensorStore;

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

/// A parsed GGUF file: metadata by key, and the tensors (shapes row-major, data mapped).
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: TensorStore,
}

/// Load a Gemma model from a GGUF file.
pub fn load_model(path: &Path) -> crate::Result<crate::model::Model> {
    Err(crate::Error::format(path, "GGUF is not supported yet"))
}

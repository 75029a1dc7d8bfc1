//! A small GGUF writer: for tests (images built in memory) and tools (random-weight benchmark files).
//! It writes what it is given; the reader is the one that checks.

use std::path::Path;

use super::reader::{Kind, DEFAULT_ALIGNMENT};
use super::Value;
use crate::quant::DType;
use crate::{Error, Result};

/// Metadata and tensors to serialize. Tensors are laid out in the order added, each padded to the alignment.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    pub version: u32,
    kv: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    dtype: DType,
    /// Row-major, as [`crate::formats::Tensor::shape`]; written innermost first.
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file.
    pub fn new() -> Self {
        GgufWriter { version: 3, kv: Vec::new(), tensors: Vec::new() }
    }

    /// Add a metadata entry (entries are written in the order added; `general.alignment` sets the alignment).
    pub fn add(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.kv.push((key.into(), value));
        self
    }

    /// Add a tensor: `shape` row-major, `data` its bytes in `dtype`.
    pub fn add_tensor(&mut self, name: impl Into<String>, dtype: DType, shape: &[usize], data: Vec<u8>) -> &mut Self {
        self.tensors.push(PendingTensor { name: name.into(), dtype, shape: shape.to_vec(), data });
        self
    }

    fn alignment(&self) -> u64 {
        match self.kv.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) if a.is_power_of_two() => *a as u64,
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// The file's bytes. Fails if a tensor's data does not match its type and shape, or an array mixes types.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let align = self.alignment() as usize;
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend_from_slice(&(Kind::of(v) as u32).to_le_bytes());
            put_value(&mut out, v).map_err(|e| Error::Invalid(format!("GGUF writer: key `{k}`: {e}")))?;
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            let cols = t.shape.last().copied().unwrap_or(1);
            let rows: usize = t.shape.iter().rev().skip(1).product();
            if t.dtype.row_bytes(cols).map(|rb| rb * rows) != Some(t.data.len()) {
                return Err(Error::Invalid(format!(
                    "GGUF writer: tensor `{}`: {} bytes do not hold a {} tensor of shape {:?}",
                    t.name,
                    t.data.len(),
                    t.dtype,
                    t.shape
                )));
            }
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&t.dtype.ggml_id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += t.data.len().next_multiple_of(align);
        }
        out.resize(out.len().next_multiple_of(align), 0);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            out.resize(out.len().next_multiple_of(align), 0);
        }
        Ok(out)
    }

    pub fn write_file(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()?).map_err(|e| Error::io(path, e))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) -> std::result::Result<(), String> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            // GGUF arrays are homogeneous; an empty one is written as an array of u8.
            let kind = items.first().map(Kind::of).unwrap_or(Kind::U8);
            if let Some(bad) = items.iter().position(|x| Kind::of(x) != kind) {
                return Err(format!("array element {bad} is a {}, element 0 a {}", items[bad].type_name(), items[0].type_name()));
            }
            out.extend_from_slice(&(kind as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                put_value(out, x)?;
            }
        }
    }
    Ok(())
}

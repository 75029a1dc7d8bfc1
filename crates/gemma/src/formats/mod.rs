//! Checkpoint file formats. Each reader produces a [`TensorStore`]: named tensors whose bytes stay in the
//! memory-mapped file, in their stored type. No model knowledge lives here: a GGUF file's metadata is read as
//! plain keys and values, and the model layer's `config::gguf` interprets them.

pub mod gguf;
pub mod safetensors;
mod storage;

pub use storage::Bytes;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::quant::DType;

/// A tensor as stored: `shape` is row-major (the last dimension is contiguous), whatever the file's own
/// convention (GGUF lists dimensions innermost first; the GGUF reader reverses them).
#[derive(Clone)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }
    /// All elements widened to f32. For small tensors only (norm weights); matrices are read in place.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.numel()];
        crate::quant::dequantize_row(self.dtype, self.bytes(), &mut out);
        out
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?})", self.dtype, self.shape)
    }
}

/// The tensors of a checkpoint (possibly several shard files), by name.
#[derive(Debug, Default)]
pub struct TensorStore {
    /// The file or folder the tensors came from, for error messages.
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
}

impl TensorStore {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
    pub fn total_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }
}

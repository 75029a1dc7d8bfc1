//! `out = x · Wᵀ` for a weight matrix in any stored type and a batch of f32 activation rows.
//!
//! The weight stays in its stored type: float weights are widened in registers, block-quantized weights meet
//! activations quantized once per call to the matching 8-bit format (integer dot products, as llama.cpp).
//! Work is split over output rows, so each weight row is read once per call whatever the batch size.

use super::dot::Kernels;
use super::{SyncPtr, ThreadPool};
use crate::formats::Bytes;
use crate::quant::{quantize_acts, ActFormat, DType, QuantizedActs};

/// A 2-D weight, `rows × cols`, row-major, each row `dtype.row_bytes(cols)` bytes.
#[derive(Clone)]
pub struct Matrix {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: Bytes,
}

impl Matrix {
    pub fn row_bytes(&self) -> usize {
        self.dtype.row_bytes(self.cols).expect("validated at load")
    }
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data.as_slice()[r * rb..(r + 1) * rb]
    }
    /// Row `r` widened to f32 (embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        crate::quant::dequantize_row(self.dtype, self.row(r), out);
    }
    pub fn n_bytes(&self) -> usize {
        self.data.len()
    }
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Matrix({} {}x{})", self.dtype, self.rows, self.cols)
    }
}

/// Rows of output computed by one task: enough work to amortize the hand-out, few enough to balance.
fn rows_per_task(rows: usize, n_threads: usize) -> usize {
    let target_tasks = n_threads * 8;
    (rows / target_tasks).clamp(4, 256)
}

/// `out[t][r] = Σ_c x[t][c] · w[r][c]` for `t < x.len() / w.cols`; `out` is `n × w.rows`.
/// `acts` is scratch for the quantized activations (reused to avoid allocating per call).
pub fn matmul(pool: &ThreadPool, w: &Matrix, x: &[f32], out: &mut [f32], acts: &mut QuantizedActs) {
    let n = x.len() / w.cols;
    debug_assert_eq!(x.len(), n * w.cols);
    debug_assert_eq!(out.len(), n * w.rows);
    let k = Kernels::get();
    let fmt = w.dtype.act_format();
    if fmt != ActFormat::F32 {
        quantize_acts(fmt, x, w.cols, acts);
    }
    let acts: &QuantizedActs = acts;
    let rows = w.rows;
    let step = rows_per_task(rows, pool.n_threads());
    let n_tasks = rows.div_ceil(step);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    pool.run(n_tasks, &|task| {
        let r0 = task * step;
        let r1 = (r0 + step).min(rows);
        for r in r0..r1 {
            let wr = w.row(r);
            for t in 0..n {
                let v = match w.dtype {
                    DType::F32 => {
                        // SAFETY: an F32 row of `cols` elements is 4·cols bytes; mmapped/owned data is at least
                        // 4-byte aligned (safetensors and GGUF align tensor data; owned Vec<u8> data is checked).
                        let wf = bytes_as_f32(wr);
                        (k.dot_f32)(wf, &x[t * w.cols..(t + 1) * w.cols])
                    }
                    DType::BF16 => (k.dot_bf16)(wr, &x[t * w.cols..(t + 1) * w.cols]),
                    DType::F16 => (k.dot_f16)(wr, &x[t * w.cols..(t + 1) * w.cols]),
                    dt => (k.dot_q)(dt, wr, acts.row(t), w.cols),
                };
                // SAFETY: task `task` alone writes rows r0..r1 of every output row t; `out` outlives `run`.
                unsafe { *out_ptr.get().add(t * rows + r) = v };
            }
        }
    });
}

/// View little-endian f32 bytes as f32s; copies nothing when aligned (always, for tensors we load).
fn bytes_as_f32(b: &[u8]) -> &[f32] {
    // SAFETY: f32 has no invalid bit patterns; align_to returns only the aligned middle, which we check is all.
    let (pre, mid, post) = unsafe { b.align_to::<f32>() };
    assert!(pre.is_empty() && post.is_empty(), "f32 tensor data is not 4-byte aligned");
    mid
}

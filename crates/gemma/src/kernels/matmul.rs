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

/// Activations quantized once per format, shared by every matrix of a call that reads the same input.
#[derive(Default)]
pub struct ActCache {
    /// Indexed by `ActFormat as usize`; only the quantized formats are used.
    slots: [QuantizedActs; 4],
}

fn slot(f: ActFormat) -> usize {
    match f {
        ActFormat::F32 => 0,
        ActFormat::Q8_0 => 1,
        ActFormat::Q8_1 => 2,
        ActFormat::Q8_K => 3,
    }
}

/// `out[t][r] = Σ_c x[t][c] · w[r][c]` for `t < x.len() / w.cols`; `out` is `n × w.rows`.
/// `acts` is scratch for the quantized activations (reused to avoid allocating per call).
pub fn matmul(pool: &ThreadPool, w: &Matrix, x: &[f32], out: &mut [f32], acts: &mut ActCache) {
    matmul_many(pool, x, &mut [(w, out)], acts);
}

/// Several products of the same input (q, k, v; or gate, up) in one parallel call: the input is quantized once
/// per activation format and the pool synchronizes once.
pub fn matmul_many(pool: &ThreadPool, x: &[f32], jobs: &mut [(&Matrix, &mut [f32])], acts: &mut ActCache) {
    let cols = jobs[0].0.cols;
    let n = x.len() / cols;
    debug_assert_eq!(x.len(), n * cols);
    let mut quantized = [false; 4];
    for (w, out) in jobs.iter() {
        debug_assert_eq!(w.cols, cols);
        debug_assert_eq!(out.len(), n * w.rows);
        let f = w.dtype.act_format();
        if f != ActFormat::F32 && !quantized[slot(f)] {
            quantize_acts(f, x, cols, &mut acts.slots[slot(f)]);
            quantized[slot(f)] = true;
        }
    }
    let acts: &ActCache = acts;
    let k = Kernels::get();
    // Tasks of every job, numbered consecutively; fixed-size tables, so decoding does not allocate.
    const MAX_JOBS: usize = 4;
    assert!(jobs.len() <= MAX_JOBS, "matmul_many takes at most {MAX_JOBS} matrices");
    let mut step = [0usize; MAX_JOBS];
    let mut first_task = [0usize; MAX_JOBS + 1];
    let mut outs: [Option<(SyncPtr<f32>, &Matrix)>; MAX_JOBS] = [None; MAX_JOBS];
    for (j, (w, o)) in jobs.iter_mut().enumerate() {
        step[j] = rows_per_task(w.rows, pool.n_threads());
        first_task[j + 1] = first_task[j] + w.rows.div_ceil(step[j]);
        outs[j] = Some((SyncPtr(o.as_mut_ptr()), &**w));
    }
    let n_jobs = jobs.len();
    pool.run(first_task[n_jobs], &|i| {
        let j = (0..n_jobs).rfind(|&j| first_task[j] <= i).unwrap();
        let (out_ptr, w) = outs[j].unwrap();
        let r0 = (i - first_task[j]) * step[j];
        let r1 = (r0 + step[j]).min(w.rows);
        let qa = &acts.slots[slot(w.dtype.act_format())];
        for r in r0..r1 {
            let wr = w.row(r);
            // Quantized weights: four tokens at a time, each weight block unpacked once for all four.
            let mut t0 = 0;
            if w.dtype.is_quantized() {
                while t0 + 4 <= n {
                    let v = (k.dot_q4)(w.dtype, wr, [qa.row(t0), qa.row(t0 + 1), qa.row(t0 + 2), qa.row(t0 + 3)], cols);
                    for (dt, v) in v.into_iter().enumerate() {
                        // SAFETY: as below.
                        unsafe { *out_ptr.get().add((t0 + dt) * w.rows + r) = v };
                    }
                    t0 += 4;
                }
            }
            for t in t0..n {
                let xr = &x[t * cols..(t + 1) * cols];
                let v = match w.dtype {
                    DType::F32 => (k.dot_f32)(bytes_as_f32(wr), xr),
                    DType::BF16 => (k.dot_bf16)(wr, xr),
                    DType::F16 => (k.dot_f16)(wr, xr),
                    dt => (k.dot_q)(dt, wr, qa.row(t), cols),
                };
                // SAFETY: task i alone writes rows r0..r1 of job j's output, for every t; outputs outlive `run`.
                unsafe { *out_ptr.get().add(t * w.rows + r) = v };
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

//! `out = x · Wᵀ` for a weight matrix in any stored type and a batch of f32 activation rows.
//!
//! The weight stays in its stored type: float weights are widened in registers, block-quantized weights meet
//! activations quantized once per call to the matching 8-bit format (integer dot products, as llama.cpp).
//! Work is split over output rows, so each weight row is read once per call whatever the batch size.

use super::dot::Kernels;
use super::packed::{self, PackedActs};
use super::{SyncPtr, ThreadPool};
use crate::formats::Bytes;
use super::ops::Ops;
use crate::quant::{ActFormat, DType, QuantizedActs};

/// A 2-D weight, `rows × cols`, each row `dtype.row_bytes(cols)` bytes: row-major as stored, or, for the
/// legacy block types when the kernels want it, 16 rows interleaved ([`packed`]; same bytes, re-laid).
#[derive(Clone)]
pub struct Matrix {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: Bytes,
    /// `data` is in the 16-row packed layout.
    pub packed: bool,
}

impl Matrix {
    /// A row-major matrix; `data` holds `rows` rows of `dtype.row_bytes(cols)` bytes (checked by the caller).
    pub fn new(dtype: DType, rows: usize, cols: usize, data: Bytes) -> Matrix {
        Matrix { dtype, rows, cols, data, packed: false }
    }

    /// The same matrix in the layout the chosen kernels read fastest: the block types they list in
    /// `packed_types` are packed 16 rows at a time into a buffer of our own (the file's pages are released as
    /// packing proceeds, so resident memory does not double); everything else stays as it is.
    pub fn in_kernel_layout(self) -> Matrix {
        if self.packed || self.rows % packed::GROUP != 0 || !Kernels::get().packed_types.contains(&self.dtype) {
            return self;
        }
        let len = packed::packed_len(self.dtype, self.rows, self.cols);
        // 64-byte aligned start, so that each 512-bit load of a packed block stays in one cache line.
        let mut buf = vec![0u8; len + 63];
        let start = buf.as_ptr().align_offset(64);
        // Slices of rows, releasing the file's pages behind us (peak memory grows by a slice per thread), on
        // every core: packing a 7B model's 9 GB is otherwise most of its load time.
        let rb = self.row_bytes();
        let slice_rows = (1 << 20) / rb / packed::GROUP * packed::GROUP + packed::GROUP;
        let n_slices = self.rows.div_ceil(slice_rows);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(n_slices);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let out = SyncPtr(buf[start..].as_mut_ptr());
        let this = &self;
        let work = || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= n_slices {
                break;
            }
            let r0 = i * slice_rows;
            let rows = slice_rows.min(this.rows - r0);
            let src = this.data.slice(r0 * rb, rows * rb);
            let (at, n) = (packed::packed_len(this.dtype, r0, this.cols), packed::packed_len(this.dtype, rows, this.cols));
            // SAFETY: slice i alone writes bytes at..at + n of `buf` (slices of rows map to disjoint, consecutive
            // ranges of the packed layout), which outlives every caller of `work`.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(at), n) };
            packed::pack(this.dtype, rows, this.cols, src.as_slice(), dst);
            src.release_pages();
        };
        // Most matrices are one slice: no thread to start for those.
        if threads == 1 {
            work();
        } else {
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(work);
                }
            });
        }
        Matrix { data: Bytes::from_vec(buf).slice(start, len), packed: true, ..self }
    }

    pub fn row_bytes(&self) -> usize {
        self.dtype.row_bytes(self.cols).expect("validated at load")
    }
    /// Row `r` as stored (row-major matrices only).
    pub fn row(&self, r: usize) -> &[u8] {
        debug_assert!(!self.packed);
        let rb = self.row_bytes();
        &self.data.as_slice()[r * rb..(r + 1) * rb]
    }
    /// Row `r` widened to f32 (embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        if self.packed {
            packed::dequantize_row(self.dtype, self.cols, self.data.as_slice(), r, out);
        } else {
            crate::quant::dequantize_row(self.dtype, self.row(r), out);
        }
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
    /// One per format, indexed by [`slot`]; only the quantized formats are used.
    slots: [QuantizedActs; 4],
    /// The Q8_0 slot re-laid for packed weights.
    packed: PackedActs,
}

fn slot(f: ActFormat) -> usize {
    match f {
        ActFormat::F32 => 0,
        ActFormat::Q8_0 => 1,
        ActFormat::Q8_1 => 2,
        ActFormat::Q8_K => 3,
    }
}

/// Quantize `x` (`n_rows` × `n`, row-major) into `out`, through the run-time chosen [`Ops`] variant
/// (byte-identical to the scalar references `crate::quant::quantize_row_q8_0` etc.). `n` must be a multiple of
/// the format's block length.
pub fn quantize_acts(format: ActFormat, x: &[f32], n: usize, out: &mut QuantizedActs) {
    debug_assert!(n % format.block_len() == 0 && x.len() % n == 0);
    let n_rows = x.len() / n;
    out.format = format;
    out.n = n;
    out.n_rows = n_rows;
    let rb = format.row_bytes(n);
    out.data.resize(n_rows * rb, 0);
    let ops = Ops::get();
    for (src, dst) in x.chunks_exact(n).zip(out.data.chunks_exact_mut(rb)) {
        match format {
            ActFormat::F32 => {
                for (v, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
                    d.copy_from_slice(&v.to_le_bytes());
                }
            }
            ActFormat::Q8_0 => (ops.quantize_q8_0)(src, dst),
            ActFormat::Q8_1 => (ops.quantize_q8_1)(src, dst),
            ActFormat::Q8_K => (ops.quantize_q8_k)(src, dst),
        }
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
    let mut any_packed = false;
    for (w, out) in jobs.iter() {
        debug_assert_eq!(w.cols, cols);
        debug_assert_eq!(out.len(), n * w.rows);
        let f = w.dtype.act_format();
        if f != ActFormat::F32 && !quantized[slot(f)] {
            quantize_acts(f, x, cols, &mut acts.slots[slot(f)]);
            quantized[slot(f)] = true;
        }
        any_packed |= w.packed && !packed::is_k(w.dtype);
    }
    if any_packed {
        acts.packed.fill_from(&acts.slots[slot(ActFormat::Q8_0)]);
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
        if w.packed {
            step[j] = step[j].next_multiple_of(packed::GROUP);
        }
        first_task[j + 1] = first_task[j] + w.rows.div_ceil(step[j]);
        outs[j] = Some((SyncPtr(o.as_mut_ptr()), &**w));
    }
    let n_jobs = jobs.len();
    pool.run(first_task[n_jobs], &|i| {
        let j = (0..n_jobs).rfind(|&j| first_task[j] <= i).unwrap();
        let (out_ptr, w) = outs[j].unwrap();
        let r0 = (i - first_task[j]) * step[j];
        let r1 = (r0 + step[j]).min(w.rows);
        if w.packed {
            // SAFETY: task i alone writes rows r0..r1 (whole groups) of job j's output, for every t.
            unsafe { packed_rows(k, w, acts, r0, r1, n, out_ptr) };
            return;
        }
        let qa = &acts.slots[slot(w.dtype.act_format())];
        let mut r_done = r0;
        if w.dtype.is_quantized() {
            // Tiles of four rows × four tokens: each weight block unpacked once for four tokens, each activation
            // block loaded once for four rows. Tokens left over (all of them in decode): four rows × one token,
            // so the memory system sees four independent weight streams.
            let t0 = n / 4 * 4;
            while r_done + 4 <= r1 {
                let r = r_done;
                let rows = [w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)];
                for tt in (0..t0).step_by(4) {
                    let v = (k.dot_4x4)(w.dtype, rows, [qa.row(tt), qa.row(tt + 1), qa.row(tt + 2), qa.row(tt + 3)], cols);
                    for (dr, v) in v.into_iter().enumerate() {
                        for (dt, v) in v.into_iter().enumerate() {
                            // SAFETY: as below (rows r..r + 4 lie in r0..r1).
                            unsafe { *out_ptr.get().add((tt + dt) * w.rows + r + dr) = v };
                        }
                    }
                }
                for t in t0..n {
                    let v = (k.dot_4x1)(w.dtype, rows, qa.row(t), cols);
                    for (dr, v) in v.into_iter().enumerate() {
                        // SAFETY: as below (rows r..r + 4 lie in r0..r1).
                        unsafe { *out_ptr.get().add(t * w.rows + r + dr) = v };
                    }
                }
                r_done += 4;
            }
        }
        // Half-float weights in prompt processing: tiles of four rows × four tokens.
        let mut t_done = 0;
        if let (Some(tile), DType::BF16 | DType::F16) = (k.float_tile4, w.dtype) {
            t_done = n / 4 * 4;
            let mut r = r0;
            while r < r1 {
                let rows: [&[u8]; 4] = std::array::from_fn(|d| w.row((r + d).min(r1 - 1)));
                for tt in (0..t_done).step_by(4) {
                    let v = tile(w.dtype, rows, std::array::from_fn(|d| &x[(tt + d) * cols..(tt + d + 1) * cols]));
                    for (dr, v) in v.into_iter().enumerate().take(r1 - r) {
                        for (dt, v) in v.into_iter().enumerate() {
                            // SAFETY: as below (rows r..r + 4 clipped to r1 lie in r0..r1).
                            unsafe { *out_ptr.get().add((tt + dt) * w.rows + r + dr) = v };
                        }
                    }
                }
                r += 4;
            }
        }
        // Rows not covered above (fewer than four left, or float weights), one at a time.
        for r in r_done..r1 {
            let wr = w.row(r);
            // Quantized weights: four tokens at a time, each weight block unpacked once for all four.
            let mut t0 = 0;
            if w.dtype.is_quantized() {
                while t0 + 4 <= n {
                    let v = (k.dot_1x4)(w.dtype, wr, [qa.row(t0), qa.row(t0 + 1), qa.row(t0 + 2), qa.row(t0 + 3)], cols);
                    for (dt, v) in v.into_iter().enumerate() {
                        // SAFETY: as below.
                        unsafe { *out_ptr.get().add((t0 + dt) * w.rows + r) = v };
                    }
                    t0 += 4;
                }
            }
            for t in t0.max(t_done)..n {
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

/// Rows `r0..r1` (whole 16-row groups) of a packed matrix × every activation row: four tokens at a time, so
/// each unpacked block serves four, then the rest one by one.
///
/// # Safety
/// `out` must point to an `n × w.rows` buffer whose rows `r0..r1` no other thread writes meanwhile.
unsafe fn packed_rows(k: &Kernels, w: &Matrix, acts: &ActCache, r0: usize, r1: usize, n: usize, out: SyncPtr<f32>) {
    let (tile1, tile4) = (k.packed_tile1.expect("packed only when the kernels have tiles"), k.packed_tile4.expect("as tile1"));
    // The k-quants read the Q8_K rows as they are; the legacy types their packed Q8_0 rows.
    let row = |t: usize| if packed::is_k(w.dtype) { acts.slots[slot(ActFormat::Q8_K)].row(t) } else { acts.packed.row(t) };
    let nb = w.cols / w.dtype.block_len();
    let gb = nb * packed::block_bytes(w.dtype);
    let data = w.data.as_slice();
    let put = |t: usize, r: usize, v: &[f32; packed::GROUP]| {
        // SAFETY: the caller's contract; r..r + 16 lies in r0..r1.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out.get().add(t * w.rows + r), packed::GROUP) };
    };
    for g in r0 / packed::GROUP..r1 / packed::GROUP {
        let wg = &data[g * gb..(g + 1) * gb];
        let r = g * packed::GROUP;
        let mut t = 0;
        while t + 4 <= n {
            let v = tile4(w.dtype, wg, [row(t), row(t + 1), row(t + 2), row(t + 3)], nb);
            for (dt, v) in v.iter().enumerate() {
                put(t + dt, r, v);
            }
            t += 4;
        }
        for t in t..n {
            put(t, r, &tile1(w.dtype, wg, row(t), nb));
        }
    }
}

/// View little-endian f32 bytes as f32s; copies nothing when aligned (always, for tensors we load).
fn bytes_as_f32(b: &[u8]) -> &[f32] {
    // SAFETY: f32 has no invalid bit patterns; align_to returns only the aligned middle, which we check is all.
    let (pre, mid, post) = unsafe { b.align_to::<f32>() };
    assert!(pre.is_empty() && post.is_empty(), "f32 tensor data is not 4-byte aligned");
    mid
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed path of `matmul` (groups split over tasks, tiles of four tokens, the rest one by one) gives
    /// what the row-major path gives, for every packed type, token count and thread count.
    #[test]
    fn packed_matmul_equals_row_major() {
        let k = Kernels::get();
        for &dtype in k.packed_types {
            let (rows, cols) = (80, 512);
            let raw = packed::tests::random_matrix(dtype, rows, cols, 11);
            let plain = Matrix::new(dtype, rows, cols, Bytes::from_vec(raw));
            let packed_m = plain.clone().in_kernel_layout();
            assert!(packed_m.packed, "{dtype} should pack with {} kernels", k.name);
            for n in [1, 3, 4, 6, 9] {
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
                for threads in [1, 2] {
                    let pool = ThreadPool::new(threads);
                    let (mut a, mut b) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                    matmul(&pool, &plain, &x, &mut a, &mut ActCache::default());
                    matmul(&pool, &packed_m, &x, &mut b, &mut ActCache::default());
                    for (i, (u, v)) in a.iter().zip(&b).enumerate() {
                        // Same integer block sums; only float summation order differs.
                        assert!((u - v).abs() <= 1e-4 * (1.0 + u.abs()), "{dtype} n={n} t={threads} [{i}]: {u} vs {v}");
                    }
                }
            }
        }
    }
}

//! Activation rows quantized for integer dot products, in llama.cpp's block layouts:
//! - `Q8_0`: per 32 values, an f16 scale `d` and 32 `i8` (`x ≈ d·q`), paired with Q4_0, Q5_0, Q8_0 weights;
//! - `Q8_1`: like Q8_0 plus `s = d·Σq` as f16, paired with Q4_1, Q5_1 (their offset `m` multiplies `s`);
//! - `Q8_K`: per 256 values, an f32 scale, 256 `i8` and 16 `i16` sums of 16 values, paired with the k-quants.
//! Rounding follows llama.cpp's reference quantizers so that our integer products equal theirs.

use half::f16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ActFormat {
    F32,
    Q8_0,
    Q8_1,
    Q8_K,
}

impl ActFormat {
    pub fn block_len(self) -> usize {
        match self {
            ActFormat::F32 => 1,
            ActFormat::Q8_0 | ActFormat::Q8_1 => 32,
            ActFormat::Q8_K => 256,
        }
    }
    pub fn block_bytes(self) -> usize {
        match self {
            ActFormat::F32 => 4,
            ActFormat::Q8_0 => 2 + 32,
            ActFormat::Q8_1 => 2 + 2 + 32,
            ActFormat::Q8_K => 4 + 256 + 2 * 16,
        }
    }
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_len() * self.block_bytes()
    }
}

/// `n_rows` activation rows of `n` values each, quantized to `format`. Reused across calls: no allocation
/// once it has grown to the largest batch.
#[derive(Debug, Clone)]
pub struct QuantizedActs {
    pub format: ActFormat,
    pub n: usize,
    pub n_rows: usize,
    pub data: Vec<u8>,
}

impl QuantizedActs {
    pub fn new() -> Self {
        QuantizedActs { format: ActFormat::F32, n: 0, n_rows: 0, data: Vec::new() }
    }
    pub fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.n)
    }
    pub fn row(&self, i: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[i * rb..(i + 1) * rb]
    }
}

impl Default for QuantizedActs {
    fn default() -> Self {
        Self::new()
    }
}

/// Widen one quantized activation row back to f32 (`x = d·q`); for tests and error analysis.
pub fn dequantize_act_row(format: ActFormat, src: &[u8], dst: &mut [f32]) {
    let (bl, bb) = (format.block_len(), format.block_bytes());
    for (b, y) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(bl)) {
        let (d, qs) = match format {
            ActFormat::F32 => (f32::from_le_bytes([b[0], b[1], b[2], b[3]]), &b[..0]),
            ActFormat::Q8_0 => (f16::from_le_bytes([b[0], b[1]]).to_f32(), &b[2..]),
            ActFormat::Q8_1 => (f16::from_le_bytes([b[0], b[1]]).to_f32(), &b[4..]),
            ActFormat::Q8_K => (f32::from_le_bytes([b[0], b[1], b[2], b[3]]), &b[4..260]),
        };
        if format == ActFormat::F32 {
            y[0] = d;
            continue;
        }
        for (v, &q) in y.iter_mut().zip(qs) {
            *v = d * (q as i8) as f32;
        }
    }
}

/// llama.cpp `quantize_row_q8_0_ref`: d = amax/127, q = round(x/d).
pub fn quantize_row_q8_0(x: &[f32], dst: &mut [u8]) {
    for (xb, db) in x.chunks_exact(32).zip(dst.chunks_exact_mut(34)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        db[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (q, v) in db[2..].iter_mut().zip(xb) {
            *q = (v * id).round() as i8 as u8;
        }
    }
}

/// llama.cpp `quantize_row_q8_1_ref`: as Q8_0, plus s = d·Σq.
pub fn quantize_row_q8_1(x: &[f32], dst: &mut [u8]) {
    for (xb, db) in x.chunks_exact(32).zip(dst.chunks_exact_mut(36)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in db[4..].iter_mut().zip(xb) {
            let qi = (v * id).round() as i8;
            sum += qi as i32;
            *q = qi as u8;
        }
        db[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        db[2..4].copy_from_slice(&f16::from_f32(sum as f32 * d).to_le_bytes());
    }
}

/// llama.cpp `quantize_row_q8_K_ref`: the scale comes from the value of largest magnitude *with its sign*
/// (iscale = -127/max), values rounded to nearest and clamped to 127, plus sums of each 16 values.
pub fn quantize_row_q8_k(x: &[f32], dst: &mut [u8]) {
    for (xb, db) in x.chunks_exact(256).zip(dst.chunks_exact_mut(292)) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            db.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let mut qs = [0i8; 256];
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        db[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (d, q) in db[4..260].iter_mut().zip(qs) {
            *d = q as u8;
        }
        for (j, s) in db[260..292].chunks_exact_mut(2).enumerate() {
            let sum: i32 = qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
            s.copy_from_slice(&(sum as i16).to_le_bytes());
        }
    }
}

/// llama.cpp's `nearest_int` uses the float magic-number trick, which rounds
/// half to even. `f32::round_ties_even` is the same for |x| < 2^22.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

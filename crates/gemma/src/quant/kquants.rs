//! The 256-element "k-quants": Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (llama.cpp `ggml-common.h`, `ggml-quants.c`).
//!
//! A super-block of 256 values is split into sub-blocks (16 × 16 values for Q2_K, Q3_K, Q6_K; 8 × 32 for
//! Q4_K, Q5_K), each with a small integer scale (and, for Q2_K/Q4_K/Q5_K, an integer min) that multiply the
//! super-block's f16 `d` (and `dmin`). Layouts, little-endian, no padding:
//! - `Q2_K { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin }`: scale = low nibble, min = high nibble;
//!   `x = d·sc·q - dmin·m`, q 2 bits;
//! - `Q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }`: 16 signed 6-bit scales (stored + 32);
//!   `x = d·(sc - 32)·(q - 4·!hbit)`, q 2 low bits + 1 high bit;
//! - `Q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }`: 8 scales and 8 mins of 6 bits packed in 12 bytes;
//!   `x = d·sc·q - dmin·m`, q 4 bits;
//! - `Q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }`: as Q4_K with a 5th bit from `qh`;
//! - `Q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }`: `x = d·sc·(q - 32)`, q 4 low + 2 high bits.
//!
//! Every type is first unpacked into 256 small integers `q` plus per-sub-block integer scales and mins; the
//! dequantizer and the dot product share that one decoding. The dot product with a Q8_K activation block
//! (`f32 d`, 256 `i8`, 16 `i16` sums of 16) follows llama.cpp's `ggml_vec_dot_*_q8_K`: an exact integer sum
//! `Σ sc·q·y` per super-block, the min terms taken through the activation's precomputed 16-value sums
//! (`Σ m·bsum`), then `d·d_y·isum - dmin·d_y·msum` in f32. Only the float summation order differs from
//! llama.cpp's (it keeps 8 partial float sums), so results agree to float rounding.

use super::{f16_to_f32, DType};

const QK: usize = 256;
/// Bytes of a Q8_K activation block: f32 d, 256 i8, 16 i16 sums.
const Q8K_BYTES: usize = 4 + QK + 32;

/// One decoded super-block. `q` are the integer quants with any fixed offset already applied (Q3_K's -4,
/// Q6_K's -32), so that `x[i] = d·sc[i / sub]·q[i] - dmin·m[i / sub]`.
struct SuperBlock {
    d: f32,
    dmin: f32,
    /// Elements per sub-block: 16 or 32.
    sub: usize,
    sc: [i32; 16],
    m: [i32; 16],
    q: [i32; QK],
}

impl SuperBlock {
    fn new(d: f32, dmin: f32, sub: usize) -> Self {
        SuperBlock { d, dmin, sub, sc: [0; 16], m: [0; 16], q: [0; QK] }
    }
}

fn half(b: &[u8], i: usize) -> f32 {
    f16_to_f32([b[i], b[i + 1]])
}

/// Q2_K: `qs` byte `32·k + l` holds, in bit pairs 0,2,4,6, elements `128·k + 32·j + l` for j = 0..4.
fn unpack_q2_k(b: &[u8]) -> SuperBlock {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let mut s = SuperBlock::new(half(b, 80), half(b, 82), 16);
    for (j, &v) in scales.iter().enumerate() {
        s.sc[j] = (v & 0x0F) as i32;
        s.m[j] = (v >> 4) as i32;
    }
    two_bit_planes(qs, &mut s.q);
    s
}

/// The 2-bit layout shared by Q2_K and Q3_K's low bits: 128 values per 32 bytes, four bit planes.
fn two_bit_planes(qs: &[u8], q: &mut [i32; QK]) {
    for k in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                q[128 * k + 32 * j + l] = ((qs[32 * k + l] >> (2 * j)) & 3) as i32;
            }
        }
    }
}

/// Q3_K: low 2 bits as Q2_K; bit `j` of `hmask[l]` is the high bit of element `32·j + l`, and a *clear* bit
/// subtracts 4. Scale `j` is 6 bits: low 4 from `scales[j]` (j < 8) or `scales[j - 8] >> 4`, high 2 from
/// bits `2·(j / 4)` of `scales[8 + j % 4]`, stored with an offset of 32.
fn unpack_q3_k(b: &[u8]) -> SuperBlock {
    let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
    let mut s = SuperBlock::new(half(b, 108), 0.0, 16);
    for j in 0..16 {
        let low = if j < 8 { scales[j] & 0x0F } else { scales[j - 8] >> 4 };
        let high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
        s.sc[j] = (low | (high << 4)) as i32 - 32;
    }
    two_bit_planes(qs, &mut s.q);
    for (i, v) in s.q.iter_mut().enumerate() {
        if hmask[i % 32] & (1 << (i / 32)) == 0 {
            *v -= 4;
        }
    }
    s
}

/// The 6-bit scales and mins of Q4_K/Q5_K (llama.cpp `get_scale_min_k4`): for j < 4, `scales[j] & 63` and
/// `scales[j + 4] & 63`; for j ≥ 4, the low nibble (scale) or high nibble (min) of `scales[j + 4]` with the top
/// two bits taken from bits 6-7 of `scales[j - 4]` (scale) or `scales[j]` (min).
fn scale_min_k4(scales: &[u8], s: &mut SuperBlock) {
    for j in 0..8 {
        let (sc, m) = if j < 4 {
            (scales[j] & 63, scales[j + 4] & 63)
        } else {
            ((scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))
        };
        s.sc[j] = sc as i32;
        s.m[j] = m as i32;
    }
}

/// Q4_K: `qs` byte `32·k + l` holds element `64·k + l` (low nibble) and `64·k + 32 + l` (high nibble).
fn unpack_q4_k(b: &[u8]) -> SuperBlock {
    let mut s = SuperBlock::new(half(b, 0), half(b, 2), 32);
    scale_min_k4(&b[4..16], &mut s);
    nibble_pairs(&b[16..144], &mut s.q);
    s
}

fn nibble_pairs(qs: &[u8], q: &mut [i32; QK]) {
    for k in 0..4 {
        for l in 0..32 {
            let v = qs[32 * k + l];
            q[64 * k + l] = (v & 0x0F) as i32;
            q[64 * k + 32 + l] = (v >> 4) as i32;
        }
    }
}

/// Q5_K: as Q4_K, plus bit `j` of `qh[l]` adds 16 to element `32·j + l`.
fn unpack_q5_k(b: &[u8]) -> SuperBlock {
    let mut s = SuperBlock::new(half(b, 0), half(b, 2), 32);
    scale_min_k4(&b[4..16], &mut s);
    let qh = &b[16..48];
    nibble_pairs(&b[48..176], &mut s.q);
    for (i, v) in s.q.iter_mut().enumerate() {
        if qh[i % 32] & (1 << (i / 32)) != 0 {
            *v += 16;
        }
    }
    s
}

/// Q6_K: per half (128 values, 64 `ql` bytes, 32 `qh` bytes), element `32·j + l` takes its low nibble from
/// `ql[l + 32·(j % 2)]` (low nibble for j < 2, high for j ≥ 2) and its top two bits from bits `2·j` of `qh[l]`;
/// values are stored + 32. Scales are signed bytes, one per 16 values.
fn unpack_q6_k(b: &[u8]) -> SuperBlock {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let mut s = SuperBlock::new(half(b, 208), 0.0, 16);
    for (j, &v) in scales.iter().enumerate() {
        s.sc[j] = v as i8 as i32;
    }
    for h in 0..2 {
        let (ql, qh) = (&ql[64 * h..64 * h + 64], &qh[32 * h..32 * h + 32]);
        for j in 0..4 {
            for l in 0..32 {
                let lo = ql[l + 32 * (j % 2)];
                let lo = if j < 2 { lo & 0x0F } else { lo >> 4 };
                let hi = (qh[l] >> (2 * j)) & 3;
                s.q[128 * h + 32 * j + l] = (lo | (hi << 4)) as i32 - 32;
            }
        }
    }
    s
}

fn unpack(dtype: DType, b: &[u8]) -> SuperBlock {
    match dtype {
        DType::Q2_K => unpack_q2_k(b),
        DType::Q3_K => unpack_q3_k(b),
        DType::Q4_K => unpack_q4_k(b),
        DType::Q5_K => unpack_q5_k(b),
        DType::Q6_K => unpack_q6_k(b),
        _ => unreachable!("{dtype} is not a k-quant"),
    }
}

pub(super) fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(dtype.block_bytes()).zip(dst.chunks_exact_mut(QK)) {
        let s = unpack(dtype, b);
        for (i, v) in y.iter_mut().enumerate() {
            let j = i / s.sub;
            // llama.cpp forms the sub-block's float scale `d·sc` (and `dmin·m`) first, then `dl·q - ml`; the
            // same operations in the same order give the same bits.
            let dl = s.d * s.sc[j] as f32;
            let ml = s.dmin * s.m[j] as f32;
            *v = if has_min(dtype) { dl * s.q[i] as f32 - ml } else { dl * s.q[i] as f32 };
        }
    }
}

fn has_min(dtype: DType) -> bool {
    matches!(dtype, DType::Q2_K | DType::Q4_K | DType::Q5_K)
}

/// `a` is a row of Q8_K activation blocks.
pub(super) fn vec_dot(dtype: DType, w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sumf = 0f32;
    for (b, y) in w.chunks_exact(dtype.block_bytes()).zip(a.chunks_exact(Q8K_BYTES)).take(n / QK) {
        let s = unpack(dtype, b);
        let dy = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        let yq = &y[4..4 + QK];
        // Σ_i sc(i)·q(i)·y(i): exact in i32 (|sc·q·y| ≤ 127·63·64 per term, 256 terms).
        let mut isum = 0i32;
        for (j, (qc, yc)) in s.q.chunks_exact(s.sub).zip(yq.chunks_exact(s.sub)).enumerate() {
            let dot: i32 = qc.iter().zip(yc).map(|(&q, &v)| q * (v as i8) as i32).sum();
            isum += s.sc[j] * dot;
        }
        sumf += (s.d * dy) * isum as f32;
        if has_min(dtype) {
            // Σ_i m(i)·y(i) through the activation's sums of 16 values (one or two per sub-block).
            let per = s.sub / 16;
            let msum: i32 = (0..16).map(|k| s.m[k / per] * i16::from_le_bytes([y[260 + 2 * k], y[261 + 2 * k]]) as i32).sum();
            sumf -= (s.dmin * dy) * msum as f32;
        }
    }
    sumf
}

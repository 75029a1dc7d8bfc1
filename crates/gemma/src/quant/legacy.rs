//! The 32-element "legacy" block quants: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (llama.cpp `ggml-common.h`).
//!
//! Block layouts (little-endian, no padding):
//! - `Q4_0 { f16 d; u8 qs[16] }`: `x = d·(q - 8)`, q a nibble;
//! - `Q4_1 { f16 d; f16 m; u8 qs[16] }`: `x = d·q + m`;
//! - `Q5_0 { f16 d; u8 qh[4]; u8 qs[16] }`: `x = d·(q - 16)`, q's 5th bit from `qh`;
//! - `Q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16] }`: `x = d·q + m`;
//! - `Q8_0 { f16 d; i8 qs[32] }`: `x = d·q`.
//!
//! In the 4/5-bit types byte `j` of `qs` holds element `j` in its low nibble and element `j + 16` in its high
//! nibble; bit `j` of the little-endian u32 `qh` is the 5th bit of element `j`.
//!
//! The dot products follow llama.cpp's `ggml_vec_dot_{q4_0,q5_0,q8_0}_q8_0` and `..._{q4_1,q5_1}_q8_1`: an exact
//! integer sum per block, then one float multiply by both scales (plus `m·s` for the `_1` types, where the
//! activation block's `s = d·Σq` was precomputed by the quantizer).

use super::{f16_to_f32, DType};
use half::f16;

/// The 32 integer quants of one block, and the block's float scale and offset (`x = d·q + m`).
struct Block {
    d: f32,
    m: f32,
    q: [i32; 32],
}

/// Unpack the low/high nibbles of `qs` (16 bytes) into elements 0..16 and 16..32.
fn nibbles(qs: &[u8], q: &mut [i32; 32]) {
    for (j, &b) in qs[..16].iter().enumerate() {
        q[j] = (b & 0x0F) as i32;
        q[j + 16] = (b >> 4) as i32;
    }
}

/// Add the 5th bit of each element from the little-endian u32 `qh`.
fn fifth_bits(qh: &[u8], q: &mut [i32; 32]) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> j) & 1) as i32) << 4;
    }
}

/// Decode one block of `dtype` (`b` is exactly one block).
fn unpack(dtype: DType, b: &[u8]) -> Block {
    let mut q = [0i32; 32];
    let half = |i: usize| f16_to_f32([b[i], b[i + 1]]);
    match dtype {
        DType::Q4_0 => {
            nibbles(&b[2..18], &mut q);
            q.iter_mut().for_each(|v| *v -= 8);
            Block { d: half(0), m: 0.0, q }
        }
        DType::Q4_1 => {
            nibbles(&b[4..20], &mut q);
            Block { d: half(0), m: half(2), q }
        }
        DType::Q5_0 => {
            nibbles(&b[6..22], &mut q);
            fifth_bits(&b[2..6], &mut q);
            q.iter_mut().for_each(|v| *v -= 16);
            Block { d: half(0), m: 0.0, q }
        }
        DType::Q5_1 => {
            nibbles(&b[8..24], &mut q);
            fifth_bits(&b[4..8], &mut q);
            Block { d: half(0), m: half(2), q }
        }
        DType::Q8_0 => {
            for (v, &x) in q.iter_mut().zip(&b[2..34]) {
                *v = x as i8 as i32;
            }
            Block { d: half(0), m: 0.0, q }
        }
        _ => unreachable!("{dtype} is not a legacy block quant"),
    }
}

fn has_offset(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_1 | DType::Q5_1)
}

pub(super) fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    let bb = dtype.block_bytes();
    for (b, y) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(32)) {
        let blk = unpack(dtype, b);
        for (v, &q) in y.iter_mut().zip(&blk.q) {
            // llama.cpp computes `q·d` (+ m): the same single rounding (+ one for the add) here.
            *v = if has_offset(dtype) { q as f32 * blk.d + blk.m } else { q as f32 * blk.d };
        }
    }
}

/// `a` is a row of Q8_0 activation blocks (`d`, 32 `i8`), or Q8_1 (`d`, `s`, 32 `i8`) for the `_1` types.
pub(super) fn vec_dot(dtype: DType, w: &[u8], a: &[u8], n: usize) -> f32 {
    let bb = dtype.block_bytes();
    let ab = if has_offset(dtype) { 36 } else { 34 };
    let qa = if has_offset(dtype) { 4 } else { 2 };
    let mut sumf = 0f32;
    for (b, x) in w.chunks_exact(bb).zip(a.chunks_exact(ab)).take(n / 32) {
        let blk = unpack(dtype, b);
        let sumi: i32 = blk.q.iter().zip(&x[qa..qa + 32]).map(|(&q, &y)| q * (y as i8) as i32).sum();
        let dy = f16_to_f32([x[0], x[1]]);
        if has_offset(dtype) {
            // Σ (d·q + m)·(dy·y) = d·dy·Σq·y + m·(dy·Σy), and the quantizer stored s = dy·Σy.
            let s = f16_to_f32([x[2], x[3]]);
            sumf += (blk.d * dy) * sumi as f32 + blk.m * s;
        } else {
            sumf += sumi as f32 * (blk.d * dy);
        }
    }
    sumf
}

/// Round-to-nearest reference quantizers, as llama.cpp's `quantize_row_*_ref` (same scale choice and rounding,
/// so the bytes match theirs).
pub(super) fn quantize_row(dtype: DType, x: &[f32], dst: &mut [u8]) {
    let bb = dtype.block_bytes();
    for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bb)) {
        match dtype {
            DType::Q8_0 => super::act::quantize_row_q8_0(xb, b),
            DType::Q4_0 => quantize_symmetric(xb, b, 4),
            DType::Q5_0 => quantize_symmetric(xb, b, 5),
            DType::Q4_1 => quantize_offset(xb, b, 4),
            DType::Q5_1 => quantize_offset(xb, b, 5),
            _ => unreachable!("{dtype} is not a legacy block quant"),
        }
    }
}

/// Q4_0 / Q5_0: the value of largest magnitude, with its sign, maps to -2^(bits-1) (d = max / -8 or -16);
/// q = trunc(x/d + 2^(bits-1) + 0.5) clamped to the top code.
fn quantize_symmetric(x: &[f32], b: &mut [u8], bits: u32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let half_range = (1u32 << (bits - 1)) as f32;
    let d = max / -half_range;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let top = (1u8 << bits) - 1;
    let q: Vec<u8> = x.iter().map(|&v| ((v * id + (half_range + 0.5)) as i8).clamp(0, top as i8) as u8).collect();
    b[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    pack(&q, (bits == 5).then_some(2), b);
}

/// Q4_1 / Q5_1: d = (max - min) / (2^bits - 1), m = min, q = trunc((x - min)/d + 0.5) clamped to the top code.
fn quantize_offset(x: &[f32], b: &mut [u8], bits: u32) {
    let min = x.iter().copied().fold(f32::MAX, f32::min);
    let max = x.iter().copied().fold(f32::MIN, f32::max);
    let top = (1u8 << bits) - 1;
    let d = (max - min) / top as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q: Vec<u8> = x.iter().map(|&v| (((v - min) * id + 0.5) as i8).clamp(0, top as i8) as u8).collect();
    b[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    b[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
    pack(&q, (bits == 5).then_some(4), b);
}

/// Store 32 codes as nibbles in the block's last 16 bytes (element j low, j + 16 high) and, for 5-bit codes,
/// their 5th bits as the little-endian u32 at byte `qh_at`.
fn pack(q: &[u8], qh_at: Option<usize>, b: &mut [u8]) {
    let qs_at = b.len() - 16;
    for j in 0..16 {
        b[qs_at + j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
    }
    if let Some(at) = qh_at {
        let bits = q.iter().enumerate().fold(0u32, |acc, (j, &v)| acc | (((v as u32 >> 4) & 1) << j));
        b[at..at + 4].copy_from_slice(&bits.to_le_bytes());
    }
}

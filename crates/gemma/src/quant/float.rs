//! f32, f16 and bf16 rows: the activations stay f32 and each weight is widened as it is read.

use super::{bf16_to_f32, f16_to_f32, DType};

pub(super) fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        DType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16_to_f32([s[0], s[1]]);
            }
        }
        DType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16_to_f32([s[0], s[1]]);
            }
        }
        _ => unreachable!("{dtype} is not a float type"),
    }
}

/// Round f32 values to the float type `dtype`, little-endian: f16 round-to-nearest-even (as F16C and `half`
/// do), bf16 as llama.cpp's `ggml_compute_fp32_to_bf16` (round to nearest even, NaN kept quiet).
pub(super) fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&s.to_le_bytes());
            }
        }
        DType::F16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&half::f16::from_f32(*s).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f32_to_bf16(*s).to_le_bytes());
            }
        }
        _ => unreachable!("{dtype} is not a float type"),
    }
}

fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        // NaN: keep the sign and top mantissa bits, force the quiet bit.
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

/// `a` holds `n` little-endian f32 activations.
pub(super) fn vec_dot(dtype: DType, w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut row = vec![0f32; n];
    dequantize_row(dtype, w, &mut row);
    let mut acc = 0f64;
    for (x, s) in row.iter().zip(a.chunks_exact(4)) {
        acc += *x as f64 * f32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f64;
    }
    acc as f32
}

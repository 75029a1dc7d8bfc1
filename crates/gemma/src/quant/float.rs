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

//! The 32-element "legacy" block quants: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (llama.cpp `ggml-common.h`).

use super::{f16_to_f32, DType};

pub(super) fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    let bb = dtype.block_bytes();
    for (b, y) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(32)) {
        match dtype {
            DType::Q8_0 => {
                // block_q8_0 { f16 d; i8 qs[32] }
                let d = f16_to_f32([b[0], b[1]]);
                for (v, &q) in y.iter_mut().zip(&b[2..34]) {
                    *v = d * (q as i8) as f32;
                }
            }
            _ => panic!("{dtype} is not implemented yet"),
        }
    }
}

/// `a` is a row of Q8_0 (or Q8_1 for the `_1` types) activation blocks.
pub(super) fn vec_dot(dtype: DType, w: &[u8], a: &[u8], n: usize) -> f32 {
    let nb = n / 32;
    let mut acc = 0f32;
    for i in 0..nb {
        match dtype {
            DType::Q8_0 => {
                let b = &w[i * 34..(i + 1) * 34];
                let x = &a[i * 34..(i + 1) * 34];
                let mut sumi = 0i32;
                for j in 0..32 {
                    sumi += (b[2 + j] as i8) as i32 * (x[2 + j] as i8) as i32;
                }
                acc += sumi as f32 * (f16_to_f32([b[0], b[1]]) * f16_to_f32([x[0], x[1]]));
            }
            _ => panic!("{dtype} is not implemented yet"),
        }
    }
    acc
}

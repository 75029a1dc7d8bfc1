//! Inner products, the heart of every matrix product, in one table of function pointers per instruction set.
//! The table is chosen once, at run time, from the CPU's features.

use std::sync::OnceLock;

use crate::quant::{self, DType};

/// The inner products one instruction set provides.
pub struct Kernels {
    /// "scalar", "avx2", "avx512", ...: printed by `--verbose` and `gemma bench`.
    pub name: &'static str,
    /// f32 weights × f32 activations.
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// bf16 weights (little-endian u16 bits) × f32 activations.
    pub dot_bf16: fn(&[u8], &[f32]) -> f32,
    /// f16 weights × f32 activations.
    pub dot_f16: fn(&[u8], &[f32]) -> f32,
    /// A block-quantized weight row × a row of activations in `dtype.act_format()`; `n` elements.
    pub dot_q: fn(DType, &[u8], &[u8], usize) -> f32,
}

static SCALAR: Kernels = Kernels { name: "scalar", dot_f32: scalar::dot_f32, dot_bf16: scalar::dot_bf16, dot_f16: scalar::dot_f16, dot_q: quant::vec_dot };

impl Kernels {
    /// The best variant for this CPU (overridable with `GEMMA_KERNELS=scalar` for comparisons).
    pub fn get() -> &'static Kernels {
        static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
        CHOSEN.get_or_init(|| {
            if std::env::var("GEMMA_KERNELS").is_ok_and(|v| v == "scalar") {
                return &SCALAR;
            }
            Self::available().into_iter().last().unwrap_or(&SCALAR)
        })
    }

    /// Every variant this CPU can run, the scalar reference first.
    pub fn available() -> Vec<&'static Kernels> {
        vec![&SCALAR]
    }

    pub fn scalar() -> &'static Kernels {
        &SCALAR
    }
}

pub mod scalar {
    //! Plain Rust references: the specification the SIMD variants are tested against.
    use crate::quant::{bf16_to_f32, f16_to_f32};

    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        // Eight independent partial sums: as accurate as a sequential sum and lets the compiler vectorize.
        let mut acc = [0f32; 8];
        let (ca, ra) = a.split_at(a.len() / 8 * 8);
        let (cb, rb) = b.split_at(ca.len());
        for (x, y) in ca.chunks_exact(8).zip(cb.chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (x, y) in ra.iter().zip(rb) {
            s += x * y;
        }
        s
    }

    pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let n8 = x.len() / 8 * 8;
        for (wc, xc) in w[..2 * n8].chunks_exact(16).zip(x[..n8].chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += bf16_to_f32([wc[2 * i], wc[2 * i + 1]]) * xc[i];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for i in n8..x.len() {
            s += bf16_to_f32([w[2 * i], w[2 * i + 1]]) * x[i];
        }
        s
    }

    pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        let mut s = 0f32;
        for (wc, xv) in w.chunks_exact(2).zip(x) {
            s += f16_to_f32([wc[0], wc[1]]) * xv;
        }
        s
    }
}

//! x86-64 variants of the float inner products (f32, bf16 and f16 weights × f32 activations): AVX2 + FMA
//! (+ F16C), and AVX-512 (F, BW, VL, VNNI). Block-quantized weights are in `x86_quant.rs` and `x86_packed.rs`;
//! `detected()` here decides for all three.
//!
//! Each public function here is a safe wrapper around a `#[target_feature]` function; the wrappers are only
//! reachable through the tables in [`super::dot`], which are handed out only after run-time detection of the
//! features, and that is what makes the inner `unsafe` calls sound.

use std::arch::x86_64::*;

use crate::quant::{self, DType};

// ---------------------------------------------------------------- AVX2 + FMA

pub mod avx2 {
    use super::*;

    pub fn detected() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }

    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only reachable after `detected()` (see the module comment); slices bound every load.
        unsafe { dot_f32_impl(a, b) }
    }
    pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { dot_bf16_impl(w, x) }
    }
    pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { dot_f16_impl(w, x) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * k)), _mm256_loadu_ps(pb.add(i + 8 * k)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut r = hsum(s);
        while i < n {
            r += a[i] * b[i];
            i += 1;
        }
        r
    }

    /// bf16 → f32 is a 16-bit shift: widen 8 u16 to u32 lanes and shift left.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_bf16x8(p: *const u8) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_bf16_impl(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len().min(w.len() / 2);
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let j = i + 8 * k;
                *acc = _mm256_fmadd_ps(load_bf16x8(pw.add(2 * j)), _mm256_loadu_ps(px.add(j)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(load_bf16x8(pw.add(2 * i)), _mm256_loadu_ps(px.add(i)), acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut r = hsum(s);
        while i < n {
            r += quant::bf16_to_f32([w[2 * i], w[2 * i + 1]]) * x[i];
            i += 1;
        }
        r
    }

    /// Four bf16 or f16 weight rows × four f32 activation rows, `[row][token]` (as the AVX-512 variant).
    pub fn float_tile4(dtype: DType, w: [&[u8]; 4], x: [&[f32]; 4]) -> [[f32; 4]; 4] {
        let n = x[0].len();
        assert!(w.iter().all(|w| w.len() >= 2 * n) && x.iter().all(|x| x.len() >= n), "float_tile4: short slices");
        // SAFETY: only reachable after `detected()` (see the module comment); the assert bounds every load.
        let mut out = unsafe {
            match dtype {
                DType::BF16 => float_tile4_impl::<false>(w, x, n),
                DType::F16 => float_tile4_impl::<true>(w, x, n),
                _ => panic!("float_tile4 takes bf16 or f16 weights, not {dtype}"),
            }
        };
        // The tail of fewer than 8 values, in scalar code.
        for i in n / 8 * 8..n {
            for (r, w) in w.iter().enumerate() {
                let h = [w[2 * i], w[2 * i + 1]];
                let wv = if dtype == DType::F16 { quant::f16_to_f32(h) } else { quant::bf16_to_f32(h) };
                for (t, x) in x.iter().enumerate() {
                    out[r][t] += wv * x[i];
                }
            }
        }
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn float_tile4_impl<const F16: bool>(w: [&[u8]; 4], x: [&[f32]; 4], n: usize) -> [[f32; 4]; 4] {
        let mut acc = [[_mm256_setzero_ps(); 4]; 4];
        let mut i = 0;
        while i + 8 <= n {
            let wv: [__m256; 4] = std::array::from_fn(|r| {
                let p = w[r].as_ptr().add(2 * i);
                if F16 {
                    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
                } else {
                    load_bf16x8(p)
                }
            });
            for t in 0..4 {
                let xv = _mm256_loadu_ps(x[t].as_ptr().add(i));
                for r in 0..4 {
                    acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
            i += 8;
        }
        acc.map(|row| row.map(|v| hsum(v)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_f16_impl(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len().min(w.len() / 2);
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut i = 0;
        while i + 16 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let j = i + 8 * k;
                let h = _mm256_cvtph_ps(_mm_loadu_si128(pw.add(2 * j) as *const __m128i));
                *acc = _mm256_fmadd_ps(h, _mm256_loadu_ps(px.add(j)), *acc);
            }
            i += 16;
        }
        let mut r = hsum(_mm256_add_ps(acc[0], acc[1]));
        while i < n {
            r += quant::f16_to_f32([w[2 * i], w[2 * i + 1]]) * x[i];
            i += 1;
        }
        r
    }
}

// ---------------------------------------------------------------- AVX-512 (F, BW, VL, VNNI)

pub mod avx512 {
    use super::*;

    pub fn detected() -> bool {
        super::avx2::detected()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    }

    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only reachable after `detected()` (see the module comment).
        unsafe { dot_f32_impl(a, b) }
    }
    pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { dot_bf16_impl(w, x) }
    }

    /// Four bf16 or f16 weight rows × four f32 activation rows (prompt processing): each 16-value weight
    /// slice is widened once for four tokens, each activation slice loaded once for four rows. `[row][token]`.
    pub fn float_tile4(dtype: DType, w: [&[u8]; 4], x: [&[f32]; 4]) -> [[f32; 4]; 4] {
        let n = x[0].len();
        assert!(w.iter().all(|w| w.len() >= 2 * n) && x.iter().all(|x| x.len() >= n), "float_tile4: short slices");
        // SAFETY: only reachable after `detected()` (see the module comment); the assert bounds every load.
        unsafe {
            match dtype {
                DType::BF16 => float_tile4_impl::<false>(w, x, n),
                DType::F16 => float_tile4_impl::<true>(w, x, n),
                _ => panic!("float_tile4 takes bf16 or f16 weights, not {dtype}"),
            }
        }
    }

    /// 16 weights from `p` (bf16 or f16) as f32; the lanes past `m` read nothing and are zero.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn load_half16<const F16: bool>(p: *const u8, m: __mmask16) -> __m512 {
        let h = _mm256_maskz_loadu_epi16(m, p as *const i16);
        if F16 {
            _mm512_cvtph_ps(h)
        } else {
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn float_tile4_impl<const F16: bool>(w: [&[u8]; 4], x: [&[f32]; 4], n: usize) -> [[f32; 4]; 4] {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let mut i = 0;
        while i < n {
            // Whole slices of 16, then the tail under a mask.
            let m: __mmask16 = if i + 16 <= n { 0xFFFF } else { ((1u32 << (n - i)) - 1) as u16 };
            let wv: [__m512; 4] = std::array::from_fn(|r| load_half16::<F16>(w[r].as_ptr().add(2 * i), m));
            for t in 0..4 {
                let xv = _mm512_maskz_loadu_ps(m, x[t].as_ptr().add(i));
                for r in 0..4 {
                    acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
            i += 16;
        }
        acc.map(|row| row.map(|v| _mm512_reduce_add_ps(v)))
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i + 16 * k)), _mm512_loadu_ps(pb.add(i + 16 * k)), *acc);
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc[0]);
            i += 16;
        }
        if i < n {
            // The tail under a mask: no scalar loop.
            let m: __mmask16 = (1u32 << (n - i)) as u16 - 1;
            acc[1] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, pa.add(i)), _mm512_maskz_loadu_ps(m, pb.add(i)), acc[1]);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])))
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn load_bf16x16(p: *const u8) -> __m512 {
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn dot_bf16_impl(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len().min(w.len() / 2);
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let j = i + 16 * k;
                *acc = _mm512_fmadd_ps(load_bf16x16(pw.add(2 * j)), _mm512_loadu_ps(px.add(j)), *acc);
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_fmadd_ps(load_bf16x16(pw.add(2 * i)), _mm512_loadu_ps(px.add(i)), acc[0]);
            i += 16;
        }
        let mut r = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
        while i < n {
            r += quant::bf16_to_f32([w[2 * i], w[2 * i + 1]]) * x[i];
            i += 1;
        }
        r
    }
}

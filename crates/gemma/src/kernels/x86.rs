//! x86-64 variants of the inner products: AVX2 + FMA (+ F16C), and AVX-512 (F, BW, VL, VNNI).
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
    pub fn dot_q(dtype: DType, w: &[u8], a: &[u8], n: usize) -> f32 {
        match dtype {
            // SAFETY: as above; the lengths are checked inside.
            DType::Q8_0 => unsafe { dot_q8_0_impl(w, a, n) },
            _ => quant::vec_dot(dtype, w, a, n),
        }
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

    /// Σ over 32 i8 pairs with `maddubs`: it wants unsigned × signed, so multiply |w| by y·sign(w).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_i8x32(w: __m256i, y: __m256i) -> __m256i {
        let ax = _mm256_sign_epi8(w, w);
        let sy = _mm256_sign_epi8(y, w);
        let p16 = _mm256_maddubs_epi16(ax, sy);
        _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_q8_0_impl(w: &[u8], a: &[u8], n: usize) -> f32 {
        let nb = n / 32;
        assert!(w.len() >= nb * 34 && a.len() >= nb * 34);
        let mut acc = _mm256_setzero_ps();
        for i in 0..nb {
            let (bw, ba) = (w.as_ptr().add(i * 34), a.as_ptr().add(i * 34));
            let d = quant::f16_to_f32([*bw, *bw.add(1)]) * quant::f16_to_f32([*ba, *ba.add(1)]);
            let s = dot_i8x32(_mm256_loadu_si256(bw.add(2) as *const __m256i), _mm256_loadu_si256(ba.add(2) as *const __m256i));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
        }
        hsum(acc)
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
    pub fn dot_q(dtype: DType, w: &[u8], a: &[u8], n: usize) -> f32 {
        match dtype {
            // SAFETY: as above; lengths are checked inside.
            DType::Q8_0 => unsafe { dot_q8_0_impl(w, a, n) },
            _ => super::avx2::dot_q(dtype, w, a, n),
        }
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

    /// 32 i8 × i8 products summed in 8 i32 lanes with VNNI `vpdpbusd` (unsigned × signed): |w| · y·sign(w).
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    unsafe fn dot_i8x32(w: __m256i, y: __m256i) -> __m256i {
        let ax = _mm256_sign_epi8(w, w);
        let sy = _mm256_sign_epi8(y, w);
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn dot_q8_0_impl(w: &[u8], a: &[u8], n: usize) -> f32 {
        let nb = n / 32;
        assert!(w.len() >= nb * 34 && a.len() >= nb * 34);
        let mut acc = [_mm256_setzero_ps(); 2];
        for i in 0..nb {
            let (bw, ba) = (w.as_ptr().add(i * 34), a.as_ptr().add(i * 34));
            let d = quant::f16_to_f32([*bw, *bw.add(1)]) * quant::f16_to_f32([*ba, *ba.add(1)]);
            let s = dot_i8x32(_mm256_loadu_si256(bw.add(2) as *const __m256i), _mm256_loadu_si256(ba.add(2) as *const __m256i));
            acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[i & 1]);
        }
        let s = _mm256_add_ps(acc[0], acc[1]);
        let lo = _mm256_castps256_ps128(s);
        let hi = _mm256_extractf128_ps(s, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

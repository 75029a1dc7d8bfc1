//! x86-64 SIMD dot products of block-quantized weight rows with 8-bit activation rows, for the types Gemma
//! GGUF files use most: Q4_0, Q5_0, Q8_0 (× Q8_0 activations) and Q4_K, Q6_K (× Q8_K activations).
//!
//! One algorithm per type, written once in a macro and instantiated twice: with AVX2 `maddubs` and with
//! AVX-512 VNNI `vpdpbusd` (256-bit, AVX512VL) for the unsigned × signed byte products. The integer sums are
//! exact, so results equal the scalar reference in `crate::quant` up to float summation order.
//! Each module's safe entry points (`dot_q`, `dot_1x4`, `dot_4x1`, `dot_4x4`: weight rows × activation rows)
//! are reachable only through the tables of [`super::dot`], which hand them out after detecting the features
//! (`x86::avx2::detected`, `x86::avx512::detected`); that is what makes their inner `unsafe` calls sound.

use std::arch::x86_64::*;

use crate::quant::{self, DType};

/// The 6-bit scales and mins of Q4_K/Q5_K, packed in 12 bytes.
#[inline]
fn scale_min_k4(s: &[u8]) -> ([i32; 8], [i32; 8]) {
    let (mut sc, mut m) = ([0i32; 8], [0i32; 8]);
    for j in 0..8 {
        let (a, b) = if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
        };
        sc[j] = a as i32;
        m[j] = b as i32;
    }
    (sc, m)
}

macro_rules! quant_kernels {
    ($name:ident, $features:literal, |$u:ident, $s:ident| $dot_u8_i8:expr) => {
        pub mod $name {
            use super::*;

            /// One weight row × one activation row.
            pub fn dot_q(dtype: DType, w: &[u8], a: &[u8], n: usize) -> f32 {
                // SAFETY: only reachable after detection (see the module comment); each kernel asserts its bounds.
                match unsafe { dot_n(dtype, w, [a], n) } {
                    Some([v]) => v,
                    None => quant::vec_dot(dtype, w, a, n),
                }
            }
            /// One weight row × four activation rows.
            pub fn dot_1x4(dtype: DType, w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
                // SAFETY: as above.
                unsafe { dot_n(dtype, w, a, n) }.unwrap_or_else(|| a.map(|a| quant::vec_dot(dtype, w, a, n)))
            }
            /// Four weight rows × one activation row.
            pub fn dot_4x1(dtype: DType, w: [&[u8]; 4], a: &[u8], n: usize) -> [f32; 4] {
                // SAFETY: as above.
                unsafe { dot_tile(dtype, w, [a], n) }.map(|v| v.map(|[x]| x)).unwrap_or_else(|| w.map(|w| dot_q(dtype, w, a, n)))
            }
            /// Four weight rows × four activation rows, `[row][token]`.
            pub fn dot_4x4(dtype: DType, w: [&[u8]; 4], a: [&[u8]; 4], n: usize) -> [[f32; 4]; 4] {
                // SAFETY: as above.
                unsafe { dot_tile(dtype, w, a, n) }.unwrap_or_else(|| w.map(|w| dot_1x4(dtype, w, a, n)))
            }

            /// Σ of 32 unsigned × signed byte products, in 8 i32 lanes (4 consecutive products per lane).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn dot_u8_i8($u: __m256i, $s: __m256i) -> __m256i {
                $dot_u8_i8
            }

            /// Σ of 32 signed × signed byte products: |w| · y·sign(w).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn dot_i8_i8(w: __m256i, y: __m256i) -> __m256i {
                dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w))
            }

            /// f16 → f32 with F16C (the `half` crate's portable conversion is far slower inside a hot loop).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn f16(p: *const u8) -> f32 {
                let bits = u16::from_le_bytes([*p, *p.add(1)]);
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn hsum_ps(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn hsum_epi32(v: __m256i) -> i32 {
                let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
                _mm_cvtsi128_si32(s)
            }

            /// 16 bytes of packed nibbles → 32 bytes: low nibbles first, then high nibbles.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
                let b = _mm_loadu_si128(p as *const __m128i);
                let lo = _mm_and_si128(b, _mm_set1_epi8(0x0F));
                let hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
                _mm256_set_m128i(hi, lo)
            }

            /// 32 bits → 32 bytes, 0xFF where the bit is set.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn bytes_from_bits(bits: u32) -> __m256i {
                let x = _mm256_set1_epi32(bits as i32);
                // Byte k of `bits` into bytes 8k..8k+7.
                let spread = _mm256_shuffle_epi8(x, _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
                // Byte i of each group keeps every bit but bit i: all ones iff bit i was set.
                let probe = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
                _mm256_cmpeq_epi8(probe, _mm256_set1_epi64x(-1))
            }

            /// Sum each of N float accumulators.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn hsum_n<const N: usize>(acc: [__m256; N]) -> [f32; N] {
                let mut out = [0f32; N];
                for k in 0..N {
                    out[k] = hsum_ps(acc[k]);
                }
                out
            }

            // Every kernel takes one weight row and N activation rows (N = 1 for decode; 4 in prompt processing,
            // where each unpacked weight block then serves four tokens).

            /// Σ_sub m · (bsum[2 sub] + bsum[2 sub + 1]) for a Q8_K block at `ba`.
            #[inline]
            unsafe fn q8k_min_sum(ba: *const u8, m: &[i32; 8]) -> i32 {
                let bsums = ba.add(260);
                let mut summ = 0i32;
                for (j, &mj) in m.iter().enumerate() {
                    let b0 = i16::from_le_bytes([*bsums.add(4 * j), *bsums.add(4 * j + 1)]) as i32;
                    let b1 = i16::from_le_bytes([*bsums.add(4 * j + 2), *bsums.add(4 * j + 3)]) as i32;
                    summ += mj * (b0 + b1);
                }
                summ
            }

            /// Q4_K × Q8_K: `{f16 d, dmin; u8 scales[12]; u8 qs[128]}`; x = d·sc·q - dmin·m per 32-value sub-block.
            /// The mins meet the activation's precomputed sums of 16 values.
            #[target_feature(enable = $features)]
            unsafe fn dot_q4_k<const N: usize>(w: &[u8], a: [&[u8]; N], nb: usize) -> [f32; N] {
                assert!(w.len() >= nb * 144 && a.iter().all(|a| a.len() >= nb * 292));
                let mut acc = [0f32; N];
                for i in 0..nb {
                    let bw = w.as_ptr().add(i * 144);
                    let (d, dmin) = (f16(bw), f16(bw.add(2)));
                    let (sc, m) = scale_min_k4(std::slice::from_raw_parts(bw.add(4), 12));
                    let qs = bw.add(16);
                    let mut sumi = [_mm256_setzero_si256(); N];
                    for j in 0..4 {
                        let q = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                        let lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
                        let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0F));
                        let (slo, shi) = (_mm256_set1_epi32(sc[2 * j]), _mm256_set1_epi32(sc[2 * j + 1]));
                        for k in 0..N {
                            let y = a[k].as_ptr().add(i * 292 + 4);
                            let plo = dot_u8_i8(lo, _mm256_loadu_si256(y.add(64 * j) as *const __m256i));
                            let phi = dot_u8_i8(hi, _mm256_loadu_si256(y.add(64 * j + 32) as *const __m256i));
                            sumi[k] = _mm256_add_epi32(sumi[k], _mm256_add_epi32(_mm256_mullo_epi32(plo, slo), _mm256_mullo_epi32(phi, shi)));
                        }
                    }
                    for k in 0..N {
                        let ba = a[k].as_ptr().add(i * 292);
                        let dy = f32::from_le_bytes([*ba, *ba.add(1), *ba.add(2), *ba.add(3)]);
                        acc[k] += dy * d * hsum_epi32(sumi[k]) as f32 - dy * dmin * q8k_min_sum(ba, &m) as f32;
                    }
                }
                acc
            }

            /// Q6_K × Q8_K: `{u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}`; x = d·sc·(q - 32), q of 6 bits.
            /// The -32 is taken through the activation sums: Σ sc·(q - 32)·y = Σ sc·q·y - 32·Σ sc·bsum.
            #[target_feature(enable = $features)]
            unsafe fn dot_q6_k<const N: usize>(w: &[u8], a: [&[u8]; N], nb: usize) -> [f32; N] {
                assert!(w.len() >= nb * 210 && a.iter().all(|a| a.len() >= nb * 292));
                let mut acc = [0f32; N];
                let m4 = _mm256_set1_epi8(0x0F);
                let m2 = _mm256_set1_epi8(0x03);
                for i in 0..nb {
                    let bw = w.as_ptr().add(i * 210);
                    let d = f16(bw.add(208));
                    let scales = bw.add(192) as *const i8;
                    let mut sumi = [_mm256_setzero_si256(); N];
                    for h in 0..2 {
                        let ql0 = _mm256_loadu_si256(bw.add(64 * h) as *const __m256i);
                        let ql1 = _mm256_loadu_si256(bw.add(64 * h + 32) as *const __m256i);
                        let qh = _mm256_loadu_si256(bw.add(128 + 32 * h) as *const __m256i);
                        let q = [
                            _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
                            _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4)),
                        ];
                        for (j, qj) in q.iter().enumerate() {
                            // Lanes 0-3 hold elements 0-15 (scale 2j), lanes 4-7 elements 16-31 (scale 2j + 1).
                            let s0 = *scales.add(8 * h + 2 * j) as i32;
                            let s1 = *scales.add(8 * h + 2 * j + 1) as i32;
                            let sv = _mm256_setr_epi32(s0, s0, s0, s0, s1, s1, s1, s1);
                            for k in 0..N {
                                let y = a[k].as_ptr().add(i * 292 + 4);
                                let p = dot_u8_i8(*qj, _mm256_loadu_si256(y.add(128 * h + 32 * j) as *const __m256i));
                                sumi[k] = _mm256_add_epi32(sumi[k], _mm256_mullo_epi32(p, sv));
                            }
                        }
                    }
                    for k in 0..N {
                        let ba = a[k].as_ptr().add(i * 292);
                        let dy = f32::from_le_bytes([*ba, *ba.add(1), *ba.add(2), *ba.add(3)]);
                        let bsums = ba.add(260);
                        let mut corr = 0i32;
                        for t in 0..16 {
                            corr += *scales.add(t) as i32 * i16::from_le_bytes([*bsums.add(2 * t), *bsums.add(2 * t + 1)]) as i32;
                        }
                        acc[k] += dy * d * (hsum_epi32(sumi[k]) - 32 * corr) as f32;
                    }
                }
                acc
            }

            /// One 32-value block of a legacy weight type as 32 signed bytes (KIND 0: Q8_0, 1: Q4_0, 2: Q5_0).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn legacy_block<const KIND: u8>(bw: *const u8) -> __m256i {
                match KIND {
                    0 => _mm256_loadu_si256(bw.add(2) as *const __m256i),
                    1 => _mm256_sub_epi8(unpack_nibbles(bw.add(2)), _mm256_set1_epi8(8)),
                    _ => {
                        let qh = u32::from_le_bytes([*bw.add(2), *bw.add(3), *bw.add(4), *bw.add(5)]);
                        let high = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
                        _mm256_or_si256(unpack_nibbles(bw.add(6)), high)
                    }
                }
            }

            /// R weight rows × N Q8_0 activation rows: each weight block is unpacked once for N tokens and each
            /// activation block (and its scale) loaded once for R rows. N = 1 in decode, where the R rows are R
            /// independent load streams; R = N = 4 in prompt processing.
            #[target_feature(enable = $features)]
            unsafe fn tile_legacy<const R: usize, const N: usize, const KIND: u8>(w: [&[u8]; R], a: [&[u8]; N], nb: usize) -> [[f32; N]; R] {
                let bb = match KIND {
                    0 => 34,
                    1 => 18,
                    _ => 22,
                };
                assert!(w.iter().all(|w| w.len() >= nb * bb) && a.iter().all(|a| a.len() >= nb * 34));
                let mut acc = [[_mm256_setzero_ps(); N]; R];
                for i in 0..nb {
                    let mut q = [_mm256_setzero_si256(); R];
                    let mut dw = [0f32; R];
                    for r in 0..R {
                        let bw = w[r].as_ptr().add(i * bb);
                        q[r] = legacy_block::<KIND>(bw);
                        dw[r] = f16(bw);
                    }
                    for t in 0..N {
                        let ba = a[t].as_ptr().add(i * 34);
                        let (dy, y) = (f16(ba), _mm256_loadu_si256(ba.add(2) as *const __m256i));
                        for r in 0..R {
                            let s = dot_i8_i8(q[r], y);
                            acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw[r] * dy), _mm256_cvtepi32_ps(s), acc[r][t]);
                        }
                    }
                }
                acc.map(|row| hsum_n(row))
            }

            /// R weight rows × N activation rows, or None for types without a multi-row kernel.
            ///
            /// # Safety
            /// The CPU must have this module's features (the caller checked them at run time).
            unsafe fn dot_tile<const R: usize, const N: usize>(dtype: DType, w: [&[u8]; R], a: [&[u8]; N], n: usize) -> Option<[[f32; N]; R]> {
                Some(match dtype {
                    DType::Q8_0 => tile_legacy::<R, N, 0>(w, a, n / 32),
                    DType::Q4_0 => tile_legacy::<R, N, 1>(w, a, n / 32),
                    DType::Q5_0 => tile_legacy::<R, N, 2>(w, a, n / 32),
                    _ => return None,
                })
            }

            /// The kernel for `dtype`, or None (the caller falls back to the scalar reference).
            ///
            /// # Safety
            /// The CPU must have this module's features (the caller checked them at run time).
            unsafe fn dot_n<const N: usize>(dtype: DType, w: &[u8], a: [&[u8]; N], n: usize) -> Option<[f32; N]> {
                // Each kernel asserts that its slices hold `n` elements' worth of blocks.
                {
                    Some(match dtype {
                        // One weight row: the legacy types' tile kernel with R = 1.
                        DType::Q8_0 => tile_legacy::<1, N, 0>([w], a, n / 32)[0],
                        DType::Q4_0 => tile_legacy::<1, N, 1>([w], a, n / 32)[0],
                        DType::Q5_0 => tile_legacy::<1, N, 2>([w], a, n / 32)[0],
                        DType::Q4_K => dot_q4_k(w, a, n / 256),
                        DType::Q6_K => dot_q6_k(w, a, n / 256),
                        _ => return None,
                    })
                }
            }
        }
    };
}

quant_kernels!(avx2, "avx2,fma,f16c", |u, s| _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
quant_kernels!(vnni, "avx2,fma,f16c,avx512vnni,avx512vl", |u, s| _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s));

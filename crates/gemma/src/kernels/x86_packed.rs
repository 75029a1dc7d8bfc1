//! x86-64 kernels for the 16-row packed legacy types (layout in [`super::packed`]): 16 weight rows × N
//! activation rows. AVX-512 VNNI: one zmm per four values of all 16 rows, `vpdpbusd` against a broadcast
//! activation word; AVX2: the same in two ymm halves with `maddubs`. Integer block sums are exact, so results
//! equal the scalar reference up to float summation order. The safe wrappers are reachable only through the
//! tables in [`super::dot`], handed out after run-time feature detection.

use std::arch::x86_64::*;

use super::packed::{block_bytes, offset, ACT_BLOCK, GROUP};
use crate::quant::DType;

const Q8: u8 = 0;
const Q4: u8 = 1;
const Q5: u8 = 2;

fn kind(dtype: DType) -> u8 {
    match dtype {
        DType::Q8_0 => Q8,
        DType::Q4_0 => Q4,
        DType::Q5_0 => Q5,
        _ => panic!("no packed kernel for {dtype}"),
    }
}

/// Checks the slices hold `nb` blocks; the kernels read nothing beyond.
fn check<const N: usize>(dtype: DType, w: &[u8], a: &[&[u8]; N], nb: usize) {
    assert!(w.len() >= nb * block_bytes(dtype) && a.iter().all(|a| a.len() >= nb * ACT_BLOCK), "packed kernel: short slices");
}

#[inline(always)]
unsafe fn act_word(ba: *const u8, k: usize) -> i32 {
    (ba.add(8 + 4 * k) as *const i32).read_unaligned()
}

#[inline(always)]
unsafe fn act_scale_sum(ba: *const u8) -> (f32, i32) {
    ((ba as *const f32).read_unaligned(), (ba.add(4) as *const i32).read_unaligned())
}

pub mod avx512 {
    use super::*;

    pub fn tile4(dtype: DType, w: &[u8], a: [&[u8]; 4], nb: usize) -> [[f32; GROUP]; 4] {
        check(dtype, w, &a, nb);
        // SAFETY: reachable only after AVX-512 F/BW/VL/VNNI detection (see super::dot); `check` bounds every load.
        unsafe { dispatch::<4>(dtype, w, a, nb) }
    }
    pub fn tile1(dtype: DType, w: &[u8], a: &[u8], nb: usize) -> [f32; GROUP] {
        check(dtype, w, &[a], nb);
        // SAFETY: as above.
        unsafe { dispatch::<1>(dtype, w, [a], nb)[0] }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
    unsafe fn dispatch<const N: usize>(dtype: DType, w: &[u8], a: [&[u8]; N], nb: usize) -> [[f32; GROUP]; N] {
        match kind(dtype) {
            Q8 => tile::<N, Q8>(w, a, nb),
            Q4 => tile::<N, Q4>(w, a, nb),
            _ => tile::<N, Q5>(w, a, nb),
        }
    }

    /// The eight registers of unsigned codes of one packed block: register k = values 4k..4k+3 of 16 rows.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn codes<const KIND: u8>(q: *const u8) -> [__m512i; 8] {
        let mut c = [_mm512_setzero_si512(); 8];
        if KIND == Q8 {
            for (k, c) in c.iter_mut().enumerate() {
                *c = _mm512_loadu_si512(q.add(64 * k) as *const _);
            }
        } else {
            let m4 = _mm512_set1_epi8(0x0F);
            for k in 0..4 {
                let v = _mm512_loadu_si512(q.add(64 * k) as *const _);
                c[k] = _mm512_and_si512(v, m4);
                c[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
            if KIND == Q5 {
                let b4 = _mm512_set1_epi8(0x10);
                for (k, c) in c.iter_mut().enumerate() {
                    let bits = (q.add(256 + 8 * k) as *const u64).read_unaligned();
                    *c = _mm512_mask_add_epi8(*c, bits, *c, b4);
                }
            }
        }
        c
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
    unsafe fn tile<const N: usize, const KIND: u8>(w: &[u8], a: [&[u8]; N], nb: usize) -> [[f32; GROUP]; N] {
        let pb = block_bytes(match KIND {
            Q8 => DType::Q8_0,
            Q4 => DType::Q4_0,
            _ => DType::Q5_0,
        });
        let shift = match KIND {
            Q8 => 7,
            Q4 => 3,
            _ => 4,
        };
        let mut acc = [_mm512_setzero_ps(); N];
        for b in 0..nb {
            let bw = w.as_ptr().add(b * pb);
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(bw as *const __m256i));
            let c = codes::<KIND>(bw.add(32));
            for t in 0..N {
                let ba = a[t].as_ptr().add(b * ACT_BLOCK);
                // Two accumulators: halves the dependency chain of vpdpbusd.
                let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for k in (0..8).step_by(2) {
                    s0 = _mm512_dpbusd_epi32(s0, c[k], _mm512_set1_epi32(act_word(ba, k)));
                    s1 = _mm512_dpbusd_epi32(s1, c[k + 1], _mm512_set1_epi32(act_word(ba, k + 1)));
                }
                let (da, sa) = act_scale_sum(ba);
                let isum = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(sa << shift));
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(da)), _mm512_cvtepi32_ps(isum), acc[t]);
            }
        }
        let mut out = [[0f32; GROUP]; N];
        for t in 0..N {
            _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }
}

pub mod avx2 {
    use super::*;

    pub fn tile4(dtype: DType, w: &[u8], a: [&[u8]; 4], nb: usize) -> [[f32; GROUP]; 4] {
        check(dtype, w, &a, nb);
        // SAFETY: reachable only after AVX2/FMA/F16C detection (see super::dot); `check` bounds every load.
        unsafe { dispatch::<4>(dtype, w, a, nb) }
    }
    pub fn tile1(dtype: DType, w: &[u8], a: &[u8], nb: usize) -> [f32; GROUP] {
        check(dtype, w, &[a], nb);
        // SAFETY: as above.
        unsafe { dispatch::<1>(dtype, w, [a], nb)[0] }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dispatch<const N: usize>(dtype: DType, w: &[u8], a: [&[u8]; N], nb: usize) -> [[f32; GROUP]; N] {
        match kind(dtype) {
            Q8 => tile::<N, Q8>(w, a, nb),
            Q4 => tile::<N, Q4>(w, a, nb),
            _ => tile::<N, Q5>(w, a, nb),
        }
    }

    /// 32 bits → 32 bytes, 0x10 where the bit is set.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn fifth_bits(bits: u32) -> __m256i {
        let x = _mm256_set1_epi32(bits as i32);
        let spread = _mm256_shuffle_epi8(x, _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
        let probe = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        _mm256_and_si256(_mm256_cmpeq_epi8(probe, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10))
    }

    /// Codes of rows 8h..8h+8: register k = values 4k..4k+3.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn codes<const KIND: u8>(q: *const u8, h: usize) -> [__m256i; 8] {
        let mut c = [_mm256_setzero_si256(); 8];
        if KIND == Q8 {
            for (k, c) in c.iter_mut().enumerate() {
                *c = _mm256_loadu_si256(q.add(64 * k + 32 * h) as *const __m256i);
            }
        } else {
            let m4 = _mm256_set1_epi8(0x0F);
            for k in 0..4 {
                let v = _mm256_loadu_si256(q.add(64 * k + 32 * h) as *const __m256i);
                c[k] = _mm256_and_si256(v, m4);
                c[k + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
            if KIND == Q5 {
                for (k, c) in c.iter_mut().enumerate() {
                    let bits = (q.add(256 + 8 * k + 4 * h) as *const u32).read_unaligned();
                    *c = _mm256_or_si256(*c, fifth_bits(bits));
                }
            }
        }
        c
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const N: usize, const KIND: u8>(w: &[u8], a: [&[u8]; N], nb: usize) -> [[f32; GROUP]; N] {
        let pb = block_bytes(match KIND {
            Q8 => DType::Q8_0,
            Q4 => DType::Q4_0,
            _ => DType::Q5_0,
        });
        let off = match KIND {
            Q8 => 0, // Q8_0 codes are turned back to signed values below
            Q4 => offset(DType::Q4_0),
            _ => offset(DType::Q5_0),
        };
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(0x80u8 as i8);
        let mut acc = [[_mm256_setzero_ps(); 2]; N];
        for b in 0..nb {
            let bw = w.as_ptr().add(b * pb);
            for h in 0..2 {
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(bw.add(16 * h) as *const __m128i));
                let c = codes::<KIND>(bw.add(32), h);
                for t in 0..N {
                    let ba = a[t].as_ptr().add(b * ACT_BLOCK);
                    let mut s = _mm256_setzero_si256();
                    for (k, &ck) in c.iter().enumerate() {
                        let y = _mm256_set1_epi32(act_word(ba, k));
                        // maddubs takes unsigned × signed bytes; 8-bit codes would overflow its i16 pair sums,
                        // so Q8_0 goes back to signed values with the sign moved onto the activation.
                        let p = if KIND == Q8 {
                            let q = _mm256_xor_si256(ck, flip);
                            _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(y, q))
                        } else {
                            _mm256_maddubs_epi16(ck, y)
                        };
                        s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
                    }
                    let (da, sa) = act_scale_sum(ba);
                    let isum = _mm256_sub_epi32(s, _mm256_set1_epi32(off * sa));
                    acc[t][h] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(da)), _mm256_cvtepi32_ps(isum), acc[t][h]);
                }
            }
        }
        let mut out = [[0f32; GROUP]; N];
        for t in 0..N {
            _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t][0]);
            _mm256_storeu_ps(out[t].as_mut_ptr().add(8), acc[t][1]);
        }
        out
    }
}

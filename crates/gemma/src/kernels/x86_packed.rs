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

/// The legacy type of a kernel's KIND parameter.
const fn dtype_of(kind: u8) -> DType {
    match kind {
        Q8 => DType::Q8_0,
        Q4 => DType::Q4_0,
        _ => DType::Q5_0,
    }
}

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
    // Activations: packed Q8_0 rows ([`ACT_BLOCK`]) for the legacy types, Q8_K rows (292 bytes) for the k-quants.
    let ab = if super::packed::is_k(dtype) { 292 } else { ACT_BLOCK };
    assert!(w.len() >= nb * block_bytes(dtype) && a.iter().all(|a| a.len() >= nb * ab), "packed kernel: short slices");
}

/// The little-endian i32 at `p + 4k`: four activation codes, a Q8_K pair of 16-value sums, a block sum.
#[inline(always)]
unsafe fn word(p: *const u8, k: usize) -> i32 {
    (p.add(4 * k) as *const i32).read_unaligned()
}

/// The little-endian f32 at `p`: an activation block's scale.
#[inline(always)]
unsafe fn scale_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

/// A packed Q8_0 activation block's scale and code sum.
#[inline(always)]
unsafe fn act_scale_sum(ba: *const u8) -> (f32, i32) {
    (scale_at(ba), word(ba, 1))
}

/// Decode's software prefetch distance in bytes. Each packed block is processed in one dependent burst, and
/// for the 4-bit types (288 bytes per 16×32 values) the hardware prefetcher alone leaves the loop waiting on
/// memory: asking 1 KiB ahead took gemma-2b Q4_0 decode from 8.6 to 10.8 GB/s on one core (Q8_0 unchanged).
const PREFETCH: usize = 1024;

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
        match dtype {
            DType::Q4_K => tile_q4_k::<N>(w, a, nb),
            DType::Q6_K => tile_q6_k::<N>(w, a, nb),
            _ => match kind(dtype) {
                Q8 => tile::<N, Q8>(w, a, nb),
                Q4 => tile::<N, Q4>(w, a, nb),
                _ => tile::<N, Q5>(w, a, nb),
            },
        }
    }

    /// 256 bytes of packed nibbles → the 8 registers of codes (register k = values 4k..4k+3 of 16 rows).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn nibbles(q: *const u8) -> [__m512i; 8] {
        let mut c = [_mm512_setzero_si512(); 8];
        let m4 = _mm512_set1_epi8(0x0F);
        for k in 0..4 {
            let v = _mm512_loadu_si512(q.add(64 * k) as *const _);
            c[k] = _mm512_and_si512(v, m4);
            c[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        c
    }

    /// Σ over the registers `c` of codes × the broadcast activation words at `y` (word k = values 4k..4k+3).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot_words(c: &[__m512i], y: *const u8) -> __m512i {
        // Two accumulators: halves the dependency chain of vpdpbusd.
        let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for k in (0..c.len()).step_by(2) {
            s0 = _mm512_dpbusd_epi32(s0, c[k], _mm512_set1_epi32(word(y, k)));
            s1 = _mm512_dpbusd_epi32(s1, c[k + 1], _mm512_set1_epi32(word(y, k + 1)));
        }
        _mm512_add_epi32(s0, s1)
    }

    /// Q4_K: per row `d·da·Σ_s sc_s·(Σ q·y) − dmin·da·Σ_s m_s·(Σ y)`; the integer sums are exact, the min
    /// term meets the Q8_K sums of 16 values with `vpdpwssd` (pairs (m_s, m_s) × (bsum_2s, bsum_2s+1)).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
    unsafe fn tile_q4_k<const N: usize>(w: &[u8], a: [&[u8]; N], nb: usize) -> [[f32; GROUP]; N] {
        let pb = block_bytes(DType::Q4_K);
        let mut acc = [_mm512_setzero_ps(); N];
        for b in 0..nb {
            let bw = w.as_ptr().add(b * pb);
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(bw as *const __m256i));
            let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(bw.add(32) as *const __m256i));
            let mut sumi = [_mm512_setzero_si512(); N];
            let mut summ = [_mm512_setzero_si512(); N];
            for s in 0..8 {
                let c = nibbles(bw.add(320 + 256 * s));
                let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(bw.add(64 + 16 * s) as *const __m128i));
                let m = _mm512_cvtepu8_epi32(_mm_loadu_si128(bw.add(192 + 16 * s) as *const __m128i));
                let mm = _mm512_or_si512(m, _mm512_slli_epi32(m, 16));
                for t in 0..N {
                    let ya = a[t].as_ptr().add(b * 292);
                    let p = dot_words(&c, ya.add(4 + 32 * s));
                    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(p, sc));
                    let bs = _mm512_set1_epi32(word(ya.add(260), s));
                    summ[t] = _mm512_dpwssd_epi32(summ[t], mm, bs);
                }
            }
            for t in 0..N {
                let da = _mm512_set1_ps(scale_at(a[t].as_ptr().add(b * 292)));
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
                acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(summ[t]), acc[t]);
            }
        }
        store(acc)
    }

    /// Q6_K: per row `d·da·(Σ_s sc_s·(Σ q·y) − 32·Σ_s sc_s·bsum_s)`, q the stored unsigned 6-bit code.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
    unsafe fn tile_q6_k<const N: usize>(w: &[u8], a: [&[u8]; N], nb: usize) -> [[f32; GROUP]; N] {
        let pb = block_bytes(DType::Q6_K);
        let mut acc = [_mm512_setzero_ps(); N];
        let m2 = _mm512_set1_epi8(0x03);
        for b in 0..nb {
            let bw = w.as_ptr().add(b * pb);
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(bw as *const __m256i));
            let mut sumi = [_mm512_setzero_si512(); N];
            let mut corr = [_mm512_setzero_si512(); N];
            for u in 0..8 {
                let mut c = nibbles(bw.add(288 + 256 * u));
                for h in 0..2 {
                    let v = _mm512_loadu_si512(bw.add(2336 + 128 * u + 64 * h) as *const _);
                    // Top bit pair i of each byte moved to bits 4-5 (masked first, so 16-bit shifts stay in the byte).
                    let top = [
                        _mm512_slli_epi16(_mm512_and_si512(v, m2), 4),
                        _mm512_slli_epi16(_mm512_and_si512(v, _mm512_set1_epi8(0x0C)), 2),
                        _mm512_and_si512(v, _mm512_set1_epi8(0x30)),
                        _mm512_srli_epi16(_mm512_and_si512(v, _mm512_set1_epi8(0xC0u8 as i8)), 2),
                    ];
                    for (i, top) in top.into_iter().enumerate() {
                        c[h + 2 * i] = _mm512_or_si512(c[h + 2 * i], top);
                    }
                }
                // Scales of sub-blocks 2u and 2u + 1, as i16 pairs per row, then each as i32.
                let pair = _mm512_cvtepi8_epi16(_mm256_loadu_si256(bw.add(32 + 32 * u) as *const __m256i));
                let sc0 = _mm512_srai_epi32(_mm512_slli_epi32(pair, 16), 16);
                let sc1 = _mm512_srai_epi32(pair, 16);
                for t in 0..N {
                    let ya = a[t].as_ptr().add(b * 292);
                    let y = ya.add(4 + 32 * u);
                    let p0 = dot_words(&c[..4], y);
                    let p1 = dot_words(&c[4..], y.add(16));
                    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_add_epi32(_mm512_mullo_epi32(p0, sc0), _mm512_mullo_epi32(p1, sc1)));
                    let bs = _mm512_set1_epi32(word(ya.add(260), u));
                    corr[t] = _mm512_dpwssd_epi32(corr[t], pair, bs);
                }
            }
            for t in 0..N {
                let da = _mm512_set1_ps(scale_at(a[t].as_ptr().add(b * 292)));
                let isum = _mm512_sub_epi32(sumi[t], _mm512_slli_epi32(corr[t], 5));
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(isum), acc[t]);
            }
        }
        store(acc)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const N: usize>(acc: [__m512; N]) -> [[f32; GROUP]; N] {
        let mut out = [[0f32; GROUP]; N];
        for t in 0..N {
            _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
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
            c = nibbles(q);
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
        let pb = block_bytes(dtype_of(KIND));
        // offset · Σa as a shift: the offsets are 128, 8 and 16.
        let shift = offset(dtype_of(KIND)).trailing_zeros();
        let mut acc = [_mm512_setzero_ps(); N];
        for b in 0..nb {
            let bw = w.as_ptr().add(b * pb);
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(bw as *const __m256i));
            if N == 1 {
                // A hint: never faults, even past the end of the matrix.
                for o in (0..pb).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(bw.wrapping_add(PREFETCH + o) as *const i8);
                }
            }
            let c = codes::<KIND>(bw.add(32));
            for t in 0..N {
                let ba = a[t].as_ptr().add(b * ACT_BLOCK);
                let p = dot_words(&c, ba.add(8));
                let (da, sa) = act_scale_sum(ba);
                let isum = _mm512_sub_epi32(p, _mm512_set1_epi32(sa << shift));
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(da)), _mm512_cvtepi32_ps(isum), acc[t]);
            }
        }
        store(acc)
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
        let pb = block_bytes(dtype_of(KIND));
        // Q8_0 codes are turned back to signed values below, so no offset remains.
        let off = if KIND == Q8 { 0 } else { offset(dtype_of(KIND)) };
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(0x80u8 as i8);
        let mut acc = [[_mm256_setzero_ps(); 2]; N];
        for b in 0..nb {
            let bw = w.as_ptr().add(b * pb);
            if N == 1 {
                // A hint (see PREFETCH): never faults, even past the end of the matrix.
                for o in (0..pb).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(bw.wrapping_add(PREFETCH + o) as *const i8);
                }
            }
            for h in 0..2 {
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(bw.add(16 * h) as *const __m128i));
                let c = codes::<KIND>(bw.add(32), h);
                for t in 0..N {
                    let ba = a[t].as_ptr().add(b * ACT_BLOCK);
                    let mut s = _mm256_setzero_si256();
                    for (k, &ck) in c.iter().enumerate() {
                        let y = _mm256_set1_epi32(word(ba.add(8), k));
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

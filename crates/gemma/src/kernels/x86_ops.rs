//! x86-64 variants of the element-wise kernels of [`super::ops`] (exp, GELU, tanh soft-capping, axpy) and of
//! the activation quantizers of [`crate::quant`]: AVX2 + FMA, and AVX-512 F.
//!
//! Each public function is a safe wrapper around a `#[target_feature]` function. The wrappers are reachable
//! only through the tables of [`super::ops::Ops`], which hands a table out only after run-time detection of
//! its features (`detected()` below); that is what makes the inner `unsafe` calls sound. Every load and store
//! is bounded by a slice's length: whole vectors inside it, the tail through a stack buffer.
//!
//! exp is Cephes' `expf` (Moshier): `exp(x) = 2^n · exp(r)`, `n = round(x / ln2)`, `r = x - n·ln2` with ln2 in
//! two parts so that `r` is exact to f32 precision, `exp(r)` by a degree-7 polynomial on |r| ≤ ln2/2; about
//! 1-2 ulp. GELU and tanh are built on it without cancellation (see [`super::ops::scalar`] for the references).

use std::arch::x86_64::*;

use crate::quant as act_ref;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln2 = LN2_HI + LN2_LO; LN2_HI has 9 significant bits, so `n·LN2_HI` is exact for |n| < 2^15.
#[allow(clippy::excessive_precision)]
const LN2_HI: f32 = 0.693_359_375;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes expf: exp(r) ≈ 1 + r + r²·P(r).
#[allow(clippy::excessive_precision)]
const EXP_P: [f32; 6] = [1.987_569_150_0e-4, 1.398_199_950_7e-3, 8.333_451_907_3e-3, 4.166_579_589_4e-2, 1.666_666_545_9e-1, 5.000_000_120_1e-1];
/// Below this tanh uses its odd Taylor series (through y¹³: the next term is < 4e-9 relative at 0.4); above it,
/// `1 - 2/(exp(2y) + 1)`, whose cancellation costs at most a couple of ulp there.
const TANH_SMALL: f32 = 0.4;
const TANH_T: [f32; 6] = [-1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0, 62.0 / 2835.0, -1382.0 / 155925.0, 21844.0 / 6081075.0];
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044715;

/// Run `f` over `x` in vectors of `W` lanes; the tail goes through a zero-padded copy.
#[inline(always)]
fn chunks<const W: usize>(x: &mut [f32], mut f: impl FnMut(&mut [f32], usize)) {
    let whole = x.len() / W * W;
    let mut i = 0;
    while i < whole {
        f(&mut x[i..i + W], i);
        i += W;
    }
    if whole < x.len() {
        let mut buf = [0f32; W];
        let n = x.len() - whole;
        buf[..n].copy_from_slice(&x[whole..]);
        f(&mut buf, whole);
        x[whole..].copy_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------- AVX-512

pub mod avx512 {
    use super::*;

    pub fn detected() -> bool {
        super::avx2::detected() && is_x86_feature_detected!("avx512f")
    }

    pub fn geglu(gate: &mut [f32], up: &[f32]) {
        assert!(up.len() >= gate.len());
        // SAFETY: only reachable after `detected()` (see the module comment); loads and stores stay in the slices.
        unsafe { geglu_impl(gate, up) }
    }
    pub fn softcap(x: &mut [f32], cap: f32) {
        // SAFETY: as above.
        unsafe { softcap_impl(x, cap) }
    }
    pub fn exp_sum(x: &mut [f32], sub: f32) -> f32 {
        // SAFETY: as above.
        unsafe { exp_sum_impl(x, sub) }
    }
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        assert!(x.len() >= y.len());
        // SAFETY: as above.
        unsafe { axpy_impl(y, a, x) }
    }
    pub fn scale(x: &mut [f32], a: f32) {
        // SAFETY: as above.
        unsafe { scale_impl(x, a) }
    }
    pub fn dots(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32]) {
        let n = qs.first().map_or(0, |q| q.len());
        assert!(qs.iter().all(|q| q.len() == n) && keys.iter().all(|k| k.len() >= n) && out.len() >= qs.len() * keys.len());
        // SAFETY: as above; the assertion bounds every query and key load by n.
        unsafe { dots_impl(qs, keys, out) }
    }
    pub fn weighted_sum(o: &mut [f32], keep: f32, p: &[f32], vals: &[&[f32]]) {
        assert!(p.len() >= vals.len() && vals.iter().all(|v| v.len() >= o.len()));
        // SAFETY: as above; the assertion bounds every value load by o.len().
        unsafe { weighted_sum_impl(o, keep, p, vals) }
    }
    pub fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
        // SAFETY: as above; every block is a 32-value chunk of `x` and a 34-byte chunk of `dst`.
        unsafe { q8_0_impl::<false>(x, dst) }
    }
    pub fn quantize_q8_1(x: &[f32], dst: &mut [u8]) {
        // SAFETY: as above, 36-byte blocks.
        unsafe { q8_0_impl::<true>(x, dst) }
    }
    pub fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
        // SAFETY: as above, 256 values and 292 bytes per block.
        unsafe { q8_k_impl(x, dst) }
    }

    #[inline(always)]
    unsafe fn set(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn exp(x: __m512) -> __m512 {
        // Clamped so that n stays small; scalef then gives 0 (or a subnormal) below and inf above, as expf does.
        // The constant is the first operand so that a NaN x passes through max/min and propagates.
        let x = _mm512_min_ps(set(89.0), _mm512_max_ps(set(-104.0), x));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, set(LOG2E)));
        let r = _mm512_fnmadd_ps(n, set(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, set(LN2_LO), r);
        let mut p = set(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm512_fmadd_ps(p, r, set(c));
        }
        let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), set(1.0));
        _mm512_scalef_ps(y, n)
    }

    /// tanh(y): odd Taylor series near 0, `1 - 2/(exp(2|y|) + 1)` elsewhere, sign restored.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn tanh(y: __m512) -> __m512 {
        let a = _mm512_abs_ps(y);
        let big = _mm512_sub_ps(set(1.0), _mm512_div_ps(set(2.0), _mm512_add_ps(exp(_mm512_add_ps(a, a)), set(1.0))));
        let a2 = _mm512_mul_ps(a, a);
        let mut p = set(TANH_T[5]);
        for &c in TANH_T[..5].iter().rev() {
            p = _mm512_fmadd_ps(p, a2, set(c));
        }
        let small = _mm512_fmadd_ps(_mm512_mul_ps(a, a2), p, a);
        let t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, set(TANH_SMALL)), big, small);
        // |t| with y's sign bit.
        let sign = _mm512_and_si512(_mm512_castps_si512(y), _mm512_set1_epi32(i32::MIN));
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign))
    }

    /// GELU (tanh form): `0.5·x·(1 + tanh(u)) = x·σ(2u) = x / (1 + exp(-2u))`, u = √(2/π)(x + 0.044715x³):
    /// one exp and no `1 + tanh` cancellation for negative x.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn gelu(x: __m512) -> __m512 {
        let x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        let inner = _mm512_fmadd_ps(set(GELU_C), x3, x);
        let e = exp(_mm512_mul_ps(inner, set(-2.0 * SQRT_2_OVER_PI)));
        _mm512_div_ps(x, _mm512_add_ps(set(1.0), e))
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn geglu_impl(gate: &mut [f32], up: &[f32]) {
        chunks::<16>(gate, |g, at| {
            let mut u = [0f32; 16];
            let n = g.len().min(up.len() - at);
            u[..n].copy_from_slice(&up[at..at + n]);
            let v = _mm512_mul_ps(gelu(_mm512_loadu_ps(g.as_ptr())), _mm512_loadu_ps(u.as_ptr()));
            _mm512_storeu_ps(g.as_mut_ptr(), v);
        });
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn softcap_impl(x: &mut [f32], cap: f32) {
        chunks::<16>(x, |c, _| {
            let v = _mm512_div_ps(_mm512_loadu_ps(c.as_ptr()), set(cap));
            _mm512_storeu_ps(c.as_mut_ptr(), _mm512_mul_ps(set(cap), tanh(v)));
        });
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn exp_sum_impl(x: &mut [f32], sub: f32) -> f32 {
        let mut acc = _mm512_setzero_ps();
        let len = x.len();
        chunks::<16>(x, |c, at| {
            let e = exp(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), set(sub)));
            _mm512_storeu_ps(c.as_mut_ptr(), e);
            // The padding lanes of the tail are not part of the sum.
            let keep = if len - at >= 16 { 0xffff } else { (1u16 << (len - at)) - 1 };
            acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(keep, e));
        });
        _mm512_reduce_add_ps(acc)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn axpy_impl(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len() / 16 * 16;
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let mut i = 0;
        while i < n {
            _mm512_storeu_ps(py.add(i), _mm512_fmadd_ps(set(a), _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(py.add(i))));
            i += 16;
        }
        for j in n..y.len() {
            y[j] = a.mul_add(x[j], y[j]);
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn scale_impl(x: &mut [f32], a: f32) {
        chunks::<16>(x, |c, _| _mm512_storeu_ps(c.as_mut_ptr(), _mm512_mul_ps(set(a), _mm512_loadu_ps(c.as_ptr()))));
    }

    /// R queries × K keys in registers: each key load serves R products and each query load K.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize, const K: usize>(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32], stride: usize) {
        let n = qs[0].len();
        let nv = n / 16 * 16;
        let qp: [*const f32; R] = std::array::from_fn(|r| qs[r].as_ptr());
        let kp: [*const f32; K] = std::array::from_fn(|t| keys[t].as_ptr());
        let mut acc = [[_mm512_setzero_ps(); K]; R];
        let mut i = 0;
        while i < nv {
            let kv: [__m512; K] = std::array::from_fn(|t| _mm512_loadu_ps(kp[t].add(i)));
            for r in 0..R {
                let qv = _mm512_loadu_ps(qp[r].add(i));
                for t in 0..K {
                    acc[r][t] = _mm512_fmadd_ps(qv, kv[t], acc[r][t]);
                }
            }
            i += 16;
        }
        for r in 0..R {
            for t in 0..K {
                let tail: f32 = qs[r][nv..].iter().zip(&keys[t][nv..n]).map(|(a, b)| a * b).sum();
                out[r * stride + t] = _mm512_reduce_add_ps(acc[r][t]) + tail;
            }
        }
    }

    /// `out[r·keys.len() + j] = qs[r] · keys[j]`, in tiles of 4 queries × 4 keys.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn dots_impl(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32]) {
        let m = keys.len();
        let mut r = 0;
        while r + 4 <= qs.len() {
            let mut j = 0;
            while j + 4 <= m {
                tile::<4, 4>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                j += 4;
            }
            while j < m {
                tile::<4, 1>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                j += 1;
            }
            r += 4;
        }
        while r < qs.len() {
            let mut j = 0;
            while j + 4 <= m {
                tile::<1, 4>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                j += 4;
            }
            while j < m {
                tile::<1, 1>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                j += 1;
            }
            r += 1;
        }
    }
    /// `o ← keep·o + Σ p_j·v_j`, 128 outputs at a time held in registers across all the rows.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn weighted_sum_impl(o: &mut [f32], keep: f32, p: &[f32], vals: &[&[f32]]) {
        let n = o.len();
        let po = o.as_mut_ptr();
        let mut c = 0;
        while c + 128 <= n {
            let mut acc: [__m512; 8] = std::array::from_fn(|t| _mm512_mul_ps(set(keep), _mm512_loadu_ps(po.add(c + 16 * t))));
            for (v, &pj) in vals.iter().zip(p) {
                let (pv, w) = (v.as_ptr().add(c), set(pj));
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(pv.add(16 * t)), *a);
                }
            }
            for (t, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(po.add(c + 16 * t), *a);
            }
            c += 128;
        }
        while c + 16 <= n {
            let mut a = _mm512_mul_ps(set(keep), _mm512_loadu_ps(po.add(c)));
            for (v, &pj) in vals.iter().zip(p) {
                a = _mm512_fmadd_ps(set(pj), _mm512_loadu_ps(v.as_ptr().add(c)), a);
            }
            _mm512_storeu_ps(po.add(c), a);
            c += 16;
        }
        for i in c..n {
            o[i] = vals.iter().zip(p).fold(keep * o[i], |s, (v, &pj)| pj.mul_add(v[i], s));
        }
    }

    /// `round` (half away from zero) exactly: trunc, plus trunc(2·fraction) ∈ {-1, 0, 1}; the fraction and its
    /// double are exact in f32.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn round_half_away(s: __m512) -> __m512 {
        const TRUNC: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;
        let t = _mm512_roundscale_ps::<TRUNC>(s);
        let f = _mm512_sub_ps(s, t);
        _mm512_add_ps(t, _mm512_roundscale_ps::<TRUNC>(_mm512_add_ps(f, f)))
    }

    /// Q8_0 (and Q8_1 with `SUM`) as `quantize_row_q8_0`: d = amax/127, q = round(x/d). Blocks with a NaN, an
    /// infinity or a scale whose inverse overflows take the scalar reference, whose casts define those cases.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn q8_0_impl<const SUM: bool>(x: &[f32], dst: &mut [u8]) {
        let bb = if SUM { 36 } else { 34 };
        for (xb, db) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bb)) {
            let a = _mm512_loadu_ps(xb.as_ptr());
            let b = _mm512_loadu_ps(xb.as_ptr().add(16));
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(b, b);
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            if nan != 0 || !amax.is_finite() || !id.is_finite() {
                if SUM {
                    act_ref::quantize_row_q8_1(xb, db)
                } else {
                    act_ref::quantize_row_q8_0(xb, db)
                }
                continue;
            }
            let qa = _mm512_cvttps_epi32(round_half_away(_mm512_mul_ps(a, set(id))));
            let qb = _mm512_cvttps_epi32(round_half_away(_mm512_mul_ps(b, set(id))));
            let q = &mut db[bb - 32..];
            _mm_storeu_si128(q.as_mut_ptr() as *mut __m128i, _mm512_cvtsepi32_epi8(qa));
            _mm_storeu_si128(q.as_mut_ptr().add(16) as *mut __m128i, _mm512_cvtsepi32_epi8(qb));
            db[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
            if SUM {
                let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
                db[2..4].copy_from_slice(&half::f16::from_f32(sum as f32 * d).to_le_bytes());
            }
        }
    }

    /// Q8_K as `quantize_row_q8_k`: the scale from the first value of largest magnitude, with its sign;
    /// q = nearest_int (ties to even) clamped to 127; sums of each 16.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn q8_k_impl(x: &[f32], dst: &mut [u8]) {
        for (xb, db) in x.chunks_exact(256).zip(dst.chunks_exact_mut(292)) {
            let p = xb.as_ptr();
            let mut vmax = _mm512_setzero_ps();
            let mut nan = 0u16;
            for k in 0..16 {
                let v = _mm512_loadu_ps(p.add(16 * k));
                nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                vmax = _mm512_max_ps(vmax, _mm512_abs_ps(v));
            }
            let amax = _mm512_reduce_max_ps(vmax);
            if nan != 0 || !amax.is_finite() || amax == 0.0 {
                act_ref::quantize_row_q8_k(xb, db);
                continue;
            }
            let mut first = 0;
            for k in 0..16 {
                let m = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(_mm512_loadu_ps(p.add(16 * k))), set(amax));
                if m != 0 {
                    first = 16 * k + m.trailing_zeros() as usize;
                    break;
                }
            }
            let iscale = -127.0 / xb[first];
            if !iscale.is_finite() {
                act_ref::quantize_row_q8_k(xb, db);
                continue;
            }
            db[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
            for k in 0..16 {
                let s = _mm512_mul_ps(set(iscale), _mm512_loadu_ps(p.add(16 * k)));
                let q = _mm512_min_epi32(
                    _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(s),
                    _mm512_set1_epi32(127),
                );
                _mm_storeu_si128(db.as_mut_ptr().add(4 + 16 * k) as *mut __m128i, _mm512_cvtsepi32_epi8(q));
                let sum = _mm512_reduce_add_epi32(q) as i16;
                db[260 + 2 * k..262 + 2 * k].copy_from_slice(&sum.to_le_bytes());
            }
        }
    }
}

// ---------------------------------------------------------------- AVX2 + FMA

pub mod avx2 {
    use super::*;

    pub fn detected() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    pub fn geglu(gate: &mut [f32], up: &[f32]) {
        assert!(up.len() >= gate.len());
        // SAFETY: only reachable after `detected()` (see the module comment); loads and stores stay in the slices.
        unsafe { geglu_impl(gate, up) }
    }
    pub fn softcap(x: &mut [f32], cap: f32) {
        // SAFETY: as above.
        unsafe { softcap_impl(x, cap) }
    }
    pub fn exp_sum(x: &mut [f32], sub: f32) -> f32 {
        // SAFETY: as above.
        unsafe { exp_sum_impl(x, sub) }
    }
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        assert!(x.len() >= y.len());
        // SAFETY: as above.
        unsafe { axpy_impl(y, a, x) }
    }
    pub fn scale(x: &mut [f32], a: f32) {
        // SAFETY: as above.
        unsafe { scale_impl(x, a) }
    }
    pub fn dots(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32]) {
        let n = qs.first().map_or(0, |q| q.len());
        assert!(qs.iter().all(|q| q.len() == n) && keys.iter().all(|k| k.len() >= n) && out.len() >= qs.len() * keys.len());
        // SAFETY: as above; the assertion bounds every query and key load by n.
        unsafe { dots_impl(qs, keys, out) }
    }
    pub fn weighted_sum(o: &mut [f32], keep: f32, p: &[f32], vals: &[&[f32]]) {
        assert!(p.len() >= vals.len() && vals.iter().all(|v| v.len() >= o.len()));
        // SAFETY: as above; the assertion bounds every value load by o.len().
        unsafe { weighted_sum_impl(o, keep, p, vals) }
    }
    pub fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
        // SAFETY: as above; every block is a 32-value chunk of `x` and a 34-byte chunk of `dst`.
        unsafe { q8_0_impl::<false>(x, dst) }
    }
    pub fn quantize_q8_1(x: &[f32], dst: &mut [u8]) {
        // SAFETY: as above, 36-byte blocks.
        unsafe { q8_0_impl::<true>(x, dst) }
    }
    pub fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
        // SAFETY: as above, 256 values and 292 bytes per block.
        unsafe { q8_k_impl(x, dst) }
    }

    #[inline(always)]
    unsafe fn set(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn abs(v: __m256) -> __m256 {
        _mm256_andnot_ps(set(-0.0), v)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn exp(x: __m256) -> __m256 {
        const LO: f32 = -87.336_54; // exp(LO) is the smallest normal f32
        const HI: f32 = 88.722_83; // ln(f32::MAX)
        // Constant first, so that a NaN x passes through max/min and propagates.
        let xc = _mm256_min_ps(set(HI), _mm256_max_ps(set(LO), x));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(xc, set(LOG2E)));
        let r = _mm256_fnmadd_ps(n, set(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, set(LN2_LO), r);
        let mut p = set(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm256_fmadd_ps(p, r, set(c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), set(1.0));
        // 2^n as 2^(n>>1) · 2^(n - (n>>1)): n reaches 128 at the top of the range, past one exponent field.
        let ni = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32::<1>(ni);
        let n2 = _mm256_sub_epi32(ni, n1);
        let bias = _mm256_set1_epi32(127);
        let p1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
        let p2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
        let y = _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
        // Outside the range: 0 below (flushing the subnormals expf would give, all < 1.2e-38), inf above.
        let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LT_OQ>(x, set(LO)));
        _mm256_blendv_ps(y, set(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, set(HI)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tanh(y: __m256) -> __m256 {
        let a = abs(y);
        let big = _mm256_sub_ps(set(1.0), _mm256_div_ps(set(2.0), _mm256_add_ps(exp(_mm256_add_ps(a, a)), set(1.0))));
        let a2 = _mm256_mul_ps(a, a);
        let mut p = set(TANH_T[5]);
        for &c in TANH_T[..5].iter().rev() {
            p = _mm256_fmadd_ps(p, a2, set(c));
        }
        let small = _mm256_fmadd_ps(_mm256_mul_ps(a, a2), p, a);
        let t = _mm256_blendv_ps(big, small, _mm256_cmp_ps::<_CMP_LT_OQ>(a, set(TANH_SMALL)));
        _mm256_or_ps(t, _mm256_and_ps(y, set(-0.0)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn gelu(x: __m256) -> __m256 {
        let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        let inner = _mm256_fmadd_ps(set(GELU_C), x3, x);
        let e = exp(_mm256_mul_ps(inner, set(-2.0 * SQRT_2_OVER_PI)));
        _mm256_div_ps(x, _mm256_add_ps(set(1.0), e))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn geglu_impl(gate: &mut [f32], up: &[f32]) {
        chunks::<8>(gate, |g, at| {
            let mut u = [0f32; 8];
            let n = g.len().min(up.len() - at);
            u[..n].copy_from_slice(&up[at..at + n]);
            let v = _mm256_mul_ps(gelu(_mm256_loadu_ps(g.as_ptr())), _mm256_loadu_ps(u.as_ptr()));
            _mm256_storeu_ps(g.as_mut_ptr(), v);
        });
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn softcap_impl(x: &mut [f32], cap: f32) {
        chunks::<8>(x, |c, _| {
            let v = _mm256_div_ps(_mm256_loadu_ps(c.as_ptr()), set(cap));
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_mul_ps(set(cap), tanh(v)));
        });
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_sum_impl(x: &mut [f32], sub: f32) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let len = x.len();
        chunks::<8>(x, |c, at| {
            let mut e = exp(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), set(sub)));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            if len - at < 8 {
                // The padding lanes of the tail are not part of the sum.
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((len - at) as i32), lane);
                e = _mm256_and_ps(e, _mm256_castsi256_ps(keep));
            }
            acc = _mm256_add_ps(acc, e);
        });
        hsum(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn axpy_impl(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len() / 8 * 8;
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let mut i = 0;
        while i < n {
            _mm256_storeu_ps(py.add(i), _mm256_fmadd_ps(set(a), _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i))));
            i += 8;
        }
        for j in n..y.len() {
            y[j] = a.mul_add(x[j], y[j]);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn scale_impl(x: &mut [f32], a: f32) {
        chunks::<8>(x, |c, _| _mm256_storeu_ps(c.as_mut_ptr(), _mm256_mul_ps(set(a), _mm256_loadu_ps(c.as_ptr()))));
    }

    /// R queries × K keys in registers: each key load serves R products and each query load K.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize, const K: usize>(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32], stride: usize) {
        let n = qs[0].len();
        let nv = n / 8 * 8;
        let qp: [*const f32; R] = std::array::from_fn(|r| qs[r].as_ptr());
        let kp: [*const f32; K] = std::array::from_fn(|t| keys[t].as_ptr());
        let mut acc = [[_mm256_setzero_ps(); K]; R];
        let mut i = 0;
        while i < nv {
            let kv: [__m256; K] = std::array::from_fn(|t| _mm256_loadu_ps(kp[t].add(i)));
            for r in 0..R {
                let qv = _mm256_loadu_ps(qp[r].add(i));
                for t in 0..K {
                    acc[r][t] = _mm256_fmadd_ps(qv, kv[t], acc[r][t]);
                }
            }
            i += 8;
        }
        for r in 0..R {
            for t in 0..K {
                let tail: f32 = qs[r][nv..].iter().zip(&keys[t][nv..n]).map(|(a, b)| a * b).sum();
                out[r * stride + t] = hsum(acc[r][t]) + tail;
            }
        }
    }

    /// `out[r·keys.len() + j] = qs[r] · keys[j]`, in tiles of 4 queries × 2 keys.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dots_impl(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32]) {
        let m = keys.len();
        let mut r = 0;
        while r + 4 <= qs.len() {
            let mut j = 0;
            while j + 2 <= m {
                tile::<4, 2>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                j += 2;
            }
            while j < m {
                tile::<4, 1>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                j += 1;
            }
            r += 4;
        }
        while r < qs.len() {
            let mut j = 0;
            while j + 2 <= m {
                tile::<1, 2>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                j += 2;
            }
            while j < m {
                tile::<1, 1>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                j += 1;
            }
            r += 1;
        }
    }
    /// `o ← keep·o + Σ p_j·v_j`, 64 outputs at a time held in registers across all the rows.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn weighted_sum_impl(o: &mut [f32], keep: f32, p: &[f32], vals: &[&[f32]]) {
        let n = o.len();
        let po = o.as_mut_ptr();
        let mut c = 0;
        while c + 64 <= n {
            let mut acc: [__m256; 8] = std::array::from_fn(|t| _mm256_mul_ps(set(keep), _mm256_loadu_ps(po.add(c + 8 * t))));
            for (v, &pj) in vals.iter().zip(p) {
                let (pv, w) = (v.as_ptr().add(c), set(pj));
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(pv.add(8 * t)), *a);
                }
            }
            for (t, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(po.add(c + 8 * t), *a);
            }
            c += 64;
        }
        while c + 8 <= n {
            let mut a = _mm256_mul_ps(set(keep), _mm256_loadu_ps(po.add(c)));
            for (v, &pj) in vals.iter().zip(p) {
                a = _mm256_fmadd_ps(set(pj), _mm256_loadu_ps(v.as_ptr().add(c)), a);
            }
            _mm256_storeu_ps(po.add(c), a);
            c += 8;
        }
        for i in c..n {
            o[i] = vals.iter().zip(p).fold(keep * o[i], |s, (v, &pj)| pj.mul_add(v[i], s));
        }
    }

    /// `round` (half away from zero) exactly: trunc, plus trunc(2·fraction) ∈ {-1, 0, 1}.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn round_half_away(s: __m256) -> __m256 {
        const TRUNC: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;
        let t = _mm256_round_ps::<TRUNC>(s);
        let f = _mm256_sub_ps(s, t);
        _mm256_add_ps(t, _mm256_round_ps::<TRUNC>(_mm256_add_ps(f, f)))
    }

    /// 32 i32 (four vectors, in order) to 32 saturated i8, in order (packs interleave the 128-bit lanes).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn pack32(q: [__m256i; 4], out: *mut u8) {
        let a = _mm256_packs_epi32(q[0], q[1]);
        let b = _mm256_packs_epi32(q[2], q[3]);
        let c = _mm256_packs_epi16(a, b);
        let c = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(out as *mut __m256i, c);
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0_impl<const SUM: bool>(x: &[f32], dst: &mut [u8]) {
        let bb = if SUM { 36 } else { 34 };
        for (xb, db) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bb)) {
            let v: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(xb.as_ptr().add(8 * k)));
            let mut nan = 0;
            let mut vmax = _mm256_setzero_ps();
            for &v in &v {
                nan |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                vmax = _mm256_max_ps(vmax, abs(v));
            }
            let amax = hmax(vmax);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            if nan != 0 || !amax.is_finite() || !id.is_finite() {
                if SUM {
                    act_ref::quantize_row_q8_1(xb, db)
                } else {
                    act_ref::quantize_row_q8_0(xb, db)
                }
                continue;
            }
            let q = v.map(|v| _mm256_cvttps_epi32(round_half_away(_mm256_mul_ps(v, set(id)))));
            pack32(q, db.as_mut_ptr().add(bb - 32));
            db[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
            if SUM {
                let sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
                db[2..4].copy_from_slice(&half::f16::from_f32(sum as f32 * d).to_le_bytes());
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_k_impl(x: &[f32], dst: &mut [u8]) {
        for (xb, db) in x.chunks_exact(256).zip(dst.chunks_exact_mut(292)) {
            let p = xb.as_ptr();
            let mut vmax = _mm256_setzero_ps();
            let mut nan = 0;
            for k in 0..32 {
                let v = _mm256_loadu_ps(p.add(8 * k));
                nan |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                vmax = _mm256_max_ps(vmax, abs(v));
            }
            let amax = hmax(vmax);
            if nan != 0 || !amax.is_finite() || amax == 0.0 {
                act_ref::quantize_row_q8_k(xb, db);
                continue;
            }
            let mut first = 0;
            for k in 0..32 {
                let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(abs(_mm256_loadu_ps(p.add(8 * k))), set(amax)));
                if m != 0 {
                    first = 8 * k + m.trailing_zeros() as usize;
                    break;
                }
            }
            let iscale = -127.0 / xb[first];
            if !iscale.is_finite() {
                act_ref::quantize_row_q8_k(xb, db);
                continue;
            }
            db[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
            for g in 0..8 {
                let q: [__m256i; 4] = std::array::from_fn(|k| {
                    let s = _mm256_mul_ps(set(iscale), _mm256_loadu_ps(p.add(32 * g + 8 * k)));
                    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(s);
                    _mm256_min_epi32(_mm256_cvttps_epi32(r), _mm256_set1_epi32(127))
                });
                pack32(q, db.as_mut_ptr().add(4 + 32 * g));
                for h in 0..2 {
                    let sum = hsum_i32(_mm256_add_epi32(q[2 * h], q[2 * h + 1])) as i16;
                    let at = 260 + 2 * (2 * g + h);
                    db[at..at + 2].copy_from_slice(&sum.to_le_bytes());
                }
            }
        }
    }
}

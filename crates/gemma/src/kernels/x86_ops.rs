//! x86-64 variants of the element-wise kernels of [`super::ops`] (exp, GELU, tanh soft-capping, axpy, the
//! attention's dots and weighted sums) and of the activation quantizers of [`crate::quant`]: AVX2 + FMA, and
//! AVX-512 F.
//!
//! Every kernel is written once, in [`elementwise_kernels!`], over a vector of `W` f32 lanes; each ISA module
//! gives that vector's type and a few primitives (loads, arithmetic, horizontal sums, lane masks, and the
//! steps that differ: exp's scaling by 2^n, the narrowing to bytes), then instantiates the macro with its
//! `#[target_feature]` list. The primitives are `#[inline(always)]`, so each kernel compiles to one function
//! with its ISA's features, as if written out by hand.
//!
//! Each public function is a safe wrapper around a `#[target_feature]` function. The wrappers are reachable
//! only through each module's [`Ops`] table, which [`super::ops::Ops`] hands out only after run-time detection
//! of its features (`detected()` below); that is what makes the inner `unsafe` calls sound. Every load and
//! store is bounded by a slice's length: whole vectors inside it, the tail through a stack buffer.
//!
//! exp is Cephes' `expf` (Moshier): `exp(x) = 2^n · exp(r)`, `n = round(x / ln2)`, `r = x - n·ln2` with ln2 in
//! two parts so that `r` is exact to f32 precision, `exp(r)` by a degree-7 polynomial on |r| ≤ ln2/2; about
//! 1-2 ulp. GELU and tanh are built on it without cancellation (see [`super::ops::scalar`] for the references).

use std::arch::x86_64::*;

use super::ops::Ops;
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
const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
const TRUNC: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;

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

/// Primitives that are one expression each, written as a table: `fn name(args) -> type = intrinsic(args);`
/// becomes an `#[inline(always)]` function (inlined into the `#[target_feature]` kernels that call it).
macro_rules! primitives {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:expr;)*) => {
        $(
            $(#[$doc])*
            #[inline(always)]
            unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                $body
            }
        )*
    };
}

/// The kernels, written once over the primitives of the module that instantiates them: `V` (W f32 lanes),
/// `VI` (W i32 lanes), `M` (a lane mask), `DOT_KEYS` (keys per tile in `dots`, as registers allow), `EXP_LO` /
/// `EXP_HI` (exp's input clamp) and the functions listed in each module.
macro_rules! elementwise_kernels {
    ($name:literal, $features:literal) => {
        /// This module's kernels, for [`super::super::ops::Ops`] to hand out after `detected()`.
        pub static OPS: Ops = Ops { name: $name, geglu, softcap, exp_sum, axpy, scale, dots, weighted_sum, quantize_q8_0, quantize_q8_1, quantize_q8_k };

        fn geglu(gate: &mut [f32], up: &[f32]) {
            assert!(up.len() >= gate.len());
            // SAFETY: only reachable after `detected()` (see the module comment); loads and stores stay in the slices.
            unsafe { geglu_impl(gate, up) }
        }
        fn softcap(x: &mut [f32], cap: f32) {
            // SAFETY: as above.
            unsafe { softcap_impl(x, cap) }
        }
        fn exp_sum(x: &mut [f32], sub: f32) -> f32 {
            // SAFETY: as above.
            unsafe { exp_sum_impl(x, sub) }
        }
        fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
            assert!(x.len() >= y.len());
            // SAFETY: as above.
            unsafe { axpy_impl(y, a, x) }
        }
        fn scale(x: &mut [f32], a: f32) {
            // SAFETY: as above.
            unsafe { scale_impl(x, a) }
        }
        fn dots(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32]) {
            let n = qs.first().map_or(0, |q| q.len());
            assert!(qs.iter().all(|q| q.len() == n) && keys.iter().all(|k| k.len() >= n) && out.len() >= qs.len() * keys.len());
            // SAFETY: as above; the assertion bounds every query and key load by n.
            unsafe { dots_impl(qs, keys, out) }
        }
        fn weighted_sum(o: &mut [f32], keep: f32, p: &[f32], vals: &[&[f32]]) {
            assert!(p.len() >= vals.len() && vals.iter().all(|v| v.len() >= o.len()));
            // SAFETY: as above; the assertion bounds every value load by o.len().
            unsafe { weighted_sum_impl(o, keep, p, vals) }
        }
        fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
            // SAFETY: as above; every block is a 32-value chunk of `x` and a 34-byte chunk of `dst`.
            unsafe { q8_0_impl::<false>(x, dst) }
        }
        fn quantize_q8_1(x: &[f32], dst: &mut [u8]) {
            // SAFETY: as above, 36-byte blocks.
            unsafe { q8_0_impl::<true>(x, dst) }
        }
        fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
            // SAFETY: as above, 256 values and 292 bytes per block.
            unsafe { q8_k_impl(x, dst) }
        }

        /// Cephes expf. The clamp keeps n small; a NaN x passes through max/min (constant first) and propagates.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn exp(x: V) -> V {
            let xc = min(set(EXP_HI), max(set(EXP_LO), x));
            let n = round_nearest(mul(xc, set(LOG2E)));
            let r = fnmadd(n, set(LN2_HI), xc);
            let r = fnmadd(n, set(LN2_LO), r);
            let mut p = set(EXP_P[0]);
            for &c in &EXP_P[1..] {
                p = fmadd(p, r, set(c));
            }
            let y = add(fmadd(p, mul(r, r), r), set(1.0));
            times_pow2(y, n, x)
        }

        /// tanh(y): odd Taylor series near 0, `1 - 2/(exp(2|y|) + 1)` elsewhere, sign restored.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn tanh(y: V) -> V {
            let a = abs(y);
            let big = sub(set(1.0), div(set(2.0), add(exp(add(a, a)), set(1.0))));
            let a2 = mul(a, a);
            let mut p = set(TANH_T[5]);
            for &c in TANH_T[..5].iter().rev() {
                p = fmadd(p, a2, set(c));
            }
            let small = fmadd(mul(a, a2), p, a);
            with_sign_of(select(lt(a, set(TANH_SMALL)), small, big), y)
        }

        /// GELU (tanh form): `0.5·x·(1 + tanh(u)) = x·σ(2u) = x / (1 + exp(-2u))`, u = √(2/π)(x + 0.044715x³):
        /// one exp and no `1 + tanh` cancellation for negative x.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn gelu(x: V) -> V {
            let x3 = mul(mul(x, x), x);
            let inner = fmadd(set(GELU_C), x3, x);
            let e = exp(mul(inner, set(-2.0 * SQRT_2_OVER_PI)));
            div(x, add(set(1.0), e))
        }

        #[target_feature(enable = $features)]
        unsafe fn geglu_impl(gate: &mut [f32], up: &[f32]) {
            chunks::<W>(gate, |g, at| {
                let mut u = [0f32; W];
                let n = g.len().min(up.len() - at);
                u[..n].copy_from_slice(&up[at..at + n]);
                store(g.as_mut_ptr(), mul(gelu(load(g.as_ptr())), load(u.as_ptr())));
            });
        }

        #[target_feature(enable = $features)]
        unsafe fn softcap_impl(x: &mut [f32], cap: f32) {
            chunks::<W>(x, |c, _| {
                let v = div(load(c.as_ptr()), set(cap));
                store(c.as_mut_ptr(), mul(set(cap), tanh(v)));
            });
        }

        #[target_feature(enable = $features)]
        unsafe fn exp_sum_impl(x: &mut [f32], shift: f32) -> f32 {
            let mut acc = zero();
            let len = x.len();
            chunks::<W>(x, |c, at| {
                let mut e = exp(sub(load(c.as_ptr()), set(shift)));
                store(c.as_mut_ptr(), e);
                if len - at < W {
                    // The padding lanes of the tail are not part of the sum.
                    e = first_lanes(e, len - at);
                }
                acc = add(acc, e);
            });
            hsum(acc)
        }

        #[target_feature(enable = $features)]
        unsafe fn axpy_impl(y: &mut [f32], a: f32, x: &[f32]) {
            let n = y.len() / W * W;
            let (py, px) = (y.as_mut_ptr(), x.as_ptr());
            let mut i = 0;
            while i < n {
                store(py.add(i), fmadd(set(a), load(px.add(i)), load(py.add(i))));
                i += W;
            }
            for j in n..y.len() {
                y[j] = a.mul_add(x[j], y[j]);
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn scale_impl(x: &mut [f32], a: f32) {
            chunks::<W>(x, |c, _| store(c.as_mut_ptr(), mul(set(a), load(c.as_ptr()))));
        }

        /// R queries × K keys in registers: each key load serves R products and each query load K.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn tile<const R: usize, const K: usize>(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32], stride: usize) {
            let n = qs[0].len();
            let nv = n / W * W;
            let qp: [*const f32; R] = std::array::from_fn(|r| qs[r].as_ptr());
            let kp: [*const f32; K] = std::array::from_fn(|t| keys[t].as_ptr());
            let mut acc = [[zero(); K]; R];
            let mut i = 0;
            while i < nv {
                let kv: [V; K] = std::array::from_fn(|t| load(kp[t].add(i)));
                for r in 0..R {
                    let qv = load(qp[r].add(i));
                    for t in 0..K {
                        acc[r][t] = fmadd(qv, kv[t], acc[r][t]);
                    }
                }
                i += W;
            }
            for r in 0..R {
                for t in 0..K {
                    let tail: f32 = qs[r][nv..].iter().zip(&keys[t][nv..n]).map(|(a, b)| a * b).sum();
                    out[r * stride + t] = hsum(acc[r][t]) + tail;
                }
            }
        }

        /// `out[r·keys.len() + j] = qs[r] · keys[j]`, in tiles of 4 queries × `DOT_KEYS` keys.
        #[target_feature(enable = $features)]
        unsafe fn dots_impl(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32]) {
            let m = keys.len();
            let mut r = 0;
            while r + 4 <= qs.len() {
                let mut j = 0;
                while j + DOT_KEYS <= m {
                    tile::<4, DOT_KEYS>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                    j += DOT_KEYS;
                }
                while j < m {
                    tile::<4, 1>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                    j += 1;
                }
                r += 4;
            }
            while r < qs.len() {
                let mut j = 0;
                while j + DOT_KEYS <= m {
                    tile::<1, DOT_KEYS>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                    j += DOT_KEYS;
                }
                while j < m {
                    tile::<1, 1>(&qs[r..], &keys[j..], &mut out[r * m + j..], m);
                    j += 1;
                }
                r += 1;
            }
        }

        /// `o ← keep·o + Σ p_j·v_j`, 8 vectors of outputs at a time held in registers across all the rows.
        #[target_feature(enable = $features)]
        unsafe fn weighted_sum_impl(o: &mut [f32], keep: f32, p: &[f32], vals: &[&[f32]]) {
            let n = o.len();
            let po = o.as_mut_ptr();
            let mut c = 0;
            while c + 8 * W <= n {
                let mut acc: [V; 8] = std::array::from_fn(|t| mul(set(keep), load(po.add(c + W * t))));
                for (v, &pj) in vals.iter().zip(p) {
                    let (pv, w) = (v.as_ptr().add(c), set(pj));
                    for (t, a) in acc.iter_mut().enumerate() {
                        *a = fmadd(w, load(pv.add(W * t)), *a);
                    }
                }
                for (t, a) in acc.iter().enumerate() {
                    store(po.add(c + W * t), *a);
                }
                c += 8 * W;
            }
            while c + W <= n {
                let mut a = mul(set(keep), load(po.add(c)));
                for (v, &pj) in vals.iter().zip(p) {
                    a = fmadd(set(pj), load(v.as_ptr().add(c)), a);
                }
                store(po.add(c), a);
                c += W;
            }
            for i in c..n {
                o[i] = vals.iter().zip(p).fold(keep * o[i], |s, (v, &pj)| pj.mul_add(v[i], s));
            }
        }

        /// `round` (half away from zero) exactly: trunc, plus trunc(2·fraction) ∈ {-1, 0, 1}; the fraction and
        /// its double are exact in f32.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn round_half_away(s: V) -> V {
            let t = trunc(s);
            let f = sub(s, t);
            add(t, trunc(add(f, f)))
        }

        /// Σ of the lanes of the vectors `q`.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn sum_i32(q: &[VI]) -> i32 {
            hsum_i32(q[1..].iter().fold(q[0], |s, &v| add_i32(s, v)))
        }

        /// Q8_0 (and Q8_1 with `SUM`) as `quantize_row_q8_0`: d = amax/127, q = round(x/d). Blocks with a NaN, an
        /// infinity or a scale whose inverse overflows take the scalar reference, whose casts define those cases.
        #[target_feature(enable = $features)]
        unsafe fn q8_0_impl<const SUM: bool>(x: &[f32], dst: &mut [u8]) {
            let bb = if SUM { 36 } else { 34 };
            for (xb, db) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bb)) {
                let v: [V; 32 / W] = std::array::from_fn(|k| load(xb.as_ptr().add(W * k)));
                let mut nan = 0;
                let mut vmax = zero();
                for &v in &v {
                    nan |= nan_bits(v);
                    vmax = max(vmax, abs(v));
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
                let q = v.map(|v| cvtt_i32(round_half_away(mul(v, set(id)))));
                store_i8x32(q, db.as_mut_ptr().add(bb - 32));
                db[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
                if SUM {
                    db[2..4].copy_from_slice(&half::f16::from_f32(sum_i32(&q) as f32 * d).to_le_bytes());
                }
            }
        }

        /// Q8_K as `quantize_row_q8_k`: the scale from the first value of largest magnitude, with its sign;
        /// q = nearest_int (ties to even) clamped to 127; sums of each 16.
        #[target_feature(enable = $features)]
        unsafe fn q8_k_impl(x: &[f32], dst: &mut [u8]) {
            for (xb, db) in x.chunks_exact(256).zip(dst.chunks_exact_mut(292)) {
                let p = xb.as_ptr();
                let mut vmax = zero();
                let mut nan = 0;
                for k in 0..256 / W {
                    let v = load(p.add(W * k));
                    nan |= nan_bits(v);
                    vmax = max(vmax, abs(v));
                }
                let amax = hmax(vmax);
                if nan != 0 || !amax.is_finite() || amax == 0.0 {
                    act_ref::quantize_row_q8_k(xb, db);
                    continue;
                }
                let mut first = 0;
                for k in 0..256 / W {
                    let m = eq_bits(abs(load(p.add(W * k))), set(amax));
                    if m != 0 {
                        first = W * k + m.trailing_zeros() as usize;
                        break;
                    }
                }
                let iscale = -127.0 / xb[first];
                if !iscale.is_finite() {
                    act_ref::quantize_row_q8_k(xb, db);
                    continue;
                }
                db[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
                // 32 values at a time: one store of 32 codes, two sums of 16.
                for g in 0..8 {
                    let q: [VI; 32 / W] = std::array::from_fn(|k| min_i32(nearest_i32(mul(set(iscale), load(p.add(32 * g + W * k)))), 127));
                    store_i8x32(q, db.as_mut_ptr().add(4 + 32 * g));
                    for (h, q16) in q.chunks_exact(16 / W).enumerate() {
                        let at = 260 + 2 * (2 * g + h);
                        db[at..at + 2].copy_from_slice(&(sum_i32(q16) as i16).to_le_bytes());
                    }
                }
            }
        }
    };
}

// ---------------------------------------------------------------- AVX-512

pub mod avx512 {
    use super::*;

    pub fn detected() -> bool {
        super::avx2::detected() && is_x86_feature_detected!("avx512f")
    }

    type V = __m512;
    type VI = __m512i;
    type M = __mmask16;
    const W: usize = 16;
    /// 4 queries × 4 keys: 16 accumulators of the 32 registers.
    const DOT_KEYS: usize = 4;
    /// `scalef` gives 0 (or a subnormal) below and inf above, as expf does.
    const EXP_LO: f32 = -104.0;
    const EXP_HI: f32 = 89.0;

    primitives! {
        fn set(v: f32) -> V = _mm512_set1_ps(v);
        fn zero() -> V = _mm512_setzero_ps();
        fn load(p: *const f32) -> V = _mm512_loadu_ps(p);
        fn store(p: *mut f32, v: V) = _mm512_storeu_ps(p, v);
        fn add(a: V, b: V) -> V = _mm512_add_ps(a, b);
        fn sub(a: V, b: V) -> V = _mm512_sub_ps(a, b);
        fn mul(a: V, b: V) -> V = _mm512_mul_ps(a, b);
        fn div(a: V, b: V) -> V = _mm512_div_ps(a, b);
        fn min(a: V, b: V) -> V = _mm512_min_ps(a, b);
        fn max(a: V, b: V) -> V = _mm512_max_ps(a, b);
        /// a·b + c, rounded once.
        fn fmadd(a: V, b: V, c: V) -> V = _mm512_fmadd_ps(a, b, c);
        /// c - a·b, rounded once.
        fn fnmadd(a: V, b: V, c: V) -> V = _mm512_fnmadd_ps(a, b, c);
        fn abs(v: V) -> V = _mm512_abs_ps(v);
        fn lt(a: V, b: V) -> M = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b);
        /// `yes` where `m` is set, `no` elsewhere.
        fn select(m: M, yes: V, no: V) -> V = _mm512_mask_blend_ps(m, no, yes);
        fn round_nearest(v: V) -> V = _mm512_roundscale_ps::<NEAREST>(v);
        fn trunc(v: V) -> V = _mm512_roundscale_ps::<TRUNC>(v);
        /// exp's last step, y·2^n for the clamped input (x itself is not needed: `scalef` saturates).
        fn times_pow2(y: V, n: V, _x: V) -> V = _mm512_scalef_ps(y, n);
        fn hsum(v: V) -> f32 = _mm512_reduce_add_ps(v);
        fn hmax(v: V) -> f32 = _mm512_reduce_max_ps(v);
        /// The first `k` lanes of `v` (k < W), the others zero.
        fn first_lanes(v: V, k: usize) -> V = _mm512_maskz_mov_ps((1u16 << k) - 1, v);
        /// Bit i set where lane i is NaN.
        fn nan_bits(v: V) -> u32 = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v) as u32;
        /// Bit i set where lane i of a equals that of b.
        fn eq_bits(a: V, b: V) -> u32 = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b) as u32;
        /// To i32, truncating.
        fn cvtt_i32(v: V) -> VI = _mm512_cvttps_epi32(v);
        /// To i32, to nearest (ties to even).
        fn nearest_i32(v: V) -> VI = _mm512_cvt_roundps_epi32::<NEAREST>(v);
        fn add_i32(a: VI, b: VI) -> VI = _mm512_add_epi32(a, b);
        fn min_i32(a: VI, b: i32) -> VI = _mm512_min_epi32(a, _mm512_set1_epi32(b));
        fn hsum_i32(v: VI) -> i32 = _mm512_reduce_add_epi32(v);
    }

    /// `t` (non-negative) with the sign bit of `y` (integer ops: `_mm512_and_ps` would need AVX-512 DQ).
    #[inline(always)]
    unsafe fn with_sign_of(t: V, y: V) -> V {
        let sign = _mm512_and_si512(_mm512_castps_si512(y), _mm512_set1_epi32(i32::MIN));
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign))
    }
    /// 32 i32 (two vectors, in order) as 32 saturated i8 at `out`.
    #[inline(always)]
    unsafe fn store_i8x32(q: [VI; 2], out: *mut u8) {
        _mm_storeu_si128(out as *mut __m128i, _mm512_cvtsepi32_epi8(q[0]));
        _mm_storeu_si128(out.add(16) as *mut __m128i, _mm512_cvtsepi32_epi8(q[1]));
    }

    elementwise_kernels!("avx512", "avx512f,avx2,fma");
}

// ---------------------------------------------------------------- AVX2 + FMA

pub mod avx2 {
    use super::*;

    pub fn detected() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    type V = __m256;
    type VI = __m256i;
    type M = __m256;
    const W: usize = 8;
    /// 4 queries × 2 keys: 8 accumulators of the 16 registers.
    const DOT_KEYS: usize = 2;
    /// exp(EXP_LO) is the smallest normal f32; EXP_HI = ln(f32::MAX). Outside, `times_pow2` sets 0 and inf.
    const EXP_LO: f32 = -87.336_54;
    const EXP_HI: f32 = 88.722_83;

    primitives! {
        fn set(v: f32) -> V = _mm256_set1_ps(v);
        fn zero() -> V = _mm256_setzero_ps();
        fn load(p: *const f32) -> V = _mm256_loadu_ps(p);
        fn store(p: *mut f32, v: V) = _mm256_storeu_ps(p, v);
        fn add(a: V, b: V) -> V = _mm256_add_ps(a, b);
        fn sub(a: V, b: V) -> V = _mm256_sub_ps(a, b);
        fn mul(a: V, b: V) -> V = _mm256_mul_ps(a, b);
        fn div(a: V, b: V) -> V = _mm256_div_ps(a, b);
        fn min(a: V, b: V) -> V = _mm256_min_ps(a, b);
        fn max(a: V, b: V) -> V = _mm256_max_ps(a, b);
        /// a·b + c, rounded once.
        fn fmadd(a: V, b: V, c: V) -> V = _mm256_fmadd_ps(a, b, c);
        /// c - a·b, rounded once.
        fn fnmadd(a: V, b: V, c: V) -> V = _mm256_fnmadd_ps(a, b, c);
        fn abs(v: V) -> V = _mm256_andnot_ps(set(-0.0), v);
        fn lt(a: V, b: V) -> M = _mm256_cmp_ps::<_CMP_LT_OQ>(a, b);
        /// `yes` where `m` is set, `no` elsewhere.
        fn select(m: M, yes: V, no: V) -> V = _mm256_blendv_ps(no, yes, m);
        /// `t` (non-negative) with the sign bit of `y`.
        fn with_sign_of(t: V, y: V) -> V = _mm256_or_ps(t, _mm256_and_ps(y, set(-0.0)));
        fn round_nearest(v: V) -> V = _mm256_round_ps::<NEAREST>(v);
        fn trunc(v: V) -> V = _mm256_round_ps::<TRUNC>(v);
        /// Bit i set where lane i is NaN.
        fn nan_bits(v: V) -> u32 = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) as u32;
        /// Bit i set where lane i of a equals that of b.
        fn eq_bits(a: V, b: V) -> u32 = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, b)) as u32;
        /// To i32, truncating.
        fn cvtt_i32(v: V) -> VI = _mm256_cvttps_epi32(v);
        /// To i32, to nearest (ties to even).
        fn nearest_i32(v: V) -> VI = _mm256_cvttps_epi32(round_nearest(v));
        fn add_i32(a: VI, b: VI) -> VI = _mm256_add_epi32(a, b);
        fn min_i32(a: VI, b: i32) -> VI = _mm256_min_epi32(a, _mm256_set1_epi32(b));
    }

    /// exp's last step: y·2^n, then 0 below the clamp (flushing the subnormals expf would give, all < 1.2e-38)
    /// and inf above it, judged on the unclamped `x`.
    #[inline(always)]
    unsafe fn times_pow2(y: V, n: V, x: V) -> V {
        // 2^n as 2^(n>>1) · 2^(n - (n>>1)): n reaches 128 at the top of the range, past one exponent field.
        let ni = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32::<1>(ni);
        let n2 = _mm256_sub_epi32(ni, n1);
        let bias = _mm256_set1_epi32(127);
        let p1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
        let p2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
        let y = mul(mul(y, p1), p2);
        let y = _mm256_blendv_ps(y, zero(), _mm256_cmp_ps::<_CMP_LT_OQ>(x, set(EXP_LO)));
        _mm256_blendv_ps(y, set(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, set(EXP_HI)))
    }
    #[inline(always)]
    unsafe fn hsum(v: V) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
    #[inline(always)]
    unsafe fn hmax(v: V) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
    /// The first `k` lanes of `v` (k < W), the others zero.
    #[inline(always)]
    unsafe fn first_lanes(v: V, k: usize) -> V {
        let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_and_ps(v, _mm256_castsi256_ps(keep))
    }
    #[inline(always)]
    unsafe fn hsum_i32(v: VI) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
    /// 32 i32 (four vectors, in order) as 32 saturated i8 at `out` (packs interleave the 128-bit lanes).
    #[inline(always)]
    unsafe fn store_i8x32(q: [VI; 4], out: *mut u8) {
        let a = _mm256_packs_epi32(q[0], q[1]);
        let b = _mm256_packs_epi32(q[2], q[3]);
        let c = _mm256_packs_epi16(a, b);
        let c = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(out as *mut __m256i, c);
    }

    elementwise_kernels!("avx2", "avx2,fma");
}

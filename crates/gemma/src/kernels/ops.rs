//! Element-wise and row-wise operations on f32 activations. Norms and RoPE are written plainly so the
//! compiler can vectorize them; what needs exp or tanh (GeGLU, soft-capping, softmax), the attention's axpy
//! and the activation quantizers go through [`Ops`], a table of SIMD variants chosen at run time.

/// RMSNorm: `y = x / sqrt(mean(x²) + eps) · scale`. Gemma's `(1 + w)` is folded into `scale` at load time,
/// in f32, which is exactly what transformers computes (`output * (1.0 + weight.float())`).
pub fn rms_norm(x: &[f32], scale: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    for ((o, v), s) in out.iter_mut().zip(x).zip(scale) {
        *o = v * r * s;
    }
}

/// RMSNorm in place.
pub fn rms_norm_inplace(x: &mut [f32], scale: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    for (v, s) in x.iter_mut().zip(scale) {
        *v = *v * r * s;
    }
}

/// RMSNorm without a weight, in place: `x / sqrt(mean(x²) + eps)` (Gemma 4's value and router norms).
pub fn rms_norm_unit_inplace(x: &mut [f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter_mut().for_each(|v| *v *= r);
}

/// LayerNorm (SigLIP's `nn.LayerNorm`): `y = (x - mean) / sqrt(var + eps) · w + b`, the biased variance,
/// statistics accumulated in f64.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let r = 1.0 / (var + eps as f64).sqrt();
    for (((o, &v), w), b) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = ((v as f64 - mean) * r) as f32 * w + b;
    }
}

/// GELU, tanh approximation (PyTorch `gelu(approximate="tanh")`, the `gelu_pytorch_tanh` of Gemma configs).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// GeGLU: `gate ← gelu_tanh(gate) · up`.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    (Ops::get().geglu)(gate, up)
}

/// Soft-capping (Gemma 2): `cap · tanh(x / cap)` squashes values smoothly into (-cap, cap).
pub fn softcap(x: &mut [f32], cap: f32) {
    (Ops::get().softcap)(x, cap)
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let ops = Ops::get();
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = (ops.exp_sum)(x, max);
    (ops.scale)(x, 1.0 / sum);
}

pub type DotsFn = fn(&[&[f32]], &[&[f32]], &mut [f32]);
pub type WeightedSumFn = fn(&mut [f32], f32, &[f32], &[&[f32]]);

/// The element-wise kernels one instruction set provides, chosen once at run time to match
/// [`Kernels::get`](super::dot::Kernels::get) (so `GEMMA_KERNELS` picks these too). Each SIMD variant is tested
/// against [`scalar`]: the quantizers byte for byte, the transcendental functions to a stated error.
pub struct Ops {
    /// The name of the matching [`super::dot::Kernels`].
    pub name: &'static str,
    /// `gate ← gelu_tanh(gate) · up`.
    pub geglu: fn(&mut [f32], &[f32]),
    /// `x ← cap · tanh(x / cap)`.
    pub softcap: fn(&mut [f32], f32),
    /// `x ← exp(x - sub)`, returning the sum of the new values.
    pub exp_sum: fn(&mut [f32], f32) -> f32,
    /// `y ← y + a·x` (over `y.len()`).
    pub axpy: fn(&mut [f32], f32, &[f32]),
    /// `x ← a·x`.
    pub scale: fn(&mut [f32], f32),
    /// `out[r·keys.len() + j] ← qs[r] · keys[j]` (queries of one length, keys at least as long): a few queries
    /// against a block of keys, each key loaded once for all of them.
    pub dots: DotsFn,
    /// `o ← keep·o + Σ p[j]·vals[j]` (each value at least as long as o): attention's weighted sum of values, with
    /// the online softmax's rescaling folded in.
    pub weighted_sum: WeightedSumFn,
    /// Activation quantizers of one row (a whole number of blocks), as [`crate::quant::quantize_row_q8_0`] etc.
    pub quantize_q8_0: fn(&[f32], &mut [u8]),
    pub quantize_q8_1: fn(&[f32], &mut [u8]),
    pub quantize_q8_k: fn(&[f32], &mut [u8]),
}

static SCALAR: Ops = Ops {
    name: "scalar",
    geglu: scalar::geglu,
    softcap: scalar::softcap,
    exp_sum: scalar::exp_sum,
    axpy: scalar::axpy,
    scale: scalar::scale,
    dots: scalar::dots,
    weighted_sum: scalar::weighted_sum,
    quantize_q8_0: crate::quant::quantize_row_q8_0,
    quantize_q8_1: crate::quant::quantize_row_q8_1,
    quantize_q8_k: crate::quant::quantize_row_q8_k,
};

impl Ops {
    /// The variant named like the chosen [`super::dot::Kernels`]; the scalar one if this CPU lacks its features.
    pub fn get() -> &'static Ops {
        static CHOSEN: std::sync::OnceLock<&'static Ops> = std::sync::OnceLock::new();
        CHOSEN.get_or_init(|| {
            let name = super::dot::Kernels::get().name;
            Self::available().into_iter().find(|o| o.name == name).unwrap_or(&SCALAR)
        })
    }

    /// Every variant this CPU can run, the scalar reference first.
    pub fn available() -> Vec<&'static Ops> {
        #[allow(unused_mut)]
        let mut v: Vec<&'static Ops> = vec![&SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            use super::x86_ops::{avx2, avx512};
            if avx2::detected() {
                v.push(&avx2::OPS);
            }
            if avx512::detected() {
                v.push(&avx512::OPS);
            }
        }
        v
    }
}

pub mod scalar {
    //! Plain Rust references (libm's tanh and exp): the specification the SIMD variants are tested against.
    use super::gelu_tanh;

    pub fn geglu(gate: &mut [f32], up: &[f32]) {
        for (g, u) in gate.iter_mut().zip(up) {
            *g = gelu_tanh(*g) * u;
        }
    }

    pub fn softcap(x: &mut [f32], cap: f32) {
        for v in x {
            *v = cap * (*v / cap).tanh();
        }
    }

    pub fn exp_sum(x: &mut [f32], sub: f32) -> f32 {
        let mut sum = 0f32;
        for v in x.iter_mut() {
            *v = (*v - sub).exp();
            sum += *v;
        }
        sum
    }

    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }

    pub fn scale(x: &mut [f32], a: f32) {
        x.iter_mut().for_each(|v| *v *= a);
    }

    pub fn dots(qs: &[&[f32]], keys: &[&[f32]], out: &mut [f32]) {
        for (q, out) in qs.iter().zip(out.chunks_mut(keys.len().max(1))) {
            for (o, k) in out.iter_mut().zip(keys) {
                *o = crate::kernels::dot::scalar::dot_f32(q, &k[..q.len()]);
            }
        }
    }

    pub fn weighted_sum(o: &mut [f32], keep: f32, p: &[f32], vals: &[&[f32]]) {
        scale(o, keep);
        for (v, &pj) in vals.iter().zip(p) {
            axpy(o, pj, v);
        }
    }
}

/// Rotary position embedding, "rotate half" layout (GPT-NeoX style, as transformers and llama.cpp use for
/// Gemma): dimension i pairs with i + d/2, rotated by angle `pos · inv_freq[i]`.
///
/// `inv_freq[i] = 1 / (base^(2i/d) · factor)`; the angles are formed in f32 like transformers does, then
/// cos/sin taken in f64 and rounded (as accurate as PyTorch's f32 cos/sin).
pub fn rope_inv_freq(head_dim: usize, base: f32, linear_factor: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            let inv = 1.0 / base.powf(exponent);
            inv / linear_factor
        })
        .collect()
}

/// cos and sin of every angle of one position: `out[..half]` = cos, `out[half..]` = sin.
pub fn rope_cos_sin(pos: usize, inv_freq: &[f32], out: &mut [f32]) {
    let half = inv_freq.len();
    for i in 0..half {
        let angle = (pos as f32 * inv_freq[i]) as f64;
        out[i] = angle.cos() as f32;
        out[half + i] = angle.sin() as f32;
    }
}

/// Rotate one head by precomputed `rope_cos_sin`.
pub fn rope_apply_cs(x: &mut [f32], cs: &[f32]) {
    let half = cs.len() / 2;
    let (cos, sin) = cs.split_at(half);
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x0, x1) = (a[i], b[i]);
        a[i] = x0 * cos[i] - x1 * sin[i];
        b[i] = x1 * cos[i] + x0 * sin[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1e4];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] == 0.0 && x[2] > x[1]);
    }

    /// Rotate one head to `pos` the way the decoder does: the angles' cos/sin, then the rotation.
    fn rope_apply(x: &mut [f32], pos: usize, inv_freq: &[f32]) {
        let mut cs = vec![0f32; 2 * inv_freq.len()];
        rope_cos_sin(pos, inv_freq, &mut cs);
        rope_apply_cs(x, &cs);
    }

    #[test]
    fn rope_is_a_rotation() {
        let inv = rope_inv_freq(8, 10000.0, 1.0);
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let n0: f32 = x.iter().map(|v| v * v).sum();
        rope_apply(&mut x, 17, &inv);
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3);
        // Position 0 is the identity.
        let mut y = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        rope_apply(&mut y, 0, &inv);
        assert_eq!(y, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    }

    /// -20..20 in steps of 1e-3, then extremes and special values.
    fn dense_inputs() -> Vec<f32> {
        let mut x: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 1e-3).collect();
        x.extend([0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 50.0, -50.0, 1e4, -1e4, 1e20, -1e20, f32::MAX, f32::MIN]);
        x.extend([f32::MIN_POSITIVE, -f32::MIN_POSITIVE, f32::INFINITY, f32::NEG_INFINITY]);
        x
    }

    /// The exact value (to f64 precision): 0.5·x·(1 + tanh(u)) written as x / (1 + exp(-2u)), which does not
    /// cancel for negative x, even in f64.
    fn gelu_f64(x: f64) -> f64 {
        let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
        x / (1.0 + (-2.0 * u).exp())
    }

    /// Error in units of f32 epsilon relative to max(|want|, floor): ulp-like away from 0, absolute near it.
    fn err(got: f32, want: f64, floor: f64) -> f64 {
        if got as f64 == want {
            return 0.0;
        }
        (got as f64 - want).abs() / (want.abs().max(floor) * f32::EPSILON as f64)
    }

    #[test]
    fn geglu_variants_agree_with_reference() {
        // gelu(-inf) is -inf·0 (NaN) in the reference too: finite inputs only.
        let x: Vec<f32> = dense_inputs().into_iter().filter(|v| v.is_finite()).collect();
        // up = 1 gives gelu itself; a second pass with another multiplier checks the product and the tail.
        for ops in Ops::available() {
            let mut g = x.clone();
            (ops.geglu)(&mut g, &vec![1.0; x.len()]);
            let mut scalar = x.clone();
            scalar::geglu(&mut scalar, &vec![1.0; x.len()]);
            let (mut worst, mut worst_tail, mut worst_diff) = (0f64, 0f64, 0f64);
            for ((&xi, &gi), &si) in x.iter().zip(&g).zip(&scalar) {
                assert!(!gi.is_nan(), "{} gelu({xi}) is NaN", ops.name);
                if xi.abs() <= 20.0 {
                    // Absolute errors below 1e-35 do not count (x < -10.4: the result may be flushed to 0).
                    let e = err(gi, gelu_f64(xi as f64), 1e-28);
                    // For x < 0 the value is about x·exp(2u) for large -u, and u itself, computed in f32 (x³, a
                    // product, a sum), carries a relative error of an ulp or two: that makes up to 2·|2u| ulp of
                    // the result, for any f32 evaluation of the formula.
                    let two_u = 2.0 * 0.797_884_6 * (xi as f64 + 0.044715 * (xi as f64).powi(3));
                    if ops.name != "scalar" {
                        assert!(e <= 4.0 + 2.0 * two_u.abs(), "{} gelu({xi}) = {gi}: {e} ulp", ops.name);
                    }
                    if xi >= -2.0 {
                        worst = worst.max(e);
                    } else {
                        worst_tail = worst_tail.max(e / two_u.abs());
                    }
                    // The libm reference loses all relative precision for x < -4 (1 + tanh cancels): compare
                    // with it in absolute terms, scaled by |x|.
                    worst_diff = worst_diff.max((gi - si).abs() as f64 / (xi.abs() as f64).max(1.0));
                } else {
                    // Far out gelu is x or ±0; either way what the reference gives, to 1e-30.
                    assert!((gi - si).abs() <= 1e-30 || gi == si, "{} gelu({xi}) = {gi}, reference {si}", ops.name);
                }
            }
            eprintln!(
                "{}: gelu max err {worst:.2} ulp on [-2, 20], {worst_tail:.2}·|2u| ulp below; max |diff| to the reference {worst_diff:e}·max(1, |x|)",
                ops.name
            );
            if ops.name != "scalar" {
                // Measured: 3.4 ulp on [-2, 20] (the libm reference: 6.5, from 1 + tanh); 1.23·|2u| ulp below;
                // 1.6e-7·max(1, |x|) from the reference.
                assert!(worst <= 4.0, "{}: {worst} ulp", ops.name);
            }
            assert!(worst_diff <= 2.5e-7, "{}: {worst_diff} from the reference", ops.name);
            // A multiplier and odd lengths (the tails).
            for n in [1, 7, 15, 17, 33, 100] {
                let up: Vec<f32> = (0..n).map(|i| 0.5 - i as f32 * 0.1).collect();
                let mut a = x[19_990..19_990 + n].to_vec();
                let mut b = a.clone();
                (ops.geglu)(&mut a, &up);
                scalar::geglu(&mut b, &up);
                for (p, q) in a.iter().zip(&b) {
                    assert!((p - q).abs() <= 1e-6, "{} n={n}: {p} vs {q}", ops.name);
                }
            }
        }
    }

    #[test]
    fn softcap_variants_agree_with_reference() {
        let x = dense_inputs();
        for ops in Ops::available() {
            for cap in [1.0f32, 30.0, 50.0] {
                let mut y = x.clone();
                (ops.softcap)(&mut y, cap);
                let mut worst = 0f64;
                for (&xi, &yi) in x.iter().zip(&y) {
                    let want = cap as f64 * ((xi / cap) as f64).tanh();
                    // tanh's own ulp near 0 (it is ~y there), and 1 ulp of cap·1 for the saturated values.
                    let e = err(yi, want, 1e-30);
                    assert!(e <= 5.0, "{} cap={cap} x={xi}: {yi} vs {want} ({e} ulp)", ops.name);
                    worst = worst.max(e);
                }
                eprintln!("{} cap={cap}: softcap max err {worst:.2} ulp", ops.name);
            }
        }
    }

    #[test]
    fn exp_sum_variants_agree_with_reference() {
        let mut x: Vec<f32> = (-104_000..=89_000).step_by(7).map(|i| i as f32 * 1e-3).collect();
        x.extend([0.0, -0.0, -1e4, 1e4, f32::NEG_INFINITY, f32::INFINITY, -87.3, -87.34, 88.7, 88.72, 88.73]);
        for ops in Ops::available() {
            let mut y = x.clone();
            let sum = (ops.exp_sum)(&mut y, 0.0);
            let mut worst = 0f64;
            for (&xi, &yi) in x.iter().zip(&y) {
                let want = (xi as f64).exp();
                if want < f32::MIN_POSITIVE as f64 {
                    // Subnormal results may be flushed to 0.
                    assert!(yi >= 0.0 && (yi as f64) <= f32::MIN_POSITIVE as f64, "{} exp({xi}) = {yi}", ops.name);
                } else if want > f32::MAX as f64 {
                    assert_eq!(yi, f32::INFINITY, "{} exp({xi})", ops.name);
                } else {
                    let e = err(yi, want, 0.0);
                    assert!(e <= 3.0, "{} exp({xi}) = {yi} vs {want} ({e} ulp)", ops.name);
                    worst = worst.max(e);
                }
            }
            assert_eq!(sum, f32::INFINITY);
            eprintln!("{}: exp max err {worst:.2} ulp", ops.name);
            // The sum ignores the tail's padding; NaN propagates.
            for n in [1, 5, 16, 19, 40] {
                let mut a: Vec<f32> = (0..n).map(|i| -(i as f32) * 0.25).collect();
                let mut b = a.clone();
                let (sa, sb) = ((ops.exp_sum)(&mut a, 1.0), scalar::exp_sum(&mut b, 1.0));
                assert!((sa - sb).abs() <= 1e-6 * sb, "{} n={n}: {sa} vs {sb}", ops.name);
            }
            let mut nan = [1.0, f32::NAN, 0.0];
            (ops.exp_sum)(&mut nan, 0.0);
            assert!(nan[1].is_nan(), "{}", ops.name);
        }
    }

    #[test]
    fn axpy_and_scale_variants_agree_with_reference() {
        for ops in Ops::available() {
            for n in [1, 8, 15, 16, 17, 256, 259] {
                let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
                let mut a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
                let mut b = a.clone();
                (ops.axpy)(&mut a, 0.3, &x);
                scalar::axpy(&mut b, 0.3, &x);
                // FMA rounds once where the reference rounds twice.
                assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 2.0 * f32::EPSILON), "{} axpy n={n}", ops.name);
                (ops.scale)(&mut a, 1.5);
                scalar::scale(&mut b, 1.5);
                assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 4.0 * f32::EPSILON), "{} scale n={n}", ops.name);
            }
        }
    }

    #[test]
    fn attention_kernels_agree_with_reference() {
        for ops in Ops::available() {
            for (n, m) in [(256, 64), (256, 7), (40, 5), (7, 3), (300, 33)] {
                let row = |j: usize, len: usize| (0..len).map(|i| ((i * 7 + j * 13) as f32 * 0.11).cos()).collect::<Vec<f32>>();
                let rows: Vec<Vec<f32>> = (0..m).map(|j| row(j, n + 3)).collect();
                let refs: Vec<&[f32]> = rows.iter().map(|r| &r[..]).collect();
                // 1 to 9 queries: the 4-query tiles and the leftover rows.
                for nq in [1, 3, 4, 5, 9] {
                    let qv: Vec<Vec<f32>> = (0..nq).map(|r| (0..n).map(|i| ((i + 31 * r) as f32 * 0.37).sin()).collect()).collect();
                    let qs: Vec<&[f32]> = qv.iter().map(|q| &q[..]).collect();
                    let (mut a, mut b) = (vec![0f32; nq * m], vec![0f32; nq * m]);
                    (ops.dots)(&qs, &refs, &mut a);
                    scalar::dots(&qs, &refs, &mut b);
                    // Another summation order: n·eps·Σ|q·k| ≤ n·eps·n.
                    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-6 * (n * n) as f32), "{} dots n={n} m={m} nq={nq}", ops.name);
                }
                let p: Vec<f32> = (0..m).map(|j| 1.0 / (1 + j) as f32).collect();
                let mut o: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
                let mut o2 = o.clone();
                (ops.weighted_sum)(&mut o, 0.5, &p, &refs);
                scalar::weighted_sum(&mut o2, 0.5, &p, &refs);
                assert!(o.iter().zip(&o2).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs())), "{} weighted_sum n={n} m={m}", ops.name);
            }
        }
    }

    /// Rows that exercise every rounding path: random values, values landing exactly on .5 after scaling (both
    /// signs), the block maximum in several places and with both signs tied, zeros, tiny and huge blocks, and
    /// blocks with NaN or infinities (whose bytes the scalar casts define).
    fn quant_rows() -> Vec<Vec<f32>> {
        let mut rows = Vec::new();
        let mut s = 0x9e37_79b9u32;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32 * 2.0 - 1.0
        };
        for scale in [1.0f32, 1e-3, 37.0, 1e-20, 1e30] {
            rows.push((0..1024).map(|_| rnd() * scale).collect::<Vec<f32>>());
        }
        // Ties: with amax = 127 the Q8_0 scale is exactly 1 and k + 0.5 is a tie; the same for Q8_K when the
        // signed maximum is -127 (iscale = 1).
        let ties: Vec<f32> = (0..1024)
            .map(|i| match i % 32 {
                0 => 127.0,
                _ => ((i * 7 % 254) as f32 - 127.0) + 0.5,
            })
            .collect();
        rows.push(ties.clone());
        rows.push(ties.iter().map(|v| -v).collect());
        let mut t = ties.clone();
        for b in t.chunks_mut(256) {
            b[0] = -127.0;
            b[100] = 127.0; // tie on |max|: the first one's sign counts
        }
        rows.push(t);
        rows.push((0..1024).map(|i| ((i % 255) as f32 - 127.0) * 0.5).collect());
        rows.push(vec![0.0; 1024]);
        let mut special: Vec<f32> = (0..1024).map(|_| rnd()).collect();
        special[3] = f32::NAN;
        special[300] = f32::INFINITY;
        special[600] = f32::NEG_INFINITY;
        special[800..832].fill(1e-40);
        special[900..932].iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 * 1e-39);
        rows.push(special);
        rows.push((0..1024).map(|i| if i % 256 == 17 { -3.0 } else { rnd() }).collect());
        rows
    }

    #[test]
    fn quantizer_variants_are_byte_identical() {
        use crate::quant::{quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};
        type Q = fn(&[f32], &mut [u8]);
        let rows = quant_rows();
        for ops in Ops::available() {
            let cases: [(&str, Q, Q, usize, usize); 3] = [
                ("q8_0", ops.quantize_q8_0, quantize_row_q8_0, 32, 34),
                ("q8_1", ops.quantize_q8_1, quantize_row_q8_1, 32, 36),
                ("q8_k", ops.quantize_q8_k, quantize_row_q8_k, 256, 292),
            ];
            for (name, simd, reference, bl, bb) in cases {
                for (r, x) in rows.iter().enumerate() {
                    let (mut got, mut want) = (vec![0xAAu8; x.len() / bl * bb], vec![0x55u8; x.len() / bl * bb]);
                    simd(x, &mut got);
                    reference(x, &mut want);
                    assert!(got == want, "{} {name} row {r}: first difference at byte {:?}", ops.name, got.iter().zip(&want).position(|(a, b)| a != b));
                }
            }
        }
    }

    #[test]
    fn gelu_tanh_matches_known_values() {
        // torch.nn.functional.gelu(torch.tensor([-1., 0.5, 2.]), approximate="tanh")
        let want = [-0.158_808, 0.345_714, 1.954_597_7];
        for (x, w) in [-1.0f32, 0.5, 2.0].iter().zip(want) {
            assert!((gelu_tanh(*x) - w).abs() < 1e-5, "{x}");
        }
    }
}

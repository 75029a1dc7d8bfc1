//! Element-wise and row-wise operations on f32 activations. Small next to the matrix products; written
//! plainly so the compiler can vectorize them.

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

/// GELU, tanh approximation (PyTorch `gelu(approximate="tanh")`, the `gelu_pytorch_tanh` of Gemma configs).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// GeGLU: `gate ← gelu_tanh(gate) · up`.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

/// Soft-capping (Gemma 2): `cap · tanh(x / cap)` squashes values smoothly into (-cap, cap).
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x {
        *v = cap * (*v / cap).tanh();
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
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

    #[test]
    fn gelu_tanh_matches_known_values() {
        // torch.nn.functional.gelu(torch.tensor([-1., 0.5, 2.]), approximate="tanh")
        let want = [-0.158_808, 0.345_714, 1.954_597_7];
        for (x, w) in [-1.0f32, 0.5, 2.0].iter().zip(want) {
            assert!((gelu_tanh(*x) - w).abs() < 1e-5, "{x}");
        }
    }
}

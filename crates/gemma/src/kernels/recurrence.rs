//! Kernels of sequence mixers that carry a fixed-size state from row to row instead of attending: a causal
//! depthwise 1-D convolution, a block-diagonal matrix product (per-block gates), and the real-gated linear
//! recurrence scan (RG-LRU, "Griffin", De et al. 2024). Rows are consecutive positions of one sequence; the
//! convolution and the scan read and update the state they are given, so a sequence fed in pieces gives the
//! same rows as one pass.
//!
//! Plain scalar loops: per decoded token these cost O(width) (conv, scan) or O(width · block) (gates), a few
//! percent of the surrounding matrix products; the `tests` compare them with direct transcriptions of the
//! definitions.

/// Causal depthwise convolution of the rows of `x` ((n, c) row-major), `k` taps per channel:
///
/// `out[t][ch] = Σ_{j<k} w[ch·k + j] · in[t - (k-1) + j][ch] + bias[ch]`
///
/// where rows before `x`'s first are taken from `state` ((k-1, c), oldest first: the inputs preceding this
/// call, zeros at the start of a sequence). Tap `k - 1` weighs the current row (PyTorch's `Conv1d` with
/// `padding = k - 1`, keeping the first n outputs). `state` is left holding the last `k - 1` inputs.
pub fn conv1d_causal(x: &[f32], weight: &[f32], bias: &[f32], state: &mut [f32], out: &mut [f32]) {
    let c = bias.len();
    let k = weight.len() / c;
    let (n, past) = (x.len() / c, k - 1);
    debug_assert_eq!(weight.len(), c * k);
    debug_assert_eq!(state.len(), past * c);
    debug_assert_eq!(out.len(), n * c);
    // Input row `r` of the window: r < past are the state's rows, then x's.
    let input = |r: usize, ch: usize, state: &[f32]| {
        if r < past {
            state[r * c + ch]
        } else {
            x[(r - past) * c + ch]
        }
    };
    for t in 0..n {
        let o = &mut out[t * c..(t + 1) * c];
        for (ch, o) in o.iter_mut().enumerate() {
            let w = &weight[ch * k..(ch + 1) * k];
            let mut acc = 0f32;
            for (j, wj) in w.iter().enumerate() {
                acc += wj * input(t + j, ch, state);
            }
            *o = acc + bias[ch];
        }
    }
    // The new state: the last `past` rows of [state; x].
    if n >= past {
        state.copy_from_slice(&x[(n - past) * c..]);
    } else {
        state.copy_within(n * c.., 0);
        state[(past - n) * c..].copy_from_slice(x);
    }
}

/// Block-diagonal product with bias, per row of `x` ((n, c) row-major, c = blocks · m):
///
/// `out[t][b·m + o] = Σ_{i<m} x[t][b·m + i] · w[(b·m + i)·m + o] + bias[b·m + o]`
///
/// `w` is (blocks, m, m) stored [block, in, out] (`x_block @ w[b]`, not transposed like a Linear layer's
/// weight), `bias` (blocks, m).
pub fn block_diag_matmul(x: &[f32], w: &[f32], bias: &[f32], m: usize, out: &mut [f32]) {
    let c = bias.len();
    debug_assert_eq!(w.len(), c * m);
    debug_assert_eq!(out.len(), x.len());
    for (xr, or) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        for ((xb, ob), (wb, bb)) in xr
            .chunks_exact(m)
            .zip(or.chunks_exact_mut(m))
            .zip(w.chunks_exact(m * m).zip(bias.chunks_exact(m)))
        {
            ob.fill(0.0);
            for (xi, wrow) in xb.iter().zip(wb.chunks_exact(m)) {
                ob.iter_mut().zip(wrow).for_each(|(o, w)| *o += xi * w);
            }
            ob.iter_mut().zip(bb).for_each(|(o, b)| *o += b);
        }
    }
}

/// `log(1 + exp(x))` as PyTorch's `softplus` (threshold 20: x itself above it).
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The RG-LRU scan over rows of `x` ((n, c) row-major), given the pre-activations of its input gate `gate_x`
/// and recurrence gate `gate_a` (same shape) and the per-channel parameter `lambda` (Λ, (c)):
///
/// ```text
/// log a_t = -8 · sigmoid(gate_a_t) · softplus(Λ)      a_t = exp(log a_t)
/// m_t     = sqrt(1 - exp(2 · log a_t))                 (1, and a_t = 0, where the sequence starts)
/// h_t     = a_t · h_{t-1} + m_t · (sigmoid(gate_x_t) · x_t)
/// ```
///
/// `out[t] = h_t`; `h` ((c), f32) is the state carried in and left holding the last `h_t`. `starts` says the
/// first row is a sequence's first position (the reset). The operations and their order are transformers'
/// `RecurrentGemmaRglru`.
pub fn rg_lru(
    x: &[f32],
    gate_x: &[f32],
    gate_a: &[f32],
    lambda: &[f32],
    starts: bool,
    h: &mut [f32],
    out: &mut [f32],
) {
    let c = lambda.len();
    debug_assert!(x.len() == gate_x.len() && x.len() == gate_a.len() && x.len() == out.len());
    debug_assert_eq!(h.len(), c);
    for (t, (((xr, gxr), gar), or)) in x
        .chunks_exact(c)
        .zip(gate_x.chunks_exact(c))
        .zip(gate_a.chunks_exact(c))
        .zip(out.chunks_exact_mut(c))
        .enumerate()
    {
        let reset = starts && t == 0;
        for ch in 0..c {
            let log_a = -8.0 * sigmoid(gar[ch]) * softplus(lambda[ch]);
            let gated = xr[ch] * sigmoid(gxr[ch]);
            let (a, m) = if reset {
                (0.0, 1.0)
            } else {
                (log_a.exp(), (1.0 - (2.0 * log_a).exp()).sqrt())
            };
            h[ch] = a * h[ch] + gated * m;
            or[ch] = h[ch];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as f32 / u32::MAX as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// The convolution written out over the whole zero-padded sequence.
    fn conv_reference(x: &[f32], w: &[f32], b: &[f32], c: usize) -> Vec<f32> {
        let k = w.len() / c;
        let n = x.len() / c;
        let mut out = vec![0f32; n * c];
        for t in 0..n {
            for ch in 0..c {
                let mut acc = 0f32;
                for j in 0..k {
                    let src = t as isize - (k as isize - 1) + j as isize;
                    if src >= 0 {
                        acc += w[ch * k + j] * x[src as usize * c + ch];
                    }
                }
                out[t * c + ch] = acc + b[ch];
            }
        }
        out
    }

    #[test]
    fn conv1d_in_pieces_equals_one_pass() {
        let (c, n) = (5, 13);
        for k in [1, 2, 4] {
            let (x, w, b) = (vals(n * c, 1), vals(c * k, 2), vals(c, 3));
            let want = conv_reference(&x, &w, &b, c);
            // Pieces shorter and longer than the window, and empty ones.
            for pieces in [&[13][..], &[1; 13], &[3, 1, 2, 0, 5, 2], &[2, 11]] {
                let mut state = vec![0f32; (k - 1) * c];
                let mut got = vec![0f32; n * c];
                let mut at = 0;
                for &p in pieces {
                    conv1d_causal(&x[at * c..(at + p) * c], &w, &b, &mut state, &mut got[at * c..(at + p) * c]);
                    at += p;
                }
                assert_eq!(got, want, "k={k} pieces {pieces:?}");
                // The state holds the last k-1 inputs.
                assert_eq!(state, x[(n - (k - 1)) * c..], "k={k}");
            }
        }
    }

    #[test]
    fn block_diag_matches_dense_reference() {
        let (blocks, m, n) = (3, 4, 5);
        let c = blocks * m;
        let (x, w, b) = (vals(n * c, 4), vals(blocks * m * m, 5), vals(c, 6));
        let mut got = vec![0f32; n * c];
        block_diag_matmul(&x, &w, &b, m, &mut got);
        for t in 0..n {
            for blk in 0..blocks {
                for o in 0..m {
                    let mut want = b[blk * m + o] as f64;
                    for i in 0..m {
                        want += x[t * c + blk * m + i] as f64 * w[(blk * m + i) * m + o] as f64;
                    }
                    let g = got[t * c + blk * m + o] as f64;
                    assert!((g - want).abs() < 1e-6, "t={t} block={blk} o={o}: {g} vs {want}");
                }
            }
        }
    }

    #[test]
    fn softplus_matches_torch() {
        // torch.nn.functional.softplus(torch.tensor([-30., -1., 0., 1., 19.5, 25.]))
        let want = [9.357_623e-14f32, 0.313_261_7, std::f32::consts::LN_2, 1.313_261_7, 19.5, 25.0];
        for (x, w) in [-30.0f32, -1.0, 0.0, 1.0, 19.5, 25.0].iter().zip(want) {
            assert!((softplus(*x) - w).abs() <= 1e-6 * w.abs().max(1e-7), "{x}: {} vs {w}", softplus(*x));
        }
    }

    /// The recurrence written out in f64 from its definition.
    fn lru_reference(x: &[f32], gx: &[f32], ga: &[f32], lambda: &[f32], h0: &[f32], starts: bool) -> Vec<f64> {
        let c = lambda.len();
        let sig = |v: f32| 1.0 / (1.0 + (-(v as f64)).exp());
        let mut h: Vec<f64> = h0.iter().map(|&v| v as f64).collect();
        let mut out = Vec::new();
        for t in 0..x.len() / c {
            for ch in 0..c {
                let i = t * c + ch;
                let sp = (1.0 + (lambda[ch] as f64).exp()).ln();
                let a = (-8.0 * sig(ga[i]) * sp).exp();
                let (a, m) = if starts && t == 0 { (0.0, 1.0) } else { (a, (1.0 - a * a).sqrt()) };
                h[ch] = a * h[ch] + m * sig(gx[i]) * x[i] as f64;
                out.push(h[ch]);
            }
        }
        out
    }

    #[test]
    fn rg_lru_matches_definition_and_pieces() {
        let (c, n) = (6, 11);
        let x: Vec<f32> = vals(n * c, 7).iter().map(|v| 3.0 * v).collect();
        let (gx, ga) = (vals(n * c, 8), vals(n * c, 9));
        // Λ from strongly decaying (a ~ 0.02) to nearly keeping (a ~ 0.999).
        let lambda: Vec<f32> = (0..c).map(|i| -7.0 + 1.3 * i as f32).collect();
        for starts in [true, false] {
            let h0 = if starts { vec![0f32; c] } else { vals(c, 10) };
            let want = lru_reference(&x, &gx, &ga, &lambda, &h0, starts);
            let mut h = h0.clone();
            let mut got = vec![0f32; n * c];
            rg_lru(&x, &gx, &ga, &lambda, starts, &mut h, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 1e-5 * (1.0 + w.abs()), "starts={starts} {i}: {g} vs {w}");
            }
            assert_eq!(h, got[(n - 1) * c..]);
            // Fed in pieces: the same bits.
            let mut h2 = h0.clone();
            let mut pieces = vec![0f32; n * c];
            for (k, (a, b)) in [(0, 1), (1, 4), (4, 4), (4, 11)].into_iter().enumerate() {
                let r = a * c..b * c;
                rg_lru(&x[r.clone()], &gx[r.clone()], &ga[r.clone()], &lambda, starts && k == 0, &mut h2, &mut pieces[r]);
            }
            assert_eq!(pieces, got, "starts={starts}");
        }
    }

    #[test]
    fn rg_lru_reset_ignores_the_carried_state() {
        // At a sequence's start a = 0 and the input is not rescaled: whatever h held is forgotten.
        let (x, gx, ga, lambda) = ([2.0f32], [0.5f32], [-0.3f32], [-1.0f32]);
        let (mut h, mut out) = ([123.0f32], [0f32]);
        rg_lru(&x, &gx, &ga, &lambda, true, &mut h, &mut out);
        assert_eq!(out[0], 2.0 * sigmoid(0.5));
    }
}

//! Kernels of sequence mixers that carry a fixed-size state from row to row instead of attending: a causal
//! depthwise 1-D convolution, a block-diagonal matrix product (per-block gates), and the real-gated linear
//! recurrence scan (RG-LRU, "Griffin", De et al. 2024). Rows are consecutive positions of one sequence; the
//! convolution and the scan read and update the state they are given, so a sequence fed in pieces gives the
//! same rows as one pass.
//!
//! The gates and the scan are shared out over the thread pool, the gates' row updates use the SIMD axpy: at
//! RecurrentGemma 2B's widths a 512-token prompt spent 226 ms per recurrent layer in them on one thread with
//! plain loops, and 66 ms now on two (the layer's matrix products take several times that). Per decoded token
//! they cost O(width) (conv, scan) or O(width · block) (gates), a few percent of the matrix products. The
//! `tests` compare them with direct transcriptions of the definitions.

use super::{SyncPtr, ThreadPool};

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
/// weight), `bias` (blocks, m). Tasks take a block for a few rows; each row update is the SIMD axpy of
/// [`Ops`](super::ops::Ops).
pub fn block_diag_matmul(pool: &ThreadPool, x: &[f32], w: &[f32], bias: &[f32], m: usize, out: &mut [f32]) {
    /// Rows per task: enough to reuse a block's weights from cache, few enough to share a prompt out.
    const ROWS: usize = 16;
    let c = bias.len();
    let (n, blocks) = (x.len() / c, c / m);
    assert!(w.len() == c * m && out.len() == x.len() && blocks * m == c);
    let row_tasks = n.div_ceil(ROWS);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let axpy = super::ops::Ops::get().axpy;
    pool.run(row_tasks * blocks, &|task| {
        let (rt, b) = (task / blocks, task % blocks);
        let (wb, bb) = (&w[b * m * m..(b + 1) * m * m], &bias[b * m..(b + 1) * m]);
        for t in rt * ROWS..((rt + 1) * ROWS).min(n) {
            let xb = &x[t * c + b * m..t * c + (b + 1) * m];
            // SAFETY: task (rt, b) alone writes columns b·m..(b+1)·m of its rows t, inside `out` (n·c values).
            let ob = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(t * c + b * m), m) };
            ob.fill(0.0);
            for (&xi, wrow) in xb.iter().zip(wb.chunks_exact(m)) {
                axpy(ob, xi, wrow);
            }
            ob.iter_mut().zip(bb).for_each(|(o, b)| *o += b);
        }
    });
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
/// `RecurrentGemmaRglru`. Channels are independent: tasks take a group of channels over every row.
#[allow(clippy::too_many_arguments)]
pub fn rg_lru(
    pool: &ThreadPool,
    x: &[f32],
    gate_x: &[f32],
    gate_a: &[f32],
    lambda: &[f32],
    starts: bool,
    h: &mut [f32],
    out: &mut [f32],
) {
    /// Channels per task.
    const GROUP: usize = 64;
    let c = lambda.len();
    let n = x.len() / c;
    assert!(x.len() == n * c && gate_x.len() == x.len() && gate_a.len() == x.len() && out.len() == x.len() && h.len() == c);
    let (out_ptr, h_ptr) = (SyncPtr(out.as_mut_ptr()), SyncPtr(h.as_mut_ptr()));
    pool.run(c.div_ceil(GROUP), &|task| {
        let (c0, c1) = (task * GROUP, ((task + 1) * GROUP).min(c));
        let mut sp = [0f32; GROUP];
        for (s, l) in sp.iter_mut().zip(&lambda[c0..c1]) {
            *s = softplus(*l);
        }
        // SAFETY: this task alone reads and writes h[c0..c1] and out[t][c0..c1] for every row t.
        let h = unsafe { std::slice::from_raw_parts_mut(h_ptr.get().add(c0), c1 - c0) };
        for t in 0..n {
            let r = t * c + c0..t * c + c1;
            // SAFETY: as above: columns c0..c1 of row t, inside `out`.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(r.start), c1 - c0) };
            let reset = starts && t == 0;
            let (xr, gxr, gar) = (&x[r.clone()], &gate_x[r.clone()], &gate_a[r]);
            for i in 0..c1 - c0 {
                let (o, h) = (&mut o[i], &mut h[i]);
                let log_a = -8.0 * sigmoid(gar[i]) * sp[i];
                let gated = xr[i] * sigmoid(gxr[i]);
                let (a, m) = if reset { (0.0, 1.0) } else { (log_a.exp(), (1.0 - (2.0 * log_a).exp()).sqrt()) };
                *h = a * *h + gated * m;
                *o = *h;
            }
        }
    });
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
        // 37 rows: several row tasks, the last one partial.
        let (blocks, m, n) = (3, 4, 37);
        let c = blocks * m;
        let (x, w, b) = (vals(n * c, 4), vals(blocks * m * m, 5), vals(c, 6));
        let mut got = vec![0f32; n * c];
        block_diag_matmul(&ThreadPool::new(3), &x, &w, &b, m, &mut got);
        let mut one = vec![0f32; n * c];
        block_diag_matmul(&ThreadPool::new(1), &x, &w, &b, m, &mut one);
        assert_eq!(got, one);
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
        // 150 channels: three channel groups, the last one partial.
        let (c, n) = (150, 11);
        let x: Vec<f32> = vals(n * c, 7).iter().map(|v| 3.0 * v).collect();
        let (gx, ga) = (vals(n * c, 8), vals(n * c, 9));
        // Λ from strongly decaying (a ~ 0.02) to nearly keeping (a ~ 0.999).
        let lambda: Vec<f32> = (0..c).map(|i| -7.0 + 1.3 * (i % 6) as f32).collect();
        for (starts, threads) in [(true, 1), (false, 1), (true, 3), (false, 2)] {
            let pool = ThreadPool::new(threads);
            let h0 = if starts { vec![0f32; c] } else { vals(c, 10) };
            let want = lru_reference(&x, &gx, &ga, &lambda, &h0, starts);
            let mut h = h0.clone();
            let mut got = vec![0f32; n * c];
            rg_lru(&pool, &x, &gx, &ga, &lambda, starts, &mut h, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 1e-5 * (1.0 + w.abs()), "starts={starts} {i}: {g} vs {w}");
            }
            assert_eq!(h, got[(n - 1) * c..]);
            // Fed in pieces: the same bits.
            let mut h2 = h0.clone();
            let mut pieces = vec![0f32; n * c];
            for (k, (a, b)) in [(0, 1), (1, 4), (4, 4), (4, 11)].into_iter().enumerate() {
                let r = a * c..b * c;
                rg_lru(&pool, &x[r.clone()], &gx[r.clone()], &ga[r.clone()], &lambda, starts && k == 0, &mut h2, &mut pieces[r]);
            }
            assert_eq!(pieces, got, "starts={starts}");
        }
    }

    #[test]
    fn rg_lru_reset_ignores_the_carried_state() {
        // At a sequence's start a = 0 and the input is not rescaled: whatever h held is forgotten.
        let (x, gx, ga, lambda) = ([2.0f32], [0.5f32], [-0.3f32], [-1.0f32]);
        let (mut h, mut out) = ([123.0f32], [0f32]);
        rg_lru(&ThreadPool::new(1), &x, &gx, &ga, &lambda, true, &mut h, &mut out);
        assert_eq!(out[0], 2.0 * sigmoid(0.5));
    }
}

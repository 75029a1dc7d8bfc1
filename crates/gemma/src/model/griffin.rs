//! Griffin's recurrent mixer (RecurrentGemma; transformers' `RecurrentGemmaRecurrentBlock`), the second
//! [`MixerWeights`](super::weights::MixerWeights) kind beside attention:
//!
//! ```text
//! y   = gelu_tanh(linear_y(x) + b_y)                       the gate branch
//! u   = conv1d(linear_x(x) + b_x)                          causal, depthwise, conv1d_width taps, with bias
//! v   = RG-LRU(u)                                          block-diagonal gates, state h in f32
//! out = linear_out(v · y) + b_out
//! ```
//!
//! The matrix products run once over the rows of every chunk; the convolution and the scan run per chunk,
//! each against its own sequence's [`RecurrentState`](super::state::RecurrentState) (the last
//! `conv1d_width - 1` conv inputs and h), so a chunk may start anywhere, even inside the conv window, and a
//! batch mixes sequences freely. The state has a fixed size: memory does not grow with the sequence.

use super::decoder::{add_bias, grow, Chunk};
use super::state::LayerState;
use super::weights::RecurrentWeights;
use crate::kernels::ops::geglu;
use crate::kernels::recurrence::{block_diag_matmul, conv1d_causal, rg_lru};
use crate::kernels::{matmul, matmul_many, ActCache, ThreadPool};

/// The recurrent block's activation buffers, (T, lru_width) each; reused across calls.
#[derive(Default)]
pub struct RecurrentScratch {
    /// linear_y(x), then gelu(y) · v
    y: Vec<f32>,
    /// linear_x(x), the conv's input
    x: Vec<f32>,
    /// conv output u, the scan's input
    u: Vec<f32>,
    /// gate pre-activations
    gate_x: Vec<f32>,
    gate_a: Vec<f32>,
    /// scan output v
    v: Vec<f32>,
}

impl RecurrentScratch {
    fn grow(&mut self, n: usize) {
        for b in [&mut self.y, &mut self.x, &mut self.u, &mut self.gate_x, &mut self.gate_a, &mut self.v] {
            grow(b, n);
        }
    }
}

/// `out = linear_out(RG-LRU(conv1d(linear_x(x))) · gelu(linear_y(x)))` of the normed rows `x` (T, d_model)
/// into `out` (T, d_model), advancing each chunk's recurrent state of layer `l` by its rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn recurrent_block(
    pool: &ThreadPool,
    l: usize,
    w: &RecurrentWeights,
    chunks: &mut [Chunk],
    x: &[f32],
    out: &mut [f32],
    acts: &mut ActCache,
    s: &mut RecurrentScratch,
) {
    let lw = w.linear_y_bias.len();
    let t = out.len() / w.linear_out_bias.len();
    let block = w.input_gate.len() / lw;
    s.grow(t * lw);
    let (y, xb, u) = (&mut s.y[..t * lw], &mut s.x[..t * lw], &mut s.u[..t * lw]);
    let (gx, ga, v) = (&mut s.gate_x[..t * lw], &mut s.gate_a[..t * lw], &mut s.v[..t * lw]);
    matmul_many(pool, x, &mut [(&w.linear_y, &mut *y), (&w.linear_x, &mut *xb)], acts);
    add_bias(y, &w.linear_y_bias);
    add_bias(xb, &w.linear_x_bias);
    let mut row = 0;
    for ch in chunks.iter_mut() {
        let r = row * lw..(row + ch.n()) * lw;
        let LayerState::Recurrent(st) = &mut ch.state.layers[l] else {
            unreachable!("state layout checked in forward")
        };
        conv1d_causal(&xb[r.clone()], &w.conv, &w.conv_bias, &mut st.conv, &mut u[r]);
        row += ch.n();
    }
    block_diag_matmul(pool, u, &w.input_gate, &w.input_gate_bias, block, gx);
    block_diag_matmul(pool, u, &w.recurrent_gate, &w.recurrent_gate_bias, block, ga);
    row = 0;
    for ch in chunks.iter_mut() {
        let r = row * lw..(row + ch.n()) * lw;
        let starts = ch.state.pos == 0;
        let LayerState::Recurrent(st) = &mut ch.state.layers[l] else {
            unreachable!("state layout checked in forward")
        };
        rg_lru(pool, &u[r.clone()], &gx[r.clone()], &ga[r.clone()], &w.rg_lru_param, starts, &mut st.h, &mut v[r]);
        row += ch.n();
    }
    geglu(y, v); // y ← gelu_tanh(y) · v
    matmul(pool, &w.linear_out, y, out, acts);
    add_bias(out, &w.linear_out_bias);
}

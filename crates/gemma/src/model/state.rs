//! Per-sequence mutable state: the position reached and, per layer, what the layer remembers of the past.
//! For Gemma's attention layers that is a KV cache; global layers keep every position, local (sliding-window)
//! layers keep a ring of the last positions only, so their memory does not grow with the context.
//! (Griffin's recurrent layers will keep a fixed-size recurrent state here instead.)

use super::config::{AttentionScope, Config};

/// Keys and values of one attention layer. Position `j` lives in slot `j` (global) or `j % ring` (local).
#[derive(Debug, Clone)]
pub struct KvLayer {
    /// Ring length for a local layer; 0 for a global layer (linear, grows with the sequence).
    ring: usize,
    /// The layer's window (local layers).
    window: Option<usize>,
    kv_dim: usize,
    /// (slots, kv_dim)
    pub(crate) k: Vec<f32>,
    /// (slots, kv_dim)
    pub(crate) v: Vec<f32>,
}

impl KvLayer {
    fn new(scope: AttentionScope, kv_dim: usize) -> Self {
        let window = match scope {
            AttentionScope::Local { window } => Some(window),
            AttentionScope::Global => None,
        };
        KvLayer { ring: 0, window, kv_dim, k: Vec::new(), v: Vec::new() }
    }

    #[inline]
    pub(crate) fn slot(&self, pos: usize) -> usize {
        if self.ring == 0 {
            pos
        } else {
            pos % self.ring
        }
    }

    /// Make room to append positions `start..start + n`, keeping every position still visible to them.
    /// A local layer's ring must hold `window - 1` older positions plus the `n` new ones, all of which the
    /// chunk's queries read after the chunk has been written.
    pub(crate) fn reserve(&mut self, start: usize, n: usize) {
        match self.window {
            None => {
                let need = (start + n) * self.kv_dim;
                if self.k.len() < need {
                    // Grow geometrically: a long generation re-allocates O(log n) times, never per token.
                    let cap = need.max(self.k.len() * 2).max(64 * self.kv_dim);
                    self.k.resize(cap, 0.0);
                    self.v.resize(cap, 0.0);
                }
            }
            Some(w) => {
                let need = w - 1 + n;
                if self.ring < need {
                    self.regrow(start, need);
                }
            }
        }
    }

    /// Re-lay the ring with a larger length, moving the positions still in it.
    fn regrow(&mut self, start: usize, new_ring: usize) {
        let d = self.kv_dim;
        let mut k = vec![0f32; new_ring * d];
        let mut v = vec![0f32; new_ring * d];
        if self.ring > 0 {
            let keep = start.min(self.ring);
            for j in start - keep..start {
                let (a, b) = (self.slot(j) * d, (j % new_ring) * d);
                k[b..b + d].copy_from_slice(&self.k[a..a + d]);
                v[b..b + d].copy_from_slice(&self.v[a..a + d]);
            }
        }
        self.ring = new_ring;
        self.k = k;
        self.v = v;
    }

    /// First position visible from a query at `pos`.
    #[inline]
    pub(crate) fn first_visible(&self, pos: usize) -> usize {
        match self.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        }
    }

    pub fn bytes(&self) -> usize {
        (self.k.capacity() + self.v.capacity()) * std::mem::size_of::<f32>()
    }
}

/// Everything one sequence carries between forward passes.
#[derive(Debug, Clone)]
pub struct SeqState {
    /// Positions processed so far (the next token's position).
    pub pos: usize,
    /// The most positions this sequence may reach (the context size it was created with).
    pub max_pos: usize,
    pub(crate) layers: Vec<KvLayer>,
}

impl SeqState {
    pub fn new(cfg: &Config, max_pos: usize) -> Self {
        SeqState { pos: 0, max_pos, layers: cfg.layers.iter().map(|l| KvLayer::new(l.scope, cfg.kv_dim())).collect() }
    }

    /// Forget everything (keep the buffers).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Drop positions from `pos` on (e.g. to re-run the end of a prompt). Local layers can only go back within
    /// what their rings still hold; returns false if that is not possible.
    pub fn truncate(&mut self, pos: usize) -> bool {
        if pos > self.pos {
            return false;
        }
        // A ring still holds the last `ring` positions; rewinding further would need evicted ones.
        let ok = self.layers.iter().all(|l| l.window.is_none() || self.pos - pos <= l.ring.saturating_sub(l.window.unwrap() - 1));
        if ok {
            self.pos = pos;
        }
        ok
    }

    /// Bytes held by the caches.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(KvLayer::bytes).sum()
    }
}

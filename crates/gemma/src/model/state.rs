//! Per-sequence mutable state: the position reached and, per layer, what the layer remembers of the past
//! ([`LayerState`], one variant per mixer kind). An attention layer keeps a KV cache: global layers every
//! position, local (sliding-window) layers a ring of the last positions only, so their memory does not grow
//! with the context. A recurrent (Griffin) layer keeps a fixed-size state: the RG-LRU's hidden vector and the
//! last `conv1d_width - 1` inputs of its convolution. A KV-shared layer (Gemma 4) keeps nothing: it reads the
//! cache of the layer it shares with.

use super::config::{AttentionScope, Config, Mixer, RecurrentSpec};
use crate::kernels::attention::KvView;

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

    /// The attention kernel's view of positions `0..len` (a ring holds only the last `ring` of them).
    pub(crate) fn view(&self, len: usize) -> KvView<'_> {
        KvView { k: &self.k, v: &self.v, ring: self.ring, len }
    }

    pub fn bytes(&self) -> usize {
        (self.k.capacity() + self.v.capacity()) * std::mem::size_of::<f32>()
    }
}

/// Griffin's recurrent layer state: constant size, whatever the sequence length.
#[derive(Debug, Clone)]
pub struct RecurrentState {
    /// RG-LRU hidden state h_t, (lru_width), f32 as transformers accumulates it.
    pub(crate) h: Vec<f32>,
    /// The last `conv1d_width - 1` inputs of the causal depthwise convolution, oldest first,
    /// (conv1d_width - 1, lru_width).
    pub(crate) conv: Vec<f32>,
}

impl RecurrentState {
    fn new(spec: &RecurrentSpec) -> Self {
        RecurrentState { h: vec![0.0; spec.lru_width], conv: vec![0.0; (spec.conv1d_width - 1) * spec.lru_width] }
    }
    fn clear(&mut self) {
        self.h.fill(0.0);
        self.conv.fill(0.0);
    }
}

/// What one layer remembers of a sequence, by mixer kind.
#[derive(Debug, Clone)]
pub enum LayerState {
    Kv(KvLayer),
    Recurrent(RecurrentState),
    /// A KV-shared attention layer: it attends over layer `source`'s cache and stores nothing itself.
    Shared { source: usize },
}

impl LayerState {
    /// Bytes this layer holds for the sequence (0 for a KV-shared layer).
    pub fn bytes(&self) -> usize {
        match self {
            LayerState::Shared { .. } => 0,
            LayerState::Kv(kv) => kv.bytes(),
            LayerState::Recurrent(r) => (r.h.capacity() + r.conv.capacity()) * std::mem::size_of::<f32>(),
        }
    }
}

/// What a state's layers look like, to refuse a state made for another model before touching anything:
/// per layer, the mixer kind and its widths (a KV-shared layer: its source layer).
pub(crate) fn state_layout(cfg: &Config) -> Vec<(u8, usize, usize)> {
    let window = |s: AttentionScope| match s {
        AttentionScope::Global => 0,
        AttentionScope::Local { window } => window,
    };
    cfg.layers
        .iter()
        .map(|l| match l.mixer {
            Mixer::Attention(a) => match a.kv_source {
                Some(source) => (2, source, 0),
                None => (0, a.kv_dim(), window(a.scope)),
            },
            Mixer::Recurrent(r) => (1, r.lru_width, r.conv1d_width),
        })
        .collect()
}

/// The bytes a [`SeqState`] holds after `positions` positions fed in chunks of at most `chunk` (f32, as the
/// decoder keeps them): per recurrent layer h and the last `conv1d_width - 1` conv inputs, per local attention
/// layer a ring of `window - 1 + chunk` keys and values (what [`KvLayer::reserve`] keeps), per global layer
/// every position (without the slack of its geometric growth), per KV-shared layer nothing.
pub fn state_bytes(cfg: &Config, positions: usize, chunk: usize) -> u64 {
    let f32s: usize = cfg
        .layers
        .iter()
        .map(|l| match l.mixer {
            Mixer::Recurrent(r) => r.lru_width * r.conv1d_width,
            Mixer::Attention(a) if positions == 0 || a.kv_source.is_some() => 0,
            Mixer::Attention(a) => {
                let slots = match a.scope {
                    AttentionScope::Global => positions,
                    AttentionScope::Local { window } => window - 1 + chunk.min(positions).max(1),
                };
                2 * slots * a.kv_dim()
            }
        })
        .sum();
    (f32s * std::mem::size_of::<f32>()) as u64
}

/// Everything one sequence carries between forward passes.
#[derive(Debug, Clone)]
pub struct SeqState {
    /// Positions processed so far (the next token's position).
    pub pos: usize,
    /// The most positions this sequence may reach (the context size it was created with).
    pub max_pos: usize,
    pub(crate) layers: Vec<LayerState>,
    /// [`state_layout`] of the model it was made for.
    pub(crate) layout: std::sync::Arc<[(u8, usize, usize)]>,
}

impl SeqState {
    pub fn new(cfg: &Config, max_pos: usize) -> Self {
        let layers = cfg
            .layers
            .iter()
            .map(|l| match &l.mixer {
                Mixer::Attention(a) => match a.kv_source {
                    Some(source) => LayerState::Shared { source },
                    None => LayerState::Kv(KvLayer::new(a.scope, a.kv_dim())),
                },
                Mixer::Recurrent(r) => LayerState::Recurrent(RecurrentState::new(r)),
            })
            .collect();
        SeqState { pos: 0, max_pos, layers, layout: state_layout(cfg).into() }
    }

    /// Forget everything (keep the buffers).
    pub fn reset(&mut self) {
        self.pos = 0;
        for l in &mut self.layers {
            if let LayerState::Recurrent(r) = l {
                r.clear();
            }
        }
    }

    /// Drop positions from `pos` on (e.g. to re-run the end of a prompt). Local layers can only go back within
    /// what their rings still hold, and a recurrent state cannot go back at all (it folds every position into
    /// one vector) except to the start; returns false, changing nothing, if that is not possible.
    pub fn truncate(&mut self, pos: usize) -> bool {
        if pos > self.pos {
            return false;
        }
        if pos == 0 {
            self.reset();
            return true;
        }
        // A ring still holds the last `ring` positions; rewinding further would need evicted ones.
        let back = self.pos - pos;
        let ok = self.layers.iter().all(|l| match l {
            LayerState::Kv(kv) => kv.window.is_none() || back <= kv.ring.saturating_sub(kv.window.unwrap() - 1),
            LayerState::Recurrent(_) => back == 0,
            LayerState::Shared { .. } => true,
        });
        if ok {
            self.pos = pos;
        }
        ok
    }

    /// Bytes layer `l` holds (0 for a KV-shared layer).
    pub fn layer_bytes(&self, l: usize) -> usize {
        self.layers[l].bytes()
    }

    /// Bytes held by the caches and recurrent states.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerState::bytes).sum()
    }
}

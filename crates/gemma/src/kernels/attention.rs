//! Scaled dot-product attention of a few queries over a key/value cache, under a mask.
//!
//! The kernel knows heads, positions and masks, not models: the caller describes its head layout ([`Heads`]),
//! where its keys and values lie ([`KvView`], a linear buffer or a ring) and which keys each query may see
//! ([`Mask`]: causal, sliding window, bidirectional spans, or none).
//!
//! The softmax is computed online over blocks of keys (FlashAttention's recurrence), with no score matrix.
//! Blocks are aligned to multiples of their length in absolute positions, so a query's sums never depend on
//! how its sequence was cut into calls or which task (thread) it fell in: the same query at the same position
//! over the same keys gives the same bits. A task takes a few queries and the query heads of one key/value
//! head (grouped-query attention), so each key and value row it reads serves all of them while it is in L1.

use std::ops::Range;

use super::ops::Ops;
use super::{SyncPtr, ThreadPool};

/// Head layout and scaling of an attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heads {
    /// Query heads. A multiple of `n_kv_heads`: query head `h` reads key/value head `h / (n_heads / n_kv_heads)`.
    pub n_heads: usize,
    /// Key/value heads: 1 = multi-query (MQA), `n_heads` = multi-head (MHA), in between = grouped-query (GQA).
    pub n_kv_heads: usize,
    /// Values per head, in queries, keys and values alike.
    pub head_dim: usize,
    /// Multiplies `q·k` (typically `1/sqrt(head_dim)`).
    pub scale: f32,
    /// `c·tanh(s/c)` on the scaled scores, before the mask (Gemma 2's attention soft-capping).
    pub softcap: Option<f32>,
}

impl Heads {
    /// Width of a row of queries (or of the output): `n_heads · head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    /// Width of a row of keys (or values): `n_kv_heads · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// Keys and values by absolute position `j`, stored in row `slot(j)`: `j` in a linear buffer (`ring == 0`), or
/// `j % ring` in a ring buffer (a sliding-window cache, which holds the last `ring` positions, `len - ring..len`).
/// Rows are `kv_dim = n_kv_heads · head_dim` f32 wide, head after head; `k` and `v` are laid out alike.
#[derive(Debug, Clone, Copy)]
pub struct KvView<'a> {
    /// (rows, kv_dim): at least `len` rows (linear) or `ring` rows (ring).
    pub k: &'a [f32],
    /// (rows, kv_dim), as `k`.
    pub v: &'a [f32],
    /// Ring length in rows; 0 for a linear buffer.
    pub ring: usize,
    /// Positions that exist: `0..len` (of which a ring still holds the last `ring`).
    pub len: usize,
}

impl KvView<'_> {
    /// The row holding position `j`.
    #[inline]
    pub fn slot(&self, j: usize) -> usize {
        if self.ring == 0 {
            j
        } else {
            j % self.ring
        }
    }
}

/// Which keys a query at absolute position `p` may see: always one contiguous range of positions
/// ([`Mask::visible`]). The semantics are transformers' `masking_utils` mask functions (and llama.cpp's):
/// - causal: keys `..= p` (`causal_mask_function`); with `window: Some(w)`, keys `p + 1 - w ..= p`: key `j` is
///   visible iff `p - j < w` (`sliding_window_causal_mask_function`, llama.cpp's standard SWA);
/// - `bidirectional` spans (sorted, disjoint ranges of absolute positions): a query inside a span also sees
///   every key of that span, later ones included (PaliGemma's prefix-LM is one span `0..prefix_len`; Gemma 3's
///   images are one span per image's soft tokens). This is OR'ed with the causal/window mask, as transformers'
///   `or_mask_function` combines them, so the union stays contiguous (both contain `p`);
///   With `window_bounds_spans` (Gemma 3's image blocks: transformers AND's its sliding-window overlay after the
///   OR), a span only adds its *later* keys: the window still bounds the past, even inside the span;
/// - not causal (an encoder, e.g. an image tower): every key `0..len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mask<'a> {
    pub causal: bool,
    /// Sliding window in positions, the query's own included (`>= 1`); only with `causal`.
    pub window: Option<usize>,
    /// Sorted, disjoint ranges of absolute positions attending bidirectionally within themselves; only
    /// meaningful with `causal`.
    pub bidirectional: &'a [Range<usize>],
    /// The sliding window also bounds the keys a span adds (Gemma 3); otherwise a query in a span sees the
    /// whole span whatever the window (PaliGemma 2's prefix).
    pub window_bounds_spans: bool,
}

impl<'a> Mask<'a> {
    /// Keys `..= p`.
    pub const fn causal() -> Mask<'static> {
        Mask { causal: true, window: None, bidirectional: &[], window_bounds_spans: false }
    }

    /// Keys `p + 1 - window ..= p`. Panics if `window` is 0.
    pub fn sliding(window: usize) -> Mask<'static> {
        assert!(window >= 1, "a sliding window must include the query's own position");
        Mask { causal: true, window: Some(window), bidirectional: &[], window_bounds_spans: false }
    }

    /// No mask (an encoder): every key.
    pub const fn none() -> Mask<'static> {
        Mask { causal: false, window: None, bidirectional: &[], window_bounds_spans: false }
    }

    /// This mask OR'ed with bidirectional attention inside each span. Panics unless the spans are sorted and
    /// disjoint (`spans[i].end <= spans[i + 1].start`).
    pub fn with_bidirectional<'b>(self, spans: &'b [Range<usize>]) -> Mask<'b>
    where
        'a: 'b,
    {
        let m = Mask { bidirectional: spans, ..self };
        m.check();
        m
    }

    /// The keys visible from a query at position `pos`, when keys `0..len` exist (`len` only bounds the
    /// unmasked case: a causal range may end past `len`, which [`attend`] rejects).
    ///
    /// Over consecutive positions both ends never decrease (spans being sorted and disjoint), and consecutive
    /// ranges overlap, so the keys of a run of queries are the range from the first's start to the last's end.
    pub fn visible(&self, pos: usize, len: usize) -> Range<usize> {
        if !self.causal {
            return 0..len;
        }
        let mut r = match self.window {
            Some(w) => (pos + 1).saturating_sub(w)..pos + 1,
            None => 0..pos + 1,
        };
        // The first span ending after pos is the only one that may hold it.
        let i = self.bidirectional.partition_point(|s| s.end <= pos);
        if let Some(s) = self.bidirectional.get(i) {
            if s.start <= pos {
                if !self.window_bounds_spans {
                    r.start = r.start.min(s.start);
                }
                r.end = r.end.max(s.end);
            }
        }
        r
    }

    /// Panics on an inconsistent mask (the fields are public).
    fn check(&self) {
        assert!(self.window != Some(0), "a sliding window must include the query's own position");
        assert!(self.causal || self.window.is_none(), "a sliding window needs a causal mask");
        assert!(
            self.bidirectional.iter().all(|s| s.start <= s.end)
                && self.bidirectional.windows(2).all(|w| w[0].end <= w[1].start),
            "bidirectional spans must be sorted and disjoint: {:?}",
            self.bidirectional
        );
    }
}

/// Attention of `n` queries at absolute positions `q_pos0..q_pos0 + n` over the keys and values of `kv`, each
/// query seeing the keys [`Mask::visible`] gives it: `out = softmax(mask(softcap(scale · q·kᵀ))) · v`, per
/// query head, with the keys and values of its key/value head.
///
/// - `q`: (n, n_heads · head_dim) f32, head after head; `out`: the same shape, overwritten.
/// - Every visible key must exist (`visible(p).end <= kv.len`: with a causal mask, the queries' own keys are
///   already in `kv`; a bidirectional span must be whole in `kv`, so a caller feeding a sequence in chunks
///   keeps each span within one chunk or earlier ones), and a non-causal call needs `kv.len >= 1`.
/// - A ring must still hold every key visible to any of the queries (`kv.len - ring <= visible(q_pos0).start`):
///   a sliding-window cache of `window - 1 + n` rows does.
///
/// These are checked (panics); the work is spread over `pool`. Results do not depend on the number of threads
/// or on how a sequence's queries are split into calls: a query's bits depend only on its position, its mask
/// and the keys it sees.
pub fn attend(pool: &ThreadPool, heads: &Heads, q: &[f32], q_pos0: usize, kv: &KvView, mask: &Mask, out: &mut [f32]) {
    attend_with(Ops::get(), pool, heads, q, q_pos0, kv, mask, out)
}

/// [`attend`] with a given [`Ops`] variant (tests run every one).
#[allow(clippy::too_many_arguments)]
fn attend_with(
    ops: &Ops,
    pool: &ThreadPool,
    heads: &Heads,
    q: &[f32],
    q_pos0: usize,
    kv: &KvView,
    mask: &Mask,
    out: &mut [f32],
) {
    /// Rows (query, head) per task, and keys per block of the online softmax.
    const ROWS: usize = 16;
    const BLOCK: usize = 32;
    let &Heads { n_heads, n_kv_heads: n_kv, head_dim: hd, scale, softcap: cap } = heads;
    assert!(hd > 0 && n_kv > 0 && n_heads % n_kv == 0, "bad head layout {heads:?}");
    let (qd, kvd, group) = (heads.q_dim(), heads.kv_dim(), n_heads / n_kv);
    let n = q.len() / qd;
    let (q_len, out_len) = (q.len(), out.len());
    assert!(q_len == n * qd && out_len == q_len, "q, out: {q_len} and {out_len} values, not both (n, {qd})");
    if n == 0 {
        return;
    }
    mask.check();
    // The keys any query sees (see Mask::visible: the ends are monotonic in the position).
    let len = kv.len;
    let (lo_all, hi_all) = (mask.visible(q_pos0, len).start, mask.visible(q_pos0 + n - 1, len).end);
    let q_end = q_pos0 + n;
    assert!(lo_all < hi_all && hi_all <= len, "queries at {q_pos0}..{q_end} see keys {lo_all}..{hi_all}, of {len} existing");
    let needed = if kv.ring == 0 { hi_all } else { kv.ring };
    assert!(kv.k.len().min(kv.v.len()) >= needed * kvd, "k or v holds fewer than {needed} rows of {kvd}");
    assert!(kv.ring == 0 || lo_all + kv.ring >= len, "a ring of {} no longer holds key {lo_all} of {len}", kv.ring);

    // Heads per task: the whole group, unless that leaves threads idle (decoding one token).
    let threads = pool.n_threads();
    let hpt = if n * n_kv >= threads { group.min(ROWS) } else { 1 };
    let h_chunks = group.div_ceil(hpt);
    // Queries per task: fill ROWS, but keep a few tasks per thread for balance (causal rows differ in length).
    let qpt = (ROWS / hpt).max(1).min(n.div_ceil(4 * threads)).max(1);
    let q_blocks = n.div_ceil(qpt);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    pool.run(q_blocks * n_kv * h_chunks, &|task| {
        let (qb, rest) = (task / (n_kv * h_chunks), task % (n_kv * h_chunks));
        let (kvh, hc) = (rest / h_chunks, rest % h_chunks);
        let (i0, i1) = (qb * qpt, (qb * qpt + qpt).min(n));
        let h0 = kvh * group + hc * hpt;
        let h1 = (h0 + hpt).min((kvh + 1) * group);
        let nh = h1 - h0;
        let rows = (i1 - i0) * nh;
        // Row r is query i0 + r / nh, head h0 + r % nh.
        let qs: [&[f32]; ROWS] = std::array::from_fn(|r| {
            if r >= rows {
                return &[][..];
            }
            let (i, h) = (i0 + r / nh, h0 + r % nh);
            &q[i * qd + h * hd..i * qd + (h + 1) * hd]
        });
        let mut o: [&mut [f32]; ROWS] = std::array::from_fn(|r| {
            if r >= rows {
                return &mut [][..];
            }
            let (i, h) = (i0 + r / nh, h0 + r % nh);
            // SAFETY: this task alone writes out[i][h·hd..(h+1)·hd] for its queries i and heads h, and
            // `out` has n·qd elements (asserted above).
            unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(i * qd + h * hd), hd) }
        });
        o[..rows].iter_mut().for_each(|o| o.fill(0.0));
        // Keys visible to each query of the task (qpt <= ROWS).
        let vis: [Range<usize>; ROWS] =
            std::array::from_fn(|qi| if i0 + qi < i1 { mask.visible(q_pos0 + i0 + qi, kv.len) } else { 0..0 });
        let mut scores = [0f32; ROWS * BLOCK];
        let (mut m, mut sum) = ([f32::NEG_INFINITY; ROWS], [0f32; ROWS]);
        let (mut keys, mut vals): ([&[f32]; BLOCK], [&[f32]; BLOCK]) = ([&[]; BLOCK], [&[]; BLOCK]);
        // The task walks the union of its queries' keys in blocks small enough to stay in L1 while every query
        // goes over them. Blocks are aligned to multiples of BLOCK so that a query's sums do not depend on
        // which task it fell in (chunking, threads).
        let (lo, hi) = (vis[0].start, vis[i1 - i0 - 1].end);
        let mut j0 = lo / BLOCK * BLOCK;
        while j0 < hi {
            let j1 = (j0 + BLOCK).min(hi);
            for j in j0.max(lo)..j1 {
                let at = kv.slot(j) * kvd + kvh * hd;
                keys[j - j0] = &kv.k[at..at + hd];
                vals[j - j0] = &kv.v[at..at + hd];
            }
            for qi in 0..i1 - i0 {
                // This query's visible part of the block, shared by its heads.
                let (a, b) = (vis[qi].start.max(j0), vis[qi].end.min(j1));
                if a >= b {
                    continue;
                }
                let w = b - a;
                (ops.dots)(&qs[qi * nh..(qi + 1) * nh], &keys[a - j0..b - j0], &mut scores[..nh * w]);
                for (hh, sc) in scores[..nh * w].chunks_exact_mut(w).enumerate() {
                    let r = qi * nh + hh;
                    (ops.scale)(sc, scale);
                    if let Some(cap) = cap {
                        (ops.softcap)(sc, cap);
                    }
                    let m_new = sc.iter().copied().fold(m[r], f32::max);
                    let keep = if m_new > m[r] { (m[r] - m_new).exp() } else { 1.0 };
                    sum[r] = sum[r] * keep + (ops.exp_sum)(sc, m_new);
                    m[r] = m_new;
                    (ops.weighted_sum)(o[r], keep, sc, &vals[a - j0..b - j0]);
                }
            }
            j0 = j1;
        }
        for r in 0..rows {
            (ops.scale)(o[r], 1.0 / sum[r]);
        }
    });
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // lists of spans that hold one span
mod tests {
    use super::*;

    #[test]
    fn visible_ranges_by_hand() {
        assert_eq!(Mask::causal().visible(0, 10), 0..1);
        assert_eq!(Mask::causal().visible(5, 10), 0..6);
        // The window counts the query itself: p - j < 3.
        let s = Mask::sliding(3);
        assert_eq!([0, 1, 2, 3, 5].map(|p| s.visible(p, 10)), [0..1, 0..2, 0..3, 1..4, 3..6]);
        assert_eq!(Mask::sliding(1).visible(4, 10), 4..5);
        assert_eq!(Mask::none().visible(5, 10), 0..10);
        assert_eq!(Mask::none().visible(0, 3), 0..3);
        // Prefix-LM: the prefix 0..4 sees itself whole, the rest is causal.
        let spans = [0..4];
        let p = Mask::causal().with_bidirectional(&spans);
        assert_eq!([0, 3, 4, 9].map(|q| p.visible(q, 10)), [0..4, 0..4, 0..5, 0..10]);
        // Spans (adjacent ones and an empty one included) OR'ed with a window of 3.
        let spans = [2..5, 5..6, 7..7, 8..12];
        let m = Mask::sliding(3).with_bidirectional(&spans);
        let want = [0..1, 0..2, 0..5, 1..5, 2..5, 3..6, 4..7, 5..8, 6..12, 7..12, 8..12, 8..12, 10..13];
        assert_eq!((0..13).map(|q| m.visible(q, 13)).collect::<Vec<_>>(), want);
        // Without a window a span only extends the end.
        let m = Mask::causal().with_bidirectional(&spans);
        assert_eq!([1, 2, 4, 6, 8, 11, 12].map(|q| m.visible(q, 13)), [0..2, 0..5, 0..5, 0..7, 0..12, 0..12, 0..13]);
    }

    #[test]
    #[should_panic(expected = "sorted and disjoint")]
    fn overlapping_spans_are_rejected() {
        let spans = [0..4, 3..6];
        let _ = Mask::causal().with_bidirectional(&spans);
    }

    #[test]
    #[should_panic(expected = "sorted and disjoint")]
    fn unsorted_spans_are_rejected() {
        let spans = [5..6, 0..4];
        let _ = Mask::causal().with_bidirectional(&spans);
    }

    const L1: Heads = Heads { n_heads: 2, n_kv_heads: 1, head_dim: 4, scale: 0.5, softcap: None };

    #[test]
    #[should_panic(expected = "of 6 existing")]
    fn a_span_past_the_existing_keys_is_rejected() {
        // Queries 4..6 with keys 0..6, but the query at 5 is in the span 4..8 whose keys 6 and 7 are missing.
        let (kv, q) = (vec![0.5; 8 * 4], vec![0.5; 2 * 8]);
        let spans = [4..8];
        let mut out = vec![0.0; 2 * 8];
        let view = KvView { k: &kv, v: &kv, ring: 0, len: 6 };
        attend(&ThreadPool::new(1), &L1, &q, 4, &view, &Mask::causal().with_bidirectional(&spans), &mut out);
    }

    #[test]
    #[should_panic(expected = "no longer holds")]
    fn a_ring_too_short_for_the_window_is_rejected() {
        // Window 4 and 2 queries need 4 - 1 + 2 = 5 rows of ring.
        let (kv, q) = (vec![0.5; 4 * 4], vec![0.5; 2 * 8]);
        let mut out = vec![0.0; 2 * 8];
        let view = KvView { k: &kv, v: &kv, ring: 4, len: 12 };
        attend(&ThreadPool::new(1), &L1, &q, 10, &view, &Mask::sliding(4), &mut out);
    }

    #[test]
    #[should_panic(expected = "of 3 existing")]
    fn causal_queries_need_their_own_keys() {
        let (kv, q) = (vec![0.5; 8 * 4], vec![0.5; 2 * 8]);
        let mut out = vec![0.0; 2 * 8];
        let view = KvView { k: &kv, v: &kv, ring: 0, len: 3 };
        attend(&ThreadPool::new(1), &L1, &q, 2, &view, &Mask::causal(), &mut out);
    }

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Key `j` visible from query `p`, key by key as transformers' mask functions say it (independently of
    /// `Mask::visible`): `causal_mask_function` (j <= p) and `sliding_window_overlay` (p - j < w) AND'ed,
    /// then OR'ed (`or_mask_function`) with "p and j in the same bidirectional span"; no mask sees everything.
    /// With `window_bounds_spans` (Gemma 3) the window overlay is AND'ed after the OR instead.
    fn sees(mask: &Mask, p: usize, j: usize) -> bool {
        let in_window = !matches!(mask.window, Some(w) if j <= p && p - j >= w);
        let same_span = mask.bidirectional.iter().any(|s| s.contains(&p) && s.contains(&j));
        if !mask.causal {
            return true;
        }
        if mask.window_bounds_spans {
            in_window && (j <= p || same_span)
        } else {
            (j <= p && in_window) || same_span
        }
    }

    /// The definition, densely and in f64: for each query and head, the scores of the keys it sees (of all `t`
    /// positions, per [`sees`]), scaled, soft-capped, soft-maxed, and the weighted sum of their values.
    /// `k` and `v` are (t, kv_dim) by position.
    fn reference(heads: &Heads, q: &[f32], k: &[f32], v: &[f32], t: usize, mask: &Mask) -> Vec<f64> {
        let (hd, qd, kvd) = (heads.head_dim, heads.q_dim(), heads.kv_dim());
        let group = heads.n_heads / heads.n_kv_heads;
        let mut out = vec![0f64; q.len()];
        for p in 0..q.len() / qd {
            for h in 0..heads.n_heads {
                let qh = &q[p * qd + h * hd..][..hd];
                let at = |j: usize| j * kvd + (h / group) * hd;
                let keys: Vec<usize> = (0..t).filter(|&j| sees(mask, p, j)).collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let dot: f64 = qh.iter().zip(&k[at(j)..][..hd]).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let s = heads.scale as f64 * dot;
                        heads.softcap.map_or(s, |c| c as f64 * (s / c as f64).tanh())
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                let o = &mut out[p * qd + h * hd..][..hd];
                for (&j, e) in keys.iter().zip(&e) {
                    o.iter_mut().zip(&v[at(j)..][..hd]).for_each(|(o, &x)| *o += e / sum * x as f64);
                }
            }
        }
        out
    }

    /// Not a test: times one SigLIP-So400m layer's attention at 896 px (4096 patches, 16 heads of 72, no mask),
    /// where an image encode spends ~70% of its time (`gemma bench` on a Gemma 3 4B checkpoint says so).
    /// `cargo test --release -p gemma --lib attention_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn attention_speed() {
        let (n, nh, hd) = (4096, 16, 72);
        let heads = Heads { n_heads: nh, n_kv_heads: nh, head_dim: hd, scale: (hd as f32).powf(-0.5), softcap: None };
        let (q, k, v) = (values(n * nh * hd, 1), values(n * nh * hd, 2), values(n * nh * hd, 3));
        for threads in [1, 2] {
            let pool = ThreadPool::new(threads);
            let mut out = vec![0.0; n * nh * hd];
            let t = std::time::Instant::now();
            attend(&pool, &heads, &q, 0, &KvView { k: &k, v: &v, ring: 0, len: n }, &Mask::none(), &mut out);
            let s = t.elapsed().as_secs_f64();
            eprintln!("{threads} thread(s): {s:.2} s per layer, {:.1} GFLOP/s", 4.0 * (n * n * nh * hd) as f64 / s / 1e9);
        }
    }

    /// Cut `0..t` into chunks of the given sizes (cycled), a chunk that would end strictly inside a
    /// bidirectional span being extended to the span's end: a query in a span sees all of it, so the whole span
    /// must be in the cache by the end of the chunk that holds its first query.
    fn chunks(t: usize, sizes: &[usize], spans: &[Range<usize>]) -> Vec<Range<usize>> {
        let (mut out, mut at) = (Vec::new(), 0);
        while at < t {
            let mut end = at.saturating_add(sizes[out.len() % sizes.len()]).min(t);
            if let Some(s) = spans.iter().find(|s| s.start < end && end < s.end) {
                end = s.end;
            }
            out.push(at..end);
            at = end;
        }
        out
    }

    /// Feeds the `t` queries in chunks, as a cache is filled: keys and values of a causal mask's later chunks do
    /// not exist yet (their rows are NaN, or hold older positions in a ring), the unmasked case sees all `t`.
    #[allow(clippy::too_many_arguments)]
    fn run_chunked(
        ops: &Ops,
        pool: &ThreadPool,
        heads: &Heads,
        (q, k, v): (&[f32], &[f32], &[f32]),
        t: usize,
        mask: &Mask,
        cuts: &[Range<usize>],
        ring: usize,
    ) -> Vec<f32> {
        let (qd, kvd) = (heads.q_dim(), heads.kv_dim());
        let rows = if ring == 0 { t } else { ring };
        let (mut kc, mut vc) = (vec![f32::NAN; rows * kvd], vec![f32::NAN; rows * kvd]);
        let mut out = vec![f32::NAN; t * qd];
        let mut written = 0;
        for c in cuts {
            let len = if mask.causal { c.end } else { t };
            for j in written..len {
                let s = if ring == 0 { j } else { j % ring };
                kc[s * kvd..(s + 1) * kvd].copy_from_slice(&k[j * kvd..(j + 1) * kvd]);
                vc[s * kvd..(s + 1) * kvd].copy_from_slice(&v[j * kvd..(j + 1) * kvd]);
            }
            written = len;
            let view = KvView { k: &kc, v: &vc, ring, len };
            let (qc, oc) = (&q[c.start * qd..c.end * qd], &mut out[c.start * qd..c.end * qd]);
            attend_with(ops, pool, heads, qc, c.start, &view, mask, oc);
        }
        out
    }

    /// One mask on one head layout and its inputs, for every Ops variant: every chunking, thread count and
    /// storage (linear, and a ring of what the widest chunk needs when that is shorter than the sequence) within
    /// 1e-5 of the largest output of the dense f64 reference, and all giving the same bits. Returns the largest
    /// relative error and whether a ring was used.
    fn check_mask(heads: &Heads, qkv: (&[f32], &[f32], &[f32]), t: usize, mask: &Mask, pools: &[ThreadPool]) -> (f64, bool) {
        const SIZES: [&[usize]; 5] = [&[usize::MAX], &[1], &[7, 2, 5], &[33], &[16]];
        let want = reference(heads, qkv.0, qkv.1, qkv.2, t, mask);
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        let (mut worst, mut ringed) = (0f64, false);
        for ops in Ops::available() {
            let mut first: Option<Vec<f32>> = None;
            for sizes in SIZES {
                let cuts = chunks(t, sizes, mask.bidirectional);
                let need = cuts.iter().map(|c| if mask.causal { c.end - mask.visible(c.start, c.end).start } else { t });
                let need = need.max().unwrap();
                let rings = if need < t { vec![0, need] } else { vec![0] };
                ringed |= rings.len() > 1;
                for (&ring, pool) in rings.iter().flat_map(|r| pools.iter().map(move |p| (r, p))) {
                    let got = run_chunked(ops, pool, heads, qkv, t, mask, &cuts, ring);
                    let what = format!("{} {mask:?} {heads:?} chunks {sizes:?} ring {ring} threads {}", ops.name, pool.n_threads());
                    let err = got.iter().zip(&want).fold(0f64, |m, (&g, &w)| m.max((g as f64 - w).abs()));
                    assert!(err <= 1e-5 * scale, "{what}: max error {err:e} of {scale}");
                    worst = worst.max(err / scale);
                    let first = first.get_or_insert_with(|| got.clone());
                    let same = first.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{what}: not the same bits as the first run");
                }
            }
        }
        (worst, ringed)
    }

    /// Every mask kind (causal, sliding window, prefix-LM, bidirectional spans in a causal stream with and
    /// without a window, none) × MHA / GQA / MQA × with and without soft-cap, as [`check_mask`] checks them.
    #[test]
    fn matches_dense_reference_and_is_the_same_for_every_chunking() {
        const T: usize = 100;
        let pools = [1, 2, 3].map(ThreadPool::new);
        // (n_heads, n_kv_heads, head_dim): MHA, GQA, and MQA with a group wider than a task's 16 rows.
        let layouts = [(4, 4, 16), (8, 2, 32), (20, 1, 16)];
        let prefix = [0..23];
        // Spans across block boundaries (32, 64), longer and shorter than the windows, one of a single position.
        let images = [10..20, 33..70, 80..81];
        let masks = [
            Mask::causal(),
            Mask::sliding(7),
            Mask::sliding(40),
            Mask::causal().with_bidirectional(&prefix),
            Mask::causal().with_bidirectional(&images),
            Mask::sliding(7).with_bidirectional(&images),
            Mask::sliding(40).with_bidirectional(&images),
            Mask { window_bounds_spans: true, ..Mask::sliding(7).with_bidirectional(&images) },
            Mask { window_bounds_spans: true, ..Mask::sliding(40).with_bidirectional(&images) },
            Mask::none(),
        ];
        let mut worst = 0f64;
        for (li, &(n_heads, n_kv_heads, head_dim)) in layouts.iter().enumerate() {
            for softcap in [None, Some(1.5)] {
                let heads = Heads { n_heads, n_kv_heads, head_dim, scale: 0.5, softcap };
                let seed = 10 * li as u64 + softcap.is_some() as u64;
                let q = values(T * heads.q_dim(), seed);
                let (k, v) = (values(T * heads.kv_dim(), seed + 100), values(T * heads.kv_dim(), seed + 200));
                for mask in &masks {
                    let (err, ringed) = check_mask(&heads, (&q, &k, &v), T, mask, &pools);
                    // Every windowed mask also went through a ring shorter than the sequence.
                    assert!(ringed || mask.window.is_none(), "{mask:?}: no ring");
                    worst = worst.max(err);
                }
            }
        }
        eprintln!("largest error {worst:.1e} of the largest output");
    }
}

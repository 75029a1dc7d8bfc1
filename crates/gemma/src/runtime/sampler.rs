//! Sampling the next token from logits.
//!
//! The chain, in order (transformers' logits-processor order, which is also OpenAI's semantics: `top_p`
//! applies to the temperature-scaled distribution):
//! 1. penalties over the last `repeat_last_n` tokens: repetition (CTRL-style: positive logits divided, negative
//!    multiplied), presence (`-presence` once a token appeared), frequency (`-frequency × count`);
//! 2. temperature 0 → greedy: the highest logit, ties to the lowest id; done;
//! 3. temperature: logits / T;
//! 4. top-k: keep the k highest (0 = off);
//! 5. top-p: keep the smallest prefix whose probability reaches p (1 = off), renormalized over what is left;
//! 6. min-p: keep tokens with probability ≥ min_p × the top probability (0 = off);
//! 7. draw from what is left with a seeded generator (same seed, same draws).

/// Sampling parameters. Defaults follow llama.cpp's command line.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0x5eed,
        }
    }
}

impl SamplerConfig {
    pub fn greedy() -> Self {
        SamplerConfig { temperature: 0.0, ..Default::default() }
    }

    /// Check ranges; the message names the option.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature must be >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(format!("repeat-penalty must be > 0, got {}", self.repeat_penalty));
        }
        for (name, v) in [("presence-penalty", self.presence_penalty), ("frequency-penalty", self.frequency_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        Ok(())
    }
}

/// A small, fast, seedable generator (xoshiro256**, seeded through splitmix64): reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A sampler with its own generator and scratch (no allocation per token once warm).
#[derive(Debug, Clone)]
pub struct Sampler {
    pub config: SamplerConfig,
    rng: Rng,
    logits: Vec<f32>,
    cand: Vec<(u32, f32)>,
    counts: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let rng = Rng::new(config.seed);
        Sampler { config, rng, logits: Vec::new(), cand: Vec::new(), counts: Default::default() }
    }

    /// Choose the next token given the logits and the tokens so far (prompt and generated).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let c = &self.config;
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        apply_penalties(&mut self.logits, history, c, &mut self.counts);
        if c.temperature == 0.0 {
            return argmax(&self.logits);
        }
        let inv_t = 1.0 / c.temperature;
        self.cand.clear();
        self.cand.extend(self.logits.iter().enumerate().map(|(i, &l)| (i as u32, l * inv_t)));
        truncate(&mut self.cand, c.top_k, c.top_p, c.min_p);
        let r = self.rng.next_f32();
        draw(&self.cand, r)
    }
}

/// Highest logit, ties to the lowest id.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn apply_penalties(logits: &mut [f32], history: &[u32], c: &SamplerConfig, counts: &mut std::collections::HashMap<u32, u32>) {
    if c.repeat_penalty == 1.0 && c.presence_penalty == 0.0 && c.frequency_penalty == 0.0 {
        return;
    }
    counts.clear();
    let window = &history[history.len().saturating_sub(c.repeat_last_n)..];
    for &t in window {
        *counts.entry(t).or_default() += 1;
    }
    for (&t, &n) in counts.iter() {
        let Some(l) = logits.get_mut(t as usize) else { continue };
        if c.repeat_penalty != 1.0 {
            *l = if *l > 0.0 { *l / c.repeat_penalty } else { *l * c.repeat_penalty };
        }
        *l -= c.presence_penalty + c.frequency_penalty * n as f32;
    }
}

/// Sort by logit (best first, ties to lower id) and cut by top-k, top-p, min-p; leaves probabilities in `.1`.
fn truncate(cand: &mut Vec<(u32, f32)>, top_k: usize, top_p: f32, min_p: f32) {
    let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if top_k > 0 && top_k < cand.len() {
        cand.select_nth_unstable_by(top_k - 1, by_logit);
        cand.truncate(top_k);
    }
    cand.sort_unstable_by(by_logit);
    // Softmax over what is left.
    let max = cand[0].1;
    let mut sum = 0f64;
    for c in cand.iter_mut() {
        c.1 = (c.1 - max).exp();
        sum += c.1 as f64;
    }
    for c in cand.iter_mut() {
        c.1 = (c.1 as f64 / sum) as f32;
    }
    if top_p < 1.0 {
        let mut acc = 0f32;
        let mut keep = cand.len();
        for (i, c) in cand.iter().enumerate() {
            acc += c.1;
            if acc >= top_p {
                keep = i + 1;
                break;
            }
        }
        cand.truncate(keep);
        renormalize(cand);
    }
    if min_p > 0.0 {
        let threshold = min_p * cand[0].1;
        let keep = cand.iter().position(|c| c.1 < threshold).unwrap_or(cand.len()).max(1);
        cand.truncate(keep);
        renormalize(cand);
    }
}

fn renormalize(cand: &mut [(u32, f32)]) {
    let sum: f32 = cand.iter().map(|c| c.1).sum();
    cand.iter_mut().for_each(|c| c.1 /= sum);
}

/// Inverse-CDF draw with `r` in [0, 1).
fn draw(cand: &[(u32, f32)], r: f32) -> u32 {
    let mut acc = 0f32;
    for c in cand {
        acc += c.1;
        if r < acc {
            return c.0;
        }
    }
    cand.last().map(|c| c.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<(u32, f32)> {
        logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect()
    }

    /// ln of probabilities, so that softmax gives them back exactly enough.
    fn from_probs(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn temperature_zero_is_greedy_with_ties_to_lowest_id() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn top_k_keeps_the_k_best() {
        let mut c = cands(&[1.0, 5.0, 3.0, 4.0, 2.0]);
        truncate(&mut c, 2, 1.0, 0.0);
        assert_eq!(c.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((c.iter().map(|c| c.1).sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_p_boundary_includes_the_token_that_reaches_p() {
        // Probabilities 0.5, 0.3, 0.2: p = 0.79 keeps two (0.5 + 0.3 passes it), p = 0.81 keeps three.
        let l = from_probs(&[0.5, 0.3, 0.2]);
        let mut c = cands(&l);
        truncate(&mut c, 0, 0.79, 0.0);
        assert_eq!(c.len(), 2);
        let mut c = cands(&l);
        truncate(&mut c, 0, 0.81, 0.0);
        assert_eq!(c.len(), 3);
        let mut c = cands(&l);
        truncate(&mut c, 0, 0.49, 0.0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn min_p_is_relative_to_the_top_probability() {
        // 0.5, 0.3, 0.15, 0.05: min_p 0.29 keeps p >= 0.145 (three), 0.31 keeps p >= 0.155 (two).
        let l = from_probs(&[0.5, 0.3, 0.15, 0.05]);
        let mut c = cands(&l);
        truncate(&mut c, 0, 1.0, 0.29);
        assert_eq!(c.len(), 3);
        let mut c = cands(&l);
        truncate(&mut c, 0, 1.0, 0.31);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn penalties() {
        let cfg = SamplerConfig { repeat_penalty: 2.0, presence_penalty: 0.5, frequency_penalty: 0.25, repeat_last_n: 3, ..SamplerConfig::greedy() };
        let mut l = vec![4.0, -4.0, 1.0, 1.0];
        // Token 0 twice, token 1 once in the last 3; token 2 only outside the window.
        apply_penalties(&mut l, &[2, 0, 1, 0], &cfg, &mut Default::default());
        assert_eq!(l, vec![4.0 / 2.0 - 0.5 - 0.5, -4.0 * 2.0 - 0.5 - 0.25, 1.0, 1.0]);
    }

    #[test]
    fn temperature_scales_before_truncation() {
        // At T = 0.5 probabilities sharpen: [ln .6, ln .4] -> .6^2 : .4^2 = .692 : .308; top-p 0.65 keeps one.
        let l = from_probs(&[0.6, 0.4]);
        let mut s = Sampler::new(SamplerConfig { temperature: 0.5, top_k: 0, top_p: 0.65, min_p: 0.0, ..Default::default() });
        for _ in 0..50 {
            assert_eq!(s.sample(&l, &[]), 0);
        }
    }

    #[test]
    fn same_seed_same_draws_and_frequencies_follow_probabilities() {
        let l = from_probs(&[0.5, 0.25, 0.25]);
        let cfg = SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 42, ..Default::default() };
        let run = |cfg: &SamplerConfig| -> Vec<u32> {
            let mut s = Sampler::new(cfg.clone());
            (0..4000).map(|_| s.sample(&l, &[])).collect()
        };
        let a = run(&cfg);
        assert_eq!(a, run(&cfg));
        assert_ne!(a, run(&SamplerConfig { seed: 43, ..cfg.clone() }));
        let f0 = a.iter().filter(|&&t| t == 0).count() as f32 / a.len() as f32;
        assert!((f0 - 0.5).abs() < 0.03, "{f0}");
    }

    #[test]
    fn invalid_values_are_named() {
        let e = SamplerConfig { top_p: 0.0, ..Default::default() }.validate().unwrap_err();
        assert!(e.contains("top-p"));
        let e = SamplerConfig { temperature: -1.0, ..Default::default() }.validate().unwrap_err();
        assert!(e.contains("temperature"));
    }
}

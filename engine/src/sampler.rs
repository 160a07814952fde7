//! Choosing the next token from logits: greedy, or temperature sampling with top-k, top-p,
//! min-p and a repetition penalty, driven by a seeded RNG of our own.
//!
//! The order follows llama.cpp's default sampler chain: penalties → top-k → top-p → min-p →
//! temperature → draw. Given the same logits and seed the choice is the same on every machine,
//! backend and thread count: the RNG is specified here (xoshiro256** seeded by SplitMix64) and all
//! arithmetic is sequential.

use crate::error::EngineError;

/// Sampling settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` selects greedy decoding (argmax, ties to the lower id).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` × the top probability (0 = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0x5EED,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding.
    pub fn greedy() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    /// Checks the ranges of every setting.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |what: String| Err(EngineError::InvalidSetting { what });
        if !self.temperature.is_finite() {
            return bad(format!("temperature {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p {} (expected 0 < p ≤ 1)", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min-p {} (expected 0 ≤ p ≤ 1)", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat penalty {} (expected > 0)",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut splitmix = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [splitmix(), splitmix(), splitmix(), splitmix()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Index of the largest value; ties go to the lower index. NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// A sampler: settings plus RNG state.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
}

impl Sampler {
    /// A sampler with `cfg` (validated) and an RNG seeded with `cfg.seed`.
    pub fn new(cfg: SamplerConfig) -> Result<Sampler, EngineError> {
        cfg.validate()?;
        let rng = Rng::new(cfg.seed);
        Ok(Sampler { cfg, rng })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Chooses the next token from `logits` given the tokens so far (`history`, for the penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        self.apply_repeat_penalty(&mut logits, history);
        if self.cfg.temperature <= 0.0 {
            return argmax(&logits);
        }

        // Candidates sorted by logit, descending; ties by lower id (stable sort over ids).
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, &v)| (i as u32, v))
            .collect();
        let k = if self.cfg.top_k == 0 {
            cand.len()
        } else {
            self.cfg.top_k.min(cand.len())
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| cmp_desc(*a, *b));
            cand.truncate(k);
        }
        cand.sort_by(|a, b| cmp_desc(*a, *b));
        if cand.is_empty() {
            return argmax(&logits);
        }

        // Probabilities at temperature 1 for the top-p and min-p filters.
        let probs = softmax_of(&cand, 1.0);
        let mut keep = cand.len();
        if self.cfg.top_p < 1.0 {
            let mut cum = 0.0f64;
            for (i, &p) in probs.iter().enumerate() {
                cum += p;
                if cum >= f64::from(self.cfg.top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
        if self.cfg.min_p > 0.0 {
            let floor = probs[0] * f64::from(self.cfg.min_p);
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        cand.truncate(keep);

        // Temperature, then one draw.
        let probs = softmax_of(&cand, self.cfg.temperature);
        let u = self.rng.next_f64();
        let mut cum = 0.0f64;
        for (&(id, _), &p) in cand.iter().zip(&probs) {
            cum += p;
            if u < cum {
                return id;
            }
        }
        cand[cand.len() - 1].0
    }

    /// llama.cpp's repetition penalty: every distinct token among the last `repeat_last_n` has
    /// its logit divided by the penalty if positive, multiplied if negative.
    fn apply_repeat_penalty(&self, logits: &mut [f32], history: &[u32]) {
        let pen = self.cfg.repeat_penalty;
        if pen == 1.0 || self.cfg.repeat_last_n == 0 {
            return;
        }
        let recent = &history[history.len().saturating_sub(self.cfg.repeat_last_n)..];
        let mut seen: Vec<u32> = recent.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / pen } else { *l * pen };
            }
        }
    }
}

fn cmp_desc(a: (u32, f32), b: (u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Softmax of candidate logits divided by `temp`, in f64 (candidates sorted descending).
fn softmax_of(cand: &[(u32, f32)], temp: f32) -> Vec<f64> {
    let max = f64::from(cand[0].1) / f64::from(temp);
    let mut p: Vec<f64> = cand
        .iter()
        .map(|&(_, l)| (f64::from(l) / f64::from(temp) - max).exp())
        .collect();
    let sum: f64 = p.iter().sum();
    for v in p.iter_mut() {
        *v /= sum;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_go_to_lower_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
    }

    #[test]
    fn rng_is_deterministic_and_uniform_enough() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(43).next_u64(), xs[0]);
        let mut r = Rng::new(7);
        let mean = (0..10_000).map(|_| r.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn greedy_ignores_seed_and_top_k_one_is_greedy() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        let mut g = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(g.sample(&logits, &[]), 1);
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 1,
            ..SamplerConfig::default()
        })
        .unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, &[]), 1);
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let cfg = SamplerConfig {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 9,
            ..SamplerConfig::default()
        };
        let run = || {
            let mut s = Sampler::new(cfg.clone()).unwrap();
            (0..30).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        // High temperature over many equal-ish tokens draws more than one distinct id.
        let mut d = a.clone();
        d.sort_unstable();
        d.dedup();
        assert!(d.len() > 3, "{a:?}");
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        let logits = [10.0, 9.9, 0.0, -5.0];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            seed: 1,
            ..SamplerConfig::default()
        })
        .unwrap();
        for _ in 0..50 {
            assert!(s.sample(&logits, &[]) < 2);
        }
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.4,
            min_p: 0.0,
            seed: 1,
            ..SamplerConfig::default()
        })
        .unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&logits, &[]), 0);
        }
    }

    #[test]
    fn repeat_penalty_changes_greedy_choice() {
        let logits = [2.0, 1.9, -1.0];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            repeat_penalty: 1.5,
            ..SamplerConfig::default()
        })
        .unwrap();
        assert_eq!(s.sample(&logits, &[0]), 1);
        assert_eq!(s.sample(&logits, &[]), 0);
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(Sampler::new(SamplerConfig {
            top_p: 0.0,
            ..SamplerConfig::default()
        })
        .is_err());
        assert!(Sampler::new(SamplerConfig {
            repeat_penalty: -1.0,
            ..SamplerConfig::default()
        })
        .is_err());
    }
}

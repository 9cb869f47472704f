use thiserror::Error;

/// Errors from building models or corpora.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModelError {
    /// A configuration value is out of range.
    #[error("invalid {what}: {value} (expected {allowed})")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Its value.
        value: String,
        /// The allowed range.
        allowed: &'static str,
    },
}

/// A tiny, seedable PRNG (SplitMix64): deterministic on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A first-order Markov chain over `vocab` tokens with softmax(N(0, σ²)) transition rows.
/// Larger `sharpness` σ gives peakier rows and a lower entropy rate.
#[derive(Debug, Clone)]
pub struct MarkovCorpus {
    vocab: usize,
    rows: Vec<Vec<f64>>,
    stationary: Vec<f64>,
}

impl MarkovCorpus {
    /// Draw a chain. `vocab` ≥ 2, `sharpness` finite and ≥ 0.
    pub fn new(vocab: usize, sharpness: f64, seed: u64) -> Result<Self, ModelError> {
        if vocab < 2 {
            return Err(ModelError::Invalid {
                what: "vocab",
                value: vocab.to_string(),
                allowed: ">= 2",
            });
        }
        if !(sharpness >= 0.0 && sharpness.is_finite()) {
            return Err(ModelError::Invalid {
                what: "sharpness",
                value: sharpness.to_string(),
                allowed: "a finite value >= 0",
            });
        }
        let mut rng = SplitMix64::new(seed);
        let rows: Vec<Vec<f64>> = (0..vocab)
            .map(|_| {
                let logits: Vec<f64> = (0..vocab).map(|_| sharpness * rng.normal()).collect();
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(|x| x / s).collect()
            })
            .collect();
        // Every transition has positive probability, so the chain is ergodic and power
        // iteration converges to the unique stationary distribution.
        let mut pi = vec![1.0 / vocab as f64; vocab];
        for _ in 0..10_000 {
            let mut next = vec![0.0; vocab];
            for (i, row) in rows.iter().enumerate() {
                for (j, p) in row.iter().enumerate() {
                    next[j] += pi[i] * p;
                }
            }
            let diff: f64 = next.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum();
            pi = next;
            if diff < 1e-15 {
                break;
            }
        }
        Ok(Self {
            vocab,
            rows,
            stationary: pi,
        })
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Transition probabilities `P(next = j | current = i)`.
    pub fn transition(&self, i: usize, j: usize) -> f64 {
        self.rows[i][j]
    }

    /// The stationary distribution.
    pub fn stationary(&self) -> &[f64] {
        &self.stationary
    }

    /// Entropy rate in nats/token: `Σ_i π_i · H(row_i)` — the loss floor of next-token
    /// prediction on sequences from this chain (after the first token).
    pub fn entropy_rate(&self) -> f64 {
        self.rows
            .iter()
            .zip(&self.stationary)
            .map(|(row, pi)| {
                pi * row
                    .iter()
                    .filter(|p| **p > 0.0)
                    .map(|p| -p * p.ln())
                    .sum::<f64>()
            })
            .sum()
    }

    /// A sequence of `len` tokens, starting from the stationary distribution.
    pub fn sample(&self, len: usize, rng: &mut SplitMix64) -> Vec<usize> {
        let mut out = Vec::with_capacity(len);
        if len == 0 {
            return out;
        }
        let mut cur = draw(&self.stationary, rng);
        out.push(cur);
        while out.len() < len {
            cur = draw(&self.rows[cur], rng);
            out.push(cur);
        }
        out
    }
}

fn draw(p: &[f64], rng: &mut SplitMix64) -> usize {
    let u = rng.next_f64();
    let mut acc = 0.0;
    for (i, pi) in p.iter().enumerate() {
        acc += pi;
        if u < acc {
            return i;
        }
    }
    p.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_chain_has_log_v_entropy() {
        let c = MarkovCorpus::new(16, 0.0, 1).unwrap();
        assert!((c.entropy_rate() - 16f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn sharper_rows_lower_entropy_and_empirical_matches() {
        let soft = MarkovCorpus::new(8, 0.5, 3).unwrap();
        let sharp = MarkovCorpus::new(8, 3.0, 3).unwrap();
        assert!(sharp.entropy_rate() < soft.entropy_rate());
        // Empirical conditional entropy of a long sample is close to the exact rate.
        let mut rng = SplitMix64::new(9);
        let s = sharp.sample(200_000, &mut rng);
        let mut counts = vec![vec![0f64; 8]; 8];
        for w in s.windows(2) {
            counts[w[0]][w[1]] += 1.0;
        }
        let n = (s.len() - 1) as f64;
        let mut h = 0.0;
        for row in &counts {
            let r: f64 = row.iter().sum();
            for c in row.iter().filter(|c| **c > 0.0) {
                h -= c / n * (c / r).ln();
            }
        }
        assert!(
            (h - sharp.entropy_rate()).abs() < 0.02,
            "{h} vs {}",
            sharp.entropy_rate()
        );
    }

    #[test]
    fn stationary_is_a_fixed_point() {
        let c = MarkovCorpus::new(10, 1.5, 4).unwrap();
        for j in 0..10 {
            let next: f64 = (0..10)
                .map(|i| c.stationary()[i] * c.transition(i, j))
                .sum();
            assert!((next - c.stationary()[j]).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_config_is_an_error() {
        assert!(MarkovCorpus::new(1, 1.0, 0).is_err());
        assert!(MarkovCorpus::new(4, f64::NAN, 0).is_err());
        assert!(MarkovCorpus::new(4, -1.0, 0).is_err());
    }
}

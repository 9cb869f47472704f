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
    /// A file could not be read or is not usable text.
    #[error("cannot use `{path}`: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A tensor given to a model has the wrong shape or holds out-of-range token ids.
    #[error("bad model input: {reason}")]
    Input {
        /// What is wrong.
        reason: String,
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
    /// Gamma(α, 1) (Marsaglia–Tsang; α < 1 by the boost `G(α+1)·U^(1/α)`).
    pub fn gamma(&mut self, alpha: f64) -> f64 {
        if alpha < 1.0 {
            let u = 1.0 - self.next_f64();
            return self.gamma(alpha + 1.0) * u.powf(1.0 / alpha);
        }
        let d = alpha - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.next_f64();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// How the transition rows of a [`MarkovCorpus`] are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowPrior {
    /// `softmax(σ·N(0, 1))` per row: larger σ (`sharpness`) → peakier rows, lower entropy.
    Softmax {
        /// σ ≥ 0.
        sharpness: f64,
    },
    /// `Dirichlet(α, …, α)` per row: the concentration α > 0 controls peakiness (α → 0: nearly
    /// deterministic rows; α = 1: uniform over the simplex; α → ∞: uniform rows).
    Dirichlet {
        /// α > 0.
        concentration: f64,
    },
}

/// Configuration of a [`MarkovCorpus`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarkovConfig {
    /// Vocabulary size V ≥ 2.
    pub vocab: usize,
    /// Order k ≥ 1: the next token depends on the last k tokens (V^k states, ≤ 2^22 rows·V).
    pub order: usize,
    /// How rows are drawn.
    pub prior: RowPrior,
    /// Seed of the rows and of every stream.
    pub seed: u64,
}

impl Default for MarkovConfig {
    fn default() -> Self {
        Self {
            vocab: 64,
            order: 1,
            prior: RowPrior::Dirichlet { concentration: 0.1 },
            seed: 0,
        }
    }
}

/// Which deterministic stream of a corpus to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training sequences.
    Train,
    /// Validation sequences (a stream disjoint from training: different seeds or bytes).
    Valid,
}

/// A source of token sequences for language-model training: sequence `index` of a split is a
/// pure function of the corpus, the split and the index (so data order is reproducible and the
/// same for every optimizer compared).
pub trait Corpus: Send + Sync {
    /// Vocabulary size.
    fn vocab(&self) -> usize;
    /// The best achievable mean next-token loss in nats, when known exactly.
    fn loss_floor(&self) -> Option<f64>;
    /// Sequence number `index` of `split`, `len` tokens.
    fn sequence(&self, split: Split, index: u64, len: usize) -> Vec<usize>;
}

/// A Markov chain of order k over `vocab` tokens. Its entropy rate
/// `Σ_s π(s)·H(P(·|s))` over the k-token states `s` (π: the stationary distribution, computed
/// exactly by power iteration) is the loss floor of next-token prediction — reached by a model
/// that sees the last k tokens, after the first k tokens of a sequence.
#[derive(Debug, Clone)]
pub struct MarkovCorpus {
    vocab: usize,
    order: usize,
    seed: u64,
    /// `rows[s·V + j] = P(next = j | state s)`, state `s = Σ t_i·V^(k−1−i)` of the last k tokens.
    rows: Vec<f64>,
    stationary: Vec<f64>,
}

/// Largest number of transition probabilities (V^k · V) a chain may hold.
pub const MAX_MARKOV_ENTRIES: usize = 1 << 22;

fn invalid(what: &'static str, value: impl ToString, allowed: &'static str) -> ModelError {
    ModelError::Invalid {
        what,
        value: value.to_string(),
        allowed,
    }
}

impl MarkovCorpus {
    /// A first-order chain with `softmax(σ·N(0,1))` rows (`vocab` ≥ 2, `sharpness` finite ≥ 0).
    pub fn new(vocab: usize, sharpness: f64, seed: u64) -> Result<Self, ModelError> {
        Self::with_config(&MarkovConfig {
            vocab,
            order: 1,
            prior: RowPrior::Softmax { sharpness },
            seed,
        })
    }

    /// Draw a chain from a validated configuration.
    pub fn with_config(config: &MarkovConfig) -> Result<Self, ModelError> {
        let MarkovConfig {
            vocab,
            order,
            prior,
            seed,
        } = *config;
        if vocab < 2 {
            return Err(invalid("vocab", vocab, ">= 2"));
        }
        if order < 1 {
            return Err(invalid("order", order, ">= 1"));
        }
        let states = u32::try_from(order)
            .ok()
            .and_then(|k| vocab.checked_pow(k))
            .filter(|s| {
                s.checked_mul(vocab)
                    .is_some_and(|n| n <= MAX_MARKOV_ENTRIES)
            })
            .ok_or_else(|| {
                invalid(
                    "vocab^order · vocab",
                    format!("{vocab}^{order}·{vocab}"),
                    "<= 2^22 transition probabilities",
                )
            })?;
        match prior {
            RowPrior::Softmax { sharpness } if !(sharpness >= 0.0 && sharpness.is_finite()) => {
                return Err(invalid("sharpness", sharpness, "a finite value >= 0"));
            }
            RowPrior::Dirichlet { concentration }
                if !(concentration > 0.0 && concentration.is_finite()) =>
            {
                return Err(invalid(
                    "concentration",
                    concentration,
                    "a finite value > 0",
                ));
            }
            _ => {}
        }
        let mut rng = SplitMix64::new(seed);
        let mut rows = Vec::with_capacity(states * vocab);
        for _ in 0..states {
            let mut w: Vec<f64> = match prior {
                RowPrior::Softmax { sharpness } => {
                    let logits: Vec<f64> = (0..vocab).map(|_| sharpness * rng.normal()).collect();
                    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    logits.iter().map(|l| (l - max).exp()).collect()
                }
                RowPrior::Dirichlet { concentration } => {
                    (0..vocab).map(|_| rng.gamma(concentration)).collect()
                }
            };
            // Keep every transition possible (the chain stays ergodic; π is unique).
            let total: f64 = w.iter().sum();
            for x in w.iter_mut() {
                *x = (*x / total).max(1e-12);
            }
            let total: f64 = w.iter().sum();
            rows.extend(w.into_iter().map(|x| x / total));
        }
        let stationary = stationary(&rows, vocab, states);
        Ok(Self {
            vocab,
            order,
            seed,
            rows,
            stationary,
        })
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Order k.
    pub fn order(&self) -> usize {
        self.order
    }

    /// Number of states V^k.
    pub fn states(&self) -> usize {
        self.stationary.len()
    }

    /// `P(next = j | state)`, with `state` the index of the last k tokens (base V, oldest first).
    pub fn transition(&self, state: usize, j: usize) -> f64 {
        self.rows[state * self.vocab + j]
    }

    /// The stationary distribution over states.
    pub fn stationary(&self) -> &[f64] {
        &self.stationary
    }

    /// Entropy rate in nats/token: `Σ_s π(s) · H(row_s)` — the loss floor of next-token
    /// prediction (after the first k tokens of a sequence).
    pub fn entropy_rate(&self) -> f64 {
        self.rows
            .chunks(self.vocab)
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

    /// A sequence of `len` tokens whose first k tokens are a state drawn from the stationary
    /// distribution.
    pub fn sample(&self, len: usize, rng: &mut SplitMix64) -> Vec<usize> {
        let mut out = Vec::with_capacity(len);
        if len == 0 {
            return out;
        }
        let mut state = draw(&self.stationary, rng);
        let mut digits = Vec::with_capacity(self.order);
        let mut s = state;
        for _ in 0..self.order {
            digits.push(s % self.vocab);
            s /= self.vocab;
        }
        out.extend(digits.into_iter().rev().take(len));
        let high = self.states() / self.vocab;
        while out.len() < len {
            let next = draw(
                &self.rows[state * self.vocab..(state + 1) * self.vocab],
                rng,
            );
            out.push(next);
            state = (state % high) * self.vocab + next;
        }
        out
    }
}

impl Corpus for MarkovCorpus {
    fn vocab(&self) -> usize {
        self.vocab
    }

    fn loss_floor(&self) -> Option<f64> {
        Some(self.entropy_rate())
    }

    fn sequence(&self, split: Split, index: u64, len: usize) -> Vec<usize> {
        let mut rng = stream_rng(self.seed, split, index);
        self.sample(len, &mut rng)
    }
}

/// The generator of sequence `index` of `split` for a corpus seeded with `seed`.
fn stream_rng(seed: u64, split: Split, index: u64) -> SplitMix64 {
    let tag = match split {
        Split::Train => 0x5452_4149_4e00_0000u64,
        Split::Valid => 0x5641_4c49_4400_0000u64,
    };
    let mut mix = SplitMix64::new(seed ^ tag);
    let a = mix.next_u64();
    SplitMix64::new(a ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Chains up to this many states get their stationary distribution by exact elimination.
const EXACT_STATIONARY_STATES: usize = 512;

fn stationary(rows: &[f64], vocab: usize, states: usize) -> Vec<f64> {
    if states <= EXACT_STATIONARY_STATES {
        stationary_exact(rows, vocab, states)
    } else {
        stationary_power(rows, vocab, states)
    }
}

/// Grassmann–Taksar–Heyman elimination on the dense `states × states` chain: exact to
/// rounding however slowly the chain mixes (no subtractions), `O(states³)`.
fn stationary_exact(rows: &[f64], vocab: usize, states: usize) -> Vec<f64> {
    let high = states / vocab;
    let mut a = vec![0.0f64; states * states];
    for s in 0..states {
        for (j, p) in rows[s * vocab..(s + 1) * vocab].iter().enumerate() {
            a[s * states + (s % high) * vocab + j] += p;
        }
    }
    for k in (1..states).rev() {
        let total: f64 = a[k * states..k * states + k].iter().sum();
        for i in 0..k {
            a[i * states + k] /= total;
        }
        for i in 0..k {
            let f = a[i * states + k];
            if f != 0.0 {
                for j in 0..k {
                    a[i * states + j] += f * a[k * states + j];
                }
            }
        }
    }
    let mut pi = vec![1.0f64; states];
    for j in 1..states {
        pi[j] = (0..j).map(|i| pi[i] * a[i * states + j]).sum();
    }
    let total: f64 = pi.iter().sum();
    pi.iter().map(|p| p / total).collect()
}

/// Power iteration (large chains; slowly mixing ones converge slowly).
fn stationary_power(rows: &[f64], vocab: usize, states: usize) -> Vec<f64> {
    let high = states / vocab;
    let mut pi = vec![1.0 / states as f64; states];
    for _ in 0..100_000 {
        let mut next = vec![0.0; states];
        for (s, p_s) in pi.iter().enumerate() {
            let base = (s % high) * vocab;
            for (j, p) in rows[s * vocab..(s + 1) * vocab].iter().enumerate() {
                next[base + j] += p_s * p;
            }
        }
        let diff: f64 = next.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum();
        pi = next;
        if diff < 1e-14 {
            break;
        }
    }
    let total: f64 = pi.iter().sum();
    pi.iter().map(|p| p / total).collect()
}

/// Byte-level text: tokens are the bytes of a UTF-8 file (vocabulary 256, no tokenizer). The
/// last `valid_fraction` of the bytes is the validation split; sequences are windows at
/// seeded offsets inside their split. The loss floor is unknown.
#[derive(Debug, Clone)]
pub struct ByteCorpus {
    bytes: Vec<u8>,
    split_at: usize,
    seed: u64,
}

impl ByteCorpus {
    /// Read `path` (must be valid UTF-8, at least 2 bytes in each split).
    pub fn from_file(
        path: &std::path::Path,
        valid_fraction: f64,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if let Err(e) = std::str::from_utf8(&bytes) {
            return Err(ModelError::Io {
                path: path.display().to_string(),
                reason: format!("not UTF-8 text: {e}"),
            });
        }
        Self::from_text(bytes, valid_fraction, seed)
    }

    /// From bytes already in memory.
    pub fn from_text(
        bytes: impl Into<Vec<u8>>,
        valid_fraction: f64,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let bytes = bytes.into();
        if !(valid_fraction > 0.0 && valid_fraction < 1.0) {
            return Err(invalid(
                "valid_fraction",
                valid_fraction,
                "a value in (0, 1)",
            ));
        }
        let split_at = ((bytes.len() as f64) * (1.0 - valid_fraction)).round() as usize;
        if split_at < 2 || bytes.len() - split_at < 2 {
            return Err(invalid(
                "text length",
                bytes.len(),
                "enough bytes for >= 2 in each split",
            ));
        }
        Ok(Self {
            bytes,
            split_at,
            seed,
        })
    }

    /// Bytes in each split (train, valid).
    pub fn split_sizes(&self) -> (usize, usize) {
        (self.split_at, self.bytes.len() - self.split_at)
    }
}

impl Corpus for ByteCorpus {
    fn vocab(&self) -> usize {
        256
    }

    fn loss_floor(&self) -> Option<f64> {
        None
    }

    /// A window of `len` bytes; windows longer than the split wrap around inside it.
    fn sequence(&self, split: Split, index: u64, len: usize) -> Vec<usize> {
        let (lo, hi) = match split {
            Split::Train => (0, self.split_at),
            Split::Valid => (self.split_at, self.bytes.len()),
        };
        let n = hi - lo;
        let start = (stream_rng(self.seed, split, index).next_u64() % n as u64) as usize;
        (0..len)
            .map(|i| usize::from(self.bytes[lo + (start + i) % n]))
            .collect()
    }
}

/// One batch of next-token windows: `inputs[b][t]` predicts `targets[b][t] = token t+1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Batch size.
    pub batch: usize,
    /// Sequence length (positions per row).
    pub seq_len: usize,
    /// `[batch, seq_len]` row-major token ids.
    pub inputs: Vec<i64>,
    /// `[batch, seq_len]` row-major next-token ids.
    pub targets: Vec<i64>,
}

impl TokenBatch {
    /// Batch number `step` of `split`: rows are sequences `step·batch … step·batch + batch − 1`
    /// of `seq_len + 1` tokens, split into inputs and shifted targets.
    pub fn from_corpus(
        corpus: &dyn Corpus,
        split: Split,
        step: u64,
        batch: usize,
        seq_len: usize,
    ) -> Result<Self, ModelError> {
        if batch == 0 {
            return Err(invalid("batch", batch, ">= 1"));
        }
        if seq_len == 0 {
            return Err(invalid("seq_len", seq_len, ">= 1"));
        }
        let mut inputs = Vec::with_capacity(batch * seq_len);
        let mut targets = Vec::with_capacity(batch * seq_len);
        for b in 0..batch as u64 {
            let seq = corpus.sequence(
                split,
                step.wrapping_mul(batch as u64).wrapping_add(b),
                seq_len + 1,
            );
            inputs.extend(seq[..seq_len].iter().map(|&t| t as i64));
            targets.extend(seq[1..].iter().map(|&t| t as i64));
        }
        Ok(Self {
            batch,
            seq_len,
            inputs,
            targets,
        })
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
    fn order_two_chain_stationary_entropy_and_streams() {
        let config = MarkovConfig {
            vocab: 5,
            order: 2,
            prior: RowPrior::Dirichlet { concentration: 0.3 },
            seed: 7,
        };
        let c = MarkovCorpus::with_config(&config).unwrap();
        assert_eq!(c.states(), 25);
        // π(s') = Σ_s π(s)·P(s → s'), s' = (s mod V)·V + j
        for s2 in 0..25 {
            let (hi, j) = (s2 / 5, s2 % 5);
            let next: f64 = (0..5)
                .map(|a| {
                    let s = a * 5 + hi;
                    c.stationary()[s] * c.transition(s, j)
                })
                .sum();
            assert!((next - c.stationary()[s2]).abs() < 1e-12);
        }
        // Monte-Carlo conditional entropy given the last two tokens matches the exact rate.
        let mut rng = SplitMix64::new(3);
        let seq = c.sample(400_000, &mut rng);
        let mut counts = vec![0f64; 125];
        for w in seq.windows(3) {
            counts[(w[0] * 5 + w[1]) * 5 + w[2]] += 1.0;
        }
        let n = (seq.len() - 2) as f64;
        let mut h = 0.0;
        for row in counts.chunks(5) {
            let r: f64 = row.iter().sum();
            for x in row.iter().filter(|x| **x > 0.0) {
                h -= x / n * (x / r).ln();
            }
        }
        assert!(
            (h - c.entropy_rate()).abs() < 0.01,
            "{h} vs {}",
            c.entropy_rate()
        );
        // Streams are deterministic and the splits differ.
        let a = c.sequence(Split::Train, 3, 50);
        assert_eq!(a, c.sequence(Split::Train, 3, 50));
        assert_ne!(a, c.sequence(Split::Valid, 3, 50));
        assert_ne!(a, c.sequence(Split::Train, 4, 50));
    }

    #[test]
    fn concentration_controls_entropy() {
        let h = |alpha: f64| {
            MarkovCorpus::with_config(&MarkovConfig {
                prior: RowPrior::Dirichlet {
                    concentration: alpha,
                },
                ..MarkovConfig::default()
            })
            .unwrap()
            .entropy_rate()
        };
        let (low, mid, high) = (h(0.05), h(0.5), h(50.0));
        assert!(low < mid && mid < high, "{low} {mid} {high}");
        assert!(high < 64f64.ln() && high > 64f64.ln() - 0.05);
    }

    #[test]
    fn batches_shift_targets_and_bytes_split() {
        let c = MarkovCorpus::with_config(&MarkovConfig::default()).unwrap();
        let b = TokenBatch::from_corpus(&c, Split::Train, 2, 3, 8).unwrap();
        for row in 0..3 {
            let seq = c.sequence(Split::Train, 6 + row as u64, 9);
            let want: Vec<i64> = seq.iter().map(|&t| t as i64).collect();
            assert_eq!(&b.inputs[row * 8..row * 8 + 8], &want[..8]);
            assert_eq!(&b.targets[row * 8..row * 8 + 8], &want[1..]);
        }
        assert!(TokenBatch::from_corpus(&c, Split::Train, 0, 0, 8).is_err());
        let text = "abcdefghij".repeat(10);
        let bc = ByteCorpus::from_text(text.clone(), 0.2, 1).unwrap();
        assert_eq!(bc.split_sizes(), (80, 20));
        let v = bc.sequence(Split::Valid, 0, 30);
        assert!(v.iter().all(|&t| text.as_bytes().contains(&(t as u8))));
        assert!(ByteCorpus::from_text("ab", 0.5, 0).is_err());
        assert!(ByteCorpus::from_text(text, 1.5, 0).is_err());
        let dir = std::env::temp_dir().join(format!("moment-bytes-{}", std::process::id()));
        std::fs::write(&dir, [0xffu8, 0xfe, 0x00, 0x01]).unwrap();
        assert!(matches!(
            ByteCorpus::from_file(&dir, 0.5, 0),
            Err(ModelError::Io { .. })
        ));
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn bad_config_is_an_error() {
        assert!(
            MarkovCorpus::with_config(&MarkovConfig {
                order: 0,
                ..MarkovConfig::default()
            })
            .is_err()
        );
        assert!(
            MarkovCorpus::with_config(&MarkovConfig {
                order: 4,
                vocab: 64,
                ..MarkovConfig::default()
            })
            .is_err()
        );
        assert!(
            MarkovCorpus::with_config(&MarkovConfig {
                prior: RowPrior::Dirichlet { concentration: 0.0 },
                ..MarkovConfig::default()
            })
            .is_err()
        );
        assert!(MarkovCorpus::new(1, 1.0, 0).is_err());
        assert!(MarkovCorpus::new(4, f64::NAN, 0).is_err());
        assert!(MarkovCorpus::new(4, -1.0, 0).is_err());
    }
}

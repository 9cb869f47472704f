//! Property-based tests of moment-model: causality and batch independence of the test
//! transformer, typed input errors, the masked cross-entropy, config validation, and the
//! Markov / byte corpora (transition rows, stationary distribution, entropy rate, streams).
//!
//! Everything here checks what docs/model.md and the rustdoc promise, against oracles computed
//! independently on the host (f64), never by re-running the code under test.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use burn::backend::NdArray;
use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use moment_model::{
    ByteCorpus, Corpus, IGNORE_INDEX, MarkovConfig, MarkovCorpus, MlpKind, ModelError, RowPrior,
    Split, TestModelConfig, TestModelForCausalLM, TokenBatch,
};
use proptest::prelude::*;

type B = NdArray<f32>;

fn tokens(v: &[i64], b: usize, s: usize) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [b, s]), &Default::default())
}

/// Logits `[b, s, V]` of a `[b, s]` batch, row-major.
fn logits(m: &TestModelForCausalLM<B>, t: &[i64], b: usize, s: usize) -> Vec<f32> {
    m.forward(tokens(t, b, s), None)
        .expect("valid input")
        .logits
        .into_data()
        .to_vec::<f32>()
        .expect("f32 logits")
}

/// A small, fast model: width 16–32, 1–2 layers, 2 heads, vocab 2–24, max_seq_len 16, random
/// MLP kind, tying, biases and seed.
fn small_model_config() -> impl Strategy<Value = TestModelConfig> {
    (
        prop::sample::select(vec![16usize, 24, 32]),
        1usize..=2,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        2usize..=24,
        any::<u64>(),
    )
        .prop_map(
            |(hidden, layers, swiglu, tie, bias, vocab, seed)| TestModelConfig {
                vocab,
                hidden,
                layers,
                heads: 2,
                intermediate: 2 * hidden,
                max_seq_len: 16,
                mlp: if swiglu {
                    MlpKind::SwiGlu
                } else {
                    MlpKind::Silu
                },
                tie_embeddings: tie,
                bias,
                seed,
                ..TestModelConfig::tiny(vocab)
            },
        )
}

/// A config and `n` token sequences of one length `s` (1..=16) inside its vocabulary.
fn config_and_rows(
    rows: std::ops::RangeInclusive<usize>,
    min_len: usize,
) -> impl Strategy<Value = (TestModelConfig, usize, usize, Vec<i64>)> {
    (small_model_config(), rows, min_len..=16usize).prop_flat_map(|(c, n, s)| {
        (
            Just(c),
            Just(n),
            Just(s),
            prop::collection::vec(0..c.vocab as i64, n * s),
        )
    })
}

/// A token id: mostly inside `0..vocab`, sometimes just below or just above it.
fn maybe_bad_id(vocab: i64) -> impl Strategy<Value = i64> {
    prop_oneof![8 => 0..vocab, 1 => -3i64..0, 1 => vocab..vocab + 3]
}

/// A target id: inside the vocabulary, [`IGNORE_INDEX`], or (rarely) out of range.
fn maybe_bad_target(vocab: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0..vocab,
        3 => Just(IGNORE_INDEX),
        1 => prop_oneof![-3i64..0, vocab..vocab + 3],
    ]
}

/// One corruption of an otherwise valid [`TestModelConfig`], with the field `validate` must
/// name.
#[derive(Debug, Clone)]
enum Corruption {
    None,
    Vocab(usize),
    Zero(&'static str),
    HiddenNotMultiple { heads: usize, m: usize, r: usize },
    OddHeadWidth { heads: usize, m: usize },
    Dropout(f64),
    Positive(&'static str, f64),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    let not_positive = prop_oneof![
        Just(0.0),
        Just(-0.0),
        -10.0f64..0.0,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
    ];
    prop_oneof![
        2 => Just(Corruption::None),
        1 => (0usize..2).prop_map(Corruption::Vocab),
        1 => prop::sample::select(vec!["hidden", "layers", "heads", "intermediate", "max_seq_len"])
            .prop_map(Corruption::Zero),
        1 => (2usize..=5, 1usize..=4)
            .prop_flat_map(|(heads, m)| (Just(heads), Just(m), 1..heads))
            .prop_map(|(heads, m, r)| Corruption::HiddenNotMultiple { heads, m, r }),
        1 => (1usize..=5, 0usize..=3).prop_map(|(heads, m)| Corruption::OddHeadWidth { heads, m }),
        1 => prop_oneof![-2.0f64..0.0, 1.0f64..3.0, Just(1.0), Just(f64::NAN), Just(f64::INFINITY)]
            .prop_map(Corruption::Dropout),
        1 => (prop::sample::select(vec!["rope_theta", "norm_eps", "init_std"]), not_positive)
            .prop_map(|(w, v)| Corruption::Positive(w, v)),
    ]
}

/// A valid small config: heads 1–4, even head width 2–8, every other field in range.
fn valid_config() -> impl Strategy<Value = TestModelConfig> {
    (
        (2usize..=20, 1usize..=4, 1usize..=4, 1usize..=2),
        (1usize..=40, 1usize..=32, 0.0f64..1.0, any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<u64>()),
        (1e-3f64..1e5, 1e-9f64..1.0, 1e-4f64..1.0),
    )
        .prop_map(
            |(
                (vocab, heads, half_width, layers),
                (intermediate, max_seq_len, dropout, zero_dropout),
                (swiglu, tie, bias, seed),
                (rope_theta, norm_eps, init_std),
            )| TestModelConfig {
                vocab,
                hidden: heads * 2 * half_width,
                layers,
                heads,
                intermediate,
                max_seq_len,
                mlp: if swiglu {
                    MlpKind::SwiGlu
                } else {
                    MlpKind::Silu
                },
                dropout: if zero_dropout { 0.0 } else { dropout },
                tie_embeddings: tie,
                bias,
                rope_theta,
                norm_eps,
                init_std,
                seed,
            },
        )
}

/// Apply `c` to a valid config; returns the field the error must name (None: still valid).
fn corrupt(mut cfg: TestModelConfig, c: &Corruption) -> (TestModelConfig, Option<&'static str>) {
    let name = match *c {
        Corruption::None => None,
        Corruption::Vocab(v) => {
            cfg.vocab = v;
            Some("vocab")
        }
        Corruption::Zero(what) => {
            match what {
                "hidden" => cfg.hidden = 0,
                "layers" => cfg.layers = 0,
                "heads" => cfg.heads = 0,
                "intermediate" => cfg.intermediate = 0,
                _ => cfg.max_seq_len = 0,
            }
            Some(what)
        }
        Corruption::HiddenNotMultiple { heads, m, r } => {
            cfg.heads = heads;
            cfg.hidden = heads * m + r;
            Some("hidden")
        }
        Corruption::OddHeadWidth { heads, m } => {
            cfg.heads = heads;
            cfg.hidden = heads * (2 * m + 1);
            Some("head width")
        }
        Corruption::Dropout(p) => {
            cfg.dropout = p;
            Some("dropout")
        }
        Corruption::Positive(what, v) => {
            match what {
                "rope_theta" => cfg.rope_theta = v,
                "norm_eps" => cfg.norm_eps = v,
                _ => cfg.init_std = v,
            }
            Some(what)
        }
    };
    (cfg, name)
}

/// A Markov chain configuration with at most 64 states and 512 transition probabilities,
/// Dirichlet concentration at least `min_alpha`.
fn markov_config(min_alpha: f64) -> impl Strategy<Value = MarkovConfig> {
    let prior = prop_oneof![
        (0.0f64..4.0).prop_map(|sharpness| RowPrior::Softmax { sharpness }),
        (min_alpha..5.0).prop_map(|concentration| RowPrior::Dirichlet { concentration }),
    ];
    (2usize..=8, 1usize..=3, prior, any::<u64>()).prop_map(|(vocab, order, prior, seed)| {
        // Largest order ≤ `order` with vocab^order ≤ 64.
        let order = (1..=order)
            .take_while(|&k| vocab.pow(k as u32) <= 64)
            .last()
            .unwrap_or(1);
        MarkovConfig {
            vocab,
            order,
            prior,
            seed,
        }
    })
}

/// The stationary distribution of the chain on k-token states, solved directly by the
/// Grassmann–Taksar–Heyman elimination (subtraction-free, so accurate even for nearly
/// reducible chains) on the dense `states × states` transition matrix.
fn exact_stationary(c: &MarkovCorpus) -> Vec<f64> {
    let (n, v) = (c.states(), c.vocab());
    let high = n / v;
    let mut a = vec![vec![0.0f64; n]; n];
    for (s, row) in a.iter_mut().enumerate() {
        for j in 0..v {
            row[(s % high) * v + j] += c.transition(s, j);
        }
    }
    for k in (1..n).rev() {
        let total: f64 = a[k][..k].iter().sum();
        for row in a.iter_mut().take(k) {
            row[k] /= total;
        }
        for i in 0..k {
            for j in 0..k {
                a[i][j] += a[i][k] * a[k][j];
            }
        }
    }
    let mut pi = vec![1.0f64; n];
    for j in 1..n {
        pi[j] = (0..j).map(|i| pi[i] * a[i][j]).sum();
    }
    let total: f64 = pi.iter().sum();
    pi.iter().map(|p| p / total).collect()
}

/// `Σ_s π(s)·H(P(·|s))` for a given π, on the host.
fn entropy_rate_with(c: &MarkovCorpus, pi: &[f64]) -> f64 {
    (0..c.states())
        .map(|s| {
            pi[s]
                * (0..c.vocab())
                    .map(|j| c.transition(s, j))
                    .map(|p| -p * p.ln())
                    .sum::<f64>()
        })
        .sum()
}

/// The state index of the k tokens `w` (base V, oldest first), as documented on
/// `MarkovCorpus::transition`.
fn state_of(w: &[usize], vocab: usize) -> usize {
    w.iter().fold(0, |s, &t| s * vocab + t)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        ProptestConfig::default().cases.min(64)
    ))]

    /// Causality: changing the token at position j leaves the logits at every position < j
    /// bit-for-bit unchanged (masked scores get exp(−1e9) = 0 exactly, so the masked values
    /// contribute exact zeros) and does change the logits at position j.
    #[test]
    fn changing_token_j_leaves_earlier_logits_unchanged(
        (cfg, _n, s, seq, j, delta) in config_and_rows(1..=1, 1)
            .prop_flat_map(|(c, n, s, seq)| (Just(c), Just(n), Just(s), Just(seq), 0..s, 1..c.vocab as i64))
    ) {
        let m = cfg.init::<B>(&Default::default()).unwrap();
        let v = cfg.vocab;
        let mut changed = seq.clone();
        changed[j] = (changed[j] + delta) % v as i64;
        prop_assert_ne!(changed[j], seq[j]);
        let a = logits(&m, &seq, 1, s);
        let b = logits(&m, &changed, 1, s);
        for pos in 0..j {
            for k in 0..v {
                let (x, y) = (a[pos * v + k], b[pos * v + k]);
                prop_assert!(
                    x == y,
                    "position {} vocab {}: {} vs {} after changing token {}", pos, k, x, y, j
                );
            }
        }
        prop_assert!(
            (0..v).any(|k| a[j * v + k] != b[j * v + k]),
            "changing token {} did not change the logits at position {}", j, j
        );
    }

    /// A sequence's logits depend only on its own tokens: not on the other rows of the batch,
    /// nor on the length of the sequence (a prefix gives the same logits at its positions).
    #[test]
    fn logits_of_a_row_ignore_other_rows_and_the_suffix(
        (cfg, n, s, seq, p) in config_and_rows(2..=4, 1)
            .prop_flat_map(|(c, n, s, seq)| (Just(c), Just(n), Just(s), Just(seq), 1..=s))
    ) {
        let m = cfg.init::<B>(&Default::default()).unwrap();
        let v = cfg.vocab;
        let all = logits(&m, &seq, n, s);
        prop_assert_eq!(all.len(), n * s * v);
        for r in 0..n {
            let row = &seq[r * s..(r + 1) * s];
            let alone = logits(&m, row, 1, s);
            let prefix = logits(&m, &row[..p], 1, p);
            for i in 0..s * v {
                let want = alone[i];
                let got = all[r * s * v + i];
                prop_assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "row {} of {}, flat index {}: batched {} vs alone {}", r, n, i, got, want
                );
            }
            for i in 0..p * v {
                let (got, want) = (prefix[i], alone[i]);
                prop_assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "row {}, prefix of {} of {}, flat index {}: {} vs {}", r, p, s, i, got, want
                );
            }
        }
    }

    /// Input validation: a batch is accepted exactly when batch ≥ 1, 1 ≤ seq ≤ max_seq_len,
    /// every token id is in 0..V and (with targets) the targets have the tokens' shape, lie in
    /// 0..V or are IGNORE_INDEX, and not all are ignored; everything else is
    /// `ModelError::Input` (never a panic), and accepted batches give finite logits and loss.
    #[test]
    fn malformed_batches_are_input_errors_and_valid_ones_are_finite(
        (vocab, seed, b, s, toks, targets) in (2usize..=12, any::<u64>(), 0usize..=3, 0usize..=11)
            .prop_flat_map(|(vocab, seed, b, s)| {
                let v = vocab as i64;
                let targets = prop_oneof![
                    1 => Just(None),
                    3 => Just(Some((b, s))),
                    1 => (0usize..=3, 0usize..=11).prop_map(Some),
                ]
                .prop_flat_map(move |shape| match shape {
                    None => Just(None).boxed(),
                    Some((tb, ts)) => prop::collection::vec(maybe_bad_target(v), tb * ts)
                        .prop_map(move |t| Some((tb, ts, t)))
                        .boxed(),
                });
                (
                    Just(vocab),
                    Just(seed),
                    Just(b),
                    Just(s),
                    prop::collection::vec(maybe_bad_id(v), b * s),
                    targets,
                )
            })
    ) {
        const MAX: usize = 8;
        let cfg = TestModelConfig {
            vocab,
            hidden: 16,
            layers: 1,
            heads: 2,
            intermediate: 16,
            max_seq_len: MAX,
            seed,
            ..TestModelConfig::tiny(vocab)
        };
        let m = cfg.init::<B>(&Default::default()).unwrap();
        let v = vocab as i64;
        let mut valid = b >= 1 && (1..=MAX).contains(&s) && toks.iter().all(|t| (0..v).contains(t));
        if let Some((tb, ts, t)) = &targets {
            valid &= (*tb, *ts) == (b, s)
                && t.iter().all(|x| *x == IGNORE_INDEX || (0..v).contains(x))
                && t.iter().any(|x| *x != IGNORE_INDEX);
        }
        let out = m.forward(
            tokens(&toks, b, s),
            targets.as_ref().map(|(tb, ts, t)| tokens(t, *tb, *ts)),
        );
        match out {
            Ok(out) => {
                prop_assert!(valid, "accepted a malformed batch");
                prop_assert_eq!(out.logits.dims(), [b, s, vocab]);
                let l = out.logits.into_data().to_vec::<f32>().unwrap();
                prop_assert!(l.iter().all(|x| x.is_finite()));
                prop_assert_eq!(out.loss.is_some(), targets.is_some());
                if let Some(loss) = out.loss {
                    let loss = loss.into_scalar();
                    prop_assert!(loss.is_finite() && loss >= 0.0, "loss {}", loss);
                }
            }
            Err(ModelError::Input { reason }) => {
                prop_assert!(!valid, "rejected a valid batch: {}", reason);
            }
            Err(e) => prop_assert!(false, "not an input error: {:?}", e),
        }
    }

    /// The loss is the mean over the non-ignored targets of −log softmax(logits)[target],
    /// checked against a host f64 log-sum-exp on the returned logits.
    #[test]
    fn loss_is_the_mean_cross_entropy_over_kept_targets(
        (cfg, n, s, seq, targets, keep_first) in config_and_rows(1..=3, 1)
            .prop_flat_map(|(c, n, s, seq)| {
                let v = c.vocab as i64;
                (
                    Just(c), Just(n), Just(s), Just(seq),
                    prop::collection::vec(prop_oneof![2 => 0..v, 1 => Just(IGNORE_INDEX)], n * s),
                    0..v,
                )
            })
    ) {
        let mut targets = targets;
        if targets.iter().all(|t| *t == IGNORE_INDEX) {
            targets[0] = keep_first;
        }
        let m = cfg.init::<B>(&Default::default()).unwrap();
        let v = cfg.vocab;
        let out = m.forward(tokens(&seq, n, s), Some(tokens(&targets, n, s))).unwrap();
        let lg = out.logits.into_data().to_vec::<f32>().unwrap();
        let got = f64::from(out.loss.unwrap().into_scalar());
        let (mut sum, mut count) = (0.0f64, 0usize);
        for (i, &t) in targets.iter().enumerate() {
            if t == IGNORE_INDEX {
                continue;
            }
            let row: Vec<f64> = lg[i * v..(i + 1) * v].iter().map(|&x| f64::from(x)).collect();
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            sum += lse - row[t as usize];
            count += 1;
        }
        let want = sum / count as f64;
        prop_assert!((got - want).abs() <= 2e-5 * (1.0 + want), "loss {} vs host {}", got, want);
    }

    /// Config validation: a valid config builds (its parameter count matches
    /// `num_params`); a config with exactly one bad field is `ModelError::Invalid` naming
    /// that field, from `validate`, `init` and `init_trunk` alike.
    #[test]
    fn config_validation_names_the_bad_field(base in valid_config(), c in corruption()) {
        let (cfg, bad) = corrupt(base, &c);
        let device = Default::default();
        match bad {
            None => {
                prop_assert!(cfg.validate().is_ok(), "{:?}", cfg.validate());
                let m = cfg.init::<B>(&device).unwrap();
                prop_assert_eq!(m.num_params(), cfg.num_params());
                prop_assert_eq!(m.lm_head.is_none(), cfg.tie_embeddings);
                let trunk = cfg.init_trunk::<B>(&device).unwrap();
                let head = if cfg.tie_embeddings { 0 } else { cfg.hidden * cfg.vocab + usize::from(cfg.bias) * cfg.vocab };
                prop_assert_eq!(trunk.num_params() + head, cfg.num_params());
            }
            Some(field) => {
                let named = |r: Result<(), ModelError>| match r {
                    Err(ModelError::Invalid { what, .. }) => Some(what),
                    _ => None,
                };
                prop_assert_eq!(named(cfg.validate()), Some(field));
                prop_assert_eq!(named(cfg.init::<B>(&device).map(|_| ())), Some(field));
                prop_assert_eq!(named(cfg.init_trunk::<B>(&device).map(|_| ())), Some(field));
            }
        }
    }

    /// Transition rows are probability distributions (non-negative, sum 1 within 1e-9, every
    /// transition possible), the stationary distribution is one too, is a fixed point of the
    /// chain on k-token states and agrees with a direct (GTH) solve, the entropy rate is
    /// `Σ π·H(row)` for that exact π, and building is deterministic in the seed.
    ///
    /// Dirichlet concentrations below 0.2 are left out: nearly reducible chains are common
    /// there, and chains above 512 states still use power iteration, which converges slowly on
    /// them (the exact solve's case: `stationary_of_a_nearly_reducible_chain_is_a_fixed_point`).
    #[test]
    fn markov_rows_and_stationary_are_distributions(cfg in markov_config(0.2)) {
        let c = MarkovCorpus::with_config(&cfg).unwrap();
        let (v, k) = (cfg.vocab, cfg.order);
        let states = v.pow(k as u32);
        prop_assert_eq!(c.states(), states);
        prop_assert_eq!(c.stationary().len(), states);
        for s in 0..states {
            let row: Vec<f64> = (0..v).map(|j| c.transition(s, j)).collect();
            prop_assert!(row.iter().all(|p| *p > 0.0 && *p <= 1.0), "row {}: {:?}", s, row);
            let total: f64 = row.iter().sum();
            prop_assert!((total - 1.0).abs() <= 1e-9, "row {} sums to {}", s, total);
        }
        let pi = c.stationary();
        prop_assert!(pi.iter().all(|p| *p >= 0.0));
        prop_assert!((pi.iter().sum::<f64>() - 1.0).abs() <= 1e-9);
        // π(s') = Σ_a π(a·V^(k−1) + hi) · P(j | a·V^(k−1) + hi), with s' = hi·V + j.
        let high = states / v;
        for s2 in 0..states {
            let (hi, j) = (s2 / v, s2 % v);
            let next: f64 = (0..v)
                .map(|a| {
                    let s = a * high + hi;
                    pi[s] * c.transition(s, j)
                })
                .sum();
            prop_assert!(
                (next - pi[s2]).abs() <= 1e-9,
                "π not a fixed point at state {}: {} vs {}", s2, next, pi[s2]
            );
        }
        let exact = exact_stationary(&c);
        for s in 0..states {
            prop_assert!(
                (pi[s] - exact[s]).abs() <= 1e-9,
                "π({}) = {} but the direct solve gives {}", s, pi[s], exact[s]
            );
        }
        let (h, want) = (c.entropy_rate(), entropy_rate_with(&c, &exact));
        prop_assert!((h - want).abs() <= 1e-9, "entropy rate {} vs {} from the exact π", h, want);
        let again = MarkovCorpus::with_config(&cfg).unwrap();
        prop_assert_eq!(again.stationary(), c.stationary());
        prop_assert_eq!(again.entropy_rate().to_bits(), c.entropy_rate().to_bits());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        ProptestConfig::default().cases.min(32)
    ))]

    /// The reported entropy rate is the expected per-token NLL of the chain's own samples.
    /// Each stream sequence starts in a state drawn from π, so (if π and the rate are right)
    /// the mean NLL of tokens k.. of every sequence is an unbiased, independent estimate of the
    /// rate: the grand mean must lie within 5 standard errors (estimated from the spread of
    /// the 256 sequence means) plus 0.01 nats for transitions too rare to be sampled.
    #[test]
    fn entropy_rate_matches_the_empirical_nll_of_samples(cfg in markov_config(0.05)) {
        const SEQS: u64 = 256;
        const LEN: usize = 160;
        let c = MarkovCorpus::with_config(&cfg).unwrap();
        let (v, k) = (cfg.vocab, cfg.order);
        let means: Vec<f64> = (0..SEQS)
            .map(|i| {
                let seq = c.sequence(Split::Train, i, LEN);
                let nll: f64 = (k..LEN)
                    .map(|t| -c.transition(state_of(&seq[t - k..t], v), seq[t]).ln())
                    .sum();
                nll / (LEN - k) as f64
            })
            .collect();
        let m = means.iter().sum::<f64>() / SEQS as f64;
        let var = means.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (SEQS - 1) as f64;
        let se = (var / SEQS as f64).sqrt();
        let h = c.entropy_rate();
        prop_assert!(h >= 0.0 && h <= (v as f64).ln() + 1e-9, "rate {} outside [0, ln V]", h);
        prop_assert!(
            (m - h).abs() <= 5.0 * se + 0.01,
            "empirical NLL {} vs entropy rate {} (standard error {})", m, h, se
        );
    }

    /// Corpus streams: `sequence(split, index, len)` is a pure function of its arguments
    /// (repeatable, and a shorter request is a prefix of a longer one), every token is inside
    /// the vocabulary, byte sequences are (wrapping) windows of their split, and
    /// `TokenBatch::from_corpus` rows are sequences `step·batch + b` of `seq_len + 1` tokens
    /// shifted into inputs and targets.
    #[test]
    fn corpus_streams_are_pure_in_vocab_and_batched_by_shifting(
        markov in markov_config(0.05),
        text in prop::collection::vec(any::<u8>(), 4..200),
        valid_fraction in 0.05f64..0.95,
        use_bytes in any::<bool>(),
        split in prop_oneof![Just(Split::Train), Just(Split::Valid)],
        index in any::<u64>(),
        (short, long) in (0usize..=64).prop_flat_map(|l| (0..=l, Just(l))),
        (step, batch, seq_len) in (0u64..1000, 1usize..=4, 1usize..=12),
    ) {
        let bytes = if use_bytes {
            match ByteCorpus::from_text(text.clone(), valid_fraction, markov.seed) {
                Ok(b) => Some(b),
                Err(ModelError::Invalid { .. }) => {
                    // Documented: at least 2 bytes in each split.
                    let train = ((text.len() as f64) * (1.0 - valid_fraction)).round() as usize;
                    prop_assert!(train < 2 || text.len() - train < 2);
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
            }
        } else {
            None
        };
        let chain = MarkovCorpus::with_config(&markov).unwrap();
        let corpus: &dyn Corpus = match &bytes {
            Some(b) => b,
            None => &chain,
        };
        let vocab = if use_bytes { 256 } else { markov.vocab };
        prop_assert_eq!(corpus.vocab(), vocab);
        prop_assert_eq!(corpus.loss_floor().is_some(), !use_bytes);
        let a = corpus.sequence(split, index, long);
        prop_assert_eq!(a.len(), long);
        prop_assert_eq!(&corpus.sequence(split, index, long), &a);
        prop_assert_eq!(&corpus.sequence(split, index, short)[..], &a[..short]);
        prop_assert!(a.iter().all(|&t| t < vocab));
        if let Some(b) = &bytes {
            let (train, valid) = b.split_sizes();
            prop_assert_eq!(train + valid, text.len());
            let part = match split {
                Split::Train => &text[..train],
                Split::Valid => &text[train..],
            };
            let n = part.len();
            prop_assert!(
                (0..n).any(|start| a.iter().enumerate().all(|(i, &t)| t == usize::from(part[(start + i) % n]))),
                "not a window of the {:?} split", split
            );
        }
        let tb = TokenBatch::from_corpus(corpus, split, step, batch, seq_len).unwrap();
        prop_assert_eq!((tb.batch, tb.seq_len), (batch, seq_len));
        prop_assert_eq!(tb.inputs.len(), batch * seq_len);
        prop_assert_eq!(tb.targets.len(), batch * seq_len);
        for r in 0..batch {
            let seq = corpus.sequence(split, step * batch as u64 + r as u64, seq_len + 1);
            for t in 0..seq_len {
                prop_assert_eq!(tb.inputs[r * seq_len + t], seq[t] as i64);
                prop_assert_eq!(tb.targets[r * seq_len + t], seq[t + 1] as i64);
            }
        }
    }
}

/// Found by `markov_rows_and_stationary_are_distributions` (seed kept in
/// props.proptest-regressions): for a nearly reducible chain the power iteration used to hit
/// its 100 000-iteration cap long before converging, leaving π off by 0.024 and not a fixed
/// point. Chains up to 512 states are now solved exactly (GTH elimination).
#[test]
fn stationary_of_a_nearly_reducible_chain_is_a_fixed_point() {
    let c = MarkovCorpus::with_config(&MarkovConfig {
        vocab: 4,
        order: 1,
        prior: RowPrior::Dirichlet {
            concentration: 0.05,
        },
        seed: 15_579_998_972_442_300_367,
    })
    .unwrap();
    let exact = exact_stationary(&c);
    let pi = c.stationary();
    let worst = (0..c.states())
        .map(|s| (pi[s] - exact[s]).abs())
        .fold(0.0, f64::max);
    // |πP − π|₁ for both: the direct solve is a fixed point, the power iterate is not.
    let residual = |p: &[f64]| {
        let high = c.states() / c.vocab();
        let mut next = vec![0.0; c.states()];
        for (s, ps) in p.iter().enumerate() {
            for j in 0..c.vocab() {
                next[(s % high) * c.vocab() + j] += ps * c.transition(s, j);
            }
        }
        next.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f64>()
    };
    eprintln!(
        "π {pi:?} (residual {:e})\nexact {exact:?} (residual {:e})",
        residual(pi),
        residual(&exact)
    );
    eprintln!(
        "max |Δπ| {worst:e}; entropy rate {} vs {} exact",
        c.entropy_rate(),
        entropy_rate_with(&c, &exact)
    );
    assert!(worst <= 1e-9, "max |Δπ| = {worst:e}");
    assert!(residual(pi) <= 1e-12, "|πP − π| = {:e}", residual(pi));
}

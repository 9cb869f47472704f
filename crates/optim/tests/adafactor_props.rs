//! Adafactor's invariants (`../shared/design.md`), in both conventions: the factored estimate
//! is exact for rank-1 `G∘G`, row and column accumulators carry equal mass, a matrix stores
//! m+n floats, the update RMS never exceeds the clip threshold, the vector path is RMSProp with
//! the decaying β2 (checked against an independent f64 loop), lr = 0 is the identity, the
//! update is odd in g, and save/load mid-run is bitwise. Case count: `PROPTEST_CASES`.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use common::*;
use moment_optim::{AdafactorConfig, AdafactorConvention, Chain, MomentOptimizer};
use proptest::prelude::*;

fn conventions() -> impl Strategy<Value = AdafactorConfig> {
    prop_oneof![
        Just(AdafactorConfig::transformers()),
        Just(AdafactorConfig {
            beta1: Some(0.9),
            weight_decay: 0.01,
            ..AdafactorConfig::transformers()
        }),
        Just(AdafactorConfig {
            relative_step: false,
            scale_parameter: false,
            ..AdafactorConfig::transformers()
        }),
        Just(AdafactorConfig::torch()),
        Just(AdafactorConfig {
            weight_decay: 0.1,
            ..AdafactorConfig::torch()
        }),
    ]
}

/// The step's lr: 1 (a multiplier) for the HF relative step, a real lr otherwise.
fn lr_for(c: &AdafactorConfig) -> f64 {
    match (c.convention, c.relative_step) {
        (AdafactorConvention::Transformers, true) => 1.0,
        _ => 1e-2,
    }
}

/// Run `grads` through one parameter of `shape`; the parameter after every step.
fn run(
    chain: Chain<B>,
    lr: f64,
    shape: &[usize],
    init: &[f32],
    grads: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    let mut opt = MomentOptimizer::new(chain);
    let mut params = vec![shaped("w", shape, init)];
    grads
        .iter()
        .map(|g| {
            params[0].grad = Some(flat(g));
            opt.step(lr, &mut params).unwrap();
            values(&params[0].value)
        })
        .collect()
}

fn close(a: &[f32], b: &[f32], rtol: f32, atol: f32) -> Result<(), TestCaseError> {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "element {}: {} vs {}",
            i,
            x,
            y
        );
    }
    Ok(())
}

/// Shapes `[l, m, n]` with l = 1 meaning 2-D.
fn dims() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..3, 2usize..6, 2usize..6)
}

proptest! {
    /// G_t = c_t · u wᵀ (per leading slice): G∘G is rank-1 at every step, so the factored
    /// second moment equals the full one and the factored trajectory equals Adafactor run on
    /// the same values as one long vector (the unfactored path).
    #[test]
    fn factored_estimate_is_exact_for_rank_one(
        config in conventions(), (l, m, n) in dims(),
        u in prop::collection::vec(0.2f32..2.0, 5), w in prop::collection::vec(0.2f32..2.0, 5),
        s in prop::collection::vec(0.5f32..2.0, 2), c in prop::collection::vec(0.1f32..3.0, 4),
        signs in prop::collection::vec(any::<bool>(), 50), init in prop::collection::vec(-1.0f32..1.0, 50),
    ) {
        let total = l * m * n;
        let init = &init[..total];
        let grads: Vec<Vec<f32>> = c.iter().map(|ct| {
            (0..total).map(|k| {
                let (b, i, j) = (k / (m * n), (k / n) % m, k % n);
                let sign = if signs[k] { 1.0 } else { -1.0 };
                sign * ct * s[b] * u[i] * w[j]
            }).collect()
        }).collect();
        let shape: Vec<usize> = if l == 1 { vec![m, n] } else { vec![l, m, n] };
        let lr = lr_for(&config);
        let factored = run(config.build().unwrap(), lr, &shape, init, &grads);
        let full = run(config.build().unwrap(), lr, &[total], init, &grads);
        for (a, b) in factored.iter().zip(&full) { close(a, b, 2e-5, 1e-7)?; }
    }

    /// mean(row accumulator) = mean(column accumulator) per leading slice: both are the EMA of
    /// the slice's mean of G² (+ ε1 in the transformers convention).
    #[test]
    fn rows_and_columns_carry_equal_mass(
        config in conventions(), (l, m, n) in dims(), seed in 0u64..1000, steps in 1usize..5,
    ) {
        let total = l * m * n;
        let shape = vec![l, m, n];
        let grads: Vec<Vec<f32>> = (0..steps).map(|t| noise(total, seed * 10 + t as u64)).collect();
        let mut opt = MomentOptimizer::new(config.build().unwrap());
        let mut params = vec![shaped("w", &shape, &noise(total, seed + 7))];
        for g in &grads {
            params[0].grad = Some(flat(g));
            opt.step(lr_for(&config), &mut params).unwrap();
        }
        let st = opt.state("w").unwrap().iter().find(|s| !s.tensors.is_empty()).unwrap();
        let (row, col) = match config.convention {
            AdafactorConvention::Transformers => ("exp_avg_sq_row", "exp_avg_sq_col"),
            AdafactorConvention::Torch => ("row_var", "col_var"),
        };
        let r = values(st.tensor(row).unwrap());
        let c = values(st.tensor(col).unwrap());
        prop_assert_eq!((r.len(), c.len()), (l * m, l * n));
        for b in 0..l {
            let rm: f32 = r[b * m..(b + 1) * m].iter().sum::<f32>() / m as f32;
            let cm: f32 = c[b * n..(b + 1) * n].iter().sum::<f32>() / n as f32;
            prop_assert!((rm - cm).abs() <= 1e-5 * rm.abs(), "slice {}: {} vs {}", b, rm, cm);
        }
    }

    /// A `[…, m, n]` tensor stores `…·(m + n)` second-moment floats (+ `…·m·n` with β1) and an
    /// 8-byte step counter; a vector stores `n`.
    #[test]
    fn state_memory_is_sublinear(config in conventions(), (l, m, n) in dims(), vector in any::<bool>()) {
        let shape: Vec<usize> = if vector { vec![m * n] } else { vec![l, m, n] };
        let total: usize = shape.iter().product();
        let mut opt = MomentOptimizer::new(config.build().unwrap());
        let mut params = vec![shaped("w", &shape, &vec![0.5; total])];
        params[0].grad = Some(flat(&vec![0.1; total]));
        opt.step(lr_for(&config), &mut params).unwrap();
        let second = if vector { total } else { l * (m + n) };
        let first = if config.beta1.is_some() { total } else { 0 };
        prop_assert_eq!(opt.state_memory().total_bytes, 4 * (second + first) as u64 + 8);
    }

    /// Without decay and momentum, RMS(Δθ) ≤ clip_threshold · ρ_t · max(ε2, RMS(θ)).
    #[test]
    fn update_rms_never_exceeds_the_clip_threshold(
        torch in any::<bool>(), d in 0.05f64..2.0, (l, m, n) in dims(), seed in 0u64..1000,
        scale in prop_oneof![Just(1e-3f32), Just(1.0f32), Just(1e3f32)],
    ) {
        let base = if torch { AdafactorConfig::torch() } else { AdafactorConfig::transformers() };
        let config = AdafactorConfig { clip_threshold: d, ..base };
        let lr = lr_for(&config);
        let total = l * m * n;
        let shape = vec![l, m, n];
        let mut opt = MomentOptimizer::new(config.build().unwrap());
        let mut params = vec![shaped("w", &shape, &noise(total, seed))];
        for t in 1..=4u64 {
            let before = values(&params[0].value);
            let g: Vec<f32> = noise(total, seed * 3 + t).iter().map(|x| x * scale).collect();
            params[0].grad = Some(flat(&g));
            opt.step(lr, &mut params).unwrap();
            let after = values(&params[0].value);
            let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
            let delta: Vec<f64> = after.iter().zip(&before).map(|(a, b)| f64::from(a - b)).collect();
            let theta: Vec<f64> = before.iter().map(|x| f64::from(*x)).collect();
            let rho = if torch { lr.min(1.0 / (t as f64).sqrt()) } else { 1e-2f64.min(1.0 / (t as f64).sqrt()) };
            let bound = d * rho * rms(&theta).max(1e-3);
            prop_assert!(rms(&delta) <= bound * (1.0 + 1e-4) + 1e-7, "step {}: {} > {}", t, rms(&delta), bound);
        }
    }

    /// 1-D parameters: the transformers convention with a fixed lr, no parameter scaling and no
    /// clipping is RMSProp with β2_t = 1 − t^−0.8 and ε1 added to g²; the torch convention is
    /// RMSProp with ε1² as a floor, step min(lr, 1/√t)·max(ε2, RMS θ), clipped at RMS d.
    /// Both checked against an independent f64 loop.
    #[test]
    fn vector_path_is_rmsprop_with_decaying_beta2(
        torch in any::<bool>(), init in prop::collection::vec(-1.0f32..1.0, 1..20), seed in 0u64..1000,
    ) {
        let n = init.len();
        let grads: Vec<Vec<f32>> = (0..6).map(|t| noise(n, seed + t)).collect();
        let (config, lr) = if torch {
            (AdafactorConfig::torch(), 5e-3)
        } else {
            (AdafactorConfig { relative_step: false, scale_parameter: false, clip_threshold: 1e30, ..AdafactorConfig::transformers() }, 1e-2)
        };
        let got = run(config.build().unwrap(), lr, &[n], &init, &grads);
        let mut theta: Vec<f64> = init.iter().map(|x| f64::from(*x)).collect();
        let mut v = vec![0.0f64; n];
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as f64;
            let w = t.powf(-0.8);
            let g: Vec<f64> = g.iter().map(|x| f64::from(*x)).collect();
            let rms = |x: &[f64]| (x.iter().map(|a| a * a).sum::<f64>() / x.len() as f64).sqrt();
            if torch {
                let eps1 = f64::from(f32::EPSILON);
                let step = lr.min(1.0 / t.sqrt()) * rms(&theta).max(1e-3);
                for i in 0..n { v[i] = (1.0 - w) * v[i] + w * g[i] * g[i]; }
                let u: Vec<f64> = (0..n).map(|i| g[i] / v[i].max(eps1 * eps1).sqrt()).collect();
                let denom = (rms(&u) / 1.0).max(1.0);
                for i in 0..n { theta[i] -= step / denom * u[i]; }
            } else {
                for i in 0..n {
                    v[i] = (1.0 - w) * v[i] + w * (g[i] * g[i] + 1e-30);
                    theta[i] -= lr * g[i] / v[i].sqrt();
                }
            }
            let want: Vec<f32> = theta.iter().map(|x| *x as f32).collect();
            close(&got[t as usize - 1], &want, 1e-5, 1e-6)?;
        }
    }

    /// lr = 0 is the identity (the relative step is scaled by it; torch's cap min(0, ·) = 0),
    /// and Δ(−g) = −Δ(g) from fresh state without decay.
    #[test]
    fn zero_lr_is_identity_and_update_is_odd(config in conventions(), (l, m, n) in dims(), seed in 0u64..1000) {
        let total = l * m * n;
        let shape = vec![l, m, n];
        let init = noise(total, seed);
        let grads: Vec<Vec<f32>> = (0..3).map(|t| noise(total, seed + 1 + t)).collect();
        let still = run(config.build().unwrap(), 0.0, &shape, &init, &grads);
        prop_assert_eq!(still.last().unwrap(), &init);
        if config.weight_decay == 0.0 {
            let neg: Vec<Vec<f32>> = grads.iter().map(|g| g.iter().map(|x| -x).collect()).collect();
            let lr = lr_for(&config);
            let a = run(config.build().unwrap(), lr, &shape, &init, &grads);
            let b = run(config.build().unwrap(), lr, &shape, &init, &neg);
            // Δ(−g) = −Δ(g) on the first step (later steps see different θ), up to the
            // rounding of θ + Δ (one ulp of the result each way).
            for k in 0..total {
                let (da, db) = (a[0][k] - init[k], b[0][k] - init[k]);
                let ulp = f32::EPSILON * a[0][k].abs().max(b[0][k].abs()).max(init[k].abs());
                prop_assert!((da + db).abs() <= 2.0 * ulp, "element {}: {} vs {}", k, da, db);
            }
        }
    }

    /// Saving mid-run and resuming in a fresh optimizer continues bitwise identically.
    #[test]
    fn resume_is_bitwise(config in conventions(), (l, m, n) in dims(), seed in 0u64..1000) {
        let total = l * m * n;
        let shape = vec![l, m, n];
        let lr = lr_for(&config);
        let grads: Vec<Vec<f32>> = (0..6).map(|t| noise(total, seed + t)).collect();
        let mut a = MomentOptimizer::new(config.build().unwrap());
        let mut pa = vec![shaped("w", &shape, &noise(total, seed + 99))];
        for g in &grads[..3] { pa[0].grad = Some(flat(g)); a.step(lr, &mut pa).unwrap(); }
        let mut b = MomentOptimizer::new(config.build().unwrap());
        b.load_record(a.to_record(), &Default::default()).unwrap();
        let mut pb = pa.clone();
        for g in &grads[3..] {
            pa[0].grad = Some(flat(g)); a.step(lr, &mut pa).unwrap();
            pb[0].grad = Some(flat(g)); b.step(lr, &mut pb).unwrap();
        }
        prop_assert!(values(&pa[0].value).iter().zip(&values(&pb[0].value)).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

/// Deterministic pseudo-random values in [-1, 1].
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn invalid_configs_are_typed_errors() {
    let t = AdafactorConfig::transformers();
    let cases = [
        (AdafactorConfig { eps1: 0.0, ..t }, "eps1"),
        (AdafactorConfig { eps2: -1.0, ..t }, "eps2"),
        (
            AdafactorConfig {
                clip_threshold: 0.0,
                ..t
            },
            "clip_threshold",
        ),
        (
            AdafactorConfig {
                decay_rate: 0.5,
                ..t
            },
            "decay_rate",
        ),
        (
            AdafactorConfig {
                beta1: Some(1.0),
                ..t
            },
            "beta1",
        ),
        (
            AdafactorConfig {
                weight_decay: f64::NAN,
                ..t
            },
            "weight_decay",
        ),
        (
            AdafactorConfig {
                relative_step: false,
                warmup_init: true,
                ..t
            },
            "warmup_init",
        ),
        (
            AdafactorConfig {
                eps1: 1e-30,
                ..AdafactorConfig::torch()
            },
            "eps1",
        ),
        (
            AdafactorConfig {
                relative_step: false,
                ..AdafactorConfig::torch()
            },
            "relative_step",
        ),
        (
            AdafactorConfig {
                beta1: Some(0.9),
                ..AdafactorConfig::torch()
            },
            "beta1",
        ),
    ];
    for (config, field) in cases {
        match config.build::<B>() {
            Err(moment_optim::OptimError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

/// Zero-size and scalar parameters step without panicking and stay finite.
#[test]
fn edge_shapes_are_fine() {
    for config in [AdafactorConfig::transformers(), AdafactorConfig::torch()] {
        let lr = lr_for(&config);
        for shape in [vec![], vec![1], vec![0, 3], vec![1, 1], vec![2, 0, 4]] {
            let total: usize = shape.iter().product();
            let got = run(
                config.build().unwrap(),
                lr,
                &shape,
                &vec![0.5; total],
                &[vec![0.0; total], vec![1.0; total]],
            );
            assert!(got.iter().flatten().all(|x| x.is_finite()), "{shape:?}");
        }
    }
}

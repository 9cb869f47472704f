//! Shampoo's invariants: inverse roots by the coupled Newton iteration satisfy
//! `(A^(−1/p))^p·A ≈ I` on SPD inputs and fail cleanly (never NaN) otherwise; statistics stay
//! symmetric PSD; the first step with ε → 0 is the polar factor `U Vᵀ`; updates are
//! equivariant under orthogonal rotations of the gradient; small dims merge as
//! pytorch_optimizer does. Case count: `PROPTEST_CASES`.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use moment_optim::linalg::{RootConfig, RootFailure, RootPrecision, inverse_root};
use moment_optim::port::{ArgValue, RefArgs, from_reference};
use moment_optim::transforms::merge_small_dims;
use moment_optim::{MomentOptimizer, NonFinitePolicy, ParamGroup, Selector, ShampooConfig};
use proptest::prelude::*;

fn mat(v: &[f64], n: usize) -> Tensor<B, 2> {
    Tensor::<B, 1>::from_data(
        TensorData::new(v.iter().map(|x| *x as f32).collect::<Vec<_>>(), [n * n]),
        &Default::default(),
    )
    .reshape([n, n])
}

fn to_vec(t: Tensor<B, 2>) -> Vec<f64> {
    let n = t.dims()[0] * t.dims()[1];
    values(&t.reshape([n]))
        .iter()
        .map(|x| f64::from(*x))
        .collect()
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            for j in 0..n {
                c[i * n + j] += a[i * n + k] * b[k * n + j];
            }
        }
    }
    c
}

/// A random orthogonal matrix (Gram–Schmidt of a seeded matrix).
fn orthogonal(n: usize, seed: u64) -> Vec<f64> {
    let r = noise(n * n, seed);
    let mut q: Vec<Vec<f64>> = Vec::new();
    for i in 0..n {
        let mut v: Vec<f64> = (0..n).map(|j| f64::from(r[i * n + j])).collect();
        for u in &q {
            let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            for (x, y) in v.iter_mut().zip(u) {
                *x -= d * y;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        q.push(v.iter().map(|x| x / norm).collect());
    }
    q.concat()
}

/// SPD matrix Q diag(λ) Qᵀ with eigenvalues spread over `cond`.
fn spd(n: usize, seed: u64, cond: f64) -> Vec<f64> {
    let q = orthogonal(n, seed);
    let lam: Vec<f64> = (0..n)
        .map(|i| cond.powf(i as f64 / (n.max(2) - 1) as f64))
        .collect();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n).map(|k| q[i * n + k] * lam[k] * q[j * n + k]).sum();
        }
    }
    a
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A well-conditioned n×n gradient U diag(σ) Vᵀ with σ ∈ [0.5, 2].
fn conditioned(n: usize, seed: u64) -> Vec<f32> {
    let u = orthogonal(n, seed + 11);
    let v = orthogonal(n, seed + 13);
    let s: Vec<f64> = noise(n, seed + 17)
        .iter()
        .map(|x| 1.25 + 0.75 * f64::from(*x))
        .collect();
    (0..n * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            (0..n)
                .map(|k| u[i * n + k] * s[k] * v[j * n + k])
                .sum::<f64>() as f32
        })
        .collect()
}

/// Run the Gupta form on one parameter; the update directions −Δ/lr of every step.
fn directions(config: ShampooConfig, shape: &[usize], grads: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let n: usize = shape.iter().product();
    let lr = 1e-3;
    let mut opt = MomentOptimizer::new(config.build().unwrap());
    let mut params = vec![shaped("w", shape, &vec![0.0; n])];
    grads
        .iter()
        .map(|g| {
            let before = values(&params[0].value);
            params[0].grad = Some(flat(g));
            opt.step(lr, &mut params).unwrap();
            values(&params[0].value)
                .iter()
                .zip(&before)
                .map(|(a, b)| -f64::from(a - b) / lr)
                .collect()
        })
        .collect()
}

proptest! {
    /// (A^(−1/p))^p · A = I on SPD matrices up to condition number 1e4 (f64 iteration) or 1e2
    /// (f32 iteration). The root is stored in f32, which bounds the residual by ~ε_f32·cond.
    #[test]
    fn root_power_times_matrix_is_identity(n in 1usize..7, p in prop_oneof![Just(2u32), Just(4), Just(6)], seed in 0u64..1000, lcond in 0.0f64..4.0, f32p in any::<bool>()) {
        let cond = if f32p { 10f64.powf(lcond.min(2.0)) } else { 10f64.powf(lcond) };
        let a = spd(n, seed, cond);
        let config = if f32p { RootConfig { precision: RootPrecision::F32, tolerance: 1e-6, ..RootConfig::default() } } else { RootConfig::default() };
        let r = to_vec(inverse_root(mat(&a, n), p, &config).unwrap());
        let mut rp = r.clone();
        for _ in 1..p { rp = matmul(&rp, &r, n); }
        let id = matmul(&rp, &a, n);
        let tol = if f32p { 2e-3 } else { 1e-5 + 5e-7 * cond };
        for i in 0..n {
            for j in 0..n {
                let want = if i == j { 1.0 } else { 0.0 };
                prop_assert!((id[i * n + j] - want).abs() <= tol, "({},{}) = {}", i, j, id[i * n + j]);
            }
        }
    }

    /// Statistics stay symmetric positive semi-definite through steps (both forms).
    #[test]
    fn statistics_are_symmetric_psd(seed in 0u64..1000, scalable in any::<bool>(), (r, c) in (2usize..6, 2usize..6)) {
        let mut config = if scalable { ShampooConfig::scalable() } else { ShampooConfig::gupta() };
        config.shampoo.block_size = Some(4);
        config.shampoo.precondition_frequency = 2;
        let mut opt = MomentOptimizer::new(config.build().unwrap());
        let mut params = vec![shaped("w", &[r, c], &noise(r * c, seed))];
        for t in 0..4 {
            params[0].grad = Some(flat(&noise(r * c, seed * 7 + t)));
            opt.step(1e-3, &mut params).unwrap();
        }
        for st in opt.state("w").unwrap()[0].tensors.iter().filter(|s| s.name.contains("pre_cond") && !s.name.contains("inv") && !s.name.contains("pre_conditioners")) {
            let d = st.shape[0];
            let s: Vec<f64> = values(&st.tensor).iter().map(|x| f64::from(*x)).collect();
            let scale = s.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            for i in 0..d {
                for j in 0..d {
                    prop_assert!((s[i * d + j] - s[j * d + i]).abs() <= 1e-6 * scale, "{} not symmetric", st.name);
                }
            }
            for k in 0..5u64 {
                let x: Vec<f64> = noise(d, seed + 100 + k).iter().map(|v| f64::from(*v)).collect();
                let q: f64 = (0..d).map(|i| (0..d).map(|j| x[i] * s[i * d + j] * x[j]).sum::<f64>()).sum();
                prop_assert!(q >= -1e-6 * scale, "{}: xᵀSx = {}", st.name, q);
            }
        }
    }

    /// With ε → 0 the first Gupta step on a full-rank square gradient G = U Σ Vᵀ is the polar
    /// factor U Vᵀ: orthonormal rows and G Xᵀ symmetric positive definite. (For a rectangular G
    /// one statistic is singular and the ridge direction is rounding noise — the ill-posed case
    /// the reference README warns about.)
    #[test]
    fn first_step_is_the_polar_factor(m in 2usize..6, seed in 0u64..1000) {
        let n = m;
        let config = ShampooConfig::gupta();
        let g = conditioned(n, seed);
        let x = &directions(config, &[m, n], std::slice::from_ref(&g))[0];
        for i in 0..m {
            for j in 0..m {
                let dot: f64 = (0..n).map(|k| x[i * n + k] * x[j * n + k]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                prop_assert!((dot - want).abs() < 2e-3, "XXᵀ[{},{}] = {}", i, j, dot);
            }
        }
        let gx: Vec<f64> = (0..m * m).map(|ij| (0..n).map(|k| f64::from(g[(ij / m) * n + k]) * x[(ij % m) * n + k]).sum()).collect();
        for i in 0..m {
            prop_assert!(gx[i * m + i] > 0.0);
            for j in 0..m {
                prop_assert!((gx[i * m + j] - gx[j * m + i]).abs() < 2e-3 * (1.0 + gx[i * m + j].abs()));
            }
        }
    }

    /// Rotating every gradient G → Q₁ G Q₂ᵀ rotates every update the same way (the statistics
    /// and the ridge are rotation-invariant), over several steps.
    #[test]
    fn updates_are_orthogonally_equivariant(n in 2usize..5, seed in 0u64..1000) {
        let q1 = orthogonal(n, seed + 1);
        let q2 = orthogonal(n, seed + 2);
        let rot = |g: &[f64]| -> Vec<f64> {
            let t = matmul(&q1, g, n);
            let q2t: Vec<f64> = (0..n * n).map(|ij| q2[(ij % n) * n + ij / n]).collect();
            matmul(&t, &q2t, n)
        };
        let grads: Vec<Vec<f64>> = (0..3).map(|t| conditioned(n, seed * 3 + t).iter().map(|x| f64::from(*x)).collect()).collect();
        let f = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        let plain = directions(ShampooConfig::gupta(), &[n, n], &grads.iter().map(|g| f(g)).collect::<Vec<_>>());
        let rotated = directions(ShampooConfig::gupta(), &[n, n], &grads.iter().map(|g| f(&rot(g))).collect::<Vec<_>>());
        for (p, r) in plain.iter().zip(&rotated) {
            let want = rot(p);
            let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            for (a, b) in r.iter().zip(&want) {
                prop_assert!((a - b).abs() <= 2e-3 * scale, "{} vs {}", a, b);
            }
        }
    }
}

#[test]
fn roots_fail_cleanly_and_the_optimizer_keeps_the_previous_one() {
    let c = RootConfig::default();
    assert_eq!(
        inverse_root(mat(&[1.0, 0.0, 0.0, -1.0], 2), 4, &c).unwrap_err(),
        RootFailure::NoConvergence
    );
    assert_eq!(
        inverse_root(mat(&[f64::NAN, 0.0, 0.0, 1.0], 2), 4, &c).unwrap_err(),
        RootFailure::NonFinite
    );
    assert_eq!(
        inverse_root(mat(&[0.0; 4], 2), 2, &c).unwrap_err(),
        RootFailure::NonFinite
    );

    // A gradient whose square overflows f32 makes the statistic infinite: the root is kept,
    // the failure counted, and no root ever holds NaN.
    let mut opt = MomentOptimizer::builder()
        .group(ParamGroup::new(
            "all",
            Selector::all(),
            ShampooConfig::gupta().build().unwrap(),
        ))
        .non_finite(NonFinitePolicy::Propagate)
        .build()
        .unwrap();
    let mut params = vec![shaped("w", &[2, 2], &[0.0; 4])];
    params[0].grad = Some(flat(&[1.0, 0.5, -0.5, 2.0]));
    opt.step(1e-3, &mut params).unwrap();
    let roots = |opt: &MomentOptimizer<B>| -> Vec<f32> {
        opt.state("w").unwrap()[0]
            .tensors
            .iter()
            .filter(|s| s.name.starts_with("inv_"))
            .flat_map(|s| values(&s.tensor))
            .collect()
    };
    let before = roots(&opt);
    params[0].grad = Some(flat(&[1e30, 0.0, 0.0, 1.0]));
    opt.step(1e-3, &mut params).unwrap();
    let st = &opt.state("w").unwrap()[0];
    assert_eq!(st.counter("root_failures"), Some(2));
    assert_eq!(roots(&opt), before);
    assert!(roots(&opt).iter().all(|x| x.is_finite()));
}

/// pytorch_optimizer `Shampoo(maximize=True, momentum=μ)`: `init_group` stores
/// `momentum_buffer = grad.clone()` before `maximize_gradient` negates `p.grad`, so step 1 is
/// `lerp(−g, g, μ) = (2μ − 1)·g` — a *descent* step for μ > ½; from step 2 the buffer is the
/// previous preconditioned update. Two steps of a `[1]` parameter, by hand from `Shampoo.step`
/// (`S = 1e-6 + Σ ĝ²`, root `S^(−1/2)`, `θ ← θ − lr·ĝ·S^(−1/2)`).
#[test]
fn maximize_with_momentum_starts_from_the_unflipped_gradient() {
    let (mu, lr, eps) = (0.9, 1e-2, 1e-6);
    let args: RefArgs = [
        ("lr", ArgValue::Float(lr)),
        ("momentum", ArgValue::Float(mu)),
        ("maximize", ArgValue::Bool(true)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut opt = MomentOptimizer::new(
        from_reference::<B>("pytorch_optimizer.Shampoo", &args)
            .unwrap()
            .chain,
    );
    let (theta0, g1, g2) = (1.0f64, 0.5f64, -0.3f64);
    let mut params = vec![param("p", &[theta0 as f32], None)];
    // Step 1: ĝ = lerp(−g1, g1, μ) = (2μ − 1)·g1.
    let h1 = (2.0 * mu - 1.0) * g1;
    let s1 = eps + h1 * h1;
    let x1 = h1 / s1.sqrt();
    let theta1 = theta0 - lr * x1;
    // Step 2: ĝ = lerp(−g2, x1, μ).
    let h2 = -g2 + mu * (x1 + g2);
    let s2 = s1 + h2 * h2;
    let theta2 = theta1 - lr * h2 / s2.sqrt();
    params[0].grad = Some(flat(&[g1 as f32]));
    opt.step(lr, &mut params).unwrap();
    let p1 = values(&params[0].value);
    assert!(
        p1[0] < 1.0,
        "μ = 0.9: the first maximize step descends, {p1:?}"
    );
    assert_close(&p1, &[theta1], 1e-5, 1e-6, "step 1");
    params[0].grad = Some(flat(&[g2 as f32]));
    opt.step(lr, &mut params).unwrap();
    assert_close(&values(&params[0].value), &[theta2], 1e-5, 1e-6, "step 2");
    // Without maximize the first lerp is a no-op: plain −lr·g/√(ε + g²).
    let plain: RefArgs = [
        ("lr", ArgValue::Float(lr)),
        ("momentum", ArgValue::Float(mu)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut opt = MomentOptimizer::new(
        from_reference::<B>("pytorch_optimizer.Shampoo", &plain)
            .unwrap()
            .chain,
    );
    let mut params = vec![param("p", &[theta0 as f32], Some(&[g1 as f32]))];
    opt.step(lr, &mut params).unwrap();
    let want = theta0 - lr * g1 / (eps + g1 * g1).sqrt();
    assert_close(
        &values(&params[0].value),
        &[want],
        1e-5,
        1e-6,
        "no maximize",
    );
}

#[test]
fn small_dims_merge_like_pytorch_optimizer() {
    assert_eq!(merge_small_dims(&[7], 4), vec![1, 7]);
    assert_eq!(merge_small_dims(&[4, 6], 4), vec![4, 6]);
    assert_eq!(merge_small_dims(&[6, 4], 4), vec![1, 6, 4]);
    assert_eq!(merge_small_dims(&[3, 4, 5], 4), vec![3, 4, 5]);
    assert_eq!(merge_small_dims(&[3, 4, 5], 512), vec![1]);
    // pytorch_optimizer merges from the first dim (Meta's distributed_shampoo from the last
    // would give [96, 4096]).
    assert_eq!(merge_small_dims(&[32, 3, 64, 64], 8192), vec![6144, 64]);
}

/// Exact state: two d×d statistics and roots per block and axis, plus the momentum buffer.
#[test]
fn state_memory_matches_the_layout() {
    let mut opt = MomentOptimizer::new(ShampooConfig::gupta().build().unwrap());
    let mut params = vec![shaped("w", &[4, 6], &[0.0; 24])];
    params[0].grad = Some(flat(&noise(24, 1)));
    opt.step(1e-3, &mut params).unwrap();
    // 2·(16 + 36) floats of statistics and roots, 24 of momentum buffer, two counters
    assert_eq!(
        opt.state_memory().total_bytes,
        4 * (2 * (16 + 36) + 24) + 16
    );
}

/// Grafting rescales the Shampoo direction to the graft's norm per tensor: with an Adam graft
/// and no momentum effect on step 1 the update norm equals ‖g/(√(g²) + ε)‖ = √n (up to ε).
#[test]
fn adam_graft_sets_the_update_norm() {
    let mut c = ShampooConfig::scalable();
    c.shampoo.graft = moment_optim::transforms::Graft::Adam(0.999);
    c.shampoo.block_size = Some(4);
    c.shampoo.start_preconditioning_step = 1;
    c.shampoo.precondition_frequency = 1;
    c.shampoo.momentum = moment_optim::transforms::ShampooMomentum::Heavy {
        beta1: 0.9,
        nesterov: false,
        moving_average: false,
    };
    let g = noise(4 * 6, 5);
    let d = &directions(c, &[4, 6], &[g])[0];
    let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - (24f64).sqrt()).abs() < 1e-3, "{norm}");
}

/// `U diag(σ) Vᵀ` for given singular values (n×n).
fn with_singular_values(n: usize, seed: u64, s: &[f64]) -> Vec<f32> {
    let u = orthogonal(n, seed + 11);
    let v = orthogonal(n, seed + 13);
    (0..n * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            (0..n)
                .map(|k| u[i * n + k] * s[k] * v[j * n + k])
                .sum::<f64>() as f32
        })
        .collect()
}

/// Rank-deficient statistics (zero gradient first, then rank-1 gradients: the factors have
/// n − 1 zero eigenvalues, only ε regularizes them) and ill-conditioned ones (singular values
/// spread over 1e8 and 1e16, and a gradient with one row of 1e15 among rows of 1e-15): every
/// step succeeds, parameters and inverse roots stay finite, and on rank-1 gradients the update
/// stays in the gradient's row and column spaces (nothing leaks into the null space).
#[test]
fn rank_deficient_and_ill_conditioned_statistics_give_finite_steps() {
    let n = 5;
    let rank1: Vec<f32> = {
        let (u, v) = (noise(n, 1), noise(n, 2));
        (0..n * n).map(|ij| u[ij / n] * v[ij % n]).collect()
    };
    let spread = |c: f64| {
        (0..n)
            .map(|k| c.powf(-(k as f64) / (n - 1) as f64))
            .collect::<Vec<_>>()
    };
    let cases: Vec<(&str, Vec<Vec<f32>>)> = vec![
        (
            "zero then rank 1",
            std::iter::once(vec![0.0; n * n])
                .chain(std::iter::repeat_n(rank1.clone(), 6))
                .collect(),
        ),
        (
            "cond 1e8",
            (0..6)
                .map(|s| with_singular_values(n, s, &spread(1e8)))
                .collect(),
        ),
        (
            "cond 1e16",
            (0..6)
                .map(|s| with_singular_values(n, s, &spread(1e16)))
                .collect(),
        ),
        (
            "one huge row",
            (0..6)
                .map(|s| {
                    noise(n * n, 40 + s)
                        .iter()
                        .enumerate()
                        .map(|(i, x)| if i / n == 0 { x * 1e15 } else { x * 1e-15 })
                        .collect()
                })
                .collect(),
        ),
    ];
    for config in [ShampooConfig::default(), ShampooConfig::gupta()] {
        for (name, grads) in &cases {
            let mut opt = MomentOptimizer::new(config.clone().build().unwrap());
            let mut params = vec![shaped("w", &[n, n], &noise(n * n, 7))];
            for (k, g) in grads.iter().enumerate() {
                let before = values(&params[0].value);
                params[0].grad = Some(flat(g));
                opt.step(1e-3, &mut params)
                    .unwrap_or_else(|e| panic!("{name}, step {k}: {e}"));
                let after = values(&params[0].value);
                assert!(
                    after.iter().all(|x| x.is_finite()),
                    "{name}, step {k}: {after:?}"
                );
                for st in &opt.state("w").unwrap()[0].tensors {
                    assert!(
                        values(&st.tensor).iter().all(|x| x.is_finite()),
                        "{name}, step {k}: state `{}` not finite",
                        st.name
                    );
                }
                if *name == "zero then rank 1" && k > 0 {
                    // Δ = P·G·Q with P, Q functions of u uᵀ and v vᵀ (+ ε I): its component
                    // orthogonal to u on the left or to v on the right is the ε part only, so
                    // the update is rank one along u vᵀ up to rounding.
                    let (u, v) = (noise(n, 1), noise(n, 2));
                    let d: Vec<f64> = after
                        .iter()
                        .zip(&before)
                        .map(|(a, b)| f64::from(a - b))
                        .collect();
                    let uu: f64 = u.iter().map(|x| f64::from(*x).powi(2)).sum();
                    let vv: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum();
                    let coef: f64 = (0..n * n)
                        .map(|ij| d[ij] * f64::from(u[ij / n]) * f64::from(v[ij % n]))
                        .sum::<f64>()
                        / (uu * vv);
                    let resid: f64 = (0..n * n)
                        .map(|ij| {
                            (d[ij] - coef * f64::from(u[ij / n]) * f64::from(v[ij % n])).powi(2)
                        })
                        .sum::<f64>()
                        .sqrt();
                    let norm: f64 = d.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let decay_part = 1e-2 * norm + 1e-6;
                    assert!(
                        resid <= decay_part,
                        "{name}, step {k}: off-rank-1 part {resid} of {norm}"
                    );
                }
            }
        }
    }
}

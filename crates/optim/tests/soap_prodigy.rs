//! SOAP (host eigen/QR, eigenbasis Adam) and Prodigy (the engine's group phase).
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use burn::tensor::Tensor;
use common::{B, flat, shaped, values};
use moment_optim::linalg::{qr_orthogonal, symmetric_eigen};
use moment_optim::{
    Chain, GradEntry, MomentOptimizer, OptimError, ParamGroup, ParamTensor, ProdigyConfig,
    Selector, SoapConfig,
};
use proptest::prelude::*;

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

fn transpose(a: &[f64], n: usize) -> Vec<f64> {
    (0..n * n).map(|x| a[(x % n) * n + x / n]).collect()
}

fn max_abs_diff_from_identity(a: &[f64], n: usize) -> f64 {
    (0..n * n)
        .map(|x| (a[x] - if x / n == x % n { 1.0 } else { 0.0 }).abs())
        .fold(0.0, f64::max)
}

/// A state tensor of the SOAP transform of parameter `w` (f64).
fn soap_state(opt: &MomentOptimizer<B>, name: &str) -> Vec<f64> {
    values(opt.state("w").unwrap()[0].tensor(name).unwrap())
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Smallest gap between the sorted `values`, relative to the largest magnitude (0 when all
/// are zero: one repeated value).
fn relative_gap(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| b.total_cmp(a));
    let top = values.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    if top == 0.0 {
        return 0.0;
    }
    values
        .windows(2)
        .map(|w| (w[0] - w[1]) / top)
        .fold(f64::INFINITY, f64::min)
}

/// How well-conditioned a SOAP run on a `[3, 4]` parameter `w` is in f32 (see
/// `soap_is_equivariant_under_axis_rotations`), observed from its state after every step.
#[derive(Debug)]
struct SoapConditioning {
    /// Relative eigenvalue gap of the factors the first eigenbases come from (step 1).
    eigen_gap: f64,
    /// Relative gap of the estimated eigenvalues that order each refreshed basis.
    order_gap: f64,
    /// Smallest `√exp_avg_sq` entry over the steps that update it.
    min_sqrt_v: f64,
}

impl SoapConditioning {
    fn new() -> Self {
        Self {
            eigen_gap: f64::INFINITY,
            order_gap: f64::INFINITY,
            min_sqrt_v: f64::INFINITY,
        }
    }

    /// After step `t`; `q_before`: the bases `Q.0`, `Q.1` the step started with.
    fn observe(
        &mut self,
        opt: &MomentOptimizer<B>,
        t: usize,
        frequency: u64,
        q_before: Option<&[Vec<f64>; 2]>,
    ) {
        for (axis, d) in [(0usize, 3usize), (1, 4)] {
            let gg = soap_state(opt, &format!("GG.{axis}"));
            if t == 1 {
                self.eigen_gap = self
                    .eigen_gap
                    .min(relative_gap(symmetric_eigen(&gg, d).unwrap().0));
            }
            if let Some(q) = q_before.filter(|_| t >= 2 && (t as u64 - 1).is_multiple_of(frequency))
            {
                let q = &q[axis];
                let est = (0..d)
                    .map(|j| {
                        (0..d)
                            .flat_map(|i| (0..d).map(move |k| (i, k)))
                            .map(|(i, k)| q[i * d + j] * gg[i * d + k] * q[k * d + j])
                            .sum()
                    })
                    .collect();
                self.order_gap = self.order_gap.min(relative_gap(est));
            }
        }
        if t >= 2 {
            let v_min = soap_state(opt, "exp_avg_sq")
                .into_iter()
                .fold(f64::INFINITY, f64::min);
            self.min_sqrt_v = self.min_sqrt_v.min(v_min.sqrt());
        }
    }

    fn well_conditioned(&self) -> bool {
        self.eigen_gap >= 1e-3 && self.order_gap >= 1e-3 && self.min_sqrt_v >= 1e-5
    }
}

/// A random orthogonal matrix: the Q of a random matrix.
fn orthogonal(seed: &[f64], n: usize) -> Vec<f64> {
    qr_orthogonal(seed, n).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn eigen_decomposition_reconstructs_and_sorts(n in 1usize..9, raw in prop::collection::vec(-2.0f64..2.0, 64)) {
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                a[i * n + j] = raw[i * 8 + j];
                a[j * n + i] = raw[i * 8 + j];
            }
        }
        let (vals, vecs) = symmetric_eigen(&a, n).unwrap();
        prop_assert!(vals.windows(2).all(|w| w[0] >= w[1]), "descending: {vals:?}");
        prop_assert!(max_abs_diff_from_identity(&matmul(&transpose(&vecs, n), &vecs, n), n) < 1e-12);
        // A·V = V·Λ
        let av = matmul(&a, &vecs, n);
        for i in 0..n {
            for j in 0..n {
                prop_assert!((av[i * n + j] - vecs[i * n + j] * vals[j]).abs() < 1e-11);
            }
        }
    }

    #[test]
    fn qr_factor_is_orthogonal_and_triangularizes(n in 1usize..9, raw in prop::collection::vec(-2.0f64..2.0, 64), rank_deficient in any::<bool>()) {
        let mut a: Vec<f64> = raw[..n * n].to_vec();
        if rank_deficient && n > 1 {
            for i in 0..n {
                a[i * n + n - 1] = a[i * n];
            }
        }
        let q = qr_orthogonal(&a, n).unwrap();
        prop_assert!(max_abs_diff_from_identity(&matmul(&transpose(&q, n), &q, n), n) < 1e-12);
        let r = matmul(&transpose(&q, n), &a, n);
        for i in 0..n {
            for j in 0..i {
                prop_assert!(r[i * n + j].abs() < 1e-12, "R[{i}][{j}] = {}", r[i * n + j]);
            }
        }
    }

    /// SOAP is equivariant under orthogonal changes of basis of each axis: running it on
    /// `U·W·Vᵀ` with gradients `U·G·Vᵀ` gives `U·W_t·Vᵀ` (the eigenbases rotate with the data;
    /// decay is linear). Covers the factors, the eigen-decomposition, the projections and the
    /// refresh (frequency 3 over 8 steps).
    ///
    /// Exact in exact arithmetic (for distinct eigenvalues), but the f32 computation — ours and
    /// the reference's, which does the same math in f32 — is ill-conditioned for some inputs, so
    /// the 2e-4 agreement is asserted only where the plain run is well-conditioned
    /// (`SoapConditioning::well_conditioned`; ≈ 4% of random inputs are skipped):
    /// (1) after step 1 the eigenvalues of each factor are separated by ≥ 1e-3·λ_max (else the
    /// eigenvectors are fixed only to ~u/gap, not at all for a repeated eigenvalue, and Adam is
    /// not invariant under rotations within that eigenspace); (2) at each refresh the estimated
    /// eigenvalues `diag(QᵀGG Q)` are separated by ≥ 1e-3·max (else rounding can flip the sort
    /// order that permutes `exp_avg_sq`); (3) every entry of `exp_avg_sq` stays ≥ (1e-5)² (else
    /// it squares a near-zero projected gradient component known only to a few percent in f32,
    /// and after a refresh — `exp_avg_sq` is permuted, not rotated, as in the reference — the
    /// momentum divided by its square root reaches ~1e3 where Adam's bound is 1). In a
    /// 200k-input sweep every failure broke one of these; the inputs meeting them deviated by at
    /// most 7e-5. `soap_ill_conditioned_input_keeps_equivariant_statistics` pins the saved
    /// failure, a case of (3).
    #[test]
    fn soap_is_equivariant_under_axis_rotations(
        init in prop::collection::vec(-1.0f64..1.0, 12),
        grads in prop::collection::vec(prop::collection::vec(-1.0f64..1.0, 12), 8),
        ru in prop::collection::vec(-1.0f64..1.0, 9),
        rv in prop::collection::vec(-1.0f64..1.0, 16),
    ) {
        let (m, n) = (3usize, 4usize);
        let u = orthogonal(&ru, m);
        let v = orthogonal(&rv, n);
        // x ↦ U·x·Vᵀ on [m, n] row-major
        let rotate = |x: &[f64]| -> Vec<f32> {
            let mut out = vec![0.0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for a in 0..m {
                        for b in 0..n {
                            s += u[i * m + a] * x[a * n + b] * v[j * n + b];
                        }
                    }
                    out[i * n + j] = s;
                }
            }
            out.into_iter().map(|x| x as f32).collect()
        };
        let config = SoapConfig { precondition_frequency: 3, weight_decay: 0.1, ..SoapConfig::default() };
        let run = |w0: Vec<f32>, gs: Vec<Vec<f32>>| {
            let mut opt = MomentOptimizer::new(config.build::<B>().unwrap());
            let mut p = vec![shaped("w", &[m, n], &w0)];
            let mut cond = SoapConditioning::new();
            for (t, g) in gs.into_iter().enumerate() {
                let q_before = (t > 0).then(|| [soap_state(&opt, "Q.0"), soap_state(&opt, "Q.1")]);
                p[0].grad = Some(flat(&g));
                opt.step(0.05, &mut p).unwrap();
                cond.observe(&opt, t + 1, config.precondition_frequency, q_before.as_ref());
            }
            (values(&p[0].value), cond)
        };
        let as32 = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<_>>();
        let (plain, cond) = run(as32(&init), grads.iter().map(|g| as32(g)).collect());
        prop_assume!(cond.well_conditioned(), "ill-conditioned in f32: {:?}", cond);
        let (turned, _) = run(rotate(&init), grads.iter().map(|g| rotate(g)).collect());
        let plain64: Vec<f64> = plain.iter().map(|&x| f64::from(x)).collect();
        let expected = rotate(&plain64);
        for (a, e) in turned.iter().zip(&expected) {
            prop_assert!((a - e).abs() < 2e-4, "{turned:?} vs {expected:?}");
        }
    }
}

/// The saved failure of `soap_is_equivariant_under_axis_rotations` (3×4, two gradients then
/// six zero ones, `U = I`, `V` swapping the last two columns with a sign flip). Not a defect:
/// `g₂` has a projected component of 1.08e-5 (exact, f64) in the step-1 eigenbasis, so its
/// `exp_avg_sq` entry is ≈ 6e-12 and its f32 value is known only to ~2% (5.96e-12 plain,
/// 5.82e-12 rotated). After the refresh at step 4 (which permutes `exp_avg_sq`, as the
/// reference does, but cannot rotate it) the momentum meets that entry with a ~1e-2 component:
/// the step-5 direction has norm ~680 where Adam's fixed-basis bound is `√(mn)` (β1² ≤ β2),
/// the parameters move by ~50 and carry the rounding difference (0.67, 1.2%). The update is
/// that sensitive without any rotation: changing `g₂[0]` by one f32 ulp moved the result by
/// 0.32. What holds: statistics and bases are equivariant to f32 rounding, the parameters stay
/// finite and agree to the amplified rounding.
#[test]
fn soap_ill_conditioned_input_keeps_equivariant_statistics() {
    // the shrunk proptest input (f64, converted like the property does)
    const G1: [f64; 12] = [
        -0.05108795050448311,
        -0.7946245807731357,
        -0.0707318039648939,
        0.2672102015524451,
        0.4393518680056361,
        -0.5366874126704916,
        -0.2889705720973546,
        0.10535752064635309,
        0.887823598131089,
        0.6620777122178866,
        0.005192520596757935,
        0.3009330922717318,
    ];
    const G2: [f64; 12] = [
        0.6947939481032058,
        0.04840314754675196,
        0.7869585759711044,
        -0.7530431400646488,
        0.7120690370230188,
        -0.12685915540846382,
        -0.5434714141663577,
        0.17130380382818775,
        0.3855307257721525,
        0.502375408283264,
        -0.6457508557240964,
        0.7233725351937209,
    ];
    let g2_f32 = G2.map(|x| x as f32);
    let (m, n) = (3usize, 4usize);
    // (V·x)_i = s_i·x_{p_i}: entries 2 and 3 swapped and negated (V = Vᵀ)
    let vp = |i: usize| match i {
        2 => (3, -1.0f32),
        3 => (2, -1.0),
        _ => (i, 1.0),
    };
    // x ↦ x·Vᵀ on [m, n]
    let turn = |x: &[f32]| -> Vec<f32> {
        (0..m * n)
            .map(|i| {
                let (pj, sj) = vp(i % n);
                sj * x[i - i % n + pj]
            })
            .collect()
    };
    let grads = |g2: [f32; 12]| -> Vec<Vec<f32>> {
        let mut gs = vec![G1.map(|x| x as f32).to_vec(), g2.to_vec()];
        gs.resize(8, vec![0.0; m * n]);
        gs
    };
    let config = SoapConfig {
        precondition_frequency: 3,
        weight_decay: 0.1,
        ..SoapConfig::default()
    };
    let (lr, wd, beta) = (0.05f64, 0.1f64, 0.95f64);
    // parameters after every step and the optimizer
    let run = |gs: Vec<Vec<f32>>| {
        let mut opt = MomentOptimizer::new(config.build::<B>().unwrap());
        let mut p = vec![shaped("w", &[m, n], &[0.0; 12])];
        let mut traj = vec![vec![0.0f32; m * n]];
        for g in gs {
            p[0].grad = Some(flat(&g));
            opt.step(lr, &mut p).unwrap();
            traj.push(values(&p[0].value));
        }
        (traj, opt)
    };
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let (plain, po) = run(grads(g2_f32));
    let (turned, to) = run(grads(g2_f32).iter().map(|g| turn(g)).collect());

    // statistics and bases: equivariant to f32 rounding
    let st =
        |o: &MomentOptimizer<B>, name: &str| values(o.state("w").unwrap()[0].tensor(name).unwrap());
    assert!(max_diff(&st(&to, "exp_avg"), &turn(&st(&po, "exp_avg"))) < 1e-7);
    assert!(max_diff(&st(&to, "GG.0"), &st(&po, "GG.0")) < 1e-7);
    let gg1 = st(&po, "GG.1");
    let gg1_turned: Vec<f32> = (0..n * n)
        .map(|x| {
            let ((pi, si), (pj, sj)) = (vp(x / n), vp(x % n));
            si * sj * gg1[pi * n + pj]
        })
        .collect();
    assert!(max_diff(&st(&to, "GG.1"), &gg1_turned) < 1e-7);
    let (q_plain, q_turned) = (st(&po, "Q.1"), st(&to, "Q.1"));
    for j in 0..n {
        // column j of V·Q equals column j of the rotated Q up to sign
        let col: Vec<f32> = (0..n)
            .map(|i| {
                let (pi, si) = vp(i);
                si * q_plain[pi * n + j]
            })
            .collect();
        let sign = if col[0] * q_turned[j] >= 0.0 {
            1.0
        } else {
            -1.0
        };
        for i in 0..n {
            assert!(
                (q_turned[i * n + j] - sign * col[i]).abs() < 1e-5,
                "Q.1 column {j}"
            );
        }
    }
    let (v_plain, v_turned) = (st(&po, "exp_avg_sq"), st(&to, "exp_avg_sq"));
    let v_min = v_plain.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(v_min < 1e-10, "the near-zero second moment: {v_min:e}");
    assert!(max_diff(&v_plain, &v_turned) < 1e-8);

    // the direction after the refresh is far outside Adam's bound √(mn)
    let dir_norm = |traj: &[Vec<f32>], t: usize| {
        let k = (t - 1) as i32;
        let size = lr * (1.0 - beta.powi(k)).sqrt() / (1.0 - beta.powi(k));
        traj[t - 1]
            .iter()
            .zip(&traj[t])
            .map(|(&a, &b)| (f64::from(a) - f64::from(b) / (1.0 - lr * wd)) / size)
            .map(|d| d * d)
            .sum::<f64>()
            .sqrt()
    };
    let bound = ((m * n) as f64).sqrt();
    for t in 2..=4 {
        assert!(dir_norm(&plain, t) <= bound, "step {t}");
    }
    let blown = dir_norm(&plain, 5);
    assert!(blown > 50.0 * bound, "step 5: {blown}");

    // parameters: finite, moved by tens, and equal up to that amplified rounding (~1%)
    let last = &plain[8];
    let top = last.iter().fold(0.0f32, |a, b| a.max(b.abs()));
    assert!(top > 10.0);
    let gap = max_diff(&turned[8], &turn(last));
    assert!(gap < 0.05 * top, "{gap} vs {top}");
    assert!(plain.iter().chain(&turned).flatten().all(|x| x.is_finite()));
}

#[test]
fn soap_first_step_only_builds_the_eigenbases() {
    let (m, n) = (3usize, 5usize);
    let w0: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.37).sin()).collect();
    let g: Vec<f32> = (0..m * n).map(|i| (i as f32 * 1.3).cos()).collect();
    let mut opt = MomentOptimizer::new(SoapConfig::default().build::<B>().unwrap());
    let mut p = vec![shaped("w", &[m, n], &w0)];
    p[0].grad = Some(flat(&g));
    opt.step(0.1, &mut p).unwrap();
    assert_eq!(
        values(&p[0].value),
        w0,
        "no movement (and no decay) on step 1"
    );
    let st = &opt.state("w").unwrap()[0];
    for (axis, d) in [(0usize, m), (1, n)] {
        let gg: Vec<f64> = values(st.tensor(&format!("GG.{axis}")).unwrap())
            .into_iter()
            .map(f64::from)
            .collect();
        let q: Vec<f64> = values(st.tensor(&format!("Q.{axis}")).unwrap())
            .into_iter()
            .map(f64::from)
            .collect();
        // GG = (1 − β)·G₍ᵢ₎G₍ᵢ₎ᵀ, computed independently here
        for i in 0..d {
            for j in 0..d {
                let dot: f64 = if axis == 0 {
                    (0..n)
                        .map(|k| f64::from(g[i * n + k]) * f64::from(g[j * n + k]))
                        .sum()
                } else {
                    (0..m)
                        .map(|k| f64::from(g[k * n + i]) * f64::from(g[k * n + j]))
                        .sum()
                };
                assert!((gg[i * d + j] - 0.05 * dot).abs() < 1e-5);
            }
        }
        // Qᵀ·GG·Q is diagonal with descending entries
        let dq = matmul(&transpose(&q, d), &matmul(&gg, &q, d), d);
        for i in 0..d {
            for j in 0..d {
                if i != j {
                    assert!(dq[i * d + j].abs() < 1e-5, "off-diagonal {}", dq[i * d + j]);
                }
            }
            if i > 0 {
                assert!(dq[i * d + i] <= dq[(i - 1) * d + i - 1] + 1e-6);
            }
        }
    }
}

#[test]
fn soap_config_and_shape_errors() {
    let bad = SoapConfig {
        precondition_frequency: 0,
        ..SoapConfig::default()
    };
    assert!(matches!(
        bad.build::<B>(),
        Err(OptimError::InvalidConfig {
            field: "precondition_frequency",
            ..
        })
    ));
    let mut opt = MomentOptimizer::new(SoapConfig::default().build::<B>().unwrap());
    let shape = [1usize; 9];
    let mut p = vec![shaped("t", &shape, &[0.5])];
    p[0].grad = Some(flat(&[1.0]));
    assert!(matches!(
        opt.step(0.1, &mut p),
        Err(OptimError::UnsupportedShape { .. })
    ));
    assert_eq!(values(&p[0].value), vec![0.5]);
}

fn prodigy_params(split: bool, init: &[f32]) -> Vec<ParamTensor<B>> {
    if split {
        let h = init.len() / 2;
        vec![
            shaped("a", &[h], &init[..h]),
            shaped("b", &[init.len() - h], &init[h..]),
        ]
    } else {
        vec![shaped("ab", &[init.len()], init)]
    }
}

fn prodigy_run(
    config: &ProdigyConfig,
    split: bool,
    init: &[f32],
    grads: &[Vec<f32>],
) -> (Vec<f32>, Vec<f64>) {
    let mut opt = MomentOptimizer::new(config.build::<B>().unwrap());
    let mut p = prodigy_params(split, init);
    let mut ds = Vec::new();
    for g in grads {
        if split {
            let h = init.len() / 2;
            p[0].grad = Some(flat(&g[..h]));
            p[1].grad = Some(flat(&g[h..]));
        } else {
            p[0].grad = Some(flat(g));
        }
        opt.step(1.0, &mut p).unwrap();
        ds.push(opt.group_state("default").unwrap()[0].scalar("d").unwrap());
    }
    let out = p.iter().flat_map(|p| values(&p.value)).collect();
    (out, ds)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    /// The distance estimate is a property of the whole group: one tensor split in two gives
    /// the same trajectory and the same d (sums reduced over all tensors before any steps).
    #[test]
    fn prodigy_estimate_spans_the_group(
        n in 4usize..12,
        seed in prop::collection::vec(-1.0f32..1.0, 12 * 10),
    ) {
        // θ0 = 0, so θ holds its displacement exactly up to f32 rounding of the displacement
        // itself (from |θ0| ≈ 1 an update of 1e-6 would lose ~3% of its bits, and the
        // comparison would measure rounding, not the reduction). Positive random gradients
        // (a consistent pull): ⟨g, θ0 − θ⟩ grows without cancellation and d moves.
        let init = vec![0.0f32; n];
        let grads: Vec<Vec<f32>> = (0..10)
            .map(|t| (0..n).map(|i| 1.0 + seed[t * 12 + i]).collect())
            .collect();
        let config = ProdigyConfig::default();
        let (whole, d_whole) = prodigy_run(&config, false, &init, &grads);
        let (split, d_split) = prodigy_run(&config, true, &init, &grads);
        // Same up to f32 summation order inside the per-tensor partial sums; a missing
        // tensor would change d by O(1).
        prop_assert!(d_whole.last() > Some(&1e-6), "d must move: {d_whole:?}");
        for (a, b) in d_whole.iter().zip(&d_split) {
            prop_assert!((a - b).abs() <= 1e-5 * a.abs(), "{d_whole:?} vs {d_split:?}");
        }
        for (a, b) in whole.iter().zip(&split) {
            prop_assert!((a - b).abs() <= 1e-5, "{whole:?} vs {split:?}");
        }
        // d never shrinks and starts at d0; with growth_rate 2 it at most doubles per step
        prop_assert!(d_whole.iter().all(|&d| d >= 1e-6));
        prop_assert!(d_whole.windows(2).all(|w| w[1] >= w[0]));
        let capped = ProdigyConfig { growth_rate: 2.0, ..ProdigyConfig::default() };
        let (_, d_capped) = prodigy_run(&capped, false, &init, &grads);
        // (the reference's quirk: while d == d0 it first jumps to max(d0, d̂), then the cap
        // applies to that value — so only steps that start away from d0 are capped by d)
        let mut prev = 1e-6;
        for &d in &d_capped {
            if prev != 1e-6 {
                prop_assert!(d <= 2.0 * prev * (1.0 + 1e-12), "{d_capped:?}");
            }
            prev = d;
        }
    }
}

#[test]
fn prodigy_grows_d_on_a_quadratic_and_resumes_exactly() {
    let n = 16;
    let target: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
    let grad = |w: &[f32]| -> Vec<f32> { w.iter().zip(&target).map(|(w, t)| w - t).collect() };
    let chain = || ProdigyConfig::default().build::<B>().unwrap();
    let mut opt = MomentOptimizer::new(chain());
    let mut p = vec![shaped("w", &[n], &vec![0.0; n])];
    let mut resumed = None;
    for step in 0..40 {
        if step == 20 {
            let record = opt.to_record();
            let json = serde_json::to_string(&record).unwrap();
            let mut other = MomentOptimizer::new(chain());
            other
                .load_record(serde_json::from_str(&json).unwrap(), &Default::default())
                .unwrap();
            resumed = Some((other, p.clone()));
        }
        p[0].grad = Some(flat(&grad(&values(&p[0].value))));
        opt.step(1.0, &mut p).unwrap();
    }
    let d = opt.group_state("default").unwrap()[0].scalar("d").unwrap();
    assert!(
        d > 1e-3,
        "d should grow by orders of magnitude from 1e-6, got {d}"
    );
    let dist: f32 = values(&p[0].value)
        .iter()
        .zip(&target)
        .map(|(w, t)| (w - t) * (w - t))
        .sum();
    let start: f32 = target.iter().map(|t| t * t).sum();
    assert!(dist < 0.1 * start, "{dist} vs {start}");
    // resume at step 20: bitwise the same trajectory
    let (mut other, mut q) = resumed.unwrap();
    for _ in 20..40 {
        q[0].grad = Some(flat(&grad(&values(&q[0].value))));
        other.step(1.0, &mut q).unwrap();
    }
    assert_eq!(values(&q[0].value), values(&p[0].value));
    assert_eq!(
        other.group_state("default").unwrap()[0].scalars,
        opt.group_state("default").unwrap()[0].scalars
    );
}

#[test]
fn prodigy_needs_parameter_values_and_leads_its_chain() {
    let mut opt = MomentOptimizer::new(ProdigyConfig::default().build::<B>().unwrap());
    let err = opt
        .prepare(
            1.0,
            vec![GradEntry {
                path: "w".into(),
                param_shape: vec![2],
                grad_shape: vec![2],
                grad: flat(&[1.0, 2.0]),
                param: None,
            }],
        )
        .unwrap_err();
    assert!(
        matches!(err, OptimError::MissingParameterValue { .. }),
        "{err}"
    );
    assert!(opt.state("w").is_none(), "nothing created on error");
    assert_eq!(opt.steps(), 0);

    let inner = ProdigyConfig::default().build::<B>().unwrap();
    let mut chain = Chain::new("flip_then_prodigy").then(moment_optim::transforms::flip_sign());
    for t in inner.transforms() {
        chain = chain.then(ArcTransform(t.clone()));
    }
    let err = MomentOptimizer::builder()
        .group(ParamGroup::new("g", Selector::All, chain))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, OptimError::InvalidConfig { field: "chain", .. }),
        "{err}"
    );
}

#[test]
fn prodigy_record_without_group_state_is_refused() {
    let mut opt = MomentOptimizer::new(ProdigyConfig::default().build::<B>().unwrap());
    let mut p = vec![shaped("w", &[3], &[0.1, 0.2, 0.3])];
    p[0].grad = Some(flat(&[1.0, -1.0, 0.5]));
    opt.step(1.0, &mut p).unwrap();
    let mut record = opt.to_record();
    assert_eq!(record.groups.len(), 1);
    record.groups.clear();
    let mut other = MomentOptimizer::new(ProdigyConfig::default().build::<B>().unwrap());
    let err = other.load_record(record, &Default::default()).unwrap_err();
    assert!(matches!(err, OptimError::RecordMismatch { .. }), "{err}");
}

/// A transform shared from another chain (to build a deliberately mis-ordered chain).
#[derive(Debug)]
struct ArcTransform(std::sync::Arc<dyn moment_optim::Transform<B>>);

impl moment_optim::Transform<B> for ArcTransform {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn init(
        &self,
        path: &str,
        shape: &[usize],
        device: &burn::tensor::Device<B>,
    ) -> moment_optim::Result<moment_optim::TransformState<B>> {
        self.0.init(path, shape, device)
    }
    fn group_sums(&self) -> usize {
        self.0.group_sums()
    }
    fn update(
        &self,
        ctx: &moment_optim::StepCtx<'_, B>,
        input: Tensor<B, 1>,
        state: &mut moment_optim::TransformState<B>,
    ) -> Tensor<B, 1> {
        self.0.update(ctx, input, state)
    }
}

/// At a refresh the second moment follows its eigen-directions: with diagonal factors whose
/// order flips, `Q` becomes the permutation and `v` is re-ordered along the axis.
#[test]
fn soap_refresh_reorders_the_second_moment_with_the_basis() {
    let (m, n) = (3usize, 4usize);
    // Rows are scaled unit vectors: GG_0 = diag(s²) exactly.
    let grad = |s: [f32; 3]| -> Vec<f32> {
        let mut g = vec![0.0f32; m * n];
        for (i, si) in s.iter().enumerate() {
            g[i * n + i] = *si;
        }
        g
    };
    let config = SoapConfig {
        precondition_frequency: 4,
        weight_decay: 0.0,
        ..SoapConfig::default()
    };
    let mut opt = MomentOptimizer::new(config.build::<B>().unwrap());
    let mut p = vec![shaped("w", &[m, n], &[0.1; 12])];
    // Step 1: order (3, 2, 1) → Q_0 = I. Steps 2–4: row 2 dominates; step 5 (k = 4): zero
    // gradient (v and GG only decay), then the refresh sees diag order (2, 0, 1) or similar.
    let schedule = [
        [3.0, 2.0, 1.0],
        [0.5, 0.2, 6.0],
        [0.5, 0.2, 6.0],
        [0.5, 0.2, 6.0],
    ];
    for s in schedule {
        p[0].grad = Some(flat(&grad(s)));
        opt.step(0.01, &mut p).unwrap();
    }
    let st = &opt.state("w").unwrap()[0];
    let v4 = values(st.tensor("exp_avg_sq").unwrap());
    // Both factors are diagonal (GG_1 = diag(s0², s1², s2², 0)); their orders flip.
    let order_of = |key: &str, d: usize| {
        let gg = values(st.tensor(key).unwrap());
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| gg[b * d + b].total_cmp(&gg[a * d + a]));
        order
    };
    let (o0, o1) = (order_of("GG.0", m), order_of("GG.1", n));
    assert_ne!(o0, vec![0, 1, 2], "the test needs the order to change");
    p[0].grad = Some(flat(&[0.0; 12]));
    opt.step(0.01, &mut p).unwrap();
    let st = &opt.state("w").unwrap()[0];
    let v5 = values(st.tensor("exp_avg_sq").unwrap());
    for (key, order) in [("Q.0", &o0), ("Q.1", &o1)] {
        let d = order.len();
        let q = values(st.tensor(key).unwrap());
        for (col, &src) in order.iter().enumerate() {
            for r in 0..d {
                let want = if r == src { 1.0 } else { 0.0 };
                assert!((q[r * d + col].abs() - want).abs() < 1e-5, "{key} = {q:?}");
            }
        }
    }
    for r in 0..m {
        for c in 0..n {
            let want = 0.95 * v4[o0[r] * n + o1[c]];
            let got = v5[r * n + c];
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-12),
                "{v5:?} vs {v4:?}"
            );
        }
    }
}

#[test]
fn soap_handles_empty_and_scalar_parameters_and_its_options() {
    let variants = [
        SoapConfig::default(),
        SoapConfig {
            merge_dims: true,
            precondition_1d: true,
            normalize_gradient: true,
            correct_bias: false,
            maximize: true,
            max_precondition_dim: 4,
            ..SoapConfig::default()
        },
    ];
    for config in variants {
        let mut opt = MomentOptimizer::new(config.build::<B>().unwrap());
        let mut params = vec![
            shaped("empty", &[0, 5], &[]),
            shaped("scalar", &[], &[0.5]),
            shaped("vec", &[6], &[0.1, -0.2, 0.3, -0.4, 0.5, -0.6]),
            shaped(
                "t",
                &[2, 3, 5],
                &(0..30).map(|i| (i as f32).sin()).collect::<Vec<_>>(),
            ),
        ];
        for step in 0..4 {
            for p in params.iter_mut() {
                let n: usize = p.shape.iter().product();
                p.grad = Some(flat(
                    &(0..n)
                        .map(|i| ((i + step) as f32 * 0.7).cos())
                        .collect::<Vec<_>>(),
                ));
            }
            opt.step(0.01, &mut params).unwrap();
        }
        for p in &params {
            assert!(values(&p.value).iter().all(|x| x.is_finite()), "{}", p.path);
        }
        // Every non-empty parameter moved after the first step.
        assert_ne!(
            values(&params[2].value),
            vec![0.1, -0.2, 0.3, -0.4, 0.5, -0.6]
        );
    }
}

/// The host linear algebra refuses input that is not an `n × n` matrix (an error naming the
/// function, never a panic; `n·n` overflowing included).
#[test]
fn linalg_rejects_input_that_is_not_square() {
    let e = symmetric_eigen(&[1.0, 2.0, 3.0], 2).unwrap_err();
    assert!(e.to_string().contains("symmetric_eigen"), "{e}");
    assert!(qr_orthogonal(&[1.0; 5], 2).is_err());
    assert!(symmetric_eigen(&[], usize::MAX).is_err());
    assert!(qr_orthogonal(&[], 0).unwrap().is_empty());
}

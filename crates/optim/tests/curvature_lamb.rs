//! Sophia (G and H), its curvature estimators, and LAMB: property tests of the invariants the
//! math guarantees, plus a small end-to-end check that each reduces a softmax-regression loss
//! from a fixed seed. Case count: `PROPTEST_CASES`.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use common::*;
use moment_optim::curvature::{GnbEstimator, Hutchinson, Probe};
use moment_optim::port::{ArgValue, RefArgs, from_reference};
use moment_optim::{
    Chain, Decay, GradEntry, LambConfig, LambDecay, MomentOptimizer, Observer, ParamGroup,
    ParamView, Selector, SophiaConfig, StepReport, TrustRatio,
};
use proptest::prelude::*;

fn entry(path: &str, v: &[f32]) -> GradEntry<B> {
    GradEntry {
        path: path.into(),
        param_shape: vec![v.len()],
        grad_shape: vec![v.len()],
        grad: flat(v),
        param: None,
    }
}

fn sophia(variant_h: bool, wd: f64) -> SophiaConfig {
    let base = if variant_h {
        SophiaConfig::h()
    } else {
        SophiaConfig::g()
    };
    SophiaConfig {
        decay: if wd > 0.0 {
            Decay::Decoupled(wd)
        } else {
            Decay::None
        },
        ..base
    }
}

fn vecs(n: usize) -> impl Strategy<Value = (Vec<f32>, Vec<Vec<f32>>, Vec<Vec<f32>>)> {
    (
        prop::collection::vec(-2.0f32..2.0, n),
        prop::collection::vec(prop::collection::vec(-3.0f32..3.0, n), 6),
        prop::collection::vec(prop::collection::vec(-1.0f32..1.0, n), 3),
    )
}

proptest! {
    /// Without decay every coordinate moves by at most lr (G) or lr·ρ (H), whatever the
    /// gradients and curvature (negative Hessian estimates included for H).
    #[test]
    fn sophia_step_is_bounded((init, grads, hess) in vecs(9), h in any::<bool>(), k in 1usize..4) {
        let config = sophia(h, 0.0);
        let lr = 0.05;
        let bound = if h { lr * config.rho } else { lr };
        let mut opt = MomentOptimizer::new(config.build().unwrap());
        let mut params = vec![param("p", &init, None)];
        for (t, g) in grads.iter().enumerate() {
            if t % k == 0 {
                opt.update_curvature(vec![entry("p", &hess[(t / k) % hess.len()])]).unwrap();
            }
            let before = values(&params[0].value);
            params[0].grad = Some(flat(g));
            opt.step(lr, &mut params).unwrap();
            for (a, b) in values(&params[0].value).iter().zip(&before) {
                prop_assert!(f64::from((a - b).abs()) <= bound * (1.0 + 1e-6) + 1e-7);
            }
        }
    }

    /// The Hessian EMA changes only when an estimate is fed (every k steps), never in a step.
    #[test]
    fn hessian_changes_only_on_updates((init, grads, hess) in vecs(5), h in any::<bool>(), k in 2usize..4) {
        let mut opt = MomentOptimizer::new(sophia(h, 0.1).build().unwrap());
        let mut params = vec![param("p", &init, None)];
        let name = if h { "hessian_moment" } else { "hessian" };
        let read = |opt: &MomentOptimizer<B>| opt.state("p").map(|s| values(s[0].tensor(name).unwrap()));
        for (t, g) in grads.iter().enumerate() {
            let before = read(&opt);
            if t % k == 0 {
                opt.update_curvature(vec![entry("p", &hess[(t / k) % hess.len()])]).unwrap();
                prop_assert_ne!(read(&opt), before.clone());
            }
            let mid = read(&opt);
            params[0].grad = Some(flat(g));
            opt.step(0.01, &mut params).unwrap();
            prop_assert_eq!(read(&opt), mid);
        }
    }

    /// Newton regime: where |m| < ρ·bs·h the step is exactly −lr·m/(ρ·bs·h) (G) or −lr·m/h (H):
    /// first step, m = (1−β1)·g, large curvature.
    #[test]
    fn newton_regime(g in prop::collection::vec(-1.0f32..1.0, 1..12), hval in 1.0f32..5.0, h in any::<bool>()) {
        let config = sophia(h, 0.0);
        let lr = 1e-2;
        let n = g.len();
        let mut opt = MomentOptimizer::new(config.build().unwrap());
        let est: Vec<f32> = vec![hval; n];
        opt.update_curvature(vec![entry("p", &est)]).unwrap();
        let mut params = vec![param("p", &vec![0.0; n], Some(&g))];
        opt.step(lr, &mut params).unwrap();
        let (b1, b2) = config.betas;
        for (x, gi) in values(&params[0].value).iter().zip(&g) {
            let m = (1.0 - b1) * f64::from(*gi);
            let want = if h {
                let hm = (1.0 - b2) * f64::from(hval);
                -lr * (m / hm).clamp(-config.rho, config.rho)
            } else {
                let hm = (1.0 - b2) * f64::from(hval) * f64::from(hval);
                -lr * (m / (config.rho * config.bs * hm + 1e-15)).clamp(-1.0, 1.0)
            };
            prop_assert!((f64::from(*x) - want).abs() <= 1e-6 * want.abs() + 1e-9, "{} vs {}", x, want);
        }
    }

    /// LAMB's update norm is lr·‖θ‖ per tensor (no bias correction, no clamp, no ε in the ratio),
    /// whatever the gradient.
    #[test]
    fn lamb_update_norm_is_lr_times_weight_norm(init in prop::collection::vec(-1.0f32..1.0, 2..20), seed in 0u64..1000) {
        let config = LambConfig { max_weight_norm: None, ..LambConfig::cybertronai() };
        let mut opt = MomentOptimizer::new(config.build().unwrap());
        let mut params = vec![param("p", &init, None)];
        let lr = 1e-2;
        for t in 0..4 {
            let g: Vec<f32> = init.iter().enumerate().map(|(i, _)| ((seed + t * 7 + i as u64 * 13) % 17) as f32 - 8.0).collect();
            let before = values(&params[0].value);
            params[0].grad = Some(flat(&g));
            opt.step(lr, &mut params).unwrap();
            let after = values(&params[0].value);
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let d: Vec<f64> = after.iter().zip(&before).map(|(a, b)| f64::from(a - b)).collect();
            let w: Vec<f64> = before.iter().map(|x| f64::from(*x)).collect();
            let (dn, wn) = (norm(&d), norm(&w));
            if wn > 0.0 && g.iter().any(|x| *x != 0.0) {
                prop_assert!((dn - lr * wn).abs() <= 1e-4 * lr * wn + 1e-7, "‖Δ‖ {} vs lr‖θ‖ {}", dn, lr * wn);
            }
        }
    }
}

/// Zero norms give a trust ratio of 1: a zero tensor moves by the plain direction, a zero
/// gradient moves nothing (without decay); never NaN.
#[test]
fn lamb_zero_norm_fallback() {
    let apex_always = LambConfig {
        decay: LambDecay::InUpdate(0.0),
        trust_ratio: TrustRatio::Always,
        ..LambConfig::apex()
    };
    for config in [
        LambConfig::pytorch_optimizer(),
        apex_always,
        LambConfig::cybertronai(),
    ] {
        let mut opt = MomentOptimizer::new(config.build().unwrap());
        let mut params = vec![
            param("zero_w", &[0.0; 4], Some(&[0.5, -0.5, 1.0, 2.0])),
            param("zero_g", &[1.0, 2.0, 3.0], Some(&[0.0; 3])),
        ];
        opt.step(1e-2, &mut params).unwrap();
        let w = values(&params[0].value);
        assert!(
            w.iter().all(|x| x.is_finite() && *x != 0.0),
            "{config:?}: {w:?}"
        );
        assert_eq!(values(&params[1].value), vec![1.0, 2.0, 3.0]);
        let st = opt.state("zero_w").unwrap();
        if let Some(r) = st.iter().find_map(|s| s.tensor("trust_ratio")) {
            assert_eq!(values(r), vec![1.0]);
        }
    }
}

/// Excluding 1-D parameters from adaptation with a group: they take plain (uncorrected-v)
/// Adam steps `lr/(1−β1^t) · m/(√v+ε)`, matrices keep the trust ratio.
#[test]
fn lamb_vectors_excluded_by_group() {
    let base = LambConfig::pytorch_optimizer();
    let mut opt = MomentOptimizer::<B>::builder()
        .group(ParamGroup::new(
            "vectors",
            Selector::rank_between(0, 1),
            LambConfig {
                trust_ratio: TrustRatio::Never,
                decay: LambDecay::DecoupledBeforeNorm(0.0),
                ..base
            }
            .build()
            .unwrap(),
        ))
        .group(ParamGroup::new(
            "matrices",
            Selector::all(),
            base.build().unwrap(),
        ))
        .build()
        .unwrap();
    let g = [0.3f32, -2.0, 0.01];
    let mut params = vec![param("bias", &[5.0, 5.0, 5.0], Some(&g))];
    opt.step(1e-2, &mut params).unwrap();
    for (x, gi) in values(&params[0].value).iter().zip(g) {
        let m = 0.1 * f64::from(gi);
        let v = 0.001 * f64::from(gi) * f64::from(gi);
        let want = 5.0 - 1e-2 / 0.1 * m / (v.sqrt() + 1e-6);
        assert!((f64::from(*x) - want).abs() < 1e-5, "{x} vs {want}");
    }
}

/// One step of `pytorch_optimizer.Lamb` (foreach path, β = (0.9, 0.999), t = 1) in f64, straight
/// from its `_step_foreach`: `m = 0.1·g`, `v = 0.001·g²`, `u = m/(√v + eps)` (+ `λθ` with
/// `weight_decouple=False`, after `θ·(1 − lr·λ)` with `True`), `φ = min(‖θ‖, 10)/(‖u‖ + eps)`
/// with the **same** `eps` (`trust_eps` = `eps`), `θ ← θ − lr/(1 − 0.9)·φ·u`.
fn pytorch_optimizer_lamb_step(
    theta: &[f64],
    g: &[f64],
    (lr, wd, decouple): (f64, f64, bool),
    (eps, trust_eps): (f64, f64),
) -> Vec<f64> {
    let theta: Vec<f64> = if decouple {
        theta.iter().map(|x| x * (1.0 - lr * wd)).collect()
    } else {
        theta.to_vec()
    };
    let u: Vec<f64> = g
        .iter()
        .zip(&theta)
        .map(|(g, x)| {
            let r = 0.1 * g / ((0.001 * g * g).sqrt() + eps);
            if decouple { r } else { r + wd * x }
        })
        .collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let phi = norm(&theta).min(10.0) / (norm(&u) + trust_eps);
    theta
        .iter()
        .zip(&u)
        .map(|(x, u)| x - lr / 0.1 * phi * u)
        .collect()
}

fn lamb_port(args: &[(&str, ArgValue)]) -> MomentOptimizer<B> {
    let args: RefArgs = args
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    MomentOptimizer::new(
        from_reference::<B>("pytorch_optimizer.Lamb", &args)
            .unwrap()
            .chain,
    )
}

/// pytorch_optimizer's trust ratio adds its `eps` argument to `‖u‖`, not a fixed 1e-6. With
/// gradients near `eps` the direction's norm is comparable to it (the 1e-10-gradient first
/// step of the sweep cases), so a fixed 1e-6 moves this step by ~0.3%.
#[test]
fn lamb_port_trust_ratio_uses_the_eps_argument() {
    let (theta, g) = ([1.0, 2.0, -2.0], [1e-3, -2e-3, 4e-4]);
    let mut opt = lamb_port(&[
        ("lr", ArgValue::Float(1e-2)),
        ("eps", ArgValue::Float(1e-3)),
    ]);
    let mut params = vec![param(
        "p",
        &theta.map(|x| x as f32),
        Some(&g.map(|x| x as f32)),
    )];
    opt.step(1e-2, &mut params).unwrap();
    let want = pytorch_optimizer_lamb_step(&theta, &g, (1e-2, 0.0, true), (1e-3, 1e-3));
    assert_close(
        &values(&params[0].value),
        &want,
        1e-5,
        1e-6,
        "trust eps = eps",
    );
    // A ratio with a fixed 1e-6 would be far outside that tolerance.
    let fixed = pytorch_optimizer_lamb_step(&theta, &g, (1e-2, 0.0, true), (1e-3, 1e-6));
    assert!((want[0] - fixed[0]).abs() > 1e-4, "{want:?} vs {fixed:?}");
}

/// pytorch_optimizer `Lamb(weight_decouple=False)` is not L2: the gradient (and so both moments)
/// stays untouched and `λθ` joins the direction before the norms; `θ`'s norm (above the clamp
/// here) is the undecayed one.
#[test]
fn lamb_port_coupled_decay_goes_into_the_direction() {
    let theta = [6.0, -8.0, 3.0]; // ‖θ‖ ≈ 10.44 > clamp 10
    let g = [0.5, -0.25, 2.0];
    let (lr, wd) = (1e-2, 0.1);
    let mut opt = lamb_port(&[
        ("lr", ArgValue::Float(lr)),
        ("weight_decay", ArgValue::Float(wd)),
        ("weight_decouple", ArgValue::Bool(false)),
    ]);
    let mut params = vec![param(
        "p",
        &theta.map(|x| x as f32),
        Some(&g.map(|x| x as f32)),
    )];
    opt.step(lr, &mut params).unwrap();
    let want = pytorch_optimizer_lamb_step(&theta, &g, (lr, wd, false), (1e-6, 1e-6));
    assert_close(&values(&params[0].value), &want, 1e-5, 1e-6, "decay in u");
    // Moments of the raw gradient: exp_avg = 0.1·g exactly as the reference keeps it.
    let st = opt.state("p").unwrap();
    let m = st.iter().find_map(|s| s.tensor("exp_avg")).unwrap();
    assert_close(&values(m), &g.map(|x| 0.1 * x), 1e-6, 1e-9, "exp_avg");
}

/// Before any curvature estimate Sophia-G is sign descent (h = 0 clips every coordinate).
#[test]
fn sophia_g_before_curvature_is_sign_descent() {
    let mut opt = MomentOptimizer::new(sophia(false, 0.0).build().unwrap());
    let g = [0.3f32, -1e-6, 5.0, 0.0];
    let mut params = vec![param("p", &[1.0; 4], Some(&g))];
    opt.step(0.1, &mut params).unwrap();
    assert_eq!(values(&params[0].value), vec![0.9, 1.1, 0.9, 1.0]);
}

struct WinRate(Vec<f32>);
impl Observer<B> for WinRate {
    fn on_param(&mut self, v: &ParamView<'_, B>) {
        let w = v.state.iter().find_map(|s| s.tensor("win_rate")).unwrap();
        self.0.push(values(w)[0]);
    }
    fn on_step(&mut self, _: &StepReport) {}
}

/// The win rate (fraction of coordinates not clipped) reaches observers.
#[test]
fn win_rate_reaches_the_observer() {
    let mut opt = MomentOptimizer::new(sophia(false, 0.0).build().unwrap());
    let seen = Arc::new(Mutex::new(WinRate(Vec::new())));
    opt.set_observer(seen.clone());
    // |m| = 0.035·|g|; ρ·bs·h = 204.8·0.01·h². Coordinates 0,1: h large → unclipped; 2,3: h = 0.
    opt.update_curvature(vec![entry("p", &[10.0, 10.0, 0.0, 0.0])])
        .unwrap();
    let mut params = vec![param("p", &[0.0; 4], Some(&[1.0, -1.0, 1.0, -1.0]))];
    opt.step(0.1, &mut params).unwrap();
    assert_eq!(seen.lock().unwrap().0, vec![0.5]);
}

#[test]
fn gnb_labels_are_seeded_and_follow_the_softmax() {
    let device = Default::default();
    let logits: Tensor<B, 2> = Tensor::from_data(
        TensorData::new([0.0f32, 1.0, 2.0].repeat(20000), [20000, 3]),
        &device,
    );
    let mut a = GnbEstimator::new(10, 7).unwrap();
    let mut b = GnbEstimator::new(10, 7).unwrap();
    let la = a.sample_labels(&logits).unwrap();
    let lb = b.sample_labels(&logits).unwrap();
    let la: Vec<i64> = la.to_data().convert::<i64>().to_vec().unwrap();
    assert_eq!(la, lb.to_data().convert::<i64>().to_vec::<i64>().unwrap());
    let z: f64 = [0.0f64, 1.0, 2.0].iter().map(|x| x.exp()).sum();
    for c in 0..3 {
        let p = (c as f64).exp() / z;
        let freq = la.iter().filter(|&&l| l == c).count() as f64 / 20000.0;
        let sigma = (p * (1.0 - p) / 20000.0).sqrt();
        assert!((freq - p).abs() < 4.0 * sigma, "class {c}: {freq} vs {p}");
    }
    assert!(a.due(0) && a.due(20) && !a.due(5));
    assert!(GnbEstimator::new(0, 1).is_err());
}

#[test]
fn hutchinson_is_exact_for_diagonal_and_unbiased_otherwise() {
    let device = Default::default();
    // f(θ) = ½ θᵀAθ, ∇f = Aθ (linear: the central difference is exact).
    let a = [[2.0f32, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 4.0]];
    let grad = |t: &Tensor<B, 1>| -> Tensor<B, 1> {
        let v = values(t);
        flat(
            &(0..3)
                .map(|i| (0..3).map(|j| a[i][j] * v[j]).sum())
                .collect::<Vec<f32>>(),
        )
    };
    let theta = flat(&[0.3, -0.2, 0.5]);
    let mut est = Hutchinson::new(Probe::Rademacher, 1e-2, 3).unwrap();
    let mut mean = [0.0f64; 3];
    let n = 4000;
    for _ in 0..n {
        let z = est.probe::<B>(3, &device);
        let [p, m] = est.points(&theta, &z);
        let h = values(&est.estimate(&z, grad(&p), grad(&m)));
        for i in 0..3 {
            mean[i] += f64::from(h[i]) / n as f64;
        }
    }
    for i in 0..3 {
        assert!(
            (mean[i] - f64::from(a[i][i])).abs() < 0.05,
            "{i}: {} vs {}",
            mean[i],
            a[i][i]
        );
    }
    // diagonal A: one probe is exact
    let diag = |t: &Tensor<B, 1>| {
        flat(
            &values(t)
                .iter()
                .zip([2.0f32, 3.0, 0.5])
                .map(|(x, d)| x * d)
                .collect::<Vec<_>>(),
        )
    };
    let z = est.probe::<B>(3, &device);
    let [p, m] = est.points(&theta, &z);
    let h = values(&est.estimate(&z, diag(&p), diag(&m)));
    for (x, d) in h.iter().zip([2.0f32, 3.0, 0.5]) {
        assert!((x - d).abs() < 1e-3, "{x} vs {d}");
    }
    assert!(Hutchinson::new(Probe::Gaussian, 0.0, 1).is_err());
}

// ---- end to end: softmax regression on a fixed synthetic dataset -------------------------

type AB = Autodiff<B>;

/// Loss and gradient of mean cross-entropy for W (`[d, c]`, flat) on fixed data.
fn regression(
    w: &[f32],
    x: &Tensor<AB, 2>,
    y: &Tensor<AB, 1, burn::tensor::Int>,
    d: usize,
    c: usize,
) -> (f32, Vec<f32>, Tensor<AB, 2>) {
    let device = Default::default();
    let wt: Tensor<AB, 2> =
        Tensor::<AB, 1>::from_data(TensorData::new(w.to_vec(), [d * c]), &device)
            .reshape([d, c])
            .require_grad();
    let logits = x.clone().matmul(wt.clone());
    let n = logits.dims()[0];
    let loss = burn::tensor::activation::log_softmax(logits.clone(), 1)
        .gather(1, y.clone().reshape([n, 1]))
        .mean()
        .neg();
    let l = values(&loss.clone().inner());
    let grads = loss.backward();
    let g = wt.grad(&grads).unwrap().reshape([d * c]);
    (l[0], values(&g), logits)
}

fn dataset(n: usize, d: usize, c: usize) -> (Tensor<AB, 2>, Tensor<AB, 1, burn::tensor::Int>) {
    let device = Default::default();
    let mut s = 12345u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let truth: Vec<f32> = (0..d * c).map(|_| next() * 2.0).collect();
    let xs: Vec<f32> = (0..n * d).map(|_| next()).collect();
    let ys: Vec<i64> = (0..n)
        .map(|i| {
            (0..c)
                .max_by(|&a, &b| {
                    let sa: f32 = (0..d).map(|k| xs[i * d + k] * truth[k * c + a]).sum();
                    let sb: f32 = (0..d).map(|k| xs[i * d + k] * truth[k * c + b]).sum();
                    sa.total_cmp(&sb)
                })
                .unwrap() as i64
        })
        .collect();
    (
        Tensor::from_data(TensorData::new(xs, [n, d]), &device),
        Tensor::from_data(TensorData::new(ys, [n]), &device),
    )
}

fn train(chain: Chain<B>, lr: f64, gnb: bool) -> (f32, f32) {
    let (d, c, n) = (6, 4, 256);
    let (x, y) = dataset(n, d, c);
    let mut opt = MomentOptimizer::new(chain);
    let mut params = vec![shaped("w", &[d, c], &vec![0.0; d * c])];
    let mut est = GnbEstimator::new(5, 1).unwrap();
    let mut first = f32::NAN;
    let mut last = f32::NAN;
    for step in 0..60u64 {
        let w = values(&params[0].value);
        let (loss, grad, logits) = regression(&w, &x, &y, d, c);
        if step == 0 {
            first = loss;
        }
        last = loss;
        if gnb && est.due(step) {
            // GNB: gradient of the loss to labels sampled from the model's softmax.
            let labels = est.sample_labels(&logits.clone().inner()).unwrap();
            let yy: Tensor<AB, 1, burn::tensor::Int> =
                Tensor::from_data(labels.to_data(), &Default::default());
            let (_, ghat, _) = regression(&w, &x, &yy, d, c);
            opt.update_curvature(vec![GradEntry {
                path: "w".into(),
                param_shape: vec![d, c],
                grad_shape: vec![d, c],
                grad: flat(&ghat),
                param: None,
            }])
            .unwrap();
        }
        params[0].grad = Some(flat(&grad));
        opt.step(lr, &mut params).unwrap();
    }
    (first, last)
}

#[test]
fn each_optimizer_reduces_a_regression_loss() {
    let runs: Vec<(&str, Chain<B>, f64, bool)> = vec![
        (
            "sophia-g + GNB",
            SophiaConfig {
                bs: 256.0,
                ..sophia(false, 0.0)
            }
            .build()
            .unwrap(),
            0.05,
            true,
        ),
        (
            "lamb",
            LambConfig::pytorch_optimizer().build().unwrap(),
            0.02,
            false,
        ),
        (
            "shampoo (gupta)",
            moment_optim::ShampooConfig::gupta().build().unwrap(),
            0.5, // AdaGrad-like summed statistics: steps shrink as 1/√t
            false,
        ),
        (
            "shampoo (scalable, AdaGrad graft)",
            {
                let mut c = moment_optim::ShampooConfig::scalable();
                c.shampoo.graft = moment_optim::transforms::Graft::AdaGrad;
                c.shampoo.block_size = Some(4);
                c.shampoo.start_preconditioning_step = 5;
                c.shampoo.precondition_frequency = 5;
                c.build().unwrap()
            },
            0.05,
            false,
        ),
        (
            "schedule-free adamw",
            moment_optim::ScheduleFreeConfig::default().build().unwrap(),
            0.05,
            false,
        ),
        (
            "lion",
            moment_optim::LionConfig::default().build().unwrap(),
            0.01,
            false,
        ),
        (
            "came",
            moment_optim::CameConfig::default().build().unwrap(),
            0.05,
            false,
        ),
        (
            "mars",
            moment_optim::MarsConfig::default().build().unwrap(),
            0.01,
            false,
        ),
        (
            "muon",
            moment_optim::MuonConfig::default().build().unwrap(),
            0.05,
            false,
        ),
        (
            "ademamix",
            moment_optim::AdemamixConfig::default().build().unwrap(),
            0.02,
            false,
        ),
        (
            "soap",
            moment_optim::SoapConfig::default().build().unwrap(),
            0.05,
            false,
        ),
        (
            "prodigy (lr 1: no tuning)",
            moment_optim::ProdigyConfig::default().build().unwrap(),
            1.0,
            false,
        ),
    ];
    for (name, chain, lr, gnb) in runs {
        let (first, last) = train(chain, lr, gnb);
        eprintln!("{name}: loss {first} -> {last}");
        assert!(last < 0.6 * first, "{name}: loss {first} -> {last}");
    }
}

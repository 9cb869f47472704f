//! `GradientScan::InPass`: the gradient is measured in the fused kernel's pass (or right before
//! a composed update) instead of in a scan before the step — with the same numbers: the same
//! parameters, state and report (norm bit for bit, non-finite counts and paths) as
//! `BeforeStep` under the same `Propagate` policy; and the builder refuses the setups whose
//! step depends on the measurement.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use burn::tensor::Tensor;
use common::{B, flat, values};
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, AdamConfig, AdamWConfig, Chain, GradientScan, LambConfig,
    LionConfig, MomentOptimizer, NonFinitePolicy, OptimError, ParamGroup, ParamTensor, Selector,
    SophiaConfig, StepReport,
};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
        .collect()
}

/// Deterministic host data (burn's RNG is shared between concurrently running tests).
fn data(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// Sizes: several threads and a ragged last measuring block; one thread; tiny.
const SIZES: [usize; 3] = [100_003, 1000, 7];

/// Parameter `i`'s gradient at `step` in [`run`].
fn gradient(step: u64, i: usize, huge: bool) -> Vec<f32> {
    let n = SIZES[i];
    let mut g = data(100 + 10 * step + i as u64, n, 2.0);
    if step == 2 && i == 1 {
        g[3] = f32::NAN;
        g[10] = f32::INFINITY;
        g[n - 1] = -f32::INFINITY;
        g[20] = if huge { 1e30 } else { 1e6 };
    }
    if step == 3 && i == 0 && huge {
        for x in g.iter_mut().take(300) {
            *x = 3e19;
        }
    }
    g
}

/// The global norm `Propagate` reports for [`run`]'s step: `√Σ g²` over the finite elements of
/// every gradient, summed here in f64 from the host data (independently of the engine's f32
/// lanes, blocks and overflow handling).
fn expected_norm(step: u64, huge: bool) -> f64 {
    (0..SIZES.len())
        .flat_map(|i| gradient(step, i, huge))
        .filter(|x| x.is_finite())
        .map(|x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Asserts every report's norm is [`expected_norm`] to f32-summation accuracy.
fn assert_norms(name: &str, reports: &[StepReport], huge: bool) {
    for (step, r) in (0u64..).zip(reports) {
        let expected = expected_norm(step, huge);
        assert!(
            (r.grad_norm / expected - 1.0).abs() < 1e-5,
            "{name}, step {step}: norm {} vs {expected}",
            r.grad_norm
        );
    }
}

/// Four steps over three parameters; at step 2 parameter `b` gets NaN and ±Inf elements (and
/// one large finite value), at step 3 `a` gets a gradient whose f32 block sums overflow when
/// `huge` (chains that square the gradient in f32 refuse that when scanning first: see
/// [`in_pass_scan_does_not_refuse_gradients_too_large_for_f32_squares`]). Returns the
/// parameters, the reports and the record after the last step.
fn run(
    chain: Chain<B>,
    scan: GradientScan,
    huge: bool,
) -> Result<(Vec<Vec<u32>>, Vec<StepReport>, String), OptimError> {
    let mut opt = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::All, chain))
        .non_finite(NonFinitePolicy::Propagate)
        .gradient_scan(scan)
        .build()
        .unwrap();
    let names = ["a", "b", "c"];
    let mut params: Vec<ParamTensor<B>> = names
        .iter()
        .zip(SIZES)
        .enumerate()
        .map(|(i, (name, n))| ParamTensor {
            path: (*name).into(),
            shape: vec![n],
            value: flat(&data(i as u64, n, 1.0)),
            grad: None,
        })
        .collect();
    let mut reports = Vec::new();
    for step in 0..4u64 {
        for (i, p) in params.iter_mut().enumerate() {
            p.grad = Some(flat(&gradient(step, i, huge)));
        }
        reports.push(opt.step(1e-3, &mut params)?);
    }
    let record = serde_json::to_string(&opt.to_record()).unwrap();
    let out = params.iter().map(|p| bits(&values(&p.value))).collect();
    Ok((out, reports, record))
}

#[test]
fn in_pass_scan_gives_the_same_steps_and_reports_as_scanning_first() {
    let chains: Vec<Chain<B>> = vec![
        AdamWConfig::default().build().unwrap(),
        AdamConfig {
            amsgrad: true,
            maximize: true,
            weight_decay: 0.1,
            ..AdamConfig::default()
        }
        .build()
        .unwrap(),
        LionConfig::default().build().unwrap(),
        SophiaConfig::g().build().unwrap(),
        // fused without an in-pass measurement (measured right before the step)
        AdafactorConfig::default().build().unwrap(),
        Adam8bitConfig::default().build().unwrap(),
        // composed only
        LambConfig::default().build().unwrap(),
        AdamWConfig::default().build::<B>().unwrap().composed(),
    ];
    for chain in chains {
        let name = chain.label().to_string();
        let huge = !chain.squares_gradient_in_f32();
        let (p_first, r_first, rec_first) =
            run(chain.clone(), GradientScan::BeforeStep, huge).unwrap();
        let (p_pass, r_pass, rec_pass) = run(chain, GradientScan::InPass, huge).unwrap();
        assert!(p_first == p_pass, "{name}: parameters differ");
        assert!(rec_first == rec_pass, "{name}: records differ");
        for (k, (a, b)) in r_first.iter().zip(&r_pass).enumerate() {
            assert_eq!(
                a.grad_norm.to_bits(),
                b.grad_norm.to_bits(),
                "{name}, step {k}: norm {} vs {}",
                a.grad_norm,
                b.grad_norm
            );
            assert_eq!(a, b, "{name}, step {k}: reports differ");
        }
        // The cases the test is about did happen.
        assert_eq!(r_pass[2].non_finite, 3, "{name}");
        assert_eq!(r_pass[2].non_finite_paths, vec!["b".to_string()], "{name}");
        if huge {
            assert!(
                r_pass[2].grad_norm > 1e29,
                "{name}: {}",
                r_pass[2].grad_norm
            );
            assert!(
                r_pass[3].grad_norm.is_finite() && r_pass[3].grad_norm > 5e20,
                "{name}: {}",
                r_pass[3].grad_norm
            );
        }
        assert_norms(&name, &r_pass, huge);
    }
}

/// The fused Adam, Lion and Sophia steps measure `Σ g²` inside their own pass, with the bits
/// `fused::sum_squares` gives (the engine's scan-first measurement).
#[test]
fn fused_kernels_measure_the_gradient_in_their_own_pass() {
    let chains: Vec<Chain<B>> = vec![
        AdamWConfig::default().build().unwrap(),
        AdamConfig {
            amsgrad: true,
            ..AdamConfig::default()
        }
        .build()
        .unwrap(),
        LionConfig::default().build().unwrap(),
        SophiaConfig::h().build().unwrap(),
    ];
    for chain in chains {
        let fused = chain.fused().expect("fused step").clone();
        for n in SIZES {
            let device = Default::default();
            let mut states = chain.init("w", &[n], &device).unwrap();
            let grad: Tensor<B, 1> = flat(&data(n as u64, n, 3.0));
            let expected = moment_optim::fused::sum_squares(&grad).expect("CPU tensor");
            let param = flat(&data(7, n, 1.0));
            let (new, measured) = fused
                .step_measured(1e-3, &[n], param, grad.clone(), &mut states)
                .unwrap_or_else(|_| panic!("{}: fused step declined", chain.label()));
            let measured = measured.unwrap_or_else(|| panic!("{}: not measured", chain.label()));
            assert_eq!(
                measured.to_bits(),
                expected.to_bits(),
                "{}, n = {n}: {measured} vs {expected}",
                chain.label()
            );
            assert_eq!(new.dims(), [n]);
            // and the plain step does not pay for it
            let mut states = chain.init("w", &[n], &device).unwrap();
            assert!(
                fused
                    .step(1e-3, &[n], flat(&data(7, n, 1.0)), grad, &mut states)
                    .is_ok()
            );
        }
    }
}

#[test]
fn in_pass_scan_refuses_setups_that_decide_before_the_step() {
    let chain = || AdamWConfig::default().build::<B>().unwrap();
    for policy in [
        NonFinitePolicy::Error,
        NonFinitePolicy::SkipStep,
        NonFinitePolicy::ZeroGradient,
    ] {
        let err = MomentOptimizer::builder()
            .group(ParamGroup::new("all", Selector::All, chain()))
            .non_finite(policy)
            .gradient_scan(GradientScan::InPass)
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                OptimError::InvalidConfig {
                    field: "gradient_scan",
                    ..
                }
            ),
            "{policy:?}: {err}"
        );
        assert!(err.to_string().contains("Propagate"), "{err}");
    }
    let err = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::All, chain()))
        .non_finite(NonFinitePolicy::Propagate)
        .clip_grad_norm(1.0)
        .gradient_scan(GradientScan::InPass)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("clipping"), "{err}");
    // The default scans first, so every policy and clipping build.
    assert!(
        MomentOptimizer::builder()
            .group(ParamGroup::new("all", Selector::All, chain()))
            .clip_grad_norm(1.0)
            .build()
            .is_ok()
    );
}

/// A gradient prepared but never applied (a caller driving `prepare`/`apply`/`finish` itself)
/// still counts in the report's norm.
#[test]
fn in_pass_scan_counts_gradients_that_were_not_applied() {
    let mut norms = Vec::new();
    for scan in [GradientScan::BeforeStep, GradientScan::InPass] {
        let mut opt = MomentOptimizer::builder()
            .group(ParamGroup::new(
                "all",
                Selector::All,
                AdamWConfig::default().build::<B>().unwrap(),
            ))
            .non_finite(NonFinitePolicy::Propagate)
            .gradient_scan(scan)
            .build()
            .unwrap();
        let grads = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, path)| moment_optim::GradEntry {
                path: (*path).into(),
                param_shape: vec![50_000],
                grad_shape: vec![50_000],
                grad: flat(&data(i as u64, 50_000, 1.0)),
                param: None,
            })
            .collect();
        let mut prep = opt.prepare(1e-3, grads).unwrap();
        let _ = opt.apply(&mut prep, "a", flat(&data(9, 50_000, 1.0)));
        let report = opt.finish(prep);
        norms.push(report.grad_norm);
    }
    assert!(norms[0] > 0.0);
    assert_eq!(norms[0].to_bits(), norms[1].to_bits(), "{norms:?}");
}

/// The documented difference: scanning first refuses a step whose gradient squares overflow
/// f32 in a chain that squares it (nothing changes); measuring in the pass takes the step, as
/// the reference would, and reports the norm.
#[test]
fn in_pass_scan_does_not_refuse_gradients_too_large_for_f32_squares() {
    let chain = || AdafactorConfig::default().build::<B>().unwrap();
    assert!(chain().squares_gradient_in_f32());
    let err = run(chain(), GradientScan::BeforeStep, true).unwrap_err();
    assert!(matches!(err, OptimError::GradientTooLarge { .. }), "{err}");
    let (_, reports, _) = run(chain(), GradientScan::InPass, true).unwrap();
    assert_norms("adafactor", &reports, true);
    assert!(reports[2].grad_norm > 1e29, "{}", reports[2].grad_norm);
    assert_eq!(reports[2].non_finite, 3);
}

//! The engine's contracts: groups and path routing, global clipping, the non-finite policy,
//! config errors, accounting, records (save/load ≡ uninterrupted), burn module integration.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use std::sync::{Arc, Mutex};

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{ElementConversion, Tensor, TensorData, backend::Backend};
use common::*;
use moment_optim::{
    AdamConfig, AdamWConfig, MomentOptimizer, NonFinitePolicy, Observer, OptimError, ParamGroup,
    ParamTensor, ParamView, RefusedStep, Selector, StepReport,
};

fn adamw(wd: f64) -> moment_optim::Chain<B> {
    AdamWConfig::default()
        .with_weight_decay(wd)
        .build()
        .unwrap()
}

fn two_params() -> Vec<ParamTensor<B>> {
    vec![
        ParamTensor {
            path: "layer.weight".into(),
            shape: vec![2, 2],
            value: flat(&[1.0, -2.0, 3.0, -4.0]),
            grad: Some(flat(&[0.5, 0.5, -0.5, 1.0])),
        },
        ParamTensor {
            path: "layer.bias".into(),
            shape: vec![2],
            value: flat(&[1.0, 1.0]),
            grad: Some(flat(&[0.25, -0.25])),
        },
    ]
}

#[test]
fn groups_route_by_rank_and_path_first_match_wins() {
    let mut opt = MomentOptimizer::<B>::builder()
        .group(ParamGroup::new("frozen", Selector::glob("*.bias"), adamw(0.0)).lr_mult(0.0))
        .group(ParamGroup::new("matrices", Selector::rank(2), adamw(0.5)))
        .build()
        .unwrap();
    assert_eq!(opt.group_of("layer.bias", &[2]), Some("frozen"));
    assert_eq!(opt.group_of("layer.weight", &[2, 2]), Some("matrices"));
    assert_eq!(opt.group_of("other", &[3]), None);
    let mut ps = two_params();
    opt.step(0.1, &mut ps).unwrap();
    // lr_mult 0 ⇒ the bias is untouched, bitwise.
    assert_eq!(values(&ps[1].value), vec![1.0, 1.0]);
    // The matrix moved by Adam's first step −lr·sign(g) plus decay −lr·wd·θ.
    let w = values(&ps[0].value);
    let want: Vec<f64> = [(1.0, 0.5), (-2.0, 0.5), (3.0, -0.5), (-4.0, 1.0)]
        .iter()
        .map(|&(p, g): &(f64, f64)| {
            p - 0.1 * g.signum() * (g.abs() / (g.abs() + 1e-8)) - 0.1 * 0.5 * p
        })
        .collect();
    assert_close(&w, &want, 1e-6, 1e-6, "matrix");
}

#[test]
fn unmatched_parameter_is_an_error_and_changes_nothing() {
    let mut opt = MomentOptimizer::<B>::builder()
        .group(ParamGroup::new("matrices", Selector::rank(2), adamw(0.0)))
        .build()
        .unwrap();
    let mut ps = two_params();
    let err = opt.step(0.1, &mut ps).unwrap_err();
    assert!(
        matches!(err, OptimError::UnmatchedParameter { ref path, .. } if path == "layer.bias"),
        "{err}"
    );
    assert_eq!(values(&ps[0].value), vec![1.0, -2.0, 3.0, -4.0]);
    assert_eq!(opt.steps(), 0);
    assert!(opt.state("layer.weight").is_none());
}

/// Plain descent `θ ← θ − lr·g` with global clipping: the applied update reveals the clipped
/// gradient.
fn clipped_sgd(max_norm: f64) -> MomentOptimizer<B> {
    let sgd = moment_optim::Chain::<B>::new("sgd")
        .then(moment_optim::transforms::scale_by_learning_rate());
    MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::all(), sgd))
        .clip_grad_norm(max_norm)
        .build()
        .unwrap()
}

#[test]
fn global_clipping_scales_all_gradients_by_one_factor_and_reports_the_norm() {
    let mut opt = clipped_sgd(1.0);
    let mut ps = vec![
        param("a", &[0.0, 0.0], Some(&[3.0, 0.0])),
        param("b", &[0.0], Some(&[4.0])),
    ];
    let r = opt.step(1.0, &mut ps).unwrap();
    assert!(
        (r.grad_norm - 5.0).abs() < 1e-6,
        "pre-clip norm {}",
        r.grad_norm
    );
    assert!(r.clipped);
    let f = 1.0 / (5.0 + 1e-6);
    assert_close(&values(&ps[0].value), &[-3.0 * f, 0.0], 1e-6, 0.0, "a");
    assert_close(&values(&ps[1].value), &[-4.0 * f], 1e-6, 0.0, "b");
    // Below the threshold nothing is scaled.
    let mut ps = vec![
        param("a", &[0.0, 0.0], Some(&[0.3, 0.0])),
        param("b", &[0.0], Some(&[0.4])),
    ];
    let r = opt.step(1.0, &mut ps).unwrap();
    assert!(!r.clipped && r.clip_factor == 1.0);
    assert_eq!(values(&ps[1].value), vec![-0.4]);
}

#[test]
fn clipping_norm_survives_f32_overflow() {
    let mut opt = clipped_sgd(1.0);
    // Σg² = 2e60 overflows f32, but the gradient is finite: not a non-finite event.
    let mut ps = vec![param("a", &[0.0, 0.0], Some(&[1e30, -1e30]))];
    let r = opt.step(1.0, &mut ps).unwrap();
    assert_eq!(r.non_finite, 0);
    assert!(
        (r.grad_norm / (2f64.sqrt() * 1e30) - 1.0).abs() < 1e-5,
        "{}",
        r.grad_norm
    );
    let v = values(&ps[0].value);
    assert_close(&v, &[-(0.5f64.sqrt()), 0.5f64.sqrt()], 1e-5, 0.0, "clipped");
}

fn nan_params() -> Vec<ParamTensor<B>> {
    vec![
        param("ok", &[1.0, 2.0], Some(&[0.1, 0.2])),
        param(
            "bad",
            &[1.0, 2.0, 3.0],
            Some(&[f32::NAN, 0.5, f32::INFINITY]),
        ),
    ]
}

#[test]
fn non_finite_policy_error_names_the_parameter_and_changes_nothing() {
    let mut opt = MomentOptimizer::new(adamw(0.1));
    let mut ps = nan_params();
    let err = opt.step(0.1, &mut ps).unwrap_err();
    match &err {
        OptimError::NonFiniteGradient {
            first_path, count, ..
        } => {
            assert_eq!(first_path, "bad");
            assert_eq!(*count, 2);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("`bad`"));
    assert_eq!(values(&ps[0].value), vec![1.0, 2.0]);
    assert_eq!(opt.steps(), 0);
    assert!(opt.state("ok").is_none());
}

#[test]
fn non_finite_policy_skip_keeps_state_and_counters() {
    let mut opt = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::all(), adamw(0.1)))
        .non_finite(NonFinitePolicy::SkipStep)
        .build()
        .unwrap();
    let mut ps = vec![param("ok", &[1.0, 2.0], Some(&[0.1, 0.2]))];
    opt.step(0.1, &mut ps).unwrap();
    let before = opt.to_record();
    let vals = values(&ps[0].value);
    let mut bad = vec![param("ok", &vals, Some(&[f32::NAN, 0.2]))];
    let r = opt.step(0.1, &mut bad).unwrap();
    assert!(r.skipped && r.non_finite == 1 && r.params_updated == 0);
    assert_eq!(values(&bad[0].value), vals);
    assert_eq!(opt.to_record(), before, "state must be bitwise unchanged");
    assert_eq!(opt.steps(), 1);
}

#[test]
fn non_finite_policy_zero_replaces_only_bad_elements() {
    let mk = |policy| {
        MomentOptimizer::builder()
            .group(ParamGroup::new(
                "all",
                Selector::all(),
                AdamConfig::default().build::<B>().unwrap(),
            ))
            .non_finite(policy)
            .build()
            .unwrap()
    };
    let mut zeroed = mk(NonFinitePolicy::ZeroGradient);
    let mut ps = vec![param(
        "p",
        &[1.0, 2.0, 3.0],
        Some(&[f32::NAN, 0.5, f32::NEG_INFINITY]),
    )];
    let r = zeroed.step(0.1, &mut ps).unwrap();
    assert_eq!(r.non_finite, 2);
    // Same as feeding an explicit 0 there.
    let mut reference = mk(NonFinitePolicy::Error);
    let mut qs = vec![param("p", &[1.0, 2.0, 3.0], Some(&[0.0, 0.5, 0.0]))];
    reference.step(0.1, &mut qs).unwrap();
    assert_eq!(values(&ps[0].value), values(&qs[0].value));
    assert_eq!(values(&ps[0].value)[0], 1.0);
}

#[test]
fn invalid_configs_are_typed_errors_naming_the_field() {
    let cases: Vec<(Result<moment_optim::Chain<B>, OptimError>, &str)> = vec![
        (
            AdamConfig {
                betas: (1.0, 0.999),
                ..Default::default()
            }
            .build(),
            "betas.0",
        ),
        (
            AdamConfig {
                betas: (0.9, -0.1),
                ..Default::default()
            }
            .build(),
            "betas.1",
        ),
        (
            AdamConfig {
                eps: 0.0,
                ..Default::default()
            }
            .build(),
            "eps",
        ),
        (
            AdamConfig {
                eps: f64::NAN,
                ..Default::default()
            }
            .build(),
            "eps",
        ),
        (
            AdamWConfig {
                weight_decay: -1.0,
                ..Default::default()
            }
            .build(),
            "weight_decay",
        ),
        (
            AdamWConfig {
                weight_decay: f64::INFINITY,
                ..Default::default()
            }
            .build(),
            "weight_decay",
        ),
    ];
    for (res, field) in cases {
        match res {
            Err(OptimError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected an error for {field}, got {other:?}"),
        }
    }
    let e = MomentOptimizer::<B>::builder()
        .group(ParamGroup::new("a", Selector::all(), adamw(0.0)))
        .clip_grad_norm(-1.0)
        .build()
        .unwrap_err();
    assert!(matches!(
        e,
        OptimError::InvalidConfig {
            field: "max_grad_norm",
            ..
        }
    ));
    let e = MomentOptimizer::<B>::builder()
        .group(ParamGroup::new("a", Selector::all(), adamw(0.0)).lr_mult(f64::NAN))
        .build()
        .unwrap_err();
    assert!(matches!(
        e,
        OptimError::InvalidConfig {
            field: "lr_mult",
            ..
        }
    ));
    assert!(MomentOptimizer::<B>::builder().build().is_err());
    // Values that are fine in f64 but break once rounded to f32 (the arithmetic's precision).
    let f32_cases: Vec<(Result<moment_optim::Chain<B>, OptimError>, &str)> = vec![
        // eps → 0 in f32 would give 0/0 = NaN on a zero gradient.
        (
            AdamConfig {
                eps: 1e-50,
                ..Default::default()
            }
            .build(),
            "eps",
        ),
        // β2 → 1 in f32 would freeze the second moment at 0.
        (
            AdamConfig {
                betas: (0.9, 1.0 - 1e-10),
                ..Default::default()
            }
            .build(),
            "betas.1",
        ),
        (
            AdamWConfig {
                weight_decay: 1e39,
                ..Default::default()
            }
            .build(),
            "weight_decay",
        ),
    ];
    for (res, field) in f32_cases {
        match res {
            Err(OptimError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected an error for {field}, got {other:?}"),
        }
    }
    // eps = 1e-30 is representable and stays valid (the scale-invariance property uses it).
    assert!(
        AdamConfig {
            eps: 1e-30,
            ..Default::default()
        }
        .build::<B>()
        .is_ok()
    );
    let mut opt = MomentOptimizer::new(adamw(0.0));
    for lr in [-1e-3, f64::NAN, f64::INFINITY, 1e39] {
        let mut ps = two_params();
        assert!(matches!(
            opt.step(lr, &mut ps),
            Err(OptimError::InvalidLearningRate { .. })
        ));
    }
    // A group multiplier can push a valid lr out of f32 range: also an error, nothing changes.
    let mut big = MomentOptimizer::builder()
        .group(ParamGroup::new("a", Selector::all(), adamw(0.0)).lr_mult(1e30))
        .build()
        .unwrap();
    let mut ps = two_params();
    assert!(matches!(
        big.step(1e10, &mut ps),
        Err(OptimError::InvalidLearningRate { .. })
    ));
    assert_eq!(big.steps(), 0);
    assert_eq!(values(&ps[1].value), vec![1.0, 1.0]);
}

#[test]
fn shape_changes_and_duplicate_paths_are_errors() {
    let mut opt = MomentOptimizer::new(adamw(0.0));
    let mut ps = vec![param("p", &[1.0, 2.0], Some(&[0.1, 0.1]))];
    opt.step(0.1, &mut ps).unwrap();
    let mut other = vec![param("p", &[1.0, 2.0, 3.0], Some(&[0.1, 0.1, 0.1]))];
    assert!(matches!(
        opt.step(0.1, &mut other),
        Err(OptimError::ShapeMismatch { .. })
    ));
    let mut wrong_grad = vec![param("q", &[1.0, 2.0], Some(&[0.1]))];
    assert!(matches!(
        opt.step(0.1, &mut wrong_grad),
        Err(OptimError::ShapeMismatch { .. })
    ));
    let mut dup = vec![
        param("p", &[1.0, 2.0], Some(&[0.1, 0.1])),
        param("p", &[1.0, 2.0], Some(&[0.1, 0.1])),
    ];
    assert!(matches!(
        opt.step(0.1, &mut dup),
        Err(OptimError::DuplicatePath { .. })
    ));
}

#[test]
fn state_memory_is_exact() {
    let mut opt = MomentOptimizer::builder()
        .group(ParamGroup::new(
            "vec",
            Selector::rank(1),
            AdamConfig {
                amsgrad: true,
                ..Default::default()
            }
            .build()
            .unwrap(),
        ))
        .group(ParamGroup::new("rest", Selector::all(), adamw(0.1)))
        .build()
        .unwrap();
    assert_eq!(opt.state_memory().total_bytes, 0);
    let mut ps = two_params();
    opt.step(0.1, &mut ps).unwrap();
    let mem = opt.state_memory();
    // weight: 4 elements × (m, v) × 4 B + step 8 B; bias: 2 × (m, v, vmax) × 4 B + 8 B.
    assert_eq!(mem.by_kind["exp_avg"], 4 * 4 + 2 * 4);
    assert_eq!(mem.by_kind["exp_avg_sq"], 4 * 4 + 2 * 4);
    assert_eq!(mem.by_kind["max_exp_avg_sq"], 2 * 4);
    assert_eq!(mem.by_kind["step"], 16);
    assert_eq!(mem.total_bytes, (16 + 16 + 8) + (8 + 8 + 8 + 8));
    assert_eq!(mem.param_elements, 6);
    let bias = mem.params.iter().find(|p| p.path == "layer.bias").unwrap();
    assert_eq!(bias.total_bytes, 3 * 2 * 4 + 8);
}

/// Deterministic pseudo-random gradients.
fn grad_at(step: usize, n: usize, salt: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = ((step * 31 + i * 17) as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(salt);
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

#[test]
fn save_load_mid_run_equals_the_uninterrupted_run_bitwise() {
    for amsgrad in [false, true] {
        let make = || {
            MomentOptimizer::builder()
                .group(ParamGroup::new(
                    "vec",
                    Selector::rank(1),
                    AdamConfig {
                        amsgrad,
                        weight_decay: 0.01,
                        ..Default::default()
                    }
                    .build::<B>()
                    .unwrap(),
                ))
                .group(ParamGroup::new(
                    "rest",
                    Selector::all(),
                    AdamWConfig {
                        amsgrad,
                        ..Default::default()
                    }
                    .build()
                    .unwrap(),
                ))
                .clip_grad_norm(0.5)
                .build()
                .unwrap()
        };
        let run =
            |opt: &mut MomentOptimizer<B>, ps: &mut Vec<ParamTensor<B>>, from: usize, to: usize| {
                for t in from..to {
                    for (k, p) in ps.iter_mut().enumerate() {
                        let n = p.shape.iter().product();
                        p.grad = Some(flat(&grad_at(t, n, k as u32)));
                    }
                    opt.step(1e-2, ps).unwrap();
                }
            };
        let mut full = make();
        let mut ps_full = two_params();
        run(&mut full, &mut ps_full, 0, 20);

        let mut first = make();
        let mut ps = two_params();
        run(&mut first, &mut ps, 0, 7);
        // Through burn's binary recorder, as a checkpoint would go.
        let rec = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = Recorder::<B>::record(&rec, first.to_record(), ()).unwrap();
        drop(first);
        let loaded: moment_optim::OptimizerRecord =
            Recorder::<B>::load(&rec, bytes, &Default::default()).unwrap();
        let mut resumed = make();
        resumed.load_record(loaded, &Default::default()).unwrap();
        assert_eq!(resumed.steps(), 7);
        run(&mut resumed, &mut ps, 7, 20);

        for (a, b) in ps.iter().zip(&ps_full) {
            let bits = |t: &Tensor<B, 1>| values(t).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&a.value),
                bits(&b.value),
                "amsgrad={amsgrad} {}",
                a.path
            );
        }
        assert_eq!(resumed.to_record(), full.to_record());
    }
}

#[test]
fn mismatched_records_are_errors_and_leave_state_untouched() {
    let mut adam = MomentOptimizer::new(
        AdamConfig {
            amsgrad: true,
            ..Default::default()
        }
        .build::<B>()
        .unwrap(),
    );
    let mut ps = two_params();
    adam.step(0.1, &mut ps).unwrap();
    let amsgrad_record = adam.to_record();

    let mut target = MomentOptimizer::new(adamw(0.1));
    let mut qs = two_params();
    target.step(0.1, &mut qs).unwrap();
    let before = target.to_record();
    let dev = Default::default();

    // A different optimizer (AMSGrad state).
    let e = target.load_record(amsgrad_record, &dev).unwrap_err();
    assert!(matches!(e, OptimError::RecordMismatch { .. }), "{e}");
    assert_eq!(target.to_record(), before);

    // Wrong version, unknown group, truncated values, wrong shape.
    let mut r = before.clone();
    r.version = 99;
    assert!(target.load_record(r, &dev).is_err());
    let mut r = before.clone();
    r.params[0].group = "nope".into();
    assert!(target.load_record(r, &dev).is_err());
    let mut r = before.clone();
    r.params[1].transforms[0].tensors[0].values.pop();
    assert!(target.load_record(r, &dev).is_err());
    let mut r = before.clone();
    r.params[0].shape = vec![99];
    assert!(target.load_record(r, &dev).is_err());
    assert_eq!(target.to_record(), before);

    // Changing a stateless hyper-parameter (decay on/off) keeps records loadable.
    let mut no_decay = MomentOptimizer::new(adamw(0.0));
    no_decay.load_record(before.clone(), &dev).unwrap();
    assert_eq!(no_decay.to_record(), before);
}

#[derive(Default)]
struct Collect {
    paths: Vec<(u64, String, String)>,
    reports: Vec<StepReport>,
    update_norms: Vec<f64>,
}

impl<Bk: Backend> Observer<Bk> for Collect {
    fn wants(&self, step: u64) -> bool {
        step != 2
    }
    fn on_param(&mut self, v: &ParamView<'_, Bk>) {
        self.paths
            .push((v.step, v.path.to_string(), v.group.to_string()));
        let n: f32 = v.update.clone().square().sum().into_scalar().elem();
        self.update_norms.push(f64::from(n).sqrt());
        assert!(!v.state.is_empty());
    }
    fn on_step(&mut self, r: &StepReport) {
        self.reports.push(r.clone());
    }
}

/// What an observer sees of finished and refused steps, in order.
#[derive(Default)]
struct Events {
    /// `Ok(step)` for `on_step`, `Err(refusal)` for `on_refused`.
    seen: Vec<Result<u64, RefusedStep>>,
    params: usize,
}

impl<Bk: Backend> Observer<Bk> for Events {
    fn on_param(&mut self, _: &ParamView<'_, Bk>) {
        self.params += 1;
    }
    fn on_step(&mut self, r: &StepReport) {
        self.seen.push(Ok(r.step));
    }
    fn on_refused(&mut self, r: &RefusedStep) {
        self.seen.push(Err(r.clone()));
    }
}

fn refusals(obs: &Mutex<Events>) -> Vec<RefusedStep> {
    let obs = obs.lock().unwrap();
    obs.seen.iter().filter_map(|e| e.clone().err()).collect()
}

/// Every refused step reaches the observer once — step counter (unchanged), reason, path —
/// after nothing changed; steps that run or are skipped never reach `on_refused`.
#[test]
fn refused_steps_reach_the_observer_and_change_nothing() {
    let obs = Arc::new(Mutex::new(Events::default()));
    let mut opt = MomentOptimizer::new(adamw(0.1));
    opt.set_observer(obs.clone());
    let mut ps = vec![param("ok", &[1.0, 2.0], Some(&[0.1, 0.2]))];
    opt.step(0.1, &mut ps).unwrap();
    let before = opt.to_record();
    let vals = values(&ps[0].value);
    let params_seen = obs.lock().unwrap().params;

    // 1. A non-finite gradient under the default policy (`Error`).
    let mut bad = vec![
        param("ok", &vals, Some(&[0.1, 0.2])),
        param(
            "z.bad",
            &[1.0, 2.0, 3.0],
            Some(&[f32::NAN, 0.5, f32::INFINITY]),
        ),
    ];
    let err = opt.step(0.1, &mut bad).unwrap_err();
    // 2. A gradient with the wrong number of elements (the flat API's own check).
    let mut short = vec![param("ok", &vals, Some(&[0.1]))];
    let short_err = opt.step(0.2, &mut short).unwrap_err();
    // 3. A parameter whose shape changed since its state was made (the engine's check).
    let mut grown = vec![param("ok", &[1.0, 2.0, 3.0], Some(&[0.1, 0.1, 0.1]))];
    let grown_err = opt.step(0.3, &mut grown).unwrap_err();
    // 4. An invalid learning rate names no parameter.
    let mut fine = vec![param("ok", &vals, Some(&[0.1, 0.2]))];
    let lr_err = opt.step(f64::NAN, &mut fine).unwrap_err();

    assert_eq!(opt.steps(), 1);
    assert_eq!(opt.to_record(), before, "state must be bitwise unchanged");
    assert_eq!(values(&bad[0].value), vals);
    assert_eq!(values(&short[0].value), vals);
    assert_eq!(
        obs.lock().unwrap().params,
        params_seen,
        "no parameter observed"
    );
    let r = refusals(&obs);
    assert_eq!(r.len(), 4, "one notice per refused step");
    assert!(r.iter().all(|r| r.step == 1 && r.attempted() == 2));
    assert!(r.iter().all(|r| r.policy == NonFinitePolicy::Error));
    assert_eq!(
        r.iter().map(RefusedStep::kind).collect::<Vec<_>>(),
        [
            "NonFiniteGradient",
            "ShapeMismatch",
            "ShapeMismatch",
            "InvalidLearningRate"
        ]
    );
    assert_eq!(
        r.iter().map(RefusedStep::path).collect::<Vec<_>>(),
        [Some("z.bad"), Some("ok"), Some("ok"), None]
    );
    // The observer gets the very error the step returned (errors are not `PartialEq`:
    // compared by variant and text).
    assert!(matches!(r[0].error, OptimError::NonFiniteGradient { .. }));
    assert!(matches!(r[1].error, OptimError::ShapeMismatch { .. }));
    assert!(matches!(r[2].error, OptimError::ShapeMismatch { .. }));
    assert!(matches!(r[3].error, OptimError::InvalidLearningRate { .. }));
    for (r, e) in r.iter().zip([&err, &short_err, &grown_err, &lr_err]) {
        assert_eq!(r.reason(), e.to_string());
    }
    assert_eq!(
        r.iter().map(|r| r.lr).take(3).collect::<Vec<_>>(),
        [0.1, 0.2, 0.3]
    );
    assert!(r[3].lr.is_nan());

    // The next good step is step 2; the sequence is step 1, four refusals, step 2.
    opt.step(0.1, &mut fine).unwrap();
    let seen = &obs.lock().unwrap().seen;
    assert_eq!(seen.len(), 6);
    assert!(matches!((&seen[0], &seen[5]), (Ok(1), Ok(2))), "{seen:?}");
    assert!(seen[1..5].iter().all(Result::is_err));

    // A skipped step (`SkipStep`) is a step report, not a refusal.
    let obs = Arc::new(Mutex::new(Events::default()));
    let mut skip = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::all(), adamw(0.1)))
        .non_finite(NonFinitePolicy::SkipStep)
        .build()
        .unwrap();
    skip.set_observer(obs.clone());
    let mut bad = vec![param("ok", &[1.0, 2.0], Some(&[f32::NAN, 0.2]))];
    assert!(skip.step(0.1, &mut bad).unwrap().skipped);
    let seen = &obs.lock().unwrap().seen;
    assert!(matches!(seen.as_slice(), [Ok(0)]), "{seen:?}");
}

#[derive(Module, Debug)]
struct Block<B: Backend> {
    q: Linear<B>,
}

#[derive(Module, Debug)]
struct Net<B: Backend> {
    blocks: Vec<Block<B>>,
    head: Linear<B>,
}

type AB = Autodiff<NdArray>;

fn net(device: &burn::tensor::Device<AB>) -> Net<AB> {
    Net {
        blocks: (0..2)
            .map(|_| Block {
                q: LinearConfig::new(3, 3).init(device),
            })
            .collect(),
        head: LinearConfig::new(3, 2).init(device),
    }
}

#[test]
fn burn_optimizer_walks_modules_with_paths_and_feeds_the_observer() {
    let device = Default::default();
    AB::seed(&device, 7);
    let mut model = net(&device);
    let mut engine = MomentOptimizer::builder()
        .group(ParamGroup::new("no_decay", Selector::rank(1), adamw(0.0)))
        .group(ParamGroup::new(
            "attn",
            Selector::glob("blocks.*.q.weight"),
            adamw(0.1),
        ))
        .group(ParamGroup::new("rest", Selector::all(), adamw(0.0)))
        .build()
        .unwrap();
    let obs = Arc::new(Mutex::new(Collect::default()));
    engine.set_observer(obs.clone());
    let mut optim = engine.for_module::<Net<AB>, AB>();
    let x = Tensor::<AB, 2>::from_data(
        TensorData::new(vec![0.5f32, -1.0, 2.0, 1.0, 0.0, -0.5], [2, 3]),
        &device,
    );
    let lr = 1e-2;
    for _ in 0..3 {
        let h = model.blocks.iter().fold(x.clone(), |h, b| b.q.forward(h));
        let loss = model.head.forward(h).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        assert!(optim.take_error().is_none());
    }
    let obs = obs.lock().unwrap();
    let step1: Vec<(String, String)> = obs
        .paths
        .iter()
        .filter(|p| p.0 == 1)
        .map(|p| (p.1.clone(), p.2.clone()))
        .collect();
    let expect = |p: &str, g: &str| (p.to_string(), g.to_string());
    assert_eq!(
        step1,
        vec![
            expect("blocks.0.q.weight", "attn"),
            expect("blocks.0.q.bias", "no_decay"),
            expect("blocks.1.q.weight", "attn"),
            expect("blocks.1.q.bias", "no_decay"),
            expect("head.weight", "rest"),
            expect("head.bias", "no_decay"),
        ]
    );
    // Step 2 was not wanted: no per-parameter calls, but the step report still arrives.
    assert!(obs.paths.iter().all(|p| p.0 != 2));
    assert_eq!(
        obs.reports.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // First Adam step without decay: every element moves by ≈ lr, so ‖Δ‖ = lr·√n.
    let head_bias_norm = obs.update_norms[5];
    assert!(
        (head_bias_norm - lr * 2f64.sqrt()).abs() < 1e-6,
        "{head_bias_norm}"
    );
    // Records round-trip through burn's trait (lazily materialised).
    let rec = optim.to_record();
    assert_eq!(rec.params.len(), 6);
    let fresh = MomentOptimizer::builder()
        .group(ParamGroup::new("no_decay", Selector::rank(1), adamw(0.0)))
        .group(ParamGroup::new(
            "attn",
            Selector::glob("blocks.*.q.weight"),
            adamw(0.1),
        ))
        .group(ParamGroup::new("rest", Selector::all(), adamw(0.0)))
        .build()
        .unwrap()
        .for_module::<Net<AB>, AB>();
    let mut fresh = fresh.load_record(rec.clone());
    assert!(fresh.take_error().is_none());
    assert_eq!(Optimizer::<Net<AB>, AB>::to_record(&fresh), rec);
}

#[test]
fn burn_optimizer_reports_errors_without_touching_the_module() {
    let device = Default::default();
    let model = net(&device);
    let before: Vec<f32> = model.head.weight.val().into_data().to_vec().unwrap();
    let mut optim = MomentOptimizer::new(adamw(0.0)).for_module::<Net<AB>, AB>();
    let x = Tensor::<AB, 2>::from_data(TensorData::new(vec![f32::NAN, 1.0, 2.0], [1, 3]), &device);
    let h = model.blocks.iter().fold(x, |h, b| b.q.forward(h));
    let loss = model.head.forward(h).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let (model, res) = optim.try_step(1e-2, model, grads);
    assert!(matches!(res, Err(OptimError::NonFiniteGradient { .. })));
    let after: Vec<f32> = model.head.weight.val().into_data().to_vec().unwrap();
    assert_eq!(before, after);
    assert_eq!(optim.engine().steps(), 0);
}

/// burn-train's Learner drives the optimizer through `Optimizer::step`, owns it and never
/// calls `take_error`: a refused step must reach the observer there (and in evaluation mode,
/// which the adaptor refuses before the engine sees the step).
#[test]
fn burn_optimizer_refusals_reach_the_observer() {
    let device = Default::default();
    let mut model = net(&device);
    let obs = Arc::new(Mutex::new(Events::default()));
    let mut engine =
        MomentOptimizer::new(moment_optim::ScheduleFreeConfig::default().build().unwrap());
    engine.set_observer(obs.clone());
    let mut optim = engine.for_module::<Net<AB>, AB>();
    let loss_of = |m: &Net<AB>, x0: f32| {
        let x = Tensor::<AB, 2>::from_data(TensorData::new(vec![x0, 1.0, 2.0], [1, 3]), &device);
        let h = m.blocks.iter().fold(x, |h, b| b.q.forward(h));
        m.head.forward(h).sum()
    };
    let grads = GradientsParams::from_grads(loss_of(&model, 0.5).backward(), &model);
    model = optim.step(1e-2, model, grads);
    let before = optim.engine().to_record();
    let w: Vec<f32> = model.head.weight.val().into_data().to_vec().unwrap();
    // A NaN input gives NaN gradients: refused under the default policy.
    let grads = GradientsParams::from_grads(loss_of(&model, f32::NAN).backward(), &model);
    model = Optimizer::step(&mut optim, 1e-2, model, grads);
    assert_eq!(
        w,
        model.head.weight.val().into_data().to_vec::<f32>().unwrap()
    );
    assert_eq!(optim.engine().to_record(), before);
    // In evaluation mode.
    let model = optim.eval(model);
    let grads = GradientsParams::from_grads(loss_of(&model, 0.5).backward(), &model);
    let model = Optimizer::step(&mut optim, 1e-2, model, grads);
    let model = optim.train(model);
    let grads = GradientsParams::from_grads(loss_of(&model, 0.5).backward(), &model);
    let _ = optim.step(1e-2, model, grads);
    let seen = obs.lock().unwrap().seen.clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(matches!((&seen[0], &seen[3]), (Ok(1), Ok(2))), "{seen:?}");
    let r = refusals(&obs);
    assert_eq!(
        r.iter().map(|r| (r.step, r.kind())).collect::<Vec<_>>(),
        [(1, "NonFiniteGradient"), (1, "EvalMode")]
    );
    assert!(r[0].path().is_some_and(|p| p.starts_with("blocks.0.q")));
    let kept = optim.take_error();
    assert!(matches!(kept, Some(OptimError::EvalMode)), "{kept:?}");
}

/// Version-1 records (written before code tensors existed) still load from JSON and resume
/// identically; version 0 and future versions are refused.
#[test]
fn version_one_json_records_still_load() {
    let make = || MomentOptimizer::<B>::new(AdamWConfig::default().build().unwrap());
    let mut a = make();
    let mut params = vec![param("w", &[0.5, -1.0, 2.0], Some(&[0.1, 0.2, -0.3]))];
    a.step(1e-2, &mut params).unwrap();
    let mut json = serde_json::to_value(a.to_record()).unwrap();
    json["version"] = 1.into();
    for p in json["params"].as_array_mut().unwrap() {
        for t in p["transforms"].as_array_mut().unwrap() {
            t.as_object_mut().unwrap().remove("codes");
        }
    }
    let v1: moment_optim::OptimizerRecord = serde_json::from_value(json.clone()).unwrap();
    let mut b = make();
    b.load_record(v1, &Default::default()).unwrap();
    assert_eq!(b.to_record().params, a.to_record().params);
    for v in [0, moment_optim::RECORD_VERSION + 1] {
        json["version"] = v.into();
        let r: moment_optim::OptimizerRecord = serde_json::from_value(json.clone()).unwrap();
        assert!(
            make().load_record(r, &Default::default()).is_err(),
            "version {v}"
        );
    }
}

/// Schedule-Free through burn: `eval(model)` swaps every parameter to its evaluation view,
/// a step in evaluation mode is refused (module unchanged), `train(model)` restores the
/// training parameters (to rounding) and stepping continues.
#[test]
fn schedule_free_module_eval_train_modes() {
    let device = Default::default();
    let mut model = net(&device);
    let mut optim =
        MomentOptimizer::new(moment_optim::ScheduleFreeConfig::default().build().unwrap())
            .for_module::<Net<AB>, AB>();
    let x = Tensor::<AB, 2>::from_data(
        TensorData::new(vec![0.5f32, -1.0, 2.0, 1.0, 0.0, -0.5], [2, 3]),
        &device,
    );
    let loss_of = |m: &Net<AB>| {
        let h = m.blocks.iter().fold(x.clone(), |h, b| b.q.forward(h));
        m.head.forward(h).powf_scalar(2.0).mean()
    };
    for _ in 0..3 {
        let grads = GradientsParams::from_grads(loss_of(&model).backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let train_w: Vec<f32> = model.head.weight.val().into_data().to_vec().unwrap();
    let model_eval = optim.eval(model);
    let eval_w: Vec<f32> = model_eval.head.weight.val().into_data().to_vec().unwrap();
    assert_ne!(
        train_w, eval_w,
        "the evaluation view differs from y after steps"
    );
    let grads = GradientsParams::from_grads(loss_of(&model_eval).backward(), &model_eval);
    let (model_eval, res) = optim.try_step(1e-2, model_eval, grads);
    assert!(matches!(res, Err(OptimError::EvalMode)));
    let model = optim.train(model_eval);
    let back: Vec<f32> = model.head.weight.val().into_data().to_vec().unwrap();
    for (a, b) in back.iter().zip(&train_w) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let grads = GradientsParams::from_grads(loss_of(&model).backward(), &model);
    let (_, res) = optim.try_step(1e-2, model, grads);
    assert!(res.is_ok());
}

/// Prodigy's group phase needs each parameter's value: the burn adaptor passes it, and a step
/// through `ModuleOptimizer` equals the flat API's step on the same values and gradients.
#[test]
fn module_steps_feed_parameter_values_to_group_reductions() {
    let device = Default::default();
    AB::seed(&device, 11);
    let mut model = net(&device);
    let chain = || moment_optim::ProdigyConfig::default().build().unwrap();
    let mut optim = MomentOptimizer::new(chain()).for_module::<Net<AB>, AB>();
    let mut flat_opt = MomentOptimizer::<NdArray>::new(chain());
    let x = Tensor::<AB, 2>::from_data(
        TensorData::new(vec![0.5f32, -1.0, 2.0, 1.0, 0.0, -0.5], [2, 3]),
        &device,
    );
    let flat_of = |t: Tensor<NdArray, 2>| {
        let n = t.dims().iter().product::<usize>();
        t.reshape([n])
    };
    let flat_of1 = |t: Tensor<NdArray, 1>| t;
    for _ in 0..4 {
        let h = model.blocks.iter().fold(x.clone(), |h, b| b.q.forward(h));
        let loss = model.head.forward(h).powf_scalar(2.0).mean();
        let back = loss.backward();
        let mut flat: Vec<ParamTensor<NdArray>> = Vec::new();
        let linears = model
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("blocks.{i}.q"), &b.q))
            .chain(std::iter::once(("head".to_string(), &model.head)));
        for (name, lin) in linears {
            let w = lin.weight.val();
            flat.push(ParamTensor {
                path: format!("{name}.weight"),
                shape: w.dims().to_vec(),
                value: flat_of(w.clone().inner()),
                grad: Some(flat_of(w.grad(&back).unwrap())),
            });
            let b = lin.bias.as_ref().unwrap().val();
            flat.push(ParamTensor {
                path: format!("{name}.bias"),
                shape: b.dims().to_vec(),
                value: flat_of1(b.clone().inner()),
                grad: Some(flat_of1(b.grad(&back).unwrap())),
            });
        }
        let grads = GradientsParams::from_grads(back, &model);
        model = optim.step(1.0, model, grads);
        assert!(optim.take_error().is_none());
        flat_opt.step(1.0, &mut flat).unwrap();
        let got = |p: &str| -> Vec<f32> {
            let lin = if p.starts_with("head") {
                &model.head
            } else {
                &model.blocks[usize::from(p.as_bytes()[7] - b'0')].q
            };
            let t = if p.ends_with("weight") {
                flat_of(lin.weight.val().inner())
            } else {
                lin.bias.as_ref().unwrap().val().inner()
            };
            t.into_data().to_vec::<f32>().unwrap()
        };
        for f in &flat {
            assert_eq!(
                got(&f.path),
                f.value.clone().into_data().to_vec::<f32>().unwrap(),
                "{}",
                f.path
            );
        }
    }
    let d = optim.engine().group_state("default").unwrap()[0]
        .scalar("d")
        .unwrap();
    assert!(d > 1e-6, "d grew from d0: {d}");
    assert_eq!(
        d,
        flat_opt.group_state("default").unwrap()[0]
            .scalar("d")
            .unwrap()
    );
}

/// burn-train's multi-device step hands the optimizer one `GradientsParams` per device;
/// `step_multi` sums them (burn's semantics) and steps once: the same as one step on the
/// gradient of the summed losses, and different from stepping on either device's alone.
#[test]
fn step_multi_sums_the_devices_gradients() {
    use burn::optim::MultiGradientsParams;
    use burn::tensor::backend::DeviceOps;
    let device: burn::tensor::Device<AB> = Default::default();
    let model = net(&device);
    let batch =
        |v: [f32; 6]| Tensor::<AB, 2>::from_data(TensorData::new(v.to_vec(), [2, 3]), &device);
    let (x1, x2) = (
        batch([0.5, -1.0, 2.0, 1.0, 0.0, -0.5]),
        batch([-0.3, 0.8, 0.1, 1.5, -2.0, 0.7]),
    );
    let loss = |m: &Net<AB>, x: Tensor<AB, 2>| {
        let h = m.blocks.iter().fold(x, |h, b| b.q.forward(h));
        m.head.forward(h).powf_scalar(2.0).mean()
    };
    let weights = |m: &Net<AB>| -> Vec<f32> { m.head.weight.val().into_data().to_vec().unwrap() };
    let id = device.id();
    let multi = MultiGradientsParams {
        grads: vec![
            (
                GradientsParams::from_grads(loss(&model, x1.clone()).backward(), &model),
                id,
            ),
            (
                GradientsParams::from_grads(loss(&model, x2.clone()).backward(), &model),
                id,
            ),
        ],
    };
    // ε = 1 makes the first Adam step g/(|g| + 1): magnitude-dependent, so the sum shows.
    let chain = || {
        AdamWConfig {
            eps: 1.0,
            ..AdamWConfig::default()
        }
        .build()
        .unwrap()
    };
    let mut opt = MomentOptimizer::new(chain()).for_module::<Net<AB>, AB>();
    let stepped = opt.step_multi(1e-2, model.clone(), multi);
    assert!(opt.take_error().is_none());
    let summed = GradientsParams::from_grads(
        (loss(&model, x1.clone()) + loss(&model, x2)).backward(),
        &model,
    );
    let mut opt = MomentOptimizer::new(chain()).for_module::<Net<AB>, AB>();
    let reference = opt.step(1e-2, model.clone(), summed);
    let single = GradientsParams::from_grads(loss(&model, x1).backward(), &model);
    let mut opt = MomentOptimizer::new(chain()).for_module::<Net<AB>, AB>();
    let first_only = opt.step(1e-2, model.clone(), single);
    let (a, b, c) = (weights(&stepped), weights(&reference), weights(&first_only));
    let max = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max)
    };
    assert!(
        max(&a, &b) < 1e-6,
        "step_multi vs summed loss: {}",
        max(&a, &b)
    );
    assert!(
        max(&a, &c) > 1e-4,
        "step_multi must use both devices' gradients"
    );
    assert!(max(&a, &weights(&model)) > 1e-4, "the step must move");
}

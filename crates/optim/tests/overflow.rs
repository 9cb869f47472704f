//! Finite gradients too large for a transform that squares them in f32: a typed error before
//! anything changes (not NaN parameters); with global clipping the same gradient is fine;
//! optimizers without such statistics step normally.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod common;

use common::{B, flat, shaped, values};
use moment_optim::{
    AdafactorConfig, AdamWConfig, Chain, MomentOptimizer, OptimError, ParamGroup, Selector,
};

fn big_grad() -> Vec<f32> {
    (0..12).map(|i| ((i % 5) as f32 - 2.0) * 1e30).collect()
}

fn step(opt: &mut MomentOptimizer<B>, init: &[f32]) -> (Result<(), OptimError>, Vec<f32>) {
    let mut p = vec![shaped("w", &[3, 4], init)];
    p[0].grad = Some(flat(&big_grad()));
    let r = opt.step(1e-2, &mut p).map(|_| ());
    (r, values(&p[0].value))
}

#[test]
fn adafactor_refuses_an_overflowing_gradient_and_changes_nothing() {
    let init: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.5).collect();
    let chain: Chain<B> = AdafactorConfig::transformers().build().unwrap();
    let mut opt = MomentOptimizer::new(chain.clone());
    // One ordinary step first, so there is state to keep.
    let mut p = vec![shaped("w", &[3, 4], &init)];
    p[0].grad = Some(flat(&[0.1; 12]));
    opt.step(1e-2, &mut p).unwrap();
    let before = opt.to_record();
    let (r, v) = step(&mut opt, &values(&p[0].value));
    match r {
        Err(OptimError::GradientTooLarge { path, sum_sq, .. }) => {
            assert_eq!(path, "w");
            assert!(sum_sq > 1e60);
        }
        other => panic!("expected GradientTooLarge, got {other:?}"),
    }
    assert_eq!(v, values(&p[0].value), "parameters changed");
    assert_eq!(opt.to_record(), before, "state changed");

    // Global clipping brings the same gradient into range: the step runs, finite.
    let mut clipped = MomentOptimizer::builder()
        .group(ParamGroup::new("all", Selector::All, chain))
        .clip_grad_norm(1.0)
        .build()
        .unwrap();
    let (r, v) = step(&mut clipped, &init);
    r.unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
}

#[test]
fn adamw_steps_finitely_on_the_same_gradient() {
    let init: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.5).collect();
    let mut opt = MomentOptimizer::new(AdamWConfig::default().build::<B>().unwrap());
    let (r, v) = step(&mut opt, &init);
    r.unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
    assert_ne!(v, init);
}

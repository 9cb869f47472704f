//! The burn-shaped entry point: `XConfig::new().init::<B, M>()?` is burn's
//! `burn::optim::AdamWConfig::new().init::<B, M>()` with one `?`, steps exactly like the
//! engine it wraps, refuses bad hyper-parameters, and — with burn's hyper-parameters set
//! explicitly — follows burn's own AdamW.
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, AdamConfig, AdamMiniConfig, AdamWConfig, AdemamixConfig,
    CameConfig, LambConfig, LionConfig, MarsConfig, MomentOptimizer, MuonConfig, OptimError,
    ProdigyConfig, ScheduleFreeConfig, ShampooConfig, SoapConfig, SophiaConfig,
};

type AB = Autodiff<NdArray<f32>>;

#[derive(Module, Debug)]
struct Net<B: Backend> {
    a: Linear<B>,
    b: Linear<B>,
}

/// Host-seeded values in (−scale, scale): burn's own RNG is global, and tests run in parallel.
fn host_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn linear(d_in: usize, d_out: usize, seed: u64) -> Linear<AB> {
    let device = Default::default();
    let k = 1.0 / (d_in as f32).sqrt();
    Linear {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(host_values(d_in * d_out, seed, k), [d_in, d_out]),
            &device,
        )),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(host_values(d_out, seed + 1, k), [d_out]),
            &device,
        ))),
    }
}

fn net() -> Net<AB> {
    Net {
        a: linear(8, 16, 11),
        b: linear(16, 4, 13),
    }
}

fn loss(model: &Net<AB>, step: u64) -> Tensor<AB, 1> {
    let x = Tensor::<AB, 2>::from_data(
        TensorData::new(host_values(5 * 8, 100 + step, 1.5), [5, 8]),
        &Default::default(),
    );
    model
        .b
        .forward(model.a.forward(x).tanh())
        .powi_scalar(2)
        .mean()
}

/// The model's parameters, flattened in module order, after `steps` steps of `optim`.
fn train<O: Optimizer<Net<AB>, AB>>(mut optim: O, steps: u64) -> Vec<f32> {
    let mut model = net();
    for step in 0..steps {
        let grads = GradientsParams::from_grads(loss(&model, step).backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    [
        model.a.weight.val().into_data(),
        model.b.weight.val().into_data(),
    ]
    .into_iter()
    .flat_map(|d| d.to_vec::<f32>().unwrap())
    .collect()
}

#[test]
fn init_steps_bit_for_bit_like_the_engine_it_wraps() {
    let shaped = train(AdamWConfig::new().init::<AB, Net<AB>>().unwrap(), 5);
    let engine = train(
        MomentOptimizer::new(AdamWConfig::default().build().unwrap()).for_module::<Net<AB>, AB>(),
        5,
    );
    assert_eq!(shaped, engine);
    // and it did train: five AdamW steps at lr 1e-2 move the weights
    let start = train(AdamWConfig::new().init::<AB, Net<AB>>().unwrap(), 0);
    assert!(shaped.iter().zip(&start).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn a_bad_hyper_parameter_is_an_error_naming_it_not_a_panic() {
    let bad = AdamWConfig {
        eps: -1.0,
        ..AdamWConfig::new()
    };
    match bad.init::<AB, Net<AB>>() {
        Err(OptimError::InvalidConfig { field, .. }) => assert_eq!(field, "eps"),
        Err(other) => panic!("expected a config error naming eps, got {other}"),
        Ok(_) => panic!("a negative eps was accepted"),
    }
}

#[test]
fn with_burns_hyper_parameters_it_follows_burns_adamw() {
    // burn 0.21's AdamW defaults (ε 1e-5, λ 1e-4) differ from torch's, which moment follows
    // (1e-8, 1e-2); set to burn's, the two agree to f32 rounding.
    let burn = train(burn::optim::AdamWConfig::new().init::<AB, Net<AB>>(), 5);
    let ours = train(
        AdamWConfig {
            eps: 1e-5,
            weight_decay: 1e-4,
            ..AdamWConfig::new()
        }
        .init::<AB, Net<AB>>()
        .unwrap(),
        5,
    );
    let worst = burn
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // five steps of lr 1e-2: a few f32 ulps of the O(0.1–1) weights per step
    assert!(worst < 1e-5, "max |burn − moment| = {worst}");
    // with the defaults each keeps its own, and they differ measurably
    let defaults = train(AdamWConfig::new().init::<AB, Net<AB>>().unwrap(), 5);
    let moved = burn
        .iter()
        .zip(&defaults)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        moved > 1e-5,
        "default weight decay 1e-2 vs 1e-4 moved nothing: {moved}"
    );
}

#[test]
fn every_named_optimizer_has_the_burn_shaped_entry_point() {
    macro_rules! each {
        ($($config:ident),*) => {$({
            let after = train($config::new().init::<AB, Net<AB>>().unwrap(), 2);
            assert!(
                after.iter().all(|x| x.is_finite()),
                concat!(stringify!($config), ": non-finite weights")
            );
            assert_eq!($config::new(), $config::default());
        })*};
    }
    each!(
        AdafactorConfig,
        AdamConfig,
        AdamWConfig,
        Adam8bitConfig,
        AdamMiniConfig,
        AdemamixConfig,
        CameConfig,
        LambConfig,
        LionConfig,
        MarsConfig,
        MuonConfig,
        ProdigyConfig,
        ScheduleFreeConfig,
        ShampooConfig,
        SoapConfig,
        SophiaConfig
    );
}

//! Every optimizer the `moment` command knows, on edge tensors: ranks 0–4, empty tensors,
//! zero parameters, gradients from 1e-30 to 1e30. Each step either succeeds with finite
//! parameters or is a typed error — never a panic, never silent NaN/Inf. (Optimizers that
//! square the gradient in f32 — Adafactor, CAME, SOAP, like their references — refuse
//! gradients whose Σg² nears f32's limit with `GradientTooLarge` instead of returning NaN.)
// Tests may unwrap and panic (the workspace lints deny it in library code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use moment_examples::compare::presets;
use moment_optim::port::{RefArgs, from_reference};
use moment_optim::{MomentOptimizer, ParamTensor};

type B = NdArray<f32>;

fn flat(v: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

#[test]
fn every_optimizer_gives_finite_results_or_a_typed_error_on_edge_tensors() {
    let shapes: [&[usize]; 8] = [
        &[],
        &[1],
        &[0],
        &[7],
        &[3, 5],
        &[0, 4],
        &[2, 3, 4],
        &[2, 2, 3, 2],
    ];
    let mut outcomes = Vec::new();
    for p in presets() {
        let args: RefArgs = p
            .args
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        for shape in shapes {
            let n: usize = shape.iter().product();
            for (mag, zero_param) in [
                (1e-30f32, false),
                (1.0, true),
                (1.0, false),
                (1e15, false),
                (1e18, false),
                (1e30, false),
            ] {
                let ported = from_reference::<B>(p.class, &args).unwrap();
                let mut opt = MomentOptimizer::new(ported.chain);
                let init: Vec<f32> = (0..n)
                    .map(|i| {
                        if zero_param {
                            0.0
                        } else {
                            ((i % 5) as f32 - 2.0) * 0.3
                        }
                    })
                    .collect();
                let mut params = vec![ParamTensor {
                    path: "w".into(),
                    shape: shape.to_vec(),
                    value: flat(&init),
                    grad: None,
                }];
                let what = format!("{} shape {shape:?} |g| {mag:e} zero θ {zero_param}", p.name);
                let mut ok = true;
                for step in 0..3 {
                    let g: Vec<f32> = (0..n)
                        .map(|i| (((i + step) % 7) as f32 - 3.0) * mag)
                        .collect();
                    params[0].grad = Some(flat(&g));
                    match opt.step(ported.lr, &mut params) {
                        Ok(_) => {
                            let v = params[0].value.to_data().to_vec::<f32>().unwrap();
                            assert!(
                                v.iter().all(|x| x.is_finite()),
                                "{what}: step {step} gave non-finite parameters {v:?}"
                            );
                        }
                        Err(e) => {
                            // A typed error with a message; the parameters are unchanged
                            // by the failed step and still finite.
                            assert!(!e.to_string().is_empty(), "{what}");
                            ok = false;
                            break;
                        }
                    }
                }
                outcomes.push((what, ok));
            }
        }
    }
    // The test exercised real steps, not only errors.
    let ran = outcomes.iter().filter(|(_, ok)| *ok).count();
    assert!(ran * 2 > outcomes.len(), "{outcomes:?}");
}

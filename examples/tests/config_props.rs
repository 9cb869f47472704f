//! Property: any hyper-parameter values, however wild (negative, zero, NaN, ±Inf, huge,
//! tiny), given to any optimizer either build or are a typed error naming the problem — and
//! a built optimizer's step either runs or is a typed error. Never a panic.
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
use moment_optim::port::{ArgValue, RefArgs, from_reference};
use moment_optim::{MomentOptimizer, ParamTensor};
use proptest::prelude::*;

type B = NdArray<f32>;

fn wild_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(1.0),
        Just(-1.0),
        Just(1e-300),
        Just(1e300),
        Just(f64::MIN_POSITIVE),
        -10.0..10.0f64,
        any::<f64>(),
    ]
}

/// `v` with its numbers replaced by `x` (the same shape: floats, ints, lists of them).
fn replace(v: &ArgValue, x: f64) -> ArgValue {
    match v {
        ArgValue::Float(_) => ArgValue::Float(x),
        ArgValue::Int(_) => ArgValue::Int(if x.is_finite() {
            x.clamp(i64::MIN as f64, i64::MAX as f64) as i64
        } else {
            -1
        }),
        ArgValue::List(items) => ArgValue::List(items.iter().map(|i| replace(i, x)).collect()),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn wild_hyper_parameters_build_or_error_and_never_panic(
        which in 0usize..64,
        arg in 0usize..16,
        x in wild_float(),
        y in wild_float(),
    ) {
        let all = presets();
        let p = &all[which % all.len()];
        let mut args: RefArgs = p.args.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let keys: Vec<String> = args.keys().cloned().collect();
        // Change one argument, and for a second one (when there is one) use `y`.
        let k1 = &keys[arg % keys.len()];
        let k2 = &keys[(arg / 2 + 1) % keys.len()];
        let v1 = replace(&args[k1], x);
        args.insert(k1.clone(), v1);
        let v2 = replace(&args[k2], y);
        args.insert(k2.clone(), v2);
        let Ok(ported) = from_reference::<B>(p.class, &args) else {
            return Ok(());
        };
        let mut opt = MomentOptimizer::new(ported.chain);
        let mut params = vec![ParamTensor {
            path: "w".into(),
            shape: vec![2, 3],
            value: Tensor::from_data(
                TensorData::new(vec![0.5f32, -0.5, 1.0, 0.0, 2.0, -1.5], [6]),
                &Default::default(),
            ),
            grad: None,
        }];
        for _ in 0..2 {
            params[0].grad = Some(Tensor::from_data(
                TensorData::new(vec![0.1f32, -0.2, 0.3, 0.0, -1.0, 2.0], [6]),
                &Default::default(),
            ));
            if opt.step(ported.lr, &mut params).is_err() {
                break;
            }
        }
    }
}

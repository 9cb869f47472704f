//! Shared helpers for moment-optim's integration tests.
#![allow(dead_code)]

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use moment_optim::{Chain, MomentOptimizer, ParamTensor};

pub type B = NdArray<f32>;

pub fn flat(v: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
}

pub fn values(t: &Tensor<B, 1>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

/// One parameter called `p` with `init`, stepped with each gradient in turn at `lr`;
/// returns the parameter after every step.
pub fn trajectory(chain: Chain<B>, lr: f64, init: &[f32], grads: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut opt = MomentOptimizer::new(chain);
    let mut params = vec![param("p", init, None)];
    grads
        .iter()
        .map(|g| {
            params[0].grad = Some(flat(g));
            opt.step(lr, &mut params).unwrap();
            values(&params[0].value)
        })
        .collect()
}

/// A parameter of `shape` (values flat) without a gradient.
pub fn shaped(path: &str, shape: &[usize], v: &[f32]) -> ParamTensor<B> {
    ParamTensor {
        path: path.into(),
        shape: shape.to_vec(),
        value: flat(v),
        grad: None,
    }
}

pub fn param(path: &str, v: &[f32], grad: Option<&[f32]>) -> ParamTensor<B> {
    ParamTensor {
        path: path.to_string(),
        shape: vec![v.len()],
        value: flat(v),
        grad: grad.map(flat),
    }
}

/// `|a − e| ≤ atol + rtol·|e|` elementwise, with a readable failure.
pub fn assert_close(actual: &[f32], expected: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (f64::from(a) - e).abs();
        assert!(
            err <= atol + rtol * e.abs(),
            "{what}: element {i}: {a} vs {e} (|diff| {err:e})"
        );
    }
}

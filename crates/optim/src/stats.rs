//! Tensor statistics shared by the engine and by observers (one device read for many values).

use burn::tensor::{ElementConversion, Int, Tensor, backend::Backend};

/// L2 norms of many flat tensors with a single device read. Σx² is accumulated in the
/// tensors' precision; a sum that overflows for a finite tensor is recomputed scaled by
/// max|x|, so only genuinely non-finite tensors give a non-finite norm.
pub fn l2_norms<B: Backend>(tensors: &[&Tensor<B, 1>]) -> Vec<f64> {
    let sums = read_scalars(
        tensors
            .iter()
            .map(|t| (*t).clone().square().sum())
            .collect(),
    );
    sums.into_iter()
        .zip(tensors)
        .map(|(s, t)| {
            if s.is_finite() {
                s.sqrt()
            } else {
                overflow_safe_sumsq(t).sqrt()
            }
        })
        .collect()
}

/// Read many one-element tensors with one device sync.
pub fn read_scalars<B: Backend>(scalars: Vec<Tensor<B, 1>>) -> Vec<f64> {
    if scalars.is_empty() {
        return Vec::new();
    }
    tensor_values(&Tensor::cat(scalars, 0))
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Exact `f32` values of a flat tensor.
#[allow(
    clippy::expect_used,
    reason = "invariant: data converted to f32 reads back as f32"
)]
pub fn tensor_values<B: Backend>(t: &Tensor<B, 1>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data converted to f32 always reads back as f32")
}

/// Σg² computed as `max|g|² · Σ(g/max|g|)²`, for tensors whose plain sum of squares
/// overflows (infinite when `g` holds a non-finite value).
pub fn overflow_safe_sumsq<B: Backend>(g: &Tensor<B, 1>) -> f64 {
    let amax = f64::from(g.clone().abs().max().into_scalar().elem::<f32>());
    if amax == 0.0 || !amax.is_finite() {
        return if amax == 0.0 { 0.0 } else { f64::INFINITY };
    }
    let scaled = f64::from(
        g.clone()
            .div_scalar(amax as f32)
            .square()
            .sum()
            .into_scalar()
            .elem::<f32>(),
    );
    amax * amax * scaled
}

/// Exact `u8` values of a flat code tensor.
#[allow(
    clippy::expect_used,
    reason = "invariant: data converted to u8 reads back as u8"
)]
pub fn code_values<B: Backend>(t: &Tensor<B, 1, Int>) -> Vec<u8> {
    t.to_data()
        .convert::<u8>()
        .to_vec::<u8>()
        .expect("code data converted to u8 always reads back as u8")
}

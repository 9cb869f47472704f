//! Small dense linear algebra in burn tensor ops (so it runs on every backend, GPUs included):
//! the inverse p-th root of a symmetric positive-definite matrix by the coupled Newton
//! iteration (Guo & Higham 2006; the form used by Google's and pytorch_optimizer's Shampoo).

use burn::tensor::{DType, FloatDType, Tensor, backend::Backend};

use crate::stats::read_scalars;

/// Precision the root iteration runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootPrecision {
    /// f64 (default): accurate to ~1e-12 relative even for condition numbers of 1e8; CPU
    /// backends and CUDA support it. Backends without f64 (wgpu) should use `F32`.
    #[default]
    F64,
    /// f32: accurate to ~cond·1e-7.
    F32,
}

/// Options of the coupled Newton iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RootConfig {
    /// Working precision.
    pub precision: RootPrecision,
    /// Iteration cap.
    pub max_iterations: usize,
    /// Converged when `max|M − I| ≤ tolerance`.
    pub tolerance: f64,
}

impl Default for RootConfig {
    fn default() -> Self {
        Self {
            precision: RootPrecision::F64,
            max_iterations: 100,
            tolerance: 1e-11,
        }
    }
}

/// Why a root was not computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFailure {
    /// The matrix holds NaN or ±Inf, or is zero.
    NonFinite,
    /// The iteration diverged or hit the cap (the matrix is not positive definite, or too
    /// ill-conditioned for the working precision).
    NoConvergence,
}

/// `A^(−1/p)` for a symmetric positive-definite `A` (`[n, n]`), or why not. Iteration:
/// `z = (1+p)/(2‖A‖_F)`, `X = z^(1/p)·I`, `M = z·A`; repeat `T = ((p+1)I − M)/p`, `X ← X·T`,
/// `M ← T^p·M` until `M ≈ I`. Reads one scalar per iteration to decide when to stop.
pub fn inverse_root<B: Backend>(
    a: Tensor<B, 2>,
    p: u32,
    config: &RootConfig,
) -> Result<Tensor<B, 2>, RootFailure> {
    let [n, _] = a.dims();
    let device = a.device();
    let dtype = a.dtype();
    let work = match config.precision {
        RootPrecision::F64 => a.cast(FloatDType::F64),
        RootPrecision::F32 => a.cast(FloatDType::F32),
    };
    let norm = read_scalars(vec![
        work.clone().square().sum().sqrt().cast(FloatDType::F32),
    ])[0];
    if !norm.is_finite() || norm == 0.0 {
        return Err(RootFailure::NonFinite);
    }
    let pf = f64::from(p);
    let z = (1.0 + pf) / (2.0 * norm);
    let eye = Tensor::<B, 2>::eye(n, &device).cast(work.dtype());
    let mut x = eye.clone().mul_scalar(z.powf(1.0 / pf));
    let mut m = work.mul_scalar(z);
    // Once the error reaches the working precision's noise floor (≈ ε·cond) it stops
    // shrinking; a stall below this floor is convergence, not failure.
    let floor = match config.precision {
        RootPrecision::F64 => 1e-6f64,
        RootPrecision::F32 => 1e-3,
    }
    .max(config.tolerance);
    let mut prev = f64::INFINITY;
    for _ in 0..config.max_iterations {
        let t = eye
            .clone()
            .mul_scalar((pf + 1.0) / pf)
            .sub(m.clone().div_scalar(pf));
        let mut tp = t.clone();
        for _ in 1..p {
            tp = tp.matmul(t.clone());
        }
        let new_x = x.clone().matmul(t);
        let new_m = tp.matmul(m.clone());
        let err = read_scalars(vec![
            new_m
                .clone()
                .sub(eye.clone())
                .abs()
                .max()
                .cast(FloatDType::F32)
                .reshape([1]),
        ])[0];
        if !err.is_finite() || err > 1.2 * prev {
            return if prev <= floor {
                Ok(x.cast(dtype_of(dtype)))
            } else {
                Err(RootFailure::NoConvergence)
            };
        }
        x = new_x;
        m = new_m;
        prev = err;
        if err <= config.tolerance {
            return Ok(x.cast(dtype_of(dtype)));
        }
    }
    if prev <= floor {
        Ok(x.cast(dtype_of(dtype)))
    } else {
        Err(RootFailure::NoConvergence)
    }
}

fn dtype_of(d: DType) -> FloatDType {
    match d {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}

//! Small dense linear algebra in burn tensor ops (so it runs on every backend, GPUs included):
//! the inverse p-th root of a symmetric positive-definite matrix by the coupled Newton
//! iteration (Guo & Higham 2006; the form used by Google's and pytorch_optimizer's Shampoo).
//! Host-side (f64) eigen-decomposition and QR of small symmetric factors for eigenbasis
//! methods (SOAP).

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

/// Eigen-decomposition of a symmetric `n × n` matrix on the host (row-major `a`, f64) by the
/// cyclic Jacobi method: returns the eigenvalues in **descending** order and the matching
/// eigenvectors as the columns of a row-major `n × n` matrix. Accurate to a few ulps of
/// `‖A‖`; cost `O(n³)` per sweep (typically 6–10 sweeps), so meant for the small factors
/// (≲ 1–2k) of eigenbasis methods (SOAP), computed rarely. Non-finite input gives non-finite
/// output (the caller checks).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: a must hold n*n values");
    let mut a = a.to_vec();
    // Symmetrize (inputs built from f32 products can differ in the last bit).
    for i in 0..n {
        for j in i + 1..n {
            let s = 0.5 * (a[i * n + j] + a[j * n + i]);
            a[i * n + j] = s;
            a[j * n + i] = s;
        }
    }
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let frob2: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..60 {
        let off: f64 = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off.is_nan() || off <= frob2 * 1e-32 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vectors = vec![0.0f64; n * n];
    for (col, &src) in order.iter().enumerate() {
        for k in 0..n {
            vectors[k * n + col] = v[k * n + src];
        }
    }
    (values, vectors)
}

/// The orthogonal factor `Q` of `A = QR` for a square row-major `n × n` matrix (Householder
/// reflections, f64, host). Columns are determined up to sign (like LAPACK's); a rank-deficient
/// `A` still gives an orthogonal `Q`.
pub fn qr_orthogonal(a: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(a.len(), n * n, "qr_orthogonal: a must hold n*n values");
    let mut r = a.to_vec();
    let mut q = vec![0.0f64; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    let mut v = vec![0.0f64; n];
    for k in 0..n.saturating_sub(1) {
        let m = n - k;
        let norm = (0..m)
            .map(|i| r[(k + i) * n + k].powi(2))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            continue;
        }
        let x0 = r[k * n + k];
        let alpha = if x0 >= 0.0 { -norm } else { norm };
        for i in 0..m {
            v[i] = r[(k + i) * n + k];
        }
        v[0] -= alpha;
        let vn = (0..m).map(|i| v[i] * v[i]).sum::<f64>().sqrt();
        if vn == 0.0 {
            continue;
        }
        for x in v.iter_mut().take(m) {
            *x /= vn;
        }
        for j in 0..n {
            let dot: f64 = (0..m).map(|i| v[i] * r[(k + i) * n + j]).sum();
            for i in 0..m {
                r[(k + i) * n + j] -= 2.0 * v[i] * dot;
            }
        }
        for i in 0..n {
            let dot: f64 = (0..m).map(|j| q[i * n + k + j] * v[j]).sum();
            for j in 0..m {
                q[i * n + k + j] -= 2.0 * dot * v[j];
            }
        }
    }
    q
}

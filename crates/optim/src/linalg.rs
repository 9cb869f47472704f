//! Small dense linear algebra in burn tensor ops (so it runs on every backend, GPUs included):
//! the inverse p-th root of a symmetric positive-definite matrix by the coupled Newton
//! iteration (Guo & Higham 2006; the form used by Google's and pytorch_optimizer's Shampoo).
//! Host-side (f64) eigen-decomposition and QR of small symmetric factors for eigenbasis
//! methods (SOAP).

use burn::tensor::{DType, FloatDType, Tensor, backend::Backend};

use crate::stats::read_scalars;
use crate::{OptimError, Result};

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

/// Eigen-decomposition of a symmetric `n × n` matrix on the host (row-major `a`, f64):
/// returns the eigenvalues in **descending** order and the matching eigenvectors as the
/// columns of a row-major `n × n` matrix. Householder tridiagonalization followed by the
/// implicit QL iteration (the EISPACK `tred2`/`tql2` pair, as in JAMA), accurate to a few ulps
/// of `‖A‖`; `≈ 9n³` flops with the rotations applied to contiguous rows. Meant for the
/// factors of eigenbasis methods (SOAP) computed once. Non-finite input gives non-finite
/// output (the caller checks). An `a` that does not hold `n·n` values is an error.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    check_square("symmetric_eigen", a, n)?;
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    // Symmetrize (inputs built from f32 products can differ in the last bit).
    let mut v = a.to_vec();
    for i in 0..n {
        for j in i + 1..n {
            let s = 0.5 * (v[i * n + j] + v[j * n + i]);
            v[i * n + j] = s;
            v[j * n + i] = s;
        }
    }
    let mut d = vec![0.0f64; n];
    let mut e = vec![0.0f64; n];
    tridiagonalize(&mut v, &mut d, &mut e, n);
    // z = vᵀ: the QL rotations then act on contiguous rows (z row j = eigenvector j).
    let mut z = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            z[j * n + i] = v[i * n + j];
        }
    }
    tridiagonal_ql(&mut z, &mut d, &mut e, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[j].total_cmp(&d[i]));
    let values = order.iter().map(|&i| d[i]).collect();
    let mut vectors = vec![0.0f64; n * n];
    for (col, &src) in order.iter().enumerate() {
        for k in 0..n {
            vectors[k * n + col] = z[src * n + k];
        }
    }
    Ok((values, vectors))
}

/// Householder reduction of symmetric `v` to tridiagonal form (`d` diagonal, `e`
/// sub-diagonal), `v` replaced by the accumulated orthogonal transformation.
fn tridiagonalize(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    for j in 0..n {
        d[j] = v[(n - 1) * n + j];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[(i - 1) * n + j];
                v[i * n + j] = 0.0;
                v[j * n + i] = 0.0;
            }
        } else {
            for x in d[..i].iter_mut() {
                *x /= scale;
                h += *x * *x;
            }
            let f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for x in e[..i].iter_mut() {
                *x = 0.0;
            }
            for j in 0..i {
                let f = d[j];
                v[j * n + i] = f;
                let mut g = e[j] + v[j * n + j] * f;
                for k in j + 1..i {
                    g += v[k * n + j] * d[k];
                    e[k] += v[k * n + j] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                for k in j..i {
                    v[k * n + j] -= f * e[k] + g * d[k];
                }
                d[j] = v[(i - 1) * n + j];
                v[i * n + j] = 0.0;
            }
        }
        d[i] = h;
    }
    for i in 0..n - 1 {
        v[(n - 1) * n + i] = v[i * n + i];
        v[i * n + i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[k * n + i + 1] / h;
            }
            for j in 0..=i {
                let mut g = 0.0;
                for k in 0..=i {
                    g += v[k * n + i + 1] * v[k * n + j];
                }
                for k in 0..=i {
                    v[k * n + j] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[k * n + i + 1] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[(n - 1) * n + j];
        v[(n - 1) * n + j] = 0.0;
    }
    v[(n - 1) * n + n - 1] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL iteration on the tridiagonal `(d, e)`; the rotations are applied to the rows of
/// `z` (the transposed transformation), so row `j` ends as the eigenvector of `d[j]`.
fn tridiagonal_ql(z: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0f64;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            for _iter in 0..64 {
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let h = g - d[l];
                for x in d[l + 2..n].iter_mut() {
                    *x -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0f64, 1.0f64, 1.0f64);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    let h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    let (lo, hi) = z.split_at_mut((i + 1) * n);
                    let row_i = &mut lo[i * n..];
                    let row_i1 = &mut hi[..n];
                    for (a, b) in row_i.iter_mut().zip(row_i1.iter_mut()) {
                        let h = *b;
                        *b = s * *a + c * h;
                        *a = c * *a - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].is_nan() || e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
}

/// The orthogonal factor `Q` of `A = QR` for a square row-major `n × n` matrix (Householder
/// reflections, f64, host; the reflections act on contiguous columns). Columns are determined up
/// to sign (like LAPACK's); a rank-deficient `A` still gives an orthogonal `Q`. An `a` that
/// does not hold `n·n` values is an error.
pub fn qr_orthogonal(a: &[f64], n: usize) -> Result<Vec<f64>> {
    check_square("qr_orthogonal", a, n)?;
    // rt: column-major copy of A (rt[j·n + i] = A[i][j]); q: row-major, starts at I.
    let mut rt = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            rt[j * n + i] = a[i * n + j];
        }
    }
    let mut q = vec![0.0f64; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    let mut v = vec![0.0f64; n];
    for k in 0..n.saturating_sub(1) {
        let m = n - k;
        let col = &rt[k * n + k..k * n + n];
        let norm = col.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if col[0] >= 0.0 { -norm } else { norm };
        v[..m].copy_from_slice(col);
        v[0] -= alpha;
        let vn = v[..m].iter().map(|x| x * x).sum::<f64>().sqrt();
        if vn == 0.0 {
            continue;
        }
        for x in v[..m].iter_mut() {
            *x /= vn;
        }
        for j in k..n {
            let c = &mut rt[j * n + k..j * n + n];
            let dot: f64 = c.iter().zip(&v[..m]).map(|(a, b)| a * b).sum();
            for (x, vi) in c.iter_mut().zip(&v[..m]) {
                *x -= 2.0 * vi * dot;
            }
        }
        for i in 0..n {
            let row = &mut q[i * n + k..i * n + n];
            let dot: f64 = row.iter().zip(&v[..m]).map(|(a, b)| a * b).sum();
            for (x, vj) in row.iter_mut().zip(&v[..m]) {
                *x -= 2.0 * dot * vj;
            }
        }
    }
    Ok(q)
}

/// `a` holds a row-major `n × n` matrix.
fn check_square(function: &'static str, a: &[f64], n: usize) -> Result<()> {
    if n.checked_mul(n) == Some(a.len()) {
        Ok(())
    } else {
        Err(OptimError::invalid(
            function,
            "a",
            format!("{} values for n = {n}", a.len()),
            "n·n values (a row-major square matrix)",
        ))
    }
}

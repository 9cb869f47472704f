use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use super::{lerp, merge_small_dims};
use crate::error::{OptimError, Result};
use crate::linalg::{qr_orthogonal, symmetric_eigen};
use crate::state_view::Fresh;
use crate::stats::tensor_values;
use crate::transform::{StateTensor, StepCtx, Transform, TransformState};

const MAX_RANK: usize = 8;
const GG: [&str; MAX_RANK] = [
    "GG.0", "GG.1", "GG.2", "GG.3", "GG.4", "GG.5", "GG.6", "GG.7",
];
const Q: [&str; MAX_RANK] = ["Q.0", "Q.1", "Q.2", "Q.3", "Q.4", "Q.5", "Q.6", "Q.7"];

/// SOAP (Vyas et al. 2024, *SOAP: Improving and Stabilizing Shampoo using Adam*;
/// pytorch_optimizer semantics): Adam run in the eigenbasis of Shampoo's factors.
///
/// For each axis `i` of the (optionally merged) shape with `d_i ≤ max_precondition_dim`, a
/// factor `GG_i ← lerp(GG_i, G₍ᵢ₎G₍ᵢ₎ᵀ, 1 − β_s)` (mode-`i` unfolding) and an orthogonal `Q_i`;
/// `P(x)` multiplies axis `i` of `x` by `Q_iᵀ` (`P⁻¹` by `Q_i`). Step `t`, `k = t − 1`:
///
/// ```text
/// t = 1: GG ← lerp(0, G Gᵀ, 1−β_s); Q_i = eigenvectors of GG_i + 1e-30·I (descending) — no step
/// t ≥ 2: m ← lerp(m, g, 1−β1) ; v ← lerp(v, P(g)², 1−β2)
///        n = P⁻¹( P(m) / (√v + ε) )        (÷ (RMS(n) + ε) with normalize_gradient)
///        θ ← (θ − lr·√(1−β2^k)/(1−β1^k) · n) · (1 − lr·λ)      (decay after the step)
///        GG ← lerp(GG, G Gᵀ, 1−β_s); every `precondition_frequency` k: one power iteration
///        Q_i ← qr(GG_i Q_i) with columns (and v along axis i) sorted by the estimated
///        eigenvalues diag(Q_iᵀ GG_i Q_i), descending
/// ```
///
/// The eigen-decomposition (first step, cyclic Jacobi) and the QR refreshes run on the host in
/// f64 from the f32 factors — `O(d³)`, rare; everything per step is tensor ops. Vectors are not
/// preconditioned unless `precondition_1d` (then plain Adam with the same step rule).
/// Self-scaling (outputs the descent amount; chain ends with `flip_sign`). State: `exp_avg`,
/// `exp_avg_sq`, `GG.i`, `Q.i` per preconditioned axis `i`, counter `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleBySoap {
    /// (β1, β2).
    pub betas: (f64, f64),
    /// β_s of the factors (pytorch_optimizer: `shampoo_beta`, default β2).
    pub shampoo_beta: f64,
    /// ε added to `√v` (and to the RMS with `normalize_gradient`).
    pub eps: f64,
    /// Decoupled decay λ, applied after the step.
    pub weight_decay: f64,
    /// Steps between eigenbasis refreshes (≥ 1).
    pub precondition_frequency: u64,
    /// Axes longer than this are not rotated.
    pub max_precondition_dim: usize,
    /// Merge small axes first (Shampoo's `merge_small_dims`).
    pub merge_dims: bool,
    /// Precondition vectors too.
    pub precondition_1d: bool,
    /// Adam bias correction of the step size.
    pub correct_bias: bool,
    /// Divide the direction by its RMS.
    pub normalize_gradient: bool,
}

impl ScaleBySoap {
    /// The shape the factors act on and, per axis, whether it is rotated.
    pub(super) fn layout(&self, shape: &[usize]) -> (Vec<usize>, Vec<bool>) {
        let empty = shape.contains(&0);
        if shape.len() == 1 {
            let on = self.precondition_1d && shape[0] <= self.max_precondition_dim && !empty;
            return (shape.to_vec(), vec![on]);
        }
        let dims = if self.merge_dims && shape.len() > 1 {
            merge_small_dims(shape, self.max_precondition_dim)
        } else {
            shape.to_vec()
        };
        let on = dims
            .iter()
            .map(|&d| d <= self.max_precondition_dim && !empty)
            .collect();
        (dims, on)
    }
}

crate::state_view! {
    /// SOAP's state (pytorch_optimizer's names): Adam's moments, then for each rotated axis
    /// `i` its factor `GG.i` and basis `Q.i` (the trailing run, names from [`factor_names`]).
    pub(crate) struct SoapState {
        counters { step }
        tensors { exp_avg, exp_avg_sq }
        trailing tensors { factors }
    }
}

/// The trailing run's names: `GG.i`, `Q.i` for each rotated axis `i` (rank ≤ [`MAX_RANK`]).
pub(super) fn factor_names(on: &[bool]) -> Vec<&'static str> {
    on.iter()
        .enumerate()
        .filter(|&(_, &o)| o)
        .flat_map(|(i, _)| [GG.get(i), Q.get(i)])
        .flatten()
        .copied()
        .collect()
}

/// One rotated axis' factor `GG.i` and eigenbasis `Q.i` (both `d × d`, flat).
struct Factor<'a, B: Backend> {
    gg: &'a mut Tensor<B, 1>,
    q: &'a mut Tensor<B, 1>,
}

/// Per axis: its factor if the axis is rotated (taken in order from the trailing run).
fn per_axis<'a, B: Backend>(
    on: &[bool],
    run: &'a mut [StateTensor<B>],
) -> Vec<Option<Factor<'a, B>>> {
    let mut pairs = run.chunks_exact_mut(2).filter_map(|pair| match pair {
        [gg, q] => Some(Factor {
            gg: &mut gg.tensor,
            q: &mut q.tensor,
        }),
        _ => None,
    });
    on.iter()
        .map(|&o| if o { pairs.next() } else { None })
        .collect()
}

/// Multiply every axis `i` of `x` (flat, axes `dims`) by `Q_i` (`backward`: `Q_iᵀ`), axes
/// without a factor left alone. Each pass contracts the leading axis and moves it last, so
/// after all passes the axes are back in order.
fn project<B: Backend>(
    x: Tensor<B, 1>,
    dims: &[usize],
    qs: &[Option<Tensor<B, 2>>],
    backward: bool,
) -> Tensor<B, 1> {
    let n = x.dims()[0];
    if n == 0 || qs.iter().all(Option::is_none) {
        return x;
    }
    let mut cur = x;
    for (&d, q) in dims.iter().zip(qs) {
        let m = cur.reshape([d, n / d]).transpose();
        let m = match q {
            Some(q) if backward => m.matmul(q.clone().transpose()),
            Some(q) => m.matmul(q.clone()),
            None => m,
        };
        cur = m.reshape([n]);
    }
    cur
}

/// `G₍ᵢ₎G₍ᵢ₎ᵀ` for every rotated axis.
fn grams<B: Backend>(g: &Tensor<B, 1>, dims: &[usize], on: &[bool]) -> Vec<Option<Tensor<B, 2>>> {
    let n = g.dims()[0];
    if n == 0 {
        return vec![None; dims.len()];
    }
    let mut out = Vec::with_capacity(dims.len());
    let mut cur = g.clone();
    for (&d, &o) in dims.iter().zip(on) {
        let unf = cur.reshape([d, n / d]);
        out.push(o.then(|| unf.clone().matmul(unf.clone().transpose())));
        cur = unf.transpose().reshape([n]);
    }
    out
}

fn host_matrix<B: Backend>(t: &Tensor<B, 1>) -> Vec<f64> {
    tensor_values(t).into_iter().map(f64::from).collect()
}

fn upload<B: Backend>(values: &[f64], n: usize, device: &B::Device) -> Tensor<B, 1> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [n * n]), device)
}

impl ScaleBySoap {
    fn update_factors<B: Backend>(
        &self,
        g: &Tensor<B, 1>,
        dims: &[usize],
        on: &[bool],
        factors: &mut [Option<Factor<'_, B>>],
    ) {
        for (gram, factor) in grams(g, dims, on).into_iter().zip(factors.iter_mut()) {
            if let (Some(gram), Some(f)) = (gram, factor) {
                let n = gram.dims()[0];
                let old = f.gg.clone();
                *f.gg = lerp(old, gram.reshape([n * n]), 1.0 - self.shampoo_beta);
            }
        }
    }

    /// First step: eigenvectors of each factor, descending eigenvalues. A factor with
    /// non-finite values keeps its current basis.
    fn eigenbases<B: Backend>(&self, dims: &[usize], factors: &mut [Option<Factor<'_, B>>]) {
        for (&d, factor) in dims.iter().zip(factors.iter_mut()) {
            let Some(f) = factor else { continue };
            let mut gg = host_matrix(f.gg);
            if gg.iter().any(|x| !x.is_finite()) {
                continue;
            }
            for i in 0..d {
                gg[i * d + i] = f64::from(gg[i * d + i] as f32 + 1e-30f32);
            }
            // A factor that is not d × d (never from `init`) keeps its basis, as a non-finite
            // one does.
            let Ok((_, q)) = symmetric_eigen(&gg, d) else {
                continue;
            };
            let device = f.gg.device();
            *f.q = upload::<B>(&q, d, &device);
        }
    }

    /// Refresh: one power iteration + QR per factor, `v` re-ordered along the axis.
    fn refresh<B: Backend>(
        &self,
        dims: &[usize],
        factors: &mut [Option<Factor<'_, B>>],
        exp_avg_sq: &mut Tensor<B, 1>,
    ) {
        let n: usize = dims.iter().product();
        for (axis, (&d, factor)) in dims.iter().zip(factors.iter_mut()).enumerate() {
            let Some(f) = factor else { continue };
            let gg = host_matrix(f.gg);
            let q = host_matrix(f.q);
            if gg.iter().chain(&q).any(|x| !x.is_finite()) {
                continue;
            }
            let mut mp = vec![0.0f64; d * d];
            for i in 0..d {
                for k in 0..d {
                    let a = gg[i * d + k];
                    for j in 0..d {
                        mp[i * d + j] += a * q[k * d + j];
                    }
                }
            }
            let est: Vec<f64> = (0..d)
                .map(|j| (0..d).map(|i| q[i * d + j] * mp[i * d + j]).sum())
                .collect();
            let mut order: Vec<usize> = (0..d).collect();
            order.sort_by(|&a, &b| est[b].total_cmp(&est[a]));
            let mut sorted = vec![0.0f64; d * d];
            for i in 0..d {
                for (col, &src) in order.iter().enumerate() {
                    sorted[i * d + col] = mp[i * d + src];
                }
            }
            let Ok(refreshed) = qr_orthogonal(&sorted, d) else {
                continue;
            };
            let device = f.gg.device();
            *f.q = upload::<B>(&refreshed, d, &device);
            if order.iter().enumerate().any(|(i, &o)| i != o) {
                let pre: usize = dims[..axis].iter().product();
                let idx: Vec<i64> = order.iter().map(|&o| o as i64).collect();
                let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [d]), &device);
                let v = exp_avg_sq.clone();
                *exp_avg_sq = v
                    .reshape([pre, d, n / (pre * d)])
                    .select(1, idx)
                    .reshape([n]);
            }
        }
    }
}

impl<B: Backend> Transform<B> for ScaleBySoap {
    fn squares_gradient_in_f32(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "scale_by_soap"
    }

    fn init(&self, path: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let (dims, on) = self.layout(shape);
        if dims.len() > MAX_RANK {
            return Err(OptimError::UnsupportedShape {
                transform: "scale_by_soap",
                path: path.to_string(),
                shape: shape.to_vec(),
                reason: "SOAP handles tensors of rank <= 8 (merge_dims=True reduces the rank)",
            });
        }
        let mut factors = Vec::new();
        for (i, (&d, &o)) in dims.iter().zip(&on).enumerate() {
            if o {
                factors.push(StateTensor::zeros(GG[i], &[d, d], device));
                let mut q = StateTensor::zeros(Q[i], &[d, d], device);
                q.tensor = Tensor::<B, 2>::eye(d, device).reshape([d * d]);
                factors.push(q);
            }
        }
        let zeros = || Fresh::zeros(shape, device);
        Ok(SoapState::init([zeros(), zeros()], factors))
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let (dims, on) = self.layout(ctx.shape);
        let s = SoapState::view(state, &factor_names(&on));
        let t = s.step.saturating_add(1);
        *s.step = t;
        let mut factors = per_axis(&on, s.factors);
        if t == 1 {
            self.update_factors(&g, &dims, &on, &mut factors);
            self.eigenbases(&dims, &mut factors);
            return g.zeros_like();
        }
        let k = t - 1;
        let (b1, b2) = self.betas;
        let qs: Vec<Option<Tensor<B, 2>>> = factors
            .iter()
            .zip(&dims)
            .map(|(f, &d)| f.as_ref().map(|f| f.q.clone().reshape([d, d])))
            .collect();
        let gp = project(g.clone(), &dims, &qs, false);
        let m = lerp(s.exp_avg.clone(), g.clone(), 1.0 - b1);
        let v = lerp(s.exp_avg_sq.clone(), gp.square(), 1.0 - b2);
        let den = v.clone().sqrt().add_scalar(self.eps as f32);
        let mp = project(m.clone(), &dims, &qs, false);
        let mut dir = project(mp.div(den), &dims, &qs, true);
        if self.normalize_gradient && dir.dims()[0] > 0 {
            let rms = dir
                .clone()
                .square()
                .mean()
                .sqrt()
                .add_scalar(self.eps as f32);
            dir = dir.div(rms);
        }
        *s.exp_avg = m;
        *s.exp_avg_sq = v;
        let ki = i32::try_from(k).unwrap_or(i32::MAX);
        let size = if self.correct_bias {
            ctx.lr * (1.0 - b2.powi(ki)).sqrt() / (1.0 - b1.powi(ki))
        } else {
            ctx.lr
        };
        let mut descent = dir.mul_scalar(size as f32);
        if self.weight_decay > 0.0 {
            let after = ctx.param.clone().sub(descent.clone());
            descent = descent.add(after.mul_scalar((ctx.lr * self.weight_decay) as f32));
        }
        self.update_factors(&g, &dims, &on, &mut factors);
        if k.is_multiple_of(self.precondition_frequency) {
            self.refresh(&dims, &mut factors, s.exp_avg_sq);
        }
        descent
    }
}

use burn::tensor::{Tensor, backend::Backend};

use super::lerp;
use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

/// Which reference's conventions Adafactor follows (`../shared/optimizers.md` §2b, §2c).
///
/// | | [`Transformers`](Self::Transformers) (HF `transformers`) | [`Torch`](Self::Torch) (`torch.optim.Adafactor`) |
/// | --- | --- | --- |
/// | ε1 | added to `g²` before the row/column means | clamps: `var ≥ ε1²`, row-mean normaliser `≥ ε1` |
/// | relative step | `min(1e-2, 1/√t)` (or `min(1e-6·t, 1/√t)` with `warmup_init`), × the step's lr (1 = HF) | `min(lr, 1/√t)`: the lr caps it |
/// | absolute lr | `relative_step = false`: the step's lr | — |
/// | parameter scaling | optional (`scale_parameter`) | always |
/// | first moment | optional β1, an EMA of the clipped, lr-scaled update | — |
/// | weight decay | `θ ← θ − λ·lr_eff·θ` (the scaled step size) | `θ ← θ·(1 − lr·λ)` (the raw lr) |
/// | state names | `exp_avg_sq_row`, `exp_avg_sq_col`, `exp_avg_sq`, `exp_avg` | `row_var`, `col_var`, `variance` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdafactorConvention {
    /// `transformers.optimization.Adafactor` (the fairseq port).
    #[default]
    Transformers,
    /// `torch.optim.Adafactor` (PyTorch ≥ 2.5).
    Torch,
}

/// Adafactor's whole step for one tensor: factored (rank ≥ 2: row and column statistics over
/// the last two dims, leading dims batched) or full (rank ≤ 1) second moment with the decaying
/// `β2_t = 1 − t^decay_rate`, update clipping at RMS `clip_threshold`, the relative /
/// parameter-scaled step size, the optional first moment and decoupled decay.
///
/// Adafactor sets its own step size (the relative step depends on `t`, the parameter RMS and, in
/// the torch convention, `min(lr, ·)`), so this transform consumes the learning rate itself and
/// outputs the full *descent* amount `θ_old − θ_new`; its chain ends with
/// [`flip_sign`](super::flip_sign) instead of [`scale_by_learning_rate`](super::scale_by_learning_rate).
/// Values must have been validated by [`AdafactorConfig`](crate::AdafactorConfig).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByAdafactor {
    /// Reference conventions.
    pub convention: AdafactorConvention,
    /// ε1 (regulariser of the second moment).
    pub eps1: f64,
    /// ε2 (floor of the parameter RMS used for scaling).
    pub eps2: f64,
    /// Update RMS threshold (HF `clip_threshold`, torch `d`).
    pub clip_threshold: f64,
    /// Exponent of `β2_t = 1 − t^decay_rate` (≤ 0).
    pub decay_rate: f64,
    /// First-moment coefficient (transformers convention only).
    pub beta1: Option<f64>,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Multiply the step size by `max(ε2, RMS(θ))`.
    pub scale_parameter: bool,
    /// Use the relative step size (otherwise the step's lr is the step size).
    pub relative_step: bool,
    /// Linear warm-up of the relative step (`1e-6·t`).
    pub warmup_init: bool,
}

crate::state_view! {
    /// Adafactor's state for tensors of rank ≥ 2: the factored second moment under HF's
    /// names (naming 0) or torch's `row_var`, `col_var` (naming 1); `exp_avg` with β1 (HF).
    pub(crate) struct AdafactorFactoredState {
        counters { step }
        tensors {
            exp_avg_sq_row = "exp_avg_sq_row" | "row_var",
            exp_avg_sq_col = "exp_avg_sq_col" | "col_var",
        }
        optional tensors { exp_avg }
    }
}

crate::state_view! {
    /// Adafactor's state for vectors (and scalars): the full second moment under HF's name
    /// (naming 0) or torch's `variance` (naming 1); `exp_avg` with β1 (HF).
    pub(crate) struct AdafactorFullState {
        counters { step }
        tensors { exp_avg_sq = "exp_avg_sq" | "variance" }
        optional tensors { exp_avg }
    }
}

/// The second moment of one tensor, from its state view.
enum SecondMoment<'a, B: Backend> {
    /// Row and column statistics of a `[l, r, c]` tensor.
    Factored {
        dims: (usize, usize, usize),
        row: &'a mut Tensor<B, 1>,
        col: &'a mut Tensor<B, 1>,
    },
    /// One value per element.
    Full(&'a mut Tensor<B, 1>),
}

impl ScaleByAdafactor {
    /// The convention's naming of the state views.
    fn naming(&self) -> usize {
        match self.convention {
            AdafactorConvention::Transformers => 0,
            AdafactorConvention::Torch => 1,
        }
    }

    /// Relative (or absolute) step size for step `t` before parameter scaling, in f64.
    pub(crate) fn rho(&self, lr: f64, t: f64) -> f64 {
        let inv_sqrt = 1.0 / t.sqrt();
        match self.convention {
            AdafactorConvention::Torch => lr.min(inv_sqrt),
            AdafactorConvention::Transformers if self.relative_step => {
                let min_step = if self.warmup_init { 1e-6 * t } else { 1e-2 };
                lr * min_step.min(inv_sqrt)
            }
            AdafactorConvention::Transformers => lr,
        }
    }

    /// Advance the second moment with `g` (step `t`) and return `g` scaled by its inverse
    /// square root (before clipping).
    fn scaled_gradient<B: Backend>(
        &self,
        g: Tensor<B, 1>,
        second: SecondMoment<'_, B>,
        t: f64,
    ) -> Tensor<B, 1> {
        let n = g.dims()[0];
        let hf = self.convention == AdafactorConvention::Transformers;
        // β2_t = 1 − t^decay: HF keeps β2_t, torch lerps with weight 1 − β2_t = t^decay.
        let one_minus_b2 = t.powf(self.decay_rate);
        let b2t = 1.0 - one_minus_b2;
        match second {
            SecondMoment::Factored {
                dims: (l, r, c),
                row: row_state,
                col: col_state,
            } => {
                let g3 = g.clone().reshape([l, r, c]);
                let row = row_state.clone().reshape([l, r, 1]);
                let col = col_state.clone().reshape([l, 1, c]);
                let (row, col, scale) = if hf {
                    let u = g3.clone().square().add_scalar(self.eps1 as f32);
                    let (row, col) = factored_ema(row, col, u, b2t);
                    let scale = approx_rsqrt(&row, &col);
                    (row, col, scale)
                } else {
                    // torch: vector_norm(g, dim)² / size (a sqrt then a square, as torch does).
                    let sq = g3.clone().square();
                    let row_mean = sq.clone().sum_dim(2).sqrt().square().div_scalar(c as f32);
                    let col_mean = sq.sum_dim(1).sqrt().square().div_scalar(r as f32);
                    let row = lerp(row, row_mean, one_minus_b2);
                    let col = lerp(col, col_mean, one_minus_b2);
                    let norm = row.clone().mean_dim(1).clamp_min(self.eps1 as f32);
                    let var = row.clone().mul(col.clone()).div(norm);
                    let eps_sq = (self.eps1 * self.eps1) as f32;
                    (row, col, var.clamp_min(eps_sq).sqrt().recip())
                };
                *row_state = row.reshape([l * r]);
                *col_state = col.reshape([l * c]);
                scale.mul(g3).reshape([n])
            }
            SecondMoment::Full(v_state) => {
                let v = v_state.clone();
                let (v, scale) = if hf {
                    let u = g.clone().square().add_scalar(self.eps1 as f32);
                    let v = v
                        .mul_scalar(b2t as f32)
                        .add(u.mul_scalar(one_minus_b2 as f32));
                    (v.clone(), v.sqrt().recip())
                } else {
                    let v = lerp(v, g.clone().square(), one_minus_b2);
                    let eps_sq = (self.eps1 * self.eps1) as f32;
                    (v.clone(), v.clamp_min(eps_sq).sqrt().recip())
                };
                *v_state = v;
                scale.mul(g)
            }
        }
    }
}

/// `(leading, rows, cols)` of a factored tensor, `None` for rank ≤ 1.
pub(crate) fn factored_dims(shape: &[usize]) -> Option<(usize, usize, usize)> {
    match shape {
        [lead @ .., r, c] => Some((lead.iter().product(), *r, *c)),
        _ => None,
    }
}

/// The factored EMA of Shazeer & Stern (HF's form): `row ← β·row + (1−β)·mean_cols(u)`,
/// `col ← β·col + (1−β)·mean_rows(u)`, for `u`, `row`, `col` of shapes `[l, r, c]`,
/// `[l, r, 1]`, `[l, 1, c]`. Shared by Adafactor and CAME.
pub(crate) fn factored_ema<B: Backend>(
    row: Tensor<B, 3>,
    col: Tensor<B, 3>,
    u: Tensor<B, 3>,
    beta: f64,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let row = row
        .mul_scalar(beta as f32)
        .add(u.clone().mean_dim(2).mul_scalar((1.0 - beta) as f32));
    let col = col
        .mul_scalar(beta as f32)
        .add(u.mean_dim(1).mul_scalar((1.0 - beta) as f32));
    (row, col)
}

/// `rsqrt(row / mean(row))·rsqrt(col)`: the factored estimate's inverse square root
/// (`[l, r, c]` by broadcasting), HF's `_approx_sq_grad`. Shared by Adafactor and CAME.
pub(crate) fn approx_rsqrt<B: Backend>(row: &Tensor<B, 3>, col: &Tensor<B, 3>) -> Tensor<B, 3> {
    let r_factor = row.clone().div(row.clone().mean_dim(1)).sqrt().recip();
    let c_factor = col.clone().sqrt().recip();
    r_factor.mul(c_factor)
}

/// `‖x‖₂ / √n` as a one-element tensor (stays on the device).
pub(crate) fn rms<B: Backend>(x: &Tensor<B, 1>, n: usize) -> Tensor<B, 1> {
    x.clone()
        .square()
        .sum()
        .sqrt()
        .div_scalar((n as f64).sqrt() as f32)
}

impl<B: Backend> Transform<B> for ScaleByAdafactor {
    fn squares_gradient_in_f32(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "scale_by_adafactor"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let zeros = |shape: &[usize]| Fresh::zeros(shape, device);
        let exp_avg = self.beta1.map(|_| [zeros(shape)]);
        let (row, col) = match (factored_dims(shape), self.convention) {
            (Some(_), AdafactorConvention::Transformers) => {
                let n = shape.len();
                let mut c = shape[..n - 2].to_vec();
                c.push(shape[n - 1]);
                (shape[..n - 1].to_vec(), c)
            }
            (Some(_), AdafactorConvention::Torch) => {
                let n = shape.len();
                let mut r = shape.to_vec();
                r[n - 1] = 1;
                let mut c = shape.to_vec();
                c[n - 2] = 1;
                (r, c)
            }
            (None, _) => {
                return Ok(AdafactorFullState::init_named(
                    self.naming(),
                    [zeros(shape)],
                    exp_avg,
                ));
            }
        };
        Ok(AdafactorFactoredState::init_named(
            self.naming(),
            [zeros(&row), zeros(&col)],
            exp_avg,
        ))
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let n = g.dims()[0];
        let (count, second, exp_avg) = match factored_dims(ctx.shape) {
            Some(dims) => {
                let s = AdafactorFactoredState::view(state);
                let (row, col) = (s.exp_avg_sq_row, s.exp_avg_sq_col);
                (s.step, SecondMoment::Factored { dims, row, col }, s.exp_avg)
            }
            None => {
                let s = AdafactorFullState::view(state);
                (s.step, SecondMoment::Full(s.exp_avg_sq), s.exp_avg)
            }
        };
        let t = count.saturating_add(1);
        *count = t;
        if n == 0 {
            return g;
        }
        let tf = t as f64;
        let device = g.device();
        let hf = self.convention == AdafactorConvention::Transformers;
        let upd = self.scaled_gradient(g, second, tf);

        // Step size: ρ_t · max(ε2, RMS(θ_before)) — computed on the device, no host sync.
        let rho = self.rho(ctx.lr, tf);
        let scaled = self.scale_parameter || !hf;
        let param_scale = scaled.then(|| rms(ctx.param, n).clamp_min(self.eps2 as f32));
        let lr_eff = match &param_scale {
            Some(s) => s.clone().mul_scalar(rho as f32),
            None => Tensor::from_floats([rho as f32], &device),
        };
        // Clip the update to RMS ≤ clip_threshold.
        let denom = rms(&upd, n)
            .div_scalar(self.clip_threshold as f32)
            .clamp_min(1.0);
        let mut step = upd.div(denom).mul(lr_eff.clone());

        // β1 (the state has `exp_avg` exactly then).
        if let (Some(b1), Some(exp_avg)) = (self.beta1, exp_avg) {
            let m = exp_avg
                .clone()
                .mul_scalar(b1 as f32)
                .add(step.mul_scalar((1.0 - b1) as f32));
            *exp_avg = m.clone();
            step = m;
        }
        if self.weight_decay > 0.0 {
            let decay = if hf {
                ctx.param
                    .clone()
                    .mul(lr_eff.mul_scalar(self.weight_decay as f32))
            } else {
                ctx.param
                    .clone()
                    .mul_scalar((ctx.lr * self.weight_decay) as f32)
            };
            step = step.add(decay);
        }
        step
    }
}

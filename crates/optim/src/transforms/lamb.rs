use burn::tensor::{Tensor, backend::Backend};

use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

crate::state_view! {
    /// LAMB's moments (the references' names).
    pub(crate) struct LambMomentsState {
        counters { step }
        tensors { exp_avg, exp_avg_sq }
    }
}

crate::state_view! {
    /// LAMB's trust-ratio diagnostics of the last step (one element each).
    pub(crate) struct TrustRatioState {
        counters { step }
        tensors { weight_norm, adam_norm, trust_ratio }
    }
}

/// LAMB's Adam-style direction `r = m̂ / (√v̂ + ε)`:
/// `m ← β1·m + β3·g` (β3 = 1 − β1 with `grad_averaging`, else 1), `v ← β2·v + (1−β2)·g²`,
/// bias corrections `m̂ = m/(1−β1^t)`, `v̂ = v/(1−β2^t)` only with `bias_correction` (apex;
/// pytorch_optimizer and cybertronai use none here). State: `exp_avg`, `exp_avg_sq`, `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByLambMoments {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε, added to `√v̂`.
    pub eps: f64,
    /// Correct both moments (apex `bias_correction=True`).
    pub bias_correction: bool,
    /// `m ← β1·m + (1−β1)·g` (true) or `β1·m + g` (false).
    pub grad_averaging: bool,
}

impl<B: Backend> Transform<B> for ScaleByLambMoments {
    fn name(&self) -> &'static str {
        "scale_by_lamb_moments"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let zeros = || Fresh::zeros(shape, device);
        Ok(LambMomentsState::init([zeros(), zeros()]))
    }

    fn update(
        &self,
        _: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let s = LambMomentsState::view(state);
        let t = s.step.saturating_add(1);
        *s.step = t;
        let beta3 = if self.grad_averaging {
            1.0 - self.beta1
        } else {
            1.0
        };
        let m = s
            .exp_avg
            .clone()
            .mul_scalar(self.beta1 as f32)
            .add(g.clone().mul_scalar(beta3 as f32));
        let v = s
            .exp_avg_sq
            .clone()
            .mul_scalar(self.beta2 as f32)
            .add(g.clone().mul_scalar((1.0 - self.beta2) as f32).mul(g));
        let r = if self.bias_correction {
            let ti = i32::try_from(t).unwrap_or(i32::MAX);
            let bc1 = 1.0 - self.beta1.powi(ti);
            let bc2 = 1.0 - self.beta2.powi(ti);
            m.clone().div_scalar(bc1 as f32).div(
                v.clone()
                    .div_scalar(bc2 as f32)
                    .sqrt()
                    .add_scalar(self.eps as f32),
            )
        } else {
            m.clone().div(v.clone().sqrt().add_scalar(self.eps as f32))
        };
        *s.exp_avg = m;
        *s.exp_avg_sq = v;
        r
    }
}

/// LAMB's layer-wise trust ratio: `u ↦ φ·u` with `φ = min(‖θ'‖, clamp) / (‖u‖ + ε)`, and φ = 1
/// when either norm is 0 (never NaN). `θ' = θ·(1 − lr·λ)` when the decoupled decay happens
/// before the norms (pytorch_optimizer), else `θ`. With `step_bias_correction = Some(β1)` the
/// result is also divided by `1 − β1^t` (pytorch_optimizer's step size `lr/(1−β1^t)`, applied
/// *outside* the ratio: a named quirk that makes its first step ~10× the paper's).
///
/// State (diagnostics, as the reference keeps them): `weight_norm`, `adam_norm`, `trust_ratio`
/// of the last step (one element each), counter `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByTrustRatio {
    /// Clamp of the weight norm (pytorch_optimizer / cybertronai: 10), if any.
    pub max_weight_norm: Option<f64>,
    /// ε added to `‖u‖` (pytorch_optimizer 1e-6; apex, cybertronai 0).
    pub eps: f64,
    /// λ of a decoupled decay applied before the norms (0 when none).
    pub decay_before_norm: f64,
    /// pytorch_optimizer's first-moment bias correction on the step size: `Some(β1)`.
    pub step_bias_correction: Option<f64>,
    /// Apply the ratio (false: only the step bias correction, e.g. `adam=True`).
    pub adapt: bool,
}

impl<B: Backend> Transform<B> for ScaleByTrustRatio {
    fn name(&self) -> &'static str {
        "scale_by_trust_ratio"
    }

    fn init(&self, _: &str, _: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let scalar = || Fresh::zeros(&[], device);
        Ok(TrustRatioState::init([scalar(), scalar(), scalar()]))
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        u: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let s = TrustRatioState::view(state);
        let t = s.step.saturating_add(1);
        *s.step = t;
        let mut w = ctx.param.clone().square().sum().sqrt();
        if self.decay_before_norm > 0.0 {
            w = w.mul_scalar((1.0 - ctx.lr * self.decay_before_norm).abs() as f32);
        }
        if let Some(c) = self.max_weight_norm {
            w = w.clamp_max(c as f32);
        }
        let a = u.clone().square().sum().sqrt();
        // φ = w / (a + ε), or 1 where either norm is 0 — computed without a host read.
        let either_zero = w.clone().equal_elem(0.0).bool_or(a.clone().equal_elem(0.0));
        let safe = a
            .clone()
            .add_scalar(self.eps as f32)
            .mask_fill(either_zero.clone(), 1.0);
        let mut ratio = w.clone().div(safe).mask_fill(either_zero, 1.0);
        *s.weight_norm = w;
        *s.adam_norm = a;
        // Kept even when not applied (`adam=True`), as the reference does.
        *s.trust_ratio = ratio.clone();
        if !self.adapt {
            ratio = ratio.ones_like();
        }
        if let Some(b1) = self.step_bias_correction {
            let ti = i32::try_from(t).unwrap_or(i32::MAX);
            ratio = ratio.div_scalar((1.0 - b1.powi(ti)) as f32);
        }
        u.mul(ratio)
    }
}

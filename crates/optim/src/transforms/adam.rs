use burn::tensor::{Tensor, backend::Backend};

use super::lerp;
use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

/// Adam's moment scaling with torch's exact order of operations (`torch.optim.Adam`,
/// single-tensor path; `../shared/optimizers.md` §1):
///
/// ```text
/// t += 1
/// m  = lerp(m, g, 1-β1)
/// v  = β2·v + (1-β2)·g²
/// v' = max(v_max, v) if amsgrad (max of the *uncorrected* v) else v
/// u  = (m / (1-β1^t)) / (√v' / √(1-β2^t) + ε)       bias corrections in f64, then f32
/// ```
///
/// State: `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` (amsgrad only), counter `step`.
#[derive(Debug, Clone, Copy)]
pub struct ScaleByAdam {
    /// β1, the first-moment EMA coefficient.
    pub beta1: f64,
    /// β2, the second-moment EMA coefficient.
    pub beta2: f64,
    /// ε, added after bias correction.
    pub eps: f64,
    /// Keep the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
}

/// See [`ScaleByAdam`]. Values must have been validated by the caller's config.
pub fn scale_by_adam(beta1: f64, beta2: f64, eps: f64, amsgrad: bool) -> ScaleByAdam {
    ScaleByAdam {
        beta1,
        beta2,
        eps,
        amsgrad,
    }
}

crate::state_view! {
    /// Adam's state (torch's names); `max_exp_avg_sq` with AMSGrad only.
    pub(crate) struct AdamState {
        counters { step }
        tensors { exp_avg, exp_avg_sq }
        optional tensors { max_exp_avg_sq }
    }
}

impl<B: Backend> Transform<B> for ScaleByAdam {
    fn name(&self) -> &'static str {
        if self.amsgrad {
            "scale_by_adam_amsgrad"
        } else {
            "scale_by_adam"
        }
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let zeros = || Fresh::zeros(shape, device);
        Ok(AdamState::init(
            [zeros(), zeros()],
            self.amsgrad.then(|| [zeros()]),
        ))
    }

    fn update(
        &self,
        _: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let s = AdamState::view(state);
        let t = s.step.saturating_add(1);
        *s.step = t;
        let (b1, b2) = (self.beta1, self.beta2);

        // torch's `exp_avg.lerp_(grad, 1 − β1)`: its formula switches at weight 0.5 (β1 ≤ 0.5)
        let m = lerp(s.exp_avg.clone(), g.clone(), 1.0 - b1);
        let v = s.exp_avg_sq.clone();
        let v = v
            .mul_scalar(b2 as f32)
            .add(g.clone().mul(g).mul_scalar((1.0 - b2) as f32));

        // AMSGrad (the state has `max_exp_avg_sq` exactly then).
        let v_used = match s.max_exp_avg_sq {
            Some(max_exp_avg_sq) => {
                let vmax = max_exp_avg_sq.clone().max_pair(v.clone());
                *max_exp_avg_sq = vmax.clone();
                vmax
            }
            None => v.clone(),
        };

        // Bias corrections in f64 (torch computes them as Python floats), inverted there and
        // rounded once: one division per element (m / denom) instead of torch's two — a
        // multiplication by the f32 reciprocal differs from torch's division by ≤ 1 ulp
        // (docs/algorithms.md, "Adam: reciprocal bias corrections").
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let inv_bc1 = 1.0 / (1.0 - b1.powi(ti));
        let inv_bc2_sqrt = 1.0 / (1.0 - b2.powi(ti)).sqrt();
        let denom = v_used
            .sqrt()
            .mul_scalar(inv_bc2_sqrt as f32)
            .add_scalar(self.eps as f32);
        let out = m.clone().div(denom).mul_scalar(inv_bc1 as f32);

        *s.exp_avg = m;
        *s.exp_avg_sq = v;
        out
    }
}

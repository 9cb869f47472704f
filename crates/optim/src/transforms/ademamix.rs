use burn::tensor::{Tensor, backend::Backend};

use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

/// AdEMAMix's direction (Pagliardini et al. 2024; pytorch_optimizer's form):
/// `m1 ← β1·m1 + (1−β1)·g`, `m2 ← β3_t·m2 + (1−β3_t)·g` (the slow EMA, not bias-corrected),
/// `v ← β2·v + (1−β2)·g²`, `u = (m1/(1−β1^t) + α_t·m2) / (√v/√(1−β2^t) + ε)`. With a warm-up
/// over `T` steps, `α_t = min(t·α/T, α)` and
/// `β3_t = min(exp(ln β1·ln β3 / ((1−t/T)·ln β3 + (t/T)·ln β1)), β3)`.
/// State: `exp_avg`, `exp_avg_slow`, `exp_avg_sq`, `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByAdemamix {
    /// β1 (fast EMA).
    pub beta1: f64,
    /// β2 (second moment).
    pub beta2: f64,
    /// β3 (slow EMA).
    pub beta3: f64,
    /// Weight α of the slow EMA.
    pub alpha: f64,
    /// ε.
    pub eps: f64,
    /// Warm-up length T of α and β3, if any.
    pub warmup: Option<f64>,
}

crate::state_view! {
    /// AdEMAMix's state (pytorch_optimizer's names).
    pub(crate) struct AdemamixState {
        counters { step }
        tensors { exp_avg, exp_avg_slow, exp_avg_sq }
    }
}

impl<B: Backend> Transform<B> for ScaleByAdemamix {
    fn name(&self) -> &'static str {
        "scale_by_ademamix"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let zeros = || Fresh::zeros(shape, device);
        Ok(AdemamixState::init([zeros(), zeros(), zeros()]))
    }

    fn update(
        &self,
        _: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let s = AdemamixState::view(state);
        let t = s.step.saturating_add(1);
        *s.step = t;
        let tf = t as f64;
        let (alpha, beta3) = match self.warmup {
            Some(total) => {
                let f = tf / total;
                let (l1, l3) = (self.beta1.ln(), self.beta3.ln());
                (
                    (tf * self.alpha / total).min(self.alpha),
                    ((l1 * l3) / ((1.0 - f) * l3 + f * l1))
                        .exp()
                        .min(self.beta3),
                )
            }
            None => (self.alpha, self.beta3),
        };
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let bc1 = 1.0 - self.beta1.powi(ti);
        let bc2_sqrt = (1.0 - self.beta2.powi(ti)).sqrt();
        let ema = |m: Tensor<B, 1>, x: Tensor<B, 1>, b: f64| {
            m.mul_scalar(b as f32).add(x.mul_scalar((1.0 - b) as f32))
        };
        let m1 = ema(s.exp_avg.clone(), g.clone(), self.beta1);
        let m2 = ema(s.exp_avg_slow.clone(), g.clone(), beta3);
        let v = ema(s.exp_avg_sq.clone(), g.clone().mul(g), self.beta2);
        let u = m1
            .clone()
            .div_scalar(bc1 as f32)
            .add(m2.clone().mul_scalar(alpha as f32))
            .div(
                v.clone()
                    .sqrt()
                    .div_scalar(bc2_sqrt as f32)
                    .add_scalar(self.eps as f32),
            );
        *s.exp_avg = m1;
        *s.exp_avg_slow = m2;
        *s.exp_avg_sq = v;
        u
    }
}

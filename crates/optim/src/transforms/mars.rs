use burn::tensor::{Tensor, backend::Backend};

use super::lerp;
use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

/// MARS-AdamW (Yuan et al. 2024, *MARS: Unleashing the Power of Variance Reduction for
/// Training Large Models*; pytorch_optimizer's foreach form). Tensors of rank ≥ 2 use the
/// variance-reduced gradient, vectors plain AdamW with their own lr, betas and decay:
///
/// ```text
/// rank ≥ 2: c = g + γ·β1/(1−β1)·(g − g_prev) ; c ← c / max(1, ‖c‖) ; (β, lr, λ) = (betas, lr, λ)
/// vectors:  c = g                                              ; (β, lr, λ) = (betas_1d, lr_1d, λ_1d)
/// m ← lerp(m, c, 1−β1) ; v ← β2·v + (1−β2)·c²
/// θ ← θ·(1 − lr·λ) − lr · m / ((√(v + 1e-15) + ε)/√(1−β2^t) · (1−β1^t)) ; g_prev ← g
/// ```
///
/// The two lrs make it self-scaling: it outputs the descent amount (chain ends with
/// `flip_sign`); `lr_1d` is taken as a multiple of the step's lr (`lr_1d_ratio`), so a schedule
/// scales both. State: `exp_avg`, `exp_avg_sq`, `last_grad`, counter `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByMars {
    /// (β1, β2) for tensors of rank ≥ 2.
    pub betas: (f64, f64),
    /// γ, the variance-reduction scale.
    pub gamma: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled decay for rank ≥ 2.
    pub weight_decay: f64,
    /// `lr_1d / lr`.
    pub lr_1d_ratio: f64,
    /// (β1, β2) for vectors.
    pub betas_1d: (f64, f64),
    /// Decoupled decay for vectors.
    pub weight_decay_1d: f64,
}

crate::state_view! {
    /// MARS' state (pytorch_optimizer's names).
    pub(crate) struct MarsState {
        counters { step }
        tensors { exp_avg, exp_avg_sq, last_grad }
    }
}

impl<B: Backend> Transform<B> for ScaleByMars {
    fn name(&self) -> &'static str {
        "scale_by_mars"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let zeros = || Fresh::zeros(shape, device);
        Ok(MarsState::init([zeros(), zeros(), zeros()]))
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let s = MarsState::view(state);
        let t = s.step.saturating_add(1);
        *s.step = t;
        let matrix = ctx.shape.len() >= 2;
        let ((b1, b2), lr, wd) = if matrix {
            (self.betas, ctx.lr, self.weight_decay)
        } else {
            (
                self.betas_1d,
                ctx.lr * self.lr_1d_ratio,
                self.weight_decay_1d,
            )
        };
        let c = if matrix {
            let prev = s.last_grad.clone();
            let c = g.clone().add(
                g.clone()
                    .sub(prev)
                    .mul_scalar((self.gamma * b1 / (1.0 - b1)) as f32),
            );
            let norm = c.clone().square().sum().sqrt().clamp_min(1.0);
            c.div(norm)
        } else {
            g.clone()
        };
        let m = lerp(s.exp_avg.clone(), c.clone(), 1.0 - b1);
        let v = s
            .exp_avg_sq
            .clone()
            .mul_scalar(b2 as f32)
            .add(c.clone().mul_scalar((1.0 - b2) as f32).mul(c));
        let ti = i32::try_from(t).unwrap_or(i32::MAX);
        let bc1 = 1.0 - b1.powi(ti);
        let bc2_sqrt = (1.0 - b2.powi(ti)).sqrt();
        let update = m.clone().div(
            v.clone()
                .add_scalar(1e-15)
                .sqrt()
                .add_scalar(self.eps as f32)
                .div_scalar(bc2_sqrt as f32)
                .mul_scalar(bc1 as f32),
        );
        *s.exp_avg = m;
        *s.exp_avg_sq = v;
        *s.last_grad = g;
        let mut descent = update.mul_scalar(lr as f32);
        if wd > 0.0 {
            descent = descent.add(ctx.param.clone().mul_scalar((lr * wd) as f32));
        }
        descent
    }
}

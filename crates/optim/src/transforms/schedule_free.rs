use burn::tensor::{Tensor, backend::Backend};

use super::lerp;
use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

/// Schedule-Free AdamW (Defazio et al. 2024, `schedulefree.AdamWScheduleFree`), train mode:
/// the parameter holds `y`; the state holds `z` (initialised to the parameter) and Adam's `v`.
///
/// ```text
/// lr_t = lr·min(1, (k+1)/warmup) ; lr_max = max(lr_max, lr_t)
/// c = (k+1)^r·lr_max^p / Σ weights                       (Polyak-style averaging weight)
/// v ← β2·v + (1−β2)·g² ; gn = g/(√(v/(1−β2^(k+1))) + ε) + λ·y
/// y ← lerp(y, z, c) + lr_t·(β1·(1−c) − 1)·gn ; z ← z − lr_t·gn
/// ```
///
/// It sets its own step, so it outputs the descent amount `y_old − y_new` (its chain ends with
/// `flip_sign`). Evaluation uses `x = lerp(y, z, 1 − 1/β1)` ([`Transform::eval_view`]), and
/// back ([`Transform::train_view`]). State: `z`, `exp_avg_sq`, counter `k`, scalars
/// `lr_max`, `weight_sum`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByScheduleFree {
    /// β1 (interpolation between the averaged and the base sequence).
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decay λ, applied at `y`.
    pub weight_decay: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Polynomial averaging power `r`.
    pub r: f64,
    /// Power of `lr_max` in the averaging weight.
    pub weight_lr_power: f64,
}

crate::state_view! {
    /// Schedule-Free AdamW's state (`schedulefree`'s names).
    pub(crate) struct ScheduleFreeState {
        counters { k }
        scalars { lr_max, weight_sum }
        tensors { z, exp_avg_sq }
    }
}

impl<B: Backend> Transform<B> for ScaleByScheduleFree {
    fn name(&self) -> &'static str {
        "scale_by_schedule_free"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let zeros = || Fresh::zeros(shape, device);
        // lr_max starts at −1, weight_sum at 0.
        Ok(ScheduleFreeState::init([-1.0, 0.0], [zeros(), zeros()]))
    }

    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let s = ScheduleFreeState::view(state);
        let k = *s.k;
        let y = ctx.param.clone();
        if k == 0 {
            *s.z = y.clone();
        }
        *s.k = k.saturating_add(1);
        let kp1 = k as f64 + 1.0;
        let sched = if k < self.warmup_steps {
            kp1 / self.warmup_steps as f64
        } else {
            1.0
        };
        let lr = ctx.lr * sched;
        let lr_max = s.lr_max.max(lr);
        let weight = kp1.powf(self.r) * lr_max.powf(self.weight_lr_power);
        let weight_sum = *s.weight_sum + weight;
        *s.lr_max = lr_max;
        *s.weight_sum = weight_sum;
        let c = if weight_sum > 0.0 {
            weight / weight_sum
        } else {
            0.0
        };
        let bc2 = 1.0 - self.beta2.powf(kp1);

        let v = s.exp_avg_sq.clone().mul_scalar(self.beta2 as f32).add(
            g.clone()
                .mul_scalar((1.0 - self.beta2) as f32)
                .mul(g.clone()),
        );
        let mut gn = g.div(
            v.clone()
                .div_scalar(bc2 as f32)
                .sqrt()
                .add_scalar(self.eps as f32),
        );
        if self.weight_decay != 0.0 {
            gn = gn.add(y.clone().mul_scalar(self.weight_decay as f32));
        }
        let z = s.z.clone();
        let y_new = lerp(y.clone(), z.clone(), c).add(
            gn.clone()
                .mul_scalar((lr * (self.beta1 * (1.0 - c) - 1.0)) as f32),
        );
        *s.z = z.sub(gn.mul_scalar(lr as f32));
        *s.exp_avg_sq = v;
        y.sub(y_new)
    }

    fn eval_view(&self, param: Tensor<B, 1>, state: &TransformState<B>) -> Option<Tensor<B, 1>> {
        let s = ScheduleFreeState::read(state);
        (*s.k > 0).then(|| lerp(param, s.z.clone(), 1.0 - 1.0 / self.beta1))
    }

    fn train_view(&self, param: Tensor<B, 1>, state: &TransformState<B>) -> Option<Tensor<B, 1>> {
        let s = ScheduleFreeState::read(state);
        (*s.k > 0).then(|| lerp(param, s.z.clone(), 1.0 - self.beta1))
    }
}

use burn::tensor::{Tensor, backend::Backend};

use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

/// Lion's sign of the interpolated momentum (Chen et al. 2023, `lion_pytorch`):
/// `u = sign(β1·m + (1−β1)·g)` (sign(0) = 0), then `m ← β2·m + (1−β2)·g` — the momentum is
/// updated *after*, with the other β. State: `exp_avg`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByLion {
    /// β1 (interpolation for the update).
    pub beta1: f64,
    /// β2 (momentum EMA).
    pub beta2: f64,
}

crate::state_view! {
    /// Lion's state (`lion_pytorch`'s name).
    pub(crate) struct LionState {
        tensors { exp_avg }
    }
}

impl<B: Backend> Transform<B> for ScaleByLion {
    fn name(&self) -> &'static str {
        "scale_by_lion"
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        Ok(LionState::init([Fresh::zeros(shape, device)]))
    }

    fn update(
        &self,
        _: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let s = LionState::view(state);
        let m = s.exp_avg.clone();
        let u = m
            .clone()
            .mul_scalar(self.beta1 as f32)
            .add(g.clone().mul_scalar((1.0 - self.beta1) as f32))
            .sign();
        *s.exp_avg = m
            .mul_scalar(self.beta2 as f32)
            .add(g.mul_scalar((1.0 - self.beta2) as f32));
        u
    }
}

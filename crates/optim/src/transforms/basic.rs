use burn::tensor::{Tensor, backend::Backend};

use crate::error::Result;
use crate::transform::{StepCtx, Transform, TransformState};

/// Negates the direction (torch's `maximize=True`: ascend instead of descend).
#[derive(Debug, Clone, Copy, Default)]
pub struct FlipSign;

/// See [`FlipSign`].
pub fn flip_sign() -> FlipSign {
    FlipSign
}

impl<B: Backend> Transform<B> for FlipSign {
    fn name(&self) -> &'static str {
        "flip_sign"
    }
    fn stateful(&self) -> bool {
        false
    }
    fn init(&self, _: &str, _: &[usize], _: &B::Device) -> Result<TransformState<B>> {
        Ok(TransformState::empty())
    }
    fn update(
        &self,
        _: &StepCtx<'_, B>,
        u: Tensor<B, 1>,
        _: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        u.neg()
    }
}

/// Adds `λ·θ` to the direction. Placed before a moment transform this is coupled L2 decay
/// (torch `Adam(weight_decay=λ)`); placed after it, and before
/// [`scale_by_learning_rate`], it is decoupled decay `θ ← θ − lr·λ·θ` (torch `AdamW`).
#[derive(Debug, Clone, Copy)]
pub struct AddDecayedWeights {
    /// The decay coefficient λ.
    pub weight_decay: f64,
}

/// See [`AddDecayedWeights`]. `weight_decay` must have been validated by the caller's config.
pub fn add_decayed_weights(weight_decay: f64) -> AddDecayedWeights {
    AddDecayedWeights { weight_decay }
}

impl<B: Backend> Transform<B> for AddDecayedWeights {
    fn name(&self) -> &'static str {
        "add_decayed_weights"
    }
    fn stateful(&self) -> bool {
        false
    }
    fn init(&self, _: &str, _: &[usize], _: &B::Device) -> Result<TransformState<B>> {
        Ok(TransformState::empty())
    }
    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        u: Tensor<B, 1>,
        _: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        u.add(ctx.param.clone().mul_scalar(self.weight_decay as f32))
    }
}

/// Multiplies by `-lr`: turns a direction into the update added to the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScaleByLearningRate;

/// See [`ScaleByLearningRate`].
pub fn scale_by_learning_rate() -> ScaleByLearningRate {
    ScaleByLearningRate
}

impl<B: Backend> Transform<B> for ScaleByLearningRate {
    fn name(&self) -> &'static str {
        "scale_by_learning_rate"
    }
    fn stateful(&self) -> bool {
        false
    }
    fn init(&self, _: &str, _: &[usize], _: &B::Device) -> Result<TransformState<B>> {
        Ok(TransformState::empty())
    }
    fn update(
        &self,
        ctx: &StepCtx<'_, B>,
        u: Tensor<B, 1>,
        _: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        // Scalars are rounded to f32 before use, as torch does.
        u.mul_scalar(-(ctx.lr as f32))
    }
}

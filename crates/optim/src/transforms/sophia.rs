use burn::tensor::{Tensor, backend::Backend};

use super::lerp;
use crate::error::Result;
use crate::state_view::Fresh;
use crate::transform::{StepCtx, Transform, TransformState};

/// Which Sophia: the curvature estimator decides how estimates enter the Hessian EMA, the
/// denominator and the clip (`../shared/optimizers.md` §4, reference README "SophiaH").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SophiaVariant {
    /// Sophia-G (official `SophiaG`): estimates are Gauss-Newton-Bartlett gradients `ĝ` of a
    /// sampled-label loss, `h ← β2·h + (1−β2)·ĝ⊙ĝ`; update `clamp(m / (ρ·bs·h + 1e-15), ±1)`.
    #[default]
    G,
    /// Sophia-H (`pytorch_optimizer.SophiaH`): estimates are Hessian-diagonal values (e.g.
    /// Hutchinson, may be negative), `h ← lerp(h, ĥ, 1−β2)`; update `clamp(m / max(h, ε), ±ρ)`.
    H,
}

/// Sophia's clipped, curvature-scaled momentum: `u = clamp(m / denom(h), −c, c)`, with
/// `m ← β1·m + (1−β1)·g` (no bias correction) and the Hessian EMA `h` fed separately through
/// [`Transform::update_curvature`] (every k steps). Before the first estimate `h = 0`, so every
/// coordinate is clipped: sign descent. State: `exp_avg`/`hessian` (G) or
/// `momentum`/`hessian_moment` (H), counter `step`.
///
/// The *win rate* (fraction of coordinates not clipped, |u| < c) of the last step is kept as
/// the one-element state tensor `win_rate`, for observers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleBySophia {
    /// Variant.
    pub variant: SophiaVariant,
    /// β1 (momentum).
    pub beta1: f64,
    /// β2 (Hessian EMA).
    pub beta2: f64,
    /// G: `ρ·bs` (the official code's `rho * bs`); H: the clip bound `ρ` (pytorch_optimizer `p`).
    pub rho: f64,
    /// G: added to the denominator (1e-15); H: the denominator's floor (1e-12).
    pub eps: f64,
}

crate::state_view! {
    /// Sophia's state: the official Sophia-G's names (naming 0), or pytorch_optimizer
    /// Sophia-H's `momentum`, `hessian_moment` (naming 1); `win_rate` has one element.
    pub(crate) struct SophiaState {
        counters { step }
        tensors {
            exp_avg = "exp_avg" | "momentum",
            hessian = "hessian" | "hessian_moment",
            win_rate,
        }
    }
}

impl ScaleBySophia {
    /// The variant's naming of [`SophiaState`].
    fn naming(&self) -> usize {
        match self.variant {
            SophiaVariant::G => 0,
            SophiaVariant::H => 1,
        }
    }
}

impl<B: Backend> Transform<B> for ScaleBySophia {
    fn name(&self) -> &'static str {
        match self.variant {
            SophiaVariant::G => "scale_by_sophia_g",
            SophiaVariant::H => "scale_by_sophia_h",
        }
    }

    fn init(&self, _: &str, shape: &[usize], device: &B::Device) -> Result<TransformState<B>> {
        let zeros = |shape| Fresh::zeros(shape, device);
        Ok(SophiaState::init_named(
            self.naming(),
            [zeros(shape), zeros(shape), zeros(&[])],
        ))
    }

    fn update_curvature(&self, estimate: Tensor<B, 1>, state: &mut TransformState<B>) -> bool {
        let s = SophiaState::view(state);
        let h = s.hessian.clone();
        *s.hessian = match self.variant {
            SophiaVariant::G => h.mul_scalar(self.beta2 as f32).add(
                estimate
                    .clone()
                    .mul_scalar((1.0 - self.beta2) as f32)
                    .mul(estimate),
            ),
            SophiaVariant::H => lerp(h, estimate, 1.0 - self.beta2),
        };
        true
    }

    fn update(
        &self,
        _: &StepCtx<'_, B>,
        g: Tensor<B, 1>,
        state: &mut TransformState<B>,
    ) -> Tensor<B, 1> {
        let s = SophiaState::view(state);
        *s.step = s.step.saturating_add(1);
        let n = g.dims()[0];
        let m = s.exp_avg.clone();
        let h = s.hessian.clone();
        let (m, denom, c) = match self.variant {
            SophiaVariant::G => (
                m.mul_scalar(self.beta1 as f32)
                    .add(g.mul_scalar((1.0 - self.beta1) as f32)),
                h.mul_scalar(self.rho as f32).add_scalar(self.eps as f32),
                1.0f32,
            ),
            SophiaVariant::H => (
                lerp(m, g, 1.0 - self.beta1),
                h.clamp_min(self.eps as f32),
                self.rho as f32,
            ),
        };
        let u = m.clone().div(denom).clamp(-c, c);
        if n > 0 {
            *s.win_rate = u.clone().abs().lower_elem(c).float().mean().reshape([1]);
        }
        *s.exp_avg = m;
        u
    }
}

//! Schedule-Free AdamW (Defazio et al. 2024, *The Road Less Scheduled*;
//! `schedulefree.AdamWScheduleFree`). No learning-rate schedule beyond a linear warm-up: the
//! iterate average replaces it. The parameter holds the training point `y`; evaluate at the
//! averaged `x` with [`ModuleOptimizer::eval`](crate::ModuleOptimizer::eval) (or
//! [`MomentOptimizer::eval_view`](crate::MomentOptimizer::eval_view)) and switch back with
//! `train` before the next step. Memory: 8 B/param (`z`, `exp_avg_sq`).
//!
//! | schedulefree | moment | default |
//! | --- | --- | --- |
//! | `lr` | the step's lr | 0.0025 |
//! | `betas` | `betas` | (0.9, 0.999) |
//! | `eps`, `weight_decay` | same (decay at `y`) | 1e-8, 0 |
//! | `warmup_steps`, `r`, `weight_lr_power` | same | 0, 0, 2 |

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::Result;
use crate::transforms::{ScaleByScheduleFree, flip_sign};
use crate::validate;

/// Schedule-Free AdamW's hyper-parameters; build the chain with [`ScheduleFreeConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleFreeConfig {
    /// (β1, β2): β1 in `(0, 1)` (the eval view divides by it), β2 in `[0, 1)`.
    pub betas: (f64, f64),
    /// ε > 0.
    pub eps: f64,
    /// Decay λ ≥ 0, applied at `y`.
    pub weight_decay: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Polynomial averaging power r ≥ 0.
    pub r: f64,
    /// Power of the largest lr in the averaging weight (≥ 0).
    pub weight_lr_power: f64,
}

impl Default for ScheduleFreeConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            r: 0.0,
            weight_lr_power: 2.0,
        }
    }
}

impl ScheduleFreeConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "schedulefree";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::positive(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        validate::positive(NAME, "eps", self.eps)?;
        validate::non_negative(NAME, "weight_decay", self.weight_decay)?;
        validate::non_negative(NAME, "r", self.r)?;
        validate::non_negative(NAME, "weight_lr_power", self.weight_lr_power)
    }

    /// The validated chain: `scale_by_schedule_free → flip_sign`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        Ok(Chain::new("schedulefree_adamw")
            .then(ScaleByScheduleFree {
                beta1: self.betas.0,
                beta2: self.betas.1,
                eps: self.eps,
                weight_decay: self.weight_decay,
                warmup_steps: self.warmup_steps,
                r: self.r,
                weight_lr_power: self.weight_lr_power,
            })
            .then(flip_sign()))
    }
}

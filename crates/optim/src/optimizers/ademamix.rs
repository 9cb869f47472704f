//! AdEMAMix (Pagliardini, Ablin & Grangier 2024, *The AdEMAMix Optimizer: Better, Faster,
//! Older*): Adam plus a slow, un-corrected EMA of the gradient weighted by α, with an optional
//! α/β3 warm-up. pytorch_optimizer semantics (its default decay is **L2**, `weight_decouple=False`).
//! Memory: 12 B/param.

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::{OptimError, Result};
use crate::optimizers::{Decay, decay_chain};
use crate::transforms::ScaleByAdemamix;
use crate::validate;

/// AdEMAMix's hyper-parameters; build the chain with [`AdemamixConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdemamixConfig {
    /// (β1, β2, β3), each in `[0, 1)`; β3 > 0 with a warm-up.
    pub betas: (f64, f64, f64),
    /// α ≥ 0, the slow EMA's weight.
    pub alpha: f64,
    /// Warm-up length T of α and β3 (pytorch_optimizer `t_alpha_beta3`), if any.
    pub warmup: Option<f64>,
    /// ε > 0.
    pub eps: f64,
    /// Weight decay (coupled L2 by default in pytorch_optimizer, or decoupled).
    pub decay: Decay,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for AdemamixConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999, 0.9999),
            alpha: 5.0,
            warmup: None,
            eps: 1e-8,
            decay: Decay::None,
            maximize: false,
        }
    }
}

impl AdemamixConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "ademamix";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        validate::unit_interval_open(NAME, "betas.2", self.betas.2)?;
        validate::non_negative(NAME, "alpha", self.alpha)?;
        validate::positive(NAME, "eps", self.eps)?;
        if let Some(t) = self.warmup {
            validate::positive(NAME, "t_alpha_beta3", t)?;
            if self.betas.0 == 0.0 || self.betas.2 == 0.0 {
                return Err(OptimError::invalid(
                    NAME,
                    "betas",
                    format!("{:?}", self.betas),
                    "β1 > 0 and β3 > 0 with a warm-up (the schedule takes their logarithms)",
                ));
            }
        }
        self.decay.validate(NAME)
    }

    /// The validated chain: `[flip_sign] → [L2] → scale_by_ademamix → [decoupled decay] →
    /// scale_by_learning_rate`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        Ok(decay_chain(
            "ademamix",
            self.maximize,
            self.decay,
            ScaleByAdemamix {
                beta1: self.betas.0,
                beta2: self.betas.1,
                beta3: self.betas.2,
                alpha: self.alpha,
                eps: self.eps,
                warmup: self.warmup,
            },
        ))
    }
}

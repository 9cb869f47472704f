//! CAME (Luo et al. 2023, *CAME: Confidence-guided Adaptive Memory Efficient Optimization*),
//! pytorch_optimizer semantics: Adafactor's factored second moment plus a factored confidence
//! statistic. Memory ≈ 4 B/param for matrices (momentum + four factored vectors), 8 for vectors.

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::Result;
use crate::optimizers::{Decay, decay_chain};
use crate::transforms::ScaleByCame;
use crate::validate;

/// CAME's hyper-parameters; build the chain with [`CameConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameConfig {
    /// (β1, β2, β3), each in `[0, 1)`.
    pub betas: (f64, f64, f64),
    /// (ε1, ε2) > 0: added to g² and to the residual.
    pub eps: (f64, f64),
    /// RMS clip threshold > 0.
    pub clip_threshold: f64,
    /// Weight decay (decoupled by default).
    pub decay: Decay,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for CameConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999, 0.9999),
            eps: (1e-30, 1e-16),
            clip_threshold: 1.0,
            decay: Decay::None,
            maximize: false,
        }
    }
}

impl CameConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "came";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        validate::unit_interval_open(NAME, "betas.2", self.betas.2)?;
        validate::positive(NAME, "eps1", self.eps.0)?;
        validate::positive(NAME, "eps2", self.eps.1)?;
        validate::positive(NAME, "clip_threshold", self.clip_threshold)?;
        self.decay.validate(NAME)
    }

    /// The validated chain: `[flip_sign] → [L2] → scale_by_came → [decoupled decay] →
    /// scale_by_learning_rate`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        Ok(decay_chain(
            "came",
            self.maximize,
            self.decay,
            ScaleByCame {
                beta1: self.betas.0,
                beta2: self.betas.1,
                beta3: self.betas.2,
                eps1: self.eps.0,
                eps2: self.eps.1,
                clip_threshold: self.clip_threshold,
            },
        ))
    }
}

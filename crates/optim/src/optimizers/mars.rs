//! MARS-AdamW (Yuan et al. 2024), pytorch_optimizer semantics (`mars_type='adamw'`,
//! `optimize_1d=False`): variance-reduced gradients for tensors of rank ≥ 2, AdamW with its own
//! lr, betas and decay for vectors — note the default `weight_decay_1d = 0.1`, so biases and
//! norms *are* decayed. Memory: 12 B/param (`exp_avg`, `exp_avg_sq`, `last_grad`).

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::Result;
use crate::transforms::{ScaleByMars, flip_sign};
use crate::validate;

/// MARS's hyper-parameters; build the chain with [`MarsConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarsConfig {
    /// (β1, β2) for rank ≥ 2, each in `[0, 1)`.
    pub betas: (f64, f64),
    /// γ ≥ 0, the variance-reduction scale.
    pub gamma: f64,
    /// ε > 0.
    pub eps: f64,
    /// Decoupled decay for rank ≥ 2.
    pub weight_decay: f64,
    /// Vectors' lr as a multiple of the step's lr (`lr_1d / lr`).
    pub lr_1d_ratio: f64,
    /// (β1, β2) for vectors.
    pub betas_1d: (f64, f64),
    /// Decoupled decay for vectors.
    pub weight_decay_1d: f64,
}

impl Default for MarsConfig {
    fn default() -> Self {
        Self {
            betas: (0.95, 0.99),
            gamma: 0.025,
            eps: 1e-8,
            weight_decay: 0.0,
            lr_1d_ratio: 1.0,
            betas_1d: (0.9, 0.95),
            weight_decay_1d: 0.1,
        }
    }
}

impl MarsConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "mars";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        validate::unit_interval_open(NAME, "betas_1d.0", self.betas_1d.0)?;
        validate::unit_interval_open(NAME, "betas_1d.1", self.betas_1d.1)?;
        validate::non_negative(NAME, "gamma", self.gamma)?;
        validate::positive(NAME, "eps", self.eps)?;
        validate::non_negative(NAME, "weight_decay", self.weight_decay)?;
        validate::non_negative(NAME, "weight_decay_1d", self.weight_decay_1d)?;
        validate::non_negative(NAME, "lr_1d", self.lr_1d_ratio)
    }

    /// The validated chain: `scale_by_mars → flip_sign`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        Ok(Chain::new("mars")
            .then(ScaleByMars {
                betas: self.betas,
                gamma: self.gamma,
                eps: self.eps,
                weight_decay: self.weight_decay,
                lr_1d_ratio: self.lr_1d_ratio,
                betas_1d: self.betas_1d,
                weight_decay_1d: self.weight_decay_1d,
            })
            .then(flip_sign()))
    }
}

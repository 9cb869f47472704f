//! Prodigy (Mishchenko & Defazio 2024), pytorch_optimizer semantics: Adam with a step size `d`
//! estimated from the whole parameter group, so the learning rate stays at 1 (a schedule still
//! multiplies it). The estimate needs every tensor of the group before any tensor steps — the
//! engine's group phase ([`Transform::group_sums`](crate::Transform::group_sums)). Memory:
//! 16 B/param (`p0`, `s`, `exp_avg`, `exp_avg_sq`) plus 64 B per group.

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::{OptimError, Result};
use crate::transforms::{ProdigyDecay, ScaleByProdigy, flip_sign};
use crate::validate;

/// Prodigy's hyper-parameters; build the chain with [`ProdigyConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProdigyConfig {
    /// (β1, β2), each in `[0, 1)`.
    pub betas: (f64, f64),
    /// β3 in `[0, 1)`; `None` = √β2.
    pub beta3: Option<f64>,
    /// Initial distance estimate d0 > 0.
    pub d0: f64,
    /// Multiplier of the estimate (> 0).
    pub d_coef: f64,
    /// Largest per-step growth factor of `d` (≥ 1; `f64::INFINITY` = unbounded, the default).
    pub growth_rate: f64,
    /// Decay (decoupled by default, λ = 0).
    pub decay: ProdigyDecay,
    /// Fold Adam's bias correction into the step size.
    pub bias_correction: bool,
    /// Use `d` instead of `d_lr` in the denominator sum (for lr warm-up).
    pub safeguard_warmup: bool,
    /// ε > 0 added to `√v` (scaled by d); `None` = Adam-atan2 update.
    pub eps: Option<f64>,
    /// Ascend instead.
    pub maximize: bool,
}

impl Default for ProdigyConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            beta3: None,
            d0: 1e-6,
            d_coef: 1.0,
            growth_rate: f64::INFINITY,
            decay: ProdigyDecay::Decoupled(0.0),
            bias_correction: false,
            safeguard_warmup: false,
            eps: Some(1e-8),
            maximize: false,
        }
    }
}

impl ProdigyConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "prodigy";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        if let Some(b3) = self.beta3 {
            validate::unit_interval_open(NAME, "beta3", b3)?;
        }
        validate::positive(NAME, "d0", self.d0)?;
        validate::positive(NAME, "d_coef", self.d_coef)?;
        if self.growth_rate.is_nan() || self.growth_rate < 1.0 {
            return Err(OptimError::invalid(
                NAME,
                "growth_rate",
                self.growth_rate,
                "a factor >= 1 (or +inf)",
            ));
        }
        let (ProdigyDecay::Decoupled(wd) | ProdigyDecay::Fixed(wd)) = self.decay;
        validate::non_negative(NAME, "weight_decay", wd)?;
        if let Some(eps) = self.eps {
            validate::positive(NAME, "eps", eps)?;
        }
        Ok(())
    }

    /// The validated chain: `scale_by_prodigy → flip_sign`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        Ok(Chain::new("prodigy")
            .then(ScaleByProdigy {
                betas: self.betas,
                beta3: self.beta3,
                d0: self.d0,
                d_coef: self.d_coef,
                growth_rate: self.growth_rate,
                decay: self.decay,
                bias_correction: self.bias_correction,
                safeguard_warmup: self.safeguard_warmup,
                eps: self.eps,
                maximize: self.maximize,
            })
            .then(flip_sign()))
    }
}

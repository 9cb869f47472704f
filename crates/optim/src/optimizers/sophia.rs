//! Sophia (Liu et al. 2023, *Sophia: A Scalable Stochastic Second-order Optimizer for Language
//! Model Pre-training*): clipped sign-momentum scaled by a diagonal Hessian EMA.
//!
//! | reference | moment | Sophia-G default | Sophia-H default |
//! | --- | --- | --- | --- |
//! | `lr` | the step's lr | 1e-4 | 6e-2 |
//! | `betas` | `betas` | (0.965, 0.99) | (0.96, 0.99) |
//! | `rho` (G) / `p` (H) | `rho` | 0.04 | 0.01 |
//! | `step(bs=…)` (G) | `bs` (tokens per step) | 5120 | — |
//! | `eps` | `eps` (G: added to `ρ·bs·h`; H: floor of `h`) | 1e-15 (hard-coded) | 1e-12 |
//! | `weight_decay` | `weight_decay` (decoupled; H: `Decay::Coupled` for `weight_decouple=False`) | 0.1 | 0 |
//! | `maximize` | `maximize` | false | false |
//! | `update_hessian()` / `step(hessian=…)` | [`MomentOptimizer::update_curvature`](crate::MomentOptimizer::update_curvature) | every k = 10 steps | every `update_period` = 10 |
//!
//! The estimators ([`GnbEstimator`](crate::curvature::GnbEstimator) for G,
//! [`Hutchinson`](crate::curvature::Hutchinson) for H) are in [`curvature`](crate::curvature).

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::{OptimError, Result};
use crate::optimizers::{Decay, decay_chain};
use crate::transforms::{ScaleBySophia, SophiaVariant};
use crate::validate;

/// Sophia's hyper-parameters; build the chain with [`SophiaConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SophiaConfig {
    /// G (Gauss-Newton-Bartlett estimates) or H (Hessian-diagonal estimates).
    pub variant: SophiaVariant,
    /// (β1, β2): momentum and Hessian EMA, each in `[0, 1)`.
    pub betas: (f64, f64),
    /// G: ρ (the denominator is `ρ·bs·h`); H: the clip bound of the update.
    pub rho: f64,
    /// G: tokens per step `bs` (official `step(bs=…)`); ignored by H.
    pub bs: f64,
    /// G: added to the denominator; H: floor of the Hessian moment.
    pub eps: f64,
    /// Weight decay: decoupled (`θ ← θ·(1 − lr·λ)` before the update) or coupled L2.
    pub decay: Decay,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for SophiaConfig {
    fn default() -> Self {
        Self::g()
    }
}

impl SophiaConfig {
    /// Official `SophiaG` defaults (lr 1e-4 is passed per step).
    pub fn g() -> Self {
        Self {
            variant: SophiaVariant::G,
            betas: (0.965, 0.99),
            rho: 0.04,
            bs: 5120.0,
            eps: 1e-15,
            decay: Decay::Decoupled(0.1),
            maximize: false,
        }
    }

    /// `pytorch_optimizer.SophiaH` defaults (lr 6e-2 is passed per step).
    pub fn h() -> Self {
        Self {
            variant: SophiaVariant::H,
            betas: (0.96, 0.99),
            rho: 0.01,
            bs: 1.0,
            eps: 1e-12,
            decay: Decay::None,
            maximize: false,
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "sophia";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        validate::positive(NAME, "rho", self.rho)?;
        validate::positive(NAME, "eps", self.eps)?;
        if self.variant == SophiaVariant::G {
            validate::positive(NAME, "bs", self.bs)?;
            if !((self.rho * self.bs) as f32).is_finite() {
                return Err(OptimError::invalid(
                    NAME,
                    "bs",
                    self.bs,
                    "a value with rho·bs finite in f32",
                ));
            }
        }
        self.decay.validate(NAME)
    }

    /// The validated chain: `[flip_sign] → [L2] → scale_by_sophia → [decoupled decay] →
    /// scale_by_learning_rate`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        let rho = match self.variant {
            SophiaVariant::G => self.rho * self.bs,
            SophiaVariant::H => self.rho,
        };
        let label = match self.variant {
            SophiaVariant::G => "sophia_g",
            SophiaVariant::H => "sophia_h",
        };
        Ok(decay_chain(
            label,
            self.maximize,
            self.decay,
            ScaleBySophia {
                variant: self.variant,
                beta1: self.betas.0,
                beta2: self.betas.1,
                rho,
                eps: self.eps,
            },
        ))
    }
}

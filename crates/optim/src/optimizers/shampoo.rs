//! Shampoo: Kronecker-factored preconditioning, one implementation ([`ScaleByShampoo`]) whose
//! options cover the original form (Gupta, Koren & Singer 2018; [`ShampooConfig::gupta`] =
//! `pytorch_optimizer.Shampoo`) and the blocked, grafted form (Anil et al. 2020;
//! [`ShampooConfig::scalable`] = `pytorch_optimizer.ScalableShampoo`).
//!
//! | | `gupta()` | `scalable()` |
//! | --- | --- | --- |
//! | statistics | sum from `matrix_eps·I` (1e-6) | EMA β2 = 0.999 from `matrix_eps·I` |
//! | shapes | every dim of the tensor, vectors by a full matrix | merged small dims, blocks of `block_size` (512) |
//! | roots | `−1/(2·ndim)` every `precondition_frequency` (1), zero before the first | `−1/(2·rank)` every 1000 steps, identity before the first |
//! | grafting | none | SGD (pytorch_optimizer's default; its cases use AdaGrad, `graft_type=2`); also RMSProp, Adam (bias-corrected, Meta's), SQRT_N |
//! | momentum | lerp toward the previous update (μ = 0); with `maximize` the first lerp goes toward the un-negated gradient (reference quirk) | heavy ball β1 = 0.9, Nesterov, graft direction before step 25 |
//! | decay | L2 after the momentum lerp | L2 after the graft rescale, or decoupled |
//!
//! Roots use the coupled Newton iteration in tensor ops (f64 by default; `RootPrecision::F32`
//! for backends without f64); a failed root keeps the previous one and is counted
//! (`root_failures`).

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::{OptimError, Result};
use crate::linalg::RootConfig;
use crate::optimizers::Decay;
use crate::transforms::{
    Graft, InitialRoot, ScaleByShampoo, ShampooMomentum, Statistics, add_decayed_weights,
    flip_sign, scale_by_learning_rate,
};
use crate::validate;

/// Shampoo's hyper-parameters; build the chain with [`ShampooConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShampooConfig {
    /// The transform's options.
    pub shampoo: ScaleByShampoo,
    /// Decoupled decay (applied outside the preconditioner); coupled L2 is `shampoo.l2`.
    pub decoupled_weight_decay: f64,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for ShampooConfig {
    fn default() -> Self {
        Self::gupta()
    }
}

impl ShampooConfig {
    /// `pytorch_optimizer.Shampoo` defaults.
    pub fn gupta() -> Self {
        Self {
            shampoo: ScaleByShampoo {
                statistics: Statistics::Sum,
                matrix_eps: 1e-6,
                exponent_override: None,
                precondition_frequency: 1,
                statistics_frequency: 1,
                start_preconditioning_step: 1,
                block_size: None,
                merge_small_dims: false,
                precondition_1d: true,
                max_preconditioned_dim: None,
                initial_root: InitialRoot::Zero,
                graft: Graft::None,
                graft_eps: 1e-10,
                momentum: ShampooMomentum::LerpPrevious(0.0),
                l2: 0.0,
                raw_initial_buffer: true,
                root: RootConfig::default(),
            },
            decoupled_weight_decay: 0.0,
            maximize: false,
        }
    }

    /// `pytorch_optimizer.ScalableShampoo` defaults.
    pub fn scalable() -> Self {
        Self {
            shampoo: ScaleByShampoo {
                statistics: Statistics::Ema(0.999),
                matrix_eps: 1e-6,
                exponent_override: None,
                precondition_frequency: 1000,
                statistics_frequency: 1,
                start_preconditioning_step: 25,
                block_size: Some(512),
                merge_small_dims: true,
                precondition_1d: false,
                max_preconditioned_dim: Some(8192),
                initial_root: InitialRoot::Identity,
                graft: Graft::Sgd,
                graft_eps: 1e-10,
                momentum: ShampooMomentum::Heavy {
                    beta1: 0.9,
                    nesterov: true,
                    moving_average: false,
                },
                l2: 0.0,
                raw_initial_buffer: false,
                root: RootConfig::default(),
            },
            decoupled_weight_decay: 0.0,
            maximize: false,
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "shampoo";
        let s = &self.shampoo;
        if let Statistics::Ema(b) = s.statistics {
            validate::unit_interval_open(NAME, "beta2", b)?;
        }
        validate::positive(NAME, "matrix_eps", s.matrix_eps)?;
        if let Some(e) = s.exponent_override
            && !(1..=64).contains(&e)
        {
            return Err(OptimError::invalid(
                NAME,
                "exponent_override",
                e,
                "an exponent in 1..=64",
            ));
        }
        if s.precondition_frequency == 0 || s.statistics_frequency == 0 {
            return Err(OptimError::invalid(
                NAME,
                "precondition_frequency",
                0,
                "frequencies >= 1",
            ));
        }
        if s.block_size == Some(0) {
            return Err(OptimError::invalid(
                NAME,
                "block_size",
                0,
                "a block size >= 1",
            ));
        }
        validate::positive(NAME, "graft_eps", s.graft_eps)?;
        if let Graft::RmsProp(b) | Graft::Adam(b) = s.graft {
            validate::unit_interval_open(NAME, "graft.beta2", b)?;
        }
        match s.momentum {
            ShampooMomentum::LerpPrevious(m) => validate::unit_interval_open(NAME, "momentum", m)?,
            ShampooMomentum::Heavy { beta1, .. } => {
                validate::unit_interval_open(NAME, "beta1", beta1)?
            }
        }
        validate::non_negative(NAME, "weight_decay", s.l2)?;
        validate::non_negative(NAME, "weight_decay", self.decoupled_weight_decay)?;
        if s.root.tolerance.is_nan() || s.root.tolerance <= 0.0 || s.root.max_iterations == 0 {
            return Err(OptimError::invalid(
                NAME,
                "root",
                format!("{:?}", s.root),
                "tolerance > 0 and at least one iteration",
            ));
        }
        Ok(())
    }

    /// The same config with coupled (L2) or decoupled decay.
    pub fn with_decay(mut self, decay: Decay) -> Self {
        match decay {
            Decay::None => {
                self.shampoo.l2 = 0.0;
                self.decoupled_weight_decay = 0.0;
            }
            Decay::Coupled(l) => self.shampoo.l2 = l,
            Decay::Decoupled(l) => self.decoupled_weight_decay = l,
        }
        self
    }

    /// The validated chain: `[flip_sign] → scale_by_shampoo → [decoupled decay] →
    /// scale_by_learning_rate`. `shampoo.raw_initial_buffer` is kept only with `maximize` (it
    /// describes a buffer that saw the gradient before the flip).
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        let mut shampoo = self.shampoo;
        shampoo.raw_initial_buffer &= self.maximize;
        Ok(Chain::new("shampoo")
            .then_if(self.maximize, flip_sign())
            .then(shampoo)
            .then_if(
                self.decoupled_weight_decay > 0.0,
                add_decayed_weights(self.decoupled_weight_decay),
            )
            .then(scale_by_learning_rate()))
    }
}

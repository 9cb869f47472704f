//! Adam and AdamW, torch semantics.
//!
//! | torch (`torch.optim.Adam` / `AdamW`) | moment | default (Adam / AdamW) |
//! | --- | --- | --- |
//! | `lr` | the `lr` passed to each step (scheduler) | 1e-3 |
//! | `betas=(β1, β2)` | `betas` | (0.9, 0.999) |
//! | `eps` | `eps` (added after bias correction) | 1e-8 |
//! | `weight_decay` | `weight_decay` (Adam: coupled L2, AdamW: decoupled) | 0 / 1e-2 |
//! | `amsgrad` | `amsgrad` (max of the uncorrected `v`) | false |
//! | `maximize` | `maximize` | false |
//! | `foreach`, `fused`, `capturable`, `differentiable` | no numeric effect; not needed | — |
//!
//! Chains: `[flip_sign] → [add_decayed_weights (L2)] → scale_by_adam → [add_decayed_weights
//! (decoupled)] → scale_by_learning_rate`. Adam and AdamW differ only in where the decay sits.

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::Result;
use crate::transform::Transform;
use crate::transforms::{add_decayed_weights, flip_sign, scale_by_adam, scale_by_learning_rate};
use crate::validate;

/// How weight decay enters an optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decay {
    /// No decay.
    None,
    /// L2 regularisation through the gradient: `g ← g + λθ` before the moments (torch `Adam`).
    Coupled(f64),
    /// Decoupled decay `θ ← θ − lr·λ·θ`, outside the moments (torch `AdamW`, Loshchilov & Hutter).
    Decoupled(f64),
}

impl Decay {
    /// Check λ ≥ 0 (finite in f32); the error names `weight_decay` of `optimizer`.
    pub(crate) fn validate(self, optimizer: &'static str) -> Result<()> {
        match self {
            Decay::None => Ok(()),
            Decay::Coupled(l) | Decay::Decoupled(l) => {
                validate::non_negative(optimizer, "weight_decay", l)
            }
        }
    }
}

/// Adam with coupled (L2) weight decay: `torch.optim.Adam`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// (β1, β2), each in `[0, 1)`.
    pub betas: (f64, f64),
    /// ε > 0, added to `√v̂`.
    pub eps: f64,
    /// L2 coefficient λ ≥ 0 (`g ← g + λθ`).
    pub weight_decay: f64,
    /// AMSGrad.
    pub amsgrad: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
        }
    }
}

/// AdamW with decoupled weight decay: `torch.optim.AdamW`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// (β1, β2), each in `[0, 1)`.
    pub betas: (f64, f64),
    /// ε > 0, added to `√v̂`.
    pub eps: f64,
    /// Decoupled decay λ ≥ 0 (`θ ← θ − lr·λ·θ`).
    pub weight_decay: f64,
    /// AMSGrad.
    pub amsgrad: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
        }
    }
}

impl AdamConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_common("adam", self.betas, self.eps)?;
        Decay::Coupled(self.weight_decay).validate("adam")
    }

    /// The validated chain.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        adam_chain(
            "adam",
            self.betas,
            self.eps,
            Decay::Coupled(self.weight_decay),
            self.amsgrad,
            self.maximize,
        )
    }
}

impl AdamWConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_common("adamw", self.betas, self.eps)?;
        Decay::Decoupled(self.weight_decay).validate("adamw")
    }

    /// The same config with another decay (e.g. 0 for a no-decay parameter group).
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The validated chain.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        adam_chain(
            "adamw",
            self.betas,
            self.eps,
            Decay::Decoupled(self.weight_decay),
            self.amsgrad,
            self.maximize,
        )
    }
}

fn validate_common(optimizer: &'static str, betas: (f64, f64), eps: f64) -> Result<()> {
    validate::unit_interval_open(optimizer, "betas.0", betas.0)?;
    validate::unit_interval_open(optimizer, "betas.1", betas.1)?;
    validate::positive(optimizer, "eps", eps)
}

/// The one Adam chain both configs build; `decay` decides Adam vs AdamW.
pub fn adam_chain<B: Backend>(
    label: &str,
    betas: (f64, f64),
    eps: f64,
    decay: Decay,
    amsgrad: bool,
    maximize: bool,
) -> Result<Chain<B>> {
    validate_common("adam", betas, eps)?;
    decay.validate("adam")?;
    Ok(decay_chain(
        label,
        maximize,
        decay,
        scale_by_adam(betas.0, betas.1, eps, amsgrad),
    ))
}

/// The chain shape every moment-style optimizer shares: `[flip_sign] → [L2: add_decayed_weights]
/// → core → [decoupled: add_decayed_weights] → scale_by_learning_rate`. Where the decay sits is
/// the only difference between, e.g., Adam and AdamW. `decay` must have been validated.
pub(crate) fn decay_chain<B: Backend>(
    label: &str,
    maximize: bool,
    decay: Decay,
    core: impl Transform<B> + 'static,
) -> Chain<B> {
    let (coupled, decoupled) = match decay {
        Decay::None => (0.0, 0.0),
        Decay::Coupled(l) => (l, 0.0),
        Decay::Decoupled(l) => (0.0, l),
    };
    Chain::new(label)
        .then_if(maximize, flip_sign())
        .then_if(coupled > 0.0, add_decayed_weights(coupled))
        .then(core)
        .then_if(decoupled > 0.0, add_decayed_weights(decoupled))
        .then(scale_by_learning_rate())
}

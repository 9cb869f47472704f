//! Adafactor (Shazeer & Stern 2018) in the two conventions users meet: HF `transformers`
//! ([`AdafactorConfig::transformers`]) and `torch.optim.Adafactor` ([`AdafactorConfig::torch`]),
//! one implementation ([`ScaleByAdafactor`]) with the convention as a mode.
//!
//! | reference argument | moment field | transformers default | torch default |
//! | --- | --- | --- | --- |
//! | `lr` | the step's lr: with `relative_step` a multiplier of the relative step (1.0 = HF's `lr=None`); otherwise the step size. torch: the cap of the relative step | `None` (→ 1.0) | 1e-2 |
//! | `eps=(ε1, ε2)` | `eps1`, `eps2` | (1e-30, 1e-3) | (f32 eps = 1.19e-7, 1e-3) |
//! | `clip_threshold` / `d` | `clip_threshold` | 1.0 | 1.0 |
//! | `decay_rate` / `beta2_decay` | `decay_rate` | −0.8 | −0.8 |
//! | `beta1` | `beta1` | `None` | — |
//! | `weight_decay` | `weight_decay` | 0 | 0 |
//! | `scale_parameter`, `relative_step`, `warmup_init` | same | true, true, false | always on, always on, — |
//! | `maximize` | `maximize` | — | false |
//!
//! Memory: a rank ≥ 2 tensor of shape `[…, m, n]` keeps `…·(m + n)` floats of second-moment
//! state (plus `…·m·n` with β1); vectors keep a full second moment.
//!
//! Unlike HF, a learning-rate schedule still acts in relative-step mode (as a multiplier),
//! so an external scheduler is never silently ignored; pass 1.0 to reproduce HF exactly.

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::{OptimError, Result};
use crate::transforms::{AdafactorConvention, ScaleByAdafactor, flip_sign};
use crate::validate;

/// Adafactor's hyper-parameters; build the chain with [`AdafactorConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdafactorConfig {
    /// Which reference's conventions to follow.
    pub convention: AdafactorConvention,
    /// ε1 > 0: added to `g²` (transformers) or the clamp of the variance (`ε1²`) and of the row
    /// normaliser (torch).
    pub eps1: f64,
    /// ε2 ≥ 0: floor of the parameter RMS used to scale the step.
    pub eps2: f64,
    /// Update RMS threshold > 0 (HF `clip_threshold`, torch `d`).
    pub clip_threshold: f64,
    /// `β2_t = 1 − t^decay_rate`, `decay_rate ≤ 0`.
    pub decay_rate: f64,
    /// First-moment coefficient in `[0, 1)` (transformers convention only).
    pub beta1: Option<f64>,
    /// Decoupled weight decay ≥ 0.
    pub weight_decay: f64,
    /// Scale the step by `max(ε2, RMS(θ))` (always on in the torch convention).
    pub scale_parameter: bool,
    /// Relative step size (always on in the torch convention).
    pub relative_step: bool,
    /// Warm the relative step up linearly (`1e-6·t`); needs `relative_step` (transformers).
    pub warmup_init: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for AdafactorConfig {
    fn default() -> Self {
        Self::transformers()
    }
}

impl AdafactorConfig {
    /// HF `transformers.optimization.Adafactor` defaults (relative step; pass lr 1.0).
    pub fn transformers() -> Self {
        Self {
            convention: AdafactorConvention::Transformers,
            eps1: 1e-30,
            eps2: 1e-3,
            clip_threshold: 1.0,
            decay_rate: -0.8,
            beta1: None,
            weight_decay: 0.0,
            scale_parameter: true,
            relative_step: true,
            warmup_init: false,
            maximize: false,
        }
    }

    /// `torch.optim.Adafactor` defaults (pass lr 1e-2, the cap of the relative step).
    pub fn torch() -> Self {
        Self {
            convention: AdafactorConvention::Torch,
            eps1: f64::from(f32::EPSILON),
            ..Self::transformers()
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "adafactor";
        validate::positive(NAME, "eps1", self.eps1)?;
        validate::non_negative(NAME, "eps2", self.eps2)?;
        validate::positive(NAME, "clip_threshold", self.clip_threshold)?;
        if !(self.decay_rate <= 0.0 && self.decay_rate.is_finite()) {
            return Err(OptimError::invalid(
                NAME,
                "decay_rate",
                self.decay_rate,
                "a finite value <= 0 (β2_t = 1 − t^decay_rate)",
            ));
        }
        if let Some(b1) = self.beta1 {
            validate::unit_interval_open(NAME, "beta1", b1)?;
        }
        validate::non_negative(NAME, "weight_decay", self.weight_decay)?;
        if self.warmup_init && !self.relative_step {
            return Err(OptimError::invalid(
                NAME,
                "warmup_init",
                true,
                "false unless relative_step is on (warm-up applies to the relative step)",
            ));
        }
        if self.convention == AdafactorConvention::Torch {
            if (self.eps1 * self.eps1) as f32 <= 0.0 {
                return Err(OptimError::invalid(
                    NAME,
                    "eps1",
                    self.eps1,
                    "a value whose square is > 0 in f32 (>= 1.1e-19): the torch convention clamps the variance at eps1²",
                ));
            }
            let torch_fixed: [(&'static str, bool, bool); 4] = [
                ("relative_step", self.relative_step, true),
                ("scale_parameter", self.scale_parameter, true),
                ("warmup_init", self.warmup_init, false),
                ("beta1", self.beta1.is_some(), false),
            ];
            for (field, value, required) in torch_fixed {
                if value != required {
                    return Err(OptimError::InvalidConfig {
                        optimizer: NAME,
                        field,
                        value: format!("{value}"),
                        allowed: "its fixed value in the torch convention (relative step and parameter scaling always on; no warm-up, no first moment): use the transformers convention",
                    });
                }
            }
        }
        Ok(())
    }

    /// The transform this config describes (validated).
    pub fn transform(&self) -> Result<ScaleByAdafactor> {
        self.validate()?;
        Ok(ScaleByAdafactor {
            convention: self.convention,
            eps1: self.eps1,
            eps2: self.eps2,
            clip_threshold: self.clip_threshold,
            decay_rate: self.decay_rate,
            beta1: self.beta1,
            weight_decay: self.weight_decay,
            scale_parameter: self.scale_parameter,
            relative_step: self.relative_step,
            warmup_init: self.warmup_init,
        })
    }

    /// The validated chain: `[flip_sign] → scale_by_adafactor → flip_sign`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        let t = self.transform()?;
        Ok(Chain::new("adafactor")
            .then_if(self.maximize, flip_sign())
            .then(t)
            .then(flip_sign()))
    }
}

//! LAMB (You et al. 2020, *Large Batch Optimization for Deep Learning: Training BERT in 76
//! minutes*): Adam's direction rescaled per tensor by the trust ratio `‖θ‖ / ‖u‖`.
//!
//! One implementation, the variants users meet as options (`../shared/optimizers.md` §5):
//!
//! | | [`LambConfig::pytorch_optimizer`] (default) | [`LambConfig::apex`] (NVIDIA FusedLAMB) | [`LambConfig::cybertronai`] |
//! | --- | --- | --- | --- |
//! | bias correction | `lr/(1−β1^t)` on the step, outside the ratio ([`LambBiasCorrection::StepFirstMoment`]) | both moments ([`LambBiasCorrection::Moments`]) | none |
//! | weight decay | decoupled, before the norms ([`LambDecay::DecoupledBeforeNorm`]); `weight_decouple=False`: inside `u` | inside `u` ([`LambDecay::InUpdate`]) | inside `u` |
//! | weight-norm clamp | 10 | none | 10 |
//! | ε in the ratio | the direction's `eps` (1e-6) | 0 | 0 |
//! | ratio applied | always | only when λ > 0 ([`TrustRatio::WhenDecayed`]) | always |
//!
//! Zero norms give a ratio of 1, never NaN. To exclude 1-D parameters (biases, norms) from
//! adaptation and decay, as BERT does, give them their own group with
//! `trust_ratio: TrustRatio::Never` and no decay.

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::Result;
use crate::transforms::{
    ScaleByLambMoments, ScaleByTrustRatio, add_decayed_weights, flip_sign, scale_by_learning_rate,
};
use crate::validate;

/// Where LAMB's bias correction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LambBiasCorrection {
    /// None (cybertronai, the paper's v3).
    None,
    /// Both moments, Adam style (apex, the paper's v5).
    Moments,
    /// pytorch_optimizer's quirk: the step size is `lr/(1−β1^t)`, applied after the trust ratio
    /// (the ratio itself sees the uncorrected direction), no second-moment correction.
    StepFirstMoment,
}

/// How weight decay enters LAMB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LambDecay {
    /// `θ ← θ·(1 − lr·λ)` before the norms (pytorch_optimizer `weight_decouple=True`).
    DecoupledBeforeNorm(f64),
    /// `u ← r + λθ`, inside the trust-ratio direction (apex `adam_w_mode`, cybertronai, and
    /// pytorch_optimizer `weight_decouple=False`, which adds `λθ` to the direction, not to the
    /// gradient).
    InUpdate(f64),
    /// L2: `g ← g + λθ` before the moments (none of the matched references does this).
    L2(f64),
}

impl LambDecay {
    fn lambda(self) -> f64 {
        match self {
            LambDecay::DecoupledBeforeNorm(l) | LambDecay::InUpdate(l) | LambDecay::L2(l) => l,
        }
    }
}

/// When the trust ratio is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustRatio {
    /// Always (the paper).
    Always,
    /// Never: plain Adam(W) with LAMB's moments (pytorch_optimizer/cybertronai `adam=True`; a
    /// group for 1-D parameters).
    Never,
    /// Only when the decay is non-zero (apex without `use_nvlamb`).
    WhenDecayed,
}

/// LAMB's hyper-parameters; build the chain with [`LambConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambConfig {
    /// (β1, β2), each in `[0, 1)`.
    pub betas: (f64, f64),
    /// ε > 0 of the Adam direction.
    pub eps: f64,
    /// Weight decay and where it enters.
    pub decay: LambDecay,
    /// Bias correction.
    pub bias_correction: LambBiasCorrection,
    /// Clamp of the weight norm in the ratio.
    pub max_weight_norm: Option<f64>,
    /// ε added to the update norm in the ratio (≥ 0). pytorch_optimizer uses its one `eps`
    /// for both this and the direction's denominator: change both together.
    pub trust_eps: f64,
    /// When the ratio is applied.
    pub trust_ratio: TrustRatio,
    /// `m ← β1·m + (1−β1)·g` (true) or `β1·m + g`.
    pub grad_averaging: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for LambConfig {
    fn default() -> Self {
        Self::pytorch_optimizer()
    }
}

impl LambConfig {
    /// `pytorch_optimizer.Lamb` defaults.
    pub fn pytorch_optimizer() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-6,
            decay: LambDecay::DecoupledBeforeNorm(0.0),
            bias_correction: LambBiasCorrection::StepFirstMoment,
            max_weight_norm: Some(10.0),
            trust_eps: 1e-6,
            trust_ratio: TrustRatio::Always,
            grad_averaging: true,
            maximize: false,
        }
    }

    /// NVIDIA apex `FusedLAMB` defaults (its global-norm clipping is the engine's
    /// `clip_grad_norm(1.0)`).
    pub fn apex() -> Self {
        Self {
            decay: LambDecay::InUpdate(0.01),
            bias_correction: LambBiasCorrection::Moments,
            max_weight_norm: None,
            trust_eps: 0.0,
            trust_ratio: TrustRatio::WhenDecayed,
            ..Self::pytorch_optimizer()
        }
    }

    /// cybertronai `pytorch-lamb` defaults.
    pub fn cybertronai() -> Self {
        Self {
            decay: LambDecay::InUpdate(0.0),
            bias_correction: LambBiasCorrection::None,
            trust_eps: 0.0,
            ..Self::pytorch_optimizer()
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "lamb";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        validate::positive(NAME, "eps", self.eps)?;
        validate::non_negative(NAME, "weight_decay", self.decay.lambda())?;
        if let Some(c) = self.max_weight_norm {
            validate::positive(NAME, "max_weight_norm", c)?;
        }
        validate::non_negative(NAME, "trust_eps", self.trust_eps)
    }

    /// The validated chain: `[flip_sign] → [L2] → scale_by_lamb_moments → [decay in u] →
    /// [scale_by_trust_ratio] → [decoupled decay] → scale_by_learning_rate`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        let l = self.decay.lambda();
        let mut chain = Chain::new("lamb").then_if(self.maximize, flip_sign());
        if let LambDecay::L2(l) = self.decay {
            chain = chain.then_if(l > 0.0, add_decayed_weights(l));
        }
        chain = chain.then(ScaleByLambMoments {
            beta1: self.betas.0,
            beta2: self.betas.1,
            eps: self.eps,
            bias_correction: self.bias_correction == LambBiasCorrection::Moments,
            grad_averaging: self.grad_averaging,
        });
        if let LambDecay::InUpdate(l) = self.decay {
            chain = chain.then_if(l > 0.0, add_decayed_weights(l));
        }
        let adapt = match self.trust_ratio {
            TrustRatio::Always => true,
            TrustRatio::Never => false,
            TrustRatio::WhenDecayed => l > 0.0,
        };
        let decoupled = match self.decay {
            LambDecay::DecoupledBeforeNorm(l) => l,
            _ => 0.0,
        };
        let step_bc =
            (self.bias_correction == LambBiasCorrection::StepFirstMoment).then_some(self.betas.0);
        if adapt || step_bc.is_some() {
            chain = chain.then(ScaleByTrustRatio {
                max_weight_norm: self.max_weight_norm,
                eps: self.trust_eps,
                decay_before_norm: decoupled,
                step_bias_correction: step_bc,
                adapt,
            });
        }
        chain = chain.then_if(decoupled > 0.0, add_decayed_weights(decoupled));
        Ok(chain.then(scale_by_learning_rate()))
    }
}

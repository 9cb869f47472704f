//! Muon (Jordan et al. 2024; `torch.optim.Muon`, PyTorch ≥ 2.9) with the standard routing:
//! Muon for 2-D hidden weights, AdamW for embeddings, the LM head, norms and biases
//! ([`MuonConfig::groups`]). A 1-D parameter can never reach Muon: its transform rejects any
//! rank but 2 with a typed error.
//!
//! | torch.optim.Muon | moment | default |
//! | --- | --- | --- |
//! | `lr` | the step's lr | 1e-3 |
//! | `weight_decay` | `weight_decay` (`θ·(1 − lr·λ)`, the unadjusted lr) | 0.1 |
//! | `momentum`, `nesterov` | same | 0.95, true |
//! | `ns_coefficients`, `ns_steps`, `eps` | same | (3.4445, −4.775, 2.0315), 5, 1e-7 |
//! | bf16 Newton–Schulz | `precision` ([`NsPrecision`]) | moment: `F32`; the port: `Bf16` (exact) |
//! | `adjust_lr_fn` | `scale` ([`MuonScale`]) | `Original` |

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::{OptimError, Result};
use crate::optimizer::ParamGroup;
use crate::optimizers::{AdamWConfig, Decay, decay_chain};
use crate::select::Selector;
use crate::transforms::{MuonScale, NsPrecision, ScaleByMuon};
use crate::validate;

/// Muon's hyper-parameters; build the chain with [`MuonConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuonConfig {
    /// Momentum μ in `[0, 1)`.
    pub momentum: f64,
    /// Nesterov look-ahead.
    pub nesterov: bool,
    /// Newton–Schulz coefficients (a, b, c).
    pub ns_coefficients: (f64, f64, f64),
    /// Newton–Schulz iterations (≥ 1).
    pub ns_steps: usize,
    /// Floor of the norm in the normalisation (> 0).
    pub eps: f64,
    /// Arithmetic of the iteration.
    pub precision: NsPrecision,
    /// Shape scaling of the update.
    pub scale: MuonScale,
    /// Decoupled decay λ ≥ 0.
    pub weight_decay: f64,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for MuonConfig {
    /// `torch.optim.Muon` defaults, with f32 Newton–Schulz.
    fn default() -> Self {
        Self {
            momentum: 0.95,
            nesterov: true,
            ns_coefficients: (3.4445, -4.775, 2.0315),
            ns_steps: 5,
            eps: 1e-7,
            precision: NsPrecision::F32,
            scale: MuonScale::Original,
            weight_decay: 0.1,
            maximize: false,
        }
    }
}

impl MuonConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate::unit_interval_open("muon", "momentum", self.momentum)?;
        validate::positive("muon", "eps", self.eps)?;
        validate::non_negative("muon", "weight_decay", self.weight_decay)?;
        let (a, b, c) = self.ns_coefficients;
        if !(a.is_finite() && b.is_finite() && c.is_finite()) {
            return Err(OptimError::invalid(
                "muon",
                "ns_coefficients",
                format!("{:?}", self.ns_coefficients),
                "three finite numbers",
            ));
        }
        if self.ns_steps == 0 {
            return Err(OptimError::invalid(
                "muon",
                "ns_steps",
                0,
                "at least one iteration",
            ));
        }
        Ok(())
    }

    /// The validated chain: `[flip_sign] → scale_by_muon → [decay] → scale_by_learning_rate`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        Ok(decay_chain(
            "muon",
            self.maximize,
            Decay::Decoupled(self.weight_decay),
            ScaleByMuon {
                momentum: self.momentum,
                nesterov: self.nesterov,
                ns_coefficients: self.ns_coefficients,
                ns_steps: self.ns_steps,
                eps: self.eps,
                precision: self.precision,
                scale: self.scale,
            },
        ))
    }

    /// The standard routing as parameter groups, first match wins: `"adamw"` for paths that
    /// contain any of `adamw_paths` (embeddings, LM head; e.g. `["embed", "lm_head", "wte"]`)
    /// and for every parameter that is not 2-D (norms, biases), `"muon"` for the remaining 2-D
    /// weights. Give the AdamW group its own lr with [`ParamGroup::lr_mult`].
    pub fn groups<B: Backend>(
        &self,
        adamw: &AdamWConfig,
        adamw_paths: &[&str],
    ) -> Result<Vec<ParamGroup<B>>> {
        let mut to_adamw = !Selector::rank(2);
        for p in adamw_paths {
            to_adamw = to_adamw | Selector::path_contains(p);
        }
        Ok(vec![
            ParamGroup::new("adamw", to_adamw, adamw.build()?),
            ParamGroup::new("muon", Selector::all(), self.build()?),
        ])
    }
}

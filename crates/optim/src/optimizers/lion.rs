//! Lion (Chen et al. 2023, *Symbolic Discovery of Optimization Algorithms*), `lion_pytorch`
//! semantics: decoupled decay first, `θ ← θ − lr·sign(β1·m + (1−β1)·g)`, then
//! `m ← β2·m + (1−β2)·g`. Memory: 4 B/param.
//!
//! | lion_pytorch | moment | default |
//! | --- | --- | --- |
//! | `lr` | the step's lr (3–10× smaller than AdamW's) | 1e-4 |
//! | `betas` | `betas` | (0.9, 0.99) |
//! | `weight_decay` | `weight_decay` (decoupled, `θ·(1 − lr·λ)`) | 0 |
//! | `decoupled_weight_decay=True` | `weight_decay / initial lr` (done by the port) | false |

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::Result;
use crate::optimizers::{Decay, decay_chain};
use crate::transforms::ScaleByLion;
use crate::validate;

/// Lion's hyper-parameters; build the chain with [`LionConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionConfig {
    /// (β1, β2), each in `[0, 1)`.
    pub betas: (f64, f64),
    /// Decoupled decay λ ≥ 0.
    pub weight_decay: f64,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for LionConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.99),
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

impl LionConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate::unit_interval_open("lion", "betas.0", self.betas.0)?;
        validate::unit_interval_open("lion", "betas.1", self.betas.1)?;
        validate::non_negative("lion", "weight_decay", self.weight_decay)
    }

    /// The validated chain: `[flip_sign] → scale_by_lion → [decay] → scale_by_learning_rate`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        Ok(decay_chain(
            "lion",
            self.maximize,
            Decay::Decoupled(self.weight_decay),
            ScaleByLion {
                beta1: self.betas.0,
                beta2: self.betas.1,
            },
        ))
    }
}

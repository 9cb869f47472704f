//! Adam-mini (Zhang et al. 2024, *Adam-mini: Use Fewer Learning Rates To Gain More*),
//! pytorch_optimizer's `AdamMini` rules: one second moment per block, blocks chosen from the
//! parameter paths ([`ScaleByAdamMini`]). Memory ≈ 4 B/param (the momentum) plus one float
//! per block, except embeddings and the LM head (8 B/param).

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::Result;
use crate::transforms::{ScaleByAdamMini, flip_sign};
use crate::validate;

/// Adam-mini's hyper-parameters; build the chain with [`AdamMiniConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamMiniConfig {
    /// (β1, β2), each in `[0, 1)`.
    pub betas: (f64, f64),
    /// ε > 0.
    pub eps: f64,
    /// Decoupled decay (0 on paths containing `norm` or `ln_f`).
    pub weight_decay: f64,
    /// Attention heads (one second moment per head of q/k projections).
    pub num_heads: usize,
    /// Query groups of fused QKV weights (default: the heads).
    pub num_query_groups: Option<usize>,
    /// Model width (q/k blocks of `num_embeds²/num_heads`); None: `num_heads` blocks per tensor.
    pub num_embeds: Option<usize>,
}

impl Default for AdamMiniConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.1,
            num_heads: 32,
            num_query_groups: None,
            num_embeds: None,
        }
    }
}

impl AdamMiniConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "adam_mini";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        validate::positive(NAME, "eps", self.eps)?;
        validate::non_negative(NAME, "weight_decay", self.weight_decay)?;
        if self.num_heads == 0 || self.num_query_groups == Some(0) {
            return Err(crate::error::OptimError::invalid(
                NAME,
                "num_heads",
                0,
                "at least one head / query group",
            ));
        }
        Ok(())
    }

    /// The validated chain: `scale_by_adam_mini → flip_sign`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        Ok(Chain::new("adam_mini")
            .then(ScaleByAdamMini {
                beta1: self.betas.0,
                beta2: self.betas.1,
                eps: self.eps,
                weight_decay: self.weight_decay,
                num_heads: self.num_heads,
                num_query_groups: self.num_query_groups.unwrap_or(self.num_heads),
                num_embeds: self.num_embeds,
            })
            .then(flip_sign()))
    }
}

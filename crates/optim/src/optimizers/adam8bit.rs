//! 8-bit Adam / AdamW with bitsandbytes semantics (`bnb.optim.Adam8bit`, `AdamW8bit`).
//!
//! | bitsandbytes argument | moment field | default (Adam8bit / AdamW8bit) |
//! | --- | --- | --- |
//! | `lr` | the step's lr | 1e-3 |
//! | `betas` | `betas` | (0.9, 0.999) |
//! | `eps` | `eps` | 1e-8 |
//! | `weight_decay` | `weight_decay` (decoupled in both classes) | 0 / 1e-2 |
//! | `min_8bit_size` | `min_8bit_size` | 4096 |
//! | block size (256 since bnb 0.44) | `block_size` | 256 |
//! | CUDA vs CPU code path | `kernel` ([`BnbKernel`]) | `Cuda` |
//! | `amsgrad`, `optim_bits` | ignored by bnb's 8-bit classes (bnb#1261); moment rejects `amsgrad=True` | — |
//!
//! State memory: 2 bytes per element (two `u8` codes) + 8 bytes per block of 256 (two `f32`
//! absmax) ≈ 2.031 B/param, against 8 B/param for 32-bit Adam; tensors under `min_8bit_size`
//! elements keep 8 B/param.

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::{OptimError, Result};
use crate::quant::BLOCK_SIZE;
use crate::transforms::{BnbKernel, ScaleByAdam8bit, flip_sign};
use crate::validate;

/// 8-bit Adam's hyper-parameters; build the chain with [`Adam8bitConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam8bitConfig {
    /// (β1, β2), each in `[0, 1)`.
    pub betas: (f64, f64),
    /// ε > 0.
    pub eps: f64,
    /// Decoupled decay λ ≥ 0.
    pub weight_decay: f64,
    /// Tensors with fewer elements keep float32 state (≥ 0; 0 quantizes everything).
    pub min_8bit_size: usize,
    /// Elements per quantization block: a power of two in 64..=4096 (bitsandbytes uses 256).
    pub block_size: usize,
    /// Which bitsandbytes code path to reproduce.
    pub kernel: BnbKernel,
}

impl Default for Adam8bitConfig {
    /// `bnb.optim.Adam8bit` defaults.
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            min_8bit_size: 4096,
            block_size: BLOCK_SIZE,
            kernel: BnbKernel::Cuda,
        }
    }
}

impl Adam8bitConfig {
    /// `bnb.optim.AdamW8bit` defaults (weight decay 1e-2).
    pub fn adamw() -> Self {
        Self {
            weight_decay: 1e-2,
            ..Self::default()
        }
    }

    /// The same config with another decay (e.g. 0 for a no-decay parameter group).
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "adam8bit";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        validate::positive(NAME, "eps", self.eps)?;
        validate::non_negative(NAME, "weight_decay", self.weight_decay)?;
        if !(self.block_size.is_power_of_two() && (64..=4096).contains(&self.block_size)) {
            return Err(OptimError::invalid(
                NAME,
                "block_size",
                self.block_size,
                "a power of two in 64..=4096 (bitsandbytes: 256 since 0.44, 2048 before)",
            ));
        }
        Ok(())
    }

    /// The transform this config describes (validated).
    pub fn transform(&self) -> Result<ScaleByAdam8bit> {
        self.validate()?;
        Ok(ScaleByAdam8bit {
            beta1: self.betas.0,
            beta2: self.betas.1,
            eps: self.eps,
            weight_decay: self.weight_decay,
            min_8bit_size: self.min_8bit_size,
            block_size: self.block_size,
            kernel: self.kernel,
        })
    }

    /// The validated chain: `scale_by_adam_8bit → flip_sign`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        let t = self.transform()?;
        Ok(Chain::new("adam8bit").then(t).then(flip_sign()))
    }
}

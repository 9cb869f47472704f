//! SOAP (Vyas et al. 2024), pytorch_optimizer semantics: Adam in the slowly refreshed
//! eigenbasis of Shampoo's Kronecker factors. Memory: 8 B/param (`exp_avg`, `exp_avg_sq`) plus
//! 8·d² bytes per rotated axis of length d (`GG.i`, `Q.i`) — route embeddings and other
//! very long axes elsewhere or cap them with `max_precondition_dim`.

use burn::tensor::backend::Backend;

use crate::chain::Chain;
use crate::error::{OptimError, Result};
use crate::transforms::{ScaleBySoap, flip_sign};
use crate::validate;

/// SOAP's hyper-parameters; build the chain with [`SoapConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoapConfig {
    /// (β1, β2), each in `[0, 1)`.
    pub betas: (f64, f64),
    /// β of the factors in `[0, 1)`; `None` = β2.
    pub shampoo_beta: Option<f64>,
    /// ε ≥ 0 added to `√v`.
    pub eps: f64,
    /// Decoupled decay λ ≥ 0, applied after the step (`θ·(1 − lr·λ)`).
    pub weight_decay: f64,
    /// Steps between eigenbasis refreshes (≥ 1).
    pub precondition_frequency: u64,
    /// Axes longer than this are not rotated (≥ 1).
    pub max_precondition_dim: usize,
    /// Merge small axes first.
    pub merge_dims: bool,
    /// Precondition vectors too.
    pub precondition_1d: bool,
    /// Adam bias correction of the step size.
    pub correct_bias: bool,
    /// Divide the direction by its RMS.
    pub normalize_gradient: bool,
    /// Ascend instead.
    pub maximize: bool,
}

impl Default for SoapConfig {
    fn default() -> Self {
        Self {
            betas: (0.95, 0.95),
            shampoo_beta: None,
            eps: 1e-8,
            weight_decay: 1e-2,
            precondition_frequency: 10,
            max_precondition_dim: 10000,
            merge_dims: false,
            precondition_1d: false,
            correct_bias: true,
            normalize_gradient: false,
            maximize: false,
        }
    }
}

impl SoapConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        const NAME: &str = "soap";
        validate::unit_interval_open(NAME, "betas.0", self.betas.0)?;
        validate::unit_interval_open(NAME, "betas.1", self.betas.1)?;
        if let Some(b) = self.shampoo_beta {
            validate::unit_interval_open(NAME, "shampoo_beta", b)?;
        }
        validate::non_negative(NAME, "eps", self.eps)?;
        validate::non_negative(NAME, "weight_decay", self.weight_decay)?;
        if self.precondition_frequency == 0 {
            return Err(OptimError::invalid(
                NAME,
                "precondition_frequency",
                0,
                "an integer >= 1",
            ));
        }
        if self.max_precondition_dim == 0 {
            return Err(OptimError::invalid(
                NAME,
                "max_precondition_dim",
                0,
                "an integer >= 1",
            ));
        }
        Ok(())
    }

    /// The validated chain: `[flip_sign] → scale_by_soap → flip_sign`.
    pub fn build<B: Backend>(&self) -> Result<Chain<B>> {
        self.validate()?;
        Ok(Chain::new("soap")
            .then_if(self.maximize, flip_sign())
            .then(ScaleBySoap {
                betas: self.betas,
                shampoo_beta: self.shampoo_beta.unwrap_or(self.betas.1),
                eps: self.eps,
                weight_decay: self.weight_decay,
                precondition_frequency: self.precondition_frequency,
                max_precondition_dim: self.max_precondition_dim,
                merge_dims: self.merge_dims,
                precondition_1d: self.precondition_1d,
                correct_bias: self.correct_bias,
                normalize_gradient: self.normalize_gradient,
            })
            .then(flip_sign()))
    }
}

//! Small, named range checks shared by every config (one place for the error wording).
//!
//! Optimizer arithmetic runs in f32, so a value must stay in range *after* rounding to f32:
//! `eps = 1e-50` would round to 0 (and give 0/0 = NaN on a zero gradient), `β = 1 − 1e-10`
//! would round to 1 (a frozen moment), `λ = 1e39` would round to infinity.

use crate::error::{OptimError, Result};

/// `0 <= x < 1`, also as f32 (EMA coefficients such as Adam's betas).
pub fn unit_interval_open(optimizer: &'static str, field: &'static str, x: f64) -> Result<()> {
    if (0.0..1.0).contains(&x) && (x as f32) < 1.0 {
        Ok(())
    } else {
        Err(OptimError::invalid(
            optimizer,
            field,
            x,
            "0 <= value < 1 (also after rounding to f32)",
        ))
    }
}

/// `x > 0` and finite, also as f32 (epsilons).
pub fn positive(optimizer: &'static str, field: &'static str, x: f64) -> Result<()> {
    let f = x as f32;
    if x > 0.0 && f > 0.0 && f.is_finite() {
        Ok(())
    } else {
        Err(OptimError::invalid(
            optimizer,
            field,
            x,
            "a value > 0 that stays > 0 and finite in f32 (1.4e-45 ..= 3.4e38)",
        ))
    }
}

/// `x >= 0` and finite, also as f32 (weight decay, clipping thresholds, learning rates).
pub fn non_negative(optimizer: &'static str, field: &'static str, x: f64) -> Result<()> {
    if x >= 0.0 && (x as f32).is_finite() {
        Ok(())
    } else {
        Err(OptimError::invalid(
            optimizer,
            field,
            x,
            "a value >= 0 that is finite in f32 (<= 3.4e38)",
        ))
    }
}

/// Whether a learning rate is usable: `>= 0` and finite in f32.
pub fn learning_rate(lr: f64) -> bool {
    lr >= 0.0 && (lr as f32).is_finite()
}

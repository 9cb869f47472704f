//! Small, named range checks shared by every config (one place for the error wording).

use crate::error::{OptimError, Result};

/// `0 <= x < 1` (EMA coefficients such as Adam's betas).
pub fn unit_interval_open(optimizer: &'static str, field: &'static str, x: f64) -> Result<()> {
    if (0.0..1.0).contains(&x) {
        Ok(())
    } else {
        Err(OptimError::invalid(optimizer, field, x, "0 <= value < 1"))
    }
}

/// `x > 0` and finite (epsilons).
pub fn positive(optimizer: &'static str, field: &'static str, x: f64) -> Result<()> {
    if x > 0.0 && x.is_finite() {
        Ok(())
    } else {
        Err(OptimError::invalid(
            optimizer,
            field,
            x,
            "a finite value > 0",
        ))
    }
}

/// `x >= 0` and finite (weight decay, clipping thresholds, learning rates).
pub fn non_negative(optimizer: &'static str, field: &'static str, x: f64) -> Result<()> {
    if x >= 0.0 && x.is_finite() {
        Ok(())
    } else {
        Err(OptimError::invalid(
            optimizer,
            field,
            x,
            "a finite value >= 0",
        ))
    }
}

//! Phase 3 of a step, [`MomentOptimizer::finish`], and the whole step in one call over flat
//! named tensors, [`MomentOptimizer::step`].

use burn::tensor::{Tensor, backend::Backend};

use super::{GradEntry, GradientScan, MomentOptimizer, PreparedStep, StepReport};
use crate::error::{OptimError, Result};

/// A named parameter for [`MomentOptimizer::step`]: flat value and optional gradient.
#[derive(Debug, Clone)]
pub struct ParamTensor<B: Backend> {
    /// Parameter path.
    pub path: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Value, flat.
    pub value: Tensor<B, 1>,
    /// Gradient, flat; `None` means "no gradient this step" (state untouched).
    pub grad: Option<Tensor<B, 1>>,
}

impl<B: Backend> MomentOptimizer<B> {
    /// Phase 3: close the step, notify the observer, keep and return the report.
    pub fn finish(&mut self, mut prep: PreparedStep<B>) -> StepReport {
        if self.scan == GradientScan::InPass && !prep.report.skipped {
            prep.measure_unapplied();
        }
        let report = prep.report;
        self.notify_step(&report);
        self.last_report = Some(report.clone());
        report
    }

    /// One whole step over flat named tensors (the module-free API, used by the reference
    /// runner). Parameters are updated in place; on error nothing changes and the observer is
    /// told ([`Observer::on_refused`](crate::Observer::on_refused)).
    pub fn step(&mut self, lr: f64, params: &mut [ParamTensor<B>]) -> Result<StepReport> {
        let grads = grad_entries(params);
        if let Err(e) = check_grad_lengths(params) {
            self.notify_refused(lr, &e);
            return Err(e);
        }
        let mut prep = self.prepare(lr, grads)?;
        let mut order: Vec<usize> = (0..params.len()).collect();
        order.sort_by(|&a, &b| params[a].path.cmp(&params[b].path));
        for i in order {
            // Moved out (not cloned) so a fused step can update the buffer in place.
            let device = params[i].value.device();
            let value = std::mem::replace(&mut params[i].value, Tensor::zeros([0], &device));
            params[i].value = self.apply(&mut prep, &params[i].path.clone(), value);
        }
        Ok(self.finish(prep))
    }
}

/// The gradients of `params` (those that have one) as [`GradEntry`]s, with their values.
fn grad_entries<B: Backend>(params: &[ParamTensor<B>]) -> Vec<GradEntry<B>> {
    params
        .iter()
        .filter_map(|p| {
            p.grad.as_ref().map(|g| GradEntry {
                path: p.path.clone(),
                param_shape: p.shape.clone(),
                grad_shape: p.shape.clone(),
                grad: g.clone(),
                param: Some(p.value.clone()),
            })
        })
        .collect()
}

/// Every gradient must have as many elements as its parameter's value.
fn check_grad_lengths<B: Backend>(params: &[ParamTensor<B>]) -> Result<()> {
    for p in params {
        if let Some(g) = &p.grad
            && g.dims()[0] != p.value.dims()[0]
        {
            return Err(OptimError::ShapeMismatch {
                path: p.path.clone(),
                expected: p.shape.clone(),
                actual: vec![g.dims()[0]],
            });
        }
    }
    Ok(())
}

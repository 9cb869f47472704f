//! Feeding curvature estimates (Sophia's) to the chains, outside the step:
//! [`MomentOptimizer::update_curvature`].

use std::collections::HashMap;

use burn::tensor::backend::Backend;

use super::prepare::sorted_by_path;
use super::{GradEntry, MomentOptimizer, NonFinitePolicy, ParamState};
use crate::error::{OptimError, Result};
use crate::stats::read_scalars;

impl<B: Backend> MomentOptimizer<B> {
    /// Feed curvature estimates (one flat tensor per parameter, e.g. Sophia-G's sampled-label
    /// gradients or a Hutchinson Hessian diagonal for Sophia-H) to the transforms that use them;
    /// state is created for parameters not stepped yet. Returns how many parameters' chains
    /// took the estimate (parameters in groups without a curvature transform are left alone).
    /// Shapes and non-finite values are checked as in a step (the non-finite policy applies:
    /// `SkipStep` ignores the whole call). On error nothing changes.
    pub fn update_curvature(&mut self, estimates: Vec<GradEntry<B>>) -> Result<usize> {
        let mut estimates = sorted_by_path(estimates)?;
        let fresh = self.fresh_states(&estimates, &|_| true)?;
        let bad = non_finite_paths(&estimates);
        if !bad.is_empty() {
            match self.non_finite {
                NonFinitePolicy::Error => {
                    return Err(OptimError::NonFiniteGradient {
                        first_path: bad[0].clone(),
                        count: bad.len() as u64,
                        paths: bad,
                    });
                }
                NonFinitePolicy::SkipStep => return Ok(0),
                NonFinitePolicy::ZeroGradient => zero_non_finite(&mut estimates),
                NonFinitePolicy::Propagate => {}
            }
        }
        Ok(self.feed_estimates(estimates, fresh))
    }

    /// Hand each estimate to its parameter's chain; returns how many chains took one. Fresh
    /// state is kept only where a transform takes the estimate (no state is created for
    /// parameters of groups without a curvature transform).
    fn feed_estimates(
        &mut self,
        estimates: Vec<GradEntry<B>>,
        fresh: Vec<(String, ParamState<B>)>,
    ) -> usize {
        let mut fresh: HashMap<String, ParamState<B>> = fresh.into_iter().collect();
        let mut used = 0;
        for e in estimates {
            let new = fresh.remove(&e.path);
            let is_new = new.is_some();
            let mut ps = match new {
                Some(ps) => ps,
                None => match self.params.remove(&e.path) {
                    Some(ps) => ps,
                    None => continue,
                },
            };
            let chain = &self.groups[ps.group].chain;
            let mut took = false;
            for (t, st) in chain.transforms().iter().zip(ps.states.iter_mut()) {
                took |= t.update_curvature(e.grad.clone(), st);
            }
            used += usize::from(took);
            if took || !is_new {
                if is_new {
                    self.pending.remove(&e.path);
                }
                self.params.insert(e.path, ps);
            }
        }
        used
    }
}

/// The paths of the estimates with non-finite elements, in order (elements are counted: a
/// sum of |x| could overflow for finite values).
fn non_finite_paths<B: Backend>(estimates: &[GradEntry<B>]) -> Vec<String> {
    let counts = read_scalars(
        estimates
            .iter()
            .map(|e| e.grad.clone().is_finite().bool_not().int().sum().float())
            .collect(),
    );
    estimates
        .iter()
        .zip(&counts)
        .filter(|(_, c)| **c > 0.0)
        .map(|(e, _)| e.path.clone())
        .collect()
}

/// Replace every non-finite element of every estimate by 0.
fn zero_non_finite<B: Backend>(estimates: &mut [GradEntry<B>]) {
    for e in estimates.iter_mut() {
        let mask = e.grad.clone().is_finite().bool_not();
        e.grad = e.grad.clone().mask_fill(mask, 0.0);
    }
}

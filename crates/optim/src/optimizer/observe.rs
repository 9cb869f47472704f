//! The engine's side of the observer hook: asking the [`Observer`] what it wants, and telling
//! it about updated parameters, finished steps and refused steps.

use std::sync::{Arc, Mutex};

use burn::tensor::{Tensor, backend::Backend};

use super::{MomentOptimizer, StepReport};
use crate::error::OptimError;
use crate::observer::{Observer, ParamView, RefusedStep};

impl<B: Backend> MomentOptimizer<B> {
    /// Tell the observer that a step with learning rate `lr` was refused with `error`
    /// ([`Observer::on_refused`], with the unchanged step counter). The engine does this
    /// itself for every step it refuses; an adaptor that refuses a step before it reaches the
    /// engine (e.g. [`ModuleOptimizer`](crate::ModuleOptimizer) in evaluation mode) calls it
    /// so that the observer still sees the refusal. Changes nothing else.
    pub fn notify_refused(&self, lr: f64, error: &OptimError) {
        if let Some(obs) = &self.observer
            && let Ok(mut obs) = obs.lock()
        {
            obs.on_refused(&RefusedStep {
                step: self.steps,
                lr,
                policy: self.non_finite,
                error: error.clone(),
            });
        }
    }

    /// Whether an observer is attached and wants the current step ([`Observer::wants`]).
    pub(super) fn observer_wants_step(&self) -> bool {
        match &self.observer {
            Some(o) => o.lock().map(|o| o.wants(self.steps)).unwrap_or(false),
            None => false,
        }
    }

    /// Hand one updated parameter of step `step` to the observer ([`Observer::on_param`]).
    pub(super) fn notify(
        &self,
        step: u64,
        path: &str,
        lr: f64,
        grad: &Tensor<B, 1>,
        update: &Tensor<B, 1>,
        new: &Tensor<B, 1>,
    ) {
        let (Some(obs), Some(ps)) = (&self.observer, self.params.get(path)) else {
            return;
        };
        if let Ok(mut obs) = obs.lock() {
            obs.on_param(&ParamView {
                step,
                path,
                group: &self.groups[ps.group].name,
                shape: &ps.shape,
                grad,
                update,
                param: new,
                lr,
                state: &ps.states,
            });
        }
    }

    /// Hand a finished (or skipped) step's report to the observer ([`Observer::on_step`]).
    pub(super) fn notify_step(&self, report: &StepReport) {
        if let Some(obs) = &self.observer
            && let Ok(mut obs) = obs.lock()
        {
            obs.on_step(report);
        }
    }
}

/// Whether `observer` is attached and wants parameter `path` of `shape`
/// ([`Observer::wants_param`]).
pub(super) fn observer_wants_param<B: Backend>(
    observer: Option<&Arc<Mutex<dyn Observer<B>>>>,
    path: &str,
    shape: &[usize],
) -> bool {
    observer.is_some_and(|o| {
        o.lock()
            .map(|o| o.wants_param(path, shape))
            .unwrap_or(false)
    })
}

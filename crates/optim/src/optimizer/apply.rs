//! Phase 2 of a step, [`MomentOptimizer::apply`]: one parameter's update, by its chain's fused
//! one-pass step where that applies, else by the composed chain.

use burn::tensor::{Tensor, backend::Backend};

use super::observe::observer_wants_param;
use super::{MomentOptimizer, ParamState, PreparedStep};
use crate::chain::Chain;
use crate::fused::FusedStep;
use crate::transform::{StepCtx, TransformState};

/// What `apply` knows about one parameter's update before its chain runs.
struct ParamJob<'a> {
    path: &'a str,
    /// The step's learning rate times the group's multiplier.
    lr: f64,
    /// The observer wants this parameter ([`crate::Observer::wants_param`]).
    watch: bool,
    /// Its gradient is measured during the step ([`super::GradientScan::InPass`]).
    measure: bool,
}

/// One parameter after its update.
struct Updated<B: Backend> {
    /// The new value.
    new: Tensor<B, 1>,
    /// For a watched parameter: the gradient the chain consumed and the update it added.
    seen: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    /// Whether the fused one-pass step made it.
    fused: bool,
}

/// Inputs handed back by a fused step that declined: parameter, gradient, and the clipping
/// factor the gradient still has to be scaled by.
type Declined<B> = (Tensor<B, 1>, Tensor<B, 1>, Option<f32>);

impl<B: Backend> MomentOptimizer<B> {
    /// Phase 2: update one parameter (flat) and return its new value. Parameters without a
    /// prepared gradient (or a skipped step) are returned unchanged.
    pub fn apply(
        &mut self,
        prep: &mut PreparedStep<B>,
        path: &str,
        param: Tensor<B, 1>,
    ) -> Tensor<B, 1> {
        let Some(grad) = prep.grads.remove(path) else {
            return param;
        };
        let measure = prep.unmeasured.remove(path);
        // the clipping factor, when this gradient still has to be scaled by it
        let unscaled = prep.clip_scale.filter(|_| prep.deferred.remove(path));
        let Some(ps) = self.params.get_mut(path) else {
            if measure {
                prep.measured(path, &grad, None);
            }
            return param;
        };
        let group = &self.groups[ps.group];
        let job = ParamJob {
            path,
            lr: prep.lr * group.lr_mult,
            watch: prep.observe && observer_wants_param(self.observer.as_ref(), path, &ps.shape),
            measure,
        };
        let fused = match group.chain.fused() {
            Some(f) => fused_update(f.as_ref(), &job, prep, ps, param, grad, unscaled),
            None => Err((param, grad, unscaled)),
        };
        let updated = match fused {
            Ok(updated) => updated,
            Err((param, grad, unscaled)) => {
                let group_states = &self.group_states[ps.group];
                composed_update(
                    &group.chain,
                    group_states,
                    &job,
                    prep,
                    ps,
                    param,
                    grad,
                    unscaled,
                )
            }
        };
        self.count_and_notify(prep, &job, updated)
    }

    /// Count an updated parameter in the report, show it to the observer when watched, and
    /// return its new value.
    fn count_and_notify(
        &self,
        prep: &mut PreparedStep<B>,
        job: &ParamJob<'_>,
        updated: Updated<B>,
    ) -> Tensor<B, 1> {
        prep.report.params_updated += 1;
        if updated.fused {
            prep.report.params_fused += 1;
        }
        if let Some((grad, update)) = &updated.seen {
            self.notify(
                prep.report.step,
                job.path,
                job.lr,
                grad,
                update,
                &updated.new,
            );
        }
        updated.new
    }
}

/// The chain's one-pass step, or the inputs back when it declines. A watched parameter keeps
/// its old value and gradient alive (so the fused step copies instead of updating in place)
/// and its update is recovered as `new − old`, exactly the update the composed path adds.
fn fused_update<B: Backend>(
    f: &dyn FusedStep<B>,
    job: &ParamJob<'_>,
    prep: &mut PreparedStep<B>,
    ps: &mut ParamState<B>,
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    unscaled: Option<f32>,
) -> Result<Updated<B>, Declined<B>> {
    let seen = job.watch.then(|| {
        let clipped = match unscaled {
            Some(c) => grad.clone().mul_scalar(c),
            None => grad.clone(),
        };
        (param.clone(), clipped)
    });
    // (a handle only: the fused step reads the gradient in place either way)
    let kept = job.measure.then(|| grad.clone());
    let (new, s) = run_fused(f, job, &ps.shape, &mut ps.states, param, grad, unscaled)?;
    if let Some(g) = &kept {
        prep.measured(job.path, g, s);
    }
    let seen = seen.map(|(old, grad)| {
        let update = new.clone().sub(old);
        (grad, update)
    });
    Ok(Updated {
        new,
        seen,
        fused: true,
    })
}

/// Pick the fused step's entry point: the gradient scaled by the clipping factor in the pass
/// (else scaled first, then the plain step), measured in the pass, or plain. On success the
/// new value and the `Σ g²` measured in the pass, if any.
fn run_fused<B: Backend>(
    f: &dyn FusedStep<B>,
    job: &ParamJob<'_>,
    shape: &[usize],
    states: &mut [TransformState<B>],
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    unscaled: Option<f32>,
) -> Result<(Tensor<B, 1>, Option<f64>), Declined<B>> {
    let lr = job.lr;
    if let Some(c) = unscaled {
        match f.step_scaled(lr, shape, param, grad, c, states) {
            Ok(p) => Ok((p, None)),
            Err((param, grad)) => {
                let grad = crate::fused::scale(grad, c);
                f.step(lr, shape, param, grad, states)
                    .map(|p| (p, None))
                    .map_err(|(param, grad)| (param, grad, None))
            }
        }
    } else if job.measure {
        f.step_measured(lr, shape, param, grad, states)
            .map_err(|(param, grad)| (param, grad, unscaled))
    } else {
        f.step(lr, shape, param, grad, states)
            .map(|p| (p, None))
            .map_err(|(param, grad)| (param, grad, unscaled))
    }
}

/// The composed chain's update, `θ ← θ + u`, after scaling the gradient by the clipping
/// factor it still needs.
fn composed_update<B: Backend>(
    chain: &Chain<B>,
    group_states: &[TransformState<B>],
    job: &ParamJob<'_>,
    prep: &mut PreparedStep<B>,
    ps: &mut ParamState<B>,
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    unscaled: Option<f32>,
) -> Updated<B> {
    let grad = match unscaled {
        Some(c) => crate::fused::scale(grad, c),
        None => grad,
    };
    if job.measure {
        prep.measured(job.path, &grad, None);
    }
    let empty = TransformState::empty();
    let ctx = StepCtx {
        lr: job.lr,
        param: &param,
        shape: &ps.shape,
        path: job.path,
        group: &empty,
    };
    let grad_seen = job.watch.then(|| grad.clone());
    let update = chain.update(&ctx, grad, &mut ps.states, group_states);
    let new = param.clone().add(update.clone());
    Updated {
        new,
        seen: grad_seen.map(|grad| (grad, update)),
        fused: false,
    }
}

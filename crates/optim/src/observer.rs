//! The observer hook: how a monitor sees each parameter's gradient, update and state.
//!
//! With no observer attached the engine makes no extra tensor, clone or reduction. With one
//! attached, [`Observer::wants`] is asked once per step; returning `false` (e.g. between
//! logging intervals) also skips all per-parameter work.

use burn::tensor::{Tensor, backend::Backend};

use crate::optimizer::StepReport;
use crate::transform::TransformState;

/// Everything an observer may read about one parameter after its update.
#[derive(Debug)]
pub struct ParamView<'a, B: Backend> {
    /// 1-based index of the step (the engine's step counter after this step).
    pub step: u64,
    /// Parameter path (`blocks.0.attn.q.weight`).
    pub path: &'a str,
    /// Name of the parameter group that updated it.
    pub group: &'a str,
    /// Logical shape.
    pub shape: &'a [usize],
    /// The gradient the optimizer consumed (after global clipping and the non-finite policy), flat.
    pub grad: &'a Tensor<B, 1>,
    /// The update that was added to the parameter (`θ_new − θ_old`), flat.
    pub update: &'a Tensor<B, 1>,
    /// The parameter after the update, flat.
    pub param: &'a Tensor<B, 1>,
    /// Learning rate used for this parameter (scheduler value × group multiplier).
    pub lr: f64,
    /// The state of every transform of the group's chain, after the update.
    pub state: &'a [TransformState<B>],
}

/// Receives per-step and per-parameter information from the engine.
pub trait Observer<B: Backend>: Send {
    /// Whether to observe step `step` (1-based). Default: every step.
    fn wants(&self, step: u64) -> bool {
        let _ = step;
        true
    }

    /// Whether to observe parameter `path` (of logical `shape`) on a wanted step. Default: all.
    /// Unwatched parameters cost nothing extra (and keep the fused path's in-place update).
    fn wants_param(&self, path: &str, shape: &[usize]) -> bool {
        let _ = (path, shape);
        true
    }

    /// Called for every watched updated parameter of a wanted step, in traversal order (module field
    /// order for burn modules, path order for [`MomentOptimizer::step`](crate::MomentOptimizer::step)).
    fn on_param(&mut self, view: &ParamView<'_, B>);

    /// Called once per step call (also for skipped steps), after all parameters.
    fn on_step(&mut self, report: &StepReport);
}

//! The observer hook: how a monitor sees each parameter's gradient, update and state.
//!
//! With no observer attached the engine makes no extra tensor, clone or reduction. With one
//! attached, [`Observer::wants`] is asked once per step; returning `false` (e.g. between
//! logging intervals) also skips all per-parameter work.
//!
//! A step the engine refuses (an [`OptimError`]: non-finite gradient under
//! [`NonFinitePolicy::Error`], a shape mismatch, …) changes nothing and produces no
//! [`StepReport`]; it reaches the observer as a [`RefusedStep`] through
//! [`Observer::on_refused`], so that a monitor sees it even where the caller cannot (burn's
//! `Optimizer::step`, burn-train's Learner).

use burn::tensor::{Tensor, backend::Backend};

use crate::error::OptimError;
use crate::transform::TransformState;

/// What to do when a gradient contains NaN or ±Inf.
///
/// (Defined here, with the reports that name it, so that the hook depends on nothing of the
/// engine; the engine's builder sets it, and `moment_optim::optimizer::NonFinitePolicy`
/// names it too.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinitePolicy {
    /// Fail the step with [`OptimError::NonFiniteGradient`] naming the parameters; nothing changes.
    #[default]
    Error,
    /// Skip the whole step: parameters, state and step counters stay exactly as they were.
    SkipStep,
    /// Replace every non-finite gradient element by 0, then step normally.
    ZeroGradient,
    /// Hand non-finite gradients to the optimizer unchanged and let its own semantics decide,
    /// as the reference does: 8-bit Adam (CUDA semantics) zeroes that element's state and
    /// leaves that parameter element untouched; torch-semantics optimizers produce non-finite
    /// parameters, as torch does. The reported gradient norm and global clipping use the
    /// finite elements only. Events are still counted in the [`StepReport`].
    Propagate,
}

/// What happened in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The engine's step counter after this call (unchanged when skipped).
    pub step: u64,
    /// Learning rate passed to the step (before group multipliers).
    pub lr: f64,
    /// Global L2 norm of all gradients before clipping (after zeroing non-finite elements
    /// under [`NonFinitePolicy::ZeroGradient`]; `NaN` when the step was skipped for them).
    pub grad_norm: f64,
    /// Factor the gradients were multiplied by (1 when not clipped).
    pub clip_factor: f64,
    /// Whether clipping engaged.
    pub clipped: bool,
    /// Number of non-finite gradient elements seen.
    pub non_finite: u64,
    /// Parameters that had non-finite gradient elements.
    pub non_finite_paths: Vec<String>,
    /// Whether the step was skipped (policy [`NonFinitePolicy::SkipStep`]).
    pub skipped: bool,
    /// Number of parameters updated.
    pub params_updated: usize,
    /// How many of them took their chain's fused one-pass path ([`crate::fused`]).
    pub params_fused: usize,
    /// The global clipping threshold (`None` without clipping).
    pub clip_threshold: Option<f64>,
    /// The non-finite gradient policy in force.
    pub policy: NonFinitePolicy,
    /// Learning rate of each parameter group (`lr` × the group's multiplier), in group order.
    pub group_lrs: Vec<(String, f64)>,
}

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

/// A step the engine refused: parameters, optimizer state and the step counter are exactly as
/// before the call.
#[derive(Debug, Clone)]
pub struct RefusedStep {
    /// The engine's step counter, unchanged by the refusal (as [`StepReport::step`] of a
    /// skipped step); the refused step would have been step `step + 1` ([`RefusedStep::attempted`]).
    pub step: u64,
    /// Learning rate passed to the step.
    pub lr: f64,
    /// The non-finite gradient policy in force.
    pub policy: NonFinitePolicy,
    /// Why the step was refused (the error the step call returned or kept).
    pub error: OptimError,
}

impl RefusedStep {
    /// The number the step would have had, had it run (`step + 1`).
    pub fn attempted(&self) -> u64 {
        self.step.saturating_add(1)
    }

    /// The kind of refusal: the [`OptimError`] variant's name (`NonFiniteGradient`,
    /// `ShapeMismatch`, `InvalidLearningRate`, …).
    pub fn kind(&self) -> &'static str {
        match &self.error {
            OptimError::InvalidConfig { .. } => "InvalidConfig",
            OptimError::InvalidLearningRate { .. } => "InvalidLearningRate",
            OptimError::NonFiniteGradient { .. } => "NonFiniteGradient",
            OptimError::ShapeMismatch { .. } => "ShapeMismatch",
            OptimError::UnmatchedParameter { .. } => "UnmatchedParameter",
            OptimError::UnsupportedShape { .. } => "UnsupportedShape",
            OptimError::EvalMode => "EvalMode",
            OptimError::MissingParameterValue { .. } => "MissingParameterValue",
            OptimError::DuplicatePath { .. } => "DuplicatePath",
            OptimError::RecordMismatch { .. } => "RecordMismatch",
            OptimError::GradientTooLarge { .. } => "GradientTooLarge",
            OptimError::Checkpoint { .. } => "Checkpoint",
            OptimError::UnshardableGroup { .. } => "UnshardableGroup",
            OptimError::NotAgreed { .. } => "NotAgreed",
            OptimError::Port(_) => "Port",
        }
    }

    /// The parameter the error names, if it names one (the first offending one for
    /// [`OptimError::NonFiniteGradient`]).
    pub fn path(&self) -> Option<&str> {
        match &self.error {
            OptimError::NonFiniteGradient { first_path, .. } => Some(first_path),
            OptimError::ShapeMismatch { path, .. }
            | OptimError::UnmatchedParameter { path, .. }
            | OptimError::UnsupportedShape { path, .. }
            | OptimError::MissingParameterValue { path }
            | OptimError::DuplicatePath { path }
            | OptimError::GradientTooLarge { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The error's message.
    pub fn reason(&self) -> String {
        self.error.to_string()
    }
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

    /// Called once for every step the engine refuses (whatever the reason), after the
    /// refusal, when nothing has changed; [`Observer::on_step`] is not called for it (nor
    /// `on_refused` for a step that ran or was skipped). Default: ignored.
    fn on_refused(&mut self, refused: &RefusedStep) {
        let _ = refused;
    }
}

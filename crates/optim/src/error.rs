//! Errors: every failure a user's input can cause is one of these, never a panic.

use thiserror::Error;

/// Everything that can go wrong when configuring or stepping an optimizer.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OptimError {
    /// A hyper-parameter is outside its allowed range.
    #[error("invalid {optimizer} config: `{field}` = {value} is not allowed (expected {allowed})")]
    InvalidConfig {
        /// Which optimizer or transform the field belongs to.
        optimizer: &'static str,
        /// The hyper-parameter's name.
        field: &'static str,
        /// The offending value, formatted.
        value: String,
        /// The allowed range, in words.
        allowed: &'static str,
    },
    /// The learning rate passed to a step is negative or not finite.
    #[error(
        "invalid learning rate {lr} (after group multipliers): expected a value >= 0 that is finite in f32"
    )]
    InvalidLearningRate {
        /// The offending learning rate.
        lr: f64,
    },
    /// A gradient holds NaN or ±Inf and the policy is [`NonFinitePolicy::Error`](crate::NonFinitePolicy::Error).
    #[error(
        "non-finite gradient: {count} NaN/Inf element(s) in {} parameter(s), first `{first_path}`; \
         parameters and optimizer state are unchanged",
        paths.len()
    )]
    NonFiniteGradient {
        /// Path of the first offending parameter (in path order).
        first_path: String,
        /// Every offending parameter.
        paths: Vec<String>,
        /// Total number of non-finite elements.
        count: u64,
    },
    /// A gradient or a stored state does not have the parameter's shape.
    #[error("shape mismatch for `{path}`: expected {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// The parameter's path.
        path: String,
        /// The shape that was expected.
        expected: Vec<usize>,
        /// The shape that was found.
        actual: Vec<usize>,
    },
    /// No parameter group selects this parameter (add a catch-all group).
    #[error("parameter `{path}` (shape {shape:?}) matches no parameter group")]
    UnmatchedParameter {
        /// The parameter's path.
        path: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A transform cannot handle a parameter of this shape (e.g. a matrix-only method on a vector).
    #[error("transform `{transform}` cannot update `{path}` of shape {shape:?}: {reason}")]
    UnsupportedShape {
        /// The transform's name.
        transform: &'static str,
        /// The parameter's path.
        path: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Why.
        reason: &'static str,
    },
    /// A step was asked for while the module holds its evaluation parameters
    /// (`ModuleOptimizer::eval` without a matching `train`).
    #[error(
        "cannot step in evaluation mode: call `train(model)` first (the parameters hold the evaluation view)"
    )]
    EvalMode,
    /// A chain that reduces over its whole group (Prodigy) needs the parameter's value in
    /// [`GradEntry::param`](crate::GradEntry::param), and it was not given.
    #[error(
        "parameter `{path}` is in a group whose chain reduces over all its tensors before the step (e.g. Prodigy); \
         pass its current value in `GradEntry::param`"
    )]
    MissingParameterValue {
        /// The parameter's path.
        path: String,
    },
    /// The same parameter path was given twice in one step.
    #[error("parameter path `{path}` appears more than once")]
    DuplicatePath {
        /// The repeated path.
        path: String,
    },
    /// A state record cannot be loaded into this optimizer; the in-memory state is unchanged.
    #[error("cannot load optimizer record: {reason}")]
    RecordMismatch {
        /// What does not match.
        reason: String,
    },
    /// A gradient is finite but so large that a transform squaring it in f32 (Adafactor, CAME,
    /// SOAP — as their references do) would overflow and turn the parameters into NaN; the
    /// step is refused before anything changes.
    #[error(
        "gradient of `{path}` too large for {optimizer}: sum of squares {sum_sq:e} (after clipping) exceeds {limit:e}, where its f32 second-moment statistics overflow; parameters and optimizer state are unchanged (clip gradients or lower the loss scale)"
    )]
    GradientTooLarge {
        /// The parameter.
        path: String,
        /// The chain's label.
        optimizer: String,
        /// The gradient's sum of squares (f64, after global clipping).
        sum_sq: f64,
        /// The largest sum of squares these transforms accept.
        limit: f64,
    },
    /// A checkpoint file cannot be written or read: I/O error, not a checkpoint, truncated or
    /// corrupted (`moment_optim::checkpoint`); the in-memory state is unchanged.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Another peer of a distributed step failed (its own error is reported there); this
    /// peer changed nothing either.
    #[error("distributed step: {reason}")]
    Distributed {
        /// What failed, and where.
        reason: String,
    },
    /// A reference optimizer (e.g. a PyTorch class) or one of its arguments has no moment equivalent.
    #[error("unsupported reference optimizer: {reason}")]
    Unsupported {
        /// What is not supported.
        reason: String,
    },
}

impl OptimError {
    /// Shorthand for an [`OptimError::InvalidConfig`].
    pub fn invalid(
        optimizer: &'static str,
        field: &'static str,
        value: impl std::fmt::Display,
        allowed: &'static str,
    ) -> Self {
        Self::InvalidConfig {
            optimizer,
            field,
            value: value.to_string(),
            allowed,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = OptimError> = std::result::Result<T, E>;

//! Errors: every failure a user's input can cause is one of these, never a panic.
//!
//! One enum per layer: [`OptimError`] for configuring and stepping (the engine's checks,
//! records), wrapping [`CheckpointError`] (what is wrong with a checkpoint file, the I/O or
//! JSON error kept as its [`source`](std::error::Error::source)) and [`PortError`] (a reference
//! class or argument with no moment equivalent). moment-dist wraps `OptimError` in its own
//! `DistError`. Every error is `Clone` (I/O and JSON errors are shared behind an [`Arc`]) so
//! that an observer's [`RefusedStep`](crate::RefusedStep) can keep it.
//!
//! A wrapped error's message is part of its wrapper's message (the monitor and the CLI print
//! only the top-level message), and is also its `source()`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

/// Everything that can go wrong when configuring or stepping an optimizer.
#[derive(Debug, Clone, Error)]
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
    #[error("checkpoint {}: {source}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: CheckpointError,
    },
    /// A sharded step ([`MomentOptimizer::prepare_owned`](crate::MomentOptimizer::prepare_owned)
    /// with some paths not owned) for a group whose chain reduces over all its tensors
    /// (Prodigy, …), which a peer holding part of them cannot do. Replicated state works.
    #[error(
        "cannot shard optimizer state: group `{group}` ({chain}) reduces over all its tensors and \
         cannot be split over peers"
    )]
    UnshardableGroup {
        /// The group's name.
        group: String,
        /// Its chain's label.
        chain: String,
    },
    /// The `agree` callback of
    /// [`MomentOptimizer::prepare_owned`](crate::MomentOptimizer::prepare_owned) refused the
    /// step, or a distributed adaptor refused it before preparing (moment-dist: this peer's
    /// inputs do not fit, another peer refused, a collective failed); nothing changed. The
    /// parameter, if one is to blame, is named in `reason` only.
    #[error("step not agreed: {reason}")]
    NotAgreed {
        /// The caller's reason.
        reason: String,
    },
    /// A reference optimizer (e.g. a PyTorch class) or one of its arguments has no moment
    /// equivalent (`moment_optim::port`).
    #[error("unsupported reference optimizer: {0}")]
    Port(#[from] PortError),
}

/// What is wrong with a checkpoint file, inside [`OptimError::Checkpoint`] (which names the
/// file). I/O and JSON errors are kept whole: [`source`](std::error::Error::source) returns the
/// [`std::io::Error`] or [`serde_json::Error`] itself (shared behind an [`Arc`] so that this
/// type is `Clone`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file cannot be read.
    Read(Arc<std::io::Error>),
    /// The file cannot be written, flushed or renamed into place (the previous file is intact).
    Write(Arc<std::io::Error>),
    /// The path names no file (it ends in `..` or a root).
    NotAFilePath,
    /// The file does not start with the checkpoint magic bytes.
    BadMagic,
    /// The file is shorter than the header.
    TruncatedHeader {
        /// The file's length.
        len: usize,
        /// The header's length.
        header: usize,
    },
    /// The header names a format this build does not read.
    UnsupportedFormat {
        /// The format in the file.
        found: u32,
        /// The format this build reads.
        supported: u32,
    },
    /// The payload is shorter than the header says.
    TruncatedPayload {
        /// Payload bytes present.
        have: u64,
        /// Payload bytes the header announces.
        expected: u64,
    },
    /// There are bytes after the payload.
    TrailingBytes {
        /// How many.
        extra: u64,
        /// The payload's announced length.
        payload: u64,
    },
    /// The payload's CRC-32C is not the header's.
    ChecksumMismatch {
        /// The checksum in the header.
        stored: u32,
        /// The payload's checksum.
        computed: u32,
    },
    /// The payload passed the checksum but is not a readable record.
    UnreadableRecord(Arc<serde_json::Error>),
    /// The record cannot be encoded as JSON.
    Encode(Arc<serde_json::Error>),
}

impl CheckpointError {
    /// The I/O error, for [`CheckpointError::Read`] and [`CheckpointError::Write`].
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Self::Read(e) | Self::Write(e) => Some(e),
            _ => None,
        }
    }
}

// Written out rather than derived: `thiserror` would return the `Arc` as the source, which
// does not downcast to `std::io::Error`.
impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(e) => write!(f, "cannot read: {e}"),
            Self::Write(e) => write!(f, "cannot save: {e}"),
            Self::NotAFilePath => f.write_str("not a file path"),
            Self::BadMagic => f.write_str("not a moment checkpoint (bad magic bytes)"),
            Self::TruncatedHeader { len, header } => {
                write!(
                    f,
                    "truncated: {len} bytes, shorter than the {header}-byte header"
                )
            }
            Self::UnsupportedFormat { found, supported } => {
                write!(
                    f,
                    "checkpoint format {found}; this build reads format {supported}"
                )
            }
            Self::TruncatedPayload { have, expected } => {
                write!(
                    f,
                    "truncated: the payload has {have} of its {expected} bytes"
                )
            }
            Self::TrailingBytes { extra, payload } => {
                write!(
                    f,
                    "{extra} unexpected bytes after the {payload}-byte payload"
                )
            }
            Self::ChecksumMismatch { stored, computed } => write!(
                f,
                "corrupted: payload checksum {computed:08x}, header says {stored:08x}"
            ),
            Self::UnreadableRecord(e) => write!(f, "corrupted: unreadable record ({e})"),
            Self::Encode(e) => write!(f, "cannot encode the record: {e}"),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read(e) | Self::Write(e) => Some(&**e),
            Self::UnreadableRecord(e) | Self::Encode(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A reference optimizer that `moment_optim::port` cannot carry over, inside
/// [`OptimError::Port`]. (A value of the wrong type or range, or an argument name the port
/// does not know, is an [`OptimError::InvalidConfig`] of optimizer `"port"` instead.)
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PortError {
    /// The class is not in the port table.
    #[error("`{class}` is not implemented in moment yet (supported: {})", supported.join(", "))]
    UnknownClass {
        /// The class name as given.
        class: String,
        /// Every class name the table accepts (`moment_optim::port::SUPPORTED_CLASSES`).
        supported: &'static [&'static str],
    },
    /// An argument of a supported class takes a value (or enables a behaviour) moment does not
    /// implement.
    #[error("{reason}")]
    UnsupportedArgument {
        /// The reference argument.
        argument: &'static str,
        /// What is not implemented, naming the class and the value (and what to do instead).
        reason: String,
    },
}

impl OptimError {
    /// Shorthand for an [`OptimError::InvalidConfig`].
    pub fn invalid(
        optimizer: &'static str,
        field: &'static str,
        value: impl fmt::Display,
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

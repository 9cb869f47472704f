//! The monitor's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the monitor, its sinks, plots and reports.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Invalid settings.
    #[error("invalid monitor configuration: {0}")]
    Config(String),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A saved run could not be parsed.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when not line-oriented).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Drawing failed.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The image being drawn.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl MonitorError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

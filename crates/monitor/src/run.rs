//! [`Run`]: a named run's records, the data every plot and report reads.

use std::path::Path;

use crate::error::MonitorError;
use crate::record::StepRecord;

/// A named run: what the plots and reports read.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Display name (e.g. the optimizer).
    pub name: String,
    /// Its records in step order.
    pub records: Vec<StepRecord>,
}

impl Run {
    /// A run from records.
    pub fn new(name: impl Into<String>, records: Vec<StepRecord>) -> Self {
        Self {
            name: name.into(),
            records,
        }
    }

    /// Read a run saved as JSON Lines.
    pub fn from_jsonl(
        name: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, MonitorError> {
        Ok(Self::new(name, crate::sink::read_jsonl(path)?))
    }
}

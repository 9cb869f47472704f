//! Where finished records go: JSON Lines (full), CSV (flat scalars), memory; TensorBoard in
//! [`crate::tensorboard`].

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::MonitorError;
use crate::record::StepRecord;

/// Receives every finished [`StepRecord`].
pub trait Sink: Send {
    /// Write one record.
    fn write(&mut self, record: &StepRecord) -> Result<(), MonitorError>;
    /// Push buffered output to its destination.
    fn flush(&mut self) -> Result<(), MonitorError>;
}

fn create(path: &Path) -> Result<BufWriter<File>, MonitorError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| MonitorError::io(dir, e))?;
    }
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| MonitorError::io(path, e))
}

/// One JSON object per record and line, every field (see [`StepRecord`]).
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlSink {
    /// Create (truncate) `path`, making its directory if needed.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, MonitorError> {
        let path = path.as_ref().to_path_buf();
        Ok(Self {
            out: create(&path)?,
            path,
        })
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, r: &StepRecord) -> Result<(), MonitorError> {
        let line = serde_json::to_string(r).map_err(|e| MonitorError::Parse {
            path: self.path.clone(),
            line: 0,
            reason: e.to_string(),
        })?;
        writeln!(self.out, "{line}").map_err(|e| MonitorError::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<(), MonitorError> {
        self.out
            .flush()
            .map_err(|e| MonitorError::io(&self.path, e))
    }
}

/// Read a run saved by [`JsonlSink`] (blank lines are ignored).
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<StepRecord>, MonitorError> {
    let path = path.as_ref();
    let f = File::open(path).map_err(|e| MonitorError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| MonitorError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| MonitorError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 17] = [
    "step",
    "wall_s",
    "step_time_s",
    "tokens_per_s",
    "loss",
    "lr",
    "grad_norm",
    "clip_threshold",
    "clipped",
    "clip_rate",
    "non_finite",
    "skipped",
    "update_to_weight",
    "state_bytes",
    "peak_rss_bytes",
    "spikes",
    "refused",
];

/// Columns of files written before the `refused` column existed (still read by [`read_csv`]).
const LEGACY_COLUMNS: usize = 16;

/// Flat scalars, one row per record ([`CSV_COLUMNS`]; empty cell = not recorded; `refused`
/// is 1 for a step the optimizer refused, whose reason is in the JSONL record).
#[derive(Debug)]
pub struct CsvSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl CsvSink {
    /// Create (truncate) `path` and write the header.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, MonitorError> {
        let path = path.as_ref().to_path_buf();
        let mut out = create(&path)?;
        writeln!(out, "{}", CSV_COLUMNS.join(",")).map_err(|e| MonitorError::io(&path, e))?;
        Ok(Self { path, out })
    }
}

fn cell<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

/// A record as the CSV row's cells.
pub fn csv_row(r: &StepRecord) -> Vec<String> {
    let mem = r.memory.as_ref();
    vec![
        r.step.to_string(),
        r.wall_s.to_string(),
        cell(r.step_time_s),
        cell(r.tokens_per_s),
        cell(r.loss),
        r.lr.to_string(),
        r.grad_norm.to_string(),
        cell(r.clip_threshold),
        u8::from(r.clipped).to_string(),
        r.clip_rate.to_string(),
        r.non_finite.to_string(),
        u8::from(r.skipped).to_string(),
        cell(r.update_to_weight()),
        cell(mem.map(|m| m.state_bytes)),
        cell(mem.and_then(|m| m.peak_rss_bytes)),
        r.spikes.len().to_string(),
        u8::from(r.refused.is_some()).to_string(),
    ]
}

impl Sink for CsvSink {
    fn write(&mut self, r: &StepRecord) -> Result<(), MonitorError> {
        writeln!(self.out, "{}", csv_row(r).join(",")).map_err(|e| MonitorError::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<(), MonitorError> {
        self.out
            .flush()
            .map_err(|e| MonitorError::io(&self.path, e))
    }
}

/// One CSV row read back: column name → value (`None` for an empty cell).
pub type CsvRow = Vec<(String, Option<f64>)>;

/// Read a file written by [`CsvSink`]; checks the header and that every cell is a number.
/// Files from before the `refused` column (the first 16 columns) read as they are, without it.
pub fn read_csv(path: impl AsRef<Path>) -> Result<Vec<CsvRow>, MonitorError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| MonitorError::io(path, e))?;
    let mut lines = text.lines();
    let bad = |line: usize, reason: String| MonitorError::Parse {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    if header != CSV_COLUMNS && header != CSV_COLUMNS[..LEGACY_COLUMNS] {
        return Err(bad(1, format!("header {header:?} is not {CSV_COLUMNS:?}")));
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let cells: Vec<&str> = l.split(',').collect();
            if cells.len() != header.len() {
                return Err(bad(
                    i + 2,
                    format!("{} cells, expected {}", cells.len(), header.len()),
                ));
            }
            header
                .iter()
                .zip(cells)
                .map(|(h, c)| {
                    let v = if c.is_empty() {
                        None
                    } else {
                        Some(
                            c.parse::<f64>()
                                .map_err(|e| bad(i + 2, format!("{h} = {c:?}: {e}")))?,
                        )
                    };
                    Ok((h.to_string(), v))
                })
                .collect()
        })
        .collect()
}

/// Keeps records in a shared vector (for tests and in-process consumers).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    records: Arc<Mutex<Vec<StepRecord>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the records written so far.
    pub fn records(&self) -> Vec<StepRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Sink for MemorySink {
    fn write(&mut self, r: &StepRecord) -> Result<(), MonitorError> {
        if let Ok(mut v) = self.records.lock() {
            v.push(r.clone());
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MonitorError> {
        Ok(())
    }
}

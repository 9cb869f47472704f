//! # moment-monitor
//!
//! What the optimizer is doing, as data and as plots. A [`Monitor`] is a moment-optim
//! [`Observer`](moment_optim::Observer): attach it to the optimizer and it turns every step into
//! a [`StepRecord`]:
//!
//! * every step: loss (from the loop), learning rate per group, global gradient norm before
//!   clipping, whether clipping engaged and the running clip rate, non-finite gradient counts
//!   and the policy applied, skipped steps, step time and tokens/s, exact optimizer-state bytes
//!   by kind, parameter and gradient bytes and the process's peak RSS (when the loop passes
//!   the optimizer's accounting);
//! * every step the optimizer refuses (a non-finite gradient under the default
//!   `NonFinitePolicy::Error`, a shape mismatch, …: moment-optim's
//!   [`RefusedStep`](moment_optim::RefusedStep)): a record whose [`StepRecord::refused`] says
//!   why, counted in the summary, marked on the dashboard and in [`MonitorMetric`];
//! * every `interval` steps, for the parameters a [`Selector`](moment_optim::Selector) picks:
//!   gradient, weight and update L2 norms, update/weight ratio, cos(update, gradient), and
//!   ‖s‖, ‖√s‖, min and max of every optimizer-state tensor (Sophia's win rate is one of its
//!   state tensors), aggregated per layer ([`LayerKey`]);
//! * spikes in the loss and the gradient norm (rolling robust z-score, [`SpikeConfig`]).
//!
//! Records go to sinks — [`JsonlSink`] (everything), [`CsvSink`] (flat scalars),
//! [`TensorBoardSink`] (scalar event files), [`MemorySink`] — and to [`plot`] (dashboard,
//! per-layer heatmap, multi-run overlay; PNG or SVG with an embedded font) and [`report`]
//! (markdown and terminal summaries). [`replot`] redraws a saved run without re-training.
//! With the `burn-train` feature (default), [`MonitorMetric`] shows the numbers in
//! burn-train's dashboard.
//!
//! ```ignore
//! let monitor = MonitorConfig::default().with_interval(10).build()?.shared();
//! monitor.lock().unwrap().add_sink(JsonlSink::create("runs/a/metrics.jsonl")?);
//! opt.set_observer(monitor.clone());
//! for step in 0.. {
//!     let loss = /* forward, backward */;
//!     opt.step(lr, &mut params)?;
//!     monitor.lock().unwrap().finish_step(
//!         StepInfo::new().loss(loss).tokens(n).memory(opt.state_memory()),
//!     )?;
//! }
//! monitor.lock().unwrap().flush()?;
//! ```

#[cfg(feature = "burn-train")]
mod burn_train;
mod error;
mod monitor;
pub mod plot;
mod record;
pub mod report;
mod run;
mod sink;
mod spike;
mod sys;
pub mod tensorboard;

use std::path::{Path, PathBuf};

#[cfg(feature = "burn-train")]
pub use burn_train::{MonitorMetric, MonitorQuantity};
pub use error::MonitorError;
pub use monitor::{LayerKey, Monitor, MonitorConfig, StepInfo, aggregate_layers};
pub use plot::{LayerMetric, Run};
pub use record::{
    LayerStats, MemoryRecord, ParamStats, Refusal, Spike, SpikeMetric, StateStats, StepRecord,
};
pub use report::Summary;
pub use sink::{CSV_COLUMNS, CsvRow, CsvSink, JsonlSink, MemorySink, Sink, read_csv, read_jsonl};
pub use spike::{SpikeCheck, SpikeConfig, SpikeDetector};
pub use sys::{peak_rss_bytes, rss_bytes};
pub use tensorboard::TensorBoardSink;

/// File names inside a run directory.
pub mod files {
    /// Full records, one JSON object per line.
    pub const METRICS_JSONL: &str = "metrics.jsonl";
    /// Flat scalars.
    pub const METRICS_CSV: &str = "metrics.csv";
    /// Dashboard image.
    pub const DASHBOARD_PNG: &str = "dashboard.png";
    /// Dashboard as SVG.
    pub const DASHBOARD_SVG: &str = "dashboard.svg";
    /// Per-layer update/weight heatmap.
    pub const LAYERS_PNG: &str = "layers.png";
    /// Markdown report.
    pub const REPORT_MD: &str = "report.md";
    /// The summary as JSON.
    pub const SUMMARY_JSON: &str = "summary.json";
}

/// Redraw a saved run from `dir/metrics.jsonl` without re-training: writes the dashboard (PNG
/// and SVG), the per-layer heatmap, `report.md` and `summary.json` into `dir`. `floor` is a
/// known lower bound on the loss. Returns the files written.
pub fn replot(dir: impl AsRef<Path>, floor: Option<f64>) -> Result<Vec<PathBuf>, MonitorError> {
    let dir = dir.as_ref();
    let name = dir
        .file_name()
        .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned());
    let run = Run::from_jsonl(name, dir.join(files::METRICS_JSONL))?;
    let out = |f: &str| dir.join(f);
    plot::dashboard(&run, out(files::DASHBOARD_PNG), (1400, 1000))?;
    plot::dashboard(&run, out(files::DASHBOARD_SVG), (1400, 1000))?;
    plot::layer_heatmap(
        &run,
        LayerMetric::UpdateToWeight,
        out(files::LAYERS_PNG),
        (1200, 600),
    )?;
    let summary = Summary::from_run(&run, floor);
    let md = report::markdown(
        &format!("Run {}", run.name),
        std::slice::from_ref(&summary),
        &[
            ("Dashboard".into(), files::DASHBOARD_PNG.into()),
            ("Update/weight per layer".into(), files::LAYERS_PNG.into()),
        ],
    );
    let write = |f: &str, text: String| {
        std::fs::write(out(f), text).map_err(|e| MonitorError::io(out(f), e))
    };
    write(files::REPORT_MD, md)?;
    let json = serde_json::to_string_pretty(&summary).map_err(|e| MonitorError::Parse {
        path: out(files::SUMMARY_JSON),
        line: 0,
        reason: e.to_string(),
    })?;
    write(files::SUMMARY_JSON, json)?;
    Ok([
        files::DASHBOARD_PNG,
        files::DASHBOARD_SVG,
        files::LAYERS_PNG,
        files::REPORT_MD,
        files::SUMMARY_JSON,
    ]
    .iter()
    .map(|f| out(f))
    .collect())
}

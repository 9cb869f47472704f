//! Run summaries as data, a markdown report and terminal text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::plot::Run;
use crate::record::SpikeMetric;

/// Steps averaged for [`Summary::final_loss`] and the moving average behind
/// [`Summary::best_loss`] (the per-step training loss is noisy).
pub const LOSS_WINDOW: usize = 10;

/// The numbers of one run that a report shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Run name.
    pub name: String,
    /// Steps in the run: its records, skipped steps included, refused ones not (they are
    /// counted in [`Summary::refused`]).
    pub steps: u64,
    /// Mean loss over the last [`LOSS_WINDOW`] steps with a loss.
    pub final_loss: Option<f64>,
    /// Lowest [`LOSS_WINDOW`]-step moving average of the loss.
    pub best_loss: Option<f64>,
    /// Last validation loss recorded.
    #[serde(default)]
    pub final_val_loss: Option<f64>,
    /// Lowest validation loss recorded.
    #[serde(default)]
    pub best_val_loss: Option<f64>,
    /// A known lower bound on the loss, when given.
    pub loss_floor: Option<f64>,
    /// `final_val_loss − loss_floor` when validated, else `final_loss − loss_floor`.
    pub gap_to_floor: Option<f64>,
    /// Wall time of the run (seconds, to the last record).
    pub wall_s: f64,
    /// Steps per second of wall time.
    pub steps_per_s: Option<f64>,
    /// Mean tokens per second over the steps that report tokens.
    pub tokens_per_s: Option<f64>,
    /// Largest resident set size sampled at the end of the run's steps (the run's own peak
    /// even when several runs share a process); the process's peak mark when not sampled.
    pub peak_rss_bytes: Option<u64>,
    /// Optimizer-state bytes at the last record with accounting.
    pub state_bytes: Option<u64>,
    /// The same by kind.
    pub state_by_kind: BTreeMap<String, u64>,
    /// State bytes per parameter element with state.
    pub state_bytes_per_param: Option<f64>,
    /// Loss spikes detected.
    pub loss_spikes: usize,
    /// Gradient-norm spikes detected.
    pub grad_norm_spikes: usize,
    /// Fraction of the steps that ran (neither skipped nor refused) on which clipping engaged.
    pub clip_rate: f64,
    /// Non-finite gradient elements over the run (refused steps' included).
    pub non_finite: u64,
    /// Skipped steps.
    pub skipped: u64,
    /// Steps the optimizer refused (nothing changed in them).
    #[serde(default)]
    pub refused: u64,
    /// Refused steps by kind (`NonFiniteGradient`, `ShapeMismatch`, …).
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
}

impl Summary {
    /// Summarize `run`; `floor` is a known lower bound on the loss (e.g. an entropy rate).
    pub fn from_run(run: &Run, floor: Option<f64>) -> Self {
        let recs = &run.records;
        let losses: Vec<f64> = recs
            .iter()
            .filter_map(|r| r.loss.filter(|l| l.is_finite()))
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let final_loss =
            (!losses.is_empty()).then(|| mean(&losses[losses.len().saturating_sub(LOSS_WINDOW)..]));
        let best_loss = if losses.len() >= LOSS_WINDOW {
            losses.windows(LOSS_WINDOW).map(mean).reduce(f64::min)
        } else {
            final_loss
        };
        let vals: Vec<f64> = recs
            .iter()
            .filter_map(|r| r.val_loss.filter(|l| l.is_finite()))
            .collect();
        let final_val_loss = vals.last().copied();
        let best_val_loss = vals.iter().copied().reduce(f64::min);
        let wall_s = recs.last().map_or(0.0, |r| r.wall_s);
        let tps: Vec<f64> = recs.iter().filter_map(|r| r.tokens_per_s).collect();
        let mem = recs.iter().rev().find_map(|r| r.memory.as_ref());
        let active = recs.iter().filter(|r| r.ran()).count();
        let steps = recs.iter().filter(|r| r.refused.is_none()).count() as u64;
        let mut refusals = BTreeMap::new();
        for r in recs.iter().filter_map(|r| r.refused.as_ref()) {
            *refusals.entry(r.kind.clone()).or_insert(0) += 1;
        }
        let count = |m: SpikeMetric| {
            recs.iter()
                .flat_map(|r| r.spikes.iter())
                .filter(|s| s.metric == m)
                .count()
        };
        Self {
            name: run.name.clone(),
            steps,
            final_loss,
            best_loss,
            final_val_loss,
            best_val_loss,
            loss_floor: floor,
            gap_to_floor: final_val_loss.or(final_loss).zip(floor).map(|(l, f)| l - f),
            wall_s,
            steps_per_s: (wall_s > 0.0).then(|| steps as f64 / wall_s),
            tokens_per_s: (!tps.is_empty()).then(|| mean(&tps)),
            peak_rss_bytes: recs
                .iter()
                .filter_map(|r| r.memory.as_ref().and_then(|m| m.rss_bytes))
                .max()
                .or_else(|| {
                    recs.iter()
                        .filter_map(|r| r.memory.as_ref().and_then(|m| m.peak_rss_bytes))
                        .max()
                }),
            state_bytes: mem.map(|m| m.state_bytes),
            state_by_kind: mem.map(|m| m.state_by_kind.clone()).unwrap_or_default(),
            state_bytes_per_param: mem
                .filter(|m| m.param_elements > 0)
                .map(|m| m.state_bytes as f64 / m.param_elements as f64),
            loss_spikes: count(SpikeMetric::Loss),
            grad_norm_spikes: count(SpikeMetric::GradNorm),
            clip_rate: if active > 0 {
                recs.iter().filter(|r| r.ran() && r.clipped).count() as f64 / active as f64
            } else {
                0.0
            },
            non_finite: recs.iter().map(|r| r.non_finite).sum(),
            skipped: recs.iter().filter(|r| r.skipped).count() as u64,
            refused: refusals.values().sum(),
            refusals,
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

fn mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "–".to_string(),
        |b| format!("{:.2}", b as f64 / (1 << 20) as f64),
    )
}

const HEADER: [&str; 16] = [
    "run",
    "steps",
    "final loss",
    "best loss",
    "final val",
    "best val",
    "gap to floor",
    "time s",
    "steps/s",
    "tokens/s",
    "peak RSS MiB",
    "state MiB",
    "state B/param",
    "spikes loss/grad",
    "clip rate",
    "refused",
];

fn row(s: &Summary) -> Vec<String> {
    vec![
        s.name.clone(),
        s.steps.to_string(),
        opt(s.final_loss, 4),
        opt(s.best_loss, 4),
        opt(s.final_val_loss, 4),
        opt(s.best_val_loss, 4),
        opt(s.gap_to_floor, 4),
        format!("{:.1}", s.wall_s),
        opt(s.steps_per_s, 2),
        opt(s.tokens_per_s, 0),
        mib(s.peak_rss_bytes),
        mib(s.state_bytes),
        opt(s.state_bytes_per_param, 2),
        format!("{}/{}", s.loss_spikes, s.grad_norm_spikes),
        format!("{:.1}%", 100.0 * s.clip_rate),
        s.refused.to_string(),
    ]
}

/// A markdown report: the summary table, state bytes by kind, non-finite events and refused
/// steps, and the plots (title, path relative to the report).
pub fn markdown(title: &str, summaries: &[Summary], plots: &[(String, String)]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {title}\n");
    if let Some(f) = summaries.iter().find_map(|s| s.loss_floor) {
        let _ = writeln!(o, "Loss floor (best achievable): {f:.4}.\n");
    }
    let _ = writeln!(o, "| {} |", HEADER.join(" | "));
    let _ = writeln!(o, "|{}", " --- |".repeat(HEADER.len()));
    for s in summaries {
        let _ = writeln!(o, "| {} |", row(s).join(" | "));
    }
    let _ = writeln!(
        o,
        "\nFinal loss: mean of the last {LOSS_WINDOW} training steps; best loss: lowest \
         {LOSS_WINDOW}-step moving average; val: held-out loss where the loop evaluated; gap to \
         floor uses the final validation loss when there is one.\n"
    );
    let _ = writeln!(o, "## Optimizer state by kind (bytes)\n");
    let _ = writeln!(o, "| run | kind | bytes |\n| --- | --- | ---: |");
    for s in summaries {
        for (k, b) in &s.state_by_kind {
            let _ = writeln!(o, "| {} | {k} | {b} |", s.name);
        }
    }
    let faults: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.non_finite > 0 || s.skipped > 0 || s.refused > 0)
        .collect();
    if !faults.is_empty() {
        let _ = writeln!(o, "\n## Non-finite gradients and refused steps\n");
        for s in faults {
            let kinds: Vec<String> = s
                .refusals
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let kinds = if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            };
            let _ = writeln!(
                o,
                "- {}: {} non-finite elements, {} skipped steps, {} refused steps{kinds}",
                s.name, s.non_finite, s.skipped, s.refused
            );
        }
    }
    if !plots.is_empty() {
        let _ = writeln!(o, "\n## Plots\n");
        for (t, p) in plots {
            let _ = writeln!(o, "### {t}\n\n![{t}]({p})\n");
        }
    }
    o
}

/// The summary table as aligned plain text for a terminal.
pub fn text(summaries: &[Summary]) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(HEADER.iter().map(|h| h.to_string()).collect())
        .chain(summaries.iter().map(row))
        .collect();
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut o = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        let _ = writeln!(o, "{}", cells.join("  ").trim_end());
    }
    o
}

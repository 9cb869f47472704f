//! The bench's JSON report (`--json`) and its schema check.
//!
//! The schema is the types below (unknown or missing fields are errors) plus the invariants
//! [`validate`] checks: every figure finite and positive where it must be, the minimum not
//! above the median, and every derived column (GB/s, % of bandwidth) recomputable from the
//! row's own figures — so a report cannot carry numbers its rows do not support.

use serde::{Deserialize, Serialize};

use super::pattern::floor_bytes;
use super::stats::{effective_gbps, pct_of};
use crate::model_bench::ModelRow;

/// The version of the report's layout; [`validate`] refuses any other.
pub const SCHEMA_VERSION: u32 = 2;

/// Implementations a row may name (torch rows add their version: `torch-fused 2.15.0`).
pub const IMPLS: &[&str] = &[
    "moment-fused",
    "moment-inpass",
    "moment-fused-clip",
    "moment-composed",
    "burn-optim",
    "torch-fused",
    "torch-foreach",
    "torch-fused-clip",
];

/// Optimizers a row may name.
pub const OPTIMIZERS: &[&str] = &[
    "adamw",
    "adam",
    "lion",
    "sophia",
    "adafactor",
    "adafactor-matrix",
    "adamw8bit",
];

/// Extra bytes per parameter of the clipped rows: the global norm needs the whole gradient
/// before the first update, one more read of it (f32).
pub const CLIP_EXTRA_BYTES: f64 = 4.0;

/// The floor of a row: `optimizer`'s one-pass bytes, plus [`CLIP_EXTRA_BYTES`] for the
/// clipped implementations (`moment-fused-clip`, `torch-fused-clip 2.15.0`).
pub fn row_floor_bytes(optimizer: &str, implementation: &str) -> f64 {
    let base = implementation.split(' ').next().unwrap_or("");
    floor_bytes(optimizer)
        + if base.ends_with("-clip") {
            CLIP_EXTRA_BYTES
        } else {
            0.0
        }
}

/// One optimizer step measurement (`results[]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// Optimizer (one of [`OPTIMIZERS`]).
    pub optimizer: String,
    /// Implementation (one of [`IMPLS`], torch's with its version appended).
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Backend the step ran on (`ndarray`, `flex`, `wgpu`, `cuda`, `torch-cpu`, `torch-cuda`).
    pub backend: String,
    /// Parameters (one flat tensor).
    pub numel: usize,
    /// Timed steps.
    pub reps: usize,
    /// Median step time.
    pub median_ms: f64,
    /// Fastest step.
    pub min_ms: f64,
    /// The bytes per parameter the step must move at least (its floor).
    pub bytes_per_param: f64,
    /// `bytes_per_param · numel / median`.
    pub gbps: f64,
    /// The streaming bandwidth of the row's access pattern over the same number of elements,
    /// measured right before and right after the row (the higher of the two).
    pub bandwidth_gbps: f64,
    /// `100 · gbps / bandwidth_gbps`.
    pub pct_of_bandwidth: f64,
    /// Optimizer state bytes per parameter (accounting API; torch: its two f32 moments).
    pub state_bytes_per_param: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The CPU's model name.
    pub host: String,
    /// `git rev-parse --short HEAD` of the working tree the bench ran in.
    pub git_rev: String,
    /// Threads of the CPU kernels (and torch's `set_num_threads`).
    pub threads: usize,
    /// `--quick` run.
    pub quick: bool,
    /// Why there are no torch rows, when there are none and they were asked for.
    pub torch_skipped: Option<String>,
    /// Step rows.
    pub results: Vec<Row>,
    /// Model-level rows (`--model`).
    pub model_results: Vec<ModelRow>,
}

/// Relative agreement of a stored derived figure with its recomputation (the JSON keeps
/// f64 to 17 significant digits, so only rounding of the arithmetic itself remains).
fn agrees(stored: f64, recomputed: f64) -> bool {
    (stored - recomputed).abs() <= 1e-9 * recomputed.abs().max(f64::MIN_POSITIVE)
}

/// Every way `report` breaks the schema's invariants (empty: it is valid).
pub fn validate(report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    if report.schema_version != SCHEMA_VERSION {
        problems.push(format!(
            "schema_version {} (expected {SCHEMA_VERSION})",
            report.schema_version
        ));
    }
    if report.threads == 0 {
        problems.push("threads is 0".into());
    }
    if report.results.is_empty() && report.model_results.is_empty() {
        problems.push("no results at all".into());
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in report.results.iter().enumerate() {
        let at = format!(
            "results[{i}] ({} {} {})",
            r.optimizer, r.implementation, r.numel
        );
        let mut bad = |what: String| problems.push(format!("{at}: {what}"));
        if !OPTIMIZERS.contains(&r.optimizer.as_str()) {
            bad(format!("unknown optimizer `{}`", r.optimizer));
        }
        let base_impl = r.implementation.split(' ').next().unwrap_or("");
        if !IMPLS.contains(&base_impl) {
            bad(format!("unknown impl `{}`", r.implementation));
        }
        if !seen.insert((&r.optimizer, base_impl, &r.backend, r.numel)) {
            bad("duplicate row".into());
        }
        if r.numel == 0 || r.reps == 0 {
            bad(format!("numel {} and reps {} must be > 0", r.numel, r.reps));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(r.min_ms) || !positive(r.median_ms) || r.min_ms > r.median_ms {
            bad(format!(
                "min {} ms / median {} ms: need 0 < min ≤ median",
                r.min_ms, r.median_ms
            ));
        }
        let floor = row_floor_bytes(&r.optimizer, &r.implementation);
        if r.bytes_per_param != floor {
            bad(format!(
                "bytes_per_param {} (the floor is {floor})",
                r.bytes_per_param
            ));
        }
        let gbps = effective_gbps(r.bytes_per_param, r.numel, r.median_ms / 1e3);
        if !agrees(r.gbps, gbps) {
            bad(format!(
                "gbps {} but bytes · numel / median = {gbps}",
                r.gbps
            ));
        }
        if !positive(r.bandwidth_gbps) {
            bad(format!(
                "bandwidth_gbps {} is not positive",
                r.bandwidth_gbps
            ));
        } else if !agrees(r.pct_of_bandwidth, pct_of(r.gbps, r.bandwidth_gbps)) {
            bad(format!(
                "pct_of_bandwidth {} but 100 · gbps / bandwidth_gbps = {}",
                r.pct_of_bandwidth,
                pct_of(r.gbps, r.bandwidth_gbps)
            ));
        }
        if !(r.state_bytes_per_param.is_finite() && r.state_bytes_per_param >= 0.0) {
            bad(format!("state_bytes_per_param {}", r.state_bytes_per_param));
        }
    }
    for (i, m) in report.model_results.iter().enumerate() {
        let at = format!("model_results[{i}] ({} {})", m.preset, m.optimizer);
        let times = [m.forward_ms, m.backward_ms, m.optimizer_ms, m.tokens_per_s];
        if m.params == 0 || m.tokens == 0 || !times.iter().all(|t| t.is_finite() && *t > 0.0) {
            problems.push(format!(
                "{at}: params, tokens, forward/backward/optimizer ms and tokens/s must be > 0"
            ));
        }
        let costs = [
            m.monitor_every_step_ms,
            m.monitor_every_step_pct,
            m.monitor_interval10_ms,
            m.monitor_interval10_pct,
            m.monitor_every_step_vs_optimizer,
            m.monitor_interval10_vs_optimizer,
        ];
        // a cost is a difference of two means: it may be slightly negative, never non-finite
        if !costs.iter().all(|c| c.is_finite()) {
            problems.push(format!("{at}: a monitor cost is not finite"));
        }
    }
    problems
}

/// Parses a report (strictly: unknown or missing fields are errors) and checks it.
pub fn parse_and_validate(text: &str) -> Result<Report, String> {
    let report: Report =
        serde_json::from_str(text).map_err(|e| format!("not a bench report: {e}"))?;
    let problems = validate(&report);
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(problems.join("\n"))
    }
}

/// The step rows as the markdown table `docs/benchmarks.md` shows (`bench --table JSON`).
pub fn markdown_table(report: &Report) -> String {
    let mut out = String::from(
        "| optimizer | impl | numel | median ms | min ms | bytes/param | GB/s | bandwidth GB/s | % of bandwidth | state B/param |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in &report.results {
        let numel = match r.numel {
            n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
            n => n.to_string(),
        };
        out.push_str(&format!(
            "| {} | {} | {numel} | {:.2} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.3} |\n",
            r.optimizer,
            r.implementation,
            r.median_ms,
            r.min_ms,
            r.bytes_per_param,
            r.gbps,
            r.bandwidth_gbps,
            r.pct_of_bandwidth,
            r.state_bytes_per_param
        ));
    }
    out
}

/// The model-level rows as the markdown table `docs/benchmarks.md` shows.
pub fn model_markdown_table(report: &Report) -> String {
    let mut out = String::from(
        "| model | params | optimizer | forward ms | backward ms | optimizer ms | tokens/s | monitor every step: ms, % of step, × optimizer | monitor interval 10: ms, % of step, × optimizer |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for m in &report.model_results {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.2} ms, {:.1}%, {:.2}× | {:.2} ms, {:.1}%, {:.2}× |\n",
            m.preset,
            m.params,
            m.optimizer,
            m.forward_ms,
            m.backward_ms,
            m.optimizer_ms,
            m.tokens_per_s,
            m.monitor_every_step_ms,
            m.monitor_every_step_pct,
            m.monitor_every_step_vs_optimizer,
            m.monitor_interval10_ms,
            m.monitor_interval10_pct,
            m.monitor_interval10_vs_optimizer,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(optimizer: &str, implementation: &str, numel: usize, median_ms: f64) -> Row {
        let bytes = row_floor_bytes(optimizer, implementation);
        let gbps = effective_gbps(bytes, numel, median_ms / 1e3);
        Row {
            optimizer: optimizer.into(),
            implementation: implementation.into(),
            backend: "ndarray".into(),
            numel,
            reps: 7,
            median_ms,
            min_ms: median_ms * 0.9,
            bytes_per_param: bytes,
            gbps,
            bandwidth_gbps: 50.0,
            pct_of_bandwidth: pct_of(gbps, 50.0),
            state_bytes_per_param: 8.0,
        }
    }

    fn report(results: Vec<Row>) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            host: "test".into(),
            git_rev: "abc".into(),
            threads: 2,
            quick: true,
            torch_skipped: None,
            results,
            model_results: Vec::new(),
        }
    }

    #[test]
    fn consistent_rows_pass_and_survive_a_json_round_trip() {
        let r = report(vec![
            row("adamw", "moment-fused", 1 << 20, 0.3),
            row("adamw", "moment-fused-clip", 1 << 20, 0.35),
            row("adamw", "torch-fused-clip 2.15.0", 1 << 20, 0.4),
        ]);
        assert_eq!(validate(&r), Vec::<String>::new());
        let text = serde_json::to_string_pretty(&r).unwrap();
        parse_and_validate(&text).unwrap();
    }

    #[test]
    fn every_broken_invariant_is_reported_with_its_row() {
        let good = row("lion", "moment-inpass", 1000, 1.0);
        let cases: Vec<(&str, Box<dyn Fn(&mut Row)>)> = vec![
            ("gbps", Box::new(|r| r.gbps *= 1.01)),
            ("pct_of_bandwidth", Box::new(|r| r.pct_of_bandwidth += 1.0)),
            ("bandwidth_gbps", Box::new(|r| r.bandwidth_gbps = 0.0)),
            ("min", Box::new(|r| r.min_ms = r.median_ms * 2.0)),
            ("min", Box::new(|r| r.median_ms = f64::NAN)),
            ("bytes_per_param", Box::new(|r| r.bytes_per_param = 28.0)),
            (
                "unknown optimizer",
                Box::new(|r| r.optimizer = "sgd".into()),
            ),
            (
                "unknown impl",
                Box::new(|r| r.implementation = "fast".into()),
            ),
            ("reps", Box::new(|r| r.reps = 0)),
            ("state_bytes", Box::new(|r| r.state_bytes_per_param = -1.0)),
        ];
        for (what, break_it) in cases {
            let mut bad = good.clone();
            break_it(&mut bad);
            let problems = validate(&report(vec![bad]));
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains(what) && p.contains("results[0]")),
                "{what}: {problems:?}"
            );
        }
        let dup = report(vec![good.clone(), good.clone()]);
        assert!(validate(&dup).iter().any(|p| p.contains("duplicate")));
        let mut old = report(vec![good]);
        old.schema_version = 1;
        assert!(validate(&old).iter().any(|p| p.contains("schema_version")));
        assert!(!validate(&report(Vec::new())).is_empty());
    }

    #[test]
    fn unknown_and_missing_fields_are_parse_errors() {
        let text =
            serde_json::to_string(&report(vec![row("adam", "moment-fused", 10, 1.0)])).unwrap();
        let extra = text.replacen("\"reps\":7", "\"reps\":7,\"speedup\":3.0", 1);
        assert!(parse_and_validate(&extra).unwrap_err().contains("speedup"));
        let missing = text.replacen("\"reps\":7,", "", 1);
        assert!(parse_and_validate(&missing).unwrap_err().contains("reps"));
    }
}

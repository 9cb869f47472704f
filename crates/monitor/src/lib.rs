//! # moment-monitor
//!
//! Watches an optimizer through moment-optim's [`Observer`] hook and keeps per-step records:
//! loss-independent step facts (learning rate, global gradient norm before clipping, whether
//! clipping engaged, non-finite counts, skipped steps) and, per parameter, the L2 norms of the
//! gradient, the weight, the applied update and each state tensor, plus the update-to-weight
//! ratio. Records can be written as JSON Lines.
//!
//! Not implemented yet: per-layer aggregation, spike detection, CSV/TensorBoard sinks, plots
//! and reports.

use std::io::Write;

use burn::tensor::backend::Backend;
use moment_optim::stats::l2_norms;
use moment_optim::{Observer, ParamView, StepReport};

/// Norms of one parameter at one step.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamStats {
    /// Parameter path.
    pub path: String,
    /// Group name.
    pub group: String,
    /// ‖g‖₂ of the gradient the optimizer consumed.
    pub grad_norm: f64,
    /// ‖θ‖₂ after the update.
    pub weight_norm: f64,
    /// ‖Δθ‖₂ of the applied update.
    pub update_norm: f64,
    /// ‖Δθ‖ / ‖θ‖ (0 when ‖θ‖ = 0).
    pub update_to_weight: f64,
    /// ‖s‖₂ of each state tensor, by state name.
    pub state_norms: Vec<(String, f64)>,
}

/// One observed step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Step counter after the step.
    pub step: u64,
    /// Learning rate passed to the step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether clipping engaged.
    pub clipped: bool,
    /// Non-finite gradient elements seen.
    pub non_finite: u64,
    /// Whether the step was skipped.
    pub skipped: bool,
    /// Per-parameter statistics (empty on unobserved or skipped steps).
    pub params: Vec<ParamStats>,
}

/// An [`Observer`] that records norms every `interval` steps.
#[derive(Debug, Clone)]
pub struct NormMonitor {
    interval: u64,
    pending: Vec<ParamStats>,
    records: Vec<StepRecord>,
}

impl NormMonitor {
    /// Record every `interval` steps (1 = every step; 0 is treated as 1).
    pub fn new(interval: u64) -> Self {
        Self {
            interval: interval.max(1),
            pending: Vec::new(),
            records: Vec::new(),
        }
    }

    /// Records so far.
    pub fn records(&self) -> &[StepRecord] {
        &self.records
    }

    /// Write every record as one JSON object per line.
    pub fn write_jsonl(&self, mut out: impl Write) -> std::io::Result<()> {
        for r in &self.records {
            writeln!(out, "{}", record_json(r))?;
        }
        Ok(())
    }
}

impl<B: Backend> Observer<B> for NormMonitor {
    fn wants(&self, step: u64) -> bool {
        step.is_multiple_of(self.interval) || step == 1
    }

    fn on_param(&mut self, v: &ParamView<'_, B>) {
        let states: Vec<_> = v.state.iter().flat_map(|s| s.tensors.iter()).collect();
        let mut tensors = vec![v.grad, v.param, v.update];
        tensors.extend(states.iter().map(|t| &t.tensor));
        let norms = l2_norms(&tensors);
        let (grad_norm, weight_norm, update_norm) = (norms[0], norms[1], norms[2]);
        self.pending.push(ParamStats {
            path: v.path.to_string(),
            group: v.group.to_string(),
            grad_norm,
            weight_norm,
            update_norm,
            update_to_weight: if weight_norm > 0.0 {
                update_norm / weight_norm
            } else {
                0.0
            },
            state_norms: states
                .iter()
                .zip(&norms[3..])
                .map(|(t, n)| (t.name.to_string(), *n))
                .collect(),
        });
    }

    fn on_step(&mut self, r: &StepReport) {
        self.records.push(StepRecord {
            step: r.step,
            lr: r.lr,
            grad_norm: r.grad_norm,
            clipped: r.clipped,
            non_finite: r.non_finite,
            skipped: r.skipped,
            params: std::mem::take(&mut self.pending),
        });
    }
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        "null".to_string()
    }
}

fn string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn record_json(r: &StepRecord) -> String {
    let params: Vec<String> = r
        .params
        .iter()
        .map(|p| {
            let states: Vec<String> = p
                .state_norms
                .iter()
                .map(|(k, v)| format!("{}:{}", string(k), num(*v)))
                .collect();
            format!(
                "{{\"path\":{},\"group\":{},\"grad_norm\":{},\"weight_norm\":{},\"update_norm\":{},\"update_to_weight\":{},\"state_norms\":{{{}}}}}",
                string(&p.path),
                string(&p.group),
                num(p.grad_norm),
                num(p.weight_norm),
                num(p.update_norm),
                num(p.update_to_weight),
                states.join(",")
            )
        })
        .collect();
    format!(
        "{{\"step\":{},\"lr\":{},\"grad_norm\":{},\"clipped\":{},\"non_finite\":{},\"skipped\":{},\"params\":[{}]}}",
        r.step,
        num(r.lr),
        num(r.grad_norm),
        r.clipped,
        r.non_finite,
        r.skipped,
        params.join(",")
    )
}

//! burn-train adapter (feature `burn-train`): [`MonitorMetric`] shows one of the monitor's
//! numbers in burn-train's dashboard and metric logs.
//!
//! ```ignore
//! let monitor = MonitorConfig::default().with_interval(10).build()?.shared();
//! optimizer.engine_mut().set_observer(monitor.clone());
//! let training = SupervisedTraining::new(dir, train, valid)
//!     .metric_train_numeric(MonitorMetric::new(monitor.clone(), MonitorQuantity::GradNorm))
//!     .metric_train_numeric(MonitorMetric::new(monitor.clone(), MonitorQuantity::UpdateToWeight));
//! ```
//!
//! The metric takes no model output (`Input = ()`, which every output adapts to) and reads the
//! monitor's latest record when burn-train updates it (after each training step).
//!
//! The Learner owns the optimizer and cannot see a refused step (a non-finite gradient under
//! `NonFinitePolicy::Error`, …): the monitor records it, [`MonitorQuantity::RefusedSteps`]
//! counts it, and every other quantity's displayed value says how many steps were refused
//! so far (`… (2 refused)`).

use std::sync::{Arc, Mutex};

use burn_train::metric::state::{FormatOptions, NumericMetricState};
use burn_train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use crate::monitor::Monitor;
use crate::record::StepRecord;

/// Which number a [`MonitorMetric`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorQuantity {
    /// Global gradient norm before clipping.
    GradNorm,
    /// ‖Δθ‖/‖θ‖ over the observed parameters (last observed step).
    UpdateToWeight,
    /// Fraction of steps so far on which clipping engaged (%).
    ClipRate,
    /// Optimizer-state memory (MiB; needs [`StepInfo::memory`](crate::StepInfo::memory)).
    StateMemory,
    /// Non-finite gradient elements in the step.
    NonFinite,
    /// Spikes detected so far.
    Spikes,
    /// Steps the optimizer refused so far (nothing changed in them).
    RefusedSteps,
}

impl MonitorQuantity {
    fn name(self) -> &'static str {
        match self {
            MonitorQuantity::GradNorm => "Grad Norm",
            // burn-train's file logger uses the name as a file name: no path separators.
            MonitorQuantity::UpdateToWeight => "Update to Weight",
            MonitorQuantity::ClipRate => "Clip Rate",
            MonitorQuantity::StateMemory => "Optimizer State",
            MonitorQuantity::NonFinite => "Non-finite Grads",
            MonitorQuantity::Spikes => "Spikes",
            MonitorQuantity::RefusedSteps => "Refused Steps",
        }
    }

    fn unit(self) -> Option<&'static str> {
        match self {
            MonitorQuantity::ClipRate => Some("%"),
            MonitorQuantity::StateMemory => Some("MiB"),
            _ => None,
        }
    }

    /// The value from the monitor's latest record (`None` when it has none).
    pub fn read(self, m: &Monitor) -> Option<f64> {
        let last_observed = || {
            m.latest()
                .into_iter()
                .chain(m.records().iter().rev())
                .find_map(StepRecord::update_to_weight)
        };
        let r = m.latest()?;
        match self {
            MonitorQuantity::GradNorm => Some(r.grad_norm),
            MonitorQuantity::UpdateToWeight => r.update_to_weight().or_else(last_observed),
            MonitorQuantity::ClipRate => Some(100.0 * r.clip_rate),
            MonitorQuantity::StateMemory => m
                .records()
                .iter()
                .rev()
                .find_map(|r| r.memory.as_ref())
                .map(|mem| mem.state_bytes as f64 / (1 << 20) as f64),
            MonitorQuantity::NonFinite => Some(r.non_finite as f64),
            MonitorQuantity::Spikes => Some(m.spikes().len() as f64),
            MonitorQuantity::RefusedSteps => Some(m.refused_steps() as f64),
        }
    }
}

/// A burn-train numeric metric that reads a shared [`Monitor`].
#[derive(Clone)]
pub struct MonitorMetric {
    monitor: Arc<Mutex<Monitor>>,
    quantity: MonitorQuantity,
    name: MetricName,
    state: NumericMetricState,
}

impl MonitorMetric {
    /// Show `quantity` of `monitor`.
    pub fn new(monitor: Arc<Mutex<Monitor>>, quantity: MonitorQuantity) -> Self {
        Self {
            monitor,
            quantity,
            name: Arc::new(quantity.name().to_string()),
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for MonitorMetric {
    type Input = ();

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: self.quantity.unit().map(str::to_string),
            higher_is_better: false,
        }
        .into()
    }

    fn update(&mut self, _: &(), _: &MetricMetadata) -> SerializedEntry {
        let (value, refused) = self
            .monitor
            .lock()
            .ok()
            .map_or((None, 0), |m| (self.quantity.read(&m), m.refused_steps()));
        let mut format = FormatOptions::new(self.name.clone()).precision(4);
        if let Some(u) = self.quantity.unit() {
            format = format.unit(u);
        }
        let mut entry = self.state.update(value.unwrap_or(f64::NAN), 1, format);
        if refused > 0 && self.quantity != MonitorQuantity::RefusedSteps {
            entry.formatted.push_str(&format!(" ({refused} refused)"));
        }
        entry
    }

    fn clear(&mut self) {
        self.state.reset();
    }
}

impl Numeric for MonitorMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

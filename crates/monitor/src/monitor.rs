//! The [`Monitor`]: an [`Observer`] that turns each optimizer step into a [`StepRecord`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use moment_optim::stats::{overflow_safe_sumsq, read_scalars};
use moment_optim::{
    Observer, OptimError, ParamView, RefusedStep, Selector, StateMemory, StepReport,
};

use crate::error::MonitorError;
use crate::record::{
    LayerStats, MemoryRecord, ParamStats, Refusal, Spike, SpikeMetric, StateStats, StepRecord,
};
use crate::sink::Sink;
use crate::spike::{SpikeConfig, SpikeDetector};

/// How parameter paths are grouped into layers for the per-layer aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LayerKey {
    /// Up to and including the first numeric path component (`model.blocks.3.attn.q.weight`
    /// → `model.blocks.3`); without one, the path minus its last component (`lm_head.weight`
    /// → `lm_head`).
    #[default]
    Block,
    /// The first `n` path components.
    Depth(usize),
    /// Every parameter is its own layer.
    Param,
}

impl LayerKey {
    /// The layer of `path`.
    pub fn layer_of(&self, path: &str) -> String {
        let parts: Vec<&str> = path.split('.').collect();
        let n = match self {
            LayerKey::Block => match parts.iter().position(|p| p.parse::<u64>().is_ok()) {
                Some(i) => i + 1,
                None => parts.len().saturating_sub(1).max(1),
            },
            LayerKey::Depth(d) => (*d).clamp(1, parts.len()),
            LayerKey::Param => parts.len(),
        };
        parts[..n].join(".")
    }
}

/// Settings of a [`Monitor`].
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Per-parameter statistics every `interval` steps (and on step 1). Step-level facts
    /// (loss, lr, global norm, clipping, non-finite counts, memory, time) are recorded every step.
    pub interval: u64,
    /// Parameters to observe (`None`: all). Unobserved parameters cost nothing.
    pub filter: Option<Selector>,
    /// How paths are grouped into layers.
    pub layers: LayerKey,
    /// Keep per-parameter statistics in the records (layers are always kept).
    pub per_param: bool,
    /// Statistics of every optimizer-state tensor (‖s‖, ‖√s‖, min, max).
    pub state_stats: bool,
    /// Spike detection on the loss (`None`: off).
    pub loss_spikes: Option<SpikeConfig>,
    /// Spike detection on the global gradient norm (`None`: off).
    pub grad_norm_spikes: Option<SpikeConfig>,
    /// Keep finished records in memory ([`Monitor::records`]); turn off for very long runs
    /// that only write to sinks.
    pub keep_records: bool,
}

impl Default for MonitorConfig {
    /// Every step, all parameters, layers by block, per-parameter and state statistics on,
    /// default spike detection on both series, records kept.
    fn default() -> Self {
        Self {
            interval: 1,
            filter: None,
            layers: LayerKey::Block,
            per_param: true,
            state_stats: true,
            loss_spikes: Some(SpikeConfig::default()),
            grad_norm_spikes: Some(SpikeConfig::default()),
            keep_records: true,
        }
    }
}

impl MonitorConfig {
    /// Observe every `interval` steps.
    pub fn with_interval(mut self, interval: u64) -> Self {
        self.interval = interval;
        self
    }

    /// Observe only the parameters `filter` selects.
    pub fn with_filter(mut self, filter: Selector) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Group paths into layers by `key`.
    pub fn with_layers(mut self, key: LayerKey) -> Self {
        self.layers = key;
        self
    }

    /// Keep (or drop) per-parameter statistics in the records.
    pub fn with_per_param(mut self, on: bool) -> Self {
        self.per_param = on;
        self
    }

    /// Compute (or skip) optimizer-state statistics.
    pub fn with_state_stats(mut self, on: bool) -> Self {
        self.state_stats = on;
        self
    }

    /// Spike detection settings for the loss and the gradient norm.
    pub fn with_spikes(
        mut self,
        loss: Option<SpikeConfig>,
        grad_norm: Option<SpikeConfig>,
    ) -> Self {
        self.loss_spikes = loss;
        self.grad_norm_spikes = grad_norm;
        self
    }

    /// Build the monitor.
    pub fn build(self) -> Result<Monitor, MonitorError> {
        Monitor::new(self)
    }
}

/// What the training loop knows about a step that the optimizer does not.
#[derive(Debug, Clone, Default)]
pub struct StepInfo {
    /// Training loss of the step.
    pub loss: Option<f64>,
    /// Validation loss, when the loop evaluated at this step.
    pub val_loss: Option<f64>,
    /// Tokens processed.
    pub tokens: Option<u64>,
    /// Wall time of the whole step (default: time since the previous step finished).
    pub step_time: Option<Duration>,
    /// The optimizer's state accounting (`MomentOptimizer::state_memory`).
    pub memory: Option<StateMemory>,
}

impl StepInfo {
    /// Nothing known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The step's loss.
    pub fn loss(mut self, loss: f64) -> Self {
        self.loss = Some(loss);
        self
    }

    /// A validation loss measured after the step.
    pub fn val_loss(mut self, loss: f64) -> Self {
        self.val_loss = Some(loss);
        self
    }

    /// Tokens processed by the step.
    pub fn tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Wall time of the step.
    pub fn step_time(mut self, t: Duration) -> Self {
        self.step_time = Some(t);
        self
    }

    /// The optimizer's state accounting.
    pub fn memory(mut self, memory: StateMemory) -> Self {
        self.memory = Some(memory);
        self
    }
}

/// The optimizer monitor. Attach it to an optimizer as an [`Observer`] (through
/// [`Monitor::shared`]), then call [`Monitor::finish_step`] after each optimizer step with what
/// the loop knows (loss, tokens, accounting). A step not finished explicitly is finished when
/// the next one arrives, or by [`Monitor::flush`].
pub struct Monitor {
    config: MonitorConfig,
    start: Instant,
    last_finish: Option<Instant>,
    float_bytes: u64,
    pending: Vec<ParamStats>,
    current: Option<StepRecord>,
    records: Vec<StepRecord>,
    last: Option<StepRecord>,
    sinks: Vec<Box<dyn Sink>>,
    sink_error: Option<MonitorError>,
    loss_detector: Option<SpikeDetector>,
    grad_detector: Option<SpikeDetector>,
    spikes: Vec<Spike>,
    steps_seen: u64,
    steps_clipped: u64,
    steps_refused: u64,
    observe_time: Duration,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("config", &self.config)
            .field("records", &self.records.len())
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Monitor {
    /// A monitor with validated settings.
    pub fn new(config: MonitorConfig) -> Result<Self, MonitorError> {
        if config.interval == 0 {
            return Err(MonitorError::Config("interval must be ≥ 1".into()));
        }
        if let LayerKey::Depth(0) = config.layers {
            return Err(MonitorError::Config("LayerKey::Depth must be ≥ 1".into()));
        }
        let loss_detector = config.loss_spikes.map(SpikeDetector::new).transpose()?;
        let grad_detector = config
            .grad_norm_spikes
            .map(SpikeDetector::new)
            .transpose()?;
        Ok(Self {
            config,
            start: Instant::now(),
            last_finish: None,
            float_bytes: 4,
            pending: Vec::new(),
            current: None,
            records: Vec::new(),
            last: None,
            sinks: Vec::new(),
            sink_error: None,
            loss_detector,
            grad_detector,
            spikes: Vec::new(),
            steps_seen: 0,
            steps_clipped: 0,
            steps_refused: 0,
            observe_time: Duration::ZERO,
        })
    }

    /// Add a sink; every finished record is written to it.
    pub fn add_sink(&mut self, sink: impl Sink + 'static) -> &mut Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Wrap for sharing with the optimizer: `opt.set_observer(mon.clone())` accepts it.
    pub fn shared(self) -> Arc<Mutex<Monitor>> {
        Arc::new(Mutex::new(self))
    }

    /// The settings.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Finished records (when [`MonitorConfig::keep_records`]).
    pub fn records(&self) -> &[StepRecord] {
        &self.records
    }

    /// The most recent record, finished or not.
    pub fn latest(&self) -> Option<&StepRecord> {
        self.current.as_ref().or(self.last.as_ref())
    }

    /// Every spike detected so far.
    pub fn spikes(&self) -> &[Spike] {
        &self.spikes
    }

    /// Steps the optimizer refused so far (each is a record with
    /// [`StepRecord::refused`] set).
    pub fn refused_steps(&self) -> u64 {
        self.steps_refused
    }

    /// Time spent computing per-parameter statistics (the monitor's own cost, excluding the
    /// engine's extra copies for observed parameters).
    pub fn observe_time(&self) -> Duration {
        self.observe_time
    }

    /// Finish the current step with what the loop knows; writes it to the sinks. Returns the
    /// first sink error since the last call, if any. A refused optimizer step is a current
    /// step too (its record gets the loss, tokens and time given here); without a current
    /// step (already finished) this does nothing.
    pub fn finish_step(&mut self, info: StepInfo) -> Result<(), MonitorError> {
        if let Some(rec) = self.current.take() {
            self.finish(rec, info);
        }
        self.sink_error.take().map_or(Ok(()), Err)
    }

    /// Finish any pending step and flush every sink.
    pub fn flush(&mut self) -> Result<(), MonitorError> {
        if let Some(rec) = self.current.take() {
            self.finish(rec, StepInfo::default());
        }
        for s in &mut self.sinks {
            if let Err(e) = s.flush()
                && self.sink_error.is_none()
            {
                self.sink_error = Some(e);
            }
        }
        self.sink_error.take().map_or(Ok(()), Err)
    }

    fn finish(&mut self, mut rec: StepRecord, info: StepInfo) {
        let now = Instant::now();
        let since = now - self.last_finish.unwrap_or(self.start);
        self.last_finish = Some(now);
        rec.wall_s = (now - self.start).as_secs_f64();
        let dt = info.step_time.unwrap_or(since).as_secs_f64();
        rec.step_time_s = Some(dt);
        rec.tokens = info.tokens;
        rec.tokens_per_s = info.tokens.filter(|_| dt > 0.0).map(|t| t as f64 / dt);
        rec.loss = info.loss;
        rec.val_loss = info.val_loss;
        if let Some(mem) = info.memory {
            let param_bytes = mem.param_elements * self.float_bytes;
            rec.memory = Some(MemoryRecord {
                state_bytes: mem.total_bytes,
                state_by_kind: mem.by_kind,
                param_elements: mem.param_elements,
                param_bytes,
                grad_bytes: param_bytes,
                peak_rss_bytes: crate::sys::peak_rss_bytes(),
                rss_bytes: crate::sys::rss_bytes(),
            });
        }
        if rec.ran() {
            let mut spikes = Vec::new();
            if let (Some(d), Some(loss)) = (&mut self.loss_detector, rec.loss)
                && let Some(c) = d.push(loss)
            {
                spikes.push(Spike {
                    step: rec.step,
                    metric: SpikeMetric::Loss,
                    value: loss,
                    median: c.median,
                    z: c.z,
                });
            }
            if let Some(d) = &mut self.grad_detector
                && let Some(c) = d.push(rec.grad_norm)
            {
                spikes.push(Spike {
                    step: rec.step,
                    metric: SpikeMetric::GradNorm,
                    value: rec.grad_norm,
                    median: c.median,
                    z: c.z,
                });
            }
            self.spikes.extend(spikes.iter().cloned());
            rec.spikes = spikes;
        }
        for s in &mut self.sinks {
            if let Err(e) = s.write(&rec)
                && self.sink_error.is_none()
            {
                self.sink_error = Some(e);
            }
        }
        if self.config.keep_records {
            self.records.push(rec.clone());
        }
        self.last = Some(rec);
    }

    fn param_stats<B: Backend>(&self, v: &ParamView<'_, B>) -> ParamStats {
        let numel = v.grad.dims()[0] as u64;
        let states: Vec<_> = if self.config.state_stats {
            v.state
                .iter()
                .flat_map(|s| s.tensors.iter())
                .filter(|t| t.tensor.dims()[0] > 0)
                .collect()
        } else {
            Vec::new()
        };
        let (g, p, u) = (v.grad, v.param, v.update);
        let mut scalars = Vec::with_capacity(4 + 4 * states.len());
        if numel > 0 {
            scalars.push(g.clone().square().sum());
            scalars.push(p.clone().square().sum());
            scalars.push(u.clone().square().sum());
            scalars.push(u.clone().mul(g.clone()).sum());
        }
        for s in &states {
            let t = &s.tensor;
            scalars.push(t.clone().square().sum());
            scalars.push(t.clone().min());
            scalars.push(t.clone().max());
            scalars.push(t.clone().sum());
        }
        let vals = read_scalars(scalars);
        let norm = |sumsq: f64, t: &Tensor<B, 1>| {
            if sumsq.is_finite() {
                sumsq.sqrt()
            } else {
                overflow_safe_sumsq(t).sqrt()
            }
        };
        let (gn, wn, un, dot) = if numel > 0 {
            (
                norm(vals[0], g),
                norm(vals[1], p),
                norm(vals[2], u),
                vals[3],
            )
        } else {
            (0.0, 0.0, 0.0, 0.0)
        };
        let dot = if dot.is_finite() || !(gn.is_finite() && un.is_finite()) || gn * un == 0.0 {
            dot
        } else {
            // Σ u·g overflowed for finite tensors: rescale both by their norms.
            let c = read_scalars(vec![
                u.clone()
                    .div_scalar(un as f32)
                    .mul(g.clone().div_scalar(gn as f32))
                    .sum(),
            ]);
            c[0] * un * gn
        };
        let base = if numel > 0 { 4 } else { 0 };
        let state_stats = states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let k = base + 4 * i;
                let (min, max, sum) = (vals[k + 1], vals[k + 2], vals[k + 3]);
                StateStats {
                    name: s.name.to_string(),
                    numel: s.tensor.dims()[0] as u64,
                    norm: norm(vals[k], &s.tensor),
                    sqrt_norm: (min >= 0.0).then(|| sum.sqrt()),
                    min,
                    max,
                }
            })
            .collect();
        ParamStats {
            path: v.path.to_string(),
            group: v.group.to_string(),
            layer: self.config.layers.layer_of(v.path),
            numel,
            grad_norm: gn,
            weight_norm: wn,
            update_norm: un,
            update_to_weight: ratio(un, wn),
            update_dot_grad: dot,
            cos_update_grad: ratio(dot, un * gn),
            states: state_stats,
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Aggregate per-parameter statistics into layers (in order of first appearance).
pub fn aggregate_layers(params: &[ParamStats]) -> Vec<LayerStats> {
    let mut order: Vec<String> = Vec::new();
    let mut acc: BTreeMap<&str, (u32, u64, f64, f64, f64, f64)> = BTreeMap::new();
    for p in params {
        let e = acc.entry(p.layer.as_str()).or_insert_with(|| {
            order.push(p.layer.clone());
            (0, 0, 0.0, 0.0, 0.0, 0.0)
        });
        e.0 += 1;
        e.1 += p.numel;
        e.2 += p.grad_norm * p.grad_norm;
        e.3 += p.weight_norm * p.weight_norm;
        e.4 += p.update_norm * p.update_norm;
        e.5 += p.update_dot_grad;
    }
    order
        .iter()
        .map(|layer| {
            let (n, numel, g2, w2, u2, dot) = acc[layer.as_str()];
            let (g, w, u) = (g2.sqrt(), w2.sqrt(), u2.sqrt());
            LayerStats {
                layer: layer.clone(),
                params: n,
                numel,
                grad_norm: g,
                weight_norm: w,
                update_norm: u,
                update_to_weight: ratio(u, w),
                cos_update_grad: ratio(dot, u * g),
            }
        })
        .collect()
}

impl<B: Backend> Observer<B> for Monitor {
    fn wants(&self, step: u64) -> bool {
        step == 1 || step.is_multiple_of(self.config.interval)
    }

    fn wants_param(&self, path: &str, shape: &[usize]) -> bool {
        self.config
            .filter
            .as_ref()
            .is_none_or(|f| f.matches(path, shape))
    }

    fn on_param(&mut self, v: &ParamView<'_, B>) {
        let t0 = Instant::now();
        let stats = self.param_stats(v);
        self.pending.push(stats);
        self.observe_time += t0.elapsed();
    }

    fn on_step(&mut self, r: &StepReport) {
        if let Some(prev) = self.current.take() {
            self.finish(prev, StepInfo::default());
        }
        self.float_bytes = size_of::<B::FloatElem>() as u64;
        if !r.skipped {
            self.steps_seen += 1;
            self.steps_clipped += u64::from(r.clipped);
        }
        let params = std::mem::take(&mut self.pending);
        let layers = aggregate_layers(&params);
        self.current = Some(StepRecord {
            step: r.step,
            wall_s: 0.0,
            step_time_s: None,
            tokens: None,
            tokens_per_s: None,
            loss: None,
            val_loss: None,
            lr: r.lr,
            group_lrs: r.group_lrs.iter().cloned().collect(),
            grad_norm: r.grad_norm,
            clip_threshold: r.clip_threshold,
            clipped: r.clipped,
            clip_rate: ratio(self.steps_clipped as f64, self.steps_seen as f64),
            non_finite: r.non_finite,
            non_finite_paths: r.non_finite_paths.clone(),
            policy: format!("{:?}", r.policy),
            skipped: r.skipped,
            memory: None,
            params: if self.config.per_param {
                params
            } else {
                Vec::new()
            },
            layers,
            spikes: Vec::new(),
            refused: None,
        });
    }

    fn on_refused(&mut self, r: &RefusedStep) {
        if let Some(prev) = self.current.take() {
            self.finish(prev, StepInfo::default());
        }
        self.pending.clear();
        self.steps_refused += 1;
        let (non_finite, non_finite_paths) = match &r.error {
            OptimError::NonFiniteGradient { paths, count, .. } => (*count, paths.clone()),
            _ => (0, Vec::new()),
        };
        self.current = Some(StepRecord {
            step: r.step,
            wall_s: 0.0,
            step_time_s: None,
            tokens: None,
            tokens_per_s: None,
            loss: None,
            val_loss: None,
            lr: r.lr,
            group_lrs: BTreeMap::new(),
            grad_norm: f64::NAN,
            clip_threshold: None,
            clipped: false,
            clip_rate: ratio(self.steps_clipped as f64, self.steps_seen as f64),
            non_finite,
            non_finite_paths,
            policy: format!("{:?}", r.policy),
            skipped: false,
            memory: None,
            params: Vec::new(),
            layers: Vec::new(),
            spikes: Vec::new(),
            refused: Some(Refusal {
                kind: r.kind().to_string(),
                path: r.path().map(str::to_string),
                reason: r.reason(),
            }),
        });
    }
}

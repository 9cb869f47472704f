//! Model-level timing for `cargo xtask bench --model`: a training step of the test transformer
//! split into forward, backward, optimizer and monitor time, per optimizer.
//!
//! Three copies of the model train side by side, one step each in turn (so machine noise hits
//! them alike): without a monitor, with the monitor every step (per-parameter and per-layer
//! norms, state statistics, memory accounting), and with the monitor every 10th step. The
//! monitor's cost is the extra optimizer time of a monitored copy plus its `finish_step`,
//! averaged over the timed steps, as a share of the unmonitored copy's whole step.

use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::optim::{GradientsParams, Optimizer};
use moment_model::{
    Corpus, MarkovConfig, MarkovCorpus, Split, TestModelConfig, TestModelForCausalLM, TokenBatch,
};
use moment_monitor::{MonitorConfig, StepInfo};
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, AdamWConfig, Chain, LionConfig, ModuleOptimizer,
    MomentOptimizer, SophiaConfig,
};
use serde::{Deserialize, Serialize};

type B = NdArray<f32>;
type AB = Autodiff<B>;
type Error = Box<dyn std::error::Error>;

/// One model-level result (`--json` `model_results[]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRow {
    /// Model preset (`tiny`, `small`).
    pub preset: String,
    /// Parameters.
    pub params: usize,
    /// Optimizer.
    pub optimizer: String,
    /// Tokens per step.
    pub tokens: usize,
    /// Median forward time (ms).
    pub forward_ms: f64,
    /// Median backward time, gradients collected (ms).
    pub backward_ms: f64,
    /// Median optimizer step time without a monitor (ms).
    pub optimizer_ms: f64,
    /// Mean monitor cost with per-layer norms every step (ms per step).
    pub monitor_every_step_ms: f64,
    /// The same as a % of the unmonitored step.
    pub monitor_every_step_pct: f64,
    /// Mean monitor cost at interval 10 (ms per step).
    pub monitor_interval10_ms: f64,
    /// The same as a % of the unmonitored step.
    pub monitor_interval10_pct: f64,
    /// Monitor cost every step relative to the unmonitored optimizer step alone (mean/mean:
    /// 1.0 = the monitor costs as much as the step it observes).
    pub monitor_every_step_vs_optimizer: f64,
    /// The same at interval 10.
    pub monitor_interval10_vs_optimizer: f64,
    /// Tokens per second of the unmonitored step (median).
    pub tokens_per_s: f64,
}

/// An optimizer for the model bench by name.
pub fn model_chain(name: &str) -> Result<Chain<B>, Error> {
    Ok(match name {
        "adamw" => AdamWConfig::default().build()?,
        "lion" => LionConfig::default().build()?,
        "sophia" => SophiaConfig::g().build()?,
        "adafactor" => AdafactorConfig::transformers().build()?,
        "adamw8bit" => Adam8bitConfig::adamw().build()?,
        other => return Err(format!("unknown optimizer `{other}`").into()),
    })
}

struct Copy {
    model: Option<TestModelForCausalLM<AB>>,
    optim: ModuleOptimizer<TestModelForCausalLM<AB>, AB>,
    monitor: Option<std::sync::Arc<std::sync::Mutex<moment_monitor::Monitor>>>,
    fwd: Vec<f64>,
    bwd: Vec<f64>,
    opt: Vec<f64>,
    total: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Time `reps` training steps (after 2 warm-up steps) of `preset` with `optimizer`.
pub fn time_model(
    preset: &str,
    optimizer: &str,
    batch: usize,
    seq: usize,
    reps: usize,
) -> Result<ModelRow, Error> {
    let vocab = 256;
    let config = match preset {
        "tiny" => TestModelConfig::tiny(vocab),
        "small" => TestModelConfig::small(vocab),
        other => return Err(format!("unknown model preset `{other}` (tiny, small)").into()),
    };
    let config = TestModelConfig {
        max_seq_len: config.max_seq_len.max(seq),
        ..config
    };
    let corpus = MarkovCorpus::with_config(&MarkovConfig {
        vocab,
        ..MarkovConfig::default()
    })?;
    let device = Default::default();
    let mut copies = Vec::new();
    for interval in [None, Some(1), Some(10)] {
        let mut engine = MomentOptimizer::new(model_chain(optimizer)?);
        let monitor = match interval {
            Some(k) => {
                let m = MonitorConfig::default().with_interval(k).build()?.shared();
                engine.set_observer(m.clone());
                Some(m)
            }
            None => None,
        };
        copies.push(Copy {
            model: Some(config.init::<AB>(&device)?),
            optim: engine.for_module(),
            monitor,
            fwd: Vec::new(),
            bwd: Vec::new(),
            opt: Vec::new(),
            total: Vec::new(),
        });
    }
    let params = copies[0].model.as_ref().map_or(0, |m| m.num_params());
    for step in 0..reps + 2 {
        let b = TokenBatch::from_corpus(
            &corpus as &dyn Corpus,
            Split::Train,
            step as u64,
            batch,
            seq,
        )?;
        for c in &mut copies {
            let t = b.to_tensors::<AB>(&device);
            let t0 = Instant::now();
            let model = c.model.take().ok_or("model missing")?;
            let loss = model
                .forward(t.inputs, Some(t.targets))?
                .loss
                .ok_or("no loss")?;
            let value = f64::from(loss.clone().into_scalar());
            let t1 = Instant::now();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let t2 = Instant::now();
            c.model = Some(c.optim.step(1e-3, model, grads));
            if let Some(e) = c.optim.take_error() {
                return Err(e.into());
            }
            if let Some(m) = &c.monitor {
                m.lock().map_err(|_| "monitor lock poisoned")?.finish_step(
                    StepInfo::new()
                        .loss(value)
                        .tokens((batch * seq) as u64)
                        .memory(c.optim.engine().state_memory()),
                )?;
            }
            let t3 = Instant::now();
            if step >= 2 {
                c.fwd.push((t1 - t0).as_secs_f64());
                c.bwd.push((t2 - t1).as_secs_f64());
                c.opt.push((t3 - t2).as_secs_f64());
                c.total.push((t1 - t0 + (t3 - t1)).as_secs_f64());
            }
        }
    }
    let base = &copies[0];
    let step_mean = mean(&base.fwd) + mean(&base.bwd) + mean(&base.opt);
    let cost = |c: &Copy| mean(&c.opt) - mean(&base.opt);
    let (m1, m10) = (cost(&copies[1]), cost(&copies[2]));
    Ok(ModelRow {
        preset: preset.into(),
        params,
        optimizer: optimizer.into(),
        tokens: batch * seq,
        forward_ms: median(&base.fwd) * 1e3,
        backward_ms: median(&base.bwd) * 1e3,
        optimizer_ms: median(&base.opt) * 1e3,
        monitor_every_step_ms: m1 * 1e3,
        monitor_every_step_pct: 100.0 * m1 / step_mean,
        monitor_interval10_ms: m10 * 1e3,
        monitor_interval10_pct: 100.0 * m10 / step_mean,
        monitor_every_step_vs_optimizer: m1 / mean(&base.opt),
        monitor_interval10_vs_optimizer: m10 / mean(&base.opt),
        tokens_per_s: (batch * seq) as f64 / median(&base.total),
    })
}

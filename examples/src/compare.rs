//! The `moment` command: train the test model with one or every optimizer under the monitor and
//! report (`docs/compare.md`).
//!
//! Optimizers come from [`presets`]: a reference class and constructor arguments (built through
//! `moment_optim::port`, so `key=value` overrides use the reference's own argument names) with a
//! learning rate from the literature, and how the training loop must drive it ([`Drive`]).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use moment_model::{
    ByteCorpus, Corpus, MarkovConfig, MarkovCorpus, RowPrior, Split, TestModelConfig,
    TestModelForCausalLM, TokenBatch,
};
use moment_monitor::{
    CsvSink, JsonlSink, Monitor, MonitorConfig, Run, StepInfo, Summary, files, plot, report,
};
use moment_optim::curvature::GnbEstimator;
use moment_optim::port::{ArgValue, RefArgs, from_reference};
use moment_optim::{ModuleOptimizer, MomentOptimizer, NonFinitePolicy, ParamGroup, Selector};
use serde::Serialize;

/// Errors of the command: one line each.
pub type Error = Box<dyn std::error::Error>;

/// How the training loop drives an optimizer beyond `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Drive {
    /// Plain steps.
    Plain,
    /// Muon for the hidden 2-D matrices (`model.blocks.*`), AdamW (lr 3e-3) elsewhere.
    MuonHybrid,
    /// Sophia-G: a Gauss-Newton-Bartlett curvature estimate every `every` steps.
    SophiaGnb {
        /// Estimation interval k.
        every: u64,
    },
    /// Schedule-Free: constant learning rate (its own warm-up), evaluated through the
    /// optimizer's eval view.
    ScheduleFree,
}

/// An optimizer the command knows.
#[derive(Debug, Clone)]
pub struct Preset {
    /// Short name (`adamw`).
    pub name: &'static str,
    /// Reference class for `moment_optim::port`.
    pub class: &'static str,
    /// Constructor arguments (including `lr`).
    pub args: Vec<(&'static str, ArgValue)>,
    /// Loop behaviour.
    pub drive: Drive,
    /// Where the learning rate comes from.
    pub note: &'static str,
}

fn f(x: f64) -> ArgValue {
    ArgValue::Float(x)
}

fn pair(a: f64, b: f64) -> ArgValue {
    ArgValue::List(vec![f(a), f(b)])
}

/// Every optimizer `moment compare` runs by default, in report order.
pub fn presets() -> Vec<Preset> {
    use Drive::*;
    vec![
        Preset {
            name: "adamw",
            class: "torch.optim.AdamW",
            args: vec![
                ("lr", f(3e-3)),
                ("betas", pair(0.9, 0.95)),
                ("weight_decay", f(0.1)),
            ],
            drive: Plain,
            note: "GPT-3 / nanoGPT betas (0.9, 0.95), wd 0.1; lr 3e-3 for a 0.5M model",
        },
        Preset {
            name: "adam",
            class: "torch.optim.Adam",
            args: vec![("lr", f(3e-3)), ("betas", pair(0.9, 0.95))],
            drive: Plain,
            note: "as AdamW without decay",
        },
        Preset {
            name: "adamw8bit",
            class: "bitsandbytes.optim.AdamW8bit",
            args: vec![
                ("lr", f(3e-3)),
                ("betas", pair(0.9, 0.95)),
                ("weight_decay", f(0.1)),
            ],
            drive: Plain,
            note: "bitsandbytes: a drop-in for AdamW at the same lr",
        },
        Preset {
            name: "adafactor",
            class: "transformers.optimization.Adafactor",
            args: vec![
                ("lr", f(3e-3)),
                ("scale_parameter", ArgValue::Bool(false)),
                ("relative_step", ArgValue::Bool(false)),
                ("warmup_init", ArgValue::Bool(false)),
            ],
            drive: Plain,
            note: "HF Trainer(optim=\"adafactor\"): external lr, no relative step",
        },
        Preset {
            name: "lion",
            class: "lion_pytorch.Lion",
            args: vec![
                ("lr", f(1e-3)),
                ("betas", pair(0.9, 0.99)),
                ("weight_decay", f(0.3)),
            ],
            drive: Plain,
            note: "Chen et al. 2023: lr 3x smaller and wd 3x larger than AdamW's",
        },
        Preset {
            name: "sophia",
            class: "sophia_opt.SophiaG",
            args: vec![
                ("lr", f(1e-3)),
                ("betas", pair(0.965, 0.99)),
                ("rho", f(0.04)),
                ("weight_decay", f(0.1)),
            ],
            drive: SophiaGnb { every: 10 },
            note: "Liu et al. 2023 (Sophia-G, k = 10, rho 0.04, bs = tokens); clipped like Lion: lr as Lion's",
        },
        Preset {
            name: "lamb",
            class: "pytorch_optimizer.Lamb",
            args: vec![
                ("lr", f(1e-2)),
                ("betas", pair(0.9, 0.999)),
                ("weight_decay", f(0.01)),
            ],
            drive: Plain,
            note: "You et al. 2020: trust ratio allows larger lr (1e-2)",
        },
        Preset {
            name: "shampoo",
            class: "pytorch_optimizer.ScalableShampoo",
            args: vec![
                ("lr", f(3e-3)),
                ("weight_decay", f(0.0)),
                ("start_preconditioning_step", ArgValue::Int(10)),
                ("preconditioning_compute_steps", ArgValue::Int(10)),
            ],
            drive: Plain,
            note: "Anil et al. 2020: grafted scalable Shampoo at AdamW's lr, roots every 10 steps",
        },
        Preset {
            name: "muon",
            class: "torch.optim.Muon",
            args: vec![
                ("lr", f(0.02)),
                ("momentum", f(0.95)),
                ("weight_decay", f(0.0)),
            ],
            drive: MuonHybrid,
            note: "Jordan et al. 2024: lr 0.02 momentum 0.95 for hidden matrices, AdamW elsewhere",
        },
        Preset {
            name: "ademamix",
            class: "pytorch_optimizer.AdEMAMix",
            args: vec![("lr", f(3e-3)), ("weight_decay", f(0.1))],
            drive: Plain,
            note: "Pagliardini et al. 2024: AdamW's lr, alpha 5, beta3 0.9999",
        },
        Preset {
            name: "schedulefree",
            class: "schedulefree.AdamWScheduleFree",
            args: vec![("lr", f(3e-3)), ("weight_decay", f(0.1))],
            drive: ScheduleFree,
            note: "Defazio et al. 2024: constant lr with warm-up, eval at the averaged point",
        },
        Preset {
            name: "came",
            class: "pytorch_optimizer.CAME",
            args: vec![("lr", f(2e-3)), ("weight_decay", f(0.1))],
            drive: Plain,
            note: "Luo et al. 2023: slightly below AdamW's lr",
        },
        Preset {
            name: "mars",
            class: "pytorch_optimizer.MARS",
            args: vec![("lr", f(3e-3)), ("weight_decay", f(0.1))],
            drive: Plain,
            note: "Yuan et al. 2024 (MARS-AdamW at AdamW's lr)",
        },
        Preset {
            name: "adam-mini",
            class: "pytorch_optimizer.AdamMini",
            args: vec![
                ("lr", f(3e-3)),
                ("weight_decay", f(0.1)),
                ("num_heads", ArgValue::Int(4)),
                ("num_embeds", ArgValue::Int(128)),
            ],
            drive: Plain,
            note: "Zhang et al. 2024: AdamW's lr; blocks by head (4 heads, width 128)",
        },
        Preset {
            name: "soap",
            class: "pytorch_optimizer.SOAP",
            args: vec![("lr", f(3e-3)), ("weight_decay", f(0.1))],
            drive: Plain,
            note: "Vyas et al. 2024: AdamW's lr, preconditioner refresh every 10 steps",
        },
        Preset {
            name: "prodigy",
            class: "pytorch_optimizer.Prodigy",
            args: vec![("lr", f(1.0)), ("weight_decay", f(0.1))],
            drive: Plain,
            note: "Mishchenko & Defazio 2023: lr 1.0 (learning-rate free)",
        },
    ]
}

/// The preset called `name`.
pub fn preset(name: &str) -> Result<Preset, Error> {
    presets()
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = presets().iter().map(|p| p.name).collect();
            format!("unknown optimizer `{name}` (known: {})", names.join(", ")).into()
        })
}

/// Parse `key=value` into an argument (`true`/`false`, `none`, integers, floats, `a,b` lists,
/// else a string).
pub fn parse_override(kv: &str) -> Result<(String, ArgValue), Error> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("hyper-parameter `{kv}` is not key=value"))?;
    fn one(v: &str) -> ArgValue {
        match v {
            "true" | "True" => ArgValue::Bool(true),
            "false" | "False" => ArgValue::Bool(false),
            "none" | "None" | "null" => ArgValue::Null,
            _ => {
                if let Ok(i) = v.parse::<i64>() {
                    ArgValue::Int(i)
                } else if let Ok(x) = v.parse::<f64>() {
                    ArgValue::Float(x)
                } else {
                    ArgValue::Str(v.to_string())
                }
            }
        }
    }
    let value = if v.contains(',') {
        ArgValue::List(v.split(',').map(one).collect())
    } else {
        one(v)
    };
    Ok((k.trim().to_string(), value))
}

/// The backend a run (or a reference case) executes on: the CPU backends always, the GPU
/// ones when built with their feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// burn-ndarray (default).
    #[default]
    NdArray,
    /// burn-flex, the pure-Rust CPU backend.
    Flex,
    /// burn's wgpu backend with moment-cuda's fused kernels (feature `wgpu`).
    Wgpu,
    /// burn's CUDA backend with moment-cuda's fused kernels (feature `cuda`).
    Cuda,
}

impl BackendKind {
    /// Parse a `--backend` value; a GPU backend this binary was built without is an error
    /// naming the feature to build with.
    pub fn parse(name: &str) -> Result<Self, Error> {
        let gpu = |b: Self, built: bool, feature: &str| {
            if built {
                Ok(b)
            } else {
                Err(format!(
                    "--backend {name}: this binary was built without the `{feature}` feature (cargo run --release -p moment-examples --features {feature} --bin moment -- …)"
                )
                .into())
            }
        };
        match name {
            "ndarray" => Ok(Self::NdArray),
            "flex" => Ok(Self::Flex),
            "wgpu" => gpu(Self::Wgpu, cfg!(feature = "wgpu"), "wgpu"),
            "cuda" => gpu(Self::Cuda, cfg!(feature = "cuda"), "cuda"),
            other => Err(format!(
                "--backend {other}: expected ndarray, flex, wgpu (feature `wgpu`) or cuda (feature `cuda`)"
            )
            .into()),
        }
    }
}

/// Which data to train on.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// The synthetic order-1 Markov corpus (vocab 64, known floor).
    Synthetic,
    /// The bytes of a UTF-8 file (vocab 256, no floor).
    Text(PathBuf),
}

/// One training run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Optimizer preset name.
    pub optimizer: String,
    /// Constructor-argument overrides.
    pub overrides: Vec<(String, ArgValue)>,
    /// Optimizer steps.
    pub steps: u64,
    /// Model preset (`tiny`, `small`).
    pub model: String,
    /// Seed of the model, the data order and Sophia's sampler.
    pub seed: u64,
    /// Data.
    pub data: Data,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Validation every this many steps (and at the end).
    pub eval_every: u64,
    /// Monitor interval for per-parameter statistics.
    pub monitor_interval: u64,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// The backend to train on.
    pub backend: BackendKind,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            optimizer: "adamw".into(),
            overrides: Vec::new(),
            steps: 120,
            model: "tiny".into(),
            seed: 0,
            data: Data::Synthetic,
            batch: 16,
            seq: 32,
            eval_every: 25,
            monitor_interval: 10,
            progress: true,
            backend: BackendKind::NdArray,
        }
    }
}

/// The corpus a config trains on.
pub fn corpus(cfg: &RunConfig) -> Result<Box<dyn Corpus>, Error> {
    Ok(match &cfg.data {
        Data::Synthetic => Box::new(MarkovCorpus::with_config(&MarkovConfig {
            vocab: 64,
            order: 1,
            prior: RowPrior::Dirichlet { concentration: 0.1 },
            seed: cfg.seed,
        })?),
        Data::Text(path) => Box::new(ByteCorpus::from_file(path, 0.1, cfg.seed)?),
    })
}

fn model_config(name: &str, vocab: usize, seq: usize, seed: u64) -> Result<TestModelConfig, Error> {
    let c = match name {
        "tiny" => TestModelConfig::tiny(vocab),
        "small" => TestModelConfig::small(vocab),
        other => return Err(format!("unknown model preset `{other}` (tiny, small)").into()),
    };
    Ok(TestModelConfig {
        max_seq_len: c.max_seq_len.max(seq),
        seed,
        ..c
    })
}

fn args_of(p: &Preset, overrides: &[(String, ArgValue)]) -> RefArgs {
    let mut a: RefArgs = p
        .args
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    for (k, v) in overrides {
        a.insert(k.clone(), v.clone());
    }
    a
}

/// The engine for a preset: no decay on vectors (norm weights), decay elsewhere; Muon's
/// hybrid routing; global clipping at 1.0; non-finite steps skipped. Returns the engine and
/// the base learning rate.
pub fn engine<Inner: Backend>(
    p: &Preset,
    overrides: &[(String, ArgValue)],
    tokens: usize,
) -> Result<(MomentOptimizer<Inner>, f64), Error> {
    let mut args = args_of(p, overrides);
    if let Drive::SophiaGnb { .. } = p.drive {
        args.entry("bs".into())
            .or_insert(ArgValue::Int(tokens as i64));
    }
    let main = from_reference::<Inner>(p.class, &args)?;
    let lr = main.lr;
    let without_decay = |a: &RefArgs| -> Result<_, Error> {
        let mut a = a.clone();
        if a.contains_key("weight_decay") {
            a.insert("weight_decay".into(), ArgValue::Float(0.0));
        }
        Ok(from_reference::<Inner>(p.class, &a)?.chain)
    };
    let mut b = MomentOptimizer::builder();
    match p.drive {
        Drive::MuonHybrid => {
            let adamw = |wd: f64| -> Result<_, Error> {
                let a: RefArgs = [
                    ("lr".to_string(), f(3e-3)),
                    ("betas".to_string(), pair(0.9, 0.95)),
                    ("weight_decay".to_string(), f(wd)),
                ]
                .into_iter()
                .collect();
                Ok(from_reference::<Inner>("torch.optim.AdamW", &a)?.chain)
            };
            let mult = 3e-3 / lr;
            b = b
                .group(ParamGroup::new(
                    "muon",
                    Selector::rank(2) & Selector::glob("model.blocks.*"),
                    main.chain,
                ))
                .group(
                    ParamGroup::new("adamw_no_decay", Selector::rank_between(0, 1), adamw(0.0)?)
                        .lr_mult(mult),
                )
                .group(ParamGroup::new("adamw", Selector::all(), adamw(0.1)?).lr_mult(mult));
        }
        _ => {
            b = b
                .group(ParamGroup::new(
                    "no_decay",
                    Selector::rank_between(0, 1),
                    without_decay(&args)?,
                ))
                .group(ParamGroup::new("decay", Selector::all(), main.chain));
        }
    }
    let engine = b
        .clip_grad_norm(1.0)
        .non_finite(NonFinitePolicy::SkipStep)
        .build()?;
    Ok((engine, lr))
}

/// Learning rate at `step` (0-based): linear warm-up over 10% of the run (at least 1 step),
/// then linear decay to 10%; Schedule-Free keeps it constant after the warm-up.
pub fn lr_at(base: f64, step: u64, steps: u64, drive: Drive) -> f64 {
    let warm = (steps / 10).max(1);
    let w = ((step + 1) as f64 / warm as f64).min(1.0);
    if drive == Drive::ScheduleFree || step < warm {
        return base * w;
    }
    let t = (step - warm) as f64 / (steps - warm).max(1) as f64;
    base * (1.0 - 0.9 * t)
}

struct Progress {
    name: String,
    total: u64,
    tty: bool,
    on: bool,
    last_pct: u64,
}

impl Progress {
    fn show(&mut self, step: u64, loss: f64) {
        if !self.on {
            return;
        }
        let pct = 100 * step / self.total.max(1);
        if self.tty {
            let filled = (30 * step / self.total.max(1)) as usize;
            eprint!(
                "\r{:<13} [{}{}] {step:>5}/{} loss {loss:.4}",
                self.name,
                "#".repeat(filled),
                ".".repeat(30 - filled),
                self.total
            );
            if step == self.total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        } else if pct >= self.last_pct + 25 || step == self.total {
            self.last_pct = pct;
            eprintln!("{:<13} {step:>5}/{} loss {loss:.4}", self.name, self.total);
        }
    }
}

fn validate<Inner: Backend>(
    model: &TestModelForCausalLM<Inner>,
    corpus: &dyn Corpus,
    cfg: &RunConfig,
) -> Result<f64, Error> {
    let device = Default::default();
    let mut total = 0.0;
    for i in 0..4 {
        let b = TokenBatch::from_corpus(corpus, Split::Valid, i, cfg.batch, cfg.seq)?
            .to_tensors::<Inner>(&device);
        total += model
            .forward(b.inputs, Some(b.targets))?
            .loss
            .ok_or("no loss")?
            .into_scalar()
            .elem::<f64>();
    }
    Ok(total / 4.0)
}

fn lock(m: &Arc<Mutex<Monitor>>) -> Result<std::sync::MutexGuard<'_, Monitor>, Error> {
    m.lock().map_err(|_| "monitor lock poisoned".into())
}

/// Train one run into `dir` (metrics JSONL/CSV, dashboard) on the configured backend;
/// returns its records.
pub fn train_run(cfg: &RunConfig, corpus: &dyn Corpus, dir: &Path) -> Result<Run, Error> {
    match cfg.backend {
        BackendKind::NdArray => train_run_on::<Autodiff<NdArray>>(cfg, corpus, dir),
        BackendKind::Flex => train_run_on::<Autodiff<Flex>>(cfg, corpus, dir),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            moment_cuda::enable::<moment_cuda::Wgpu>();
            train_run_on::<Autodiff<moment_cuda::Wgpu>>(cfg, corpus, dir)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            moment_cuda::enable::<moment_cuda::Cuda>();
            train_run_on::<Autodiff<moment_cuda::Cuda>>(cfg, corpus, dir)
        }
        #[allow(unreachable_patterns)]
        other => Err(format!("backend {other:?} is not compiled into this binary").into()),
    }
}

fn train_run_on<B: AutodiffBackend>(
    cfg: &RunConfig,
    corpus: &dyn Corpus,
    dir: &Path,
) -> Result<Run, Error> {
    let p = preset(&cfg.optimizer)?;
    if cfg.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    let tokens = cfg.batch * cfg.seq;
    let (mut engine, base_lr) = engine::<B::InnerBackend>(&p, &cfg.overrides, tokens)
        .map_err(|e| format!("{}: {e}", p.name))?;
    let mut monitor = MonitorConfig::default()
        .with_interval(cfg.monitor_interval.max(1))
        .build()?;
    monitor
        .add_sink(JsonlSink::create(dir.join(files::METRICS_JSONL))?)
        .add_sink(CsvSink::create(dir.join(files::METRICS_CSV))?);
    let monitor: Arc<Mutex<Monitor>> = monitor.shared();
    engine.set_observer(monitor.clone());
    let mut optim: ModuleOptimizer<TestModelForCausalLM<B>, B> = engine.for_module();
    let device = Default::default();
    let mut model =
        model_config(&cfg.model, corpus.vocab(), cfg.seq, cfg.seed)?.init::<B>(&device)?;
    let mut gnb = match p.drive {
        Drive::SophiaGnb { every } => Some(GnbEstimator::new(every, cfg.seed ^ 0x50f1a)?),
        _ => None,
    };
    let mut bar = Progress {
        name: p.name.to_string(),
        total: cfg.steps,
        tty: std::io::stderr().is_terminal(),
        on: cfg.progress,
        last_pct: 0,
    };
    for step in 0..cfg.steps {
        let lr = lr_at(base_lr, step, cfg.steps, p.drive);
        let b = TokenBatch::from_corpus(corpus, Split::Train, step, cfg.batch, cfg.seq)?
            .to_tensors::<B>(&device);
        let out = model.forward(b.inputs.clone(), Some(b.targets))?;
        let loss = out.loss.ok_or("the model returned no loss")?;
        let value = loss.clone().into_scalar().elem::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        if let Some(e) = optim.take_error() {
            return Err(format!("{}: step {}: {e}", p.name, step + 1).into());
        }
        if let Some(est) = &mut gnb
            && est.due(step + 1)
        {
            let logits = model.forward(b.inputs, None)?.logits;
            let [bs, s, v] = logits.dims();
            let sampled = est.sampled_loss(logits.reshape([bs * s, v]))?;
            let g = GradientsParams::from_grads(sampled.backward(), &model);
            optim.update_curvature(&model, g)?;
        }
        let last = step + 1 == cfg.steps;
        let val = if (step + 1) % cfg.eval_every.max(1) == 0 || last {
            // The optimizer's evaluation view (Schedule-Free's averaged point; the parameters
            // themselves for every other optimizer), then back to training.
            let eval = optim.eval(model);
            let v = validate(&eval.valid(), corpus, cfg);
            model = optim.train(eval);
            Some(v?)
        } else {
            None
        };
        let mut info = StepInfo::new()
            .loss(value)
            .tokens(tokens as u64)
            .memory(optim.engine().state_memory());
        if let Some(v) = val {
            info = info.val_loss(v);
        }
        lock(&monitor)?.finish_step(info)?;
        bar.show(step + 1, value);
    }
    lock(&monitor)?.flush()?;
    let run = Run::from_jsonl(p.name, dir.join(files::METRICS_JSONL))?;
    plot::dashboard(&run, dir.join(files::DASHBOARD_PNG), (1400, 1000))?;
    Ok(run)
}

/// One row of `summary.json` (the report table as data).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SummaryRow {
    /// Optimizer preset.
    pub optimizer: String,
    /// Last validation loss.
    pub final_val_loss: Option<f64>,
    /// Lowest validation loss.
    pub best_val_loss: Option<f64>,
    /// Known floor of the loss (synthetic corpus).
    pub loss_floor: Option<f64>,
    /// Steps run.
    pub steps: u64,
    /// Steps per second.
    pub steps_per_s: Option<f64>,
    /// Optimizer-state bytes.
    pub state_bytes: Option<u64>,
    /// Optimizer-state bytes per parameter.
    pub state_bytes_per_param: Option<f64>,
    /// Peak resident set size during the run.
    pub peak_rss_bytes: Option<u64>,
    /// Loss and gradient-norm spikes.
    pub spikes: usize,
    /// Fraction of steps that clipped.
    pub clip_rate: f64,
}

impl From<&Summary> for SummaryRow {
    fn from(s: &Summary) -> Self {
        Self {
            optimizer: s.name.clone(),
            final_val_loss: s.final_val_loss,
            best_val_loss: s.best_val_loss,
            loss_floor: s.loss_floor,
            steps: s.steps,
            steps_per_s: s.steps_per_s,
            state_bytes: s.state_bytes,
            state_bytes_per_param: s.state_bytes_per_param,
            peak_rss_bytes: s.peak_rss_bytes,
            spikes: s.loss_spikes + s.grad_norm_spikes,
            clip_rate: s.clip_rate,
        }
    }
}

/// Write the overlay plots, `report.md` and `summary.json` for `runs` into `dir`.
pub fn write_report(
    dir: &Path,
    title: &str,
    runs: &[Run],
    floor: Option<f64>,
) -> Result<Vec<Summary>, Error> {
    plot::overlay(runs, floor, dir.join("overlay.png"), (1400, 560))?;
    plot::overlay(runs, floor, dir.join("overlay.svg"), (1400, 560))?;
    let summaries: Vec<Summary> = runs.iter().map(|r| Summary::from_run(r, floor)).collect();
    let mut plots = vec![(
        "Validation loss, all optimizers".to_string(),
        "overlay.png".to_string(),
    )];
    for r in runs {
        plots.push((
            format!("{} dashboard", r.name),
            format!("{}/{}", r.name, files::DASHBOARD_PNG),
        ));
    }
    std::fs::write(
        dir.join(files::REPORT_MD),
        report::markdown(title, &summaries, &plots),
    )?;
    let rows: Vec<SummaryRow> = summaries.iter().map(SummaryRow::from).collect();
    std::fs::write(
        dir.join(files::SUMMARY_JSON),
        serde_json::to_string_pretty(&rows)?,
    )?;
    Ok(summaries)
}

/// Train every optimizer in `names` with the same model, seed and data order into
/// `out/<optimizer>/`, then write the comparison into `out`. Returns the summaries.
pub fn compare(base: &RunConfig, names: &[String], out: &Path) -> Result<Vec<Summary>, Error> {
    for n in names {
        preset(n)?;
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let corpus = corpus(base)?;
    let floor = corpus.loss_floor();
    let mut runs = Vec::new();
    for n in names {
        let cfg = RunConfig {
            optimizer: n.clone(),
            ..base.clone()
        };
        runs.push(train_run(&cfg, corpus.as_ref(), &out.join(n))?);
    }
    let title = format!(
        "moment compare: {} model, {} steps, seed {}",
        base.model, base.steps, base.seed
    );
    write_report(out, &title, &runs, floor)
}

/// Re-plot and re-report saved run directories: each `dir` is either one run (with
/// `metrics.jsonl`) or a comparison (whose subdirectories are runs).
pub fn replot_dirs(dirs: &[PathBuf], floor: Option<f64>) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    for dir in dirs {
        if dir.join(files::METRICS_JSONL).exists() {
            written.extend(moment_monitor::replot(dir, floor)?);
            continue;
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(files::METRICS_JSONL).exists())
            .collect();
        subs.sort();
        if subs.is_empty() {
            return Err(format!(
                "{}: no {} here or in its subdirectories",
                dir.display(),
                files::METRICS_JSONL
            )
            .into());
        }
        let mut runs = Vec::new();
        for s in &subs {
            let name = s
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let run = Run::from_jsonl(name, s.join(files::METRICS_JSONL))?;
            plot::dashboard(&run, s.join(files::DASHBOARD_PNG), (1400, 1000))?;
            written.push(s.join(files::DASHBOARD_PNG));
            runs.push(run);
        }
        write_report(dir, &format!("moment: {}", dir.display()), &runs, floor)?;
        written.extend([
            dir.join("overlay.png"),
            dir.join(files::REPORT_MD),
            dir.join(files::SUMMARY_JSON),
        ]);
    }
    Ok(written)
}

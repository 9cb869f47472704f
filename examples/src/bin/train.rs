//! Train the `tiny` test transformer with a moment optimizer under the monitor, on a synthetic
//! Markov corpus whose loss floor is known, and write a run directory.
//!
//! `cargo run --release -p moment-examples --bin train [-- --optimizer adamw|adamw8bit|adafactor
//!  --steps N --seed S --interval K --out DIR]`
//!
//! Every optimizer uses the usual LLM grouping (no decay on vectors), global clipping at 1.0,
//! lr 3e-3 with 20 warm-up steps and linear decay to 10%; Adafactor is configured as HF
//! `Trainer(optim="adafactor")` does (`scale_parameter=False, relative_step=False`).
//! `DIR` (default `runs/train-<optimizer>`) receives `metrics.jsonl`, `metrics.csv`, a
//! TensorBoard event file, `dashboard.png/.svg`, `layers.png`, `report.md` and `summary.json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use moment_model::{
    Corpus, MarkovConfig, MarkovCorpus, RowPrior, Split, TestModelConfig, TestModelForCausalLM,
    TokenBatch,
};
use moment_monitor::{
    CsvSink, JsonlSink, Monitor, MonitorConfig, Run, StepInfo, Summary, TensorBoardSink, files,
    replot, report,
};
use moment_optim::{
    AdafactorConfig, Adam8bitConfig, AdamWConfig, Chain, ModuleOptimizer, MomentOptimizer,
    NonFinitePolicy, OptimError, ParamGroup, Selector,
};

type B = Autodiff<NdArray>;
type BoxError = Box<dyn std::error::Error>;
type Model<Bk> = TestModelForCausalLM<Bk>;
/// The engine as burn's optimizer of the model.
type Optim = ModuleOptimizer<Model<B>, B>;
type Device = NdArrayDevice;

/// The corpus's vocabulary.
const VOCAB: usize = 64;
/// Sequences per batch.
const BATCH: usize = 16;
/// Tokens per sequence.
const SEQ: usize = 32;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line of `train`.
struct Args {
    steps: u64,
    seed: u64,
    interval: u64,
    optimizer: String,
    out: PathBuf,
}

/// The command line, defaults applied (`--out`: `runs/train-<optimizer>`).
fn parse_args() -> Result<Args, BoxError> {
    let mut steps = 200u64;
    let mut seed = 0u64;
    let mut interval = 1u64;
    let mut optimizer = "adamw".to_string();
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--steps" => steps = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--interval" => interval = value()?.parse()?,
            "--optimizer" => optimizer = value()?,
            "--out" => out = Some(value()?.into()),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let out = out.unwrap_or_else(|| PathBuf::from(format!("runs/train-{optimizer}")));
    Ok(Args {
        steps,
        seed,
        interval,
        optimizer,
        out,
    })
}

fn run() -> Result<(), BoxError> {
    let args = parse_args()?;
    let device = Default::default();
    let corpus = MarkovCorpus::with_config(&MarkovConfig {
        vocab: VOCAB,
        order: 1,
        prior: RowPrior::Dirichlet { concentration: 0.1 },
        seed: args.seed,
    })?;
    let floor = corpus.loss_floor();
    let model = TestModelConfig {
        seed: args.seed,
        ..TestModelConfig::tiny(VOCAB)
    }
    .init::<B>(&device)?;
    let (mut optim, monitor) = monitored_optimizer(&args)?;

    println!(
        "training the tiny test model ({} params) with moment {}, {} steps → {}",
        model.num_params(),
        args.optimizer,
        args.steps,
        args.out.display()
    );
    if let Some(f) = floor {
        println!("loss floor (entropy rate of the corpus): {f:.4} nats/token");
    }
    let model = train(model, &mut optim, &monitor, &corpus, args.steps, &device)?;
    monitor
        .lock()
        .map_err(|_| "monitor lock poisoned")?
        .flush()?;
    let loss = validation_loss(&model.valid(), &corpus, &device)?;
    println!("validation loss {loss:.4}");
    write_report(&args, floor)
}

/// The engine with the usual LLM grouping (no decay on vectors, i.e. norm weights; decay
/// elsewhere), global clipping at 1.0, bad steps skipped, observed by a monitor writing
/// JSONL, CSV and TensorBoard into the run directory.
fn monitored_optimizer(args: &Args) -> Result<(Optim, Arc<Mutex<Monitor>>), BoxError> {
    let (no_decay, decay) = chains(&args.optimizer, 0.1)?;
    let mut engine = MomentOptimizer::builder()
        .group(ParamGroup::new(
            "no_decay",
            Selector::rank_between(0, 1),
            no_decay,
        ))
        .group(ParamGroup::new("decay", Selector::all(), decay))
        .clip_grad_norm(1.0)
        .non_finite(NonFinitePolicy::SkipStep)
        .build()?;
    let out = &args.out;
    let mut monitor = MonitorConfig::default()
        .with_interval(args.interval)
        .build()?;
    monitor
        .add_sink(JsonlSink::create(out.join(files::METRICS_JSONL))?)
        .add_sink(CsvSink::create(out.join(files::METRICS_CSV))?)
        .add_sink(TensorBoardSink::create(out.join("tensorboard"))?);
    let monitor = monitor.shared();
    engine.set_observer(monitor.clone());
    Ok((engine.for_module::<_, B>(), monitor))
}

/// `steps` training steps on the corpus's training split (lr 3e-3, 20 warm-up steps, linear
/// decay to 10%), each recorded by the monitor, progress printed every 25 steps.
fn train(
    mut model: Model<B>,
    optim: &mut Optim,
    monitor: &Mutex<Monitor>,
    corpus: &MarkovCorpus,
    steps: u64,
    device: &Device,
) -> Result<Model<B>, BoxError> {
    for step in 0..steps {
        let warm = (step as f64 + 1.0).min(20.0) / 20.0;
        let lr = 3e-3 * warm * (1.0 - 0.9 * step as f64 / steps as f64);
        let b = TokenBatch::from_corpus(corpus as &dyn Corpus, Split::Train, step, BATCH, SEQ)?
            .to_tensors::<B>(device);
        let loss = model
            .forward(b.inputs, Some(b.targets))?
            .loss
            .ok_or("the model returned no loss")?;
        let value = f64::from(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        if let Some(e) = optim.take_error() {
            return Err(e.into());
        }
        let mut mon = monitor.lock().map_err(|_| "monitor lock poisoned")?;
        mon.finish_step(
            StepInfo::new()
                .loss(value)
                .tokens((BATCH * SEQ) as u64)
                .memory(optim.engine().state_memory()),
        )?;
        if step == 0 || (step + 1) % 25 == 0 {
            let r = mon.latest().ok_or("no record")?;
            println!(
                "step {:>4}  loss {value:.4}  grad_norm {:.3}{}  update/weight {}",
                r.step,
                r.grad_norm,
                if r.clipped { " (clipped)" } else { "" },
                r.update_to_weight()
                    .map_or_else(|| "–".into(), |u| format!("{u:.2e}"))
            );
        }
    }
    Ok(model)
}

/// Mean loss over the first 4 batches of the corpus's validation split.
fn validation_loss(
    model: &Model<NdArray>,
    corpus: &MarkovCorpus,
    device: &Device,
) -> Result<f64, BoxError> {
    let mut total = 0.0;
    for i in 0..4 {
        let b = TokenBatch::from_corpus(corpus as &dyn Corpus, Split::Valid, i, BATCH, SEQ)?
            .to_tensors::<NdArray>(device);
        total += f64::from(
            model
                .forward(b.inputs, Some(b.targets))?
                .loss
                .ok_or("no loss")?
                .into_scalar(),
        );
    }
    Ok(total / 4.0)
}

/// The run directory's plots and report, and the summary printed.
fn write_report(args: &Args, floor: Option<f64>) -> Result<(), BoxError> {
    let written = replot(&args.out, floor)?;
    let run = Run::from_jsonl(&args.optimizer, args.out.join(files::METRICS_JSONL))?;
    print!("{}", report::text(&[Summary::from_run(&run, floor)]));
    for f in written {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// (no-decay chain, decay chain) for `name`.
fn chains(
    name: &str,
    wd: f64,
) -> Result<(Chain<NdArray>, Chain<NdArray>), Box<dyn std::error::Error>> {
    let pair = |f: &dyn Fn(f64) -> Result<Chain<NdArray>, OptimError>| -> Result<_, OptimError> {
        Ok((f(0.0)?, f(wd)?))
    };
    Ok(match name {
        "adamw" => pair(&|wd| AdamWConfig::default().with_weight_decay(wd).build())?,
        "adamw8bit" => pair(&|wd| Adam8bitConfig::adamw().with_weight_decay(wd).build())?,
        "adafactor" => pair(&|wd| {
            AdafactorConfig {
                scale_parameter: false,
                relative_step: false,
                weight_decay: wd,
                ..AdafactorConfig::transformers()
            }
            .build()
        })?,
        other => {
            return Err(
                format!("unknown optimizer `{other}` (adamw, adamw8bit, adafactor)").into(),
            );
        }
    })
}
